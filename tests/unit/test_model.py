"""The records every layer shares: how download rows aggregate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mirror.model import DownloadEvent

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _event(at: datetime, **who: str) -> DownloadEvent:
    return DownloadEvent(
        ecosystem="npm",
        package="left-pad",
        version="1.3.0",
        filename="left-pad-1.3.0.tgz",
        client="10.1.4.17",
        at=at,
        **who,
    )


def test_one_address_with_two_read_tokens_is_two_rows() -> None:
    assert _event(T0, token="team-a").key != _event(T0, token="team-b").key
    assert _event(T0, token="team-a").key == _event(T0, token="team-a", session="x").key


def test_a_merged_row_counts_both_and_keeps_what_the_later_download_said() -> None:
    earlier = _event(T0, token="ci", user_agent="npm/10.8.2 ci/gitlab", ci="gitlab", session="s1")
    later = _event(T0 + timedelta(minutes=5), token="ci", user_agent="npm/11.0.0", session="s2")
    for row in (earlier.merged(later), later.merged(earlier)):
        assert (row.at, row.last_seen, row.count) == (T0, T0 + timedelta(minutes=5), 2)
        assert (row.user_agent, row.ci, row.session) == ("npm/11.0.0", "", "s2")
        assert row.token == "ci"
