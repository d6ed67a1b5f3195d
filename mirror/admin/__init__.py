"""The admin API under `/api/v1/`: blocks, exemptions and freezes (create, list, show,
delete), explain, impact and the audit log. JSON in and out; errors are the app's JSON error
body. Writes need a bearer token from `admin.tokens`; reads are open unless
`admin.protect_reads`; the audit log is always protected.

Impact reports name client addresses: they need a token unless `admin.open_impact` (and
not `admin.protect_reads`). They come in pages (`limit`, `cursor`), bounded in size whatever
the ledger holds.

Every write is stored in the shared state (which tells every worker and replica), applied
to this worker at once (`policy.reload()`), appended to the audit log and logged at WARNING
on `mirror.admin` as one line (untrusted fields escaped). Every bad input is a 4xx naming
the field: control and formatting characters (`safetext`) in any text field are refused,
times are range-checked, JSON bodies are bounded in size and depth. Parsing and validation
are pure functions; handlers do the I/O.

The modules: `parse` and `auth` are pure (request parsing, cursors; tokens and who may read),
`rules` keeps rules and their audit, `impact` answers impact reports, `routes` holds the
aiohttp handlers and the route table."""
