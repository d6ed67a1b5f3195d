"""Blocks proposed from OSV advisories (the open vulnerability format: https://ossf.github.io/
osv-schema/), for `mirror import-osv`. Pure: an advisory document in, block proposals out.

Each `affected` entry of an ecosystem the mirror serves (npm, PyPI, Maven) becomes blocks in
that ecosystem's own spec syntax: its `SEMVER`/`ECOSYSTEM` ranges (introduced → fixed or
last_affected) when it has them, else its explicit `versions` list. `GIT` ranges name
commits, not releases, and are skipped.

The lifecycle (`plan`): a block an import created carries its advisory's id at the start of
its reason, so a later import of the same advisory finds it again without any extra field in
the state. A withdrawn advisory's blocks are lifted; a changed advisory's blocks that it no
longer proposes are removed and the new ones created; blocks whose reason names no advisory
of the import (made by hand, or by another feed) are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from mirror import policy, versions
from mirror.model import ECOSYSTEMS

MAX_REASON = 300
ANONYMOUS = "OSV advisory"  # the reason's prefix of an advisory without an id


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
    blocks, notes, _unread = read_advisory(advisory)
    return blocks, notes


def read_advisory(
    advisory: Mapping[str, Any],
) -> tuple[list[ProposedBlock], list[str], frozenset[tuple[str, str]]]:
    """(blocks, notes, unread): `blocks_from_advisory`'s answer, and the (ecosystem, package)
    pairs of served ecosystems the advisory names in an entry that was not read whole (no
    ranges or versions, a spec or version skipped): `plan` keeps their blocks, since what the
    advisory now says of them is unknown."""
    advisory_id = identify(advisory)
    summary = str(advisory.get("summary") or advisory.get("details") or "").strip()
    reason = f"{advisory_id}: {summary}" if summary else advisory_id
    reason = reason[:MAX_REASON]
    if advisory.get("withdrawn"):
        return [], [f"{advisory_id} is withdrawn"], frozenset()
    blocks: list[ProposedBlock] = []
    notes: list[str] = []
    unread: set[tuple[str, str]] = set()
    affected = advisory.get("affected")
    if not isinstance(affected, list):
        return [], [f"{advisory_id} lists nothing affected"], frozenset()
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
        if skipped or not specs:
            unread.add((ecosystem, name))
        if not specs:
            notes.append(f"{advisory_id}: no release ranges or versions for {name}")
            continue
        for spec in specs:
            try:
                policy.validate_rule("block", ecosystem, name, spec, reason)
            except policy.InvalidRule as exc:
                notes.append(f"{advisory_id}: {ecosystem} {name} {spec!r} skipped: {exc}")
                unread.add((ecosystem, name))
                continue
            blocks.append(ProposedBlock(ecosystem, name, spec, reason))
    return sorted(set(blocks)), notes, frozenset(unread)


def identify(advisory: Mapping[str, Any]) -> str:
    return str(advisory.get("id") or ANONYMOUS).strip() or ANONYMOUS


def unsupported(advisory: Mapping[str, Any]) -> list[str]:
    """The ecosystems of the advisory's affected entries that the mirror does not serve."""
    affected = advisory.get("affected")
    named = (
        str(entry["package"].get("ecosystem", ""))
        for entry in (affected if isinstance(affected, list) else ())
        if isinstance(entry, Mapping) and isinstance(entry.get("package"), Mapping)
    )
    return [ecosystem for ecosystem in named if ecosystem.lower() not in ECOSYSTEMS]


# the lifecycle: stored blocks against what the import proposes ------------------------------


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """A block the mirror holds (the fields the lifecycle compares). `claimable`: an
    advisory may own it by its reason (`owner`); a scheduled feed claims only the blocks it
    made, so a hand-made block whose reason starts with an advisory id is never lifted."""

    id: str
    ecosystem: str
    package: str
    versions: str
    reason: str
    claimable: bool = True


@dataclass(frozen=True, slots=True)
class Imported:
    """One advisory of an import: its id, whether it is withdrawn, what it proposes, and the
    (ecosystem, package) pairs it names in entries that could not be read whole (`unread`:
    their blocks are kept)."""

    advisory: str
    withdrawn: bool
    proposed: tuple[ProposedBlock, ...]
    unread: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Change:
    """One step of an import. `action`: "lift" (delete: the advisory is withdrawn),
    "remove" (delete: the advisory no longer proposes it), "create", "unchanged" (the
    advisory's block is stored already) or "exists" (an identical block not of this advisory
    is stored: nothing to create). `block_id` names the stored block, if any."""

    action: str
    advisory: str
    ecosystem: str
    package: str
    versions: str
    reason: str
    block_id: str | None = None


@dataclass(frozen=True, slots=True)
class Collected:
    """What an import read: each advisory's latest version (`imported`, the anonymous ones'
    blocks last, as one entry), the source each advisory came from, what was skipped and
    why, how many affected entries name an ecosystem not served here, how many advisories
    were read."""

    imported: tuple[Imported, ...]
    sources: Mapping[str, str]
    notes: tuple[str, ...]
    unsupported: int
    read: int


def collect(advisories: Iterable[tuple[str, Mapping[str, Any]]]) -> Collected:
    """(source, advisory) pairs, as read, into what `plan` compares: an advisory read twice
    counts as the later one (noted)."""
    notes: list[str] = []
    latest: dict[str, Imported] = {}  # by advisory id: the last one read wins
    sources: dict[str, str] = {}
    anonymous: list[ProposedBlock] = []
    unsupported_entries = 0
    read = 0
    for source, advisory in advisories:
        read += 1
        blocks, skipped, unread = read_advisory(advisory)
        notes.extend(skipped)
        unsupported_entries += len(unsupported(advisory))
        advisory_id = identify(advisory)
        if advisory_id == ANONYMOUS:
            anonymous.extend(blocks)
            sources.setdefault(ANONYMOUS, source)
            continue
        if advisory_id in latest:
            notes.append(f"{advisory_id} is read twice: the later one counts")
        withdrawn = bool(advisory.get("withdrawn"))
        latest[advisory_id] = Imported(advisory_id, withdrawn, tuple(blocks), unread)
        sources[advisory_id] = source
    imported = list(latest.values())
    if anonymous:
        imported.append(Imported(ANONYMOUS, False, tuple(sorted(set(anonymous)))))
    return Collected(tuple(imported), sources, tuple(notes), unsupported_entries, read)


def owner(reason: str, advisories: Iterable[str]) -> str | None:
    """The advisory (of `advisories`) whose block this reason is: `"{id}: {summary}"` or
    the id alone, as `blocks_from_advisory` writes it; None for any other reason."""
    for advisory in advisories:
        if reason == advisory or reason.startswith(f"{advisory}: "):
            return advisory
    return None


def plan(imported: Sequence[Imported], stored: Sequence[StoredBlock]) -> list[Change]:
    """What an import does, in the order to do it: creations first, deletions last, so the
    mirror never enforces fewer rules in between than before or after (a widened range is
    created before the narrow one goes). A block a deleted one leaves unheld is created for
    the advisory still proposing it rather than counted as existing. Only advisories with an
    id own blocks: an anonymous advisory's blocks are created, never lifted or removed; only
    `claimable` blocks are owned. A block whose package the advisory names in an entry that
    could not be read whole is kept (an unreadable update never lifts a block)."""
    by_id = {entry.advisory: entry for entry in imported if entry.advisory != ANONYMOUS}
    owners = {block.id: owner(block.reason, by_id) if block.claimable else None for block in stored}
    owned: dict[str, list[StoredBlock]] = {}
    for block in stored:
        found = owners[block.id]
        if found is not None:
            owned.setdefault(found, []).append(block)
    deletions: list[Change] = []
    kept: list[StoredBlock] = []
    for block in stored:
        found = owners[block.id]
        entry = by_id.get(found) if found is not None else None
        if entry is None:
            kept.append(block)
            continue
        still = any(_same(block, proposed) for proposed in entry.proposed)
        unknown = (block.ecosystem, block.package) in entry.unread
        if entry.withdrawn or not (still or unknown):
            action = "lift" if entry.withdrawn else "remove"
            deletions.append(_change(action, entry.advisory, block, block.id))
        else:
            kept.append(block)
    changes: list[Change] = []
    seen: set[tuple[str, str, str]] = set()
    for entry in imported:
        if entry.withdrawn:
            continue
        for proposed in entry.proposed:
            key = (proposed.ecosystem, proposed.package, proposed.versions)
            if key in seen:
                continue  # two advisories proposing the same block: the first one makes it
            seen.add(key)
            mine = [block for block in owned.get(entry.advisory, ()) if _same(block, proposed)]
            theirs = [block for block in kept if _same(block, proposed)]
            if mine:
                changes.append(_change("unchanged", entry.advisory, proposed, mine[0].id))
            elif theirs:
                changes.append(_change("exists", entry.advisory, proposed, theirs[0].id))
            else:
                changes.append(_change("create", entry.advisory, proposed, None))
    return changes + sorted(deletions, key=_order)


def outcomes(imported: Sequence[Imported], changes: Sequence[Change]) -> dict[str, str]:
    """Per advisory: "lifted" (withdrawn, its blocks deleted), "withdrawn" (nothing of it
    was stored), "updated" (blocks removed or added), "new" (all its blocks created),
    "unchanged", "covered" (what it proposes is blocked by others' blocks already) or
    "skipped" (it proposes nothing the mirror serves)."""
    actions: dict[str, set[str]] = {}
    for change in changes:
        actions.setdefault(change.advisory, set()).add(change.action)
    answer: dict[str, str] = {}
    for entry in imported:
        done = actions.get(entry.advisory, set())
        if entry.withdrawn:
            answer[entry.advisory] = "lifted" if "lift" in done else "withdrawn"
        elif "remove" in done or ("create" in done and "unchanged" in done):
            answer[entry.advisory] = "updated"
        elif "create" in done:
            answer[entry.advisory] = "new"
        elif "unchanged" in done:
            answer[entry.advisory] = "unchanged"
        elif not entry.proposed:
            answer[entry.advisory] = "skipped"
        else:
            answer[entry.advisory] = "covered"
    return answer


def _same(block: StoredBlock | ProposedBlock, other: StoredBlock | ProposedBlock) -> bool:
    return (block.ecosystem, block.package, block.versions) == (
        other.ecosystem,
        other.package,
        other.versions,
    )


def _change(
    action: str, advisory: str, block: StoredBlock | ProposedBlock, block_id: str | None
) -> Change:
    return Change(
        action, advisory, block.ecosystem, block.package, block.versions, block.reason, block_id
    )


def _order(change: Change) -> tuple[str, str, str, str]:
    return (change.advisory, change.ecosystem, change.package, change.versions)


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
