"""Listing and reading the entries of an untrusted archive (an npm `.tgz`, a PyPI sdist
`.tar.gz` or `.zip`, a wheel, a jar) for a reviewer, never extracting anything. Pure: the
caller hands in bytes or an open file and gets a `Listing` back.

Bounded whatever the archive claims: at most `Limits.max_entries` entries, at most
`Limits.max_text_bytes` of one file and `Limits.max_kept_text` of all files kept as text
(other files are compared by size and sha256 only), at most `Limits.max_total_bytes`
inflated in all, counted both on the decompressed stream and on the bytes of each entry read
(a zip or tar bomb stops the listing and says so). Never read at all: sparse tar members
(their holes are made up without reading anything), members declaring more than what is
left of the bound, zip entries compressed otherwise than stored or deflated (bzip2 and LZMA
inflate without an output bound in `zipfile`), and zips whose end record declares more than
`max_entries` entries or a central directory over `max_directory_bytes` (checked before
`zipfile` parses that directory). A caller's `expired` is asked between entries and chunks:
when it answers True the listing stops, partial, and says the review was cut short.

Names are normalised; a name with a `..` part, an absolute path, a
drive letter, a backslash or a NUL is left out and reported. Symlinks and hardlinks are
listed as links with their target text, never followed. A damaged or truncated archive
keeps what was read before the damage, and says so."""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Final, Literal

MAX_ENTRIES: Final = 5_000
MAX_TEXT_BYTES: Final = 1024 * 1024
MAX_TOTAL_BYTES: Final = 256 * 1024 * 1024
# Text kept for diffs over all the files of one archive (a str may take 4 bytes a character).
MAX_KEPT_TEXT: Final = 8 * 1024 * 1024
# A zip's central directory read at most (zipfile builds one object per entry of it).
MAX_DIRECTORY_BYTES: Final = 2 * 1024 * 1024
# Zip compression methods read here: others are listed, never inflated.
READ_METHODS: Final = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_METHOD_NAMES: Final = {9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstd", 98: "ppmd"}
# The zip end of central directory record (22 bytes and a comment of up to 65,535), and the
# zip64 locator (20 bytes, just before it) and record it points to.
_END: Final = b"PK\x05\x06"
_END_SIZE: Final = 22
_END64_LOCATOR: Final = b"PK\x06\x07"
_END64: Final = b"PK\x06\x06"
# A link's target text, at most (a zip stores it as the entry's content).
MAX_LINK_TARGET: Final = 1024
# Bytes looked at to tell text from binary.
SNIFF_BYTES: Final = 8192
_CHUNK: Final = 64 * 1024

Kind = Literal["file", "directory", "link", "other"]
# Asked between entries and chunks: True stops the reading (the caller ran out of time).
Expired = Callable[[], bool]
ArchiveFormat = Literal["tar", "zip"]


@dataclass(frozen=True, slots=True)
class Limits:
    max_entries: int = MAX_ENTRIES
    max_text_bytes: int = MAX_TEXT_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_kept_text: int = MAX_KEPT_TEXT
    max_directory_bytes: int = MAX_DIRECTORY_BYTES


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
    source: bytes | BinaryIO,
    archive_format: ArchiveFormat,
    limits: Limits = Limits(),
    *,
    expired: Expired | None = None,
) -> Listing:
    """Every entry of the archive in `source` (see the module's bounds)."""
    file: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
    reader = _Reader(limits, expired)
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


def directory_extent(file: BinaryIO) -> tuple[int, int]:
    """The entry count and central directory size a zip's end record declares (its zip64
    record's when it has one). BadZipFile when there is no end record."""
    file.seek(0, io.SEEK_END)
    size = file.tell()
    tail_start = max(0, size - _END_SIZE - 0xFFFF)
    file.seek(tail_start)
    tail = file.read()
    at = tail.rfind(_END)
    if at < 0 or len(tail) - at < _END_SIZE:
        raise zipfile.BadZipFile("no end of central directory record")
    entries, directory = struct.unpack_from("<HI", tail, at + 10)
    end = tail_start + at
    if (entries == 0xFFFF or directory == 0xFFFFFFFF) and end >= 20:
        file.seek(end - 20)
        locator = file.read(20)
        if locator[:4] == _END64_LOCATOR:
            (offset,) = struct.unpack_from("<Q", locator, 8)
            file.seek(offset)
            record = file.read(56)
            if len(record) == 56 and record[:4] == _END64:
                entries, directory = struct.unpack_from("<QQ", record, 32)
    return int(entries), int(directory)


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
        self._reader.inflate(len(data))
        buffer[: len(data)] = data
        return len(data)


class _Reader:
    def __init__(self, limits: Limits, expired: Expired | None) -> None:
        self.limits = limits
        self.expired = expired
        self.entries: dict[str, Entry] = {}
        self.problems: list[str] = []
        self.complete = True
        # Decompressed bytes of the stream under a tar, and bytes of entries read (sparse
        # holes included): each against the total bound.
        self.inflated = 0
        self.read = 0
        self.kept_text = 0
        self._seen = 0

    def _too_much(self) -> None:
        self.problems.append(
            f"more than {self.limits.max_total_bytes} bytes inflated: stopped (a "
            "compression bomb?); the listing is partial"
        )
        raise _Stop

    def inflate(self, size: int) -> None:
        self.inflated += size
        if self.inflated > self.limits.max_total_bytes:
            self._too_much()

    def spend(self, size: int) -> None:
        """`size` more bytes of entries read (and hashed)."""
        self.read += size
        if self.read > self.limits.max_total_bytes:
            self._too_much()
        self.check_time()

    def left(self) -> int:
        return self.limits.max_total_bytes - self.read

    def check_time(self) -> None:
        if self.expired is not None and self.expired():
            self.problems.append("review cut short: out of time; the listing is partial")
            raise _Stop

    def declared_too_large(self, name: str, size: int) -> bool:
        """Whether an entry declares more bytes than the total bound has left (it is listed
        as `other`, never read, and said so)."""
        if size <= self.left():
            return False
        self.problems.append(
            f"{name} declares {size} bytes, more than the {self.left()} bytes left to inflate "
            "(a compression bomb?): listed, not read"
        )
        self.complete = False
        self.entries[name] = Entry(name=name, kind="other", size=size)
        return True

    def count(self) -> None:
        self.check_time()
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
                elif member.issparse() or member.type == tarfile.GNUTYPE_SPARSE:
                    # Its holes are zeros tarfile makes up without reading the stream.
                    self.problems.append(f"{name} is a sparse file: listed, not read")
                    self.entries[name] = Entry(name=name, kind="other", size=member.size)
                elif member.isfile():
                    if self.declared_too_large(name, member.size):
                        continue
                    data = archive.extractfile(member)
                    if data is None:
                        continue
                    self.entries[name] = self._file(name, data)
                else:
                    self.entries[name] = Entry(name=name, kind="other")

    # zip ---------------------------------------------------------------------------------

    def read_zip(self, file: BinaryIO) -> None:
        self._check_directory(file)
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
                if info.compress_type not in READ_METHODS:
                    method = _METHOD_NAMES.get(info.compress_type, "unknown")
                    self.problems.append(
                        f"{name}: not read: compression method {method} ({info.compress_type})"
                    )
                    self.entries[name] = Entry(name=name, kind="other", size=info.file_size)
                    continue
                if self.declared_too_large(name, info.file_size):
                    continue
                with archive.open(info) as data:
                    if stat.S_ISLNK(mode):
                        target = data.read(MAX_LINK_TARGET)
                        self.spend(len(target))
                        self.entries[name] = Entry(
                            name=name, kind="link", target=target.decode("utf-8", "replace")
                        )
                    else:
                        self.entries[name] = self._file(name, data)

    def _check_directory(self, file: BinaryIO) -> None:
        """Refuse a zip whose end record declares more entries than `max_entries`, or a
        central directory over `max_directory_bytes`, before `zipfile` parses it (one object
        per entry: 700,000 empty entries fit in 57 MiB)."""
        entries, directory = directory_extent(file)
        if entries > self.limits.max_entries or directory > self.limits.max_directory_bytes:
            self.problems.append(
                f"the zip declares {entries} entries in a {directory}-byte central directory, "
                f"more than {self.limits.max_entries} entries or "
                f"{self.limits.max_directory_bytes} bytes: not read"
            )
            raise _Stop
        file.seek(0)

    # both --------------------------------------------------------------------------------

    def _file(self, name: str, data: IO[bytes]) -> Entry:
        """A regular file's entry: hashed in chunks (each counted against the total bound),
        kept as text when small UTF-8 text and the text kept in all allows."""
        digest = hashlib.sha256()
        kept = bytearray()
        size = 0
        while chunk := data.read(_CHUNK):
            self.spend(len(chunk))
            digest.update(chunk)
            size += len(chunk)
            if len(kept) <= self.limits.max_text_bytes:
                kept += chunk[: self.limits.max_text_bytes + 1 - len(kept)]
        binary = b"\x00" in kept[:SNIFF_BYTES]
        text: str | None = None
        if not binary and size <= self.limits.max_text_bytes:
            if self.kept_text + size > self.limits.max_kept_text:
                if self.kept_text <= self.limits.max_kept_text:
                    self.problems.append(
                        f"more than {self.limits.max_kept_text} bytes of text in all: the "
                        "rest is compared by size and sha256 only"
                    )
                    self.kept_text = self.limits.max_kept_text + 1  # said once
                return Entry(name=name, kind="file", size=size, sha256=digest.hexdigest())
            try:
                text = bytes(kept).decode("utf-8")
                self.kept_text += size
            except UnicodeDecodeError:
                binary = True
        return Entry(
            name=name, kind="file", size=size, sha256=digest.hexdigest(), text=text, binary=binary
        )
