"""The quarantine queue in shared state, on both backends: held requests gathered per version
(counts summed, first and last held, the latest publish time and `until`), requesters
bounded, most recently held first, pruned by age; and the recorder that batches them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
import redis.asyncio as aioredis

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
from mirror.state import local as local_backend
from mirror.state import redis as redis_backend
from mirror.state.base import StateStore
from mirror.state.local import LocalState
from mirror.state.redis import RedisState
from tests.integration.conftest import NOW, OpenStore

UNTIL = NOW + timedelta(days=3)


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
    held = (subject(), subject("other"))  # one rendered view, served three times
    for _ in range(3):
        recorder.note(held, client="10.0.0.9", token="ci")
    assert await state.held_versions(limit=10) == []  # not written before its interval
    await recorder.close()
    versions = {version.package: version for version in await state.held_versions(limit=10)}
    assert versions["left-pad"].requests == 3
    assert versions["other"].requesters == (Requester("10.0.0.9", "ci"),)


class CountedWrites:
    """A real store whose writes are counted (rows per `record_holds`)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.rows: list[int] = []

    async def record_holds(self, events: Sequence[HoldEvent]) -> None:
        self.rows.append(len(events))
        await self.state.record_holds(events)


async def test_refusals_of_one_version_gather_in_one_row(
    state: StateStore, clock: FixedClock
) -> None:
    counted = CountedWrites(state)
    recorder = HoldRecorder(cast(StateStore, counted), Metrics(), clock, flush_interval=60)
    for _ in range(5):  # a new tuple for each refusal, as `holds.quarantined` builds one
        recorder.note((subject(),), client="10.0.0.1", token="")
    await recorder.close()
    assert counted.rows == [1]
    [version] = await state.held_versions(limit=1)
    assert version.requests == 5


async def test_the_recorder_never_fails_a_request_when_state_is_down(
    tmp_path: Path, clock: FixedClock
) -> None:
    closed = LocalState(tmp_path / "state.sqlite3", clock=clock)  # never opened
    recorder = HoldRecorder(closed, Metrics(), clock, flush_interval=0.01)
    recorder.note((subject(),), client="10.0.0.1", token="")
    await recorder.flush()  # the write fails; the row waits for the next one
    await closed.open()
    try:
        await recorder.flush()
        [version] = await closed.held_versions(limit=1)
        assert version.requests == 1
    finally:
        await recorder.close()
        await closed.close()


async def test_past_the_cap_the_least_recently_held_go_with_their_requesters(
    state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = 3
    monkeypatch.setattr(local_backend, "HOLDS_KEPT", kept)
    monkeypatch.setattr(redis_backend, "HOLDS_KEPT", kept)
    for n in range(5):  # v0 held first (least recently), v4 last
        at = NOW - timedelta(minutes=10 - n)
        await state.record_holds(
            [
                event(subject(f"v{n}"), f"10.0.{n}.1", at=at),
                event(subject(f"v{n}"), "10.9.9.9", at=at),
            ]
        )
    listed = await state.held_versions(limit=10)
    assert [version.package for version in listed] == ["v4", "v3", "v2"]
    assert await state.held_version("npm", "left-pad", "1.4.0") is None
    assert await state.held_version("npm", "v0", "1.4.0") is None
    kept_one = await state.held_version("npm", "v2", "1.4.0")
    assert kept_one is not None
    assert set(kept_one.requesters) == {Requester("10.0.2.1", ""), Requester("10.9.9.9", "")}
    # A trimmed version held again starts afresh: its old requesters went with it.
    await state.record_holds([event(subject("v0"), "10.7.7.7", at=NOW)])
    again = await state.held_version("npm", "v0", "1.4.0")
    assert again is not None
    assert again.requesters == (Requester("10.7.7.7", ""),)
    assert (again.requests, again.requester_count) == (1, 1)
    assert [version.package for version in await state.held_versions(limit=10)] == [
        "v0",
        "v4",
        "v3",
    ]


async def test_one_held_version_reads_like_its_queue_row(state: StateStore) -> None:
    await state.record_holds([event(subject(), "10.0.0.1", "ci", count=3)])
    await state.record_holds([event(subject("other"))])
    [listed] = [
        version for version in await state.held_versions(limit=10) if version.package == "left-pad"
    ]
    assert await state.held_version("npm", "left-pad", "1.4.0") == listed
    assert listed.requesters == (Requester("10.0.0.1", "ci"),)
    assert await state.held_version("pypi", "left-pad", "1.4.0") is None
    assert await state.held_version("npm", "left-pad", "9.9.9") is None


async def test_expired_requesters_leave_room_and_the_more_flag_goes_with_them(
    state: StateStore, clock: FixedClock
) -> None:
    held = subject()
    crowd = [event(held, f"10.1.{n // 250}.{n % 250}") for n in range(REQUESTERS_KEPT + 5)]
    await state.record_holds(crowd)
    clock.advance(HOLDS_RETENTION - timedelta(days=1))
    # One of the crowd asks again (the version stays); the others stop asking.
    await state.record_holds([event(held, "10.1.0.0", at=clock.now())])
    [version] = await state.held_versions(limit=1)
    assert version.more_requesters  # the crowd is still current: 100 or more
    clock.advance(timedelta(days=2))  # the rest of the crowd, and the 5 only counted, expired
    [version] = await state.held_versions(limit=1)
    assert version.requester_count == 1
    assert not version.more_requesters
    # A new requester gets a slot the expired ones held.
    await state.record_holds([event(held, "10.6.0.1", at=clock.now())])
    [version] = await state.held_versions(limit=1)
    assert set(version.requesters) == {Requester("10.1.0.0", ""), Requester("10.6.0.1", "")}
    assert version.requester_count == 2
    assert not version.more_requesters


async def test_every_redis_key_of_the_queue_expires(redis_url: str, clock: FixedClock) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    store = RedisState(redis_url, namespace=namespace, clock=clock)
    await store.open()
    raw = aioredis.from_url(redis_url, decode_responses=True)
    try:
        await store.record_holds([event(subject(), "10.0.0.1"), event(subject("other"), "::1")])
        keys = [key async for key in raw.scan_iter(f"{namespace}:holds*")]
        assert any(":holds-who:" in key for key in keys)
        assert len(keys) >= 6
        for key in keys:
            ttl = await raw.ttl(key)
            assert 0 < ttl <= HOLDS_RETENTION.total_seconds(), key
    finally:
        await raw.aclose()
        await store.close()


async def test_a_view_noted_many_times_is_written_for_each_version_it_held(
    state: StateStore, clock: FixedClock
) -> None:
    recorder = HoldRecorder(state, Metrics(), clock, flush_interval=60)
    view = tuple(subject("next", f"15.0.0-canary.{n}") for n in range(50))
    for n in range(200):
        recorder.note(view, client=f"10.0.0.{n % 2}", token="")
    await recorder.close()
    versions = await state.held_versions(limit=100)
    assert len(versions) == 50
    assert {version.requests for version in versions} == {200}
    assert {version.requester_count for version in versions} == {2}
