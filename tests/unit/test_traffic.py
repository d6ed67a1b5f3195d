"""The overview's figures from stored traffic counts: windows cut into buckets, totals, the
last upstream failure, bars and the figures as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mirror.traffic import (
    DAY,
    HOUR,
    TrafficCount,
    TrafficTally,
    bars,
    last_error,
    ratio_text,
    size_text,
    summarize,
)

NOW = datetime(2026, 3, 2, 12, 7, 30, tzinfo=UTC)


def at(minutes_ago: int, ecosystem: str = "npm", **figures: int | str) -> TrafficCount:
    minute = NOW.replace(second=0) - timedelta(minutes=minutes_ago)
    return TrafficCount(ecosystem=ecosystem, minute=minute, **figures)  # type: ignore[arg-type]


def test_the_hour_is_twelve_five_minute_buckets_on_the_clock() -> None:
    counts = [
        at(0, requests=1, hits=1, bytes_from_cache=10),  # 12:07, in the 12:05 bucket
        at(3, requests=2, misses=2, bytes_from_upstream=20),  # 12:04, in 12:00
        at(62, requests=100),  # 11:05: the first bucket of the hour (11:10) starts later
        at(1, "pypi", requests=7),
    ]
    summary = summarize(counts, "npm", HOUR, NOW)
    assert summary.starts[0] == datetime(2026, 3, 2, 11, 10, tzinfo=UTC)
    assert summary.starts[-1] == datetime(2026, 3, 2, 12, 5, tzinfo=UTC)
    assert summary.requests == [0] * 10 + [2, 1]
    assert (summary.totals.requests, summary.totals.hits, summary.totals.misses) == (3, 1, 2)
    assert summary.totals.hit_ratio == 1 / 3
    assert summary.bytes_from_cache[-1] == 10
    day = summarize(counts, "npm", DAY, NOW)
    assert len(day.requests) == 24
    assert day.requests[-1] == 3
    assert day.requests[-2] == 100


def test_the_last_upstream_error_is_the_latest_minute_with_one() -> None:
    counts = [
        at(30, upstream_errors=2, last_error="timeout"),
        at(5, upstream_errors=1, last_error="http-5xx"),
        at(1, requests=4),
        at(0, "pypi", upstream_errors=1, last_error="connect"),
    ]
    found = last_error(counts, "npm")
    assert found is not None
    assert (found.at, found.kind) == (NOW.replace(second=0) - timedelta(minutes=5), "http-5xx")
    assert last_error(counts, "maven") is None


def test_the_tally_hands_over_its_counts_once_and_only_for_ecosystems() -> None:
    tally = TrafficTally()
    tally.request("npm")
    tally.hit("npm", 5)
    tally.fetched("feed1", 99)
    tally.upstream_error("maven", "timeout")
    minute = NOW.replace(second=0)
    taken = tally.take(minute)
    assert {count.ecosystem for count in taken} == {"npm", "maven"}
    assert tally.take(minute) == []


def test_bars_are_scaled_to_the_peak_and_small_values_stay_visible() -> None:
    starts = [NOW] * 4
    drawn = bars([0, 1, 50, 100], starts, width=40, height=20)
    assert [bar.height for bar in drawn] == [0.0, 1.0, 10.0, 20.0]
    assert [bar.y for bar in drawn] == [20.0, 19.0, 10.0, 0.0]
    assert [bar.x for bar in drawn] == [0.0, 10.0, 20.0, 30.0]
    shared = bars([5], starts[:1], width=10, height=20, peak=10)
    assert shared[0].height == 10.0
    assert bars([], [], width=10, height=10) == []


def test_figures_as_text() -> None:
    assert size_text(0) == "0 B"
    assert size_text(1023) == "1023 B"
    assert size_text(1536) == "1.5 KiB"
    assert size_text(3 * 1024**3) == "3.0 GiB"
    assert ratio_text(None) == "-"
    assert ratio_text(0.5) == "50 %"
