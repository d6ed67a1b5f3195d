"""The policy engine with a fixed `now`: precedence block > exemption > quarantine/freeze >
allow, rule expiry by the clock alone, per-package ages, and fail-closed handling of bad
stored rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from mirror import policy
from mirror.config import QuarantineConfig, QuarantineRule
from mirror.model import RuleKind, RuleRecord
from mirror.policy import InvalidRule, Subject, Verdict, compile_rules, decide

NOW = datetime(2026, 11, 22, 14, 3, tzinfo=UTC)
AGE = timedelta(days=3)
OLD = NOW - timedelta(days=30)
YOUNG = NOW - timedelta(hours=5)
CONFIG = QuarantineConfig(default=AGE)


def rule(
    kind: RuleKind,
    package: str,
    versions: str = "*",
    *,
    ecosystem: str = "npm",
    rule_id: str = "r1",
    expires_at: datetime | None = None,
    created_at: datetime = NOW - timedelta(minutes=1),
    **data: Any,
) -> RuleRecord:
    return RuleRecord(
        id=rule_id,
        kind=kind,
        ecosystem=ecosystem,
        package=package,
        versions=versions,
        reason=f"{kind} for the test",
        created_at=created_at,
        created_by="security",
        expires_at=expires_at,
        data=data,
    )


def verdict(
    *records: RuleRecord,
    subject: Subject | None = None,
    published: datetime | None = OLD,
    now: datetime = NOW,
    config: QuarantineConfig = CONFIG,
) -> policy.Decision:
    rules = compile_rules(list(records), config, NOW)
    return decide(subject or Subject("npm", "axios", "1.14.1"), published, now, rules)


# precedence ------------------------------------------------------------------------------------


def test_old_version_without_rules_is_allowed() -> None:
    decision = verdict()
    assert decision.verdict == Verdict.ALLOWED
    assert decision.visible
    assert decision.until is None
    assert "axios@1.14.1" in decision.detail


def test_young_version_is_quarantined_until_it_matures() -> None:
    decision = verdict(published=YOUNG)
    assert decision.verdict == "quarantined"
    assert not decision.visible
    assert decision.until == YOUNG + AGE
    assert "in quarantine until 2026-11-25T09:03Z" in decision.detail
    assert "quarantine age 3d" in decision.detail


def test_quarantine_ends_exactly_at_the_boundary() -> None:
    published = NOW - AGE
    assert verdict(published=published).verdict == "allowed"
    assert verdict(published=published + timedelta(seconds=1)).verdict == "quarantined"


def test_block_wins_over_everything() -> None:
    block = rule("block", "axios", "1.14.1", rule_id="b1")
    exemption = rule("exemption", "axios", "1.14.1", rule_id="e1")
    for published in (OLD, YOUNG, None):
        decision = verdict(block, exemption, published=published)
        assert decision.verdict == "blocked"
        assert not decision.visible
        assert decision.block is not None
        assert decision.block.describe()["id"] == "b1"
        assert "axios@1.14.1 is blocked by this mirror: block for the test" in decision.detail


def test_exemption_lets_a_quarantined_version_through() -> None:
    exemption = rule("exemption", "axios", "1.14.1", expires_at=NOW + timedelta(days=1))
    decision = verdict(exemption, published=YOUNG)
    assert decision.verdict == "exempted"
    assert decision.visible
    assert decision.exemption is not None
    assert "until 2026-11-23T14:03Z" in decision.detail


def test_exemption_stops_at_its_expiry_by_the_clock_alone() -> None:
    expiry = NOW + timedelta(hours=1)
    exemption = rule("exemption", "axios", "1.14.1", expires_at=expiry)
    assert verdict(exemption, published=YOUNG).verdict == "exempted"
    later = verdict(exemption, published=YOUNG, now=expiry)
    assert later.verdict == "quarantined"
    assert later.until == YOUNG + AGE


def test_expired_block_stops_applying() -> None:
    block = rule("block", "axios", "*", expires_at=NOW + timedelta(hours=1))
    assert verdict(block).verdict == "blocked"
    assert verdict(block, now=NOW + timedelta(hours=1)).verdict == "allowed"


def test_exemption_for_another_version_does_not_apply() -> None:
    exemption = rule("exemption", "axios", "1.14.0")
    assert verdict(exemption, published=YOUNG).verdict == "quarantined"


def test_unknown_publish_time_is_quarantined_unless_allowed() -> None:
    held = verdict(published=None)
    assert held.verdict == "quarantined"
    assert held.until is None
    assert "no known publish time" in held.detail
    allowing = QuarantineConfig(default=AGE, unknown="allow")
    assert verdict(published=None, config=allowing).verdict == "allowed"


# blocks: specs and names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ecosystem", "package", "spec", "subject_package", "version", "blocked"),
    [
        ("npm", "axios", "1.14.1", "axios", "1.14.1", True),
        ("npm", "axios", "1.14.1", "axios", "1.14.0", False),
        ("npm", "axios", "^1.14.0", "axios", "1.15.2", True),
        ("npm", "@evilscope/*", "*", "@evilscope/thing", "0.0.1", True),
        ("npm", "@evilscope/*", "*", "@goodscope/thing", "0.0.1", False),
        ("npm", "axios", "*", "axios-extra", "1.0.0", False),
        ("pypi", "Requests", ">=2.99", "requests", "3.0", True),
        ("pypi", "requests", ">=2.99", "requests", "2.31.0", False),
        ("pypi", "zope.interface", "*", "zope-interface", "6.0", True),
        ("maven", "org.example:lib", "[1.0,1.2)", "org.example:lib", "1.1.5", True),
        ("maven", "org.example:lib", "[1.0,1.2)", "org.example:lib", "1.2", False),
        ("maven", "org.example:*", "*", "org.example:other", "9", True),
    ],
)
def test_block_matching(
    ecosystem: str, package: str, spec: str, subject_package: str, version: str, blocked: bool
) -> None:
    block = rule("block", package, spec, ecosystem=ecosystem)
    decision = verdict(block, subject=Subject(ecosystem, subject_package, version))
    assert (decision.verdict == "blocked") is blocked


def test_block_of_another_ecosystem_does_not_apply() -> None:
    block = rule("block", "axios", "*", ecosystem="pypi")
    assert verdict(block).verdict == "allowed"


def test_stored_block_with_a_bad_spec_fails_closed() -> None:
    block = rule("block", "axios", ">>>not a range")
    rules = compile_rules([block], CONFIG, NOW)
    assert rules.problems
    assert "r1" in rules.problems[0]
    for version in ("1.0.0", "9.9.9"):
        decision = decide(Subject("npm", "axios", version), OLD, NOW, rules)
        assert decision.verdict == "blocked"


def test_stored_exemption_with_a_bad_spec_is_dropped() -> None:
    exemption = rule("exemption", "axios", ">>>not a range")
    rules = compile_rules([exemption], CONFIG, NOW)
    assert rules.problems
    assert decide(Subject("npm", "axios", "1.0.0"), YOUNG, NOW, rules).verdict == "quarantined"


def test_most_specific_block_explains_the_decision() -> None:
    broad = rule("block", "@evil/*", "*", rule_id="broad")
    exact = rule("block", "@evil/pkg", "1.0.0", rule_id="exact")
    decision = verdict(broad, exact, subject=Subject("npm", "@evil/pkg", "1.0.0"))
    assert decision.block is not None
    assert decision.block.describe()["id"] == "exact"


# hostile publish times: held, never an exception ---------------------------------------------

END = datetime.max.replace(tzinfo=UTC)
START = datetime.min.replace(tzinfo=UTC)
FAR_OFFSET = timezone(timedelta(hours=-23, minutes=-59))
NEAR_OFFSET = timezone(timedelta(hours=23, minutes=59))


@pytest.mark.parametrize(
    ("moment", "delta", "expected"),
    [
        (NOW, AGE, NOW + AGE),
        (datetime(9999, 12, 31, tzinfo=UTC), AGE, END),
        (END, timedelta(microseconds=1), END),
        (START, -AGE, START),
        (START + timedelta(days=1), -AGE, START),
        (datetime.max.replace(tzinfo=FAR_OFFSET), timedelta(0), END),  # past the end in UTC
        (datetime.min.replace(tzinfo=NEAR_OFFSET), timedelta(0), START),  # before the start
        (datetime.max.replace(tzinfo=FAR_OFFSET), -AGE, END - AGE),
        (NOW.replace(tzinfo=None), AGE, NOW + AGE),  # naive: UTC
    ],
)
def test_add_saturating_clamps_instead_of_overflowing(
    moment: datetime, delta: timedelta, expected: datetime
) -> None:
    assert policy.add_saturating(moment, delta) == expected


@pytest.mark.parametrize(
    "published",
    [
        datetime(9999, 12, 31, tzinfo=UTC),
        END,
        datetime.max.replace(tzinfo=FAR_OFFSET),
        NOW + timedelta(days=1),  # "in the future": held until published + age
    ],
)
def test_a_version_published_in_the_future_is_held_until_it_matures(published: datetime) -> None:
    decision = verdict(published=published)
    assert decision.verdict == "quarantined"
    assert not decision.visible
    assert decision.until == policy.add_saturating(published, AGE)
    assert "in quarantine until" in decision.detail
    assert decision.describe()["until"] is not None
    frozen = verdict(freeze(), published=published)
    assert frozen.verdict == "quarantined"
    assert frozen.until is not None
    assert frozen.until >= policy.add_saturating(published, AGE)
    assert frozen.detail


def test_a_version_published_at_the_start_of_time_is_old() -> None:
    for published in (START, datetime.min.replace(tzinfo=NEAR_OFFSET)):
        decision = verdict(published=published)
        assert decision.verdict == "allowed"
        assert decision.detail
        assert decision.describe()["published_at"] is not None


def test_the_largest_quarantine_age_saturates_too() -> None:
    config = QuarantineConfig(default=timedelta.max)
    decision = verdict(published=OLD, config=config)
    assert decision.verdict == "quarantined"
    assert decision.until == END


# freezes ---------------------------------------------------------------------------------------


def freeze(package: str = "*", **overrides: Any) -> RuleRecord:
    options: dict[str, Any] = {
        "expires_at": NOW + timedelta(days=7),
        "published_after": NOW - timedelta(days=10),
    }
    options.update(overrides)
    return rule("freeze", package, "*", rule_id="f1", **options)


def test_freeze_hides_a_version_older_than_the_age_but_newer_than_the_cutoff() -> None:
    published = NOW - timedelta(days=5)  # past the 3-day quarantine, after the cutoff
    assert verdict(published=published).verdict == "allowed"
    decision = verdict(freeze(), published=published)
    assert decision.verdict == "quarantined"
    assert decision.freeze is not None
    assert decision.until == NOW + timedelta(days=7)
    assert "after the freeze cutoff 2026-11-12T14:03Z" in decision.detail


def test_freeze_leaves_versions_before_the_cutoff_alone() -> None:
    assert verdict(freeze(), published=NOW - timedelta(days=11)).verdict == "allowed"


def test_freeze_ends_by_the_clock() -> None:
    published = NOW - timedelta(days=5)
    assert verdict(freeze(), published=published, now=NOW + timedelta(days=7)).visible


def test_freeze_is_scoped_to_its_package_glob() -> None:
    scoped = freeze("@ourcorp/*")
    published = NOW - timedelta(days=5)
    assert verdict(scoped, published=published).verdict == "allowed"
    inside = verdict(scoped, subject=Subject("npm", "@ourcorp/ui", "1.0.0"), published=published)
    assert inside.verdict == "quarantined"


def test_freeze_accepts_iso_text_and_an_exemption_lets_a_version_through() -> None:
    text_freeze = freeze(published_after="2026-11-12T14:03:00Z")
    published = NOW - timedelta(days=5)
    assert verdict(text_freeze, published=published).verdict == "quarantined"
    exemption = rule("exemption", "axios", "1.14.1", rule_id="e1")
    assert verdict(text_freeze, exemption, published=published).verdict == "exempted"


def test_freeze_without_a_cutoff_uses_its_creation_time() -> None:
    broken = rule("freeze", "*", "*", rule_id="f2", expires_at=NOW + timedelta(days=1))
    rules = compile_rules([broken], CONFIG, NOW)
    assert rules.problems
    just_before = NOW - timedelta(minutes=2)
    assert decide(Subject("npm", "a", "1.0.0"), just_before, NOW, rules).verdict == "quarantined"
    assert decide(Subject("npm", "a", "1.0.0"), OLD, NOW, rules).verdict == "allowed"


# ages ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["as-written", "reversed"])
def test_of_equally_specific_quarantine_rules_the_longest_age_wins(reverse: bool) -> None:
    # `left*` and `*-pad` have four literal characters each: the order they are written in
    # must not decide, and the longer hold is the one that fails closed.
    written = [
        QuarantineRule(ecosystem="npm", package="left*", age=timedelta(days=1)),
        QuarantineRule(ecosystem="npm", package="*-pad", age=timedelta(days=5)),
        QuarantineRule(ecosystem="npm", package="is-odd", age=timedelta(hours=1)),
        QuarantineRule(ecosystem="npm", package="is-odd", age=timedelta(hours=6)),
    ]
    config = QuarantineConfig(default=AGE, rules=tuple(reversed(written) if reverse else written))
    rules = compile_rules([], config, NOW)
    assert rules.quarantine_age("npm", "left-pad") == timedelta(days=5)
    assert rules.quarantine_age("npm", "left-align") == timedelta(days=1)
    assert rules.quarantine_age("npm", "is-odd") == timedelta(hours=6)


def test_quarantine_age_most_specific_rule_wins() -> None:
    config = QuarantineConfig(
        default=AGE,
        per_ecosystem={"pypi": timedelta(days=7)},
        rules=(
            QuarantineRule(ecosystem="npm", package="@ourcorp/*", age=timedelta(0)),
            QuarantineRule(ecosystem="npm", package="@ourcorp/risky", age=timedelta(days=1)),
            QuarantineRule(ecosystem="npm", package="*", age=timedelta(days=2)),
        ),
    )
    rules = compile_rules([], config, NOW)
    assert rules.quarantine_age("npm", "@ourcorp/ui") == timedelta(0)
    assert rules.quarantine_age("npm", "@ourcorp/risky") == timedelta(days=1)
    assert rules.quarantine_age("npm", "left-pad") == timedelta(days=2)
    assert rules.quarantine_age("pypi", "requests") == timedelta(days=7)
    assert rules.quarantine_age("maven", "org.example:lib") == AGE
    own = decide(Subject("npm", "@ourcorp/ui", "1.0.0"), NOW, NOW, rules)
    assert own.verdict == "allowed"


def test_next_expiry_is_the_earliest_future_expiry() -> None:
    soon = NOW + timedelta(hours=1)
    records = [
        rule("exemption", "a", rule_id="e1", expires_at=soon),
        rule("block", "b", rule_id="b1", expires_at=NOW + timedelta(days=1)),
        rule("exemption", "c", rule_id="e2", expires_at=NOW - timedelta(days=1)),
        rule("block", "d", rule_id="b2"),
    ]
    rules = compile_rules(records, CONFIG, NOW)
    assert rules.next_expiry(NOW) == soon
    assert rules.next_expiry(soon) == NOW + timedelta(days=1)
    assert rules.next_expiry(NOW + timedelta(days=2)) is None


# validation, descriptions, purity -----------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "field", "message"),
    [
        (("block", "cargo", "serde", "1.0", "r"), "ecosystem", "unknown ecosystem"),
        (("block", "npm", " ", "1.0.0", "r"), "package", "package is required"),
        (("block", "npm", "a\x00b", "1.0.0", "r"), "package", "printable"),
        (("block", "maven", "just-artifact", "1.0", "r"), "package", "group:artifact"),
        (("block", "npm", "axios", "1.14.1", "  "), "reason", "a reason is required"),
        (("block", "npm", "axios", ">>>", "r"), "versions", "not an npm version range"),
        (("exemption", "pypi", "requests", ">=>1", "r"), "versions", "PEP 440"),
        (("block", "maven", "g:a", "[1.0", "r"), "versions", "not a Maven version or range"),
    ],
)
def test_validate_rule_names_the_field(
    arguments: tuple[RuleKind, str, str, str, str], field: str, message: str
) -> None:
    with pytest.raises(InvalidRule, match=message) as raised:
        policy.validate_rule(*arguments)
    assert raised.value.field == field


def test_validate_rule_accepts_good_rules() -> None:
    policy.validate_rule("block", "npm", "@evilscope/*", "*", "worm")
    policy.validate_rule("block", "maven", "org.example:lib", "[1.0,1.2)", "cve")
    policy.validate_rule("freeze", "npm", "*", "", "outbreak")


def test_decision_describe_is_json_ready() -> None:
    block = rule("block", "axios", "1.14.1", rule_id="b1")
    described = verdict(block).describe()
    assert described["verdict"] == "blocked"
    assert described["rule"]["id"] == "b1"
    assert described["rule"]["created_at"] == "2026-11-22T14:02:00Z"
    assert described["quarantine_age"] == "3d"


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(0), "0"),
        (timedelta(days=3), "3d"),
        (timedelta(hours=72), "3d"),
        (timedelta(minutes=90), "90m"),
        (timedelta(hours=5), "5h"),
        (timedelta(seconds=61), "61s"),
    ],
)
def test_format_age(age: timedelta, text: str) -> None:
    assert policy.format_age(age) == text


def test_pypi_subject_label_names_the_file() -> None:
    subject = Subject("pypi", "demo", "1.0", filename="demo-1.0-py3-none-any.whl")
    decision = verdict(subject=subject, published=YOUNG)
    assert decision.detail.startswith("demo-1.0-py3-none-any.whl (demo 1.0) was published")


def test_decisions_depend_only_on_their_arguments() -> None:
    rules = compile_rules([], CONFIG, NOW)
    subject = Subject("npm", "axios", "1.14.1")
    first = decide(subject, YOUNG, NOW, rules)
    again = decide(subject, YOUNG, NOW, rules)
    later = decide(subject, YOUNG, YOUNG + AGE, rules)
    assert first == again
    assert first.verdict == "quarantined"
    assert later.verdict == "allowed"
