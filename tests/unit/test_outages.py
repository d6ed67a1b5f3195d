"""`mirror.outages.OutageLog`: what an operator reads while a host fails, on a clock the test
moves (pure: no logging, no timers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.outages import SUMMARY_INTERVAL, OutageLog

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HOST = "registry.example:8443"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_first_failure_is_reported_at_once_and_the_rest_once_per_interval() -> None:
    outages = OutageLog()
    first = outages.failed(HOST, "timeout", "could not fetch /left-pad: timed out", at(0))
    assert first is not None
    assert first.kind == "failing"
    assert first.text == (
        f"upstream {HOST} is failing: could not fetch /left-pad: timed out; further failures "
        f"of {HOST} are summarised every 30 s"
    )
    quiet = [
        outages.failed(HOST, "http-5xx" if n % 4 else "timeout", f"sample {n}", at(n / 10))
        for n in range(1, 200)
    ]
    assert quiet == [None] * 199
    summary = outages.failed(HOST, "timeout", "the very last", at(31))
    assert summary is not None
    assert summary.kind == "still-failing"
    assert summary.text == (
        f"upstream {HOST} still failing: 200 failures (150 http-5xx, 50 timeout) in the last "
        "31 s, failing for 31 s; the last: the very last"
    )
    assert outages.failed(HOST, "timeout", "again", at(32)) is None


def test_an_answer_ends_an_announced_outage_with_its_count() -> None:
    outages = OutageLog()
    outages.failed(HOST, "connect", "refused", at(0))
    for n in range(1, 5):
        outages.failed(HOST, "connect", "refused", at(n))
    recovered = outages.answered(HOST, at(12))
    assert recovered is not None
    assert recovered.kind == "recovered"
    assert recovered.text == (
        f"upstream {HOST} answers again after 12 s of failures (5 in all); "
        "4 failures (4 connect) since the last report"
    )
    # Answering again is news no more.
    assert outages.answered(HOST, at(13)) is None


def test_hosts_are_reported_apart() -> None:
    outages = OutageLog()
    assert outages.failed("a.example", "timeout", "a", at(0)) is not None
    assert outages.failed("b.example", "timeout", "b", at(1)) is not None
    assert outages.failed("a.example", "timeout", "a", at(2)) is None


def test_a_host_that_fails_and_answers_by_turns_costs_two_lines_an_interval() -> None:
    outages = OutageLog()
    reports = []
    for n in range(300):  # a failure and an answer every second for five minutes
        reports.append(outages.failed(HOST, "http-5xx", f"fault {n}", at(n)))
        reports.append(outages.answered(HOST, at(n + 0.5)))
    lines = [report for report in reports if report is not None]
    # The outage and its end, then one line per 30 s with the failures in between.
    assert [line.kind for line in lines] == ["failing", "recovered"] + ["intermittent"] * 9
    assert lines[2].text == (
        f"upstream {HOST} answers, but failed between answers: 30 failures (30 http-5xx) "
        "in the last 30 s; the last: fault 30"
    )


def test_a_short_blip_after_a_report_is_told_with_the_next_answer_once_due() -> None:
    outages = OutageLog()
    outages.failed(HOST, "timeout", "x", at(0))
    outages.answered(HOST, at(1))
    assert outages.failed(HOST, "timeout", "y", at(5)) is None
    assert outages.answered(HOST, at(6)) is None  # the last line is 5 s old
    late = outages.answered(HOST, at(40))
    assert late is not None
    assert late.kind == "intermittent"
    assert late.text == (
        f"upstream {HOST} answers, but failed between answers: 1 failure (1 timeout) in the "
        "last 39 s; the last: y"
    )


def test_a_host_that_answers_is_forgotten_once_nothing_is_pending() -> None:
    outages = OutageLog()
    assert not outages.watching(HOST)
    outages.failed(HOST, "timeout", "x", at(0))
    assert outages.watching(HOST)
    outages.answered(HOST, at(1))
    assert outages.watching(HOST)  # its last report is recent: the bound needs it
    outages.answered(HOST, at(1) + SUMMARY_INTERVAL)
    assert not outages.watching(HOST)


def test_a_long_sample_is_cut() -> None:
    report = OutageLog().failed(HOST, "bad-document", "x" * 5000, at(0))
    assert report is not None
    assert len(report.text) < 500


EVENTS = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=20, allow_nan=False),  # seconds since the last event
        st.booleans(),  # a failure (True) or an answer
        st.sampled_from(["a.example", "b.example"]),
    ),
    max_size=400,
)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_at_most_two_lines_per_host_per_interval_plus_the_first(
    events: list[tuple[float, bool, str]],
) -> None:
    outages = OutageLog()
    now = T0
    lines: dict[str, list[datetime]] = {}
    failures = 0
    for gap, failed, host in events:
        now += timedelta(seconds=gap)
        if failed:
            failures += 1
            report = outages.failed(host, "timeout", "x", now)
        else:
            report = outages.answered(host, now)
        if report is not None:
            lines.setdefault(host, []).append(now)
    for moments in lines.values():
        span = (moments[-1] - moments[0]) / SUMMARY_INTERVAL
        assert len(moments) <= 2 * (int(span) + 1)
    assert sum(len(moments) for moments in lines.values()) <= failures * 2
