"""The core metadata of a wheel, read from the wheel itself: `<name>-<version>.dist-info/METADATA`
byte for byte (PEP 658 serves exactly that file), for wheels whose index declares no metadata
file. Pure: reads only the file object it is given, writes nothing, keeps nothing.

A wheel is untrusted input (its sha256 matched the index, but anyone may publish one), so
the read is bounded and strict, stated plainly:
- the zip's central directory is measured from its end record before `zipfile` reads it
  (at most `MAX_CENTRAL_DIRECTORY` bytes and `MAX_MEMBERS` members, so a wheel naming
  millions of members costs nothing);
- no member name may be absolute, contain `..`, a backslash or a NUL: a name that means
  something else once normalised could smuggle a second METADATA past the count below;
- exactly one top-level `.dist-info` directory, and its name must be the wheel's own
  (project name compared PEP 503-normalised, version compared as PEP 440 versions): the
  filename is what the policy decided on, so the metadata must be of that release;
- exactly one `METADATA` member in it: a regular file (not a symlink or directory), not
  encrypted, at most `MAX_METADATA_BYTES` once inflated (read bounded: a member that lies
  about its size, a zip bomb, is cut off and refused, never inflated further);
- anything else (not a zip, a damaged member, a CRC mismatch, an unknown compression) is a
  `WheelMetadataError` with a reason, never another exception.
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from typing import BinaryIO

from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

# Real METADATA files are a few kB; long READMEs make some a few hundred kB.
MAX_METADATA_BYTES = 8 * 1024 * 1024
# The largest real wheels (tens of thousands of members) have central directories of a few
# MB; zipfile holds one object per member in memory, so this bounds what a wheel can cost.
MAX_CENTRAL_DIRECTORY = 16 * 1024 * 1024
# The largest real wheels list tens of thousands of members; zipfile keeps ~0.5 kB each.
MAX_MEMBERS = 100_000
_MEMBER_SIGNATURE = b"PK\x01\x02"  # each central directory entry starts with it
_END_RECORD = struct.Struct("<4s4H2LH")  # end of central directory
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT = 0xFFFF
_ENCRYPTED = 0x1


class WheelMetadataError(ValueError):
    """The wheel's METADATA cannot be read safely; the message says why."""


def read_wheel_metadata(file: BinaryIO, filename: str) -> bytes:
    """The bytes of the METADATA of the wheel `filename` read from `file` (seekable, at any
    position). Raises WheelMetadataError (see the module docstring)."""
    try:
        name, version, _build, _tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion) as exc:
        raise WheelMetadataError(f"{filename} is not a wheel file name: {exc}") from None
    try:
        _check_central_directory(file, filename)
        with zipfile.ZipFile(file) as archive:
            member = _metadata_member(archive, filename, name, version)
            return _read_bounded(archive, member, filename)
    except WheelMetadataError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,  # lzma errors are ValueErrors too
        NotImplementedError,  # a compression method zipfile does not know
        RuntimeError,  # zipfile's own complaints (encryption and the like)
        struct.error,
        OverflowError,
        UnicodeDecodeError,
        IndexError,
        KeyError,
    ) as exc:
        raise WheelMetadataError(f"{filename} is not a readable zip: {exc}") from None


def _check_central_directory(file: BinaryIO, filename: str) -> None:
    """Refuse a zip whose central directory is larger than MAX_CENTRAL_DIRECTORY or lists
    more than MAX_MEMBERS members, read from its end record as zipfile finds it (last 22
    bytes, else the last comment's worth; the zip64 end record's fields when there is one,
    as zipfile uses them). The members are counted in the directory itself (an upper bound:
    every entry starts with its signature), not only as the end record declares them."""
    size = file.seek(0, io.SEEK_END)
    if size < _END_RECORD.size:
        raise WheelMetadataError(f"{filename} is not a zip (too short)")
    window = min(size, _END_RECORD.size + _MAX_COMMENT)
    file.seek(size - window)
    tail = file.read(window)
    start = tail.rfind(_END_SIGNATURE, 0, len(tail) - _END_RECORD.size + len(_END_SIGNATURE))
    if start < 0:
        raise WheelMetadataError(f"{filename} is not a zip (no end of central directory)")
    record = _END_RECORD.unpack_from(tail, start)
    members: int = record[4]
    directory_size: int = record[5]
    # Where the directory ends: zipfile finds it just before the end record(s).
    directory_end = size - window + start
    if start >= _ZIP64_LOCATOR.size:
        locator = _ZIP64_LOCATOR.unpack_from(tail, start - _ZIP64_LOCATOR.size)
        if locator[0] == _ZIP64_LOCATOR_SIGNATURE:
            end_offset: int = locator[2]
            if end_offset + _ZIP64_END.size > size:
                raise WheelMetadataError(f"{filename} has a broken zip64 end record")
            file.seek(end_offset)
            zip64 = _ZIP64_END.unpack(file.read(_ZIP64_END.size))
            if zip64[0] != _ZIP64_END_SIGNATURE:
                raise WheelMetadataError(f"{filename} has a broken zip64 end record")
            # zipfile reads these instead of the (then saturated) 32-bit fields.
            members = zip64[7]
            directory_size = zip64[8]
            directory_end -= _ZIP64_LOCATOR.size + _ZIP64_END.size
    if directory_size > MAX_CENTRAL_DIRECTORY:
        raise WheelMetadataError(
            f"{filename} lists {directory_size} bytes of members, more than the "
            f"{MAX_CENTRAL_DIRECTORY} a wheel's metadata is read from"
        )
    if members > MAX_MEMBERS:
        raise WheelMetadataError(
            f"{filename} declares {members} members, more than the {MAX_MEMBERS} a wheel's "
            "metadata is read from"
        )
    if directory_size > directory_end:
        raise WheelMetadataError(f"{filename} is not a zip (its directory overruns the start)")
    file.seek(directory_end - directory_size)
    counted = file.read(directory_size).count(_MEMBER_SIGNATURE)
    if counted > MAX_MEMBERS:
        raise WheelMetadataError(
            f"{filename} has {counted} members, more than the {MAX_MEMBERS} a wheel's "
            "metadata is read from"
        )
    file.seek(0)


def _hostile_name(name: str) -> bool:
    parts = name.split("/")
    return (
        name.startswith("/")
        or "\\" in name
        or "\0" in name
        or ":" in parts[0]  # a drive letter
        or any(part in ("..", ".") for part in parts)
    )


def _metadata_member(
    archive: zipfile.ZipFile, filename: str, name: str, version: Version
) -> zipfile.ZipInfo:
    members = archive.infolist()
    hostile = next((info.filename for info in members if _hostile_name(info.filename)), None)
    if hostile is not None:
        raise WheelMetadataError(f"{filename} has a member with a hostile path: {hostile!r}")
    directories = sorted(
        {
            info.filename.split("/", 1)[0]
            for info in members
            if "/" in info.filename and info.filename.split("/", 1)[0].endswith(".dist-info")
        }
    )
    if len(directories) != 1:
        found = ", ".join(directories[:4]) or "none"
        raise WheelMetadataError(
            f"{filename} must have exactly one top-level .dist-info directory (found {found})"
        )
    directory = directories[0]
    if not _names_release(directory.removesuffix(".dist-info"), name, version):
        raise WheelMetadataError(
            f"{filename} holds {directory}, which is not the dist-info of {name} {version}"
        )
    wanted = f"{directory}/METADATA"
    matching = [info for info in members if info.filename == wanted]
    if len(matching) != 1:
        raise WheelMetadataError(
            f"{filename} must have exactly one {wanted} (found {len(matching)})"
        )
    member = matching[0]
    # Unix file type bits, when the zip records them (zipfile writes permissions only).
    kind = stat.S_IFMT(member.external_attr >> 16)
    if member.is_dir() or (kind and kind != stat.S_IFREG):
        raise WheelMetadataError(f"{wanted} in {filename} is not a regular file")
    if member.flag_bits & _ENCRYPTED:
        raise WheelMetadataError(f"{wanted} in {filename} is encrypted")
    if member.file_size > MAX_METADATA_BYTES:
        raise WheelMetadataError(
            f"{wanted} in {filename} is {member.file_size} bytes, more than the "
            f"{MAX_METADATA_BYTES} the mirror serves"
        )
    return member


def _names_release(stem: str, name: str, version: Version) -> bool:
    """Whether `<stem>.dist-info` is the dist-info of `name` `version` (PEP 427: the name
    with `-` escaped as `_`, compared normalised; the version compared as a version)."""
    dist, separator, text = stem.rpartition("-")
    if not separator or not dist:
        return False
    try:
        return canonicalize_name(dist) == canonicalize_name(name) and Version(text) == version
    except InvalidVersion:
        return False


def _read_bounded(archive: zipfile.ZipFile, member: zipfile.ZipInfo, filename: str) -> bytes:
    with archive.open(member) as stream:
        data = stream.read(MAX_METADATA_BYTES + 1)
        if len(data) > MAX_METADATA_BYTES:
            raise WheelMetadataError(
                f"{member.filename} in {filename} inflates to more than {MAX_METADATA_BYTES} bytes"
            )
        if len(data) != member.file_size:
            raise WheelMetadataError(
                f"{member.filename} in {filename} is {len(data)} bytes, not the "
                f"{member.file_size} its zip entry declares"
            )
        # Reaching the declared end makes zipfile check the CRC (BadZipFile on a mismatch).
        stream.read(1)
    return data
