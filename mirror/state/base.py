"""The shared-state interface: `StateStore`, its pages and identity, and its retention
(the records it keeps are `mirror.model`'s). Backends (`local` = SQLite in the state dir,
`redis` = many replicas) implement `StateStore`; one contract suite tests both.
State holds no policy logic: it stores and returns records; `policy` interprets them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from mirror.holds import HeldVersion, HoldEvent
from mirror.model import (
    AuditEntry,
    DownloadEvent,
    IdentityTotal,
    RuleKind,
    RuleRecord,
    TakedownEvent,
)
from mirror.traffic import TrafficCount

# Retention, the same in every backend. The ledger keeps one row per (client address, read
# token, file) seen within `LEDGER_RETENTION` (by last seen), at most `DOWNLOADS_KEPT` rows per
# package (the most recently seen). The audit keeps entries for `AUDIT_RETENTION`, and the
# entry that created a rule for as long as the rule is stored; against a write flood, at most
# `AUDIT_CAP` other entries (the oldest go first), so a creation entry of a live rule is never
# dropped.
DOWNLOADS_KEPT = 100_000
LEDGER_RETENTION = timedelta(days=90)
AUDIT_RETENTION = timedelta(days=365)
AUDIT_CAP = 250_000  # about 0.5 KB each: 125 MB at most
# Audit entries one `audit_page` call reads at most (filters that match little answer a short
# page and a position to go on from, never a scan of the whole log).
AUDIT_SCAN = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadPage:
    """One page of a package's download events, oldest first. `next_after` is the position
    to pass as `after` for the next page, or None when no matching event follows. Positions
    are opaque strings, meaningful only to the store that issued them."""

    events: list[DownloadEvent]
    next_after: str | None


class InvalidPosition(ValueError):
    """A `downloads_page` or `audit_page` position this store did not issue (a damaged or
    forged cursor)."""


def sort_identities(totals: Iterable[IdentityTotal]) -> list[IdentityTotal]:
    """Most downloads first, then by token and CI: the same order on every call."""
    return sorted(totals, key=lambda total: (-total.downloads, total.token, total.ci))


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditPage:
    """One page of the audit log, newest first. `next_after` is the position to pass as
    `after` for the next page (None: no matching entry follows). `pruned_before`: entries at
    or before this time may have been pruned (older than the retention, or past the safety
    cap); None when nothing was ever pruned."""

    entries: list[AuditEntry]
    next_after: str | None
    pruned_before: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StateIdentity:
    """What a shared state says about itself: its identity (None when it has none: it is
    new, or was emptied), its policy version, and the identities it was restored from
    (`restore`). Workers compare it with their last-known copy (`mirror.lastknown`)."""

    identity: str | None
    version: int
    restored_from: frozenset[str] = frozenset()
    # Seconds since the identity was claimed, by the state's own clock (None: not known, an
    # identity claimed before this was recorded): a copy-less replica waits before trusting
    # a state that is seconds old (`LivePolicy`). Grows between reads: not compared.
    age: float | None = field(default=None, compare=False)
    # A loss another replica published (`publish_loss`): the identity it lost and the
    # policy version of its copy; None when none is published.
    lost: str | None = None
    lost_version: int = 0


@dataclass(frozen=True, slots=True)
class FetchHolder:
    """Who holds the claim on an artifact's upstream fetch across replicas
    (`StateStore.claim_fetch`), and the name of the temp file it writes in the shared store
    ("" until it says)."""

    owner: str
    announced: str = ""


class StateStore(Protocol):
    """Async shared state. Every method raises `errors.StateUnavailable` when the backend
    cannot answer; callers fail closed on it."""

    async def open(self) -> None:
        """Connect / create schema. Idempotent."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the backend answers; raise StateUnavailable otherwise."""
        ...

    # rules (blocks, exemptions, freezes) -------------------------------------------------
    async def add_rule(self, rule: RuleRecord, *, audit: AuditEntry | None = None) -> None:
        """Store `rule` (its id is chosen by the caller) and bump the policy version; `audit`
        is stored in the same transaction (no change without its audit entry) and kept while
        the rule is stored. Writes to different rules never conflict; this never fails because
        other writers are busy (only when the backend cannot answer)."""
        ...

    async def remove_rule(
        self, kind: RuleKind, rule_id: str, *, audit: AuditEntry | None = None
    ) -> RuleRecord | None:
        """Delete and return the rule, or None if absent; bumps the policy version and stores
        `audit` in the same transaction if found."""
        ...

    async def list_rules(self, kind: RuleKind | None = None) -> list[RuleRecord]:
        """All stored rules of `kind` (all kinds if None), oldest first."""
        ...

    # change notification -----------------------------------------------------------------
    async def policy_version(self) -> int:
        """A counter that grows with every rule change; cheap to read."""
        ...

    def watch(self) -> AsyncIterator[int]:
        """Yield the new policy version after each change made by any worker or replica,
        within one second of the change. Runs until cancelled."""
        ...

    # publish-time cache (e.g. Maven .pom Last-Modified), kept forever ------------------------
    async def get_publish_time(self, ecosystem: str, key: str) -> datetime | None: ...

    async def set_publish_time(self, ecosystem: str, key: str, at: datetime) -> None: ...

    # first digest seen per artifact: later different bytes are an attack signal --------------
    async def remember_digest(self, ecosystem: str, key: str, digest: str) -> str:
        """Store `digest` for `key` if none is stored; return the stored (first) digest."""
        ...

    # download ledger --------------------------------------------------------------------------
    async def record_download(self, event: DownloadEvent) -> None: ...

    async def record_downloads(self, events: Sequence[DownloadEvent]) -> None:
        """Record many events in one write (the ledger batches them), each added to the row of
        its `DownloadEvent.key` (file, client address, read token): first seen the earliest,
        last seen the latest, counts summed, and what the client said (user agent, CI,
        command, session) from the row's latest download, as `DownloadEvent.merged`. Rows last
        seen longer than the ledger retention ago are pruned."""
        ...

    async def downloads(
        self, ecosystem: str, package: str, *, since: datetime | None = None
    ) -> list[DownloadEvent]:
        """Download rows of one package (all versions), first seen oldest first; `since`
        keeps the rows last seen at or after it."""
        ...

    async def downloads_page(
        self,
        ecosystem: str,
        package: str,
        *,
        limit: int,
        since: datetime | None = None,
        versions: Callable[[str], bool] | None = None,
        after: str | None = None,
    ) -> DownloadPage:
        """At most `limit` (>= 1) download events of one package, oldest first (ties in an
        order of the store's choosing, the same on every call), since `since`, whose version
        `versions` accepts (all if None), following the position `after` (from the start if
        None). Raises InvalidPosition for
        an `after` this store did not issue. The work is bounded by the package's retained
        events (`DOWNLOADS_KEPT`), never by the whole ledger."""
        ...

    async def downloaded_packages(self, ecosystem: str) -> list[str]:
        """Every package name of `ecosystem` with ledger entries, sorted (impact of globs).
        Read from an index of package names: the work follows the packages, not the rows."""
        ...

    async def download_identities(
        self,
        ecosystem: str,
        package: str,
        *,
        since: datetime | None = None,
        versions: Callable[[str], bool] | None = None,
    ) -> list[IdentityTotal]:
        """Who pulled the package: its rows last seen at or after `since` whose version
        `versions` accepts (all if None), totalled per (read token, CI system), most
        downloads first (then by token and CI). Bounded like `downloads_page` by the
        package's retained rows (`DOWNLOADS_KEPT`)."""
        ...

    # traffic figures of the dashboard (`mirror.traffic`) ---------------------------------------
    async def add_traffic(self, counts: Sequence[TrafficCount]) -> None:
        """Add `counts` to the stored ones, one row per (ecosystem, minute): the numbers
        summed atomically with every other writer's, the latest non-empty `last_error` kept.
        Rows older than `traffic.TRAFFIC_RETENTION` (by the store's clock) are pruned."""
        ...

    async def traffic(self, since: datetime) -> list[TrafficCount]:
        """The stored rows of minutes at or after `since` (within the retention), oldest
        first, then by ecosystem."""
        ...

    # audit log -----------------------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None: ...

    async def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` entries, newest first."""
        ...

    async def audit_page(
        self,
        *,
        limit: int,
        target: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: str | None = None,
    ) -> AuditPage:
        """At most `limit` (>= 1) entries, newest first, of `target` and `actor` (any if
        None), at or after `since` and before `until`, following the position `after`.
        Reads at most AUDIT_SCAN entries: a page may be short with a position to go on.
        Raises InvalidPosition for an `after` this store did not issue."""
        ...

    # quarantine queue (`mirror.holds`) ---------------------------------------------------------
    async def record_holds(self, events: Sequence[HoldEvent]) -> None:
        """Add held requests (`HoldRecorder` batches them): per version, the requests
        summed, first and last held, its publish time and `until` from the latest event;
        per version at most `holds.REQUESTERS_KEPT` distinct requesters (client address,
        read token) are kept, later ones only counted as requests (`more_requesters` says
        so while the latest of them is within `holds.HOLDS_RETENTION`). Requesters and
        versions last held longer than `holds.HOLDS_RETENTION` ago are pruned (requesters
        before new ones are counted), and past `holds.HOLDS_KEPT` per ecosystem, the least
        recently held; every key or row of the queue expires or is pruned."""
        ...

    async def held_versions(self, *, limit: int, ecosystem: str | None = None) -> list[HeldVersion]:
        """The `limit` most recently held versions (of `ecosystem`, all if None), most
        recently held first, each with its most recent requesters
        (`holds.REQUESTERS_SHOWN`)."""
        ...

    async def held_version(self, ecosystem: str, package: str, version: str) -> HeldVersion | None:
        """One version of the queue as `held_versions` lists it (`package` as stored: the
        name a client asked for), or None when it was not held lately."""
        ...

    # takedown events (`mirror.takedowns`) ----------------------------------------------------
    async def add_event(self, event: TakedownEvent) -> bool:
        """Store `event` unless an event with its id is stored already: True when it is new
        (the one caller that gets True logs, counts and posts it; every other worker or
        replica that noticed the same takedown gets False). Past `takedowns.EVENTS_KEPT`
        events (the backend's `events_kept`) those nobody had downloaded (`clients` 0) are
        dropped first, oldest first, then the oldest."""
        ...

    async def events(
        self,
        *,
        limit: int,
        ecosystem: str | None = None,
        package: str | None = None,
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> list[TakedownEvent]:
        """At most `limit` (>= 1) events, newest first (by detection time, then id), of
        `ecosystem` and `package` (as stored: the ecosystem's canonical name; any if None),
        detected at or after `since`, strictly before the position `before`
        ((detected_at, id) of the last event of the previous page)."""
        ...

    # identity and restore (mirror.lastknown) ----------------------------------------------------
    async def state_identity(self) -> StateIdentity:
        """Identity, policy version and predecessors, read together (cheap; polled)."""
        ...

    async def claim_identity(self, candidate: str) -> str:
        """Store `candidate` as the identity if the state has none, with the time (the state's
        clock) it was claimed; return the stored one."""
        ...

    async def publish_loss(self, lost: str, version: int, copy: bytes) -> bool:
        """Publish that the state `lost` (at policy `version`) was lost, with `copy`, the
        encoded last-known copy (`lastknown.encode`), so that replicas with no copy of their
        own enforce it too. Never read as live rules. Stored when none is published, or when
        the one published is of the same `lost` state at an older version; whether stored.
        `restore` removes it."""
        ...

    async def published_loss(self) -> tuple[str, int, bytes] | None:
        """The published loss: (lost identity, policy version, encoded copy), or None."""
        ...

    async def pinned_digests(self) -> dict[str, dict[str, str]]:
        """Every first-seen digest: ecosystem -> artifact key -> digest."""
        ...

    async def restore(
        self,
        *,
        rules: Sequence[RuleRecord],
        digests: Mapping[str, Mapping[str, str]],
        audit: Sequence[AuditEntry],
        version_floor: int,
        predecessor: str,
    ) -> int:
        """Re-seed a state from a last-known copy, in one transaction: add the `rules` it
        lacks (ids it has are kept), set the digest pins (the copy's first-seen digests win),
        merge `audit` into the log (by time, without duplicates), record `predecessor` as an
        identity this state continues, remove a published loss (`publish_loss`), and raise
        the policy version above `version_floor` and its own. Returns the new policy version
        (announced to watchers)."""
        ...

    # fetch claims across replicas (`mirror.artifacts.download`) ----------------------------------
    async def claim_fetch(self, key: str, owner: str, ttl: timedelta) -> FetchHolder:
        """Take the claim on `key`'s upstream fetch for `owner` (no newline in it) for `ttl`
        unless another owner holds it; return the holder (`owner` itself when granted). The
        embedded state is one host's: it always grants (the worker processes of a host
        coordinate by file lock alone)."""
        ...

    async def renew_fetch(self, key: str, owner: str, ttl: timedelta, announced: str = "") -> bool:
        """Extend `owner`'s claim on `key` to `ttl` from now and store `announced` (where it
        writes); False when `owner` no longer holds it (it expired, another owner took it)."""
        ...

    async def release_fetch(self, key: str, owner: str) -> None:
        """Drop `owner`'s claim on `key`, never another owner's: a late release, after the
        claim expired and was taken, leaves the new holder's claim alone."""
        ...

    async def durability_warning(self) -> str | None:
        """Why the backend may lose everything on a restart (e.g. Redis without persistence),
        or None when it persists or cannot tell."""
        ...
