"""The download ledger against real SQLite state: batched writes, repeats by one client
gathered into one row (also across workers), notes kept (and written later) while state is
unavailable, and nothing lost when it closes during a write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mirror.errors import StateUnavailable
from mirror.ledger import BatchedWrites, DownloadLedger
from mirror.metrics import Metrics
from mirror.model import DownloadEvent
from mirror.state.local import LocalState

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


def event(client: str, at: datetime, version: str = "1.14.1") -> DownloadEvent:
    return DownloadEvent(
        ecosystem="npm",
        package="axios",
        version=version,
        filename=f"axios-{version}.tgz",
        client=client,
        at=at,
    )


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[LocalState]:
    store = LocalState(tmp_path / "state.sqlite3")
    await store.open()
    yield store
    await store.close()


async def test_notes_reach_state_within_the_flush_interval(state: LocalState) -> None:
    ledger = DownloadLedger(state, Metrics(), backend="local", flush_interval=0.05)
    ledger.note(event("10.0.0.1", T0))
    ledger.note(event("10.0.0.2", T0))
    for _ in range(100):  # bounded: 2 s
        if len(await state.downloads("npm", "axios")) == 2:
            break
        await asyncio.sleep(0.02)
    assert [e.client for e in await state.downloads("npm", "axios")] == ["10.0.0.1", "10.0.0.2"]
    await ledger.close()


async def test_repeats_by_one_client_are_one_row(state: LocalState) -> None:
    ledger = DownloadLedger(state, Metrics(), backend="local", flush_interval=60)
    for minute in range(5):
        ledger.note(event("10.0.0.1", T0 + timedelta(minutes=minute)))
    ledger.note(event("10.0.0.1", T0 + timedelta(minutes=1), version="1.14.0"))
    await ledger.flush()
    ledger.note(event("10.0.0.1", T0 + timedelta(minutes=11)))
    await ledger.close()
    recorded = [
        (e.version, e.at, e.last_at, e.count) for e in await state.downloads("npm", "axios")
    ]
    assert recorded == [
        ("1.14.1", T0, T0 + timedelta(minutes=11), 6),
        ("1.14.0", T0 + timedelta(minutes=1), T0 + timedelta(minutes=1), 1),
    ]


async def test_repeats_from_two_workers_are_one_row(tmp_path: Path) -> None:
    # Two workers: two stores on one file, a ledger each, the same client pulling one file.
    stores = [LocalState(tmp_path / "state.sqlite3") for _ in range(2)]
    for store in stores:
        await store.open()
    ledgers = [DownloadLedger(store, Metrics(), backend="local") for store in stores]
    for n in range(30):
        ledgers[n % 2].note(event("10.0.0.1", T0 + timedelta(seconds=n)))
    await asyncio.gather(*(ledger.close() for ledger in ledgers))

    rows = await stores[0].downloads("npm", "axios")
    assert [(r.client, r.at, r.last_at, r.count) for r in rows] == [
        ("10.0.0.1", T0, T0 + timedelta(seconds=29), 30)
    ]
    for store in stores:
        await store.close()


class SlowState(LocalState):
    """Real SQLite state whose ledger writes wait until `release` is set: a write in flight
    for as long as a test needs (a slow disk or a busy Redis)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writing = asyncio.Event()
        self.release = asyncio.Event()

    async def record_downloads(self, events: Sequence[DownloadEvent]) -> None:
        self.writing.set()
        await self.release.wait()
        await super().record_downloads(events)


async def test_close_during_a_write_loses_nothing(tmp_path: Path) -> None:
    store = SlowState(tmp_path / "state.sqlite3")
    await store.open()
    ledger = DownloadLedger(store, Metrics(), backend="local", flush_interval=0.01)
    ledger.note(event("10.0.0.1", T0))
    async with asyncio.timeout(5):
        await store.writing.wait()  # the batch has left the queue and is being written
    ledger.note(event("10.0.0.2", T0))  # noted just before shutdown
    closing = asyncio.ensure_future(ledger.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # close waits for the write in flight
    store.release.set()
    async with asyncio.timeout(5):
        await closing
    assert [e.client for e in await store.downloads("npm", "axios")] == ["10.0.0.1", "10.0.0.2"]
    await store.close()


async def test_notes_survive_a_state_outage(tmp_path: Path) -> None:
    store = LocalState(tmp_path / "state.sqlite3")  # not open yet: every call fails
    metrics = Metrics()
    ledger = DownloadLedger(store, metrics, backend="local", flush_interval=0.01)
    ledger.note(event("10.0.0.1", T0))
    await ledger.flush()
    assert metrics.registry.get_sample_value("mirror_state_errors_total", {"backend": "local"})
    # Once state answers, the kept note is written.
    await store.open()
    await ledger.close()
    assert [e.client for e in await store.downloads("npm", "axios")] == ["10.0.0.1"]
    await store.close()


async def test_concurrent_flushes_write_each_note_once(state: LocalState) -> None:
    ledger = DownloadLedger(state, Metrics(), backend="local", flush_interval=60)
    for n in range(5):
        ledger.note(event(f"10.0.0.{n}", T0))
    await asyncio.gather(ledger.flush(), ledger.flush(), ledger.flush())
    assert len(await state.downloads("npm", "axios")) == 5
    await ledger.close()


class FailingWhileWriting(LocalState):
    """Real SQLite state whose ledger writes wait until `release` is set and then fail, as a
    Redis that times out: rows noted meanwhile are newer than the batch in flight."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writing = asyncio.Event()
        self.release = asyncio.Event()
        self.failing = True
        self.batches: list[list[str]] = []

    async def record_downloads(self, events: Sequence[DownloadEvent]) -> None:
        self.batches.append([e.client for e in events])
        if self.failing:
            self.writing.set()
            await self.release.wait()
            raise StateUnavailable("state did not answer")
        await super().record_downloads(events)


async def test_a_full_backlog_drops_the_oldest_rows_even_after_a_failed_write(
    tmp_path: Path,
) -> None:
    store = FailingWhileWriting(tmp_path / "state.sqlite3")
    await store.open()
    metrics = Metrics()
    ledger = BatchedWrites(
        store.record_downloads, metrics, backend="local", what="test", max_pending=3
    )
    ledger.note(event("10.0.0.1", T0))  # the oldest
    ledger.note(event("10.0.0.2", T0))
    writing = asyncio.ensure_future(ledger.flush())
    async with asyncio.timeout(5):
        await store.writing.wait()  # 1 and 2 are in flight
    ledger.note(event("10.0.0.3", T0))  # newer, noted while the write hangs
    ledger.note(event("10.0.0.4", T0))
    store.release.set()
    assert await writing is False  # failed: 1 and 2 come back as the oldest
    assert ledger.pending == 3  # over the bound: the oldest, 1, was dropped
    assert metrics.registry.get_sample_value("mirror_state_errors_total", {"backend": "local"})
    store.failing = False
    assert await ledger.flush() is True
    assert [e.client for e in await store.downloads("npm", "axios")] == [
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
    ]
    await ledger.close()
    await store.close()


async def test_a_backlog_is_written_in_batches_oldest_first(tmp_path: Path) -> None:
    store = FailingWhileWriting(tmp_path / "state.sqlite3")
    store.failing = False
    await store.open()
    ledger = BatchedWrites(
        store.record_downloads, Metrics(), backend="local", what="test", max_batch=2
    )
    for n in range(5):
        ledger.note(event(f"10.0.0.{n}", T0))
    assert await ledger.flush() is True
    assert store.batches == [["10.0.0.0", "10.0.0.1"], ["10.0.0.2", "10.0.0.3"], ["10.0.0.4"]]
    await ledger.close()
    await store.close()
