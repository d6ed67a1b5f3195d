"""Acts on takedowns: the metadata cache hands over each held document upstream replaced
(`metacache.DocumentChange`); what the new copy no longer offers, or newly yanks
(`takedowns.taken_down`), becomes an event with who had downloaded it (the download ledger),
recorded once across workers and replicas (`StateStore.add_event`), then by the one
recorder logged at WARNING, counted (`mirror_takedowns_total`) and posted to the webhook.

Choices, stated plainly:
- Never in a client's way: the cache only schedules a check; at most CHECKS_AT_ONCE run at
  a time and at most MAX_PENDING_CHECKS wait (each holds two parsed documents); a change
  past that is logged and skipped. An old copy not kept parsed is parsed here, in a thread
  when large, as the cache parses.
- Bounded: at most `takedowns.MAX_PER_DOCUMENT` events per document, each naming at most
  `takedowns.MAX_IMPACT_ROWS` clients (all counted) from at most MAX_LEDGER_ROWS ledger rows.
- A check never raises: what fails is logged (the takedown is noticed again by the next
  worker or replica that holds the old copy, if any).
- A removed npm or Maven version is also **blocked** (exactly that version, `===V`, by the
  actor `takedowns`, audited and logged like an admin's block): the refreshed document no
  longer names it, but a worker or replica still holding the old copy, a cached artifact and
  Maven (which asks for files by exact coordinates, never through the metadata) would serve
  it; a block reaches every worker within a second and applies to cached artifacts. An npm
  version can never be published again under the same number, nor a Maven release; an admin
  who wants it back deletes the block. A removed PyPI *file* is not blocked (a block covers
  a version: the release's other files are still offered), and a yanked file stays
  installable by exact pin (PEP 592).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from mirror import notices, policy, versions
from mirror.clock import Clock
from mirror.metacache import PARSE_IN_THREAD_BYTES, DocumentChange
from mirror.metrics import Metrics
from mirror.model import ImpactRow, RuleRecord, TakedownEvent
from mirror.rulechanges import store_rule
from mirror.state.base import StateStore
from mirror.takedowns import MAX_IMPACT_ROWS, Listing, Takedown, event_of, event_to_json, taken_down
from mirror.webhook import Webhook

log = logging.getLogger(__name__)

CHECKS_AT_ONCE: Final = 2
MAX_PENDING_CHECKS: Final = 32
LEDGER_PAGE: Final = 1000
MAX_LEDGER_ROWS: Final = 100_000
# Clients named in the log line (the event keeps up to MAX_IMPACT_ROWS).
LOGGED_CLIENTS: Final = 10
# Who the blocks of removed versions are added by (the audit log's actor).
TAKEDOWN_ACTOR: Final = "takedowns"
# The ecosystems whose removed versions are blocked (see the module docstring).
BLOCKED_WHEN_REMOVED: Final = frozenset({"npm", "maven"})


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
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self._webhook = webhook
        self._flush_ledger = flush_ledger
        self._reload_policy = reload_policy
        self._checks: set[asyncio.Task[list[TakedownEvent]]] = set()
        self._running = asyncio.Semaphore(CHECKS_AT_ONCE)
        self._skipped_logged = False

    def __call__(self, change: DocumentChange) -> None:
        """Schedule a check of `change` (the metacache's watcher: returns at once)."""
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
        task = asyncio.get_running_loop().create_task(self._guarded(change), name="takedown check")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def drain(self) -> None:
        """Wait for the checks scheduled so far and the deliveries they queued."""
        while self._checks:
            await asyncio.wait(set(self._checks))
        if self._webhook is not None:
            await self._webhook.drain()

    async def close(self) -> None:
        for task in list(self._checks):
            task.cancel()
        for task in list(self._checks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._webhook is not None:
            await self._webhook.close()

    async def _guarded(self, change: DocumentChange) -> list[TakedownEvent]:
        try:
            async with self._running:
                return await self.check(change)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not check a %s document for takedowns", change.ecosystem)
            return []

    async def check(self, change: DocumentChange) -> list[TakedownEvent]:
        """The events `change` records (those this caller recorded first)."""
        parser: Any = change.parse
        before = change.before
        if not change.before_parsed:
            try:
                before = await _parse(parser, before)
            except Exception as exc:
                # A copy held was parsed once before it was served; one that no longer
                # parses (another parser's) says nothing reliable about what was offered.
                log.debug("takedowns: the old copy does not parse: %s", type(exc).__name__)
                return []
        listing_before: Listing = parser.listing(before)
        listing_after: Listing = {} if change.after is None else parser.listing(change.after)
        found = taken_down(listing_before, listing_after)
        if not found:
            return []
        named = getattr(parser, "listed_package", None)
        package = str(named(change.after if change.after is not None else before)) if named else ""
        if not package:
            return []
        if self._flush_ledger is not None:
            # This worker's downloads not written yet are counted too.
            with contextlib.suppress(Exception):
                await self._flush_ledger()
        recorded = []
        blocked = False
        for takedown in found:
            event = await self._event(change.ecosystem, package, takedown)
            if await self._state.add_event(event):
                self._announce(event)
                recorded.append(event)
                blocked = await self._block(event) or blocked
        if blocked and self._reload_policy is not None:
            # This worker at once; the others within a second, as for an admin's block.
            await self._reload_policy()
        return recorded

    async def _block(self, event: TakedownEvent) -> bool:
        """Block exactly the removed version (see the module docstring); True if stored."""
        if event.kind != "removed" or event.ecosystem not in BLOCKED_WHEN_REMOVED:
            return False
        record = RuleRecord(
            id=policy.new_rule_id("block"),
            kind="block",
            ecosystem=event.ecosystem,
            package=event.package,
            versions=versions.exact_spec(event.version),
            reason=f"removed upstream (takedown {event.id})",
            created_at=self._clock.now(),
            created_by=TAKEDOWN_ACTOR,
        )
        try:
            await store_rule(self._state, self._clock, record, actor=TAKEDOWN_ACTOR, client="")
        except Exception as exc:  # the event stands; the document no longer names it anyway
            log.warning("takedown %s: could not block %s: %s", event.id, event.ecosystem, exc)
            return False
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


async def _parse(parser: Any, raw: bytes) -> Any:
    if len(raw) > PARSE_IN_THREAD_BYTES:
        return await asyncio.to_thread(parser, raw)
    return parser(raw)
