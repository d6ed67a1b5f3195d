"""The traffic figures of the dashboard's overview reach shared state: every few seconds, what
this worker counted (`Metrics.traffic`, a `traffic.TrafficTally` the serving path adds to
without I/O or lock) is taken and added to the state in one write, where every worker's and
replica's counts are summed per ecosystem and minute.

The download ledger's mechanism (`ledger.BatchedWrites`), fed by a timer from the tally: a
dead state never blocks or fails serving; what could not be written waits (merged per
ecosystem and minute, so one row per bucket whatever the traffic; at most `MAX_PENDING` rows,
the oldest dropped) and goes with the next write.

A count is stamped with the minute it is taken in, so a count made in the last seconds of a
minute (up to `FLUSH_INTERVAL`) lands in the next one: the bars are one-minute buckets summed
into five-minute and hourly bars, where that skew does not show."""

from __future__ import annotations

from typing import Final

from mirror.clock import Clock
from mirror.ledger import BatchedWrites
from mirror.metrics import Metrics
from mirror.model import ECOSYSTEMS
from mirror.state.base import StateStore
from mirror.traffic import TRAFFIC_RETENTION, TrafficCount, TrafficTally, minute_of

FLUSH_INTERVAL: Final = 5.0  # seconds between writes
# Rows kept while state is down: every bucket of the retention, for every ecosystem.
MAX_PENDING: Final = len(ECOSYSTEMS) * int(TRAFFIC_RETENTION.total_seconds() // 60)


class TrafficRecorder(BatchedWrites[TrafficCount]):
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
        super().__init__(
            state.add_traffic,
            metrics,
            backend=backend,
            what="traffic figures",
            flush_interval=flush_interval,
            max_pending=max_pending,
            gather=lambda: tally.take(minute_of(clock.now())),
        )
