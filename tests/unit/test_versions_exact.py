"""`===V`, the exact spec of every ecosystem: it matches the version spelled V and nothing the
ecosystem merely counts as equal (Maven `1.0.0` for `1.0`, PyPI `1.0+local`, npm build
metadata), so an "exactly this version" rule never lets an unreviewed version through."""

from __future__ import annotations

import pytest

from mirror import versions
from mirror.versions import InvalidSpec, described, exact_spec, exact_version, parse_spec

# (ecosystem, spec, matched, not matched although the ecosystem calls them equal or close)
CASES = [
    ("maven", "===1.0", ["1.0"], ["1.0.0", "1", "1-ga", "1.0.final", "1.0-0", "1.0.0.0", "1.1"]),
    ("maven", "===1.0", [], ["1.0-SNAPSHOT", "1.0-ga"]),
    ("maven", "===1.0-RC1", ["1.0-RC1"], ["1.0-rc1", "1.0-cr1", "1.0-rc-1", "1.0"]),
    ("pypi", "===1.0", ["1.0"], ["1.0+evil", "1.0.0", "1.0.0+x", "1.0.post0", "1.0rc1", "1.1"]),
    # The mirror keeps PyPI versions canonical (str(Version(v))), and so does the spec.
    ("pypi", "===1.0-beta", ["1.0b0"], ["1.0b1", "1.0"]),
    ("pypi", "===2004d", ["2004d"], ["2004D", "2004"]),  # not PEP 440: the text itself
    ("npm", "===1.0.0", ["1.0.0"], ["1.0.0+evil", "v1.0.0", "=1.0.0", "1.0.1", "1.0.0-rc.1"]),
    ("npm", "===1.0.0-rc.1", ["1.0.0-rc.1"], ["1.0.0-rc.1+b", "1.0.0"]),
]  # fmt: skip


@pytest.mark.parametrize(("ecosystem", "spec", "matched", "unmatched"), CASES)
def test_an_exact_spec_matches_only_its_own_spelling(
    ecosystem: str, spec: str, matched: list[str], unmatched: list[str]
) -> None:
    parsed = parse_spec(ecosystem, spec)
    for version in matched:
        assert parsed.contains(version), version
    for version in unmatched:
        assert not parsed.contains(version), version


@pytest.mark.parametrize(
    ("ecosystem", "plain", "neighbour"),
    [("maven", "1.0", "1.0.0"), ("pypi", "1.0", "1.0+evil"), ("npm", "1.0.0", "1.0.0+evil")],
)
def test_a_plain_version_still_matches_what_its_ecosystem_counts_as_equal(
    ecosystem: str, plain: str, neighbour: str
) -> None:
    # Why the exact form exists: the ecosystem's own equality is wider than the spelling.
    assert parse_spec(ecosystem, plain).contains(neighbour)
    assert not parse_spec(ecosystem, exact_spec(plain)).contains(neighbour)


@pytest.mark.parametrize("ecosystem", ["npm", "pypi", "maven"])
@pytest.mark.parametrize("spec", ["===", "=== ", "===1.0 2.0", "====1.0", "===1.0\t||2.0"])
def test_an_exact_spec_names_one_version(ecosystem: str, spec: str) -> None:
    with pytest.raises(InvalidSpec, match="==="):
        parse_spec(ecosystem, spec)


def test_an_exact_spec_of_an_unknown_ecosystem_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="unknown ecosystem"):
        parse_spec("cobol", "===1.0")


@pytest.mark.parametrize("ecosystem", ["npm", "pypi", "maven"])
def test_an_exact_spec_is_one_exact_version(ecosystem: str) -> None:
    assert exact_version(ecosystem, "===1.0.0") == "1.0.0"
    assert exact_version(ecosystem, " === 1.0.0 ") == "1.0.0"
    assert exact_version(ecosystem, "===") is None
    assert exact_spec(" 1.0.0 ") == "===1.0.0"


def test_an_exact_spec_reads_as_words() -> None:
    assert described("===1.0") == "exactly 1.0"
    assert described(">=1.0,<2") == ">=1.0,<2"
    assert described(versions.ANY_VERSION) == "*"


@pytest.mark.parametrize("ecosystem", ["npm", "pypi", "maven"])
def test_two_exact_versions_are_no_spec(ecosystem: str) -> None:
    with pytest.raises(InvalidSpec):
        parse_spec(ecosystem, "===1.0,===2.0")
    assert exact_version(ecosystem, "===1.0,===2.0") is None
