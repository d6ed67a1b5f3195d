"""Maven version order (ComparableVersion rules) and range matching, as the Maven adapter
relies on them: `<latest>`/`<release>` recomputation and blocks written as Maven ranges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mirror import policy, versions
from mirror.config import QuarantineConfig
from mirror.model import RuleRecord

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

ASCENDING = [
    "1.0-alpha-1",
    "1.0-alpha-2",
    "1.0-beta-1",
    "1.0-milestone-1",
    "1.0-rc-1",
    "1.0-SNAPSHOT",
    "1.0",
    "1.0-sp-1",
    "1.0.1",
    "1.1",
    "1.9",
    "1.10",
    "2.0",
]


def key(version: str) -> object:
    return versions.sort_key("maven", version)


def test_comparable_version_order() -> None:
    shuffled = ASCENDING[1::2] + ASCENDING[::2]
    assert sorted(shuffled, key=key) == ASCENDING


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("1.0-alpha-1", "1.0-beta-1"),
        ("1.0-beta-1", "1.0-rc-1"),
        ("1.0-rc-1", "1.0"),
        ("1.0", "1.0-sp"),
        ("1.9", "1.10"),
        ("1.0", "1.0.1"),
        ("1.0-alpha-9", "1.0-alpha-10"),
    ],
)
def test_pairs(low: str, high: str) -> None:
    assert key(low) < key(high)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("1", "1.0"),
        ("1.0", "1.0.0"),
        ("1.0-ga", "1.0"),
        ("1.0-final", "1.0"),
        ("1.0-a1", "1.0-alpha-1"),
    ],
)
def test_padding_and_aliases_are_equal(left: str, right: str) -> None:
    assert key(left) == key(right)


def _rules(spec: str) -> policy.Rules:
    block = RuleRecord(
        id="b", kind="block", ecosystem="maven", package="org.example:lib", versions=spec,
        reason="test", created_at=NOW, created_by="test",
    )  # fmt: skip
    return policy.compile_rules([block], QuarantineConfig(default=timedelta(0)), NOW)


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("[1.0,2.0)", ["1.0", "1.5", "1.99", "2.0-rc-1"], ["0.9", "2.0", "2.1"]),
        ("[1.5]", ["1.5", "1.5.0"], ["1.4", "1.6"]),
        ("(,1.0]", ["0.1", "1.0"], ["1.0.1"]),
        ("[1.2,)", ["1.2", "9.0"], ["1.1"]),
    ],
)
def test_block_ranges_match_in_maven_syntax(
    spec: str, inside: list[str], outside: list[str]
) -> None:
    rules = _rules(spec)
    old = NOW - timedelta(days=100)
    for version in inside:
        decision = policy.decide(
            policy.Subject("maven", "org.example:lib", version), old, NOW, rules
        )
        assert decision.verdict == "blocked", (spec, version)
    for version in outside:
        decision = policy.decide(
            policy.Subject("maven", "org.example:lib", version), old, NOW, rules
        )
        assert decision.visible, (spec, version)
