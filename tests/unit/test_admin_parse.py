"""The admin API's pure parsing: times in range, ASCII limits, JSON depth, cursors, the
change log line and rule coverage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mirror import admin
from mirror.errors import BadRequest, Forbidden, Unauthorized
from mirror.state.base import AuditEntry

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789abc"


@pytest.mark.parametrize(
    ("text", "future", "expected"),
    [
        ("7d", True, NOW + timedelta(days=7)),
        ("12h", False, NOW - timedelta(hours=12)),
        ("2026-11-29", True, datetime(2026, 11, 29, tzinfo=UTC)),
        ("2026-11-22T00:00+02:00", True, datetime(2026, 11, 21, 22, 0, tzinfo=UTC)),
        ("2999-12-31T23:59:59Z", True, admin.LATEST_TIME),
        ("1970-01-01", False, admin.EARLIEST_TIME),
    ],
)
def test_times_in_range_parse(text: str, future: bool, expected: datetime) -> None:
    assert admin.parse_time(text, field="t", now=NOW, future=future) == expected


@pytest.mark.parametrize(
    "text",
    [
        "99999999999d", "9" * 60 + "d", "1000000w", "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59", "9999-12-31", "3000-01-01", "1969-12-31T23:59:59Z",
        "0001-01-01", "x" * 65, "2026-02-30", "7d\x00", "tomorrow", " ",
    ],
)  # fmt: skip
def test_times_out_of_range_or_malformed_are_a_400(text: str) -> None:
    for future in (True, False):
        with pytest.raises(BadRequest) as raised:
            admin.parse_time(text, field="expires", now=NOW, future=future)
        assert raised.value.data["field"] == "expires"
        assert raised.value.message.startswith("expires:")


@pytest.mark.parametrize(
    ("text", "expected"), [(None, 100), ("1", 1), ("1000", 1000), (" 42 ", 42), ("007", 7)]
)
def test_limits_in_ascii_digits(text: str | None, expected: int) -> None:
    assert admin.parse_limit(text, default=100, maximum=1000) == expected


@pytest.mark.parametrize(
    "text", ["\u00b2", "\u0661", "\uff11", "\U0001d7cf", "0", "1001", "-1", "+1", "1_0", ""]
)
def test_limits_refuse_everything_else(text: str) -> None:
    with pytest.raises(BadRequest):
        admin.parse_limit(text, default=100, maximum=1000)


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": 2}]}', 3),
        (b'{"a": "[[[[[[[[[[[[[[[["}', 1),
        (b'{"a": "\\"[[[[[[[[["}', 1),
        (b"1", 0),
        (b"[" * 100_000, admin.MAX_JSON_DEPTH + 1),  # stops counting past the limit
    ],
)
def test_json_depth_skips_strings_and_stops_early(raw: bytes, depth: int) -> None:
    assert admin.json_depth(raw, stop_above=admin.MAX_JSON_DEPTH) == depth


def test_parse_body_refuses_deep_big_and_non_json_bodies() -> None:
    assert admin.parse_body(b'{"a": 1}') == {"a": 1}
    for raw in (b"[" * 100_000, b'{"a": ' + b"1" * 5000 + b"}", b'{"a": NaN}', b"[]"):
        with pytest.raises(BadRequest) as raised:
            admin.parse_body(raw)
        assert raised.value.status == 400
    with pytest.raises(BadRequest) as raised:
        admin.parse_body(b'{"a": "' + b"x" * admin.MAX_BODY_BYTES + b'"}')
    assert raised.value.status == 413


def test_change_line_is_one_line_whatever_the_fields_hold() -> None:
    entry = AuditEntry(
        at=NOW, actor="alice", client="10.0.0.1", action="block.create", target="b-1",
        after={"ecosystem": "npm", "package": "x\ny", "versions": "1.0.0",
               "reason": "r\n2026-11-22 WARNING mirror.admin: block.delete b-2 by bob\x1b[2J"},
    )  # fmt: skip
    line = admin.change_line(entry)
    assert line.isprintable()
    assert line == (
        "block.create b-1 by alice from 10.0.0.1: npm x\\ny 1.0.0 "
        "(r\\n2026-11-22 WARNING mirror.admin: block.delete b-2 by bob\\x1b[2J)"
    )


def test_a_cursor_round_trips_and_is_tied_to_its_query() -> None:
    query = admin.ImpactQuery("npm", "@evil/*", "*", NOW - timedelta(days=1), "1d")
    cursor = admin.ImpactCursor(package="@evil/b", after="123:45")
    text = admin.encode_cursor(query, cursor)
    fresh = admin.ImpactQuery("npm", "@evil/*", "*", None, "1d")
    resolved, decoded = admin.decode_cursor(text, fresh)
    assert decoded == cursor
    assert resolved.since == query.since  # the first page's moment, not a new "1d"
    for other in (
        admin.ImpactQuery("npm", "@evil/*", "1.0.0", None, "1d"),
        admin.ImpactQuery("pypi", "@evil/*", "*", None, "1d"),
        admin.ImpactQuery("npm", "@evil/*", "*", None, "2d"),
    ):
        with pytest.raises(BadRequest):
            admin.decode_cursor(text, other)
    for garbage in ("", "!!!", text + "x", text[:-3], "x" * 5000):
        with pytest.raises(BadRequest):
            admin.decode_cursor(garbage, fresh)


def test_coverage_lists_the_covered_versions_in_order_and_warns_on_none() -> None:
    # Exactly what the policy matches (the same spec parser): sorted by version.
    listed = ["1.0.0", "1.10.0", "1.2.0", "3.0.0", "2.0.0"]
    covered = admin.describe_coverage("npm", "left-pad", ">=1.2.0 <3.0.0", listed)
    assert covered == {"versions": ["1.2.0", "1.10.0", "2.0.0"], "count": 3, "listed": 5}
    none = admin.describe_coverage("npm", "left-pad", "9.9.9", listed)
    assert none["versions"] == []
    assert none["warning"] == (
        "left-pad 9.9.9 covers no version the upstream lists (5 version(s) listed)"
    )
    unknown = admin.describe_coverage("npm", "left-pad", "1.0.0", None, " (offline)")
    assert unknown["versions"] is None
    assert "warning" not in unknown
    assert unknown["note"].endswith("(offline)")
    many = admin.describe_coverage("npm", "p", "*", [f"1.0.{n}" for n in range(250)])
    assert (len(many["versions"]), many["count"]) == (admin.MAX_COVERED_SHOWN, 250)


# time and token parsing (pure, no app) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "future", "expected"),
    [
        ("2026-11-29", True, datetime(2026, 11, 29, tzinfo=UTC)),
        ("2026-11-22T00:00Z", False, datetime(2026, 11, 22, tzinfo=UTC)),
        ("2026-11-22T03:00+02:00", False, datetime(2026, 11, 22, 1, tzinfo=UTC)),
        ("2026-11-22T07:30", True, datetime(2026, 11, 22, 7, 30, tzinfo=UTC)),
        ("7d", True, NOW + timedelta(days=7)),
        ("7d", False, NOW - timedelta(days=7)),
        ("1d12h", True, NOW + timedelta(hours=36)),
    ],
)
def test_parse_time_forms(text: str, future: bool, expected: datetime) -> None:
    assert admin.parse_time(text, field="until", now=NOW, future=future) == expected


@pytest.mark.parametrize("text", ["", "soon", "7 days", "2026-13-01", "-3d", "12"])
def test_parse_time_refuses_with_the_field(text: str) -> None:
    with pytest.raises(BadRequest) as caught:
        admin.parse_time(text, field="until", now=NOW, future=True)
    assert caught.value.data["field"] == "until"
    assert caught.value.message.startswith("until:")


def test_identify_names_the_matching_token() -> None:
    tokens = {"alice": ALICE, "bob": BOB}
    assert admin.identify(f"Bearer {BOB}", tokens) == "bob"
    assert admin.identify(f"bearer   {ALICE} ", tokens) == "alice"
    with pytest.raises(Unauthorized):
        admin.identify(None, tokens)
    with pytest.raises(Unauthorized):
        admin.identify("Bearer ", tokens)
    with pytest.raises(Forbidden, match="not valid"):
        admin.identify(f"Bearer {ALICE}x", tokens)
    with pytest.raises(Forbidden, match="MIRROR_ADMIN_TOKENS"):
        admin.identify(f"Bearer {ALICE}", {})
