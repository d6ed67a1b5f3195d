"""Version order and range matching in each ecosystem's own syntax, including property tests
of the orders (a broken order silently mis-computes `latest`, `<release>` and blocks)."""

from __future__ import annotations

import functools
import itertools
import re

import nodesemver
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from mirror import versions
from mirror.versions import InvalidSpec, parse_spec

# npm ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("^1.2.0", ["1.2.0", "1.9.9", "1.3.0-beta.1"], ["1.1.9", "2.0.0", "0.9.0"]),
        ("~1.2", ["1.2.0", "1.2.99"], ["1.3.0", "1.1.0"]),
        ("1.x", ["1.0.0", "1.99.0"], ["2.0.0", "0.1.0"]),
        (">=1 <2", ["1.0.0", "1.5.5"], ["2.0.0", "0.9.9"]),
        ("1.2.3 - 1.4", ["1.2.3", "1.4.7"], ["1.2.2", "1.5.0"]),
        ("1.0.0 || >=3", ["1.0.0", "3.0.0", "4.1.0"], ["1.0.1", "2.0.0"]),
        ("1.14.1", ["1.14.1"], ["1.14.0", "1.14.2"]),
        ("*", ["0.0.1", "9.0.0-rc.1", "not-semver"], []),
        (">=1.0.0", ["2.0.0-rc.1"], ["1.0.0-rc.1"]),
    ],
)
def test_npm_ranges(spec: str, inside: list[str], outside: list[str]) -> None:
    compiled = parse_spec("npm", spec)
    for version in inside:
        assert compiled.contains(version), (spec, version)
    for version in outside:
        assert not compiled.contains(version), (spec, version)


def test_npm_order_puts_prereleases_before_their_release() -> None:
    ordered = ["not-semver", "0.9.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-rc.2"]
    ordered += ["1.0.0-rc.10", "1.0.0", "1.0.1", "1.10.0"]
    assert (
        sorted(ordered[1::2] + ordered[::2], key=lambda v: versions.sort_key("npm", v)) == ordered
    )


def test_npm_prerelease() -> None:
    assert versions.is_prerelease("npm", "1.0.0-rc.1")
    assert not versions.is_prerelease("npm", "1.0.0")
    assert not versions.is_prerelease("npm", "garbage")


# PyPI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        (">=2.99", ["2.99", "3.0", "3.0rc1"], ["2.98", "2.31.0"]),
        ("==1.0", ["1.0", "1.0.0"], ["1.0.1", "1.0rc1"]),
        ("1.0", ["1.0", "1.0.0"], ["1.0.1"]),
        # PEP 440: `<2.3` excludes 2.3's own prereleases
        (">=2.0,<2.3", ["2.0", "2.2.9", "2.2rc1"], ["1.9", "2.3", "2.3rc1"]),
        ("~=1.4", ["1.4", "1.9"], ["2.0", "1.3"]),
        ("!=1.5", ["1.4", "1.6"], ["1.5"]),
        ("==1.*", ["1.0", "1.99"], ["2.0"]),
    ],
)
def test_pep440_specifier_sets(spec: str, inside: list[str], outside: list[str]) -> None:
    compiled = parse_spec("pypi", spec)
    for version in inside:
        assert compiled.contains(version), (spec, version)
    for version in outside:
        assert not compiled.contains(version), (spec, version)


def test_pypi_order_and_prereleases() -> None:
    ordered = ["legacy-thing", "1.0.dev1", "1.0a1", "1.0rc1", "1.0", "1.0.post1", "1.1"]
    assert (
        sorted(ordered[1::2] + ordered[::2], key=lambda v: versions.sort_key("pypi", v)) == ordered
    )
    assert versions.is_prerelease("pypi", "1.0rc1")
    assert versions.is_prerelease("pypi", "1.0.dev1")
    assert not versions.is_prerelease("pypi", "1.0.post1")
    assert not versions.is_prerelease("pypi", "legacy-thing")


def test_pypi_names_are_pep503_normalized() -> None:
    assert versions.normalize_package("pypi", "Foo.Bar__baz") == "foo-bar-baz"
    assert versions.normalize_package("npm", "@Scope/Name") == "@Scope/Name"


# Maven ----------------------------------------------------------------------------------------


def test_maven_union_and_bare_version() -> None:
    union = parse_spec("maven", "[1.0,1.2),[1.5,)")
    assert [v for v in ["0.9", "1.0", "1.1", "1.2", "1.4", "1.5", "7"] if union.contains(v)] == [
        "1.0",
        "1.1",
        "1.5",
        "7",
    ]
    bare = parse_spec("maven", "1.2.3")
    assert bare.contains("1.2.3")
    assert not bare.contains("1.2.4")


def test_maven_prerelease() -> None:
    assert versions.is_prerelease("maven", "2.0-rc-1")
    assert versions.is_prerelease("maven", "2.0-SNAPSHOT")
    assert versions.is_prerelease("maven", "2.0.M1")
    assert not versions.is_prerelease("maven", "2.0")
    assert not versions.is_prerelease("maven", "2.0-sp-1")
    assert not versions.is_prerelease("maven", "2.0.Final")


# specs that do not parse, and versions that do not parse ---------------------------------------


@pytest.mark.parametrize(
    ("ecosystem", "spec", "message"),
    [
        ("npm", ">>>1", "not an npm version range"),
        ("npm", "latest", "is a dist-tag"),
        ("pypi", ">=>1", "not a PEP 440 specifier set"),
        ("maven", "[1.0", "not a Maven version or range"),
        ("maven", "(1.0]", "a single version must be written [1.5]"),
        ("maven", "[2.0,1.0]", "upper bound is below the lower bound"),
        ("maven", "[,1.0]", "an open bound must use ( or )"),
        ("maven", "[1,2],", "ends with a comma"),
        ("npm", "   ", "a version spec is required"),
        ("npm", "1" * 2000, "at most"),
        ("cargo", "1.0", "unknown ecosystem"),
    ],
)
def test_invalid_specs_say_why(ecosystem: str, spec: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(message)):
        parse_spec(ecosystem, spec)


# Every Maven string is a version (ComparableVersion orders anything), so only PyPI has these.
@pytest.mark.parametrize(("ecosystem", "odd"), [("pypi", "2004d"), ("pypi", "1.0-legacy-x")])
def test_unparseable_versions_match_only_star_or_themselves(ecosystem: str, odd: str) -> None:
    assert parse_spec(ecosystem, "*").contains(odd)
    assert parse_spec(ecosystem, odd).contains(odd)
    assert not parse_spec(ecosystem, odd).contains(odd + "9")
    assert not parse_spec(ecosystem, ">=1.0").contains(odd)


def test_npm_ranges_never_match_a_non_semver_version() -> None:
    assert parse_spec("npm", "*").contains("not-semver")
    assert not parse_spec("npm", ">=0.0.0").contains("not-semver")


def test_unknown_ecosystem_has_no_order() -> None:
    with pytest.raises(ValueError, match="unknown ecosystem"):
        versions.sort_key("cargo", "1.0")
    with pytest.raises(ValueError, match="unknown ecosystem"):
        versions.is_prerelease("cargo", "1.0")


# property tests of the orders -----------------------------------------------------------------

_maven_part = st.one_of(
    st.integers(min_value=0, max_value=30).map(str),
    # zeros and numbers of each width class: Int, Long (`0000000000` too), BigInteger
    st.sampled_from(["00", "0000000000", "2147483648", "1234567890123", "12345678901234567890"]),
    st.sampled_from(["alpha", "beta", "rc", "cr", "snapshot", "ga", "final", "sp", "m", "a"]),
    st.sampled_from(["foo", "jre", "android", "Final", "RELEASE", "SNAPSHOT", "x", ""]),
)
maven_versions = st.builds(
    lambda first, rest: first + "".join(sep + part for sep, part in rest),
    st.one_of(st.integers(min_value=0, max_value=20).map(str), st.sampled_from(["", "-", "."])),
    st.lists(st.tuples(st.sampled_from([".", "-", ""]), _maven_part), max_size=6),
)

# Maven 3.8's own order is not transitive on every string (`1 < 1.foo.2 < 1-alpha < 1`,
# checked against the jar in test_maven_conformance.py); ours is a total order on any strings,
# with equality an equivalence that hashes alike.

_maven_qualifier = st.sampled_from(
    ["alpha", "beta", "milestone", "rc", "cr", "snapshot", "ga", "final", "release", "sp", "foo",
     "jre", "android", "Final", "RELEASE", "SNAPSHOT", "M", "RC", "incubating"]
)  # fmt: skip
_maven_number = st.integers(min_value=0, max_value=30).map(str)
published_maven_versions = st.builds(
    lambda numbers, tail: ".".join(numbers) + tail,
    st.lists(_maven_number, min_size=1, max_size=4),
    st.one_of(
        st.sampled_from(["", "-SNAPSHOT"]),
        st.tuples(st.sampled_from(["-", "."]), _maven_qualifier).map("".join),  # 1.0-rc, 1.0.Final
        st.tuples(st.sampled_from(["-", ".", ""]), _maven_qualifier, _maven_number).map(
            "".join
        ),  # 1.0-rc1, 2.0.M1, 1.0beta2
        st.tuples(_maven_qualifier, _maven_number).map("-{0[0]}-{0[1]}".format),  # 1.0-alpha-1
    ),
)
any_maven_versions = st.one_of(maven_versions, published_maven_versions)


def assert_total_order(*texts: str) -> None:
    keys = [versions.sort_key("maven", text) for text in texts]
    for x, y in itertools.product(keys, repeat=2):
        # exactly one of <, ==, > holds, the opposite comparison agrees, equal ones hash alike
        assert [x < y, x == y, x > y].count(True) == 1
        assert (x < y) == (y > x)
        assert x != y or hash(x) == hash(y)
    for x, y, z in itertools.permutations(keys, 3):
        assert not (x <= y and y <= z) or x <= z
        assert x != y or (x < z) == (y < z)


@settings(max_examples=1000, deadline=None)
@given(any_maven_versions, any_maven_versions, any_maven_versions)
def test_maven_order_is_a_total_order(a: str, b: str, c: str) -> None:
    assert versions.sort_key("maven", a) == versions.sort_key("maven", a)
    assert_total_order(a, b, c)


_maven_tail = st.lists(
    st.tuples(st.sampled_from([".", "-", ""]), _maven_part), min_size=1, max_size=3
).map(lambda parts: "".join(sep + part for sep, part in parts))


@settings(max_examples=1000, deadline=None)
@given(any_maven_versions, _maven_tail, _maven_tail)
def test_maven_order_is_transitive_on_versions_sharing_a_prefix(
    prefix: str, tail: str, other_tail: str
) -> None:
    # Maven 3.8's cycles are a version and two longer ones (`1 < 1.foo.2 < 1-alpha < 1`), so
    # random triples seldom meet them; these do.
    assert_total_order(prefix, prefix + tail, prefix + other_tail)


@pytest.mark.parametrize(
    "cycle",
    [
        ["1", "1.foo.2", "1-alpha"],
        ["0", "0.foo", "0.alpha.0"],
        ["1", "1.sp-SNAPSHOT", "1-SNAPSHOT"],
        ["1", "1-sp", "1.0.alpha.1"],
        ["1", "1.sp", "1.0.alpha.1"],
        ["1", "0000000000.alpha.1", "0"],
        ["1.ga.1", "1.0.alpha.1", "1"],
    ],
)
def test_maven_order_is_transitive_where_maven_has_cycles(cycle: list[str]) -> None:
    assert_total_order(*cycle)


@settings(max_examples=300, deadline=None)
@given(st.lists(any_maven_versions, min_size=2, max_size=8))
def test_maven_sort_is_consistent(items: list[str]) -> None:
    keys = sorted(versions.sort_key("maven", v) for v in items)
    assert all(left <= right for left, right in itertools.pairwise(keys))
    # the same order whatever order the versions came in (equal versions compare equal)
    assert sorted(versions.sort_key("maven", v) for v in reversed(items)) == keys


npm_versions = st.builds(
    lambda major, minor, patch, pre: f"{major}.{minor}.{patch}" + (f"-{pre}" if pre else ""),
    st.integers(0, 20),
    st.integers(0, 20),
    st.integers(0, 20),
    st.one_of(
        st.just(""),
        st.lists(
            st.one_of(st.integers(0, 12).map(str), st.sampled_from(["alpha", "beta", "rc"])),
            min_size=1,
            max_size=3,
        ).map(".".join),
    ),
)


@settings(max_examples=300, deadline=None)
@given(npm_versions, npm_versions)
def test_npm_order_agrees_with_node_semver(a: str, b: str) -> None:
    expected = nodesemver.compare(a, b, loose=True)
    ka, kb = versions.sort_key("npm", a), versions.sort_key("npm", b)
    assert ((ka > kb) - (ka < kb)) == expected


pypi_versions = st.builds(
    lambda release, pre, post, dev: release + pre + post + dev,
    st.lists(st.integers(0, 15).map(str), min_size=1, max_size=3).map(".".join),
    st.one_of(st.just(""), st.sampled_from(["a", "b", "rc"]).map(lambda p: p + "1")),
    st.sampled_from(["", ".post1", ".post2"]),
    st.sampled_from(["", ".dev0", ".dev3"]),
)


@settings(max_examples=300, deadline=None)
@given(pypi_versions, pypi_versions)
def test_pypi_order_agrees_with_packaging(a: str, b: str) -> None:
    ka, kb = versions.sort_key("pypi", a), versions.sort_key("pypi", b)
    assert (ka < kb) == (Version(a) < Version(b))
    assert (ka == kb) == (Version(a) == Version(b))


def test_maven_sort_key_is_usable_with_cmp_free_sorting() -> None:
    # sorted() with the key alone (no cmp_to_key) is what the adapters do.
    shuffled = ["1.10", "1.9", "1.0-rc-1", "1.0", "1.0.1"]
    ordered = sorted(shuffled, key=functools.partial(versions.sort_key, "maven"))
    assert ordered == ["1.0-rc-1", "1.0", "1.0.1", "1.9", "1.10"]


# refusing what can never match: never a spec that matches something ----------------------------

_GRID = [f"{a}.{b}.{c}" for a in range(3) for b in range(3) for c in range(3)]


_pep440_specifier = st.tuples(
    st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "~="]),
    st.sampled_from([v.rsplit(".", 1)[0] for v in _GRID] + _GRID),
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(_pep440_specifier, min_size=1, max_size=3).map(",".join))
def test_pep440_never_refuses_a_specifier_set_some_version_satisfies(spec: str) -> None:
    grid = [Version(v) for v in _GRID] + [Version(f"{v}.1") for v in _GRID]
    grid += [Version("3.0"), Version("0.0.0.dev0")]
    satisfiable = any(SpecifierSet(spec).contains(v, prereleases=True) for v in grid)
    refusal = _refusal("pypi", spec)
    assert refusal is None or not satisfiable, (spec, refusal)


def _refusal(ecosystem: str, spec: str) -> str | None:
    try:
        parse_spec(ecosystem, spec)
    except InvalidSpec as exc:
        return str(exc)
    return None
