"""The quarantine queue in shared state, on both backends: held requests gathered per version
(counts summed, first and last held, the latest publish time and `until`), requesters
bounded, most recently held first, pruned by age; and the recorder that batches them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mirror.clock import FixedClock
from mirror.holdrecorder import HoldRecorder
from mirror.holds import (
    HOLDS_RETENTION,
    REQUESTERS_KEPT,
    REQUESTERS_SHOWN,
    HeldSubject,
    HoldEvent,
    Requester,
)
from mirror.metrics import Metrics
from mirror.state.base import StateStore
from mirror.state.local import LocalState
from mirror.state.redis import RedisState
from tests.integration.conftest import NOW

OpenStore = Callable[[], Awaitable[StateStore]]
UNTIL = NOW + timedelta(days=3)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture(params=["local", "redis"])
async def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock
) -> AsyncIterator[OpenStore]:
    """Opens stores of one backend sharing one location (like sibling workers)."""
    opened: list[StateStore] = []
    namespace = f"test-{uuid.uuid4().hex}"

    async def build() -> StateStore:
        store: StateStore
        if request.param == "local":
            store = LocalState(tmp_path / "state.sqlite3", clock=clock)
        else:
            url: str = request.getfixturevalue("redis_url")
            store = RedisState(url, namespace=namespace, clock=clock)
        await store.open()
        opened.append(store)
        return store

    yield build
    for store in opened:
        await store.close()


@pytest.fixture
async def state(open_store: OpenStore) -> StateStore:
    return await open_store()


def subject(
    package: str = "left-pad", version: str = "1.4.0", *, ecosystem: str = "npm"
) -> HeldSubject:
    return HeldSubject(ecosystem, package, version, NOW - timedelta(hours=5), UNTIL)


def event(
    held: HeldSubject,
    client: str = "10.0.0.1",
    token: str = "",
    *,
    at: datetime = NOW,
    count: int = 1,
) -> HoldEvent:
    return HoldEvent(subject=held, client=client, token=token, at=at, last_at=at, count=count)


async def test_requests_of_one_version_add_up_across_writers(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    held = subject()
    await first.record_holds([event(held, at=NOW - timedelta(minutes=5), count=2)])
    await second.record_holds([event(held, "10.0.0.2", "ci", at=NOW)])
    await second.record_holds([event(held, at=NOW - timedelta(minutes=1))])
    [version] = await first.held_versions(limit=10)
    assert (version.ecosystem, version.package, version.version) == ("npm", "left-pad", "1.4.0")
    assert version.published_at == NOW - timedelta(hours=5)
    assert version.until == UNTIL
    assert version.requests == 4
    assert version.first_held == NOW - timedelta(minutes=5)
    assert version.last_held == NOW
    assert version.requester_count == 2
    assert not version.more_requesters
    # The most recent requester first.
    assert version.requesters == (Requester("10.0.0.2", "ci"), Requester("10.0.0.1", ""))


async def test_most_recently_held_first_and_filtered_by_ecosystem(state: StateStore) -> None:
    await state.record_holds([event(subject("old"), at=NOW - timedelta(hours=2))])
    await state.record_holds([event(subject("requests", "2.32.0", ecosystem="pypi"))])
    await state.record_holds([event(subject("mid"), at=NOW - timedelta(hours=1))])
    everything = await state.held_versions(limit=10)
    assert [version.package for version in everything] == ["requests", "mid", "old"]
    assert [version.package for version in await state.held_versions(limit=2)] == [
        "requests",
        "mid",
    ]
    npm = await state.held_versions(limit=10, ecosystem="npm")
    assert [version.package for version in npm] == ["mid", "old"]
    assert await state.held_versions(limit=10, ecosystem="maven") == []


async def test_requesters_are_bounded(state: StateStore) -> None:
    held = subject()
    crowd = [event(held, f"10.1.{n // 250}.{n % 250}") for n in range(REQUESTERS_KEPT + 5)]
    await state.record_holds(crowd)
    [version] = await state.held_versions(limit=1)
    assert version.requests == REQUESTERS_KEPT + 5
    assert version.requester_count == REQUESTERS_KEPT
    assert version.more_requesters
    assert len(version.requesters) == REQUESTERS_SHOWN


async def test_versions_not_held_lately_are_pruned(state: StateStore, clock: FixedClock) -> None:
    await state.record_holds([event(subject("stale"))])
    await state.record_holds([event(subject("old-project", ecosystem="pypi"))])
    clock.advance(HOLDS_RETENTION + timedelta(hours=1))
    await state.record_holds([event(subject("fresh"), at=clock.now())])
    # Pruned in every ecosystem, also one with nothing new.
    assert [version.package for version in await state.held_versions(limit=10)] == ["fresh"]


async def test_hostile_names_are_stored_as_given(state: StateStore) -> None:
    name = '<script>"x"\n:y'
    await state.record_holds([event(subject(name, "1.0.0\x1b"), "::1", "tok\nen")])
    [version] = await state.held_versions(limit=1)
    assert (version.package, version.version) == (name, "1.0.0\x1b")
    assert version.requesters == (Requester("::1", "tok\nen"),)


async def test_the_recorder_batches_notes_into_one_row(
    state: StateStore, clock: FixedClock
) -> None:
    recorder = HoldRecorder(state, Metrics(), clock, flush_interval=60)
    for _ in range(3):
        recorder.note([subject(), subject("other")], client="10.0.0.9", token="ci")
    assert await state.held_versions(limit=10) == []  # not written before its interval
    await recorder.close()
    versions = {version.package: version for version in await state.held_versions(limit=10)}
    assert versions["left-pad"].requests == 3
    assert versions["other"].requesters == (Requester("10.0.0.9", "ci"),)


async def test_the_recorder_never_fails_a_request_when_state_is_down(
    tmp_path: Path, clock: FixedClock
) -> None:
    closed = LocalState(tmp_path / "state.sqlite3", clock=clock)  # never opened
    recorder = HoldRecorder(closed, Metrics(), clock, flush_interval=0.01)
    recorder.note([subject()], client="10.0.0.1", token="")
    await recorder.flush()  # the write fails; the row waits for the next one
    await closed.open()
    try:
        await recorder.flush()
        [version] = await closed.held_versions(limit=1)
        assert version.requests == 1
    finally:
        await recorder.close()
        await closed.close()
