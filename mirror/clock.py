"""Time as a parameter, and time as the mirror writes it. The app holds a `Clock`; tests pass
a `FixedClock`. Every time the mirror shows anyone (API, messages, notices, documents) is
written by one of the formatters below, each format once; all of them take the moment in
UTC, saturating (`add_saturating`): a time from an upstream can never make one raise.
`parse_iso_time` reads the times upstream metadata writes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

END_OF_TIME: Final = datetime.max.replace(tzinfo=UTC)
START_OF_TIME: Final = datetime.min.replace(tzinfo=UTC)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at

    def advance(self, delta: timedelta) -> None:
        self._at += delta


def add_saturating(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta` in UTC, clamped to the first/last representable moment instead of
    raising OverflowError: every arithmetic on a time from upstream or a client goes through
    here. A naive `moment` is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-23:59 lies past the end of the calendar in UTC
        utc = END_OF_TIME if moment.year > 1 else START_OF_TIME
    try:
        return utc + delta
    except OverflowError:
        return END_OF_TIME if delta > timedelta(0) else START_OF_TIME


# formats ---------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return add_saturating(moment, timedelta(0))


def iso_seconds(moment: datetime | None) -> str | None:
    """`2026-11-22T14:02:00Z`: UTC to the second, as the API and Maven's messages write
    times."""
    if moment is None:
        return None
    return _utc(moment).isoformat(timespec="seconds").removesuffix("+00:00") + "Z"


def iso_minutes(moment: datetime) -> str:
    """`2026-11-25T10:00Z`: UTC to the minute, as the short notices (`npm-notice`,
    `X-Mirror-Notice`, 404 summaries) write when something becomes available."""
    return f"{_utc(moment):%Y-%m-%dT%H:%MZ}"


_TRAILING_ZERO_SECONDS: Final = re.compile(r":00$")


def iso_sentence(moment: datetime | None) -> str:
    """`2026-11-25T10:00Z`, or `2026-11-25T10:00:30Z` when the seconds are not zero:
    the times in policy's sentences (refusals, explain). `unknown` for None."""
    if moment is None:
        return "unknown"
    text = _utc(moment).strftime("%Y-%m-%dT%H:%M:%S")
    return _TRAILING_ZERO_SECONDS.sub("", text) + "Z"


def readable_minutes(moment: datetime) -> str:
    """`2026-11-25 10:00 UTC`: UTC to the minute, as the dashboard's pages show times."""
    return f"{_utc(moment):%Y-%m-%d %H:%M} UTC"


def iso_microseconds(moment: datetime) -> str:
    """`2026-11-25T10:00:00.000000Z`: PEP 700's `upload-time`, as PyPI's JSON writes it."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso_time(value: object) -> datetime | None:
    """An ISO 8601 time from upstream metadata (`2011-03-26T19:49:50.232Z`; a time without a
    zone means UTC, as PyPI's JSON API writes it) as an aware UTC datetime, or None when it is
    not a time or lies outside the calendar in UTC (`9999-12-31T23:59:59-23:59`): an unknown
    publish time, which holds the version, never an exception."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


_AGE_UNITS: Final = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def format_age(age: timedelta) -> str:
    """`3d`, `72h` → `3d`, `90m`, `0` — the way the settings write ages."""
    seconds = int(age.total_seconds())
    if seconds == 0:
        return "0"
    for unit, size in _AGE_UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
