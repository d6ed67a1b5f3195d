"""Blocks proposed from OSV advisories, in each ecosystem's own spec syntax, and checked
against the versions they must and must not cover."""

from __future__ import annotations

import functools
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror import versions
from mirror.advisories import Limits, UnreadableAdvisories, read_advisories
from mirror.osv import (
    ANONYMOUS,
    Imported,
    ProposedBlock,
    StoredBlock,
    blocks_from_advisory,
    collect,
    identify,
    outcomes,
    plan,
    unsupported,
)


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


# the lifecycle: stored blocks against what an import proposes ---------------------------------


def proposed(advisory_id: str, package: str, spec: str) -> ProposedBlock:
    return ProposedBlock("npm", package, spec, f"{advisory_id}: bad")


def stored(block_id: str, advisory_id: str, package: str, spec: str) -> StoredBlock:
    return StoredBlock(block_id, "npm", package, spec, f"{advisory_id}: bad")


def test_plan_lifts_withdrawn_replaces_changed_and_leaves_the_rest() -> None:
    imported = [
        Imported("MAL-1", True, (proposed("MAL-1", "a", "1.0.0"),)),
        Imported("MAL-2", False, (proposed("MAL-2", "b", "1.0.0 || 1.0.1"),)),
        Imported("MAL-3", False, (proposed("MAL-3", "c", "2.0.0"),)),
        Imported("MAL-4", False, (proposed("MAL-4", "d", "*"),)),
    ]
    held = [
        stored("r1", "MAL-1", "a", "1.0.0"),
        stored("r2", "MAL-2", "b", "1.0.0"),
        stored("r3", "MAL-3", "c", "2.0.0"),
        StoredBlock("r4", "npm", "e", "*", "found by hand"),
        stored("r5", "MAL-10", "a", "1.0.0"),  # not MAL-1's, though its id starts the same
        stored("r6", "MAL-99", "x", "1.0.0"),  # an advisory this import does not name
    ]
    changes = plan(imported, held)
    assert [(c.action, c.advisory, c.package, c.versions, c.block_id) for c in changes] == [
        ("create", "MAL-2", "b", "1.0.0 || 1.0.1", None),
        ("unchanged", "MAL-3", "c", "2.0.0", "r3"),
        ("create", "MAL-4", "d", "*", None),
        # Deletions last: the wider range is in force before the narrow one goes.
        ("lift", "MAL-1", "a", "1.0.0", "r1"),
        ("remove", "MAL-2", "b", "1.0.0", "r2"),
    ]
    assert outcomes(imported, changes) == {
        "MAL-1": "lifted", "MAL-2": "updated", "MAL-3": "unchanged", "MAL-4": "new",
    }  # fmt: skip


def test_plan_narrowing_and_dropping_a_package_remove_only_what_is_gone() -> None:
    imported = [Imported("MAL-5", False, (proposed("MAL-5", "a", "1.0.0"),))]
    held = [
        stored("r1", "MAL-5", "a", "1.0.0"),
        stored("r2", "MAL-5", "a", "1.0.1"),
        stored("r3", "MAL-5", "gone", "*"),
    ]
    changes = plan(imported, held)
    assert [(c.action, c.block_id) for c in changes] == [
        ("unchanged", "r1"), ("remove", "r2"), ("remove", "r3"),
    ]  # fmt: skip
    assert outcomes(imported, changes) == {"MAL-5": "updated"}


def test_plan_never_touches_blocks_of_others_and_recreates_what_a_lift_frees() -> None:
    held = [StoredBlock("hand", "npm", "a", "1.0.0", "MAL-1 looked bad to me")]
    imported = [
        Imported("MAL-1", True, ()),
        Imported("MAL-2", False, (proposed("MAL-2", "a", "1.0.0"),)),
    ]
    changes = plan(imported, held)
    assert [(c.action, c.advisory, c.block_id) for c in changes] == [("exists", "MAL-2", "hand")]
    assert outcomes(imported, changes) == {"MAL-1": "withdrawn", "MAL-2": "covered"}
    # The same block held by a withdrawn advisory: lifted, then created for the other one.
    held = [stored("r1", "MAL-1", "a", "1.0.0")]
    changes = plan(imported, held)
    assert [(c.action, c.advisory) for c in changes] == [("create", "MAL-2"), ("lift", "MAL-1")]


def test_anonymous_advisories_own_no_blocks() -> None:
    held = [StoredBlock("r1", "npm", "a", "1.0.0", f"{ANONYMOUS}: bad")]
    changes = plan([Imported(ANONYMOUS, False, ())], held)
    assert changes == []


def test_unsupported_ecosystems_are_named() -> None:
    document = advisory(
        ranged("npm", "a", {"introduced": "0"}),
        {"package": {"ecosystem": "crates.io", "name": "serde"}},
        {"package": {"ecosystem": "Go", "name": "x"}},
        {"no": "package"},
    )
    assert unsupported(document) == ["crates.io", "Go"]
    assert identify(document) == "GHSA-test-0001"
    assert identify({"id": "  "}) == ANONYMOUS
    blocks, notes = blocks_from_advisory({**document, "withdrawn": "2026-01-01T00:00:00Z"})
    assert blocks == []
    assert notes == ["GHSA-test-0001 is withdrawn"]


# reading files, directories and zips ----------------------------------------------------------


def write_feed(root: Path, count: int = 3) -> list[str]:
    ids = []
    for number in range(count):
        advisory_id = f"MAL-2026-{number}"
        path = root / "osv" / "malicious" / "npm" / f"pkg{number}" / f"{advisory_id}.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"id": advisory_id}), encoding="utf-8")
        ids.append(advisory_id)
    return ids


def zip_of(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def test_a_directory_is_read_at_any_depth_sorted_without_following_symlinks(
    tmp_path: Path,
) -> None:
    feed = tmp_path / "feed"
    ids = write_feed(feed)
    (feed / "README.md").write_text("not an advisory", encoding="utf-8")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"id": "OUTSIDE"}), encoding="utf-8")
    (feed / "osv" / "link.json").symlink_to(outside)
    (feed / "osv" / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
    assert [a["id"] for a in list(read_advisories([str(feed)]))] == ids
    bad = feed / "osv" / "zz.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(UnreadableAdvisories, match=r"zz\.json is not JSON"):
        list(read_advisories([str(feed)]))


def test_a_zip_is_read_like_a_directory(tmp_path: Path) -> None:
    members = {
        f"malicious-packages-main/osv/malicious/pypi/p{n}/MAL-{n}.json": json.dumps(
            {"id": f"MAL-{n}"}
        ).encode()
        for n in (2, 1)
    }
    members["malicious-packages-main/README.md"] = b"ignored"
    path = zip_of(tmp_path / "feed.zip", members)
    assert [a["id"] for a in list(read_advisories([path]))] == ["MAL-1", "MAL-2"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/etc/evil.json", "named outside the archive"),
        ("osv/../../evil.json", "named outside the archive"),
        ("C:/evil.json", "named outside the archive"),
        ("osv\\..\\evil.json", "named outside the archive"),
    ],
)
def test_hostile_zip_members_are_refused(tmp_path: Path, name: str, message: str) -> None:
    path = tmp_path / "feed.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("placeholder.json")
        info.filename = name  # ZipInfo() would clean the name; a hostile archive does not
        archive.writestr(info, b"{}")
    with pytest.raises(UnreadableAdvisories, match=message):
        list(read_advisories([str(path)]))


def test_a_symlink_zip_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feed.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("osv/link.json")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, b"/etc/passwd")
    with pytest.raises(UnreadableAdvisories, match="is a symlink"):
        list(read_advisories([str(path)]))


def test_a_zip_bomb_is_a_clear_error_not_memory(tmp_path: Path) -> None:
    # 64 MiB of zeros compress to about 64 KiB: reading stops one byte past the bound.
    bomb = zip_of(tmp_path / "bomb.zip", {"osv/MAL-1.json": bytes(64 * 1024 * 1024)})
    assert os.path.getsize(bomb) < 1024 * 1024
    with pytest.raises(UnreadableAdvisories, match="larger than 1024 bytes uncompressed"):
        list(read_advisories([bomb], Limits(file_bytes=1024)))
    many = zip_of(tmp_path / "many.zip", {f"osv/MAL-{n}.json": b"{}" for n in range(5)})
    with pytest.raises(UnreadableAdvisories, match="more than 4 advisory files"):
        list(read_advisories([many], Limits(files=4)))
    total = zip_of(
        tmp_path / "total.zip", {f"osv/MAL-{n}.json": b" " * 90 + b"{}" for n in range(5)}
    )
    with pytest.raises(UnreadableAdvisories, match="more than 300 bytes of advisories"):
        list(read_advisories([total], Limits(total_bytes=300)))
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"PK not really")
    with pytest.raises(UnreadableAdvisories, match="not a zip this command reads"):
        list(read_advisories([str(not_zip)]))


def test_directory_bounds(tmp_path: Path) -> None:
    write_feed(tmp_path, count=3)
    with pytest.raises(UnreadableAdvisories, match="more than 2 advisory files"):
        list(read_advisories([str(tmp_path)], Limits(files=2)))
    with pytest.raises(UnreadableAdvisories, match="larger than 5 bytes"):
        list(read_advisories([str(tmp_path)], Limits(file_bytes=5)))
    with pytest.raises(UnreadableAdvisories, match="more than 40 bytes of advisories"):
        list(read_advisories([str(tmp_path)], Limits(total_bytes=40)))


def test_collect_keeps_the_last_reading_of_an_advisory_and_where_it_came_from() -> None:
    def versions_of(advisory_id: str, name: str, *listed: str) -> dict[str, Any]:
        entry = {"package": {"ecosystem": "npm", "name": name}, "versions": list(listed)}
        return {"id": advisory_id, "affected": [entry]}

    read = [
        ("old.zip", versions_of("MAL-1", "a", "1.0.0")),
        ("new.zip", versions_of("MAL-1", "a", "2.0.0")),
        ("new.zip", {"id": "MAL-2", "withdrawn": "2026-11-01T00:00:00Z"}),
        ("new.zip", {"affected": [{"package": {"ecosystem": "Go", "name": "x"}}]}),
        ("new.zip", versions_of("", "b", "1.0.0")),
    ]
    collected = collect(read)
    assert collected.read == 5
    assert collected.unsupported == 1
    assert "MAL-1 is read twice: the later one counts" in collected.notes
    assert collected.sources == {"MAL-1": "new.zip", "MAL-2": "new.zip", ANONYMOUS: "new.zip"}
    assert [(entry.advisory, entry.withdrawn) for entry in collected.imported] == [
        ("MAL-1", False),
        ("MAL-2", True),
        (ANONYMOUS, False),
    ]
    (latest,) = collected.imported[0].proposed
    assert latest.versions == "2.0.0"
    assert [block.package for block in collected.imported[2].proposed] == ["b"]


def test_plan_keeps_the_blocks_of_a_package_whose_entry_could_not_be_read() -> None:
    """An update whose entry for a package no longer parses (here a listed version that is
    not npm's syntax) says nothing readable of it: its block stays; another package the
    advisory dropped is removed as before."""
    update = advisory(
        {"package": {"ecosystem": "npm", "name": "a"}, "versions": ["not a version!"]},
        {"package": {"ecosystem": "npm", "name": "b"}, "versions": ["2.0.0"]},
    )
    collected = collect([("feed", update)])
    [entry] = collected.imported
    assert ("npm", "a") in entry.unread
    held = [
        StoredBlock("r1", "npm", "a", "1.0.0", f"{entry.advisory}: bad"),
        StoredBlock("r2", "npm", "gone", "*", f"{entry.advisory}: bad"),
    ]
    changes = plan(collected.imported, held)
    assert [(c.action, c.package, c.block_id) for c in changes] == [
        ("create", "b", None), ("remove", "gone", "r2"),
    ]  # fmt: skip


def test_plan_never_owns_a_block_that_is_not_claimable() -> None:
    """A scheduled feed claims only the blocks it made: a hand-made block whose reason starts
    with the advisory's id is neither lifted nor replaced."""
    hand = StoredBlock("hand", "npm", "a", "*", "MAL-1: confirmed by us", claimable=False)
    assert plan([Imported("MAL-1", True, ())], [hand]) == []
    changes = plan([Imported("MAL-1", False, (proposed("MAL-1", "a", "1.0.0"),))], [hand])
    assert [(c.action, c.block_id) for c in changes] == [("create", None)]
