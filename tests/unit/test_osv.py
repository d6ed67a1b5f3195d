"""Blocks proposed from OSV advisories, in each ecosystem's own spec syntax, and checked
against the versions they must and must not cover."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror import versions
from mirror.osv import ProposedBlock, blocks_from_advisory


def advisory(*affected: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "GHSA-test-0001",
        "summary": "remote code execution",
        "affected": list(affected),
        **extra,
    }


def ranged(ecosystem: str, name: str, *events: dict[str, str]) -> dict[str, Any]:
    kind = "SEMVER" if ecosystem == "npm" else "ECOSYSTEM"
    return {
        "package": {"ecosystem": ecosystem, "name": name},
        "ranges": [{"type": kind, "events": list(events)}],
    }


@pytest.mark.parametrize(
    ("entry", "ecosystem", "spec", "inside", "outside"),
    [
        (
            ranged("npm", "axios", {"introduced": "0"}, {"fixed": "0.21.2"},
                   {"introduced": "1.0.0"}, {"last_affected": "1.14.1"}),
            "npm", "<0.21.2 || >=1.0.0 <=1.14.1",
            ["0.1.0", "0.21.1", "1.0.0", "1.14.1"], ["0.21.2", "0.30.0", "1.14.2"],
        ),
        (
            ranged("PyPI", "Requests", {"introduced": "2.3.0"}, {"fixed": "2.31.0"}),
            "pypi", ">=2.3.0,<2.31.0", ["2.3.0", "2.30.9"], ["2.2.9", "2.31.0"],
        ),
        (
            ranged("Maven", "org.example:lib", {"introduced": "1.0"}, {"fixed": "1.2"},
                   {"introduced": "2.0"}),
            "maven", "[1.0,1.2),[2.0,)", ["1.0", "1.1.9", "2.0", "9.9"], ["0.9", "1.2", "1.9"],
        ),
        (
            {"package": {"ecosystem": "npm", "name": "left-pad"}, "versions": ["1.3.0", "1.3.1"]},
            "npm", "1.3.0 || 1.3.1", ["1.3.0", "1.3.1"], ["1.3.2"],
        ),
        (
            {"package": {"ecosystem": "Maven", "name": "g:a"}, "versions": ["1.0", "1.5"]},
            "maven", "[1.0],[1.5]", ["1.0", "1.5"], ["1.1"],
        ),
    ],
)  # fmt: skip
def test_ranges_and_versions_become_specs(
    entry: dict[str, Any], ecosystem: str, spec: str, inside: list[str], outside: list[str]
) -> None:
    blocks, notes = blocks_from_advisory(advisory(entry))
    assert notes == []
    assert [(b.ecosystem, b.versions) for b in blocks] == [(ecosystem, spec)]
    assert blocks[0].reason == "GHSA-test-0001: remote code execution"
    compiled = versions.parse_spec(ecosystem, spec)
    assert all(compiled.contains(version) for version in inside)
    assert not any(compiled.contains(version) for version in outside)


def test_pypi_unions_become_one_block_per_interval() -> None:
    entry = ranged("PyPI", "demo", {"introduced": "0"}, {"fixed": "1.0"}, {"introduced": "2.0"})
    blocks, _ = blocks_from_advisory(advisory(entry))
    assert blocks == [
        ProposedBlock("pypi", "demo", "<1.0", "GHSA-test-0001: remote code execution"),
        ProposedBlock("pypi", "demo", ">=2.0", "GHSA-test-0001: remote code execution"),
    ]


def test_what_cannot_be_blocked_is_noted() -> None:
    git = {
        "package": {"ecosystem": "npm", "name": "x"},
        "ranges": [{"type": "GIT", "events": [{"introduced": "abc123"}]}],
    }
    other = {"package": {"ecosystem": "crates.io", "name": "serde"}}
    blocks, notes = blocks_from_advisory(advisory(git, other, {"versions": []}))
    assert blocks == []
    assert notes == [
        "GHSA-test-0001: no release ranges or versions for x",
        "GHSA-test-0001: crates.io is not served here",
        "GHSA-test-0001: an affected entry without a package",
    ]
    assert blocks_from_advisory(advisory(other, withdrawn="2026-01-01T00:00:00Z")) == (
        [],
        ["GHSA-test-0001 is withdrawn"],
    )


def test_a_listed_version_that_is_not_one_is_noted_and_the_rest_still_blocked() -> None:
    entry = {
        "package": {"ecosystem": "npm", "name": "left-pad"},
        "versions": ["1.3.0", "latest", "1.3.1"],
    }
    blocks, notes = blocks_from_advisory(advisory(entry))
    assert [b.versions for b in blocks] == ["1.3.0 || 1.3.1"]
    assert len(notes) == 1
    assert "'latest' skipped" in notes[0]
    legacy = {"package": {"ecosystem": "PyPI", "name": "old"}, "versions": ["2004d", "1.0"]}
    blocks, notes = blocks_from_advisory(advisory(legacy))
    assert notes == []
    assert sorted(b.versions for b in blocks) == ["2004d", "==1.0"]


def test_an_interval_that_covers_nothing_is_noted_not_stored() -> None:
    entry = ranged("npm", "demo", {"introduced": "1.2.0"}, {"fixed": "1.2.0"})
    blocks, notes = blocks_from_advisory(advisory(entry))
    assert blocks == []
    assert "can never match a version" in notes[0]


_release = st.tuples(*(st.integers(0, 3) for _ in range(3))).map(
    lambda parts: ".".join(map(str, parts))
)


@settings(max_examples=200, deadline=None)
@given(
    ecosystem=st.sampled_from(["npm", "PyPI", "Maven"]),
    bounds=st.lists(_release, min_size=1, max_size=6, unique=True),
    last_affected=st.booleans(),
    probes=st.lists(_release, min_size=1, max_size=10),
)
def test_osv_ranges_become_specs_that_pass_and_block_exactly_the_affected_versions(
    ecosystem: str, bounds: list[str], last_affected: bool, probes: list[str]
) -> None:
    """Every proposal passes the strict parser, and together they block exactly the versions
    inside the advisory's intervals (none lost to a spec that under-covers)."""
    key = functools.partial(versions.sort_key, ecosystem.lower())
    ordered = sorted(bounds, key=key)
    events: list[dict[str, str]] = []
    for index, bound in enumerate(ordered):
        if index % 2 == 0:
            events.append({"introduced": bound})
        else:
            events.append({"last_affected" if last_affected else "fixed": bound})
    intervals = [
        (ordered[index], ordered[index + 1] if index + 1 < len(ordered) else None)
        for index in range(0, len(ordered), 2)
    ]

    def affected(version: str) -> bool:
        for low, high in intervals:
            above = key(version) >= key(low)
            below = high is None or (
                key(version) <= key(high) if last_affected else key(version) < key(high)
            )
            if above and below:
                return True
        return False

    blocks, notes = blocks_from_advisory(advisory(ranged(ecosystem, "demo:pkg", *events)))
    assert notes == []
    compiled = [versions.parse_spec(block.ecosystem, block.versions) for block in blocks]
    for version in [*probes, *bounds]:
        covered = any(spec.contains(version) for spec in compiled)
        assert covered == affected(version), (version, [b.versions for b in blocks])
