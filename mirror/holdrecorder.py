"""The quarantine queue's recorder: every request held back by quarantine is noted here on the
serving path (a dict update per held version, only when versions were held) and reaches
shared state in batches (`ledger.BatchedWrites`, `StateStore.record_holds`): one row per
(version, client address, read token) gathered, counts summed. It never delays or fails a
request: a state that does not answer keeps the rows for the next write, bounded."""

from __future__ import annotations

from collections.abc import Iterable

from mirror.clock import Clock
from mirror.holds import HeldSubject, HoldEvent
from mirror.ledger import FLUSH_INTERVAL, BatchedWrites
from mirror.metrics import Metrics
from mirror.state.base import StateStore


class HoldRecorder:
    def __init__(
        self,
        state: StateStore,
        metrics: Metrics,
        clock: Clock,
        *,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._clock = clock
        backend = type(state).__name__.removesuffix("State").lower() or "unknown"
        self._batches: BatchedWrites[HoldEvent] = BatchedWrites(
            state.record_holds,
            metrics,
            backend=backend,
            what="quarantine queue",
            flush_interval=flush_interval,
        )

    def note(self, held: Iterable[HeldSubject], *, client: str, token: str) -> None:
        """One request by `client` (read token `token`, "" = none) held `held` back."""
        now = self._clock.now()
        for subject in held:
            self._batches.note(
                HoldEvent(subject=subject, client=client, token=token, at=now, last_at=now)
            )

    async def flush(self) -> None:
        """Write every pending row now (tests and shutdown)."""
        await self._batches.flush()

    async def close(self) -> None:
        await self._batches.close()
