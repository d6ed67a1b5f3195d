"""Blocks proposed from OSV advisories (the open vulnerability format: https://ossf.github.io/
osv-schema/), for `mirror import-osv`. Pure: an advisory document in, block proposals out.

Each `affected` entry of an ecosystem the mirror serves (npm, PyPI, Maven) becomes blocks in
that ecosystem's own spec syntax: its `SEMVER`/`ECOSYSTEM` ranges (introduced → fixed or
last_affected) when it has them, else its explicit `versions` list. `GIT` ranges name
commits, not releases, and are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from mirror import policy, versions
from mirror.model import ECOSYSTEMS

MAX_REASON = 300


@dataclass(frozen=True, slots=True, order=True)
class ProposedBlock:
    ecosystem: str
    package: str
    versions: str
    reason: str


@dataclass(frozen=True, slots=True)
class Interval:
    introduced: str | None  # None: from the first release
    end: str | None  # None: no fix yet
    end_inclusive: bool  # last_affected (inclusive) rather than fixed (exclusive)


def blocks_from_advisory(advisory: Mapping[str, Any]) -> tuple[list[ProposedBlock], list[str]]:
    """(blocks, notes): what to block, and what was skipped and why."""
    advisory_id = str(advisory.get("id") or "OSV advisory")
    summary = str(advisory.get("summary") or advisory.get("details") or "").strip()
    reason = f"{advisory_id}: {summary}" if summary else advisory_id
    reason = reason[:MAX_REASON]
    if advisory.get("withdrawn"):
        return [], [f"{advisory_id} is withdrawn"]
    blocks: list[ProposedBlock] = []
    notes: list[str] = []
    affected = advisory.get("affected")
    if not isinstance(affected, list):
        return [], [f"{advisory_id} lists nothing affected"]
    for entry in affected:
        package = entry.get("package") if isinstance(entry, Mapping) else None
        if not isinstance(package, Mapping):
            notes.append(f"{advisory_id}: an affected entry without a package")
            continue
        # OSV writes "npm", "PyPI" and "Maven": ours, in another case.
        named = str(package.get("ecosystem", "")).lower()
        ecosystem = named if named in ECOSYSTEMS else None
        name = str(package.get("name") or "")
        if ecosystem is None:
            notes.append(f"{advisory_id}: {package.get('ecosystem')} is not served here")
            continue
        specs, skipped = _specs(ecosystem, entry)
        notes.extend(f"{advisory_id}: {ecosystem} {name} {note}" for note in skipped)
        if not specs:
            notes.append(f"{advisory_id}: no release ranges or versions for {name}")
            continue
        for spec in specs:
            try:
                policy.validate_rule("block", ecosystem, name, spec, reason)
            except policy.InvalidRule as exc:
                notes.append(f"{advisory_id}: {ecosystem} {name} {spec!r} skipped: {exc}")
                continue
            blocks.append(ProposedBlock(ecosystem, name, spec, reason))
    return sorted(set(blocks)), notes


def _specs(ecosystem: str, entry: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(specs, notes): the entry's ranges when it has release ranges, else its listed
    versions; a listed version that is not one in the ecosystem's syntax is noted, not
    allowed to spoil the spec listing the others."""
    intervals = [
        interval
        for found in entry.get("ranges") or ()
        if isinstance(found, Mapping) and found.get("type") in ("SEMVER", "ECOSYSTEM")
        for interval in _intervals(found.get("events") or ())
    ]
    if intervals:
        return _range_specs(ecosystem, intervals), []
    listed = [str(version).strip() for version in entry.get("versions") or ()]
    exact: list[str] = []
    notes: list[str] = []
    for version in filter(None, listed):
        try:
            versions.parse_spec(ecosystem, _exact_spec(ecosystem, version))
        except versions.InvalidSpec as exc:
            notes.append(f"version {version!r} skipped: {exc}")
        else:
            exact.append(version)
    return _version_specs(ecosystem, exact), notes


def _intervals(events: Iterable[Any]) -> list[Interval]:
    """OSV events in order: each `introduced` opens an interval, `fixed`/`last_affected`
    closes it; an interval left open has no fix."""
    intervals: list[Interval] = []
    start: str | None = None
    opened = False
    for event in events:
        if not isinstance(event, Mapping):
            continue
        if "introduced" in event:
            value = str(event["introduced"])
            start, opened = (None if value == "0" else value), True
        elif opened and ("fixed" in event or "last_affected" in event):
            inclusive = "last_affected" in event
            end = str(event["last_affected"] if inclusive else event["fixed"])
            intervals.append(Interval(start, end, inclusive))
            opened = False
    if opened:
        intervals.append(Interval(start, None, False))
    return intervals


def _range_specs(ecosystem: str, intervals: Sequence[Interval]) -> list[str]:
    if ecosystem == "npm":
        return [" || ".join(_npm_range(interval) for interval in intervals)]
    if ecosystem == "maven":
        return [",".join(_maven_range(interval) for interval in intervals)]
    # PEP 440 specifier sets cannot express a union: one block per interval.
    return [_pep440_range(interval) for interval in intervals]


def _comparators(interval: Interval) -> list[str]:
    """`>=introduced`, `<fixed` or `<=last_affected`: the same words in npm and PEP 440."""
    parts = []
    if interval.introduced is not None:
        parts.append(f">={interval.introduced}")
    if interval.end is not None:
        parts.append(f"{'<=' if interval.end_inclusive else '<'}{interval.end}")
    return parts


def _npm_range(interval: Interval) -> str:
    return " ".join(_comparators(interval)) or "*"


def _maven_range(interval: Interval) -> str:
    low = f"[{interval.introduced}" if interval.introduced is not None else "("
    if interval.end is None:
        high = ")"
    else:
        high = f"{interval.end}{']' if interval.end_inclusive else ')'}"
    return f"{low},{high}"


def _pep440_range(interval: Interval) -> str:
    return ",".join(_comparators(interval)) or "*"


def _exact_spec(ecosystem: str, version: str) -> str:
    """The spec naming exactly `version`: `==2.0` on PyPI (a legacy, non-PEP 440 version as
    its bare text, matched exactly), `[1.0]` on Maven, the version itself on npm."""
    if ecosystem == "maven":
        return f"[{version}]"
    if ecosystem == "pypi":
        try:
            Version(version)
        except InvalidVersion:
            return version
        return f"=={version}"
    return version


def _version_specs(ecosystem: str, listed: Sequence[str]) -> list[str]:
    if not listed:
        return []
    exact = [_exact_spec(ecosystem, version) for version in listed]
    if ecosystem == "npm":
        return [" || ".join(exact)]
    if ecosystem == "maven":
        return [",".join(exact)]
    return exact  # PEP 440 has no "or": one block per version
