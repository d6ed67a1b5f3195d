"""What the operator reads while a remote host fails: the first failure at once (an outage is
seen the moment it starts), then at most one summary per host per `interval` (failures counted
by kind, with the last one as a sample), and one line when the host answers again. A down
upstream under load fails thousands of requests a minute; a line for each buried everything
else in the log.

Pure: the caller passes the moment and logs the `OutageReport`s returned. The state, one
small record per host that failed lately, lives in the instance.

The rule that bounds the log: a report about a host goes out only when its last one is at
least `interval` old, except the line saying that an announced outage is over (one per
announcement). So a host that fails and answers by turns still costs at most two lines per
interval; failures left unreported in between are counted into the next report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

# How often an ongoing outage of one host is summarised in the log.
SUMMARY_INTERVAL = timedelta(seconds=30)
# Bounds one sample's length in a line (it names a URL and an exception's text).
MAX_SAMPLE = 300

ReportKind = Literal["failing", "still-failing", "intermittent", "recovered"]


@dataclass(frozen=True, slots=True)
class OutageReport:
    """One line for the log. `kind` says which: "failing", "still-failing" and
    "intermittent" (failures between answers, none of them announced) deserve a warning;
    "recovered" (an announced outage is over) is good news."""

    kind: ReportKind
    host: str
    text: str


@dataclass(slots=True)
class _Host:
    last_report: datetime | None = None
    failing_since: datetime | None = None  # the first failure not followed by an answer
    announced: bool = False  # a "failing" line went out and no "recovered" line since
    failures: int = 0  # in the current run of failures
    unreported: Counter[str] = field(default_factory=Counter)  # by kind, since last report
    sample: str = ""


class OutageLog:
    """Failures and answers of remote hosts in, the lines worth logging out."""

    def __init__(self, interval: timedelta = SUMMARY_INTERVAL) -> None:
        self.interval = interval
        self._hosts: dict[str, _Host] = {}

    def failed(self, host: str, kind: str, detail: str, now: datetime) -> OutageReport | None:
        """Note one failure of `host` (`kind`: a short, bounded word; `detail`: what the
        operator needs to find it, e.g. the URL and the error); the line to log now, if any."""
        state = self._hosts.setdefault(host, _Host())
        state.unreported[kind] += 1
        state.sample = _bounded(detail)
        if state.failing_since is None:
            state.failing_since, state.failures = now, 0
        state.failures += 1
        if not self._due(state, now):
            return None
        if state.announced:
            since = state.last_report or now
            text = (
                f"upstream {host} still failing: {_counted(state.unreported)} in the last "
                f"{_seconds(now - since)}, failing for {_seconds(now - state.failing_since)}; "
                f"the last: {state.sample}"
            )
            report = OutageReport("still-failing", host, text)
        else:
            earlier = sum(state.unreported.values()) - 1
            text = f"upstream {host} is failing: {state.sample}"
            if earlier:
                text += f" ({_counted(state.unreported)} since the last report)"
            text += f"; further failures of {host} are summarised every {_seconds(self.interval)}"
            report = OutageReport("failing", host, text)
            state.announced = True
        state.last_report = now
        state.unreported.clear()
        return report

    def watching(self, host: str) -> bool:
        """Whether `host` failed lately (else `answered` has nothing to do)."""
        return host in self._hosts

    def answered(self, host: str, now: datetime) -> OutageReport | None:
        """Note that `host` answered (any answer but a failure); the line to log now, if any."""
        state = self._hosts.get(host)
        if state is None:
            return None
        report: OutageReport | None = None
        if state.announced:
            lasted = now - (state.failing_since or now)
            text = (
                f"upstream {host} answers again after {_seconds(lasted)} of failures "
                f"({state.failures} in all)"
            )
            if state.unreported:
                text += f"; {_counted(state.unreported)} since the last report"
            report = OutageReport("recovered", host, text)
        elif state.unreported and self._due(state, now):
            since = f" in the last {_seconds(now - state.last_report)}" if state.last_report else ""
            text = (
                f"upstream {host} answers, but failed between answers: "
                f"{_counted(state.unreported)}{since}; the last: {state.sample}"
            )
            report = OutageReport("intermittent", host, text)
        if report is not None:
            state.last_report = now
            state.unreported.clear()
        state.failing_since, state.announced, state.failures = None, False, 0
        if not state.unreported and self._due(state, now):
            del self._hosts[host]  # nothing to remember: its next failure is reported at once
        return report

    def _due(self, state: _Host, now: datetime) -> bool:
        return state.last_report is None or now - state.last_report >= self.interval


def _counted(kinds: Counter[str]) -> str:
    """E.g. `12 failures (10 timeout, 2 http-5xx)`: the most frequent kind first."""
    total = sum(kinds.values())
    parts = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
    return f"{total} failure{'s' if total != 1 else ''} ({parts})"


def _seconds(span: timedelta) -> str:
    return f"{max(span.total_seconds(), 0):.0f} s"


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_SAMPLE else text[: MAX_SAMPLE - 1] + "…"
