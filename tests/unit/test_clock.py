"""The formats the mirror writes times in (`mirror.clock`): each is what clients, tests and
people read, so the exact bytes are pinned here, at the edges of the calendar too."""

from __future__ import annotations

import pathlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mirror import clock

MOMENT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
WITH_SECONDS = datetime(2026, 11, 25, 10, 0, 30, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))
FAR_OFFSET = timezone(timedelta(hours=-23, minutes=-59))


@pytest.mark.parametrize(
    ("moment", "seconds", "minutes", "sentence", "microseconds"),
    [
        (
            MOMENT,
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:00Z",
            "2026-11-25T10:00Z",
            "2026-11-25T10:00:00.000000Z",
        ),
        (
            WITH_SECONDS,
            "2026-11-25T10:00:30Z",
            "2026-11-25T10:00Z",
            "2026-11-25T10:00:30Z",
            "2026-11-25T10:00:30.123456Z",
        ),
        (  # another zone: written in UTC
            datetime(2026, 11, 25, 12, 0, 5, tzinfo=PLUS_TWO),
            "2026-11-25T10:00:05Z",
            "2026-11-25T10:00Z",
            "2026-11-25T10:00:05Z",
            "2026-11-25T10:00:05.000000Z",
        ),
        (  # past the end of the calendar in UTC: the last moment, never an error
            datetime.max.replace(tzinfo=FAR_OFFSET),
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59Z",
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59.999999Z",
        ),
        (  # naive: taken as UTC
            datetime(2026, 11, 25, 10, 0),  # noqa: DTZ001
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:00Z",
            "2026-11-25T10:00Z",
            "2026-11-25T10:00:00.000000Z",
        ),
    ],
)
def test_each_format_writes_utc(
    moment: datetime, seconds: str, minutes: str, sentence: str, microseconds: str
) -> None:
    assert clock.iso_seconds(moment) == seconds
    assert clock.iso_minutes(moment) == minutes
    assert clock.iso_sentence(moment) == sentence
    assert clock.iso_microseconds(moment) == microseconds


def test_a_missing_time_is_none_for_the_api_and_unknown_in_a_sentence() -> None:
    assert clock.iso_seconds(None) is None
    assert clock.iso_sentence(None) == "unknown"


def test_a_minute_ending_in_zero_seconds_keeps_its_other_zeros() -> None:
    # Only the trailing `:00` seconds go: 10:00 stays 10:00, not 10.
    assert clock.iso_sentence(datetime(2026, 1, 1, 0, 0, tzinfo=UTC)) == "2026-01-01T00:00Z"
    assert clock.iso_sentence(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)) == ("2026-01-01T00:00:01Z")


def test_the_formats_are_written_once() -> None:
    """No module but `mirror.clock` spells a time format (Maven's `<lastUpdated>`, read and
    written by its document module, is Maven's own)."""
    root = pathlib.Path(clock.__file__).parent
    spelled = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "clock.py":
            continue
        text = path.read_text(encoding="utf-8")
        if "%H:%M" in text or "%Y-%m-%d" in text:
            spelled.append(str(path.relative_to(root)))
    assert spelled == []
