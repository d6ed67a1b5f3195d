"""Rules say exactly what they cover: one table of version-spec forms in each ecosystem. Each
form either blocks exactly the versions it says (checked with `decide` on concrete versions,
as a download would be) or is refused when the rule is created, with a sentence saying what
to write instead. A stored rule of a refused form (accepted before specs were strict) still
blocks: every version of its package, never silently nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror import policy, versions
from mirror.config import QuarantineConfig
from mirror.model import ECOSYSTEMS, RuleRecord
from mirror.policy import InvalidRule, Subject, compile_rules, decide

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=90)  # every version here is past quarantine: only blocks decide
CONFIG = QuarantineConfig(default=timedelta(days=3))
PACKAGES = {"npm": "left-pad", "pypi": "requests", "maven": "org.example:lib"}


@dataclass(frozen=True)
class Blocks:
    """The spec is accepted and blocks exactly `blocked`; `allowed` stay installable."""

    blocked: tuple[str, ...]
    allowed: tuple[str, ...]


@dataclass(frozen=True)
class Refused:
    """The spec is refused; the message contains `says`."""

    says: str


def blocks(blocked: str, allowed: str) -> Blocks:
    return Blocks(tuple(blocked.split()), tuple(allowed.split()))


FORMS: list[tuple[str, str, Blocks | Refused]] = [
    # npm: alternatives only with ||
    ("npm", "0.1.5 || 0.1.6", blocks("0.1.5 0.1.6", "0.1.4 0.1.7 0.1.6-rc.1")),
    ("npm", "0.1.5||0.1.6", blocks("0.1.5 0.1.6", "0.1.4 0.1.7")),
    ("npm", "0.1.5, 0.1.6", Refused("write '0.1.5 || 0.1.6'")),
    ("npm", "0.1.5,0.1.6", Refused("write '0.1.5 || 0.1.6'")),
    ("npm", "0.1.5 | 0.1.6", Refused("write '0.1.5 || 0.1.6'")),
    ("npm", "0.1.5 ||| 0.1.6", Refused("write '0.1.5 || 0.1.6'")),
    ("npm", "0.1.5 or 0.1.6", Refused("write '0.1.5 || 0.1.6'")),
    ("npm", ">=1.0.0 <2.0.0, 3.0.0", Refused("write '>=1.0.0 <2.0.0 || 3.0.0'")),
    ("npm", "[1.0.0,2.0.0)", Refused("is not an npm version range")),
    ("npm", "0.1.5 0.1.6", Refused("0.1.5 AND 0.1.6, which no version is")),
    ("npm", "^1.0.0 || 0.1.5 0.1.6", Refused("write '0.1.5 || 0.1.6'")),
    ("npm", "1.2.3 && 1.2.4", Refused("npm ANDs comparators separated by a space")),
    ("npm", "0.1.5 ||", Refused("empty alternative, which npm reads as every version")),
    ("npm", "|| 0.1.5", Refused("empty alternative")),
    # npm: ranges
    ("npm", "0.1.5", blocks("0.1.5 v0.1.5", "0.1.4 0.1.6 0.1.5-rc.1")),
    ("npm", "=0.1.5", blocks("0.1.5", "0.1.6")),
    ("npm", "v0.1.5", blocks("0.1.5", "0.1.6")),
    ("npm", "^1.2.0", blocks("1.2.0 1.9.9 1.3.0-beta.1", "1.1.9 2.0.0 0.9.0 2.0.0-rc.1")),
    ("npm", "^0.2.3", blocks("0.2.3 0.2.9", "0.2.3-rc.1 0.3.0-rc.1 0.3.0")),
    ("npm", "~1.2", blocks("1.2.0 1.2.99 1.2.0-rc.1", "1.3.0 1.1.0 1.3.0-rc.1")),
    ("npm", "~>1.2", blocks("1.2.0 1.2.99", "1.3.0 1.1.0")),
    ("npm", "1.x", blocks("1.0.0 1.99.0 1.0.0-rc.1 1.5.0-beta", "2.0.0 0.1.0 2.0.0-rc.1")),
    ("npm", "<=1.2", blocks("1.2.9 0.0.1 1.2.0-rc.1", "1.3.0 1.3.0-0")),
    ("npm", ">=1 <2", blocks("1.0.0 1.5.5", "2.0.0 0.9.9")),
    ("npm", ">= 1.0.0 < 2.0.0", blocks("1.0.0 1.5.5", "2.0.0 0.9.9")),
    ("npm", "1.2.3 - 1.4", blocks("1.2.3 1.4.7 1.2.3-rc.1", "1.2.2 1.5.0 1.5.0-rc.1")),
    ("npm", "1.2.3 - 1.4.0", blocks("1.4.0", "1.4.1-rc.1 1.4.1")),
    ("npm", ">=1.0.0 <=1.0.0", blocks("1.0.0", "0.9.9 1.0.1")),
    ("npm", ">=1.0.0", blocks("1.0.0 2.0.0-rc.1 99.0.0", "0.9.9 1.0.0-rc.1")),
    ("npm", "*", blocks("0.0.1 9.0.0-rc.1 not-semver", "")),
    ("npm", "x", blocks("0.0.1 9.0.0", "")),
    # npm: never matches, moving names, not npm at all
    ("npm", ">2 <1", Refused("can never match a version")),
    ("npm", ">1.0.0 <=1.0.0", Refused("can never match a version")),
    ("npm", "2.0.0 - 1.0.0", Refused("can never match a version")),
    ("npm", "<*", Refused("can never match a version")),
    ("npm", ">*", Refused("can never match a version")),
    ("npm", "<0.0.0", Refused("can never match a version")),
    ("npm", "latest", Refused("'latest' is a dist-tag")),
    ("npm", "next", Refused("'next' is a dist-tag")),
    ("npm", "^1.0.0 || beta", Refused("'beta' is a dist-tag")),
    ("npm", ">>>1", Refused("not an npm version range")),
    ("npm", "01.2.3", Refused("not an npm version range")),
    ("npm", "1.2.3.4", Refused("not an npm version range")),
    # PyPI: a comma is AND, there is no "or"
    ("pypi", "0.1.5", blocks("0.1.5 0.1.5.0", "0.1.4 0.1.6 0.1.5.post1 0.1.5rc1")),
    ("pypi", "==0.1.5", blocks("0.1.5", "0.1.6")),
    ("pypi", ">=2.0,<2.3", blocks("2.0 2.2.9 2.2rc1", "1.9 2.3 2.3rc1")),
    ("pypi", ">=2.0, <2.3", blocks("2.0 2.2.9", "1.9 2.3")),
    ("pypi", "<=1.0,>=1.0", blocks("1.0", "0.9 1.0.1")),
    ("pypi", "~=1.4", blocks("1.4 1.9", "2.0 1.3")),
    ("pypi", "==1.*", blocks("1.0 1.99", "2.0 0.9")),
    ("pypi", "!=1.5", blocks("1.4 1.6", "1.5")),
    ("pypi", "2004d", blocks("2004d", "2004e 2004")),
    ("pypi", "*", blocks("0.1 2004d 9.0rc1", "")),
    ("pypi", "0.1.5, 0.1.6", Refused("add one rule per version (==0.1.5, then ==0.1.6)")),
    ("pypi", "0.1.5 0.1.6", Refused("add one rule per version (==0.1.5, then ==0.1.6)")),
    ("pypi", "0.1.5 | 0.1.6", Refused("PEP 440 has no 'or'")),
    ("pypi", "0.1.5 || 0.1.6", Refused("PEP 440 has no 'or'")),
    ("pypi", "0.1.5 or 0.1.6", Refused("PEP 440 has no 'or'")),
    ("pypi", "==0.1.5,==0.1.6", Refused("can never match a version: PEP 440 commas mean AND")),
    ("pypi", ">2,<1", Refused("can never match a version")),
    ("pypi", ">=1.0,<1.0", Refused("can never match a version")),
    ("pypi", "==1.0,!=1.0", Refused("can never match a version")),
    ("pypi", "==1.4.*,>=1.5", Refused("can never match a version")),
    ("pypi", "~=1.4,<1.4", Refused("can never match a version")),
    ("pypi", "latest", Refused("'latest' is a name, not a version")),
    ("pypi", ">=>1", Refused("not a PEP 440 specifier set")),
    # Maven: a comma between ranges is the union
    ("maven", "[0.1.5],[0.1.6]", blocks("0.1.5 0.1.6", "0.1.4 0.1.7")),
    ("maven", "[1.0,1.2),[1.5,)", blocks("1.0 1.1 1.5 7", "0.9 1.2 1.4")),
    ("maven", "[1.0,2.0)", blocks("1.0 1.9.9 1.0.0", "0.9 2.0")),
    ("maven", "[1.0, 2.0)", blocks("1.0 1.9.9", "0.9 2.0")),
    ("maven", "(,1.5]", blocks("0.1 1.5", "1.5.1 2.0")),
    ("maven", "[1.5]", blocks("1.5 1.5.0", "1.5.1 1.4")),
    ("maven", "[1.0,1.0]", blocks("1.0", "1.0.1 0.9")),
    ("maven", "1.2.3", blocks("1.2.3", "1.2.4 1.2.2")),
    ("maven", "4.3.0.RELEASE", blocks("4.3.0.RELEASE", "4.3.1.RELEASE")),
    ("maven", "2.0-SNAPSHOT", blocks("2.0-SNAPSHOT", "2.0")),
    ("maven", "*", blocks("1.0 2.0-SNAPSHOT", "")),
    ("maven", "0.1.5, 0.1.6", Refused("write '[0.1.5],[0.1.6]'")),
    ("maven", "0.1.5,0.1.6", Refused("write '[0.1.5],[0.1.6]'")),
    ("maven", "0.1.5 0.1.6", Refused("write '[0.1.5],[0.1.6]'")),
    ("maven", "0.1.5 | 0.1.6", Refused("write '[0.1.5],[0.1.6]'")),
    ("maven", "0.1.5 or 0.1.6", Refused("write '[0.1.5],[0.1.6]'")),
    ("maven", "[2.0,1.0]", Refused("can never match a version")),
    ("maven", "[1.0,1.0)", Refused("can never match a version")),
    ("maven", "(1.0,1.0.0]", Refused("can never match a version")),
    ("maven", "LATEST", Refused("'LATEST' is a name Maven resolves to a different version")),
    ("maven", "RELEASE", Refused("'RELEASE' is a name Maven resolves")),
    ("maven", "[1.0,LATEST)", Refused("'LATEST' is a name Maven resolves")),
    ("maven", "[1.0,2.0),0.5", Refused("not a Maven version or range")),
    ("maven", "[1.0", Refused("not a Maven version or range")),
]


def block(ecosystem: str, spec: str, package: str | None = None) -> RuleRecord:
    return RuleRecord(
        id="b1",
        kind="block",
        ecosystem=ecosystem,
        package=package or PACKAGES[ecosystem],
        versions=spec,
        reason="advisory",
        created_at=NOW - timedelta(minutes=1),
        created_by="security",
    )


def blocked(rules: policy.Rules, ecosystem: str, version: str, package: str = "") -> bool:
    subject = Subject(ecosystem, package or PACKAGES[ecosystem], version)
    return decide(subject, OLD, NOW, rules).verdict == "blocked"


@pytest.mark.parametrize(("ecosystem", "spec", "expected"), FORMS)
def test_each_spec_form_blocks_what_it_says_or_is_refused(
    ecosystem: str, spec: str, expected: Blocks | Refused
) -> None:
    if isinstance(expected, Refused):
        with pytest.raises(InvalidRule) as raised:
            policy.validate_rule("block", ecosystem, PACKAGES[ecosystem], spec, "advisory")
        assert raised.value.field == "versions"
        assert expected.says in str(raised.value)
        return
    policy.validate_rule("block", ecosystem, PACKAGES[ecosystem], spec, "advisory")
    rules = compile_rules([block(ecosystem, spec)], CONFIG, NOW)
    assert not rules.problems
    assert [v for v in expected.blocked if not blocked(rules, ecosystem, v)] == []
    assert [v for v in expected.allowed if blocked(rules, ecosystem, v)] == []
    # ... and only for its own package.
    assert not blocked(rules, ecosystem, (expected.blocked or ("1.0",))[0], package="other:pkg")


@pytest.mark.parametrize(
    ("ecosystem", "spec"), [(eco, spec) for eco, spec, form in FORMS if isinstance(form, Refused)]
)
def test_a_stored_rule_of_a_refused_form_blocks_every_version(ecosystem: str, spec: str) -> None:
    """Rules stored before specs were strict still load; they fail closed, never open."""
    rules = compile_rules([block(ecosystem, spec)], CONFIG, NOW)
    assert len(rules.problems) == 1
    assert "is applied to every version" in rules.problems[0]
    for version in ("0.1.4", "0.1.5", "0.1.6", "99.0"):
        assert blocked(rules, ecosystem, version), (spec, version)
    assert not blocked(rules, ecosystem, "0.1.5", package="other:pkg")


def test_a_stored_freeze_of_a_refused_form_covers_every_version() -> None:
    freeze = RuleRecord(
        id="f1",
        kind="freeze",
        ecosystem="npm",
        package="left-pad",
        versions="0.1.5, 0.1.6",
        reason="outbreak",
        created_at=NOW - timedelta(days=1),
        created_by="security",
        expires_at=NOW + timedelta(days=1),
        data={"published_after": NOW - timedelta(days=1)},
    )
    rules = compile_rules([freeze], CONFIG, NOW)
    assert rules.problems
    recent, before_cutoff = NOW - timedelta(hours=20), NOW - timedelta(days=5)
    for version in ("0.1.4", "0.1.5", "0.1.7"):
        subject = Subject("npm", "left-pad", version)
        assert decide(subject, before_cutoff, NOW, rules).verdict == "allowed"
        decision = decide(subject, recent, NOW, rules)
        assert decision.verdict == "quarantined"
        assert decision.freeze is not None


@pytest.mark.parametrize(
    ("ecosystem", "glob", "inside", "outside"),
    [
        ("npm", "@evil/*", "@evil/a", "@good/a"),
        ("npm", "*", "anything", None),
        ("pypi", "evil-*", "Evil_Pkg", "good-pkg"),
        ("maven", "org.evil:*", "org.evil:lib", "org.good:lib"),
    ],
)
def test_globs_of_packages_with_strict_specs(
    ecosystem: str, glob: str, inside: str, outside: str | None
) -> None:
    spec = {"npm": "1.0.0 || 1.0.1", "pypi": ">=1.0,<1.1", "maven": "[1.0],[1.0.1]"}[ecosystem]
    policy.validate_rule("block", ecosystem, glob, spec, "advisory")
    rules = compile_rules([block(ecosystem, spec, package=glob)], CONFIG, NOW)
    assert blocked(rules, ecosystem, "1.0.1", package=inside)
    assert not blocked(rules, ecosystem, "1.1.0", package=inside)
    if outside is not None:
        assert not blocked(rules, ecosystem, "1.0.1", package=outside)


def test_refusals_are_one_sentence_a_responder_can_act_on() -> None:
    for ecosystem, spec, expected in FORMS:
        if not isinstance(expected, Refused):
            continue
        with pytest.raises(versions.InvalidSpec) as raised:
            versions.parse_spec(ecosystem, spec)
        message = str(raised.value)
        assert "\n" not in message, message
        assert len(message) < 300, message


_SPEC_CHARACTERS = "0123456789.,|<>=!~^*xXvV-+ []()abcdeflorstLATESTRELAS\t\n\x1b\x00é٣²"
_spec_text = st.text(alphabet=st.sampled_from(list(_SPEC_CHARACTERS)), max_size=40)


def _refusal(ecosystem: str, text: str) -> str | None:
    try:
        spec = versions.parse_spec(ecosystem, text)
    except versions.InvalidSpec as exc:
        return str(exc)
    for version in ("0.1.5", "1.0.0", "2.0-SNAPSHOT", "not-a-version"):
        spec.contains(version)
    return None


@settings(max_examples=1500, deadline=None)
@given(ecosystem=st.sampled_from(ECOSYSTEMS), text=_spec_text)
def test_any_text_is_a_spec_or_a_printable_refusal(ecosystem: str, text: str) -> None:
    """No input makes the parser fail another way (a 500), and a refusal carries no control
    character to a log line or a terminal."""
    refusal = _refusal(ecosystem, text)
    assert refusal is None or refusal.isprintable(), refusal
