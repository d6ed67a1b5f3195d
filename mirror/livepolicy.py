"""The live policy of one worker: the compiled rules, kept current by watching the shared
state's change notifications. Owns no rules itself (state does) and decides nothing (policy
does); it only keeps `policy.Rules` fresh and says which version they are.

It also keeps the last-known rules (`mirror.lastknown`), in memory and in the data dir, with
the identity and policy version of the state they came from. A state that lost its identity,
is another one, or whose version went back is not trusted: the worker keeps enforcing the
last-known rules (plus any the state has), reports itself degraded (`/readyz`), and logs one
ERROR, until `mirror state restore` re-seeds the state.

Replicas on one Redis (`shared_by_replicas`) also tell each other: a degraded worker
publishes the loss with its copy (`StateStore.publish_loss`, never read as live rules); a
worker that finds a published loss takes that copy as its own and is degraded too, even
when it started with an empty data dir. And a worker with no copy at all does not trust a
state whose identity is only seconds old (`SETTLE_SECONDS`, longer than the guard's check):
it refuses reads and is not ready until then, so a replica that claimed a fresh identity on
a flushed Redis does not serve with no rules before older replicas could report the loss."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from mirror import lastknown, policy
from mirror.clock import Clock
from mirror.config import QuarantineConfig, RiskConfig
from mirror.errors import Held, PolicyUnavailable, StateUnavailable
from mirror.lastknown import LastKnown, LastKnownError, PinIndex
from mirror.model import RuleKind, RuleRecord
from mirror.risk import Signal
from mirror.state.base import StateIdentity, StateStore

log = logging.getLogger("mirror.policy")

# How often the state's identity and version are checked (a flush announces nothing), and
# how often the digest pins and the audit are copied to the last-known file.
GUARD_SECONDS = 1.0
SNAPSHOT_SECONDS = 30.0
# Reads of identity, rules, identity until both identity reads agree (admin writes between).
CONSISTENT_READ_ATTEMPTS = 3
# Audit entries kept in the last-known copy (newest first).
AUDIT_COPIED = 10_000
# A worker with no last-known copy trusts a state whose identity is younger than this only
# once it is this old (by the state's clock): a replica with a copy checks the identity every
# GUARD_SECONDS and publishes a loss at once, so by then a loss would be published.
SETTLE_SECONDS = 3.0


class LivePolicy:
    """Compiled rules plus the state version they came from, and the last-known copy.
    Until the first load succeeds (or a last-known copy is read), `rules()` fails closed
    with PolicyUnavailable. `last_known_path` None keeps the copy in memory only."""

    def __init__(
        self,
        state: StateStore,
        quarantine: QuarantineConfig,
        clock: Clock,
        *,
        risk: RiskConfig | None = None,
        last_known_path: Path | None = None,
        shared_by_replicas: bool = False,
    ) -> None:
        self._state = state
        # Redis: other replicas (other data dirs) share the state; publish losses, settle.
        self._shared = shared_by_replicas
        self._quarantine = quarantine
        self._risk = risk
        self._clock = clock
        self._rules: policy.Rules | None = None
        self._state_version = -1
        # What the rules were compiled from: (identity, version, lost, lost version,
        # degraded reason, settling reason).
        self._source: tuple[str | None, int, str | None, int, str | None, str | None] | None
        self._source = None
        # Why this copy-less worker does not trust a brand-new state yet (SETTLE_SECONDS).
        self._settling: str | None = None
        self._settled_at = 0.0  # loop time the state is SETTLE_SECONDS old, while settling
        # A published copy that could not be read: not tried again.
        self._rejected_loss: tuple[str, int] | None = None
        self._last_known_path = last_known_path
        self._known: LastKnown | None = None
        self._saved_digest: bytes | None = None
        self._degraded: str | None = None
        self._current_records: list[RuleRecord] = []
        # While degraded: the copy's digest pins, indexed on disk (`lastknown.PinIndex`),
        # and the task that opens (or builds) the index.
        self._pins: PinIndex | None = None
        self._pins_loading: asyncio.Task[None] | None = None
        self._pins_generation = 0  # grows when the copy they come from is replaced
        # Grows whenever the state becomes trusted or untrusted: pins learned before are
        # forgotten (`ServingState`), e.g. one the emptied state took before the loss showed.
        self.trust_epoch = 0
        self._snapshot_due = asyncio.Event()
        self._reloading = asyncio.Lock()
        # Grows with every change of what the rules hide: a reload that changed them, or a
        # stored rule expiring by the clock. Rendered views are keyed by it.
        self._version = 0
        self._next_expiry: datetime | None = None
        self._listeners: list[Callable[[int], None]] = []

    @property
    def version(self) -> int:
        self._check_expiry()
        return self._version

    def rules(self) -> policy.Rules:
        if self._settling is not None:
            raise PolicyUnavailable(f"not serving yet: {self._settling}")
        if self._rules is None:
            raise PolicyUnavailable(
                "the mirror could not load its block and exemption rules; refusing to guess"
            )
        self._check_expiry()
        return self._rules

    def rules_version(self) -> int:
        """The version of the rules in force, raising PolicyUnavailable as `rules` does: for
        a caller that needs both (the hot path, per request), with one look at the clock."""
        self.rules()
        return self._version

    def _check_expiry(self) -> None:
        """An exemption or freeze ending changes views with no state change: notice it on
        the next request (one comparison) rather than with a timer."""
        if self._next_expiry is None or self._rules is None:
            return
        now = self._clock.now()
        if now < self._next_expiry:
            return
        # Re-indexed (nothing parsed again): the rules that expired leave the live index.
        self._rules = self._rules.at(now)
        self._next_expiry = self._rules.next_expiry(now)
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        for listener in self._listeners:
            listener(self._version)

    def decide(
        self,
        subject: policy.Subject,
        published_at: datetime | None,
        signals: Sequence[Signal] = (),
    ) -> policy.Decision:
        """The decision for one version or file right now, given its risk `signals`."""
        return policy.decide(subject, published_at, self._clock.now(), self.rules(), signals)

    def enforce(
        self,
        subject: policy.Subject,
        published_at: datetime | None,
        signals: Sequence[Signal] = (),
    ) -> policy.Decision:
        """Like `decide`, but raise `Blocked`/`Quarantined` (403) when the subject is hidden:
        the one place artifact handlers turn a decision into a refusal."""
        decision = self.decide(subject, published_at, signals)
        if decision.visible:
            return decision
        raise Held.from_decision(decision)

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call `listener(version)` after each reload (e.g. to drop rendered views)."""
        self._listeners.append(listener)

    @property
    def settling(self) -> str | None:
        """Why this worker, with no last-known copy, does not trust a state that is seconds
        old yet (it refuses reads meanwhile), or None."""
        return self._settling

    @property
    def degraded(self) -> str | None:
        """Why this worker does not trust the shared state (it enforces the last-known rules
        meanwhile), or None."""
        return self._degraded

    async def known_pin(self, ecosystem: str, key: str) -> str | None:
        """While degraded, the first-seen digest the last-known copy pins for `key` (it wins
        over the untrusted state's); None when not degraded or the copy pins nothing. Waits
        for the copy's pins to be indexed when that is under way."""
        if self._degraded is None:
            return None
        loading = self._pins_loading
        if loading is not None:
            await asyncio.shield(loading)
        return self.known_pin_now(ecosystem, key)

    def known_pin_now(self, ecosystem: str, key: str) -> str | None:
        """`known_pin` without waiting (for hits, which check a stored blob)."""
        if self._degraded is None or self._pins is None:
            return None
        return self._pins.get(ecosystem, key)

    def enforced_records(self, kind: RuleKind | None = None) -> list[RuleRecord]:
        """The stored rules this worker enforces: the state's, or when degraded the
        last-known ones plus any the state has."""
        return [rule for rule in self._current_records if kind is None or rule.kind == kind]

    async def start(self) -> None:
        """Read the last-known copy from disk, then load the rules. A damaged copy is logged
        and set aside (renamed), never trusted nor silently overwritten."""
        path = self._last_known_path
        if path is not None:
            try:
                loaded = await asyncio.to_thread(lastknown.load, path)
            except (LastKnownError, OSError) as exc:
                aside = path.with_name(path.name + ".damaged")
                log.error("last-known policy %s cannot be read (%s); moved to %s", path, exc, aside)
                # Another worker may have moved it already.
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(path.replace, aside)
            else:
                # Memory keeps what enforcing needs; pins and audit stay on disk.
                if loaded is not None:
                    self._known = dataclasses.replace(loaded, digests={}, audit=())
        try:
            await self.reload()
        except StateUnavailable:
            if self._known is None:
                raise
            # Serve what an admin left rather than nothing; the watch keeps retrying.
            now = self._clock.now()
            self._current_records = list(self._known.rules)
            self._rules = policy.compile_rules(
                self._current_records, self._quarantine, now, self._risk
            )
            self._next_expiry = self._rules.next_expiry(now)
            raise

    async def reload(self) -> None:
        # One at a time (the watch, the guard and admin writes all reload): an older read
        # finishing last must not undo a newer one, nor flip the degraded mode back and forth.
        async with self._reloading:
            await self._reload()

    async def _reload(self) -> None:
        # The identity is read again after the rules, and the trust rests on that read: a
        # state emptied just before the rules were read shows in it. (Read once, before,
        # an emptied state's rules would pass for the trusted state's.)
        for _ in range(CONSISTENT_READ_ATTEMPTS):
            before = await self._state.state_identity()
            records = await self._state.list_rules()
            seen = await self._state.state_identity()
            if seen == before:
                break
        if seen.identity == before.identity and before.version < seen.version:
            # Changed while reading: the rules are at least as new as `before`.
            seen = dataclasses.replace(seen, version=before.version)
        await self._follow_published_loss(seen)
        if seen.identity is None and self._known is None:
            # A new install (or one from before identities): this state is the one, once it
            # has settled (claimed now, here or by another replica: age 0).
            identity = await self._state.claim_identity(uuid.uuid4().hex)
            seen = dataclasses.replace(seen, identity=identity, age=0.0)
        reason = lastknown.assess(self._known, seen)
        if reason is not None and self._known is not None:
            records = lastknown.merged_rules(self._known.rules, records)
            await self._publish_loss(seen)
        self._set_degraded(reason)
        settling = self._settle_reason(seen) if reason is None and self._known is None else None
        if settling is not None and self._settling is None:
            log.warning("not serving yet: %s", settling)
        if settling is not None and seen.age is not None:
            self._settled_at = asyncio.get_running_loop().time() + SETTLE_SECONDS - seen.age
        self._settling = settling
        now = self._clock.now()
        rules = policy.compile_rules(records, self._quarantine, now, self._risk)
        for problem in rules.problems:
            log.error("stored rule cannot be applied as written: %s", problem)
        self._rules = rules
        self._current_records = records
        self._next_expiry = rules.next_expiry(now)
        self._state_version = seen.version
        source = (seen.identity, seen.version, seen.lost, seen.lost_version, reason, settling)
        if source != self._source:
            self._source = source
            self._changed()
        if reason is None and settling is None and seen.identity is not None:
            await self._remember(seen.identity, seen.version, records)

    def _settle_reason(self, seen: StateIdentity) -> str | None:
        if not self._shared or seen.age is None or seen.age >= SETTLE_SECONDS:
            return None
        return (
            f"the shared state is new (identity {seen.identity}, claimed {seen.age:.1f} s ago) "
            f"and this replica has no last-known copy: waiting until it is {SETTLE_SECONDS:g} s "
            "old, for any replica that held the policy to report that it was lost"
        )

    async def _follow_published_loss(self, seen: StateIdentity) -> None:
        """Take the copy another replica published with a lost state (`publish_loss`) as
        this worker's last-known copy, when this worker has none, trusts the state that
        replaced the lost one, or holds an older copy of it. A worker that distrusts the
        state for a copy of its own keeps that one."""
        lost = seen.lost
        if lost is None or lost == seen.identity or lost in seen.restored_from:
            return
        if (lost, seen.lost_version) == self._rejected_loss:
            return
        known = self._known
        if known is not None:
            if known.identity == lost and seen.lost_version <= known.version:
                return
            if known.identity not in (lost, seen.identity):
                return
        published = await self._state.published_loss()
        if published is None:
            return
        identity, version, data = published
        try:
            copy = await asyncio.to_thread(lastknown.decode, data)
            if copy.identity != identity:
                raise LastKnownError(f"it is a copy of {copy.identity}, not of {identity}")
        except LastKnownError as exc:
            self._rejected_loss = (identity, version)
            log.error("the last-known copy published with the lost state %s cannot be used: %s",
                      identity, exc)  # fmt: skip
            return
        path = self._last_known_path
        if path is not None:
            try:
                await asyncio.to_thread(lastknown.save, path, data)
            except OSError as exc:
                log.error("could not write the last-known policy %s: %s", path, exc)
        self._saved_digest = None
        self._drop_pins()  # of the copy this one replaces
        self._known = dataclasses.replace(copy, digests={}, audit=())
        log.error(
            "another replica reported the shared state %s lost (policy version %d) and "
            "published its last-known copy: enforcing it (%d rules) until `mirror state "
            "restore`",
            identity,
            version,
            len(copy.rules),
        )

    async def _publish_loss(self, seen: StateIdentity) -> None:
        """Tell the other replicas (those with no copy, or started since) that the state this
        worker's copy came from was lost, with the copy. Replicas on Redis only: the embedded
        state is one file beside the copy. A failure is tried again at the next check."""
        known = self._known
        path = self._last_known_path
        if not self._shared or known is None or path is None:
            return
        if seen.lost is not None and (
            seen.lost != known.identity or seen.lost_version >= known.version
        ):
            return
        try:
            data = await asyncio.to_thread(path.read_bytes)
            copy = await asyncio.to_thread(lastknown.decode, data)
        except (OSError, LastKnownError) as exc:
            log.error("could not publish the lost state's last-known copy %s: %s", path, exc)
            return
        if (copy.identity, copy.version) != (known.identity, known.version):
            return  # replaced meanwhile (adopted): the next check publishes what is there
        del copy
        try:
            if await self._state.publish_loss(known.identity, known.version, data):
                log.warning(
                    "published the loss of the shared state %s with the last-known copy "
                    "(policy version %d) for the other replicas",
                    known.identity,
                    known.version,
                )
        except StateUnavailable as exc:
            log.warning("could not publish the lost state to the other replicas: %s", exc)

    def _set_degraded(self, reason: str | None) -> None:
        if reason is not None and self._degraded is None:
            log.error(
                "NOT TRUSTING THE SHARED STATE: %s. Enforcing the last-known rules; not ready "
                "until an operator runs `mirror state restore` (or `mirror state status`)",
                reason,
            )
        elif reason is None and self._degraded is not None:
            log.warning("the shared state is trusted again (restored); the policy is live")
        if (reason is None) != (self._degraded is None):
            self.trust_epoch += 1
        self._degraded = reason
        if reason is None:
            self._drop_pins()
        elif self._pins is None and self._pins_loading is None:
            self._pins_loading = asyncio.get_running_loop().create_task(
                self._load_pins(), name="last-known pins"
            )

    async def _load_pins(self) -> None:
        """Index the copy's digest pins (from the file; memory keeps only the rules)."""
        path = self._last_known_path
        generation = self._pins_generation
        try:
            if path is not None:
                pins = await asyncio.to_thread(lastknown.open_pins, path.parent)
                if self._degraded is None or generation != self._pins_generation:
                    # Trusted again, or another copy taken meanwhile (`_drop_pins`).
                    if pins is not None:
                        pins.close()
                else:
                    self._pins = pins
        except (LastKnownError, OSError) as exc:
            log.error(
                "the last-known digest pins cannot be read (%s): while the shared state is "
                "not trusted, first-seen digests are checked against the state alone",
                exc,
            )
        finally:
            self._pins_loading = None
        if (
            self._degraded is not None
            and self._pins is None
            and generation != self._pins_generation
        ):
            self._pins_loading = asyncio.get_running_loop().create_task(
                self._load_pins(), name="last-known pins"
            )

    def _drop_pins(self) -> None:
        self._pins_generation += 1
        pins, self._pins = self._pins, None
        if pins is not None:
            pins.close()

    async def _remember(self, identity: str, version: int, records: list[RuleRecord]) -> None:
        """Keep the rules of a trusted state as the last-known ones (in memory; the guard
        writes the file with a full snapshot right after). A first copy, or one for a new
        identity (a restored state), is a full snapshot now."""
        known = self._known
        if known is None or known.identity != identity:
            await self._snapshot(identity)
            return
        if version < known.version:
            return
        self._known = dataclasses.replace(known, version=version, rules=tuple(records))
        if version != known.version:
            self._snapshot_due.set()

    async def _snapshot(self, identity: str) -> None:
        """Copy rules, pins and audit of the trusted state `identity` to memory and disk.
        The state is read before and after: a copy taken while it changed, or was emptied or
        replaced, is dropped (a change sets off another; a loss must not replace a good copy)."""
        before = await self._state.state_identity()
        records = await self._state.list_rules()
        digests = await self._state.pinned_digests()
        audit = tuple(await self._state.audit_log(limit=AUDIT_COPIED))
        after = await self._state.state_identity()
        if after != before or after.identity != identity:
            return
        if lastknown.assess(self._known, after) is not None:
            return
        full = LastKnown(
            identity=identity, version=after.version, rules=tuple(records), digests=digests,
            audit=audit,
        )  # fmt: skip
        # Memory keeps what enforcing needs; the pins (many) and the audit go to disk only.
        self._known = dataclasses.replace(full, digests={}, audit=())
        await self._save(full)

    async def _save(self, known: LastKnown) -> None:
        if self._last_known_path is None:
            return
        data = lastknown.encode(known)
        digest = hashlib.sha256(data).digest()
        if digest == self._saved_digest:
            return
        try:
            await asyncio.to_thread(lastknown.save, self._last_known_path, data)
        except OSError as exc:
            log.error("could not write the last-known policy %s: %s", self._last_known_path, exc)
            return
        self._saved_digest = digest

    async def run(self) -> None:
        """Reload on every change notification; check the state's identity every second (a
        flush or a replaced file announces nothing); copy pins and audit now and then."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch())
            group.create_task(self._guard())

    async def _watch(self) -> None:
        """Reload on every change notification; after a state outage, keep retrying."""
        while True:
            try:
                async for version in self._state.watch():
                    if version != self._state_version:
                        await self.reload()
            except StateUnavailable as exc:
                log.warning("policy watch interrupted: %s; retrying", exc)
                await asyncio.sleep(1)
                try:
                    await self.reload()
                except StateUnavailable:
                    continue

    async def _guard(self) -> None:
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time()
        while True:
            wait = GUARD_SECONDS
            if self._settling is not None:  # check again as soon as the state has settled
                wait = min(wait, max(self._settled_at - loop.time(), 0.0) + 0.01)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._snapshot_due.wait()
            try:
                seen = await self._state.state_identity()
                source = self._source
                now_seen = (seen.identity, seen.version, seen.lost, seen.lost_version)
                if source is None or now_seen != source[:4] or self._settling is not None:
                    await self.reload()
                    continue
                due = self._snapshot_due.is_set()
                self._snapshot_due.clear()
                trusted = self._degraded is None and seen.identity is not None
                if trusted and seen.identity and (due or loop.time() >= next_snapshot):
                    next_snapshot = loop.time() + SNAPSHOT_SECONDS
                    await self._snapshot(seen.identity)
            except StateUnavailable:
                # The watch logs outages; wait here too rather than spin on a due snapshot.
                await asyncio.sleep(GUARD_SECONDS)
