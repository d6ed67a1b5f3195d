"""`policy.partition`, the one loop every document's filter runs, and what turns its hidden
decisions into answers: `policy.earliest_until` (when a view goes stale), `policy.refusal`
(which decision a refusal of them all names), `Held.from_decision` (the 403) and
`Explanation.of` (explain)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror import policy
from mirror.config import QuarantineConfig
from mirror.errors import Blocked, Held, Quarantined
from mirror.model import Explanation, RuleKind, RuleRecord
from mirror.policy import Subject, Verdict

NOW = datetime(2026, 11, 22, 14, 3, tzinfo=UTC)
AGE = timedelta(days=3)
OLD = NOW - timedelta(days=30)
CONFIG = QuarantineConfig(default=AGE)


def record(kind: RuleKind, versions: str, *, rule_id: str = "r1", **data: Any) -> RuleRecord:
    return RuleRecord(
        id=rule_id,
        kind=kind,
        ecosystem="npm",
        package="demo",
        versions=versions,
        reason=f"{kind} for the test",
        created_at=NOW - timedelta(days=1),
        created_by="security",
        expires_at=data.pop("expires_at", None),
        data=data,
    )


def rules(*records: RuleRecord, unknown: str = "quarantine") -> policy.Rules:
    config = dataclasses.replace(CONFIG, unknown=unknown)  # type: ignore[arg-type]
    return policy.compile_rules(list(records), config, NOW)


def entries(
    published: dict[str, datetime | None],
) -> list[tuple[str, Subject, datetime | None]]:
    """(item, subject, publish time) per version; the item is a label distinct from the
    version, so the test sees items, not subjects, come back."""
    return [
        (f"item {version}", Subject("npm", "demo", version), moment)
        for version, moment in published.items()
    ]


def test_versions_are_split_into_visible_and_withheld_in_the_order_given() -> None:
    published = {
        "3.0.0": NOW - timedelta(hours=1),  # quarantined until NOW + 71h
        "1.0.0": OLD,
        "2.0.0": NOW - timedelta(hours=30),  # quarantined until NOW + 42h
        "1.5.0": OLD,  # blocked
        "0.9.0": OLD,
    }
    split = policy.partition(entries(published), NOW, rules(record("block", "1.5.0")))
    assert split.visible == ("item 1.0.0", "item 0.9.0")
    assert [held.version for held in split.withheld] == ["3.0.0", "2.0.0", "1.5.0"]
    assert [held.version for held in split.quarantined] == ["3.0.0", "2.0.0"]
    assert [held.version for held in split.blocked] == ["1.5.0"]
    assert [held.verdict for held in split.withheld] == [
        Verdict.QUARANTINED,
        Verdict.QUARANTINED,
        Verdict.BLOCKED,
    ]
    assert split.until == NOW + timedelta(hours=42)  # the earliest, not the first


def test_a_block_never_sets_until_even_when_it_would_end_first() -> None:
    # 1.0.0 alone would leave quarantine in an hour, but it is blocked: it never leaves.
    published = {"1.0.0": NOW - AGE + timedelta(hours=1), "2.0.0": NOW - timedelta(hours=1)}
    split = policy.partition(entries(published), NOW, rules(record("block", "1.0.0")))
    assert split.until == NOW - timedelta(hours=1) + AGE
    only_blocked = policy.partition(
        entries({"1.0.0": published["1.0.0"]}), NOW, rules(record("block", "1.0.0"))
    )
    assert only_blocked.withheld
    assert only_blocked.until is None


def test_earliest_until_skips_blocked_decisions_whatever_they_carry() -> None:
    """Guard the class, not the example: a blocked decision counts for nothing, even one
    that (by some later change to decide) carried an `until`."""
    split = policy.partition(
        entries({"1.0.0": OLD, "2.0.0": NOW - timedelta(hours=1)}),
        NOW,
        rules(record("block", "1.0.0")),
    )
    blocked, quarantined = split.blocked[0], split.quarantined[0]
    early = dataclasses.replace(blocked, until=NOW + timedelta(minutes=1))
    assert policy.earliest_until([early, quarantined]) == quarantined.until
    assert policy.earliest_until([early]) is None
    assert policy.earliest_until([]) is None


@pytest.mark.parametrize(("unknown", "visible"), [("quarantine", False), ("allow", True)])
def test_an_unknown_publish_time_follows_the_unknown_setting(unknown: str, visible: bool) -> None:
    published = {"1.0.0": None, "2.0.0": NOW - timedelta(hours=1)}
    split = policy.partition(entries(published), NOW, rules(unknown=unknown))
    assert ("item 1.0.0" in split.visible) is visible
    # Held for an unknown time, it leaves by no clock: `until` is the timed one's.
    assert split.until == NOW - timedelta(hours=1) + AGE
    alone = policy.partition(entries({"1.0.0": None}), NOW, rules(unknown=unknown))
    assert alone.until is None
    assert [held.until for held in alone.withheld] == ([] if visible else [None])


def test_exempted_versions_are_visible_and_a_freeze_without_end_sets_no_until() -> None:
    freeze = record(
        "freeze", "*", rule_id="f1", published_after=NOW - timedelta(days=10)
    )  # no expires_at: held until lifted
    exemption = record("exemption", "2.0.0", rule_id="e1")
    published = {"1.0.0": OLD, "2.0.0": NOW - timedelta(days=2), "3.0.0": NOW - timedelta(days=5)}
    split = policy.partition(entries(published), NOW, rules(freeze, exemption))
    assert split.visible == ("item 1.0.0", "item 2.0.0")
    assert [held.version for held in split.withheld] == ["3.0.0"]
    assert split.withheld[0].freeze is not None
    assert split.until is None


def test_an_empty_document_partitions_to_nothing() -> None:
    split = policy.partition(entries({}), NOW, rules())
    assert (split.visible, split.withheld, split.until) == ((), (), None)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=40),
            st.one_of(st.none(), st.integers(min_value=-5 * 24, max_value=24 * 10)),
        ),
        max_size=12,
        unique_by=lambda pair: pair[0],
    ),
    st.sampled_from(["quarantine", "allow"]),
)
def test_partition_is_decide_for_each_entry(
    versions: list[tuple[int, int | None]], unknown: str
) -> None:
    """Whatever the mix: every entry lands on exactly one side, in the order given, with the
    decision `decide` gives it, and `until` is the earliest of the quarantined ones'."""
    compiled = rules(record("block", ">=30.0.0"), record("exemption", "7.0.0"), unknown=unknown)
    published = {
        f"{number}.0.0": None if hours is None else NOW - timedelta(hours=hours)
        for number, hours in versions
    }
    given_entries = entries(published)
    split = policy.partition(given_entries, NOW, compiled)
    decisions = [
        policy.decide(subject, moment, NOW, compiled) for _, subject, moment in given_entries
    ]
    assert split.visible == tuple(
        item
        for (item, _, _), decision in zip(given_entries, decisions, strict=True)
        if decision.visible
    )
    assert split.withheld == tuple(decision for decision in decisions if not decision.visible)
    timed = [d.until for d in decisions if not d.visible and d.block is None and d.until]
    assert split.until == (min(timed) if timed else None)


# refusal -------------------------------------------------------------------------------------


def withheld(published: dict[str, datetime | None], *records: RuleRecord) -> list[policy.Decision]:
    return list(policy.partition(entries(published), NOW, rules(*records)).withheld)


def test_a_refusal_names_the_first_block_over_any_quarantine() -> None:
    hidden = withheld(
        {"1.0.0": NOW - timedelta(hours=70), "2.0.0": OLD, "3.0.0": OLD},
        record("block", "2.0.0 || 3.0.0"),
    )
    refused = policy.refusal(hidden)
    assert refused is not None
    assert refused.version == "2.0.0"


def test_a_refusal_names_the_quarantined_one_that_leaves_first() -> None:
    hidden = withheld(
        {
            "1.0.0": None,  # unknown: no until
            "2.0.0": NOW - timedelta(hours=1),
            "3.0.0": NOW - timedelta(hours=60),
            "4.0.0": NOW - timedelta(hours=60),  # ties with 3.0.0: the first wins
        }
    )
    refused = policy.refusal(hidden)
    assert refused is not None
    assert refused.version == "3.0.0"


def test_a_refusal_with_no_time_names_the_first_and_of_nothing_none() -> None:
    refused = policy.refusal(withheld({"2.0.0": None, "1.0.0": None}))
    assert refused is not None
    assert refused.version == "2.0.0"
    assert policy.refusal([]) is None


# the 403 -------------------------------------------------------------------------------------


def test_a_blocked_decision_becomes_blocked_naming_its_block() -> None:
    (decision,) = withheld({"1.0.0": OLD}, record("block", "1.0.0", rule_id="b7"))
    error = Held.from_decision(decision)
    assert isinstance(error, Blocked)
    assert (error.status, error.reason, error.message) == (403, "blocked", decision.detail)
    assert decision.block is not None
    assert error.block == decision.block.describe()
    assert error.body()["block"]["id"] == "b7"
    assert error.body()["until"] is None


def test_a_quarantined_decision_becomes_quarantined_with_its_until() -> None:
    (decision,) = withheld({"1.0.0": NOW - timedelta(hours=1)})
    error = Held.from_decision(decision, "demo 1.0.0 is in quarantine")
    assert isinstance(error, Quarantined)
    assert (error.status, error.reason) == (403, "quarantined")
    assert error.message == "demo 1.0.0 is in quarantine"  # the caller's sentence, if given
    assert error.until == NOW - timedelta(hours=1) + AGE
    assert error.body()["until"] == (NOW - timedelta(hours=1) + AGE).isoformat()
    assert error.body()["block"] is None


def test_an_unknown_time_becomes_quarantined_without_until() -> None:
    (decision,) = withheld({"1.0.0": None})
    error = Held.from_decision(decision)
    assert isinstance(error, Quarantined)
    assert error.until is None
    assert "no known publish time" in error.message


# explain -------------------------------------------------------------------------------------


def test_an_explanation_carries_the_decision_and_its_rule() -> None:
    (decision,) = withheld({"1.0.0": OLD}, record("block", "1.0.0", rule_id="b7"))
    explanation = Explanation.of(decision, published_at=OLD)
    assert (explanation.ecosystem, explanation.package, explanation.version) == (
        "npm",
        "demo",
        "1.0.0",
    )
    assert (explanation.verdict, explanation.detail) == ("blocked", decision.detail)
    assert explanation.published_at == OLD
    assert explanation.rule is not None
    assert explanation.rule["id"] == "b7"
    assert explanation.files == ()


def test_an_explanation_of_a_plain_quarantine_names_no_rule_and_takes_a_detail() -> None:
    (decision,) = withheld({"1.0.0": NOW - timedelta(hours=1)})
    explanation = Explanation.of(
        decision, published_at=None, detail="held", files=({"filename": "x"},)
    )
    assert (explanation.verdict, explanation.detail, explanation.rule) == (
        "quarantined",
        "held",
        None,
    )
    assert explanation.until == decision.until
    assert explanation.files == ({"filename": "x"},)
