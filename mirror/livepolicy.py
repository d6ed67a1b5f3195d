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
        self._version = -1
        self._listeners: list[Callable[[int], None]] = []

    @property
    def version(self) -> int:
        return self._version

    def rules(self) -> policy.Rules:
        if self._rules is None:
            raise PolicyUnavailable(
                "the mirror could not load its block and exemption rules; refusing to guess"
            )
        return self._rules

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
        self._rules = policy.compile_rules(records, self._quarantine, self._clock.now())
        changed = version != self._version
        self._version = version
        if changed:
            for listener in self._listeners:
                listener(version)

    async def run(self) -> None:
        """Reload on every change notification; after a state outage, keep retrying."""
        while True:
            try:
                async for version in self._state.watch():
                    if version != self._version:
                        await self.reload()
            except StateUnavailable as exc:
                log.warning("policy watch interrupted: %s; retrying", exc)
                await asyncio.sleep(1)
                try:
                    await self.reload()
                except StateUnavailable:
                    continue
