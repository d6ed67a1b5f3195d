"""The advisory feeds (`feeds.sources`) synced into blocks every `feeds.interval`: what
`mirror import-osv` does by hand, done by the server, through the same reading
(`mirror.advisories`) and planning (`mirror.osv.collect`, `plan`), and the same rule writes
as the admin API (`mirror.rulechanges`: validated, one audit entry and one log line per
change, actor `feed`, the client naming the source, never a URL's credentials).

Failing closed: a sync first reads every source whole; a source that cannot be fetched or
read, that is truncated or holds no advisory at all, fails the sync before anything changes
(a WARNING, `mirror_feed_syncs_total{outcome="failed"}`), and the next one is tried an
interval later. Only an advisory that says it is withdrawn lifts blocks: an advisory missing
from a feed is never read as withdrawn, so an empty or partial feed cannot lift anything.

One sync at a time per deployment: every worker process of every replica ticks, but a sync
runs only under (1) the host's file lock (`BlobStore.claim`: one per host, freed by the
kernel if its holder dies), when (2) this host's last sync (a marker file in the state
directory, by the mirror's clock) is an interval old, and (3) holding the lease in shared
state (`StateStore.claim_fetch`: on Redis one holder across replicas with an expiry, renewed
while the sync runs and kept for an interval after it; a holder that died loses it when it
expires, so no lost lease blocks syncing for longer than that). A second sync of the same
feed changes nothing (`plan` finds the blocks stored)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from mirror import policy
from mirror.advisories import Limits, UnreadableAdvisories, read_advisories, read_zip_bytes
from mirror.errors import MirrorError, NotFound, StateUnavailable
from mirror.files import atomic_write
from mirror.model import RuleRecord
from mirror.osv import Change, Collected, StoredBlock, collect, plan
from mirror.rulechanges import add_rule, remove_rule
from mirror.services import FeedSource, Services, feed_sources

log = logging.getLogger("mirror.feeds")

ACTOR: Final = "feed"  # who the audit says made a feed's changes
LEASE_KEY: Final = "feeds:sync"  # the host's lock and the shared lease
LEASE_TTL: Final = timedelta(minutes=2)  # a sync's lease, renewed while it runs
LEASE_RENEW: Final = timedelta(seconds=30)
FIRST_DELAY: Final = timedelta(seconds=5)  # the first tick, shortly after start
MAX_TICK: Final = timedelta(minutes=1)  # ticks are at most this far apart
MARKER: Final = "feeds-synced"  # in the state directory: when this host last synced


@dataclass(slots=True)
class SyncReport:
    """What one sync did. `outcome`: "synced", "failed" (nothing changed: `error` says why),
    "busy" (another process or replica syncs) or "not due" (synced less than an interval
    ago)."""

    outcome: str
    error: str = ""
    advisories: int = 0
    unsupported: int = 0
    created: int = 0
    lifted: int = 0
    removed: int = 0
    notes: list[str] = field(default_factory=list)


class FeedSync:
    """The scheduled sync of one worker process (`run`), and one sync on demand (`tick`
    honours the schedule and the lease, `sync` does the work)."""

    def __init__(self, services: Services, *, limits: Limits | None = None) -> None:
        self._services = services
        self._sources = feed_sources(services.config.feeds.sources)
        self._limits = limits or Limits()
        # Distinct per process and per start: a restarted process does not own the lease of
        # its previous life.
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._marker = services.config.state_directory / MARKER

    async def run(self) -> None:
        """Tick until cancelled: the first shortly after start, then at most MAX_TICK apart
        (a sync happens only when one is due)."""
        if not self._sources:
            return
        interval = self._services.config.feeds.interval
        await asyncio.sleep(min(FIRST_DELAY, interval).total_seconds())
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("the advisory feed sync failed; trying again at the next interval")
            await asyncio.sleep(min(interval, MAX_TICK).total_seconds())

    async def tick(self) -> SyncReport:
        """Sync if one is due and no other process or replica is syncing."""
        services = self._services
        claim = await services.blobs.claim(LEASE_KEY)
        if claim is None:
            return SyncReport("busy")
        try:
            if not await asyncio.to_thread(self._due):
                return SyncReport("not due")
            interval = services.config.feeds.interval
            try:
                holder = await services.state.claim_fetch(LEASE_KEY, self._owner, LEASE_TTL)
            except StateUnavailable as exc:
                return self._failed(f"the shared state is unavailable: {exc}; nothing changed")
            if holder.owner != self._owner:
                return SyncReport("busy")
            renewing = asyncio.create_task(self._renew(), name="feed lease")
            try:
                report = await self.sync()
            except asyncio.CancelledError:
                # Stopped mid-sync (a shutdown): the lease is freed now, not at its expiry.
                with contextlib.suppress(StateUnavailable):
                    await services.state.release_fetch(LEASE_KEY, self._owner)
                raise
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
            # Synced or failed, the next try is an interval away: the lease, kept that long,
            # tells the other replicas; the marker this host's other workers.
            with contextlib.suppress(StateUnavailable):
                await services.state.renew_fetch(LEASE_KEY, self._owner, interval)
            await asyncio.to_thread(self._mark, services.clock.now())
            return report
        finally:
            claim.release()

    async def sync(self) -> SyncReport:
        """Read every source, plan, apply; on any read failure nothing changes."""
        services = self._services
        try:
            collected = await self._read()
        except (MirrorError, UnreadableAdvisories) as exc:
            return self._failed(f"{exc}; nothing changed")
        report = SyncReport("synced", advisories=collected.read, unsupported=collected.unsupported)
        report.notes.extend(collected.notes)
        try:
            stored = [
                # Only the feed's own blocks are its to lift or replace (`claimable`).
                StoredBlock(
                    rule.id,
                    rule.ecosystem,
                    rule.package,
                    rule.versions,
                    rule.reason,
                    claimable=rule.created_by == ACTOR,
                )
                for rule in await services.state.list_rules("block")
                if rule.expires_at is None or rule.expires_at > services.clock.now()
            ]
            await self._apply(collected, plan(collected.imported, stored), report)
        except (StateUnavailable, policy.InvalidRule) as exc:
            # Creations come first: a sync that fails part way has only added blocks, never
            # removed one whose replacement is missing.
            failed = self._failed(
                f"{exc}; stopped part way ({report.created} created, {report.lifted} lifted, "
                f"{report.removed} removed)"
            )
            failed.created, failed.lifted, failed.removed = (
                report.created,
                report.lifted,
                report.removed,
            )
            return failed
        finally:
            with contextlib.suppress(StateUnavailable):
                await services.policy.reload()
        services.metrics.child(services.metrics.feed_syncs, "synced").inc()
        services.metrics.feed_last_success.set(services.clock.now().timestamp())
        services.metrics.feed_unsupported.set(collected.unsupported)
        log.info(
            "advisory feeds synced: %d advisories from %d source(s); %d block(s) created, "
            "%d lifted, %d removed; %d entries of unsupported ecosystems skipped",
            report.advisories,
            len(self._sources),
            report.created,
            report.lifted,
            report.removed,
            report.unsupported,
        )
        return report

    # reading -------------------------------------------------------------------------------

    async def _read(self) -> Collected:
        """Every source, whole, before anything changes: URLs downloaded through the upstream
        client (bounded like any upstream document), then parsed off the event loop."""
        bodies: list[tuple[FeedSource, bytes | None]] = []
        for source in self._sources:
            if source.url is None or source.scope is None:
                bodies.append((source, None))
                continue
            document = await self._services.upstream.fetch(
                source.url,
                ecosystem=source.scope,
                max_bytes=self._services.config.cache.max_document_bytes,
            )
            bodies.append((source, document.body))
        return await asyncio.to_thread(_collect, bodies, self._limits)

    # applying ------------------------------------------------------------------------------

    async def _apply(self, collected: Collected, changes: list[Change], report: SyncReport) -> None:
        """Creations first (`plan`'s order), deletions last: a creation that fails stops the
        sync before any deletion. The policy is reloaded between, so this worker enforces
        the new blocks before the old ones go."""
        services = self._services
        reloaded = False
        for change in changes:
            client = f"feed {collected.sources.get(change.advisory, '')}".strip()
            if change.action == "create":
                # Validated as an admin's block is (`blocks_from_advisory` checked it too).
                policy.validate_rule(
                    "block", change.ecosystem, change.package, change.versions, change.reason
                )
                record = RuleRecord(
                    id=policy.new_rule_id("block"),
                    kind="block",
                    ecosystem=change.ecosystem,
                    package=change.package,
                    versions=change.versions,
                    reason=change.reason,
                    created_at=services.clock.now(),
                    created_by=ACTOR,
                )
                await add_rule(services, record, actor=ACTOR, client=client)
                report.created += 1
                services.metrics.child(services.metrics.feed_changes, "created").inc()
            elif change.action in ("lift", "remove") and change.block_id is not None:
                if not reloaded:
                    await services.policy.reload()
                    reloaded = True
                try:
                    await remove_rule(
                        services, "block", change.block_id, actor=ACTOR, client=client
                    )
                except NotFound:
                    continue  # deleted meanwhile (by an admin): nothing left to do
                done = "lifted" if change.action == "lift" else "removed"
                setattr(report, done, getattr(report, done) + 1)
                services.metrics.child(services.metrics.feed_changes, done).inc()

    # the schedule --------------------------------------------------------------------------

    def _due(self) -> bool:
        """(Thread.) Whether this host's last sync is an interval old (or there was none)."""
        try:
            text = self._marker.read_text(encoding="utf-8").strip()
            last = datetime.fromisoformat(text)
        except (OSError, ValueError):
            return True
        now = self._services.clock.now()
        # A marker from the future (a clock set back) must not stop syncing.
        return not (now - self._services.config.feeds.interval < last <= now)

    def _mark(self, at: datetime) -> None:
        atomic_write(self._marker, at.isoformat().encode())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW.total_seconds())
            with contextlib.suppress(StateUnavailable):
                await self._services.state.renew_fetch(LEASE_KEY, self._owner, LEASE_TTL)

    def _failed(self, error: str) -> SyncReport:
        metrics = self._services.metrics
        metrics.child(metrics.feed_syncs, "failed").inc()
        log.warning("advisory feed sync failed: %s", error)
        return SyncReport("failed", error=error)


def _collect(bodies: list[tuple[FeedSource, bytes | None]], limits: Limits) -> Collected:
    """(Thread.) Every source's advisories, collected; a source without any is unreadable:
    an empty feed must not look like a feed with nothing in it to block."""

    def advisories() -> Iterator[tuple[str, Mapping[str, Any]]]:
        for source, body in bodies:
            found = 0
            if body is not None:
                documents = read_zip_bytes(source.label, body, limits)
            else:
                documents = read_advisories([source.path or ""], limits)
            for advisory in documents:
                found += 1
                yield source.label, advisory
            if not found:
                raise UnreadableAdvisories(f"{source.label} holds no advisories")

    return collect(advisories())
