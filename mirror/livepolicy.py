"""The live policy of one worker: the compiled rules, kept current by watching the shared
state's change notifications. Owns no rules itself (state does) and decides nothing (policy
does); it only keeps `policy.Rules` fresh and says which version they are."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from mirror import policy
from mirror.clock import Clock
from mirror.config import QuarantineConfig
from mirror.errors import Blocked, PolicyUnavailable, Quarantined, StateUnavailable
from mirror.state.base import StateStore

log = logging.getLogger("mirror.policy")


class LivePolicy:
    """Compiled rules plus the state version they came from. Until the first load succeeds,
    `rules()` fails closed with PolicyUnavailable."""

    def __init__(self, state: StateStore, quarantine: QuarantineConfig, clock: Clock) -> None:
        self._state = state
        self._quarantine = quarantine
        self._clock = clock
        self._rules: policy.Rules | None = None
        self._state_version = -1
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
        if self._rules is None:
            raise PolicyUnavailable(
                "the mirror could not load its block and exemption rules; refusing to guess"
            )
        self._check_expiry()
        return self._rules

    def _check_expiry(self) -> None:
        """An exemption or freeze ending changes views with no state change: notice it on
        the next request (one comparison) rather than with a timer."""
        if self._next_expiry is None or self._rules is None:
            return
        now = self._clock.now()
        if now < self._next_expiry:
            return
        self._next_expiry = self._rules.next_expiry(now)
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        for listener in self._listeners:
            listener(self._version)

    def decide(self, subject: policy.Subject, published_at: datetime | None) -> policy.Decision:
        """The decision for one version or file right now."""
        return policy.decide(subject, published_at, self._clock.now(), self.rules())

    def enforce(self, subject: policy.Subject, published_at: datetime | None) -> policy.Decision:
        """Like `decide`, but raise `Blocked`/`Quarantined` (403) when the subject is hidden:
        the one place artifact handlers turn a decision into a refusal."""
        decision = self.decide(subject, published_at)
        if decision.visible:
            return decision
        if decision.block is not None:
            raise Blocked(decision.detail, block=decision.block.describe())
        raise Quarantined(decision.detail, until=decision.until)

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call `listener(version)` after each reload (e.g. to drop rendered views)."""
        self._listeners.append(listener)

    async def reload(self) -> None:
        version = await self._state.policy_version()
        records = await self._state.list_rules()
        now = self._clock.now()
        rules = policy.compile_rules(records, self._quarantine, now)
        for problem in rules.problems:
            log.error("stored rule cannot be applied as written: %s", problem)
        self._rules = rules
        self._next_expiry = rules.next_expiry(now)
        if version != self._state_version:
            self._state_version = version
            self._changed()

    async def run(self) -> None:
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
