"""The policy engine's secondary rules, pinned down: several stored records in every order
(a bad one first must not stop the others), the freeze cutoff to the microsecond, open-ended
freezes, ties between equally specific rules (never decided by list order), which rule or
freeze explains a decision, and the exact sentences and data a person is shown."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from mirror import policy
from mirror.config import QuarantineConfig, QuarantineRule
from mirror.model import RuleKind, RuleRecord
from mirror.policy import Decision, PackagePattern, Subject, Verdict, compile_rules, decide

NOW = datetime(2026, 11, 22, 14, 3, tzinfo=UTC)
AGE = timedelta(days=3)
OLD = NOW - timedelta(days=30)
YOUNG = NOW - timedelta(hours=5)
CONFIG = QuarantineConfig(default=AGE)
CUTOFF = NOW - timedelta(days=10)
MICROSECOND = timedelta(microseconds=1)


def record(
    kind: RuleKind,
    package: str,
    versions: str = "*",
    *,
    rule_id: str,
    ecosystem: str = "npm",
    created_at: datetime = NOW - timedelta(minutes=1),
    expires_at: datetime | None = None,
    **data: Any,
) -> RuleRecord:
    return RuleRecord(
        id=rule_id,
        kind=kind,
        ecosystem=ecosystem,
        package=package,
        versions=versions,
        reason=f"reason of {rule_id}",
        created_at=created_at,
        created_by="security",
        expires_at=expires_at,
        data=data,
    )


def decision_for(
    records: list[RuleRecord],
    package: str = "axios",
    version: str = "1.0.0",
    published: datetime | None = OLD,
    *,
    ecosystem: str = "npm",
    config: QuarantineConfig = CONFIG,
    now: datetime = NOW,
) -> Decision:
    rules = compile_rules(records, config, NOW)
    return decide(Subject(ecosystem, package, version), published, now, rules)


def explained_by(decision: Decision) -> str | None:
    rule = decision.block or decision.exemption or decision.freeze
    return rule.record.id if rule is not None else None


# several stored records, a bad one first, in every order ----------------------------------------

BAD_EXEMPTION = record("exemption", "lodash", ">>>not a range", rule_id="bad-exemption")
BAD_BLOCK = record("block", "axios", ">>>not a range", rule_id="bad-block")
RECORDS = [
    BAD_EXEMPTION,
    BAD_BLOCK,
    record("block", "evil", "1.0.0", rule_id="block-evil"),
    record("exemption", "young", "1.0.0", rule_id="exempt-young"),
    record("freeze", "frozen", "1.x", rule_id="freeze-frozen", published_after=CUTOFF),
]


@pytest.mark.parametrize("records", list(itertools.permutations(RECORDS)), ids=str)
def test_every_stored_record_applies_whatever_comes_before_it(
    records: tuple[RuleRecord, ...],
) -> None:
    # A record that does not parse is reported and the loop goes on: a `break` there would
    # drop every later rule, blocks included.
    rules = compile_rules(list(records), CONFIG, NOW)
    assert len(rules.problems) == 2

    def verdict(package: str, version: str, published: datetime | None) -> tuple[str, str | None]:
        decision = decide(Subject("npm", package, version), published, NOW, rules)
        return decision.verdict, explained_by(decision)

    assert verdict("axios", "9.9.9", OLD) == ("blocked", "bad-block")  # fails closed
    assert verdict("evil", "1.0.0", OLD) == ("blocked", "block-evil")
    assert verdict("evil", "1.0.1", OLD) == ("allowed", None)
    assert verdict("young", "1.0.0", YOUNG) == ("exempted", "exempt-young")
    assert verdict("young", "1.0.1", YOUNG) == ("quarantined", None)
    assert verdict("lodash", "1.0.0", YOUNG) == ("quarantined", None)  # the exemption is dropped
    assert verdict("frozen", "1.2.0", NOW - timedelta(days=5)) == ("quarantined", "freeze-frozen")
    # the freeze keeps its own spec: 2.x is not frozen
    assert verdict("frozen", "2.0.0", NOW - timedelta(days=5)) == ("allowed", None)


def test_problems_say_what_happened_to_each_bad_record() -> None:
    rules = compile_rules([BAD_EXEMPTION, BAD_BLOCK], CONFIG, NOW)
    exemption_problem, block_problem = rules.problems
    assert exemption_problem.startswith(
        "exemption 'bad-exemption' (npm 'lodash' '>>>not a range') is dropped: "
    )
    assert block_problem.startswith(
        "block 'bad-block' (npm 'axios' '>>>not a range') is applied to every version: "
    )


def test_a_freeze_without_a_cutoff_is_reported_by_id() -> None:
    broken = record("freeze", "*", rule_id="f9", published_after="not a time")
    rules = compile_rules([broken], CONFIG, NOW)
    assert rules.problems == ("freeze f9: published_after is missing or not a time",)


def test_a_stored_rule_without_a_package_covers_every_package() -> None:
    decision = decision_for([record("block", "", "*", rule_id="everything")], package="anything")
    assert explained_by(decision) == "everything"


# the freeze cutoff, to the microsecond ----------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "held"),
    [
        (CUTOFF - MICROSECOND, False),
        (CUTOFF, False),  # published at the cutoff: before the freeze, not after it
        (CUTOFF + MICROSECOND, True),
    ],
)
def test_freeze_cutoff_boundary(published: datetime, held: bool) -> None:
    frozen = record("freeze", "*", rule_id="f1", published_after=CUTOFF)
    decision = decision_for([frozen], published=published)
    assert decision.verdict == ("quarantined" if held else "allowed")
    assert explained_by(decision) == ("f1" if held else None)


@pytest.mark.parametrize(
    "cutoff",
    [
        CUTOFF.astimezone(timezone(timedelta(hours=2))),  # an aware time in another zone
        CUTOFF.replace(tzinfo=None),  # naive: UTC
        CUTOFF.isoformat(),
        CUTOFF.replace(tzinfo=None).isoformat(),  # naive text: UTC
        CUTOFF.astimezone(timezone(timedelta(hours=-5))).isoformat(),
    ],
    ids=["aware", "naive", "text", "naive-text", "text-in-another-zone"],
)
def test_freeze_cutoff_is_the_same_moment_however_it_was_stored(cutoff: object) -> None:
    frozen = record("freeze", "*", rule_id="f1", published_after=cutoff)
    assert decision_for([frozen], published=CUTOFF).verdict == "allowed"
    assert decision_for([frozen], published=CUTOFF + MICROSECOND).verdict == "quarantined"


# open-ended freezes, and which freeze explains a decision ---------------------------------------


def test_an_open_ended_freeze_holds_until_it_is_lifted() -> None:
    frozen = record("freeze", "*", rule_id="f1", published_after=CUTOFF)
    published = NOW - timedelta(days=5)
    decision = decision_for([frozen], published=published, now=NOW + timedelta(days=3650))
    assert decision.verdict == "quarantined"
    assert not decision.visible
    assert decision.until is None
    assert decision.detail == (
        "axios@1.0.0 is held by freeze f1 until the freeze is lifted: reason of f1 (published "
        "2026-11-17T14:03Z, after the freeze cutoff 2026-11-12T14:03Z)"
    )


def test_a_dated_freeze_holds_until_it_ends_or_the_version_matures() -> None:
    ends = NOW + timedelta(days=7)
    frozen = record("freeze", "*", rule_id="f1", expires_at=ends, published_after=CUTOFF)
    decision = decision_for([frozen], published=NOW - timedelta(days=5))
    assert (decision.verdict, decision.visible, decision.until) == ("quarantined", False, ends)
    assert decision.detail.startswith(
        "axios@1.0.0 is held by freeze f1 until 2026-11-29T14:03Z: reason of f1 (published "
    )
    # a version younger than its quarantine age is held until it matures, if that is later
    young = decision_for([frozen], published=NOW - timedelta(hours=1), now=NOW)
    assert young.until == ends
    late = record("freeze", "*", rule_id="f1", expires_at=NOW + MICROSECOND, published_after=CUTOFF)
    assert decision_for([late], published=YOUNG).until == YOUNG + AGE


def dated_freeze(rule_id: str, days: int) -> RuleRecord:
    ends = NOW + timedelta(days=days)
    return record("freeze", "*", rule_id=rule_id, expires_at=ends, published_after=CUTOFF)


FREEZES = [dated_freeze("soon", 1), dated_freeze("later", 9)]


@pytest.mark.parametrize("records", list(itertools.permutations(FREEZES)), ids=str)
def test_the_freeze_that_holds_longest_explains_the_decision(
    records: tuple[RuleRecord, ...],
) -> None:
    decision = decision_for(list(records), published=NOW - timedelta(days=5))
    assert explained_by(decision) == "later"
    assert decision.until == NOW + timedelta(days=9)
    open_ended = record("freeze", "*", rule_id="open", published_after=CUTOFF)
    for ordered in itertools.permutations([*records, open_ended]):
        decision = decision_for(list(ordered), published=NOW - timedelta(days=5))
        assert explained_by(decision) == "open"
        assert decision.until is None


# ties between equally specific rules, and which rule explains a decision ------------------------


def tie_records(kind: RuleKind) -> list[RuleRecord]:
    # two globs with the same number of literal characters (6), both matching @evil/pkg
    return [
        record(kind, "@evil/*", rule_id="older", created_at=NOW - timedelta(days=2)),
        record(kind, "*@evil/", "*", rule_id="unused", created_at=NOW - timedelta(days=3)),
        record(kind, "@evi?/p*", rule_id="newer", created_at=NOW - timedelta(days=1)),
    ]


@pytest.mark.parametrize("kind", ["block", "exemption"])
def test_equally_specific_globs_are_decided_by_age_not_list_order(kind: RuleKind) -> None:
    assert (
        PackagePattern("npm", "@evil/*").specificity
        == PackagePattern("npm", "@evi?/p*").specificity
    )
    for ordered in itertools.permutations(tie_records(kind)):
        decision = decision_for(list(ordered), package="@evil/pkg", published=YOUNG)
        assert explained_by(decision) == "older"


@pytest.mark.parametrize("kind", ["block", "exemption"])
def test_the_most_specific_rule_explains_whatever_the_order(kind: RuleKind) -> None:
    # newest first, so that the oldest-wins tie break cannot pick the right one by itself
    records = [
        record(kind, "@evil/pkg", rule_id="exact", created_at=NOW - timedelta(days=1)),
        record(kind, "@evil/pkg*", rule_id="long-glob", created_at=NOW - timedelta(days=2)),
        record(kind, "@evil/*", rule_id="glob", created_at=NOW - timedelta(days=3)),
        record(kind, "*", rule_id="everything", created_at=NOW - timedelta(days=4)),
    ]
    for ordered in itertools.permutations(records):
        decision = decision_for(list(ordered), package="@evil/pkg", published=YOUNG)
        assert explained_by(decision) == "exact"
    without_exact = [entry for entry in records if entry.id != "exact"]
    for ordered in itertools.permutations(without_exact):
        decision = decision_for(list(ordered), package="@evil/pkg", published=YOUNG)
        assert explained_by(decision) == "long-glob"


@pytest.mark.parametrize(
    ("text", "exact", "specificity"),
    [
        ("axios", True, (1, 5)),
        ("@evil/*", False, (0, 6)),
        ("org.example:*", False, (0, 12)),
        ("a?[bc]", False, (0, 4)),
        ("*", False, (0, 0)),
    ],
)
def test_package_pattern_specificity(text: str, exact: bool, specificity: tuple[int, int]) -> None:
    pattern = PackagePattern("npm", text)
    assert pattern.text == text
    assert pattern.exact is exact
    assert pattern.specificity == specificity


def test_quarantine_age_rules_compare_names_in_the_ecosystems_form() -> None:
    config = QuarantineConfig(
        default=AGE,
        rules=(QuarantineRule(ecosystem="pypi", package="Zope_Interface", age=timedelta(0)),),
    )
    rules = compile_rules([], config, NOW)
    assert rules.quarantine_age("pypi", "zope-interface") == timedelta(0)
    decision = decision_for([], "zope.interface", "6.0", NOW, ecosystem="pypi", config=config)
    assert decision.verdict == "allowed"


# whole decisions: every field, for each verdict -------------------------------------------------


def test_whole_decisions_for_each_verdict() -> None:
    subject = Subject("npm", "axios", "1.0.0")
    block = record("block", "axios", "1.0.0", rule_id="b1")
    exemption = record("exemption", "axios", "1.0.0", rule_id="e1")
    frozen = record("freeze", "axios", rule_id="f1", published_after=CUTOFF)

    def decided(records: list[RuleRecord], published: datetime | None) -> Decision:
        return decide(subject, published, NOW, compile_rules(records, CONFIG, NOW))

    blocked = decided([block], YOUNG)
    assert blocked == Decision(
        Verdict.BLOCKED, False, None, AGE, subject, block=blocked.block, published_at=YOUNG
    )
    assert blocked.block is not None
    assert blocked.block.record is block
    exempted = decided([exemption], YOUNG)
    assert exempted == Decision(
        Verdict.EXEMPTED, True, None, AGE, subject, exemption=exempted.exemption, published_at=YOUNG
    )
    assert exempted.exemption is not None
    assert exempted.exemption.record is exemption
    assert decided([], None) == Decision(Verdict.QUARANTINED, False, None, AGE, subject)
    held_by_freeze = decided([frozen], NOW - timedelta(days=5))
    assert held_by_freeze == Decision(
        Verdict.QUARANTINED, False, None, AGE, subject,
        freeze=held_by_freeze.freeze, published_at=NOW - timedelta(days=5),
    )  # fmt: skip
    assert decided([], YOUNG) == Decision(
        Verdict.QUARANTINED, False, YOUNG + AGE, AGE, subject, published_at=YOUNG
    )
    assert decided([], OLD) == Decision(Verdict.ALLOWED, True, None, AGE, subject, published_at=OLD)


# what a person is shown -------------------------------------------------------------------------


def test_sentences_for_each_verdict() -> None:
    block = record("block", "axios", "1.0.0", rule_id="b1")
    exemption = record("exemption", "axios", "1.0.0", rule_id="e1")
    assert decision_for([block]).detail == (
        "axios@1.0.0 is blocked by this mirror: reason of b1 (block b1, added by security at "
        "2026-11-22T14:02Z)"
    )
    assert decision_for([exemption], published=YOUNG).detail == (
        "axios@1.0.0 is exempted from quarantine: reason of e1 (exemption e1, added by security)"
    )
    assert decision_for([], published=None).detail == (
        "axios@1.0.0 has no known publish time, so it is held in quarantine "
        "(quarantine.unknown = quarantine); ask your security team for an exemption"
    )
    allowing = QuarantineConfig(default=AGE, unknown="allow")
    assert decision_for([], published=None, config=allowing).detail == (
        "axios@1.0.0 has no known publish time; this mirror allows such versions"
    )
    assert decision_for([], published=YOUNG + timedelta(seconds=7)).detail == (
        "axios@1.0.0 was published 2026-11-22T09:03:07Z and is in quarantine until "
        "2026-11-25T09:03:07Z (quarantine age 3d); ask your security team for an exemption if "
        "you need it sooner"
    )
    assert decision_for([]).detail == (
        "axios@1.0.0 was published 2026-10-23T14:03Z, longer ago than the quarantine age 3d"
    )


@pytest.mark.parametrize("kind", ["block", "exemption", "freeze"])
def test_describe_names_the_rule_that_decided(kind: RuleKind) -> None:
    decided_by = record(
        kind, "axios", rule_id="r7", expires_at=NOW + timedelta(days=1), published_after=CUTOFF
    )
    decision = decision_for([decided_by], published=NOW - timedelta(days=5))
    described = decision.describe()
    assert described == {
        "verdict": str(decision.verdict),
        "visible": decision.visible,
        "until": policy.iso_seconds(decision.until),
        "published_at": "2026-11-17T14:03:00Z",
        "quarantine_age": "3d",
        "detail": decision.detail,
        "rule": policy.describe_record(decided_by),
        "lapsed_exemption": None,
        "risk": None,
        "signals": [],
    }
    assert described["rule"]["id"] == "r7"


def test_describe_record_is_the_whole_record() -> None:
    stored = record(
        "freeze", "axios", "1.x", rule_id="f1", expires_at=NOW + timedelta(days=1),
        published_after=CUTOFF, note="kept",
    )  # fmt: skip
    assert policy.describe_record(stored) == {
        "id": "f1",
        "kind": "freeze",
        "ecosystem": "npm",
        "package": "axios",
        "versions": "1.x",
        "reason": "reason of f1",
        "created_at": "2026-11-22T14:02:00Z",
        "created_by": "security",
        "expires_at": "2026-11-23T14:03:00Z",
        "published_after": "2026-11-12T14:03:00Z",
        "note": "kept",
    }


# times ------------------------------------------------------------------------------------------


@pytest.fixture
def tokyo_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone set to one far from UTC, so naive times show their zone."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tokyo_local_time")
def test_add_saturating_reads_naive_times_as_utc_whatever_the_local_zone() -> None:
    result = policy.add_saturating(NOW.replace(tzinfo=None), AGE)
    assert result == NOW + AGE
    assert result.tzinfo == UTC


def test_add_saturating_keeps_the_moment_of_an_aware_time() -> None:
    moment = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    result = policy.add_saturating(moment, timedelta(0))
    assert result == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert result.tzinfo == UTC


# validation, at its boundaries ------------------------------------------------------------------


def test_validate_rule_package_boundaries() -> None:
    policy.validate_rule("block", "npm", "a" * 512, "*", "r")
    policy.validate_rule("block", "npm", "a b", "*", "r")  # a space is printable
    for package in ("a" * 513, "a\x1fb"):
        with pytest.raises(policy.InvalidRule) as raised:
            policy.validate_rule("block", "npm", package, "*", "r")
        assert str(raised.value) == "package must be a name or glob of printable characters"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ("block", "npm", " ", "1", "r"),
            "package is required (a name or a glob such as @scope/*)",
        ),
        (("block", "maven", "lib", "1", "r"), "a Maven package is written group:artifact"),
        (("block", "npm", "a", "1.0.0", " "), "a reason is required: say why, for the audit log"),
        (("block", "npm", "a", "", "r"), "a version spec is required (use * for every version)"),
        (("freeze", "npm", "a", ">>>", "r"), None),
    ],
)
def test_validate_rule_messages(
    arguments: tuple[RuleKind, str, str, str, str], message: str | None
) -> None:
    with pytest.raises(policy.InvalidRule) as raised:
        policy.validate_rule(*arguments)
    if message is not None:
        assert str(raised.value) == message


@pytest.mark.parametrize("package", ["org.example:lib", "*", " * ", "org.example.*", "org.*"])
def test_validate_rule_accepts_maven_names_and_globs(package: str) -> None:
    policy.validate_rule("block", "maven", package, "*", "r")


def test_a_freeze_may_leave_its_versions_empty() -> None:
    policy.validate_rule("freeze", "npm", "*", " ", "r")
    policy.validate_rule("freeze", "npm", "*", "*", "r")
