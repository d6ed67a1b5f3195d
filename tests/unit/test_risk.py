"""Risk signals as inputs to the pure policy: what each action does, how rules are chosen, and
that precedence stays block > exemption > (freeze, risk, quarantine) > allow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mirror import errors, notices, policy
from mirror.config import ConfigError, QuarantineConfig, RiskConfig, RiskRule, load_config
from mirror.model import RuleRecord
from mirror.risk import Signal

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SCRIPT = Signal.of("install-script-added", "postinstall script added in 4.2.1; 4.2.0 had none")
PUBLISHER = Signal.of("new-publisher", "published by mallory; earlier versions by alice")
SUBJECT = policy.Subject("npm", "left-pad", "4.2.1")


def rules(*records: RuleRecord, risk: RiskConfig | None = None) -> policy.Rules:
    return policy.compile_rules(records, QuarantineConfig(default=timedelta(days=3)), NOW, risk)


def rule(kind: str, versions: str = "*") -> RuleRecord:
    return RuleRecord(
        id=f"{kind[0]}-1",
        kind=kind,  # type: ignore[arg-type]
        ecosystem="npm",
        package="left-pad",
        versions=versions,
        reason="reviewed",
        created_at=NOW - timedelta(days=1),
        created_by="sec",
        data={"published_after": NOW - timedelta(days=30)} if kind == "freeze" else {},
    )


def test_an_added_install_script_extends_quarantine_to_two_weeks_by_default() -> None:
    published = NOW - timedelta(days=5)
    decision = policy.decide(SUBJECT, published, NOW, rules(), [SCRIPT])
    assert not decision.visible
    assert decision.until == published + timedelta(days=14)
    assert decision.risk is not None
    assert decision.risk.action == "extend"
    assert decision.detail.startswith(
        "left-pad@4.2.1 is held until 2026-12-10T12:00Z: postinstall script added in 4.2.1; "
        "4.2.0 had none (risk signal install-script-added: quarantine extended to 14d)"
    )
    without = policy.decide(SUBJECT, published, NOW, rules())
    assert without.visible  # the same version without the signal left quarantine


def test_after_the_extension_the_version_is_offered_and_the_signal_still_said() -> None:
    decision = policy.decide(SUBJECT, NOW - timedelta(days=15), NOW, rules(), [SCRIPT])
    assert decision.visible
    assert "risk signal install-script-added: postinstall script added" in decision.detail


def test_a_noted_signal_only_reports() -> None:
    decision = policy.decide(SUBJECT, NOW - timedelta(days=4), NOW, rules(), [PUBLISHER])
    assert decision.visible
    assert decision.risk is None
    assert [verdict.action for verdict in decision.signals] == ["note"]
    assert "published by mallory" in decision.detail
    assert decision.describe()["signals"][0]["signal"] == "new-publisher"


def test_hold_lasts_until_an_exemption_and_a_block_still_wins() -> None:
    holding = RiskConfig(rules=(RiskRule(signal="new-publisher", action="hold"),))
    old = NOW - timedelta(days=400)
    held = policy.decide(SUBJECT, old, NOW, rules(risk=holding), [PUBLISHER])
    assert not held.visible
    assert held.until is None
    assert "held until an admin exempts it" in held.detail
    exempted = policy.decide(SUBJECT, old, NOW, rules(rule("exemption"), risk=holding), [PUBLISHER])
    assert exempted.visible
    assert exempted.verdict == policy.Verdict.EXEMPTED
    blocked = policy.decide(
        SUBJECT, old, NOW, rules(rule("block"), rule("exemption"), risk=holding), [PUBLISHER]
    )
    assert blocked.verdict == policy.Verdict.BLOCKED
    refusal = errors.Held.from_decision(held)
    assert refusal.status == 403
    assert refusal.data["signals"][0]["action"] == "hold"


def test_the_longest_hold_names_the_decision() -> None:
    published = NOW - timedelta(days=1)
    # Quarantine (3d) is shorter than the extension (14d): the signal names it.
    assert policy.decide(SUBJECT, published, NOW, rules(), [SCRIPT]).risk is not None
    # A freeze without an end outlasts the extension: the freeze names it, the signal is listed.
    frozen = policy.decide(SUBJECT, published, NOW, rules(rule("freeze")), [SCRIPT])
    assert frozen.freeze is not None
    assert frozen.risk is None
    assert [verdict.signal.name for verdict in frozen.signals] == ["install-script-added"]


def test_the_most_specific_rule_wins_and_settings_beat_defaults() -> None:
    config = RiskConfig(
        rules=(
            RiskRule(signal="install-script-added", action="note"),
            RiskRule(signal="install-script-added", package="left-*", action="hold"),
            RiskRule(
                signal="install-script-added", package="left-pad", action="extend",
                age=timedelta(days=30),
            ),
        )
    )  # fmt: skip
    compiled = rules(risk=config)
    assert compiled.risk.verdict("npm", "left-pad", SCRIPT).age == timedelta(days=30)
    assert compiled.risk.verdict("npm", "left-right", SCRIPT).action == "hold"
    assert compiled.risk.verdict("npm", "other", SCRIPT).action == "note"  # settings over default
    assert rules().risk.verdict("npm", "other", SCRIPT).action == "extend"
    assert rules().risk.verdict("pypi", "other", SCRIPT).action == "note"  # not a PyPI signal


def test_the_partition_passes_each_subject_its_signals() -> None:
    split = policy.partition(
        [
            ("4.2.0", policy.Subject("npm", "left-pad", "4.2.0"), NOW - timedelta(days=10)),
            ("4.2.1", SUBJECT, NOW - timedelta(days=10)),
        ],
        NOW,
        rules(),
        lambda subject: [SCRIPT] if subject.version == "4.2.1" else [],
    )
    assert split.visible == ("4.2.0",)
    assert split.until == NOW + timedelta(days=4)
    line = notices.notice("left-pad", split.withheld, "version")
    assert line is not None
    assert "held for risk signal install-script-added" in line
    assert (
        "(4.2.1, until 2026-12-05T12:00Z: postinstall script added in 4.2.1; 4.2.0 had none)"
    ) in line
    assert notices.hold_clause(split.withheld[0]).startswith(
        "held for risk signal install-script-added until 2026-12-05T"
    )


def test_risk_rules_are_read_from_settings_and_checked(tmp_path) -> None:
    path = tmp_path / "mirror.toml"
    path.write_text(
        '[[risk.rules]]\nsignal = "new-publisher"\npackage = "@ourcorp/*"\naction = "hold"\n'
        '[[risk.rules]]\nsignal = "major-jump"\necosystem = "npm"\naction = "extend"\n'
        'age = "30d"\n'
    )
    config = load_config(path, {})
    assert [rule.action for rule in config.risk.rules] == ["hold", "extend"]
    assert config.risk.rules[1].age == timedelta(days=30)
    for bad, message in (
        ('signal = "nope"\naction = "note"', "risk.rules[0].signal"),
        ('signal = "major-jump"\necosystem = "pypi"\naction = "note"', "risk.rules[0].ecosystem"),
        ('signal = "major-jump"\naction = "extend"', "risk.rules[0].age: required"),
        ('signal = "major-jump"\naction = "note"\nage = "3d"', "only an"),
        ('signal = "major-jump"\naction = "block"', "risk.rules[0].action"),
    ):
        path.write_text(f"[[risk.rules]]\n{bad}\n")
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_config(path, {})
