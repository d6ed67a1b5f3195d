"""The dashboard's traffic figures in shared state, on both backends (a local SQLite file and a
real redis-server): summed per ecosystem and minute by every writer, read back since a moment,
pruned after `TRAFFIC_RETENTION`."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mirror.clock import FixedClock
from mirror.errors import StateUnavailable
from mirror.state.local import LocalState
from mirror.state.redis import RedisState
from mirror.traffic import TRAFFIC_RETENTION, TrafficCount
from tests.integration.conftest import OpenStore

NOW = datetime(2026, 3, 2, 12, 30, 17, tzinfo=UTC)
MINUTE = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    """This module's moment (the shared `open_store` opens stores on it)."""
    return FixedClock(NOW)


def count(ecosystem: str = "npm", minute: datetime = MINUTE, **figures: int | str) -> TrafficCount:
    return TrafficCount(ecosystem=ecosystem, minute=minute, **figures)  # type: ignore[arg-type]


async def test_counts_of_every_writer_are_summed_per_ecosystem_and_minute(
    open_store: OpenStore,
) -> None:
    worker, replica = await open_store(), await open_store()
    earlier = MINUTE - timedelta(minutes=1)
    await worker.add_traffic(
        [
            count(requests=2, hits=1, misses=1, bytes_from_cache=100, bytes_from_upstream=300),
            count(requests=1, hits=1, bytes_from_cache=50),  # the same bucket, one write
            count("pypi", earlier, requests=4, misses=4, upstream_errors=2, last_error="timeout"),
        ]
    )
    await asyncio.gather(
        replica.add_traffic([count(requests=5, hits=5, bytes_from_cache=500, stale_serves=1)]),
        worker.add_traffic([count("pypi", earlier, upstream_errors=1, last_error="http-5xx")]),
        replica.add_traffic([count("pypi", earlier, requests=1)]),  # no error: kind kept
    )
    assert await worker.traffic(NOW - timedelta(hours=1)) == [
        count("pypi", earlier, requests=5, misses=4, upstream_errors=3, last_error="http-5xx"),
        count(
            requests=8,
            hits=7,
            misses=1,
            bytes_from_cache=650,
            bytes_from_upstream=300,
            stale_serves=1,
        ),
    ]
    assert await replica.traffic(NOW - timedelta(hours=1)) == await worker.traffic(
        NOW - timedelta(hours=1)
    )


async def test_since_keeps_the_minutes_at_or_after_it(open_store: OpenStore) -> None:
    store = await open_store()
    minutes = [MINUTE - timedelta(minutes=n) for n in (90, 60, 59, 0)]
    await store.add_traffic([count(minute=minute, requests=1) for minute in minutes])
    read = await store.traffic(MINUTE - timedelta(minutes=60))
    assert [row.minute for row in read] == minutes[1:]
    await store.add_traffic([])  # nothing to write: nothing changes
    assert await store.traffic(MINUTE - timedelta(minutes=60)) == read


async def test_figures_older_than_the_retention_are_pruned(
    open_store: OpenStore, clock: FixedClock, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = await open_store()
    await store.add_traffic([count(requests=1), count("maven", requests=2)])
    clock.advance(TRAFFIC_RETENTION + timedelta(minutes=5))
    later = MINUTE + TRAFFIC_RETENTION
    # A count older than the retention when written is not kept either.
    await store.add_traffic([count(minute=later, requests=3), count(requests=9)])
    assert await store.traffic(MINUTE - timedelta(days=30)) == [count(minute=later, requests=3)]
    # Bounded storage, not just a filtered read.
    if isinstance(store, LocalState):
        with sqlite3.connect(tmp_path / "state.sqlite3") as conn:
            assert conn.execute("SELECT count(*) FROM traffic").fetchone() == (1,)
    else:
        assert isinstance(store, RedisState)
        client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
        try:
            # Every minute's hash expires within the retention (Redis's own clock removes
            # them: the old one is still there, the store's clock was moved by the test).
            keys = await client.keys(f"{store.namespace}:traffic:*")
            assert len(keys) == 2
            for key in keys:
                assert 0 < await client.ttl(key) <= TRAFFIC_RETENTION.total_seconds()
        finally:
            await client.aclose()


async def test_a_closed_state_says_it_is_unavailable(open_store: OpenStore) -> None:
    store = await open_store()
    await store.close()
    with pytest.raises(StateUnavailable):
        await store.add_traffic([count(requests=1)])
    with pytest.raises(StateUnavailable):
        await store.traffic(NOW - timedelta(hours=1))
