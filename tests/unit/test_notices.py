"""What holds withheld versions, said once (`mirror.notices`) for every notice header and
"nothing visible" 404; and the policy facts it says it from (an exemption that expired)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mirror import notices, policy
from mirror.config import QuarantineConfig, RiskConfig, RiskRule
from mirror.errors import Held
from mirror.model import Explanation, RuleKind, RuleRecord
from mirror.risk import Signal

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=30)
CONFIG = QuarantineConfig(default=timedelta(days=3))


def record(
    kind: RuleKind,
    rule_id: str,
    versions: str = "*",
    *,
    reason: str | None = None,
    package: str = "demo",
    expires_at: datetime | None = None,
    **data: Any,
) -> RuleRecord:
    return RuleRecord(
        id=rule_id,
        kind=kind,
        ecosystem="npm",
        package=package,
        versions=versions,
        reason=reason if reason is not None else f"reason of {rule_id}",
        created_at=OLD - timedelta(days=1),
        created_by="security",
        expires_at=expires_at,
        data=data,
    )


def freeze(rule_id: str, expires_at: datetime | None, versions: str = "*") -> RuleRecord:
    return record(
        "freeze", rule_id, versions, expires_at=expires_at, published_after=NOW - timedelta(days=5)
    )


def decide(
    records: Sequence[RuleRecord], version: str, published: datetime | None, now: datetime = NOW
) -> policy.Decision:
    rules = policy.compile_rules(records, CONFIG, now)
    return policy.decide(policy.Subject("npm", "demo", version), published, now, rules)


def held(
    records: Sequence[RuleRecord], versions: dict[str, datetime | None], now: datetime = NOW
) -> list[policy.Decision]:
    decisions = [
        decide(records, version, published, now) for version, published in versions.items()
    ]
    assert not any(decision.visible for decision in decisions)
    return decisions


# each cause -----------------------------------------------------------------------------------


def test_quarantine_names_the_newest_and_when_it_is_available() -> None:
    decisions = held([], {"1.1.0": NOW - timedelta(hours=5), "1.2.0": NOW - timedelta(hours=1)})
    assert notices.notice("demo", decisions, "version") == (
        "demo: 2 versions held in quarantine (newest 1.2.0, available 2026-11-25T09:00Z)"
    )


def test_quarantine_of_unknown_publish_times_lists_the_newest_few() -> None:
    decisions = held([], dict.fromkeys(["1.0", "1.1", "1.2", "1.3"]))
    assert notices.summary(decisions, "version") == (
        "4 versions held in quarantine (publish time unknown: 1.1, 1.2, 1.3 and 1 more)"
    )


def test_a_block_is_named_with_its_id_and_reason() -> None:
    blocked = record("block", "b-9c8d", "1.3.1", reason="hijacked maintainer account")
    decisions = held([blocked], {"1.3.1": OLD})
    assert notices.notice("demo", decisions, "version") == (
        "demo: 1 version blocked by block b-9c8d: hijacked maintainer account (1.3.1)"
    )


def test_a_freeze_is_named_with_its_id_reason_and_end() -> None:
    dated = freeze("f-1a2b", NOW + timedelta(days=18))
    decisions = held([dated], {"1.4.0": NOW - timedelta(days=4), "1.5.0": NOW - timedelta(days=1)})
    assert notices.summary(decisions, "version") == (
        "2 versions held by freeze f-1a2b: reason of f-1a2b (until 2026-12-10T10:00Z; 1.4.0, 1.5.0)"
    )
    open_ended = held([freeze("f-3c4d", None)], {"1.4.0": NOW - timedelta(days=4)})
    assert notices.summary(open_ended, "version") == (
        "1 version held by freeze f-3c4d: reason of f-3c4d (until lifted; 1.4.0)"
    )
    # never announced as quarantine
    assert "quarantine" not in notices.summary([*decisions, *open_ended], "version")


def test_an_expired_exemption_is_named_with_its_id_and_when_it_expired() -> None:
    exemption = record("exemption", "e-5e6f", "1.2.0", expires_at=NOW - timedelta(hours=2))
    decisions = held([exemption], {"1.2.0": NOW - timedelta(days=1)})
    assert notices.summary(decisions, "version") == (
        "1 version back in quarantine since exemption e-5e6f expired 2026-11-22T08:00Z "
        "(newest 1.2.0, available 2026-11-24T10:00Z)"
    )


def test_files_are_counted_and_named_as_files() -> None:
    decisions = [
        decide([], "1.2", NOW - timedelta(hours=1)),
        policy.decide(
            policy.Subject("pypi", "demo", "1.2", filename="demo-1.2-py3-none-any.whl"),
            NOW - timedelta(hours=2),
            NOW,
            policy.compile_rules([], CONFIG, NOW),
        ),
    ]
    assert notices.summary(decisions[1:], "file") == (
        "1 file held in quarantine (newest demo-1.2-py3-none-any.whl, available 2026-11-25T08:00Z)"
    )


def test_nothing_held_is_no_notice_unless_something_else_is_said() -> None:
    assert notices.notice("demo", [], "version") is None
    assert notices.summary([], "file") == ""
    assert notices.notice("demo", [], "file", ("2 files not served",)) == (
        "demo: 2 files not served"
    )


# mixed causes, many rules, hostile text -----------------------------------------------------------


def test_mixed_causes_are_each_named_quarantine_first() -> None:
    rules = [
        record("block", "b-1", "1.0.1", reason="malware"),
        freeze("f-1", NOW + timedelta(days=10), "2.x"),
        record("exemption", "e-1", "3.0.0", expires_at=NOW - timedelta(minutes=30)),
    ]
    decisions = held(
        rules,
        {
            "1.0.1": OLD,
            "1.9.0": NOW - timedelta(hours=1),
            "2.1.0": NOW - timedelta(days=2),
            "3.0.0": NOW - timedelta(days=2),
        },
    )
    assert notices.notice("demo", decisions, "version") == (
        "demo: 1 version held in quarantine (newest 1.9.0, available 2026-11-25T09:00Z); "
        "1 version blocked by block b-1: malware (1.0.1); "
        "1 version held by freeze f-1: reason of f-1 (until 2026-12-02T10:00Z; 2.1.0); "
        "1 version back in quarantine since exemption e-1 expired 2026-11-22T09:30Z "
        "(newest 3.0.0, available 2026-11-23T10:00Z)"
    )


def test_many_blocks_are_capped_and_the_rest_counted() -> None:
    blocks = [record("block", f"b-{index}", f"1.{index}.0") for index in range(12)]
    versions = {f"1.{index}.0": OLD for index in range(12)}
    versions.update({f"1.{index}.1": OLD for index in range(12)})
    blocks += [record("block", f"b-{index}-patch", f"1.{index}.1") for index in range(12)]
    text = notices.notice("demo", held(blocks, versions), "version")
    assert text is not None
    assert text.count("blocked by block") == notices.RULES_NAMED
    assert text.endswith("; and 20 versions held by 20 more rules")
    assert len(text) < 500


def test_many_items_of_one_rule_are_capped() -> None:
    versions = {f"1.0.{patch}": OLD for patch in range(500)}
    text = notices.summary(held([record("block", "b-all")], versions), "version")
    assert text == (
        "500 versions blocked by block b-all: reason of b-all "
        "(1.0.497, 1.0.498, 1.0.499 and 497 more)"
    )


@pytest.mark.parametrize(
    "reason",
    [
        "evil\r\nX-Injected: 1",
        "\x1b[31mred\x1b[0m \u202eesrever\u2028next",
        "caf\u00e9 \u2014 \U0001f600 h\u00e4ll\u00f6",
        "x" * 100_000,
        "\x00\x7f\x85" * 1000,
    ],
)
def test_hostile_reasons_stay_one_bounded_ascii_line(reason: str) -> None:
    hostile = record("block", "b-x\n", reason=reason)
    frozen = RuleRecord(**{**vars_of(freeze("f-\x1b", None)), "reason": reason})
    decisions = held([hostile], {"1.0.0": OLD}) + held(
        [frozen], {"2.0.0": OLD + timedelta(days=26)}
    )
    text = notices.notice("d\u00e9mo\n", decisions, "version")
    assert text is not None
    assert all(32 <= ord(char) < 127 for char in text), text
    assert len(text) <= 2 * (notices.REASON_CHARS + 3 * notices.ITEM_CHARS) + 200
    assert "\\n" in text  # escaped, not dropped: what was there stays visible
    assert text.startswith("d?mo\\n: ")


def test_a_long_name_and_long_items_are_cut() -> None:
    long_version = "1.0.0-" + "a" * 500
    text = notices.notice(
        "n" * 1000, held([record("block", "b-1")], {long_version: OLD}), "version"
    )
    assert text is not None
    assert len(text) < 3 * notices.ITEM_CHARS + notices.REASON_CHARS
    assert "..." in text


def vars_of(rule: RuleRecord) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in RuleRecord.__dataclass_fields__}


# refusals and explain name the cause -----------------------------------------------------------


def test_hold_clause_names_each_cause() -> None:
    blocked = decide([record("block", "b-1")], "1.0.0", OLD)
    assert notices.hold_clause(blocked) == "blocked by this mirror"
    frozen = decide([freeze("f-1", NOW + timedelta(days=10))], "1.0.0", NOW - timedelta(days=4))
    assert notices.hold_clause(frozen) == "held by freeze f-1 until 2026-12-02T10:00:00Z"
    lifted = decide([freeze("f-2", None)], "1.0.0", NOW - timedelta(days=4))
    assert notices.hold_clause(lifted) == "held by freeze f-2 until the freeze is lifted"
    young = decide([], "1.0.0", NOW - timedelta(days=1))
    assert notices.hold_clause(young) == "in quarantine until 2026-11-24T10:00:00Z"
    unknown = decide([], "1.0.0", None)
    assert notices.hold_clause(unknown) == "in quarantine (its publish time is unknown)"
    exemption = record("exemption", "e-1", expires_at=NOW - timedelta(hours=1))
    again = decide([exemption], "1.0.0", NOW - timedelta(days=1))
    assert notices.hold_clause(again) == (
        "in quarantine again until 2026-11-24T10:00:00Z (exemption e-1 expired "
        "2026-11-22T09:00:00Z)"
    )


def test_the_refusal_of_a_version_back_in_quarantine_names_the_exemption() -> None:
    exemption = record("exemption", "e-7", "1.2.0", reason="hotfix", expires_at=NOW)
    decision = decide([exemption], "1.2.0", NOW - timedelta(days=1))
    assert decision.verdict == "quarantined"
    assert decision.lapsed is not None
    assert decision.lapsed.record.id == "e-7"
    assert decision.detail == (
        "demo@1.2.0 was published 2026-11-21T10:00Z and is in quarantine until "
        "2026-11-24T10:00Z (quarantine age 3d); exemption e-7 (hotfix) let it through until it "
        "expired at 2026-11-22T10:00Z; ask your security team for an exemption if you need it "
        "sooner"
    )
    refusal = Held.from_decision(decision)
    assert refusal.status == 403
    assert refusal.reason == "quarantined"
    assert "exemption e-7" in refusal.message
    assert decision.describe()["lapsed_exemption"]["id"] == "e-7"
    unknown = decide([exemption], "1.2.0", None)
    assert "exemption e-7 (hotfix) let it through until it expired" in unknown.detail


def test_the_refusal_of_a_frozen_version_names_the_freeze_first() -> None:
    decision = decide([freeze("f-9", None)], "1.2.0", NOW - timedelta(days=4))
    refusal = Held.from_decision(decision)
    assert refusal.phrase == "demo@1.2.0 is held by freeze f-9 until the freeze is lifted"
    assert "reason of f-9" in refusal.message


# an exemption that expired: what policy knows of it --------------------------------------------


def test_an_expired_exemption_never_changes_a_verdict() -> None:
    expired = record("exemption", "e-1", expires_at=NOW - timedelta(hours=1))
    live = record("exemption", "e-2", expires_at=NOW + timedelta(hours=1))
    blocked = record("block", "b-1")
    assert decide([expired, blocked], "1.0.0", NOW - timedelta(days=1)).verdict == "blocked"
    assert decide([expired, blocked], "1.0.0", NOW - timedelta(days=1)).lapsed is None
    assert decide([expired, live], "1.0.0", NOW - timedelta(days=1)).verdict == "exempted"
    mature = decide([expired], "1.0.0", OLD)
    assert (mature.verdict, mature.lapsed) == ("allowed", None)


def test_an_exemption_that_expired_before_the_version_was_published_is_not_named() -> None:
    expired = record("exemption", "e-1", expires_at=NOW - timedelta(days=2))
    assert decide([expired], "1.0.0", NOW - timedelta(days=1)).lapsed is None
    assert decide([expired], "1.0.0", NOW - timedelta(days=2, hours=12)).lapsed is not None


def test_the_exemption_that_expired_last_is_named_and_freezes_keep_it() -> None:
    first = record("exemption", "e-1", expires_at=NOW - timedelta(hours=5))
    last = record("exemption", "e-2", expires_at=NOW - timedelta(hours=1))
    other = record("exemption", "e-3", "2.x", expires_at=NOW - timedelta(minutes=1))
    decision = decide([first, last, other], "1.0.0", NOW - timedelta(days=1))
    assert decision.lapsed is not None
    assert decision.lapsed.record.id == "e-2"
    frozen = decide([first, freeze("f-1", None)], "1.0.0", NOW - timedelta(days=4))
    assert frozen.freeze is not None
    assert frozen.lapsed is not None
    # a freeze holds it: the notice names the freeze
    assert notices.summary([frozen], "version").startswith("1 version held by freeze f-1")


# expired exemptions: bounded in what is compiled and named -------------------------------------


def test_long_expired_exemptions_are_not_compiled_and_change_no_decision() -> None:
    long_ago = NOW - policy.MIN_LAPSE_HORIZON - timedelta(days=90)
    stale = [
        record("exemption", f"e-old-{index}", package=f"d*{index}*", expires_at=long_ago)
        for index in range(5000)
    ] + [record("exemption", "e-old-demo", package="de*", expires_at=long_ago)]
    recent = record("exemption", "e-recent", package="dem*", expires_at=NOW - timedelta(hours=1))
    live = record("exemption", "e-live", "9.x", expires_at=NOW + timedelta(days=1))
    rules = policy.compile_rules([*stale, recent, live], CONFIG, NOW)
    # Only the live exemption and the one expired within the horizon are indexed, apart.
    index = rules.exemptions["npm"]
    assert len(index) == 2
    assert [rule.record.id for rule in index.globs] == []
    assert [rule.record.id for rule in index.expired_globs] == ["e-recent"]
    assert [rule.record.id for rule in index.exact["demo"]] == ["e-live"]
    alone = policy.compile_rules([recent, live], CONFIG, NOW)
    for version, published in (("1.0.0", NOW - timedelta(days=1)), ("1.0.0", None), ("9.1.0", OLD)):
        subject = policy.Subject("npm", "demo", version)
        decision = policy.decide(subject, published, NOW, rules)
        assert decision.describe() == policy.decide(subject, published, NOW, alone).describe()
    held = policy.decide(
        policy.Subject("npm", "demo", "1.0.0"), NOW - timedelta(days=1), NOW, rules
    )
    assert held.lapsed is not None
    assert held.lapsed.record.id == "e-recent"


def test_rules_reindexed_later_move_what_expired_out_of_the_live_index() -> None:
    soon = record("exemption", "e-soon", expires_at=NOW + timedelta(hours=1))
    rules = policy.compile_rules([soon], CONFIG, NOW)
    assert [rule.record.id for rule in rules.exemptions["npm"].exact["demo"]] == ["e-soon"]
    later = rules.at(NOW + timedelta(hours=2))
    assert later.exemptions["npm"].exact == {}
    assert [rule.record.id for rule in later.exemptions["npm"].expired_exact["demo"]] == ["e-soon"]
    subject = policy.Subject("npm", "demo", "1.0.0")
    moment = NOW + timedelta(hours=2)
    young = NOW - timedelta(hours=1)
    assert (
        policy.decide(subject, young, moment, later).describe()
        == policy.decide(subject, young, moment, rules).describe()
    )
    # Past the horizon it is not indexed at all, and not named.
    gone = rules.at(NOW + policy.lapse_horizon(CONFIG) + timedelta(hours=2))
    assert "npm" not in gone.exemptions
    assert policy.decide(subject, None, NOW + timedelta(days=30), rules).lapsed is None


def test_an_exemption_that_expired_long_ago_is_not_named_for_an_unknown_publish_time() -> None:
    recent = record("exemption", "e-1", expires_at=NOW - timedelta(days=2))
    assert decide([recent], "1.0.0", None).lapsed is not None
    old = record("exemption", "e-2", expires_at=NOW - policy.MIN_LAPSE_HORIZON - timedelta(days=1))
    assert decide([old], "1.0.0", None).lapsed is None


def test_the_expired_exemption_a_decision_describes_does_not_say_who_added_it() -> None:
    exemption = record("exemption", "e-7", "1.2.0", reason="hotfix", expires_at=NOW, ticket="T-1")
    described = decide([exemption], "1.2.0", NOW - timedelta(days=1)).describe()
    assert described["lapsed_exemption"] == {
        "id": "e-7",
        "ecosystem": "npm",
        "package": "demo",
        "versions": "1.2.0",
        "reason": "hotfix",
        "expires_at": "2026-11-22T10:00:00Z",
    }


# risk signals: the acting one named, every one listed ------------------------------------------

SCRIPT_ADDED = "postinstall script added in 4.2.1; 4.2.0 had none"
NEW_PUBLISHER = "4.2.1 published by mallory; 4.2.0 and earlier by alice"


def signalled(
    signals: Sequence[Signal], version: str = "4.2.1", published: datetime | None = OLD
) -> policy.Decision:
    rules = policy.compile_rules([], CONFIG, NOW)
    subject = policy.Subject("npm", "demo", version)
    return policy.decide(subject, published, NOW, rules, signals)


def two_signals() -> policy.Decision:
    """A version with two signals: the install script extends it (by default), the new
    publisher is noted."""
    published = NOW - timedelta(days=5)
    return signalled(
        [
            Signal.of("new-publisher", NEW_PUBLISHER),
            Signal.of("install-script-added", SCRIPT_ADDED),
        ],
        published=published,
    )


def test_of_two_signals_the_notice_names_the_one_that_holds_and_the_403_lists_both() -> None:
    decision = two_signals()
    assert not decision.visible
    text = notices.notice("demo", [decision], "version")
    assert text == (
        "demo: 1 version held for risk signal install-script-added (4.2.1, until "
        f"2026-12-01T10:00Z: {SCRIPT_ADDED})"
    )
    assert "new-publisher" not in text  # a note holds nothing: explain lists it
    assert notices.hold_clause(decision) == (
        "held for risk signal install-script-added until 2026-12-01T10:00:00Z"
    )
    refusal = Held.from_decision(decision)
    assert refusal.status == 403
    assert refusal.phrase == "demo@4.2.1 is held until 2026-12-01T10:00Z"
    body = refusal.body()
    assert body["reason"] == "quarantined"
    assert body["error"].startswith(f"demo@4.2.1 is held until 2026-12-01T10:00Z: {SCRIPT_ADDED}")
    assert "(risk signal install-script-added: quarantine extended to 14d)" in body["error"]
    assert [(s["signal"], s["action"], s["age"]) for s in body["signals"]] == [
        ("install-script-added", "extend", "14d"),
        ("new-publisher", "note", None),
    ]
    explained = Explanation.of(decision, published_at=decision.published_at)
    assert [signal["signal"] for signal in explained.signals] == [
        "install-script-added",
        "new-publisher",
    ]
    assert explained.risk is not None
    assert explained.risk["signal"] == "install-script-added"


def test_a_held_signal_says_until_exempted_and_several_versions_are_counted() -> None:
    rules = policy.compile_rules(
        [], CONFIG, NOW, RiskConfig(rules=(RiskRule(signal="new-publisher", action="hold"),))
    )
    held_ones = [
        policy.decide(
            policy.Subject("npm", "demo", version),
            OLD,
            NOW,
            rules,
            [Signal.of("new-publisher", f"{version} published by mallory")],
        )
        for version in ("4.2.1", "4.2.2")
    ]
    text = notices.notice("demo", held_ones, "version")
    assert text == (
        "demo: 2 versions held for risk signal new-publisher (4.2.2, until exempted: 4.2.2 "
        "published by mallory; and 1 more)"
    )


@pytest.mark.parametrize(
    "hostile",
    [
        "evil\r\nX-Injected: 1",
        "\x1b[31mred\x1b[0m \u202eesrever\u2028next",
        "x" * 10_000,
        "\x00\x7f\x85" * 4000,
    ],
)
def test_hostile_signal_text_stays_one_bounded_ascii_header(hostile: str) -> None:
    # Signal.of cuts a sentence and refuses unknown names; a signal made without it (a
    # module that forgot) must still give a bounded, safe line, and so must a version label.
    unchecked = Signal(f"install-script-added{hostile}", hostile)
    decisions = [
        signalled([unchecked], version=f"4.2.1-{hostile}"),
        signalled([Signal.of("install-script-added", hostile)], version="4.2.2"),
    ]
    text = notices.notice(f"demo{hostile}", decisions, "version")
    assert text is not None
    assert all(32 <= ord(char) < 127 for char in text), text
    assert len(text) <= 4 * notices.ITEM_CHARS + 2 * notices.REASON_CHARS + 200
    for decision in decisions:
        clause = notices.hold_clause(decision)
        assert all(32 <= ord(char) < 127 for char in clause)
        assert len(clause) <= notices.ITEM_CHARS + 80
        refusal = Held.from_decision(decision)
        assert all(32 <= ord(char) < 127 for char in refusal.phrase)
        assert len(refusal.phrase) <= 200
        assert "\n" not in refusal.phrase
        assert "\r" not in refusal.phrase
