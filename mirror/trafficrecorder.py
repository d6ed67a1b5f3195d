"""The traffic figures of the dashboard's overview reach shared state: every few seconds, what
this worker counted (`Metrics.traffic`, a `traffic.TrafficTally` the serving path adds to
without I/O or lock) is taken and added to the state in one write, where every worker's and
replica's counts are summed per ecosystem and minute.

Shaped like the download ledger (`mirror.ledger`): a dead state never blocks or fails serving;
what could not be written waits (merged per ecosystem and minute, so one row per bucket
whatever the traffic; at most `MAX_PENDING` rows, the oldest dropped) and goes with the next
write."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Final

from mirror.clock import Clock
from mirror.metrics import Metrics
from mirror.model import ECOSYSTEMS
from mirror.state.base import StateStore
from mirror.traffic import TRAFFIC_RETENTION, TrafficCount, TrafficTally, minute_of

log = logging.getLogger("mirror.traffic")

FLUSH_INTERVAL: Final = 5.0  # seconds between writes
# Rows kept while state is down: every bucket of the retention, for every ecosystem.
MAX_PENDING: Final = len(ECOSYSTEMS) * int(TRAFFIC_RETENTION.total_seconds() // 60)

_Key = tuple[str, datetime]


class TrafficRecorder:
    def __init__(
        self,
        tally: TrafficTally,
        state: StateStore,
        metrics: Metrics,
        clock: Clock,
        *,
        backend: str,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._tally = tally
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self._backend = backend
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        # Counts taken but not written yet, one per (ecosystem, minute), oldest first.
        self._pending: dict[_Key, TrafficCount] = {}
        # One write at a time: the timer's and an explicit flush never write a row twice.
        self._writing = asyncio.Lock()
        self._closing = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._last_write_failed = False

    @property
    def backend(self) -> str:
        """The state backend written to (`local`, `redis`)."""
        return self._backend

    @property
    def pending(self) -> int:
        """Rows waiting to be written (state down)."""
        return len(self._pending)

    def start(self) -> None:
        """Write every `flush_interval` until `close`."""
        if self._flusher is None and not self._closing.is_set():
            self._flusher = asyncio.get_running_loop().create_task(
                self._run(), name="traffic-recorder"
            )

    async def flush(self) -> bool:
        """Take what was counted and write everything pending in one write; whether it was
        written. Never raises for a state failure (the rows wait for the next write)."""
        async with self._writing:
            self._keep(self._tally.take(minute_of(self._clock.now())))
            if not self._pending:
                return True
            batch = list(self._pending.values())
            self._pending.clear()
            try:
                await self._state.add_traffic(batch)
            except Exception as exc:  # any state failure: keep the rows, retry later
                self._keep(batch)
                self._last_write_failed = True
                self._metrics.state_errors.labels(self._backend).inc()
                log.warning("could not record %d traffic figures: %s", len(batch), exc)
                return False
            self._last_write_failed = False
            return True

    async def close(self) -> None:
        """Stop the timer and write what is left (once: a state that just failed is not
        waited for again)."""
        self._closing.set()
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            await flusher
        if not self._last_write_failed:
            await self.flush()
        if self._pending:
            log.warning("traffic recorder closed with %d figures unwritten", len(self._pending))

    def _keep(self, counts: list[TrafficCount]) -> None:
        for count in counts:
            known = self._pending.get(count.key)
            self._pending[count.key] = count if known is None else known.merged(count)
        dropped = 0
        while len(self._pending) > self._max_pending:
            del self._pending[next(iter(self._pending))]
            dropped += 1
        if dropped:
            log.error("traffic figures backlog full: the %d oldest buckets were dropped", dropped)

    async def _run(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._closing.wait()
            if self._closing.is_set():
                return  # close() writes the rest
            try:
                await self.flush()
            except Exception:  # never let the timer die: the next write tries again
                log.exception("writing traffic figures failed")
