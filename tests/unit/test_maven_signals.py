"""mirror.ecosystems.maven.signals: what a version's signature shows against the version
before it."""

from __future__ import annotations

from datetime import timedelta

from mirror.config import RiskConfig, RiskRule
from mirror.ecosystems.maven import signals
from mirror.ecosystems.maven.signals import UNCHECKED, UNSIGNED, seen_of, signature_signals
from mirror.risk import DEFAULT_RISK, compile_risk

ALPHA = seen_of("0123456789ABCDEF")
BETA = seen_of("FEDCBA9876543210")


def named(found: tuple[signals.Signal, ...]) -> list[tuple[str, str]]:
    return [(signal.name, signal.detail) for signal in found]


def test_a_version_without_asc_after_a_signed_one_is_missing_its_signature() -> None:
    assert named(signature_signals("2.0.1", UNSIGNED, "2.0.0", ALPHA)) == [
        (
            "signature-missing",
            "2.0.1 has no .asc signature; 2.0.0 was signed by key 0123456789ABCDEF",
        )
    ]
    unreadable = seen_of(None)
    assert named(signature_signals("2.0.1", UNSIGNED, "2.0.0", unreadable)) == [
        ("signature-missing", "2.0.1 has no .asc signature; 2.0.0 was signed")
    ]


def test_a_version_signed_by_another_key_changed_its_key() -> None:
    assert named(signature_signals("2.0.1", BETA, "2.0.0", ALPHA)) == [
        (
            "signature-key-changed",
            "2.0.1 is signed by key FEDCBA9876543210; 2.0.0 by key 0123456789ABCDEF",
        )
    ]


def test_no_signal_when_nothing_changed_or_nothing_is_known() -> None:
    assert signature_signals("2.0.1", ALPHA, "2.0.0", ALPHA) == ()
    assert signature_signals("2.0.1", UNSIGNED, "2.0.0", UNSIGNED) == ()  # never signed
    assert signature_signals("2.0.1", ALPHA, "2.0.0", UNSIGNED) == ()  # signing started
    assert signature_signals("2.0.1", seen_of(None), "2.0.0", ALPHA) == ()  # key unreadable
    assert signature_signals("1.0.0", UNSIGNED, None, None) == ()  # the first version
    assert signature_signals("2.0.1", None, "2.0.0", ALPHA) == ()  # not looked up
    assert signature_signals("2.0.1", UNSIGNED, "2.0.0", None) == ()


def test_a_signature_upstream_could_not_give_counts_as_the_signal() -> None:
    assert named(signature_signals("2.0.1", UNCHECKED, "2.0.0", ALPHA)) == [
        (
            "signature-missing",
            "the .asc signature of 2.0.1 could not be checked (upstream failing); "
            "it counts as missing until it can",
        )
    ]
    assert named(signature_signals("2.0.1", UNSIGNED, "2.0.0", UNCHECKED)) == [
        (
            "signature-missing",
            "2.0.1 has no .asc signature; that of 2.0.0 could not be fetched from upstream",
        )
    ]
    assert [s.name for s in signature_signals("2.0.1", ALPHA, "2.0.0", UNCHECKED)] == [
        "signature-key-changed"
    ]


def test_reach_is_the_longest_extension_and_none_for_a_hold() -> None:
    assert signals.reach(DEFAULT_RISK, "org.example:lib") == timedelta(0)
    extend = RiskRule(signal="signature-key-changed", action="extend", age=timedelta(days=30))
    rules = compile_risk(RiskConfig(rules=(extend,)))
    assert signals.reach(rules, "org.example:lib") == timedelta(days=30)
    hold = RiskRule(signal="signature-missing", package="org.example:lib", action="hold")
    rules = compile_risk(RiskConfig(rules=(extend, hold)))
    assert signals.reach(rules, "org.example:lib") is None
    assert signals.reach(rules, "org.other:lib") == timedelta(days=30)
