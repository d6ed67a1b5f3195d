"""The policy engine: pure functions of (subject, publish time, now, rules).

For each ecosystem, package, version (and on PyPI each file):
1. **blocked** if a live block matches (package name or glob, version spec in the
   ecosystem's own syntax or `*`); blocks win over everything;
2. **exempted** if a live exemption matches: it skips quarantine and freezes, never a block;
3. **quarantined** if `now < published_at + age(ecosystem, package)`, or if a live freeze
   covers it (published after the freeze's cutoff), or if a risk signal's rule holds it
   (`mirror.risk`: `extend` until `published_at + the rule's age`, `hold` until exempted);
   an unknown publish time counts as quarantined unless `quarantine.unknown = "allow"`.
   Of freeze, risk and quarantine the one that holds longest names the decision;
4. otherwise **allowed** (a `note` signal only reports: `Decision.signals`).

Rules expire by the clock alone: an exemption or freeze whose `expires_at` has passed
stops applying without anyone touching the stored rules. Expired rules stay stored; compiled
rules (`compile_rules`, `Rules.at`) index only the live ones for decisions, plus the
exemptions that expired within `Rules.lapse_horizon` apart: a version an exemption let
through until it expired, held again now, names that exemption (`Decision.lapsed`); it never
changes a verdict. An exemption that expired longer ago is not compiled at all, so the cost
of a decision does not grow with a deployment's history of expired rules.

Every document (npm packument, Maven metadata, PyPI page and JSON API) is filtered by one
`partition`: the items shown, the decisions of the ones held back, and when that goes stale.
`errors.Held.from_decision` turns a hidden decision into the 403, and
`model.Explanation.of` into what explain answers.
"""

from __future__ import annotations

import fnmatch
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Generic, TypeVar, cast

from mirror import versions
from mirror.clock import END_OF_TIME, START_OF_TIME, iso_sentence

# Re-exported: callers reach them as `policy.add_saturating` / `policy.iso_seconds`.
from mirror.clock import add_saturating as add_saturating
from mirror.clock import format_age as format_age
from mirror.clock import iso_seconds as iso_seconds
from mirror.config import QuarantineConfig, RiskConfig
from mirror.model import ECOSYSTEMS, RuleKind, RuleRecord
from mirror.risk import DEFAULT_RISK, RiskRules, RiskVerdict, Signal, compile_risk

GLOB_CHARACTERS: Final = frozenset("*?[")
# `Rules.lapse_horizon` is the longest quarantine age configured, at least this: an exemption
# that expired longer ago is never named as lapsed. For a version quarantined by its publish
# time the longest age is exact (it was published less than its age ago, and before the
# exemption expired); for one held by a freeze or for an unknown publish time it is a bound
# on what is worth naming.
MIN_LAPSE_HORIZON: Final = timedelta(days=7)
# What a document partitions: a version string, a PyPI file, an API file.
Item = TypeVar("Item")


class Verdict(StrEnum):
    ALLOWED = "allowed"
    EXEMPTED = "exempted"
    QUARANTINED = "quarantined"
    BLOCKED = "blocked"


class InvalidRule(ValueError):
    """A rule that cannot be stored; `field` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True, slots=True)
class Subject:
    """What is being decided: one version, or on PyPI one file of a version."""

    ecosystem: str
    package: str
    version: str
    filename: str | None = None

    @property
    def label(self) -> str:
        """How people write it: `left-pad@1.3.0`, `requests 2.31.0`, `org.example:lib:1.0`."""
        if self.ecosystem == "npm":
            text = f"{self.package}@{self.version}"
        elif self.ecosystem == "maven":
            text = f"{self.package}:{self.version}"
        else:
            text = f"{self.package} {self.version}"
        if self.filename and self.ecosystem == "pypi":
            return f"{self.filename} ({text})"
        return text


class PackagePattern:
    """A package name or glob (`@ourcorp/*`, `org.example:*`), compared in the ecosystem's
    canonical form (PEP 503 on PyPI)."""

    __slots__ = ("exact", "literal_length", "pattern", "text")

    def __init__(self, ecosystem: str, text: str) -> None:
        self.text = text
        self.pattern = versions.normalize_package(ecosystem, text)
        self.exact = not (GLOB_CHARACTERS & set(self.pattern))
        self.literal_length = sum(1 for char in self.pattern if char not in GLOB_CHARACTERS)

    def matches(self, package: str) -> bool:
        if self.exact:
            return package == self.pattern
        return fnmatch.fnmatchcase(package, self.pattern)

    @property
    def specificity(self) -> tuple[int, int]:
        """Exact names beat globs; among globs the one with more literal characters wins."""
        return (1 if self.exact else 0, self.literal_length)


@dataclass(frozen=True, slots=True)
class _Rule:
    record: RuleRecord
    package: PackagePattern
    spec: versions.VersionSpec | None  # None: the stored spec does not parse

    def live(self, now: datetime) -> bool:
        return self.record.expires_at is None or now < self.record.expires_at

    def matches(self, subject: Subject, package: str) -> bool:
        if not self.package.matches(package):
            return False
        if self.spec is None:
            # A block or freeze whose stored spec no longer parses (accepted before specs were
            # parsed strictly, e.g. npm `0.1.5, 0.1.6`) covers every version: fail closed.
            return self.record.kind != "exemption"
        return self.spec.contains(subject.version)

    def describe(self) -> dict[str, Any]:
        return describe_record(self.record)


class Block(_Rule):
    __slots__ = ()


class Exemption(_Rule):
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Freeze(_Rule):
    """Nothing published after `published_after` is offered until the freeze expires."""

    published_after: datetime = field(default=datetime.min.replace(tzinfo=UTC))

    def covers(self, published_at: datetime | None) -> bool:
        return published_at is None or published_at > self.published_after


@dataclass(frozen=True, slots=True)
class Decision:
    """What policy says of one subject at one moment. A hidden one (`visible` False) is also
    what views keep of a held-back version or file: its `verdict` is BLOCKED (with `block`) or
    QUARANTINED (with `until`, when the clock alone will end it)."""

    verdict: Verdict
    visible: bool
    until: datetime | None
    age: timedelta
    subject: Subject
    block: Block | None = None
    exemption: Exemption | None = None
    freeze: Freeze | None = None
    published_at: datetime | None = None
    # Of a version held by quarantine or a freeze: the exemption that covered it until it
    # expired (after the version was published), else None. Says why it is held *again*.
    lapsed: Exemption | None = None
    # Every risk signal the subject shows with what its rule does, the strongest first
    # (`mirror.risk`); `risk` the one that holds it when that holds longest (names it).
    signals: tuple[RiskVerdict, ...] = ()
    risk: RiskVerdict | None = None

    @property
    def version(self) -> str:
        return self.subject.version

    @property
    def filename(self) -> str | None:
        """The file decided (PyPI), else None."""
        return self.subject.filename

    @property
    def detail(self) -> str:
        """One sentence a person can act on, naming the version and why. Built when read:
        `decide` runs for every version of every rendered document, the sentence is needed
        only for refusals and explain."""
        return _explain(self)

    @property
    def rule(self) -> Block | Exemption | Freeze | None:
        """The stored rule that decided, if one did."""
        return self.block or self.exemption or self.freeze

    def describe(self) -> dict[str, Any]:
        """The decision as JSON-able data (for explain)."""
        rule = self.rule
        return {
            "verdict": str(self.verdict),
            "visible": self.visible,
            "until": iso_seconds(self.until),
            "published_at": iso_seconds(self.published_at),
            "quarantine_age": format_age(self.age),
            "detail": self.detail,
            "rule": rule.describe() if rule else None,
            "lapsed_exemption": _lapsed_summary(self.lapsed.record) if self.lapsed else None,
            "risk": self.risk.describe() if self.risk else None,
            "signals": [verdict.describe() for verdict in self.signals],
        }

    def describe_signals(self) -> tuple[dict[str, Any], ...]:
        """The signals as explain, the 403 body and the dashboard list them."""
        return tuple(verdict.describe() for verdict in self.signals)


@dataclass(frozen=True, slots=True)
class Partition(Generic[Item]):
    """One document's subjects split by policy at one moment (`partition`): what it may show
    and what it holds back, each in the order given."""

    visible: tuple[Item, ...]
    withheld: tuple[Decision, ...]  # hidden: blocked and quarantined, in the order given
    until: datetime | None  # when the first quarantined one leaves by the clock (see below)

    @property
    def quarantined(self) -> tuple[Decision, ...]:
        return tuple(decision for decision in self.withheld if decision.block is None)

    @property
    def blocked(self) -> tuple[Decision, ...]:
        return tuple(decision for decision in self.withheld if decision.block is not None)


@dataclass(frozen=True, slots=True)
class _EcosystemRules:
    """One ecosystem's rules of one kind: the live ones (at compile time) by exact name and
    as globs, and apart, the exemptions that had expired within the lapse horizon (asked only
    for `lapsed`)."""

    exact: Mapping[str, tuple[_Rule, ...]]
    globs: tuple[_Rule, ...]
    expired_exact: Mapping[str, tuple[_Rule, ...]] = field(default_factory=dict)
    expired_globs: tuple[_Rule, ...] = ()

    def matching(self, subject: Subject, package: str, now: datetime) -> list[_Rule]:
        candidates = (*self.exact.get(package, ()), *self.globs)
        return [rule for rule in candidates if rule.live(now) and rule.matches(subject, package)]

    def lapsed(
        self,
        subject: Subject,
        package: str,
        published_at: datetime | None,
        now: datetime,
        since: datetime,
    ) -> list[_Rule]:
        """The ones that expired after `since` (and by `now`) and matched `subject` while it
        was published (an unknown publish time counts as such): what let it through until
        they expired. Live ones at compile time are asked too: they may have expired since."""
        candidates = (
            *self.exact.get(package, ()),
            *self.globs,
            *self.expired_exact.get(package, ()),
            *self.expired_globs,
        )
        return [
            rule
            for rule in candidates
            if rule.record.expires_at is not None
            and since < rule.record.expires_at <= now
            and (published_at is None or published_at < rule.record.expires_at)
            and rule.matches(subject, package)
        ]

    def __len__(self) -> int:
        """Rules held (live and expired)."""
        return (
            sum(len(rules) for rules in self.exact.values())
            + len(self.globs)
            + sum(len(rules) for rules in self.expired_exact.values())
            + len(self.expired_globs)
        )


@dataclass(frozen=True, slots=True)
class Rules:
    """Compiled rules: lookups by ecosystem and exact name, globs scanned. Immutable."""

    quarantine: QuarantineConfig
    blocks: Mapping[str, _EcosystemRules]
    exemptions: Mapping[str, _EcosystemRules]
    freezes: Mapping[str, tuple[Freeze, ...]]
    records: tuple[RuleRecord, ...]
    problems: tuple[str, ...] = ()
    _age_rules: tuple[tuple[PackagePattern, str, timedelta], ...] = ()
    # Every compiled rule that may still decide or be named (`at` re-indexes them).
    _compiled: tuple[_Rule, ...] = ()
    lapse_horizon: timedelta = MIN_LAPSE_HORIZON
    risk: RiskRules = DEFAULT_RISK

    def at(self, now: datetime) -> Rules:
        """These rules indexed for `now`: the rules that expired since they were compiled
        leave the live index (an expired exemption goes apart, for `lapsed`; past the lapse
        horizon it goes). Nothing is parsed again. Decisions are the same either way."""
        return _assemble(
            self.quarantine,
            self.records,
            self._compiled,
            self.problems,
            self._age_rules,
            now,
            self.risk,
        )

    def quarantine_age(self, ecosystem: str, package: str) -> timedelta:
        """The most specific `[[quarantine.rules]]` entry (of equally specific ones, the
        longest age: the order of the settings never decides), else the ecosystem's age,
        else the default."""
        best: tuple[tuple[int, int], timedelta] | None = None
        for pattern, rule_ecosystem, age in self._age_rules:
            if rule_ecosystem != ecosystem or not pattern.matches(package):
                continue
            if best is None or (pattern.specificity, age) > best:
                best = (pattern.specificity, age)
        if best is not None:
            return best[1]
        return self.quarantine.per_ecosystem.get(ecosystem, self.quarantine.default)

    def next_expiry(self, now: datetime) -> datetime | None:
        """The next moment a stored rule stops applying by the clock (views change then)."""
        upcoming = [
            record.expires_at
            for record in self.records
            if record.expires_at is not None and record.expires_at > now
        ]
        return min(upcoming, default=None)


def compile_rules(
    records: Iterable[RuleRecord],
    quarantine: QuarantineConfig,
    now: datetime,
    risk: RiskConfig | None = None,
) -> Rules:
    """Index stored rules for fast decisions. Stored specs are parsed as strictly as new ones,
    and bad stored data never raises: a block or freeze whose spec does not parse covers every
    version of its package (fail closed, never silently nothing), an exemption that does not
    parse is dropped; each is listed in `problems` (logged by the caller). Indexed for
    decisions at `now` and later (`Rules.at`): a rule that expired before `now` is left out,
    but for an exemption expired within the lapse horizon. `risk`: the `[risk]` settings
    (None: the built-in risk rules alone)."""
    kept = tuple(records)
    problems: list[str] = []
    compiled: list[_Rule] = []
    for record in kept:
        pattern = PackagePattern(record.ecosystem, record.package or "*")
        try:
            spec: versions.VersionSpec | None = versions.parse_spec(
                record.ecosystem, record.versions or versions.ANY_VERSION
            )
        except versions.InvalidSpec as exc:
            spec = None
            effect = "dropped" if record.kind == "exemption" else "applied to every version"
            problems.append(
                f"{record.kind} {record.id!r} ({record.ecosystem} {record.package!r} "
                f"{record.versions!r}) is {effect}: {exc}"
            )
        if record.kind == "block":
            compiled.append(Block(record, pattern, spec))
        elif spec is None and record.kind == "exemption":
            continue
        elif record.kind == "exemption":
            compiled.append(Exemption(record, pattern, spec))
        elif record.kind == "freeze":
            cutoff = _freeze_cutoff(record)
            if cutoff is None:
                problems.append(f"freeze {record.id}: published_after is missing or not a time")
                cutoff = record.created_at
            compiled.append(Freeze(record, pattern, spec, cutoff))
    age_rules = tuple(
        (PackagePattern(rule.ecosystem, rule.package), rule.ecosystem, rule.age)
        for rule in quarantine.rules
    )
    risk_rules = DEFAULT_RISK if risk is None else compile_risk(risk)
    return _assemble(quarantine, kept, tuple(compiled), tuple(problems), age_rules, now, risk_rules)


def lapse_horizon(quarantine: QuarantineConfig) -> timedelta:
    """How long after it expired an exemption is still named (`MIN_LAPSE_HORIZON`)."""
    ages = (
        quarantine.default,
        *quarantine.per_ecosystem.values(),
        *(rule.age for rule in quarantine.rules),
    )
    return max((*ages, MIN_LAPSE_HORIZON))


def _assemble(
    quarantine: QuarantineConfig,
    records: tuple[RuleRecord, ...],
    compiled: tuple[_Rule, ...],
    problems: tuple[str, ...],
    age_rules: tuple[tuple[PackagePattern, str, timedelta], ...],
    now: datetime,
    risk: RiskRules,
) -> Rules:
    """Index `compiled` for decisions at `now` and later: live rules by kind and ecosystem,
    exemptions expired within the lapse horizon apart, anything else left out (a rule
    expired by `now` never applies again)."""
    horizon = lapse_horizon(quarantine)
    since = _lapse_start(now, horizon)
    blocks: dict[str, list[_Rule]] = {}
    exemptions: dict[str, list[_Rule]] = {}
    expired: dict[str, list[_Rule]] = {}
    freezes: dict[str, list[Freeze]] = {}
    held: list[_Rule] = []
    for rule in compiled:
        ecosystem = rule.record.ecosystem
        if not rule.live(now):
            expires = rule.record.expires_at
            if isinstance(rule, Exemption) and expires is not None and expires > since:
                expired.setdefault(ecosystem, []).append(rule)
                held.append(rule)
            continue
        held.append(rule)
        if isinstance(rule, Block):
            blocks.setdefault(ecosystem, []).append(rule)
        elif isinstance(rule, Exemption):
            exemptions.setdefault(ecosystem, []).append(rule)
        elif isinstance(rule, Freeze):
            freezes.setdefault(ecosystem, []).append(rule)
    return Rules(
        quarantine=quarantine,
        blocks={name: _index(rules) for name, rules in blocks.items()},
        exemptions={
            name: _index(exemptions.get(name, []), expired.get(name, []))
            for name in exemptions.keys() | expired.keys()
        },
        freezes={name: tuple(rules) for name, rules in freezes.items()},
        records=records,
        problems=problems,
        _age_rules=age_rules,
        _compiled=tuple(held),
        lapse_horizon=horizon,
        risk=risk,
    )


def decide(
    subject: Subject,
    published_at: datetime | None,
    now: datetime,
    rules: Rules,
    signals: Sequence[Signal] = (),
) -> Decision:
    """The decision for one version (or file) at `now`, given the risk `signals` it shows.
    Precedence: block > exemption > (freeze, risk, quarantine) > allow."""
    package = versions.normalize_package(subject.ecosystem, subject.package)
    age = rules.quarantine_age(subject.ecosystem, package)
    block_index = rules.blocks.get(subject.ecosystem)
    verdicts = rules.risk.verdicts(subject.ecosystem, package, signals) if signals else ()
    if block_index is not None:
        matched = block_index.matching(subject, package, now)
        if matched:
            return Decision(
                verdict=Verdict.BLOCKED,
                visible=False,
                until=None,
                age=age,
                subject=subject,
                block=cast(Block, _first(matched)),
                published_at=published_at,
                signals=verdicts,
            )
    exemption_index = rules.exemptions.get(subject.ecosystem)
    if exemption_index is not None:
        matched = exemption_index.matching(subject, package, now)
        if matched:
            return Decision(
                verdict=Verdict.EXEMPTED,
                visible=True,
                until=None,
                age=age,
                subject=subject,
                exemption=cast(Exemption, _first(matched)),
                published_at=published_at,
                signals=verdicts,
            )
    held = _held_by_time(subject, package, published_at, now, rules, age)
    acting = verdicts[0] if verdicts and verdicts[0].action != "note" else None
    risk_until = _risk_until(acting, published_at) if acting is not None else None
    # The risk rule names the decision when it holds at least as long as what else holds it:
    # no end (a hold, an unknown publish time) outlasts any moment.
    if (
        acting is not None
        and (risk_until is None or now < risk_until)
        and (held.visible or _outlasts(risk_until, held.until))
    ):
        return Decision(
            verdict=Verdict.QUARANTINED,
            visible=False,
            until=risk_until,
            age=age,
            subject=subject,
            published_at=published_at,
            lapsed=_lapsed(
                exemption_index, subject, package, published_at, now, rules.lapse_horizon
            ),
            signals=verdicts,
            risk=acting,
        )
    if verdicts:
        return replace(held, signals=verdicts)
    return held


def _held_by_time(
    subject: Subject,
    package: str,
    published_at: datetime | None,
    now: datetime,
    rules: Rules,
    age: timedelta,
) -> Decision:
    """The decision of quarantine and freezes alone (no block or exemption matched)."""
    exemption_index = rules.exemptions.get(subject.ecosystem)
    if published_at is None:
        allowed = rules.quarantine.unknown == "allow"
        return Decision(
            verdict=Verdict.ALLOWED if allowed else Verdict.QUARANTINED,
            visible=allowed,
            until=None,
            age=age,
            subject=subject,
            lapsed=None
            if allowed
            else _lapsed(exemption_index, subject, package, None, now, rules.lapse_horizon),
        )
    # An upstream's publish time is untrusted: near the end of the calendar it must hold the
    # version (until the end of time), never overflow into a 500.
    matured = add_saturating(published_at, age)
    freeze = _covering_freeze(rules, subject, package, published_at, now)
    if freeze is not None:
        expires = freeze.record.expires_at
        return Decision(
            verdict=Verdict.QUARANTINED,
            visible=False,
            until=max(matured, expires) if expires is not None else None,
            age=age,
            subject=subject,
            freeze=freeze,
            published_at=published_at,
            lapsed=_lapsed(
                exemption_index, subject, package, published_at, now, rules.lapse_horizon
            ),
        )
    held = now < matured
    return Decision(
        verdict=Verdict.QUARANTINED if held else Verdict.ALLOWED,
        visible=not held,
        until=matured if held else None,
        age=age,
        subject=subject,
        published_at=published_at,
        lapsed=(
            _lapsed(exemption_index, subject, package, published_at, now, rules.lapse_horizon)
            if held
            else None
        ),
    )


def _outlasts(risk_until: datetime | None, held_until: datetime | None) -> bool:
    """Whether a risk rule holding until `risk_until` holds at least as long as what holds
    the version until `held_until` (None: no end by the clock)."""
    if held_until is None:
        return False
    return risk_until is None or risk_until >= held_until


def _risk_until(verdict: RiskVerdict, published_at: datetime | None) -> datetime | None:
    """When an acting risk rule lets the version go by the clock: None for `hold` (only an
    exemption ends it) and for an `extend` of a version whose publish time is unknown (fail
    closed: no moment to extend from)."""
    if verdict.action != "extend" or published_at is None:
        return None
    return add_saturating(published_at, verdict.age)


def partition(
    entries: Iterable[tuple[Item, Subject, datetime | None]],
    now: datetime,
    rules: Rules,
    signals: Callable[[Subject], Sequence[Signal]] | None = None,
) -> Partition[Item]:
    """Decide each `(item, subject, publish time)` at `now`, with the risk signals
    `signals(subject)` gives (the document's own, computed at parse time): the items shown,
    the decisions of those held back, and `until`, the earliest moment one of them leaves
    quarantine by the clock (`earliest_until`): the moment the partition goes stale. The one
    loop every document's filter runs."""
    visible: list[Item] = []
    withheld: list[Decision] = []
    for item, subject, published_at in entries:
        shown = signals(subject) if signals is not None else ()
        decision = decide(subject, published_at, now, rules, shown)
        if decision.visible:
            visible.append(item)
        else:
            withheld.append(decision)
    return Partition(
        visible=tuple(visible), withheld=tuple(withheld), until=earliest_until(withheld)
    )


def earliest_until(withheld: Iterable[Decision]) -> datetime | None:
    """The first moment one of `withheld` leaves quarantine by the clock alone, or None. A
    block never ends by the clock, nor does a hold for an unknown publish time or by a freeze
    without an end (their `until` is None)."""
    return min(
        (
            decision.until
            for decision in withheld
            if decision.block is None and decision.until is not None
        ),
        default=None,
    )


def refusal(withheld: Sequence[Decision]) -> Decision | None:
    """The decision a refusal of everything in `withheld` names: the first blocked one (a
    block does not end), else the quarantined one that leaves first, else the first."""
    for decision in withheld:
        if decision.block is not None:
            return decision
    timed = [decision for decision in withheld if decision.until is not None]
    if timed:
        return min(timed, key=lambda decision: decision.until or END_OF_TIME)
    return withheld[0] if withheld else None


def _explain(decision: Decision) -> str:
    """The one sentence a person can act on (`Decision.detail`). Its first clause (what
    Maven and pip print as the reason phrase) names what holds the version: a block, a
    freeze, quarantine, or quarantine again after an exemption expired."""
    label = decision.subject.label
    published_at = decision.published_at
    if decision.block is not None:
        record = decision.block.record
        return (
            f"{label} is blocked by this mirror: {record.reason} (block {record.id}, "
            f"added by {record.created_by} at {iso_sentence(record.created_at)})"
        )
    if decision.exemption is not None:
        record = decision.exemption.record
        until_text = f" until {iso_sentence(record.expires_at)}" if record.expires_at else ""
        return (
            f"{label} is exempted from quarantine{until_text}: {record.reason} "
            f"(exemption {record.id}, added by {record.created_by}){_noted_clause(decision)}"
        )
    lapsed = _lapsed_clause(decision)
    if decision.risk is not None:
        return _risk_sentence(decision, decision.risk, lapsed)
    if published_at is None:
        if decision.visible:
            return (
                f"{label} has no known publish time; this mirror allows such versions"
                f"{_noted_clause(decision)}"
            )
        return (
            f"{label} has no known publish time, so it is held in quarantine "
            f"(quarantine.unknown = quarantine){lapsed}; ask your security team for an exemption"
        )
    if decision.freeze is not None:
        record = decision.freeze.record
        until = decision.until
        until_text = f"until {iso_sentence(until)}" if until else "until the freeze is lifted"
        cutoff = iso_sentence(decision.freeze.published_after)
        return (
            f"{label} is held by freeze {record.id} {until_text}: {record.reason} (published "
            f"{iso_sentence(published_at)}, after the freeze cutoff {cutoff}){lapsed}"
        )
    if not decision.visible:
        return (
            f"{label} was published {iso_sentence(published_at)} and is in quarantine until "
            f"{iso_sentence(decision.until)} (quarantine age {format_age(decision.age)}){lapsed}; "
            "ask your security team for an exemption if you need it sooner"
        )
    return (
        f"{label} was published {iso_sentence(published_at)}, longer ago than the quarantine age "
        f"{format_age(decision.age)}{_noted_clause(decision)}"
    )


def _risk_sentence(decision: Decision, verdict: RiskVerdict, lapsed: str) -> str:
    """`X is held until T: <what changed> (risk signal S: quarantine extended to 14d)…`, or
    held until an admin exempts it (`hold`)."""
    label = decision.subject.label
    signal = verdict.signal
    if verdict.action == "hold" or decision.until is None:
        why = "hold" if verdict.action == "hold" else "its publish time is unknown"
        return (
            f"{label} is held until an admin exempts it: {signal.detail} (risk signal "
            f"{signal.name}: {why}){lapsed}; ask your security team to review it"
        )
    return (
        f"{label} is held until {iso_sentence(decision.until)}: {signal.detail} (risk signal "
        f"{signal.name}: quarantine extended to {format_age(verdict.age)}){lapsed}; ask your "
        "security team for an exemption if you need it sooner"
    )


def _noted_clause(decision: Decision) -> str:
    """`; risk signal <name>: <what changed>` for each signal of a version shown anyway (a
    `note`, or an extension that has ended), or ``."""
    return "".join(
        f"; risk signal {verdict.signal.name}: {verdict.signal.detail}"
        for verdict in decision.signals
    )


def _lapsed_summary(record: RuleRecord) -> dict[str, Any]:
    """An expired exemption as a held version's decision shows it: what its sentence says
    (id, reason, when it expired) and what it covered; not who added it or its other data."""
    return {
        "id": record.id,
        "ecosystem": record.ecosystem,
        "package": record.package,
        "versions": record.versions,
        "reason": record.reason,
        "expires_at": iso_seconds(record.expires_at),
    }


def _lapsed_clause(decision: Decision) -> str:
    """`; exemption e-… (reason) let it through until it expired at …`, or ``."""
    if decision.lapsed is None:
        return ""
    record = decision.lapsed.record
    return (
        f"; exemption {record.id} ({record.reason}) let it through until it expired at "
        f"{iso_sentence(record.expires_at)}"
    )


def describe_record(record: RuleRecord) -> dict[str, Any]:
    """A stored rule as JSON-able data: what refusals, explain and the admin API show."""
    described: dict[str, Any] = {
        "id": record.id,
        "kind": record.kind,
        "ecosystem": record.ecosystem,
        "package": record.package,
        "versions": record.versions,
        "reason": record.reason,
        "created_at": iso_seconds(record.created_at),
        "created_by": record.created_by,
        "expires_at": iso_seconds(record.expires_at),
    }
    described.update({key: _jsonable(value) for key, value in record.data.items()})
    return described


ID_PREFIXES: Final[Mapping[RuleKind, str]] = {"block": "b-", "exemption": "e-", "freeze": "f-"}


def new_rule_id(kind: RuleKind) -> str:
    return ID_PREFIXES[kind] + secrets.token_hex(6)


def validate_rule(
    kind: RuleKind, ecosystem: str, package: str, versions_spec: str, reason: str
) -> None:
    """Raise InvalidRule naming the field when a rule cannot be stored as given."""
    if ecosystem not in ECOSYSTEMS:
        raise InvalidRule(
            "ecosystem",
            f"unknown ecosystem {ecosystem!r} (expected one of {', '.join(ECOSYSTEMS)})",
        )
    if not package.strip():
        raise InvalidRule("package", "package is required (a name or a glob such as @scope/*)")
    if len(package) > 512 or any(ord(char) < 32 for char in package):
        raise InvalidRule("package", "package must be a name or glob of printable characters")
    if ecosystem == "maven" and not (
        ":" in package or package.strip() == "*" or package.endswith("*")
    ):
        raise InvalidRule("package", "a Maven package is written group:artifact")
    if not reason.strip():
        raise InvalidRule("reason", "a reason is required: say why, for the audit log")
    if kind == "freeze" and versions_spec.strip() in ("", versions.ANY_VERSION):
        return
    try:
        versions.parse_spec(ecosystem, versions_spec)
    except versions.InvalidSpec as exc:
        raise InvalidRule("versions", str(exc)) from None


# internals ------------------------------------------------------------------------------------


def _index(live: list[_Rule], expired: Sequence[_Rule] = ()) -> _EcosystemRules:
    exact, globs = _split(live)
    expired_exact, expired_globs = _split(expired)
    return _EcosystemRules(
        exact=exact, globs=globs, expired_exact=expired_exact, expired_globs=expired_globs
    )


def _split(rules: Sequence[_Rule]) -> tuple[dict[str, tuple[_Rule, ...]], tuple[_Rule, ...]]:
    """`rules` by exact package name, and the globs."""
    exact: dict[str, list[_Rule]] = {}
    globs: list[_Rule] = []
    for rule in rules:
        if rule.package.exact:
            exact.setdefault(rule.package.pattern, []).append(rule)
        else:
            globs.append(rule)
    return {name: tuple(matched) for name, matched in exact.items()}, tuple(globs)


def _first(matched: list[_Rule]) -> _Rule:
    """The most specific matching rule, the oldest among equals: what explain names."""
    return max(
        matched,
        key=lambda rule: (rule.package.specificity, -rule.record.created_at.timestamp()),
    )


def _lapsed(
    index: _EcosystemRules | None,
    subject: Subject,
    package: str,
    published_at: datetime | None,
    now: datetime,
    horizon: timedelta,
) -> Exemption | None:
    """The exemption that let `subject` through until it expired (the latest to expire)
    less than `horizon` ago, or None. Asked only of held versions, and only the exemptions
    of the package and the globs that expired within the horizon are scanned."""
    if index is None:
        return None
    lapsed = index.lapsed(subject, package, published_at, now, _lapse_start(now, horizon))
    if not lapsed:
        return None
    return cast(Exemption, max(lapsed, key=lambda rule: rule.record.expires_at or END_OF_TIME))


def _lapse_start(now: datetime, horizon: timedelta) -> datetime:
    """`now - horizon`, the start of time when that is before it (an age of millennia)."""
    try:
        return add_saturating(now, -horizon)
    except OverflowError:  # -timedelta.max is not a timedelta
        return START_OF_TIME


def _covering_freeze(
    rules: Rules, subject: Subject, package: str, published_at: datetime, now: datetime
) -> Freeze | None:
    covering = [
        freeze
        for freeze in rules.freezes.get(subject.ecosystem, ())
        if freeze.live(now) and freeze.matches(subject, package) and freeze.covers(published_at)
    ]
    if not covering:
        return None
    # The one that holds longest explains the decision.
    return max(covering, key=lambda freeze: freeze.record.expires_at or END_OF_TIME)


def _freeze_cutoff(record: RuleRecord) -> datetime | None:
    value = record.data.get("published_after")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return iso_seconds(value)
    return value
