"""The traffic recorder: what the serving path counted reaches shared state in one write every
few seconds; a state that is down loses nothing (up to a bound) and blocks nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mirror.clock import FixedClock
from mirror.metrics import Metrics
from mirror.state.local import LocalState
from mirror.traffic import TrafficCount
from mirror.trafficrecorder import FLUSH_INTERVAL, MAX_PENDING, TrafficRecorder

NOW = datetime(2026, 3, 2, 12, 30, 17, tzinfo=UTC)
MINUTE = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def state(tmp_path: Path, clock: FixedClock) -> AsyncIterator[LocalState]:
    store = LocalState(tmp_path / "state.sqlite3", clock=clock)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def recorder(
    state: LocalState,
    metrics: Metrics,
    clock: FixedClock,
    *,
    flush_interval: float = FLUSH_INTERVAL,
    max_pending: int = MAX_PENDING,
) -> TrafficRecorder:
    return TrafficRecorder(
        metrics.traffic,
        state,
        metrics,
        clock,
        backend="local",
        flush_interval=flush_interval,
        max_pending=max_pending,
    )


def serve_one_miss_and_one_hit(metrics: Metrics) -> None:
    """What the serving path counts for two downloads of one tarball."""
    tally = metrics.traffic
    tally.request("npm")
    tally.miss("npm")
    tally.fetched("npm", 1000)
    tally.request("npm")
    tally.hit("npm", 1000)


async def test_counts_are_written_every_interval_and_on_close(
    state: LocalState, metrics: Metrics, clock: FixedClock
) -> None:
    traffic = recorder(state, metrics, clock, flush_interval=0.05)
    traffic.start()
    serve_one_miss_and_one_hit(metrics)
    metrics.traffic.fetched("feed1", 5000)  # an advisory feed's fetch: no registry traffic
    want = TrafficCount(
        ecosystem="npm",
        minute=MINUTE,
        requests=2,
        hits=1,
        misses=1,
        bytes_from_cache=1000,
        bytes_from_upstream=1000,
    )

    async def written() -> list[TrafficCount]:
        return await state.traffic(MINUTE)

    async with asyncio.timeout(5):  # the timer writes within its interval, unasked
        while await written() != [want]:  # noqa: ASYNC110 (polls the state: no event)
            await asyncio.sleep(0.02)
    metrics.traffic.upstream_error("npm", "timeout")  # counted after the last write
    await traffic.close()
    [row] = await written()
    assert (row.upstream_errors, row.last_error) == (1, "timeout")


async def test_a_state_that_is_down_loses_nothing_and_is_written_once_back(
    state: LocalState, metrics: Metrics, clock: FixedClock
) -> None:
    traffic = recorder(state, metrics, clock)
    await state.close()  # down
    serve_one_miss_and_one_hit(metrics)
    assert await traffic.flush() is False  # never raises
    clock.advance(timedelta(minutes=1))
    metrics.traffic.request("pypi")
    assert await traffic.flush() is False
    assert traffic.pending == 2  # one row per ecosystem and minute
    assert metrics.state_errors.labels("local")._value.get() == 2
    await state.open()  # back
    assert await traffic.flush() is True
    assert traffic.pending == 0
    rows = await state.traffic(MINUTE)
    assert [(row.ecosystem, row.minute, row.requests) for row in rows] == [
        ("npm", MINUTE, 2),
        ("pypi", MINUTE + timedelta(minutes=1), 1),
    ]
    assert await traffic.flush() is True  # nothing new: nothing written twice
    assert [row.requests for row in await state.traffic(MINUTE)] == [2, 1]


async def test_the_backlog_is_bounded_the_oldest_minutes_go_first(
    state: LocalState, metrics: Metrics, clock: FixedClock
) -> None:
    traffic = recorder(state, metrics, clock, max_pending=2)
    await state.close()
    for _ in range(3):
        metrics.traffic.request("npm")
        await traffic.flush()
        clock.advance(timedelta(minutes=1))
    assert traffic.pending == 2
    await state.open()
    assert await traffic.flush() is True
    rows = await state.traffic(MINUTE)
    assert [row.minute for row in rows] == [MINUTE + timedelta(minutes=n) for n in (1, 2)]
