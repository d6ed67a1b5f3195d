"""The download ledger against real SQLite state: batched writes, repeats by one client noted
once per window, and notes kept (and written later) while state is unavailable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mirror.ledger import DownloadLedger
from mirror.metrics import Metrics
from mirror.state.base import DownloadEvent
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


async def test_repeats_by_one_client_are_noted_once_per_window(state: LocalState) -> None:
    ledger = DownloadLedger(state, Metrics(), backend="local", repeat_window=timedelta(minutes=10))
    for minute in range(5):
        ledger.note(event("10.0.0.1", T0 + timedelta(minutes=minute)))
    ledger.note(event("10.0.0.1", T0 + timedelta(minutes=1), version="1.14.0"))
    ledger.note(event("10.0.0.1", T0 + timedelta(minutes=11)))
    await ledger.close()
    recorded = [(e.version, e.at) for e in await state.downloads("npm", "axios")]
    assert recorded == [
        ("1.14.1", T0),
        ("1.14.0", T0 + timedelta(minutes=1)),
        ("1.14.1", T0 + timedelta(minutes=11)),
    ]


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
