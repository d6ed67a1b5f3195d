"""The mirror's error tree. Each error carries an HTTP status, a machine-readable reason and
data; one middleware in `app.py` renders them. Nothing here does I/O.

Our exception hierarchy::

    MirrorError                       500 internal
    ├── BadRequest                    400 bad-request
    ├── Unauthorized                  401 unauthorized
    ├── Forbidden                     403 forbidden
    ├── NotFound                      404 not-found
    │   └── EcosystemDisabled         404 ecosystem-disabled
    ├── Busy                          429 busy + Retry-After (as many jobs as allowed run already)
    ├── Held                          403 (policy refused a version; Held.from_decision)
    │   ├── Quarantined               403 quarantined  (data: until)
    │   └── Blocked                   403 blocked      (data: block)
    ├── UpstreamError                 502 upstream
    │   ├── UpstreamUnavailable       503 upstream-unavailable + Retry-After (transient: a reset,
    │   │                             refused connection, timeout, truncated body, upstream 5xx,
    │   │                             429 after retries; every client retries a 503)
    │   │                             502 without Retry-After when `transient=False` (the
    │   │                             upstream refused with 401/403, a redirect loop)
    │   ├── UpstreamNotFound          404 not-found (upstream said 404/410)
    │   ├── HostNotAllowed            502 host-not-allowed
    │   └── BadUpstreamDocument       502 bad-upstream-document
    ├── IntegrityError                502 integrity (bytes did not match the declared digest)
    ├── StorageFull                   507 storage-full
    ├── StateUnavailable              503 state-unavailable + Retry-After
    └── PolicyUnavailable             503 policy-unavailable + Retry-After (fail closed)

`ConfigError` is not an HTTP error: it stops start-up with a message naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from http import HTTPStatus
from typing import Any, Protocol, Self

# The HTTP reason phrase is printed by clients (Maven, pip): a short, complete clause.
MAX_PHRASE = 160
_CLAUSE_END = re.compile(r"(?<=\S)[:;.]\s")


# What a transient failure asks clients to wait before they retry (`Retry-After`, seconds):
# pip (through urllib3), Maven's resolver and uv wait that long, so it is short; an
# upstream's own hint is passed on up to RETRY_AFTER_MAX.
RETRY_AFTER = 2
RETRY_AFTER_MAX = 10
# A pre-warm job runs for minutes: a caller refused for being one too many waits longer.
BUSY_RETRY_AFTER = 30


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the key and the bad value."""


class MirrorError(Exception):
    """Base of every error the mirror answers a client with."""

    status: int = 500
    reason: str = "internal"
    # Response headers the status requires (a 401 names its auth scheme).
    headers: tuple[tuple[str, str], ...] = ()
    # The hidden `policy.Decision`s this answer stands for (a refusal's own, or the versions
    # a "nothing visible" 404 holds back): the quarantine queue notes them (`holding`).
    withheld: tuple[object, ...] = ()

    def __init__(self, message: str, *, status: int | None = None, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.data: dict[str, Any] = data

    def holding(self, decisions: Iterable[object]) -> Self:
        """This error, standing for the hidden `decisions` (see `withheld`)."""
        self.withheld = tuple(decisions)
        return self

    def body(self) -> dict[str, Any]:
        """The JSON body DESIGN.md promises: error, reason, until, block, plus extra data."""
        body: dict[str, Any] = {"error": self.message, "reason": self.reason}
        body.update({"until": None, "block": None})
        body.update(self.data)
        return body

    @property
    def phrase(self) -> str:
        """The HTTP reason phrase: the message's first clause when it is short, printable
        ASCII only (a control character there would break the response); else the status's
        standard phrase. The whole message is in the JSON body."""
        return reason_phrase(self.message, self.status)

    def __str__(self) -> str:
        return self.message


def reason_phrase(message: str, status: int) -> str:
    """A safe reason phrase for `message`: never cut mid-word, never a control character."""
    printable = "".join(
        char if 32 <= ord(char) < 127 else (" " if ord(char) < 160 else "?") for char in message
    )
    clause = _CLAUSE_END.split(" ".join(printable.split()), maxsplit=1)[0].strip()
    if clause and len(clause) <= MAX_PHRASE:
        return clause
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class BadRequest(MirrorError):
    status = 400
    reason = "bad-request"


REALM = "quarantine-mirror"  # the protection space every 401 names
BEARER_CHALLENGE = f'Bearer realm="{REALM}"'


class Unauthorized(MirrorError):
    """No valid credentials. `challenges` are the `WWW-Authenticate` values offered, one
    header each (Apache HttpClient, Maven's, reads each header as one challenge): the admin
    API wants a bearer token, package reads also offer Basic (`mirror.identity`)."""

    status = 401
    reason = "unauthorized"

    def __init__(
        self, message: str, *, challenges: tuple[str, ...] = (BEARER_CHALLENGE,), **data: Any
    ) -> None:
        super().__init__(message, **data)
        self.headers = tuple(("WWW-Authenticate", challenge) for challenge in challenges)


class Forbidden(MirrorError):
    status = 403
    reason = "forbidden"


class NotFound(MirrorError):
    status = 404
    reason = "not-found"


class EcosystemDisabled(NotFound):
    reason = "ecosystem-disabled"


class Busy(MirrorError):
    """As many jobs of a kind (pre-warms) run already as a worker may run: retry later (a
    job takes minutes, so a caller is asked to wait BUSY_RETRY_AFTER, not RETRY_AFTER)."""

    status = 429
    reason = "busy"
    headers = (("Retry-After", str(BUSY_RETRY_AFTER)),)


class _Describable(Protocol):
    def describe(self) -> dict[str, Any]: ...


class Refused(Protocol):
    """What `Held.from_decision` reads of a `policy.Decision` (errors sit below policy)."""

    @property
    def detail(self) -> str: ...

    @property
    def until(self) -> datetime | None: ...

    @property
    def signals(self) -> tuple[object, ...]: ...

    def describe_signals(self) -> tuple[dict[str, Any], ...]: ...

    @property
    def block(self) -> _Describable | None: ...


class Held(MirrorError):
    """Policy refuses this version or file. Never a 5xx: clients would retry or report an outage."""

    status = 403

    @staticmethod
    def from_decision(decision: Refused, message: str | None = None) -> Held:
        """The refusal of a hidden `policy.Decision`: `Blocked` naming its block, else
        `Quarantined` with its `until`. `message` (default: the decision's sentence) is what
        the client prints. The one place a decision becomes a 403."""
        text = decision.detail if message is None else message
        refusal: Held
        # The risk signals go in the body only when there are some: a refusal without them
        # is the same as before signals existed.
        signals = {"signals": list(decision.describe_signals())} if decision.signals else {}
        if decision.block is not None:
            refusal = Blocked(text, block=decision.block.describe(), **signals)
        else:
            refusal = Quarantined(text, until=decision.until, **signals)
        return refusal.holding((decision,))


class Quarantined(Held):
    reason = "quarantined"

    def __init__(self, message: str, *, until: datetime | None, **data: Any) -> None:
        super().__init__(message, until=until.isoformat() if until else None, **data)
        self.until = until


class Blocked(Held):
    reason = "blocked"

    def __init__(self, message: str, *, block: dict[str, Any], **data: Any) -> None:
        super().__init__(message, block=block, **data)
        self.block = block


class UpstreamError(MirrorError):
    status = 502
    reason = "upstream"


class UpstreamUnavailable(UpstreamError):
    """No usable answer from upstream this time. Transient by default: 503 with `Retry-After`,
    because pip retries only 500 and 503 (never 502 or 504), and npm, pnpm, yarn, uv and
    Maven retry a 503 too. `transient=False` for an answer retrying will not change (the
    upstream refused with 401/403, a redirect loop): 502, no `Retry-After`. `retry_after`
    is bounded to 1..RETRY_AFTER_MAX seconds."""

    reason = "upstream-unavailable"

    def __init__(
        self,
        message: str,
        *,
        transient: bool = True,
        retry_after: int = RETRY_AFTER,
        **data: Any,
    ) -> None:
        super().__init__(message, status=503 if transient else 502, **data)
        self.transient = transient
        self.retry_after = min(max(retry_after, 1), RETRY_AFTER_MAX) if transient else None
        if self.retry_after is not None:
            self.headers = (("Retry-After", str(self.retry_after)),)


class UpstreamNotFound(UpstreamError):
    status = 404
    reason = "not-found"


class HostNotAllowed(UpstreamError):
    reason = "host-not-allowed"


class BadUpstreamDocument(UpstreamError):
    reason = "bad-upstream-document"


class IntegrityError(MirrorError):
    status = 502
    reason = "integrity"


class StorageFull(MirrorError):
    status = 507
    reason = "storage-full"


class StateUnavailable(MirrorError):
    """Shared state did not answer in time: transient, so clients are asked to retry."""

    status = 503
    reason = "state-unavailable"
    headers = (("Retry-After", str(RETRY_AFTER)),)


class PolicyUnavailable(MirrorError):
    """No rule set this replica may serve with yet (fail closed): retried, it comes."""

    status = 503
    reason = "policy-unavailable"
    headers = (("Retry-After", str(RETRY_AFTER)),)
