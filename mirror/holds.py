"""The quarantine queue's records: versions clients asked for and were held back by
quarantine, who asked and how often. Pure: the values, what a document or a refusal holds,
and the bounds every state backend keeps (`StateStore.record_holds`, `held_versions`).

A hold is noted where it happens: a refused artifact or pinned version (`errors.Held` of a
quarantined decision) and a metadata document served with versions withheld by quarantine
(the versions its `npm-notice` / `X-Mirror-Notice` names). Blocks and freezes are not
quarantine: they are listed on their own pages, never here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from mirror import policy
from mirror.model import Rendered

# Versions whose last hold is older than this are pruned, and so are requesters.
HOLDS_RETENTION: Final = timedelta(days=30)
# At most this many versions per ecosystem are kept (the most recently held).
HOLDS_KEPT: Final = 10_000
# Distinct requesters (client address, read token) kept per version: more are counted as
# "at least this many", never stored. Any package reader adds entries, so the queue's size
# is bounded whatever clients do: at most HOLDS_KEPT versions x REQUESTERS_KEPT requesters
# per ecosystem (1M, about 100 MB of Redis or SQLite at the worst).
REQUESTERS_KEPT: Final = 100
# Requesters one `held_versions` row names (the most recent ones).
REQUESTERS_SHOWN: Final = 20


@dataclass(frozen=True, slots=True)
class HeldSubject:
    """One version held back by quarantine, as a document or a refusal knows it."""

    ecosystem: str
    package: str
    version: str
    published_at: datetime | None
    until: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldRendered(Rendered):
    """A rendered view that withholds versions by quarantine: each request served it is
    noted in the queue (the view is rendered once, served many times)."""

    held: tuple[HeldSubject, ...] = ()

    @staticmethod
    def of(view: Rendered, held: tuple[HeldSubject, ...]) -> HeldRendered:
        return HeldRendered(
            body=view.body,
            content_type=view.content_type,
            etag=view.etag,
            gzipped=view.gzipped,
            brotli=view.brotli,
            valid_until=view.valid_until,
            last_modified=view.last_modified,
            headers=view.headers,
            held=held,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldEvent:
    """Requests for one held version by one requester (client address, read token name, ""
    = none), as a worker gathers them before writing: first `at`, latest `last_at`,
    `count` requests."""

    subject: HeldSubject
    client: str
    token: str
    at: datetime
    last_at: datetime
    count: int = 1

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        subject = self.subject
        return (subject.ecosystem, subject.package, subject.version, self.client, self.token)

    def merged(self, other: HoldEvent) -> HoldEvent:
        """This event and `other` (the same key) as one; the later one's subject wins (its
        publish time and `until` are the newest the mirror knew)."""
        later = other if other.last_at >= self.last_at else self
        return HoldEvent(
            subject=later.subject,
            client=self.client,
            token=self.token,
            at=min(self.at, other.at),
            last_at=max(self.last_at, other.last_at),
            count=self.count + other.count,
        )


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked for a held version: the client address and the read token's name ("" =
    none)."""

    client: str
    token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldVersion:
    """A version of the queue, aggregated over every worker: `requests` held, by
    `requester_count` distinct requesters (at least that many when `more_requesters`), the
    most recent of them in `requesters` (at most REQUESTERS_SHOWN), first and last held."""

    ecosystem: str
    package: str
    version: str
    published_at: datetime | None
    until: datetime | None
    requests: int
    requesters: tuple[Requester, ...]
    requester_count: int
    more_requesters: bool
    first_held: datetime
    last_held: datetime


def merged_events(events: Iterable[HoldEvent]) -> list[HoldEvent]:
    """`events` with those of one key (version, client, read token) merged into one, in the
    order first seen: what a state backend writes (a batch may hold one key several times:
    the same version withheld by two renderings of a document)."""
    merged: dict[tuple[str, str, str, str, str], HoldEvent] = {}
    for event in events:
        known = merged.get(event.key)
        merged[event.key] = event if known is None else known.merged(event)
    return list(merged.values())


def said_micros(subject: HeldSubject) -> tuple[int | None, int | None]:
    """What a hold said as the state backends store it: its publish time and `until`, in
    microseconds since the epoch (None when not known)."""
    return _optional_micros(subject.published_at), _optional_micros(subject.until)


def _optional_micros(at: datetime | None) -> int | None:
    return None if at is None else (at - _EPOCH) // _MICRO


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO: Final = timedelta(microseconds=1)


def quarantined(decisions: Iterable[object]) -> tuple[HeldSubject, ...]:
    """The versions of `decisions` held by quarantine alone (not a block or a freeze), one
    each (PyPI decides files: a version's files count once, the latest `until` kept)."""
    found: dict[tuple[str, str, str], HeldSubject] = {}
    for decision in decisions:
        subject = held_subject(decision)
        if subject is None:
            continue
        key = (subject.ecosystem, subject.package, subject.version)
        known = found.get(key)
        if known is None or _later(subject.until, known.until):
            found[key] = subject
    return tuple(found.values())


def held_subject(decision: object) -> HeldSubject | None:
    """The version a hidden decision holds by quarantine alone, else None (visible, blocked,
    frozen, or not a `policy.Decision`)."""
    if not isinstance(decision, policy.Decision):
        return None
    if decision.visible or decision.block is not None or decision.freeze is not None:
        return None
    if decision.verdict != policy.Verdict.QUARANTINED:
        return None
    subject = decision.subject
    return HeldSubject(
        ecosystem=subject.ecosystem,
        package=subject.package,
        version=subject.version,
        published_at=decision.published_at,
        until=decision.until,
    )


def _later(candidate: datetime | None, known: datetime | None) -> bool:
    if candidate is None:
        return False
    return known is None or candidate > known
