"""Risk signals and what the settings do with them, pure.

A signal is something a version does differently from its package's own earlier releases (an
install script appearing, provenance or a signature missing, a new publisher …: the names are
`model.RISK_SIGNALS`). Each ecosystem's document module computes them from the metadata the
mirror fetches anyway (`ecosystems/<eco>/signals.py`); they are inputs to `policy.decide`,
never stored. What a signal does is the risk rule that matches it (`RiskRules.action`):
`note` (only reported: explain, the notice), `extend` (held until the publish time plus the
rule's age, when that ends after its quarantine) or `hold` (hidden until an admin exempts
it). The most specific rule for the package wins (an exact name over a glob, a longer glob
over a shorter one); among equally specific ones a rule of the settings over a built-in one,
then the strongest action (hold, then the longest extension): the order of the settings never
decides. A signal no rule names is noted.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from mirror import versions
from mirror.clock import format_age
from mirror.config import RiskConfig, RiskRule
from mirror.model import RISK_SIGNALS, RiskAction

GLOB_CHARACTERS: Final = frozenset("*?[")
# A signal's sentence is bounded (it is upstream-derived text: a publisher's name, a script).
DETAIL_CHARS: Final = 200
_ACTION_STRENGTH: Final[Mapping[RiskAction, int]] = {"note": 0, "extend": 1, "hold": 2}
# A version is compared with its package's established releases: those published at least
# this long before it (the newest of them is its baseline; a package's first release is the
# baseline when none is that old). Not the release just before it: an attacker would publish a
# decoy first (a postinstall, no provenance, their own account; held by the signal) and the
# payload a minute later, which would then look like its predecessor. Longer than the default
# 14-day extension, so a decoy held by a signal is never the baseline of a release published
# while it is held.
BASELINE_AGE: Final = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Signal:
    """One signal of one version: its `name` (a key of `model.RISK_SIGNALS`) and a sentence
    saying what changed against which earlier release, e.g. `postinstall script added in
    4.2.1; 4.2.0 had none`."""

    name: str
    detail: str

    @staticmethod
    def of(name: str, detail: str) -> Signal:
        """A signal with its sentence cut to DETAIL_CHARS (refuses unknown names: a typo in
        an ecosystem's signal module must fail its tests, not be noted silently)."""
        if name not in RISK_SIGNALS:
            raise ValueError(f"unknown risk signal {name!r}")
        if len(detail) > DETAIL_CHARS:
            detail = detail[: DETAIL_CHARS - 3] + "..."
        return Signal(name, detail)


@dataclass(frozen=True, slots=True)
class RiskVerdict:
    """What one signal does to one version: the rule's `action`, its `age` (for `extend`)
    and whether the rule is a built-in default (`default`) or from the settings."""

    signal: Signal
    action: RiskAction
    age: timedelta
    default: bool

    def describe(self) -> dict[str, object]:
        """As explain and the 403 body show it."""
        return {
            "signal": self.signal.name,
            "detail": self.signal.detail,
            "action": self.action,
            "age": format_age(self.age) if self.action == "extend" else None,
            "rule": "default" if self.default else "settings",
        }

    @property
    def strength(self) -> tuple[int, timedelta]:
        """Hold over extend, a longer extension over a shorter one, over a note."""
        return (_ACTION_STRENGTH[self.action], self.age)


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: RiskRule
    pattern: str  # the package glob in the ecosystem's canonical form
    exact: bool
    literal_length: int
    default: bool

    def rank(self) -> tuple[int, int, int, int, timedelta]:
        strength = _ACTION_STRENGTH[self.rule.action]
        settings = int(not self.default)
        return (int(self.exact), self.literal_length, settings, strength, self.rule.age)


@dataclass(frozen=True, slots=True)
class RiskRules:
    """The risk rules compiled for look-ups by (ecosystem, signal). Immutable."""

    by_signal: Mapping[tuple[str, str], tuple[_CompiledRule, ...]]

    def verdict(self, ecosystem: str, package: str, signal: Signal) -> RiskVerdict:
        """What `signal` does to a version of `package` (canonical name): the best-ranked
        matching rule's action, or a note when none matches."""
        best: _CompiledRule | None = None
        for compiled in self.by_signal.get((ecosystem, signal.name), ()):
            if compiled.exact:
                if package != compiled.pattern:
                    continue
            elif not fnmatch.fnmatchcase(package, compiled.pattern):
                continue
            if best is None or compiled.rank() > best.rank():
                best = compiled
        if best is None:
            return RiskVerdict(signal, "note", timedelta(0), default=True)
        return RiskVerdict(signal, best.rule.action, best.rule.age, default=best.default)

    def verdicts(
        self, ecosystem: str, package: str, signals: Sequence[Signal]
    ) -> tuple[RiskVerdict, ...]:
        """Every signal's verdict, the strongest first (hold, the longest extension, notes)."""
        found = [self.verdict(ecosystem, package, signal) for signal in signals]
        return tuple(sorted(found, key=lambda verdict: verdict.strength, reverse=True))


def compile_risk(config: RiskConfig) -> RiskRules:
    """Index the settings' rules and the built-in defaults by (ecosystem, signal)."""
    by_signal: dict[tuple[str, str], list[_CompiledRule]] = {}
    entries: Iterable[tuple[RiskRule, bool]] = (
        *((rule, False) for rule in config.rules),
        *((rule, True) for rule in config.defaults),
    )
    for rule, default in entries:
        for ecosystem in RISK_SIGNALS.get(rule.signal, ()):
            if rule.ecosystem not in ("*", ecosystem):
                continue
            pattern = versions.normalize_package(ecosystem, rule.package or "*")
            compiled = _CompiledRule(
                rule=rule,
                pattern=pattern,
                exact=not (GLOB_CHARACTERS & set(pattern)),
                literal_length=sum(1 for char in pattern if char not in GLOB_CHARACTERS),
                default=default,
            )
            by_signal.setdefault((ecosystem, rule.signal), []).append(compiled)
    return RiskRules({key: tuple(rules) for key, rules in by_signal.items()})


DEFAULT_RISK: Final = compile_risk(RiskConfig())
