"""Version specs at their boundaries: Maven ranges with exclusive and inclusive bounds (at the
bound, in its padded and aliased spellings, and just either side), Maven's qualifier aliases
and short forms, PEP 440 specifier sets that can or cannot match, and the exact sentences a
refused spec gets."""

from __future__ import annotations

import re

import pytest

from mirror import versions
from mirror.versions import InvalidSpec, MavenVersion, parse_spec

# Maven ranges -----------------------------------------------------------------------------------

MAVEN_RANGES = {
    "(1.0,2.0]": {
        "1.0": False, "1": False, "1.0.0": False, "1-ga": False, "1.0-rc-1": False,
        "1.0-sp": True, "1.0.0.1": True, "1.5": True,
        "2.0": True, "2": True, "2.0.0": True, "2.0-rc-1": True, "2.0-sp": False, "2.0.1": False,
    },
    "[1.0,2.0)": {
        "0.9": False, "1.0-rc-1": False, "1.0-SNAPSHOT": False,
        "1.0": True, "1": True, "1.0.0": True, "1.5": True, "1.9.9": True, "2.0-rc-1": True,
        "2.0": False, "2.0.0": False, "2-final": False, "2.0.1": False,
    },
    "(1.0,2.0)": {"1.0": False, "1.0.1": True, "1.9": True, "2.0": False, "2": False},
    "[1.0,2.0]": {"0.9": False, "1": True, "2.0.0": True, "2.0.1": False},
    "(1.0,)": {"1.0": False, "1": False, "1.0.0.1": True, "99": True},
    "[1.0,)": {"0.9": False, "1.0-alpha": False, "1": True, "99": True},
    "(,1.0)": {"0.1": True, "1.0-rc": True, "1.0": False, "1.0.1": False},
    "(,1.0]": {"0.1": True, "1.0.0": True, "1.0.1": False},
    "[1.2]": {"1.2": True, "1.2.0": True, "1.2-ga": True, "1.2.1": False, "1.2-rc": False},
    "1.2": {"1.2": True, "1.2.0": True, "1.2.0-final": True, "1.2.1": False, "1.1": False},
    "[1.0,1.0]": {"1": True, "1.0.0": True, "1.0.1": False, "0.9": False},
    "(,1.0],[1.2,)": {"0.5": True, "1.0": True, "1.1": False, "1.2": True, "3": True},
}  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "version", "expected"),
    [
        (spec, version, expected)
        for spec, cases in MAVEN_RANGES.items()
        for version, expected in cases.items()
    ],
)
def test_maven_range_bounds(spec: str, version: str, expected: bool) -> None:
    assert parse_spec("maven", spec).contains(version) is expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("(1.5)", "'(1.5)': a single version must be written [1.5]"),
        ("[1.5)", "'[1.5)': a single version must be written [1.5]"),
        ("(1.5]", "'(1.5]': a single version must be written [1.5]"),
        ("[]", "'[]': a single version must be written [1.5]"),
        ("[1,2,3]", "'[1,2,3]': a range has at most two bounds"),
        ("[1.0,]", "an open bound must use ( or )"),
        ("[,1.0]", "an open bound must use ( or )"),
        ("(1.0,1)", "write '[1.0]' for that version"),
        ("[2.0,1.0]", "'[2.0,1.0]' can never match a version"),
        ("[1,2],", "'[1,2],' ends with a comma"),
        (
            "1.0 [2.0]",
            "'1.0 [2.0]' is not a Maven version or range (e.g. [1.0,2.0), (,1.5], [1.5], "
            "[1.0],[1.2] for a list)",
        ),
        ("[1.0", "'[1.0' is not a Maven version or range (e.g. [1.0,2.0), (,1.5], [1.5],"),
        (
            "LATEST",
            "'LATEST' is a name Maven resolves to a different version over time: block the "
            "versions it points at now (e.g. [1.4.2]), or * for every version",
        ),
        ("[1.0,RELEASE)", "'RELEASE' is a name Maven resolves"),
        ("1.0 1.1", "Maven lists versions as ranges joined by commas: write '[1.0],[1.1]'"),
        ("1.0 OR 1.1", "write '[1.0],[1.1]'"),
        ("1.0|1.1", "write '[1.0],[1.1]'"),
        ("1.0, 1.1", "write '[1.0],[1.1]'"),
    ],
)
def test_refused_maven_specs_say_why(spec: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(message)):
        parse_spec("maven", spec)


def test_a_version_ending_in_release_is_a_version_not_a_moving_name() -> None:
    assert parse_spec("maven", "4.3.0.RELEASE").contains("4.3.0.RELEASE")
    assert parse_spec("maven", "[4.3.0.RELEASE,5)").contains("4.3.1")


# Maven qualifiers: aliases, short forms, prereleases ---------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("1a1", "1-alpha-1"),
        ("1b2", "1-beta-2"),
        ("1m3", "1-milestone-3"),
        ("1-cr1", "1-rc-1"),
        ("1.0-final", "1.0"),
        ("1.0.GA", "1"),
        ("1-release", "1.0.0"),
        ("1.0-ALPHA-1", "1.0-alpha-1"),
    ],
)
def test_maven_aliases_and_short_forms_are_equal(left: str, right: str) -> None:
    assert MavenVersion(left) == MavenVersion(right)
    assert hash(MavenVersion(left)) == hash(MavenVersion(right))


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1-alpha", "1-a"),  # `a` not followed by a digit is an unknown qualifier, not alpha
        ("1", "1-a"),
        ("1-cr1", "1-c1"),  # `c` is no short form: unknown, after every known qualifier
        ("1-alpha-1", "1-beta-1"),
        ("1-beta", "1-milestone"),
        ("1-milestone", "1-rc"),
        ("1-rc", "1-snapshot"),
        ("1-snapshot", "1"),
        ("1", "1-sp"),
        ("1-sp", "1-abc"),
        ("1-abc", "1-abd"),
        ("1.0-alpha", "1.0"),
    ],
)
def test_maven_qualifier_order(lower: str, higher: str) -> None:
    assert MavenVersion(lower) < MavenVersion(higher)
    assert MavenVersion(lower) != MavenVersion(higher)


def test_unknown_maven_qualifiers_compare_in_javas_utf16_order() -> None:
    # Java compares strings by UTF-16 code units: an astral character (a surrogate pair,
    # D800 DC00) sorts below U+FFFF, and a lone surrogate (possible in a JSON or XML escape)
    # is a unit like any other, not an error.
    order = ["1-\ud800", "1-\U00010000", "1-\uffff"]
    assert sorted(order, key=lambda text: versions.sort_key("maven", text)) == order
    assert len({versions.sort_key("maven", text) for text in order}) == 3


@pytest.mark.parametrize(
    ("version", "prerelease"),
    [
        ("1.0-alpha-1", True),
        ("1.0-SNAPSHOT", True),
        ("1.0.M1", True),
        ("1.0-1-rc", True),  # nested
        ("1.0", False),
        ("1.ga.1", False),  # a release qualifier in the middle
        ("1.0-sp-1", False),
        ("1.0-foo", False),
    ],
)
def test_maven_prerelease(version: str, prerelease: bool) -> None:
    assert versions.is_prerelease("maven", version) is prerelease


# PEP 440 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "===foo",  # one arbitrary equality
        "==1.0.*,<=1.0.dev0",  # the first version of a prefix is its .dev0
        "==1.4.*,<=1.4.dev0",
        "~=1!1.4.2,>=1!1.4.5",  # epochs are kept
        "==1!1.4.*,>=1!1.4.5",
        "!=1.0,>=1.0",
        ">=1.0,<=1.0",
    ],
)
def test_pep440_specs_some_version_satisfies_are_accepted(spec: str) -> None:
    parse_spec("pypi", spec)


@pytest.mark.parametrize(
    "spec",
    [
        "===1.0,===2.0",
        "<=1.0,>=2.0",
        "~=1.4.2,>=1.6",
        "~=1.4.2,<1.4",
        "==1.4.*,>=1.5",
        "!=1.0,==1.0",
        ">1.0,<=1.0",
        "!=1.5,!=1.6,!=1.7,>=2.0,<1.0",  # `!=` before the bounds skips only itself
        "===x,>=2.0,<1.0",
    ],
)
def test_pep440_specs_no_version_satisfies_are_refused(spec: str) -> None:
    message = (
        f"{spec!r} can never match a version: PEP 440 commas mean AND, and these bounds "
        "exclude each other (PEP 440 has no 'or': add one rule per version or range)"
    )
    with pytest.raises(InvalidSpec) as raised:
        parse_spec("pypi", spec)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "==0.1.5 or ==0.1.6",
            "PEP 440 has no 'or' ('==0.1.5 or ==0.1.6'): add one rule per version or range "
            "(==0.1.5, then ==0.1.6)",
        ),
        (
            "latest",
            "'latest' is a name, not a version: block the versions it means now (e.g. ==2.31.0), "
            "or * for every version",
        ),
        (
            "0.1.5, 0.1.6",
            "PEP 440 commas mean AND and it has no 'or', so '0.1.5, 0.1.6' cannot list versions: "
            "add one rule per version (==0.1.5, then ==0.1.6)",
        ),
    ],
)
def test_refused_pep440_specs_say_why(spec: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_spec("pypi", spec)
    assert str(raised.value) == message


def test_pep440_prefix_exclusion_is_no_bound() -> None:
    spec = parse_spec("pypi", "!=1.0.*")
    assert not spec.contains("1.0.5")
    assert spec.contains("1.1")
    assert parse_spec("pypi", "!=1.0.*,>=1.0").contains("1.2")


def test_pep440_specs_cover_prereleases() -> None:
    assert parse_spec("pypi", ">=1.0").contains("2.0rc1")
    assert parse_spec("pypi", "<2.0").contains("1.5.dev3")
    assert not parse_spec("pypi", "2004d").contains("2004e")  # legacy: its own text only


def test_pypi_order_puts_unparseable_versions_first() -> None:
    keys = sorted(["1.0", "2004d-legacy", "0.1"], key=lambda text: versions.sort_key("pypi", text))
    assert keys == ["2004d-legacy", "0.1", "1.0"]


# npm --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "1.0.0 OR 2.0.0",
            "npm separates alternatives with ||: write '1.0.0 || 2.0.0' (npm would not read "
            "'1.0.0 OR 2.0.0' as a list)",
        ),
        # loose-only forms are not suggested: npm reads specs strictly
        ("1.0.0, 01.2.3", "'1.0.0, 01.2.3' is not an npm version range"),
        ("1.0.0 or ~1.2.3beta", "'1.0.0 or ~1.2.3beta' is not an npm version range"),
        (
            "1.x.3",
            "'1.x.3' is not an npm version range (at 'a number after x or *'); e.g. 1.2.3, "
            "^1.2.0, >=1.0.0 <1.4.2, 1.0.0 || 2.0.0",
        ),
    ],
)
def test_refused_npm_lists_say_why(spec: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(message)):
        parse_spec("npm", spec)


# the single version a spec names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ecosystem", "spec", "exact"),
    [
        ("npm", "1.14.1", "1.14.1"),
        ("npm", " 1.14.1 ", "1.14.1"),
        ("npm", "=v2.0.0-beta.1", "2.0.0-beta.1"),
        ("npm", "v1.0.0", "1.0.0"),
        ("npm", "1.0.0+build.1", "1.0.0+build.1"),
        ("npm", "1.0", None),
        ("npm", "^1.14.1", None),
        ("npm", "1.0.0 - 2.0.0", None),
        ("npm", "*", None),
        ("pypi", "==2.31.0", "2.31.0"),
        ("pypi", "===2.31.0", "2.31.0"),
        ("pypi", "== 2.31.0", "2.31.0"),
        ("pypi", "2.31.0", "2.31.0"),
        ("pypi", "~=2.31", None),
        ("pypi", "!=2.31.0", None),
        ("pypi", "==2.*", None),
        ("pypi", "==", None),
        ("maven", "1.0", "1.0"),
        ("maven", " 1.0-rc-1 ", "1.0-rc-1"),
        ("maven", "[1.0]", None),
        ("maven", "(1.0,)", None),
        ("maven", "1.0,1.1", None),
        ("maven", "", None),
    ],
)
def test_exact_version(ecosystem: str, spec: str, exact: str | None) -> None:
    assert versions.exact_version(ecosystem, spec) == exact


# npm comparator sets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        ">=1.0.0 >1.0.0 <=1.0.0",  # the exclusive one of two equal lower bounds counts
        ">1.0.0 >=1.0.0 <=1.0.0",
        ">=1.0.0 <=1.0.0 <1.0.0",
        ">=1.0.0 <1.0.0 <=1.0.0",
        ">=2.0.0 >0.5.0 <=1.0.0",  # the highest lower bound counts, whatever comes after it
        "<=1.0.0 <3.0.0 >=2.0.0",
    ],
)
def test_npm_comparator_sets_no_version_satisfies_are_refused(spec: str) -> None:
    message = (
        f"{spec!r} can never match a version: none satisfies every comparator of {spec!r} "
        "(npm ANDs comparators separated by a space)"
    )
    with pytest.raises(InvalidSpec) as raised:
        parse_spec("npm", spec)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    "spec", [">=1.0.0 >=0.5.0 <=1.0.0 <=2.0.0", ">=0.5.0 >=1.0.0 <=2.0.0 <=1.0.0"]
)
def test_npm_comparator_sets_meeting_at_one_version_match_it(spec: str) -> None:
    parsed = parse_spec("npm", spec)
    assert [v for v in ["0.9.0", "1.0.0", "1.0.1"] if parsed.contains(v)] == ["1.0.0"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "1.0.0 ||",
            "'1.0.0 ||' has an empty alternative, which npm reads as every version: remove the "
            "stray || (or write * to cover every version)",
        ),
        (
            "=1.0.0 =1.0.1",
            "npm reads '=1.0.0 =1.0.1' as =1.0.0 AND =1.0.1, which no version is: to block each "
            "of them write '1.0.0 || 1.0.1'",
        ),
        (
            "1.2.3.4",
            "'1.2.3.4' is not an npm version range (at '1.2.3.4'); e.g. 1.2.3, ^1.2.0, "
            ">=1.0.0 <1.4.2, 1.0.0 || 2.0.0",
        ),
        (
            ">=latest",
            "'latest' is a dist-tag, a name that moves to other versions: block the versions it "
            "points at now (e.g. 1.2.3), or * for every version",
        ),
        ("^next <2.0.0", "'next' is a dist-tag, a name that moves to other versions"),
    ],
)
def test_refused_npm_specs_say_why(spec: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_spec("npm", spec)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        (">= 1.0.0 <= 2.0.0", ["1.0.0", "2.0.0"], ["0.9.9", "2.0.1"]),  # spaces after operators
        ("1.X", ["1.0.0", "1.9.9"], ["2.0.0"]),  # an upper-case X is a wildcard too
        ("1.x.x", ["1.0.0"], ["0.9.9"]),
    ],
)
def test_npm_specs_in_other_spellings(spec: str, inside: list[str], outside: list[str]) -> None:
    parsed = parse_spec("npm", spec)
    assert all(parsed.contains(version) for version in inside)
    assert not any(parsed.contains(version) for version in outside)


def test_npm_prerelease_identifiers_order_numbers_before_names() -> None:
    ordered = ["1.0.0-1", "1.0.0-2", "1.0.0-10", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta"]
    shuffled = [ordered[index] for index in (3, 0, 5, 2, 4, 1)]
    assert sorted(shuffled, key=lambda text: versions.sort_key("npm", text)) == ordered


# parse_spec itself ------------------------------------------------------------------------------


def test_the_longest_spec_accepted_is_max_spec_length() -> None:
    longest = ">=1.0.0" + " " * (versions.MAX_SPEC_LENGTH - 13) + "<2.0.0"
    assert len(longest) == versions.MAX_SPEC_LENGTH
    assert parse_spec("npm", longest).contains("1.5.0")
    with pytest.raises(InvalidSpec, match="at most 1024 characters"):
        parse_spec("npm", longest.replace(" <", "  <"))


@pytest.mark.parametrize("ecosystem", ["npm", "pypi", "maven"])
def test_a_parsed_spec_keeps_its_ecosystem_and_text(ecosystem: str) -> None:
    for text in ("*", " * "):
        parsed = parse_spec(ecosystem, text)
        assert (parsed.ecosystem, parsed.text) == (ecosystem, "*")
    parsed = parse_spec(ecosystem, " 1.0.0 ")
    assert (parsed.ecosystem, parsed.text) == (ecosystem, "1.0.0")
    assert versions.MavenVersion("1.0").text == "1.0"
