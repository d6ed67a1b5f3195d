"""The download ledger behind "who already pulled it?": every artifact served is noted, and
the notes reach shared state in batches, off the serving path.

CI runners pull the same file thousands of times a day; one state write per pull would cost
more than serving the file. So the notes of one (client, file) are gathered while they wait
(first seen, last seen, how many) and written as one row; the state adds the rows of every
worker together, so the ledger holds one row per client and file, whatever the traffic.

Noting a download costs the serving path one append (`DownloadLedger.note_served`): the
request's facts as sent (address, X-Forwarded-For, user agent, npm's headers, read token,
time). They become rows (the client behind trusted proxies, what it says about itself,
`identity.describe_reported`, remembered per distinct client) when the notes are gathered:
at every write, and whenever `MAX_SERVED` notes wait, so memory stays bounded under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Generic, Protocol, Self, TypeVar

from mirror.config import IPNetwork
from mirror.forwarded import client_of
from mirror.identity import MAX_SCANNED, ClientIdentity, describe_reported
from mirror.metrics import Metrics
from mirror.model import ArtifactRef, DownloadEvent
from mirror.state.base import StateStore

log = logging.getLogger("mirror.ledger")

FLUSH_INTERVAL: Final = 0.5  # seconds a note may wait before it is written
MAX_BATCH: Final = 500  # rows in one state write
MAX_PENDING: Final = 50_000  # rows kept while state is down; the oldest are dropped
# Of a noted download's headers, what is kept until its row is made: longer values could
# not change the row (see `note_served`).
MAX_FORWARDED_KEPT: Final = 2048
MAX_WORD_KEPT: Final = 64
MAX_SERVED: Final = 1024  # downloads noted as sent before they are gathered into rows
# Distinct (user agent, npm command, npm session, token) whose identity is remembered; past
# it the memory starts over. Only reports up to MAX_REMEMBERED_CHARS long are remembered: a
# hostile client sending long random headers cannot make the memory large.
MAX_IDENTITIES: Final = 4096
MAX_REMEMBERED_CHARS: Final = 2048


class Row(Protocol):
    """What a batch gathers: rows of one key merge into one."""

    @property
    def key(self) -> Hashable: ...

    def merged(self, other: Self, /) -> Self: ...


R = TypeVar("R", bound=Row)


class BatchedWrites(Generic[R]):
    """Rows noted on the serving path, gathered by key (merged) and written to state in
    batches within `flush_interval`, off the serving path: `note` never blocks or fails.
    `what` names the rows in logs ("downloads", "holds").

    With `gather`, rows also come from a source read at every write (a tally the serving path
    adds to), and `start` writes every `flush_interval` until `close`, whether or not anything
    was noted. At most `max_pending` rows wait while state is down: the oldest are dropped."""

    def __init__(
        self,
        write: Callable[[Sequence[R]], Awaitable[None]],
        metrics: Metrics,
        *,
        backend: str,
        what: str,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
        max_batch: int = MAX_BATCH,
        gather: Callable[[], Iterable[R]] | None = None,
    ) -> None:
        self._write = write
        self._metrics = metrics
        self._backend = backend
        self._what = what
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._gather = gather
        # One row per key, oldest first (the order first noted; a row put back after a failed
        # write goes back in its place among them, so eviction still drops the oldest).
        self._pending: dict[Hashable, R] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._periodic = False
        # Set by close(): the waiting flusher writes at once instead of after its interval.
        self._closing = asyncio.Event()
        self._last_write_failed = False

    @property
    def backend(self) -> str:
        """The state backend written to (`local`, `redis`)."""
        return self._backend

    @property
    def pending(self) -> int:
        """Rows waiting to be written (a subclass adds notes not yet gathered into rows)."""
        return len(self._pending)

    @property
    def last_write_failed(self) -> bool:
        """Whether the latest write failed (state down or not answering)."""
        return self._last_write_failed

    def note(self, event: R) -> None:
        """Remember one row; written within `flush_interval`. Never blocks or fails."""
        self._add(event)
        self._bound()
        self._arm()

    def start(self) -> None:
        """Write every `flush_interval` until `close`, rows noted or not (for `gather`)."""
        self._periodic = True
        self._arm()

    async def flush(self) -> bool:
        """Write every pending row now (and what `gather` has); whether all of it was
        written. Never raises for a state failure: the rows wait for the next write."""
        if self._gather is not None:
            self._take(self._gather())
        while self._pending:
            # Taken out before the write: a flush running at the same time (the timer's and
            # an explicit one) must not write the same rows again. The oldest rows, without
            # copying the whole backlog per batch.
            keys = list(itertools.islice(self._pending, self._max_batch))
            batch = [self._pending.pop(key) for key in keys]
            try:
                await self._write(batch)
            except Exception as exc:  # any state failure: keep the rows, retry later
                self._put_back(batch)
                self._last_write_failed = True
                self._metrics.state_errors.labels(self._backend).inc()
                log.warning("%s: could not record %d rows: %s", self._what, len(batch), exc)
                return False
            self._last_write_failed = False
        return True

    async def close(self) -> None:
        """Write what is pending. A flush already writing is waited for, never cancelled:
        its batch has left the queue, so cancelling it would lose those notes."""
        self._closing.set()
        flusher = self._flusher
        if flusher is not None:
            await flusher  # it writes at once, everything pending
        if flusher is None or not self._last_write_failed:
            await self.flush()  # what arrived meanwhile; state that just failed is not retried
        if self.pending:
            log.error("%s closed with %d rows unwritten", self._what, self.pending)

    def _take(self, rows: Iterable[R]) -> None:
        """Gather `rows` into the pending ones, then keep the bound."""
        for row in rows:
            self._add(row)
        self._bound()

    def _add(self, row: R) -> None:
        known = self._pending.get(row.key)
        self._pending[row.key] = row if known is None else known.merged(row)

    def _put_back(self, batch: Sequence[R]) -> None:
        """A batch that failed goes back before the rows that came after it (it is older),
        merged with any row of its keys noted meanwhile; then the bound drops the oldest."""
        newer, self._pending = self._pending, {}
        for row in batch:
            self._add(row)
        for row in newer.values():
            self._add(row)
        self._bound()

    def _bound(self) -> None:
        excess = len(self._pending) - self._max_pending
        if excess <= 0:
            return
        for key in list(itertools.islice(self._pending, excess)):
            del self._pending[key]
        log.error("%s backlog full: the %d oldest rows were dropped", self._what, excess)

    def _arm(self) -> None:
        if self._flusher is None and not self._closing.is_set():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._closing.wait()
            try:
                await self.flush()
            except Exception:  # never let the timer die (a `gather` bug): the next one tries
                log.exception("%s: writing failed", self._what)
        finally:
            self._flusher = None
            if (self.pending or self._periodic) and not self._closing.is_set():
                # State failed, more arrived while writing, or the timer goes on.
                self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())


# One download as the serving path notes it, a plain tuple (the cheapest thing to make):
# the file, the socket peer, X-Forwarded-For, User-Agent, npm-command, npm-session (each as
# sent, None when absent), the read token's name and the time.
Served = tuple[
    ArtifactRef, str | None, str | None, str | None, str | None, str | None, str, datetime
]
# What a client's identity is remembered by: user agent, command, session, token.
_Reported = tuple[str | None, str | None, str | None, str]


@dataclass(slots=True)
class _Gathered:
    """The notes of one row while they are read: its file and client, first and last seen,
    how many, and what the client reported in the latest."""

    ref: ArtifactRef
    client: str
    first: datetime
    last: datetime
    count: int
    reported: _Reported

    def event(self, who: ClientIdentity) -> DownloadEvent:
        return DownloadEvent(
            ecosystem=self.ref.ecosystem,
            package=self.ref.package,
            version=self.ref.version,
            filename=self.ref.filename,
            client=self.client,
            at=self.first,
            last_at=self.last,
            count=self.count,
            token=who.token,
            user_agent=who.user_agent,
            ci=who.ci,
            command=who.command,
            session=who.session,
        )


class DownloadLedger(BatchedWrites[DownloadEvent]):
    """The download ledger: one row per (client, file) gathered, `record_downloads`.
    Downloads are noted as sent (`note_served`) and become rows at every write, or when
    `max_served` wait; `trusted_proxies` are the proxies whose X-Forwarded-For is believed."""

    def __init__(
        self,
        state: StateStore,
        metrics: Metrics,
        *,
        backend: str,
        flush_interval: float = FLUSH_INTERVAL,
        trusted_proxies: tuple[IPNetwork, ...] = (),
        max_served: int = MAX_SERVED,
    ) -> None:
        super().__init__(
            state.record_downloads,
            metrics,
            backend=backend,
            what="download ledger",
            flush_interval=flush_interval,
            gather=self._rows_of_served,
        )
        self._trusted_proxies = trusted_proxies
        self._max_served = max_served
        self._served: list[Served] = []
        self._identities: dict[_Reported, ClientIdentity] = {}

    @property
    def pending(self) -> int:
        """Rows waiting to be written, and downloads noted but not yet gathered into rows."""
        return super().pending + len(self._served)

    def note_served(
        self,
        ref: ArtifactRef,
        *,
        peer: str | None,
        forwarded_for: str | None,
        user_agent: str | None,
        command: str | None,
        session: str | None,
        token: str,
        at: datetime,
    ) -> None:
        """Remember that `ref` was served `at`, with the request's facts as sent (`peer` the
        socket address, the X-Forwarded-For, User-Agent, npm-command and npm-session headers,
        `token` the read token's name); written within `flush_interval`. One append: the
        facts become a row when the notes are gathered. Never blocks or fails."""
        # Only what a row can use is held (a client chooses these headers, up to 8 KiB each):
        # the user agent's prefix `clean_user_agent` reads, a short word or nothing, the
        # forwarded chain's right end (the walk reads it from the right).
        self._served.append(
            (
                ref,
                peer,
                forwarded_for[-MAX_FORWARDED_KEPT:] if forwarded_for else forwarded_for,
                user_agent[: 4 * MAX_SCANNED] if user_agent else user_agent,
                command if command is None or len(command) <= MAX_WORD_KEPT else None,
                session if session is None or len(session) <= MAX_WORD_KEPT else None,
                token,
                at,
            )
        )
        if len(self._served) >= self._max_served:
            self._take(self._rows_of_served())
        self._arm()

    def _rows_of_served(self) -> list[DownloadEvent]:
        """The downloads noted so far as rows, the notes emptied: one row per key, in the
        order first noted, as `DownloadEvent.merged` would make of the notes one by one
        (first and last seen, how many, and what the client said in the latest note, the
        later noted on a tie), without an event per note."""
        served, self._served = self._served, []
        rows: dict[Hashable, _Gathered] = {}
        clients: dict[tuple[str | None, str | None], str] = {}  # the same few, many times
        for ref, peer, forwarded_for, user_agent, command, session, token, at in served:
            client = clients.get((peer, forwarded_for))
            if client is None:
                client = client_of(peer, forwarded_for, self._trusted_proxies)
                clients[peer, forwarded_for] = client
            key = (ref.ecosystem, ref.package, ref.version, ref.filename, client, token)
            row = rows.get(key)
            if row is None:
                rows[key] = _Gathered(ref, client, at, at, 1, (user_agent, command, session, token))
                continue
            row.count += 1
            if at < row.first:
                row.first = at
            if at >= row.last:
                row.last = at
                row.reported = (user_agent, command, session, token)
        return [row.event(self._identity(row.reported)) for row in rows.values()]

    def _identity(self, reported: _Reported) -> ClientIdentity:
        """What a client said about itself, as `describe_reported` reads it; remembered,
        since a client repeats the same headers on every download."""
        known = self._identities.get(reported)
        if known is not None:
            return known
        user_agent, command, session, token = reported
        who = describe_reported(user_agent, command, session, token=token)
        if sum(len(part or "") for part in reported) <= MAX_REMEMBERED_CHARS:
            if len(self._identities) >= MAX_IDENTITIES:
                self._identities.clear()
            self._identities[reported] = who
        return who
