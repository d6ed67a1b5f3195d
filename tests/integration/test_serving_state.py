"""`ServingState` on the real embedded state: a store that cannot answer (not open yet, the
fault `LocalState` really raises) degrades to what is known, and the queued writes land once
it answers; the backlog is bounded and what it drops is counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from mirror.metrics import Metrics
from mirror.servingstate import ServingState
from mirror.state.local import LocalState
from tests.conftest import wait_until

AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
BOUND = timedelta(milliseconds=500)


def counted(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "mirror_state_deferred_writes_total", {"backend": "local", "outcome": outcome}
    )
    return value or 0.0


async def test_writes_queued_while_state_is_down_land_when_it_answers(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "state.sqlite3")  # not open: every call fails
    metrics = Metrics(CollectorRegistry())
    shared = ServingState(state, metrics, backend="local", timeout=BOUND)
    try:
        assert await shared.remember_digest("npm", "a", "sha512:aa") == "sha512:aa"
        assert shared.degraded
        assert shared.pinned("npm", "a") == "sha512:aa"
        # Down: no wait on state at all, what the upstream declares is used.
        assert await shared.remember_digest("npm", "b", "sha512:bb") == "sha512:bb"
        assert await shared.get_publish_time("maven", "g:a:1") is None
        shared.set_publish_time("maven", "g:a:1", AT)
        assert shared.backlog == 3
        await state.open()
        assert await wait_until(lambda: shared.backlog == 0, 20)
        assert not shared.degraded
        assert await state.remember_digest("npm", "b", "sha512:other") == "sha512:bb"
        assert await state.get_publish_time("maven", "g:a:1") == AT
        assert await shared.get_publish_time("maven", "g:a:1") == AT
        assert counted(metrics, "landed") == 3
    finally:
        await shared.close()
        await state.close()


async def test_the_backlog_is_bounded(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "state.sqlite3")
    metrics = Metrics(CollectorRegistry())
    shared = ServingState(state, metrics, backend="local", timeout=BOUND, max_backlog=3)
    try:
        for index in range(5):
            shared.set_publish_time("maven", f"g:a:{index}", AT)
        assert shared.backlog == 3
        assert counted(metrics, "dropped") == 2
        await state.open()
        assert await wait_until(lambda: shared.backlog == 0, 20)
        assert await state.get_publish_time("maven", "g:a:0") is None  # the oldest dropped
        assert await state.get_publish_time("maven", "g:a:4") == AT
    finally:
        await shared.close()
        await state.close()


async def test_a_known_pin_costs_no_state_call(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "state.sqlite3")
    await state.open()
    metrics = Metrics(CollectorRegistry())
    shared = ServingState(state, metrics, backend="local", timeout=BOUND)
    try:
        assert await shared.remember_digest("npm", "a", "sha512:aa") == "sha512:aa"
        await state.close()  # from now on every state call would fail
        assert await shared.remember_digest("npm", "a", "sha512:changed") == "sha512:aa"
        assert not shared.degraded
    finally:
        await shared.close()
