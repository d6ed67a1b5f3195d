"""Rules with an exact spec (`===V`) decide only the version spelled V: an exemption of Maven
`1.0` leaves `1.0.0`, `1-ga` and `1.0.0.0` in quarantine, a block of PyPI `===1.0` leaves
`1.0+local` to the other rules, in every ecosystem."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mirror.config import QuarantineConfig
from mirror.model import RuleKind, RuleRecord
from mirror.policy import InvalidRule, Subject, compile_rules, decide, validate_rule

NOW = datetime(2026, 11, 22, 14, 3, tzinfo=UTC)
YOUNG = NOW - timedelta(hours=5)
OLD = NOW - timedelta(days=30)
CONFIG = QuarantineConfig(default=timedelta(days=3))

PACKAGES = {"npm": "left-pad", "pypi": "demo", "maven": "org.example:lib"}
# (ecosystem, the exact version, versions its ecosystem counts as equal to it)
NEIGHBOURS = [
    ("maven", "1.0", ["1.0.0", "1", "1-ga", "1.0.final", "1.0.0.0"]),
    ("pypi", "1.0", ["1.0+evil", "1.0.0", "1.0.0+x"]),
    ("npm", "1.0.0", ["1.0.0+evil"]),
]


def rule(kind: RuleKind, ecosystem: str, spec: str) -> RuleRecord:
    return RuleRecord(
        id=f"{kind}-1",
        kind=kind,
        ecosystem=ecosystem,
        package=PACKAGES[ecosystem],
        versions=spec,
        reason="reviewed",
        created_at=NOW - timedelta(minutes=1),
        created_by="alice",
        expires_at=None,
        data={},
    )


def verdict(record: RuleRecord, version: str, published: datetime) -> str:
    rules = compile_rules([record], CONFIG, NOW)
    subject = Subject(record.ecosystem, record.package or "", version)
    return decide(subject, published, NOW, rules).verdict


@pytest.mark.parametrize(("ecosystem", "version", "equals"), NEIGHBOURS)
def test_an_exact_exemption_lets_through_only_its_version(
    ecosystem: str, version: str, equals: list[str]
) -> None:
    exemption = rule("exemption", ecosystem, f"==={version}")
    assert verdict(exemption, version, YOUNG) == "exempted"
    for other in equals:
        assert verdict(exemption, other, YOUNG) == "quarantined", other
    # The plain spelling, by contrast, exempts them all.
    plain = rule("exemption", ecosystem, version)
    assert all(verdict(plain, other, YOUNG) == "exempted" for other in equals)


@pytest.mark.parametrize(("ecosystem", "version", "equals"), NEIGHBOURS)
def test_an_exact_block_blocks_only_its_version(
    ecosystem: str, version: str, equals: list[str]
) -> None:
    block = rule("block", ecosystem, f"==={version}")
    assert verdict(block, version, OLD) == "blocked"
    for other in equals:
        assert verdict(block, other, OLD) == "allowed", other


@pytest.mark.parametrize("ecosystem", ["npm", "pypi", "maven"])
def test_exact_rules_are_valid_in_every_ecosystem(ecosystem: str) -> None:
    validate_rule("exemption", ecosystem, PACKAGES[ecosystem], "===1.0.0", "reviewed")
    with pytest.raises(InvalidRule, match="==="):
        validate_rule("block", ecosystem, PACKAGES[ecosystem], "===1.0 2.0", "reviewed")
