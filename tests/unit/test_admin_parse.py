"""The admin API's pure parsing: times in range, ASCII limits, JSON depth, cursors, the
change log line and rule coverage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mirror import rulechanges
from mirror.admin import auth, parse, rules
from mirror.config import AdminConfig
from mirror.errors import BadRequest, Forbidden, Unauthorized
from mirror.model import AuditEntry

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
        ("2999-12-31T23:59:59Z", True, parse.LATEST_TIME),
        ("1970-01-01", False, parse.EARLIEST_TIME),
    ],
)
def test_times_in_range_parse(text: str, future: bool, expected: datetime) -> None:
    assert parse.parse_time(text, field="t", now=NOW, future=future) == expected


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
            parse.parse_time(text, field="expires", now=NOW, future=future)
        assert raised.value.data["field"] == "expires"
        assert raised.value.message.startswith("expires:")


@pytest.mark.parametrize(
    ("text", "expected"), [(None, 100), ("1", 1), ("1000", 1000), (" 42 ", 42), ("007", 7)]
)
def test_limits_in_ascii_digits(text: str | None, expected: int) -> None:
    assert parse.parse_limit(text, default=100, maximum=1000) == expected


@pytest.mark.parametrize(
    "text", ["\u00b2", "\u0661", "\uff11", "\U0001d7cf", "0", "1001", "-1", "+1", "1_0", ""]
)
def test_limits_refuse_everything_else(text: str) -> None:
    with pytest.raises(BadRequest):
        parse.parse_limit(text, default=100, maximum=1000)


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": 2}]}', 3),
        (b'{"a": "[[[[[[[[[[[[[[[["}', 1),
        (b'{"a": "\\"[[[[[[[[["}', 1),
        (b"1", 0),
        (b"[" * 100_000, parse.MAX_JSON_DEPTH + 1),  # stops counting past the limit
    ],
)
def test_json_depth_skips_strings_and_stops_early(raw: bytes, depth: int) -> None:
    assert parse.json_depth(raw, stop_above=parse.MAX_JSON_DEPTH) == depth


def test_parse_body_refuses_deep_big_and_non_json_bodies() -> None:
    assert parse.parse_body(b'{"a": 1}') == {"a": 1}
    for raw in (b"[" * 100_000, b'{"a": ' + b"1" * 5000 + b"}", b'{"a": NaN}', b"[]"):
        with pytest.raises(BadRequest) as raised:
            parse.parse_body(raw)
        assert raised.value.status == 400
    with pytest.raises(BadRequest) as raised:
        parse.parse_body(b'{"a": "' + b"x" * parse.MAX_BODY_BYTES + b'"}')
    assert raised.value.status == 413


def test_change_line_is_one_line_whatever_the_fields_hold() -> None:
    entry = AuditEntry(
        at=NOW, actor="alice", client="10.0.0.1", action="block.create", target="b-1",
        after={"ecosystem": "npm", "package": "x\ny", "versions": "1.0.0",
               "reason": "r\n2026-11-22 WARNING mirror.admin: block.delete b-2 by bob\x1b[2J"},
    )  # fmt: skip
    line = rulechanges.change_line(entry)
    assert line.isprintable()
    assert line == (
        "block.create b-1 by alice from 10.0.0.1: npm x\\ny 1.0.0 "
        "(r\\n2026-11-22 WARNING mirror.admin: block.delete b-2 by bob\\x1b[2J)"
    )


def test_a_cursor_round_trips_and_is_tied_to_its_query() -> None:
    query = parse.ImpactQuery("npm", "@evil/*", "*", NOW - timedelta(days=1), "1d")
    cursor = parse.ImpactCursor(package="@evil/b", after="123:45")
    text = parse.encode_cursor(query, cursor)
    fresh = parse.ImpactQuery("npm", "@evil/*", "*", None, "1d")
    resolved, decoded = parse.decode_cursor(text, fresh)
    assert decoded == cursor
    assert resolved.since == query.since  # the first page's moment, not a new "1d"
    for other in (
        parse.ImpactQuery("npm", "@evil/*", "1.0.0", None, "1d"),
        parse.ImpactQuery("pypi", "@evil/*", "*", None, "1d"),
        parse.ImpactQuery("npm", "@evil/*", "*", None, "2d"),
    ):
        with pytest.raises(BadRequest):
            parse.decode_cursor(text, other)
    for garbage in ("", "!!!", text + "x", text[:-3], "x" * 5000):
        with pytest.raises(BadRequest):
            parse.decode_cursor(garbage, fresh)


def test_coverage_lists_the_covered_versions_in_order_and_warns_on_none() -> None:
    # Exactly what the policy matches (the same spec parser): sorted by version.
    listed = ["1.0.0", "1.10.0", "1.2.0", "3.0.0", "2.0.0"]
    covered = rules.describe_coverage("npm", "left-pad", ">=1.2.0 <3.0.0", listed)
    assert covered == {"versions": ["1.2.0", "1.10.0", "2.0.0"], "count": 3, "listed": 5}
    none = rules.describe_coverage("npm", "left-pad", "9.9.9", listed)
    assert none["versions"] == []
    assert none["warning"] == (
        "left-pad 9.9.9 covers no version the upstream lists (5 version(s) listed)"
    )
    unknown = rules.describe_coverage("npm", "left-pad", "1.0.0", None, " (offline)")
    assert unknown["versions"] is None
    assert "warning" not in unknown
    assert unknown["note"].endswith("(offline)")
    many = rules.describe_coverage("npm", "p", "*", [f"1.0.{n}" for n in range(250)])
    assert (len(many["versions"]), many["count"]) == (rules.MAX_COVERED_SHOWN, 250)


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
    assert parse.parse_time(text, field="until", now=NOW, future=future) == expected


@pytest.mark.parametrize("text", ["", "soon", "7 days", "2026-13-01", "-3d", "12"])
def test_parse_time_refuses_with_the_field(text: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse.parse_time(text, field="until", now=NOW, future=True)
    assert caught.value.data["field"] == "until"
    assert caught.value.message.startswith("until:")


def test_identify_names_the_matching_token() -> None:
    tokens = {"alice": ALICE, "bob": BOB}
    assert auth.identify(f"Bearer {BOB}", tokens) == "bob"
    assert auth.identify(f"bearer   {ALICE} ", tokens) == "alice"
    with pytest.raises(Unauthorized):
        auth.identify(None, tokens)
    with pytest.raises(Unauthorized):
        auth.identify("Bearer ", tokens)
    with pytest.raises(Forbidden, match="not valid"):
        auth.identify(f"Bearer {ALICE}x", tokens)
    with pytest.raises(Forbidden, match="MIRROR_ADMIN_TOKENS"):
        auth.identify(f"Bearer {ALICE}", {})


# rule bodies (pure: no app, no state) -----------------------------------------------------


def test_rule_fields_of_a_valid_body() -> None:
    body = {
        "ecosystem": "npm",
        "package": " left-pad ",
        "versions": ">=1.0.0 <2.0.0",
        "reason": "compromised",
        "expires": "7d",
    }
    fields = parse.rule_fields(body, "block", NOW)
    assert fields == parse.RuleFields(
        "npm", "left-pad", ">=1.0.0 <2.0.0", "compromised", NOW + timedelta(days=7)
    )
    without = parse.rule_fields({**body, "expires": " "}, "exemption", NOW)
    assert without.expires is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # The first bad field is the one named, in the order a body is read.
        ({"ecosystem": "npm", "package": "p", "versions": "1", "colour": "red"}, "colour"),
        ({"package": "p", "versions": "1"}, "ecosystem"),
        ({"ecosystem": "cargo", "package": "p", "versions": "1"}, "ecosystem"),
        ({"ecosystem": "npm", "versions": "1"}, "package"),
        ({"ecosystem": "npm", "package": 7, "versions": "1"}, "package"),
        ({"ecosystem": "npm", "package": "p\u202e", "versions": "1"}, "package"),
        ({"ecosystem": "npm", "package": "p"}, "versions"),
        ({"ecosystem": "npm", "package": "p", "versions": "not a range"}, "versions"),
        ({"ecosystem": "npm", "package": "p", "versions": "1", "reason": "x" * 2001}, "reason"),
        ({"ecosystem": "npm", "package": "p", "versions": "1", "expires": "1d ago"}, "expires"),
        ({"ecosystem": "npm", "package": "p", "versions": "1", "expires": 7}, "expires"),
        # An expiry in the past would store a rule that never applies.
        ({"ecosystem": "npm", "package": "p", "versions": "1", "expires": "2026-11-21"}, "expires"),
    ],
)
def test_rule_fields_name_the_first_bad_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(BadRequest) as raised:
        parse.rule_fields({"reason": "r", **body}, "block", NOW)
    assert raised.value.status == 400
    assert raised.value.data["field"] == field
    assert raised.value.message.startswith(f"{field}:")


def test_freeze_record_of_a_valid_body() -> None:
    body = {
        "ecosystem": "pypi",
        "published_after": "2026-11-20",
        "until": "3d",
        "reason": "incident",
    }
    record = parse.freeze_record(body, "alice", NOW)
    assert record.id.startswith("f-")
    assert (record.kind, record.ecosystem, record.package, record.versions) == (
        "freeze", "pypi", "*", "*"
    )  # fmt: skip
    assert (record.created_by, record.created_at, record.reason) == ("alice", NOW, "incident")
    assert record.expires_at == NOW + timedelta(days=3)
    assert record.data == {"published_after": "2026-11-20T00:00:00Z"}
    assert parse.freeze_record({**body, "package": "django"}, "bob", NOW).package == "django"
    assert parse.freeze_record(body, "alice", NOW).id != record.id


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"versions": "1.0"}, "versions"),  # a freeze covers by publish time, not by version
        ({"until": "2026-11-22T09:00Z"}, "until"),  # already past
        ({"published_after": "2026-11-26"}, "until"),  # the cutoff after the end
        ({"published_after": "2026-11-25"}, "until"),  # a freeze of no time at all
        ({"published_after": None}, "published_after"),
        ({"ecosystem": "Maven"}, "ecosystem"),
        ({"reason": None}, "reason"),  # every rule says why
    ],
)
def test_freeze_record_refuses_with_the_field(changes: dict[str, object], field: str) -> None:
    body = {"ecosystem": "npm", "published_after": "1d", "until": "2026-11-25", "reason": "r"}
    body.update(changes)
    body = {key: value for key, value in body.items() if value is not None}
    with pytest.raises(BadRequest) as raised:
        parse.freeze_record(body, "alice", NOW)
    assert raised.value.data["field"] == field


def test_an_unknown_field_is_named_escaped_and_short() -> None:
    with pytest.raises(BadRequest) as raised:
        parse.check_fields({"a\x1b[2J" + "x" * 200: 1, "ecosystem": "npm"}, {"ecosystem"})
    field = raised.value.data["field"]
    assert field.isprintable()
    assert field.startswith("a\\x1b[2J")
    assert len(field) == 80
    assert raised.value.message == f"{field}: unknown field (expected ecosystem)"


# who may call (pure) ------------------------------------------------------------------------


def test_authenticate_names_the_caller_only_when_a_token_is_required() -> None:
    settings = AdminConfig(tokens={"alice": ALICE})
    open_read = auth.authenticate(None, "10.0.0.1", settings, required=False, write=False)
    assert open_read == auth.Caller(actor="anonymous", client="10.0.0.1")
    # A token sent to an open read is not checked: the read stays anonymous.
    sent = auth.authenticate("Bearer wrong", "10.0.0.1", settings, required=False, write=False)
    assert sent.actor == "anonymous"
    named = auth.authenticate(f"Bearer {ALICE}", "10.0.0.2", settings, required=True, write=True)
    assert named == auth.Caller(actor="alice", client="10.0.0.2")
    with pytest.raises(Unauthorized):
        auth.authenticate(None, "10.0.0.1", settings, required=True, write=True)


def test_a_read_only_token_reads_and_never_writes() -> None:
    settings = AdminConfig(tokens={"alice": ALICE}, read_tokens={"auditor": BOB})
    read = auth.authenticate(f"Bearer {BOB}", "10.0.0.3", settings, required=True, write=False)
    assert read.actor == "auditor"
    with pytest.raises(Forbidden, match="auditor is a read-only admin token"):
        auth.authenticate(f"Bearer {BOB}", "10.0.0.3", settings, required=True, write=True)
    # Only read-only tokens configured: reads work, writes are disabled.
    only_reads = AdminConfig(read_tokens={"auditor": BOB})
    assert auth.identify(f"Bearer {BOB}", {}, only_reads.read_tokens, write=False) == "auditor"
    with pytest.raises(Forbidden, match="disabled"):
        auth.identify(f"Bearer {BOB}", {}, only_reads.read_tokens, write=True)


@pytest.mark.parametrize(
    ("protect_reads", "open_impact", "reads", "impact"),
    [
        (False, False, False, True),  # impact names clients: closed by default
        (False, True, False, False),
        (True, False, True, True),
        (True, True, True, True),  # protect_reads closes every read, impact included
    ],
)
def test_which_reads_need_a_token(
    protect_reads: bool, open_impact: bool, reads: bool, impact: bool
) -> None:
    settings = AdminConfig(protect_reads=protect_reads, open_impact=open_impact)
    assert auth.reads_need_token(settings) is reads
    assert auth.impact_needs_token(settings) is impact
