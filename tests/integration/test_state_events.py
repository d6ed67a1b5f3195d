"""Takedown events in both state backends: one event per id whoever records it, newest
first, filtered by package and time, paged by position, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mirror.model import ImpactRow
from mirror.state.base import StateStore
from mirror.takedowns import Takedown, event_of
from tests.integration.conftest import OpenStore

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _event(package: str, version: str, minutes: int, kind: str = "removed"):
    impact = (
        ImpactRow(
            client="10.0.0.7", token="ci", ci="github-actions", count=3, first_at=T0, last_at=T0
        ),
    )
    return event_of(
        "npm",
        package,
        Takedown(version, "", kind),  # type: ignore[arg-type]
        T0 + timedelta(minutes=minutes),
        impact,
        clients=1,
        downloads=3,
    )


async def test_an_event_is_recorded_once_and_read_back_whole(state: StateStore) -> None:
    event = _event("left-pad", "1.3.1", 0)
    assert await state.add_event(event) is True
    assert await state.add_event(event) is False  # a sibling worker noticed it too
    assert await state.events(limit=10) == [event]


async def test_events_are_newest_first_filtered_and_paged(state: StateStore) -> None:
    events = [_event("left-pad", f"1.0.{n}", n) for n in range(5)]
    events.append(_event("axios", "1.14.1", 10, "yanked"))
    for event in events:
        await state.add_event(event)
    listed = await state.events(limit=10)
    assert [event.version for event in listed] == [
        "1.14.1",
        "1.0.4",
        "1.0.3",
        "1.0.2",
        "1.0.1",
        "1.0.0",
    ]
    only = await state.events(limit=10, ecosystem="npm", package="axios")
    assert [event.kind for event in only] == ["yanked"]
    first = await state.events(limit=2, ecosystem="npm", package="left-pad")
    assert [event.version for event in first] == ["1.0.4", "1.0.3"]
    last = first[-1]
    rest = await state.events(
        limit=10, ecosystem="npm", package="left-pad", before=(last.detected_at, last.id)
    )
    assert [event.version for event in rest] == ["1.0.2", "1.0.1", "1.0.0"]
    recent = await state.events(limit=10, since=T0 + timedelta(minutes=3))
    assert [event.version for event in recent] == ["1.14.1", "1.0.4", "1.0.3"]


async def test_past_the_cap_events_nobody_had_go_before_older_ones_with_clients(
    open_store: OpenStore,
) -> None:
    store = await open_store(events_kept=3)
    had = _event("left-pad", "1.0.0", 0)  # the oldest, but someone had downloaded it
    nobody = [
        event_of("npm", "flap", Takedown(f"9.0.{n}", "", "removed"), T0 + timedelta(minutes=n))
        for n in range(1, 4)
    ]
    for event in (had, *nobody):
        assert await store.add_event(event)
    kept = await store.events(limit=10)
    assert [event.version for event in kept] == ["9.0.3", "9.0.2", "1.0.0"]
    assert await store.events(limit=10, ecosystem="npm", package="flap") == kept[:2]
    # Only impactful ones left past the cap: the oldest goes.
    newer = [_event("axios", f"1.0.{n}", 10 + n) for n in range(3)]
    for event in newer:
        await store.add_event(event)
    assert [event.version for event in await store.events(limit=10)] == [
        "1.0.2",
        "1.0.1",
        "1.0.0",
    ]
    assert await store.events(limit=10, ecosystem="npm", package="left-pad") == []
