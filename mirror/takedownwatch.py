"""Acts on takedowns: the metadata cache hands over each held document upstream replaced
(`metacache.DocumentChange`); what the new copy no longer offers, or newly yanks
(`takedowns.taken_down`), becomes an event with who had downloaded it (the download ledger),
recorded once across workers and replicas (`StateStore.add_event`), then by the one
recorder logged at WARNING, counted (`mirror_takedowns_total`) and posted to the webhook.

Choices, stated plainly:
- Never in a client's way: the cache only schedules a check; at most CHECKS_AT_ONCE run at
  a time and at most MAX_PENDING_CHECKS wait; a change past that is logged and skipped. A
  pending check holds listings (version or file to its state), not documents: the new copy,
  and the old one when held parsed, are listed when the change is handed over; an old copy
  held only as bytes is parsed by the check, in a thread when large, as the cache parses.
- Bounded: at most `takedowns.MAX_PER_DOCUMENT` events per document (the newest; the number
  left out is logged), each naming at most `takedowns.MAX_IMPACT_ROWS` clients (all
  counted) from at most MAX_LEDGER_ROWS ledger rows.
- A check never raises. What fails on the state (an event not recorded, a block not stored
  after its event was) is kept, small, and tried again after each of RETRY_DELAYS (at most
  MAX_RETRYING checks wait so), then given up and logged at ERROR: the cache has replaced
  the old copy, so nothing else would notice the takedown again on this worker.
- A removed npm or Maven version that someone downloaded through the mirror (the event's
  `downloads`, from the ledger) is also **blocked** (exactly that version, `===V`, by the
  actor `takedowns`, audited and logged like an admin's block; at most
  MAX_BLOCKS_PER_PACKAGE per package, and only a plain version, `versions.is_exact_version`:
  a block that does not parse would apply to every version). Why a block: the refreshed
  document no longer names it, but a worker or replica still holding the old copy, a cached
  artifact and Maven (which asks for files by exact coordinates, never through the metadata)
  would serve it; a block reaches every worker within a second and applies to cached
  artifacts. An npm version can never be published again under the same number, nor a
  Maven release; an admin who wants it back deletes the block. A version never served has
  nothing cached to refuse (a download another worker has not written to the ledger yet is
  not counted). A removed PyPI *file* is not blocked (a block covers a version: the
  release's other files are still offered), and a yanked file stays installable by exact
  pin (PEP 592).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mirror import notices, policy, versions
from mirror.clock import Clock
from mirror.metacache import PARSE_IN_THREAD_BYTES, DocumentChange
from mirror.metrics import Metrics
from mirror.model import ImpactRow, RuleRecord, TakedownEvent
from mirror.rulechanges import store_rule
from mirror.state.base import StateStore
from mirror.takedowns import (
    MAX_IMPACT_ROWS,
    MAX_PER_DOCUMENT,
    Listing,
    Takedown,
    event_of,
    event_to_json,
    taken_down,
)
from mirror.webhook import Webhook

log = logging.getLogger(__name__)

CHECKS_AT_ONCE: Final = 2
MAX_PENDING_CHECKS: Final = 32
# A check that failed on the state (Redis down, SQLite locked) is tried again after each of
# these delays in turn, then given up (logged); at most MAX_RETRYING checks wait so.
RETRY_DELAYS: Final = (1.0, 5.0, 30.0)
MAX_RETRYING: Final = 32
LEDGER_PAGE: Final = 1000
MAX_LEDGER_ROWS: Final = 100_000
# Clients named in the log line (the event keeps up to MAX_IMPACT_ROWS).
LOGGED_CLIENTS: Final = 10
# Who the blocks of removed versions are added by (the audit log's actor).
TAKEDOWN_ACTOR: Final = "takedowns"
# The ecosystems whose removed versions are blocked (see the module docstring).
BLOCKED_WHEN_REMOVED: Final = frozenset({"npm", "maven"})
# At most this many blocks by TAKEDOWN_ACTOR per package: an upstream that publishes and
# unpublishes (or flaps) must not grow the rules without bound.
MAX_BLOCKS_PER_PACKAGE: Final = 20


@dataclass(slots=True)
class _Work:
    """What a check still has to do, small (no document): the takedowns not yet recorded,
    and the events recorded whose block is still to be stored."""

    ecosystem: str
    package: str
    takedowns: list[Takedown]
    unblocked: list[TakedownEvent] = field(default_factory=list)
    recorded: list[TakedownEvent] = field(default_factory=list)
    attempts: int = 0


class TakedownWatch:
    """See the module docstring. Construct without I/O; call it with a change (the
    metacache's watcher); `close()` cancels checks still running and drains the webhook."""

    def __init__(
        self,
        state: StateStore,
        metrics: Metrics,
        clock: Clock,
        *,
        webhook: Webhook | None = None,
        flush_ledger: Callable[[], Awaitable[object]] | None = None,
        reload_policy: Callable[[], Awaitable[object]] | None = None,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self._webhook = webhook
        self._flush_ledger = flush_ledger
        self._reload_policy = reload_policy
        self._retry_delays = tuple(retry_delays)
        self._checks: set[asyncio.Task[list[TakedownEvent]]] = set()
        self._retries: set[asyncio.Task[list[TakedownEvent]]] = set()
        self._retrying = 0
        self._running = asyncio.Semaphore(CHECKS_AT_ONCE)
        self._skipped_logged = False

    def __call__(self, change: DocumentChange) -> None:
        """Schedule a check of `change` (the metacache's watcher: returns at once). The new
        copy, and the old one when held parsed, are listed here (small: a version or file
        to its state) so that no pending check holds a whole document; an old copy held
        only as bytes is parsed by the check."""
        if len(self._checks) >= MAX_PENDING_CHECKS:
            if not self._skipped_logged:
                self._skipped_logged = True
                log.warning(
                    "takedown checks: %d are waiting already; skipping the change of a %s "
                    "document (later ones skipped silently)",
                    MAX_PENDING_CHECKS,
                    change.ecosystem,
                )
            return
        parser: Any = change.parse
        try:
            after: Listing = {} if change.after is None else dict(parser.listing(change.after))
            package = _package(parser, change.after)
            before: Listing | None = None
            if change.before_parsed:
                before = dict(parser.listing(change.before))
                package = package or _package(parser, change.before)
        except Exception:
            log.exception("could not list a %s document for takedowns", change.ecosystem)
            return
        if before is not None and not taken_down(before, after, limit=1):
            return
        raw = None if change.before_parsed else change.before
        self._schedule(self._guarded(change.ecosystem, parser, before, raw, after, package))

    def _schedule(self, work: Coroutine[Any, Any, list[TakedownEvent]]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="takedown check")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def drain(self) -> None:
        """Wait for the checks scheduled so far (and their retries) and the deliveries
        they queued."""
        while self._checks or self._retries:
            await asyncio.wait(self._checks | self._retries)
        if self._webhook is not None:
            await self._webhook.drain()

    async def close(self) -> None:
        running = [*self._checks, *self._retries]
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._webhook is not None:
            await self._webhook.close()

    async def _guarded(
        self,
        ecosystem: str,
        parser: Any,
        before: Listing | None,
        raw: bytes | None,
        after: Listing,
        package: str,
    ) -> list[TakedownEvent]:
        try:
            async with self._running:
                if before is None:
                    try:
                        parsed = await _parse(parser, raw or b"")
                        before = dict(parser.listing(parsed))
                        package = package or _package(parser, parsed)
                    except Exception as exc:
                        # A copy held was parsed once before it was served; one that no
                        # longer parses (another parser's) says nothing reliable.
                        log.debug("takedowns: the old copy does not parse: %s", type(exc).__name__)
                        return []
                    del parsed
                found = taken_down(before, after, limit=None)
                del before, after
                if not found or not package:
                    return []
                if len(found) > MAX_PER_DOCUMENT:
                    log.warning(
                        "takedowns: %d things gone from one %s document of %s; recording the "
                        "newest %d, %d left out",
                        len(found),
                        ecosystem,
                        notices.clean(package, 200),
                        MAX_PER_DOCUMENT,
                        len(found) - MAX_PER_DOCUMENT,
                    )
                    found = found[-MAX_PER_DOCUMENT:]
                # Newest first: past MAX_BLOCKS_PER_PACKAGE, the newest (the likely reason
                # for the takedown) are the ones blocked.
                work = _Work(ecosystem, package, found[::-1])
                await self._attempt(work)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not check a %s document for takedowns", ecosystem)
            return []
        if work.takedowns or work.unblocked:
            task = asyncio.get_running_loop().create_task(
                self._retried(work), name="takedown retry"
            )
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
        return work.recorded

    async def _retried(self, work: _Work) -> list[TakedownEvent]:
        """Try `work` again after each of the retry delays while it has something left."""
        if self._retrying >= MAX_RETRYING:
            log.warning(
                "takedowns: %d checks are waiting to retry already; giving up %d takedowns "
                "of %s %s",
                MAX_RETRYING,
                len(work.takedowns) + len(work.unblocked),
                work.ecosystem,
                notices.clean(work.package, 200),
            )
            return work.recorded
        self._retrying += 1
        try:
            for delay in self._retry_delays:
                await asyncio.sleep(delay)
                try:
                    async with self._running:
                        await self._attempt(work)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("takedowns: a retry failed")
                if not (work.takedowns or work.unblocked):
                    return work.recorded
            log.error(
                "takedowns: giving up on %d takedowns and %d blocks of %s %s after %d retries",
                len(work.takedowns),
                len(work.unblocked),
                work.ecosystem,
                notices.clean(work.package, 200),
                len(self._retry_delays),
            )
            return work.recorded
        finally:
            self._retrying -= 1

    async def _attempt(self, work: _Work) -> None:
        """Record what `work` has left; what fails on the state stays in `work` (logged)."""
        blocked = False
        try:
            if work.takedowns and self._flush_ledger is not None:
                # This worker's downloads not written yet are counted too.
                with contextlib.suppress(Exception):
                    await self._flush_ledger()
            while work.takedowns:
                event = await self._event(work.ecosystem, work.package, work.takedowns[0])
                added = await self._state.add_event(event)
                work.takedowns.pop(0)
                if added:
                    self._announce(event)
                    work.recorded.append(event)
                    work.unblocked.append(event)
        except Exception as exc:  # the state down (or locked): kept for a retry
            log.warning(
                "takedowns: could not record %d takedowns of %s %s (will retry): %s",
                len(work.takedowns),
                work.ecosystem,
                notices.clean(work.package, 200),
                exc,
            )
        pending = work.unblocked
        work.unblocked = []
        for event in pending:
            outcome = await self._block(event)
            if outcome is None:
                work.unblocked.append(event)
            blocked = blocked or bool(outcome)
        if blocked and self._reload_policy is not None:
            # This worker at once; the others within a second, as for an admin's block.
            with contextlib.suppress(Exception):
                await self._reload_policy()

    async def _block(self, event: TakedownEvent) -> bool | None:
        """Block exactly the removed version (see the module docstring): True if stored,
        False if it needs none, None if storing failed (to be retried)."""
        if event.kind != "removed" or event.ecosystem not in BLOCKED_WHEN_REMOVED:
            return False
        if event.downloads <= 0:
            # Never served through the mirror: nothing of it is cached, so nothing to refuse.
            return False
        if not versions.is_exact_version(event.ecosystem, event.version):
            # An exact spec of it would not parse, and a block that does not parse applies
            # to every version: an odd version string must not block the whole package.
            log.warning(
                "takedown %s: not blocking %s: not a plain version", event.id, event.ecosystem
            )
            return False
        try:
            held = [
                rule
                for rule in await self._state.list_rules("block")
                if rule.created_by == TAKEDOWN_ACTOR
                and rule.ecosystem == event.ecosystem
                and rule.package == event.package
            ]
            spec = versions.exact_spec(event.version)
            if any(rule.versions == spec for rule in held):
                return False  # blocked already (a retry after an unanswered write)
            if len(held) >= MAX_BLOCKS_PER_PACKAGE:
                log.warning(
                    "takedown %s: not blocking %s %s@%s: %d takedown blocks of this package "
                    "exist already (the most kept)",
                    event.id,
                    event.ecosystem,
                    notices.clean(event.package, 200),
                    notices.clean(event.version, 100),
                    MAX_BLOCKS_PER_PACKAGE,
                )
                return False
            record = RuleRecord(
                id=policy.new_rule_id("block"),
                kind="block",
                ecosystem=event.ecosystem,
                package=event.package,
                versions=spec,
                reason=f"removed upstream (takedown {event.id})",
                created_at=self._clock.now(),
                created_by=TAKEDOWN_ACTOR,
            )
            await store_rule(self._state, self._clock, record, actor=TAKEDOWN_ACTOR, client="")
        except Exception as exc:  # the event stands; the block is tried again
            log.warning(
                "takedown %s: could not block %s (will retry): %s", event.id, event.ecosystem, exc
            )
            return None
        return True

    async def _event(self, ecosystem: str, package: str, takedown: Takedown) -> TakedownEvent:
        rows, downloads = await self._impact(ecosystem, package, takedown)
        ranked = sorted(rows.values(), key=lambda row: (row.first_at, row.client, row.token))
        return event_of(
            ecosystem,
            package,
            takedown,
            self._clock.now(),
            tuple(ranked[:MAX_IMPACT_ROWS]),
            clients=len(rows),
            downloads=downloads,
        )

    async def _impact(
        self, ecosystem: str, package: str, takedown: Takedown
    ) -> tuple[dict[tuple[str, str], ImpactRow], int]:
        """Who downloaded it, per (client address, read token), from the ledger's rows of
        its version (and file, for a PyPI file): read page by page, at most MAX_LEDGER_ROWS."""
        rows: dict[tuple[str, str], ImpactRow] = {}
        downloads = 0
        after: str | None = None
        read = 0
        while read < MAX_LEDGER_ROWS:
            page = await self._state.downloads_page(
                ecosystem,
                package,
                limit=LEDGER_PAGE,
                versions=lambda version: version == takedown.version,
                after=after,
            )
            read += len(page.events)
            for download in page.events:
                if takedown.filename and download.filename != takedown.filename:
                    continue
                downloads += download.count
                key = (download.client, download.token)
                held = rows.get(key)
                rows[key] = ImpactRow(
                    client=download.client,
                    token=download.token,
                    ci=download.ci,
                    count=download.count + (held.count if held else 0),
                    first_at=min(download.at, held.first_at) if held else download.at,
                    last_at=max(download.last_seen, held.last_at) if held else download.last_seen,
                )
            after = page.next_after
            if after is None:
                break
        return rows, downloads

    def _announce(self, event: TakedownEvent) -> None:
        what = f"{event.package}@{event.version}"
        if event.filename:
            what += f" ({event.filename})"
        clients = ", ".join(
            row.client + (f" (token {row.token})" if row.token else "")
            for row in event.impact[:LOGGED_CLIENTS]
        )
        more = event.clients - min(len(event.impact), LOGGED_CLIENTS)
        if more > 0:
            clients += f" and {more} more"
        reason = f": {event.reason}" if event.reason else ""
        log.warning(
            "takedown: %s %s %s upstream%s; %d clients had downloaded it (%d downloads)%s",
            event.ecosystem,
            notices.clean(what, 300),
            event.kind,
            notices.clean(reason, 300),
            event.clients,
            event.downloads,
            f": {clients}" if clients else "",
        )
        self._metrics.takedowns.labels(event.ecosystem, event.kind).inc()
        if self._webhook is not None:
            self._webhook.send(event_to_json(event))


def _package(parser: Any, parsed: Any) -> str:
    """The package a document is of (the one asked for, never one it claims), or ""."""
    named = getattr(parser, "listed_package", None)
    if named is None or parsed is None:
        return ""
    return str(named(parsed))


async def _parse(parser: Any, raw: bytes) -> Any:
    if len(raw) > PARSE_IN_THREAD_BYTES:
        return await asyncio.to_thread(parser, raw)
    return parser(raw)
