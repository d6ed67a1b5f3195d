"""Listing and reading the entries of an untrusted archive (an npm `.tgz`, a PyPI sdist
`.tar.gz` or `.zip`, a wheel, a jar) for a reviewer, never extracting anything. Pure: the
caller hands in bytes or an open file and gets a `Listing` back.

Bounded whatever the archive claims: at most `Limits.max_entries` entries, at most
`Limits.max_text_bytes` of one file kept as text (larger files are compared by size and
sha256 only), at most `Limits.max_total_bytes` inflated in all (a zip or tar bomb stops the
listing and says so). Names are normalised; a name with a `..` part, an absolute path, a
drive letter, a backslash or a NUL is left out and reported. Symlinks and hardlinks are
listed as links with their target text, never followed. A damaged or truncated archive
keeps what was read before the damage, and says so."""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Final, Literal

MAX_ENTRIES: Final = 5_000
MAX_TEXT_BYTES: Final = 1024 * 1024
MAX_TOTAL_BYTES: Final = 256 * 1024 * 1024
# A link's target text, at most (a zip stores it as the entry's content).
MAX_LINK_TARGET: Final = 1024
# Bytes looked at to tell text from binary.
SNIFF_BYTES: Final = 8192
_CHUNK: Final = 64 * 1024

Kind = Literal["file", "directory", "link", "other"]
ArchiveFormat = Literal["tar", "zip"]


@dataclass(frozen=True, slots=True)
class Limits:
    max_entries: int = MAX_ENTRIES
    max_text_bytes: int = MAX_TEXT_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry: a file's size and sha256, and its text when it is UTF-8 text within the
    text bound (None otherwise: `binary` says which); a link's `target` text."""

    name: str
    kind: Kind
    size: int = 0
    sha256: str = ""
    text: str | None = None
    binary: bool = False
    target: str = ""


@dataclass(frozen=True, slots=True)
class Listing:
    """The entries read (by normalised name), what was wrong, and whether the whole archive
    was read (`complete` False: stopped at a bound or at damage; `problems` says why)."""

    entries: Mapping[str, Entry] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    complete: bool = True

    def without_top_directory(self) -> Listing:
        """The entries below the one directory every entry is in (`package/` of an npm
        tarball, `name-1.0/` of an sdist), so two versions' archives compare by the same
        names; unchanged when the entries do not share one."""
        tops = {name.split("/", 1)[0] for name in self.entries}
        if len(tops) != 1 or all("/" not in name for name in self.entries):
            return self
        top = next(iter(tops)) + "/"
        moved = {
            name[len(top) :]: _renamed(entry, name[len(top) :])
            for name, entry in self.entries.items()
            if name.startswith(top) and name != top
        }
        return Listing(entries=moved, problems=self.problems, complete=self.complete)


def _renamed(entry: Entry, name: str) -> Entry:
    return Entry(
        name=name,
        kind=entry.kind,
        size=entry.size,
        sha256=entry.sha256,
        text=entry.text,
        binary=entry.binary,
        target=entry.target,
    )


class _Stop(Exception):
    """A bound was reached: stop reading, keep what was read."""


def format_of(filename: str) -> ArchiveFormat | None:
    """The archive format of an artifact file name (None: not an archive read here)."""
    lowered = filename.lower()
    if lowered.endswith((".tgz", ".tar.gz", ".tar")):
        return "tar"
    if lowered.endswith((".zip", ".whl", ".jar", ".war", ".ear")):
        return "zip"
    return None


def normalised_name(raw: str) -> str | None:
    """`raw` as a relative path with `/` separators, no `.` parts and no doubled slashes;
    None when it is not safe to show as a path inside the archive (a `..` part, absolute,
    a drive letter, a backslash, a NUL or another control character)."""
    if not raw or "\\" in raw or any(ord(char) < 0x20 or ord(char) == 0x7F for char in raw):
        return None
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":"):
        return None
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def read_archive(
    source: bytes | BinaryIO, archive_format: ArchiveFormat, limits: Limits = Limits()
) -> Listing:
    """Every entry of the archive in `source` (see the module's bounds)."""
    file: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
    reader = _Reader(limits)
    try:
        if archive_format == "tar":
            reader.read_tar(file)
        else:
            reader.read_zip(file)
    except _Stop:
        reader.complete = False
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        reader.complete = False
        reader.problems.append(f"the archive is damaged or truncated ({_why(exc)}): read so far")
    except NotImplementedError as exc:  # a zip compression method Python does not read
        reader.complete = False
        reader.problems.append(f"the archive uses what cannot be read here ({_why(exc)})")
    return Listing(
        entries=reader.entries, problems=tuple(reader.problems), complete=reader.complete
    )


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


class _Budget(io.RawIOBase):
    """A readable stream that counts the bytes read through it and stops past the total
    bound: the inflated side of a gzip-compressed tar."""

    def __init__(self, inner: BinaryIO, reader: _Reader) -> None:
        self._inner = inner
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        self._reader.spend(len(data))
        buffer[: len(data)] = data
        return len(data)


class _Reader:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.entries: dict[str, Entry] = {}
        self.problems: list[str] = []
        self.complete = True
        self.inflated = 0
        self._seen = 0

    def spend(self, size: int) -> None:
        self.inflated += size
        if self.inflated > self.limits.max_total_bytes:
            self.problems.append(
                f"more than {self.limits.max_total_bytes} bytes inflated: stopped (a "
                "compression bomb?); the listing is partial"
            )
            raise _Stop

    def count(self) -> None:
        self._seen += 1
        if self._seen > self.limits.max_entries:
            self.problems.append(
                f"more than {self.limits.max_entries} entries: stopped; the listing is partial"
            )
            raise _Stop

    def name_of(self, raw: str) -> str | None:
        name = normalised_name(raw)
        if name is None:
            self.problems.append(f"an entry with an unsafe name was left out: {raw[:200]!r}")
            return None
        if name in self.entries:
            self.problems.append(f"{name} appears more than once: the last one is shown")
        return name

    # tar ---------------------------------------------------------------------------------

    def read_tar(self, file: BinaryIO) -> None:
        start = file.read(2)
        file.seek(0)
        stream: BinaryIO = file
        if start == b"\x1f\x8b":
            stream = gzip.GzipFile(fileobj=file, mode="rb")  # type: ignore[assignment]
        inflated = io.BufferedReader(_Budget(stream, self), buffer_size=_CHUNK)
        # Stream mode: members in order, nothing sought back to, nothing extracted.
        with tarfile.open(fileobj=inflated, mode="r|") as archive:
            for member in archive:
                self.count()
                name = self.name_of(member.name)
                if name is None:
                    continue
                if member.issym() or member.islnk():
                    self.entries[name] = Entry(
                        name=name, kind="link", target=member.linkname[:MAX_LINK_TARGET]
                    )
                elif member.isdir():
                    self.entries[name] = Entry(name=name, kind="directory")
                elif member.isfile():
                    data = archive.extractfile(member)
                    if data is None:
                        continue
                    self.entries[name] = self._file(name, data, counted=True)
                else:
                    self.entries[name] = Entry(name=name, kind="other")

    # zip ---------------------------------------------------------------------------------

    def read_zip(self, file: BinaryIO) -> None:
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                self.count()
                name = self.name_of(info.filename)
                if name is None:
                    continue
                mode = info.external_attr >> 16
                if info.is_dir():
                    self.entries[name] = Entry(name=name, kind="directory")
                    continue
                if info.flag_bits & 0x1:
                    self.problems.append(f"{name} is encrypted: listed, not read")
                    self.entries[name] = Entry(name=name, kind="other", size=info.file_size)
                    continue
                with archive.open(info) as data:
                    if stat.S_ISLNK(mode):
                        target = data.read(MAX_LINK_TARGET)
                        self.spend(len(target))
                        self.entries[name] = Entry(
                            name=name, kind="link", target=target.decode("utf-8", "replace")
                        )
                    else:
                        self.entries[name] = self._file(name, data, counted=False)

    # both --------------------------------------------------------------------------------

    def _file(self, name: str, data: IO[bytes], *, counted: bool) -> Entry:
        """A regular file's entry: hashed in chunks, kept as text when small UTF-8 text.
        `counted`: its bytes are counted against the total already (a tar member is, by the
        stream under it)."""
        digest = hashlib.sha256()
        kept = bytearray()
        size = 0
        while chunk := data.read(_CHUNK):
            if not counted:
                self.spend(len(chunk))
            digest.update(chunk)
            size += len(chunk)
            if len(kept) <= self.limits.max_text_bytes:
                kept += chunk[: self.limits.max_text_bytes + 1 - len(kept)]
        binary = b"\x00" in kept[:SNIFF_BYTES]
        text: str | None = None
        if not binary and size <= self.limits.max_text_bytes:
            try:
                text = bytes(kept).decode("utf-8")
            except UnicodeDecodeError:
                binary = True
        return Entry(
            name=name, kind="file", size=size, sha256=digest.hexdigest(), text=text, binary=binary
        )
