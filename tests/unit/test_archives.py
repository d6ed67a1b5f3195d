"""The archive reader on hostile archives built here: path traversal, links, bombs, too many
entries, damaged and truncated archives; and the version diff built on it."""

from __future__ import annotations

import gzip
import io
import random
import stat
import tarfile
import time
import tracemalloc
import zipfile

from mirror.archives import Limits, directory_extent, format_of, normalised_name, read_archive
from mirror.archives import Listing as ArchiveListing
from mirror.versiondiff import (
    MAX_COMPARED_TOTAL,
    MAX_LINE_CHARS,
    Side,
    compare,
    file_changes,
    script_files,
    unified,
)


def tgz(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def zipped(members: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return raw.getvalue()


def test_a_tarball_lists_files_with_their_text_and_digest() -> None:
    listing = read_archive(
        tgz([("package/package.json", b'{"name": "x"}'), ("package/logo.png", b"\x89PNG\x00\x01")]),
        "tar",
    )
    assert listing.complete
    assert listing.problems == ()
    manifest = listing.entries["package/package.json"]
    assert manifest.text == '{"name": "x"}'
    assert manifest.size == 13
    assert len(manifest.sha256) == 64
    assert listing.entries["package/logo.png"].binary
    assert listing.entries["package/logo.png"].text is None
    assert set(listing.without_top_directory().entries) == {"package.json", "logo.png"}


def test_traversal_and_absolute_names_are_left_out_and_reported() -> None:
    names = ["../evil.js", "package/../../etc/passwd", "/etc/shadow", "a\\b.js", "C:/x.js"]
    listing = read_archive(
        tgz([(name, b"x") for name in names] + [("package/ok.js", b"ok")]), "tar"
    )
    assert set(listing.entries) == {"package/ok.js"}
    assert len(listing.problems) == len(names)
    assert all("unsafe name" in problem for problem in listing.problems)
    zip_listing = read_archive(zipped({"../../up.py": b"x", "pkg/ok.py": b"ok"}), "zip")
    assert set(zip_listing.entries) == {"pkg/ok.py"}
    assert normalised_name("./a//b/./c") == "a/b/c"
    assert normalised_name("a/\x00b") is None


def test_links_are_listed_with_their_target_never_followed() -> None:
    symlink = tarfile.TarInfo("package/config")
    symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hardlink = tarfile.TarInfo("package/hard")
    hardlink.type, hardlink.linkname = tarfile.LNKTYPE, "../../../root/.ssh/id_rsa"
    listing = read_archive(tgz([symlink, hardlink]), "tar")
    assert listing.entries["package/config"].kind == "link"
    assert listing.entries["package/config"].target == "/etc/passwd"
    assert listing.entries["package/hard"].target == "../../../root/.ssh/id_rsa"
    assert listing.entries["package/hard"].text is None
    zip_listing = read_archive(zipped({}, links={"pkg/link": "/etc/passwd"}), "zip")
    assert zip_listing.entries["pkg/link"].kind == "link"
    assert zip_listing.entries["pkg/link"].target == "/etc/passwd"


def test_a_bomb_stops_at_the_total_bound() -> None:
    limits = Limits(max_total_bytes=4 * 1024 * 1024)
    bomb = tgz([("package/zeros.bin", b"\x00" * (16 * 1024 * 1024))])
    assert len(bomb) < 64 * 1024
    listing = read_archive(bomb, "tar", limits)
    assert not listing.complete
    assert any("bomb" in problem for problem in listing.problems)
    zip_bomb = zipped({"zeros.bin": b"\x00" * (16 * 1024 * 1024)})
    listing = read_archive(zip_bomb, "zip", limits)
    assert not listing.complete
    assert any("bomb" in problem for problem in listing.problems)


def test_too_many_entries_stop_the_listing() -> None:
    limits = Limits(max_entries=10)
    listing = read_archive(tgz([(f"package/f{i}.js", b"x") for i in range(50)]), "tar", limits)
    assert len(listing.entries) == 10
    assert not listing.complete
    assert "more than 10 entries" in listing.problems[0]
    listing = read_archive(zipped({f"f{i}.py": b"x" for i in range(50)}), "zip", limits)
    # A zip says how many entries it has: past the bound it is not read at all.
    assert listing.entries == {}
    assert not listing.complete
    assert "declares 50 entries" in listing.problems[0]


def sparse_bomb() -> bytes:
    """A 184-byte .tgz whose one PAX member claims 10**15 bytes of holes."""
    member = tarfile.TarInfo("package/zeros.bin")
    member.pax_headers = {"GNU.sparse.map": "0,0", "GNU.sparse.size": str(10**15)}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(member)
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def test_a_sparse_member_is_listed_never_read() -> None:
    bomb = sparse_bomb()
    assert len(bomb) < 256
    started = time.monotonic()
    listing = read_archive(bomb, "tar")
    assert time.monotonic() - started < 1
    entry = listing.entries["package/zeros.bin"]
    assert entry.kind == "other"
    assert entry.sha256 == ""
    assert "package/zeros.bin is a sparse file: listed, not read" in listing.problems


def test_a_member_declaring_more_than_the_bound_is_not_read() -> None:
    limits = Limits(max_total_bytes=1024 * 1024)
    listing = read_archive(tgz([("package/big.bin", b"\x00" * (2 * 1024 * 1024))]), "tar", limits)
    assert listing.entries["package/big.bin"].kind == "other"
    assert any("declares 2097152 bytes" in problem for problem in listing.problems)
    assert not listing.complete


def test_a_bzip2_entry_is_never_inflated() -> None:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("zeros.bin", b"\x00" * (64 * 1024 * 1024))
    bomb = raw.getvalue()
    assert len(bomb) < 2048
    tracemalloc.start()
    try:
        listing = read_archive(bomb, "zip")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    assert listing.entries["zeros.bin"].kind == "other"
    assert "zeros.bin: not read: compression method bzip2 (12)" in listing.problems


def test_a_huge_central_directory_is_refused_before_it_is_parsed() -> None:
    many = zipped({f"f{i}": b"" for i in range(300)})
    entries, directory = directory_extent(io.BytesIO(many))
    assert entries == 300
    assert 300 * 46 < directory < len(many)
    listing = read_archive(many, "zip", Limits(max_directory_bytes=4096))
    assert listing.entries == {}
    assert not listing.complete
    assert "central directory" in listing.problems[0]
    # An end record that lies about its count is caught by the directory's size.
    lying = bytearray(many)
    lying[-12:-10] = (3).to_bytes(2, "little")
    lying[-14:-12] = (3).to_bytes(2, "little")
    listing = read_archive(bytes(lying), "zip", Limits(max_directory_bytes=4096))
    assert listing.entries == {}


def test_text_kept_is_bounded_over_all_files() -> None:
    files = [(f"package/f{i}.js", b"x" * 1000) for i in range(5)]
    listing = read_archive(tgz(files), "tar", Limits(max_kept_text=2500))
    kept = [name for name, entry in listing.entries.items() if entry.text is not None]
    assert len(kept) == 2
    assert all(entry.sha256 for entry in listing.entries.values())
    assert any("bytes of text in all" in problem for problem in listing.problems)


def test_a_reading_out_of_time_is_cut_short() -> None:
    listing = read_archive(tgz([("package/a.js", b"a")]), "tar", expired=lambda: True)
    assert not listing.complete
    assert listing.problems == ("review cut short: out of time; the listing is partial",)


def test_large_files_are_compared_by_digest_only() -> None:
    limits = Limits(max_text_bytes=100)
    listing = read_archive(tgz([("package/big.js", b"a" * 1000)]), "tar", limits)
    entry = listing.entries["package/big.js"]
    assert entry.size == 1000
    assert entry.text is None
    assert not entry.binary
    assert entry.sha256


def test_damaged_and_truncated_archives_say_so() -> None:
    whole = tgz([("package/a.js", b"a" * 5000), ("package/b.js", b"b" * 5000)])
    truncated = read_archive(whole[: len(whole) // 2], "tar")
    assert not truncated.complete
    assert any("damaged or truncated" in problem for problem in truncated.problems)
    garbage = read_archive(b"\x1f\x8b not really gzip at all", "tar")
    assert not garbage.complete
    assert garbage.entries == {}
    not_zip = read_archive(b"PK\x03\x04 nothing else", "zip")
    assert not not_zip.complete
    assert "damaged" in not_zip.problems[0]
    empty = read_archive(b"", "zip")
    assert not empty.complete


def test_formats_by_file_name() -> None:
    assert format_of("left-pad-1.0.0.tgz") == "tar"
    assert format_of("pkg-1.0.tar.gz") == "tar"
    assert format_of("pkg-1.0-py3-none-any.whl") == "zip"
    assert format_of("lib-1.0.jar") == "zip"
    assert format_of("lib-1.0.pom") is None


def test_the_diff_shows_an_added_install_script_and_dependency() -> None:
    old = read_archive(tgz([("package/package.json", b'{"name": "x", "version": "1.0.0"}')]), "tar")
    new_manifest = (
        b'{"name": "x", "version": "1.1.0", "scripts": {"postinstall": "node install.js"},'
        b' "dependencies": {"evil": "1.0.0"}}'
    )
    new = read_archive(
        tgz([("package/package.json", new_manifest), ("package/install.js", b"steal()\n")]), "tar"
    )
    diff = compare(
        "npm",
        Side("x-1.0.0.tgz", old.without_top_directory()),
        Side("x-1.1.0.tgz", new.without_top_directory()),
    )
    assert {(c.name, c.change) for c in diff.changes} == {
        ("package.json", "changed"),
        ("install.js", "added"),
    }
    assert any(
        s.startswith("install script added (postinstall: node install.js)") for s in diff.signals
    )
    assert "new dependencies: evil" in diff.signals
    titles = [section.title for section in diff.sections]
    assert "install script file install.js" in titles
    assert script_files("node ./scripts/setup.js && node-gyp rebuild") == ["scripts/setup.js"]


def test_a_diff_past_its_bound_is_not_shown() -> None:
    big = "\n".join(str(i) for i in range(5000))
    assert unified("", big, "a", "b").note.startswith("diff too large")
    assert unified("same\n", "same\n", "a", "b").note == "no change"
    longest = "\n".join(str(i) for i in range(6000))
    assert unified("", longest, "a", "b").note.startswith("too large to diff")
    long_line = unified("", "x" * 100_000, "a", "b").lines[-1]
    assert len(long_line) < MAX_LINE_CHARS + 40
    assert long_line.endswith("more characters)")


def text_listing(texts: dict[str, str]) -> ArchiveListing:
    return read_archive(tgz([(name, text.encode()) for name, text in texts.items()]), "tar")


def test_hostile_texts_are_diffed_within_a_bound_of_time() -> None:
    rng = random.Random(1)  # noqa: S311 (shuffled test data, nothing secret)
    vocabulary = [f"line {i}" for i in range(101, 200)]

    def hostile() -> str:
        return "\n".join(rng.choice(vocabulary) for _ in range(4_900))

    old = text_listing({f"f{i}.js": hostile() for i in range(30)})
    new = text_listing({f"f{i}.js": hostile() for i in range(30)})
    started = time.monotonic()
    changes, _unchanged = file_changes(old, new)
    assert time.monotonic() - started < 5
    notes = [change.diff.note for change in changes if change.diff]
    diffed = MAX_COMPARED_TOTAL // (2 * 4_900)
    assert notes[diffed:] == [
        f"too large to diff: this review compared {MAX_COMPARED_TOTAL} lines already"
    ] * (30 - diffed)
    cut = compare("npm", Side("a.tgz", old), Side("b.tgz", new), expired=lambda: True)
    assert "review cut short: out of time; the files after it were not diffed" in cut.problems
    assert all(c.diff.note.startswith("review cut short") for c in cut.changes if c.diff)


def test_a_big_size_jump_is_a_signal_and_a_link_is_never_diffed() -> None:
    old = read_archive(zipped({"lib/a.py": b"x = 1\n"}), "zip")
    new = read_archive(
        zipped(
            {"lib/a.py": b"x = 1\n", "lib/blob.bin": b"\x00" * (512 * 1024)},
            links={"lib/a_link": "/etc/passwd"},
        ),
        "zip",
    )
    diff = compare("pypi", Side("a.whl", old), Side("b.whl", new))
    assert any(signal.startswith("big size jump: 6 → ") for signal in diff.signals)
    notes = {change.name: change.diff.note for change in diff.changes if change.diff}
    assert notes["lib/blob.bin"] == "binary: compared by size and sha256 only"
    assert notes["lib/a_link"] == "a link to '/etc/passwd' (never followed)"
