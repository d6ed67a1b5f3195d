"""Reading OSV advisories from disk or from a downloaded zip, within bounds: the edge both
`mirror import-osv` and the scheduled feed sync (`mirror.feeds`) read through. JSON files,
directories and zips of advisories (the OSV malicious-packages feed layout); a huge
directory, a zip bomb or a hostile member name is a clear `UnreadableAdvisories`, never
memory exhaustion or a file read outside the feed."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any


class UnreadableAdvisories(Exception):
    """A feed, file or zip that cannot be read as advisories (the message names it and why)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what an import reads, so a huge directory or a zip bomb is a clear error
    rather than memory exhaustion. The defaults hold the whole malicious-packages feed."""

    files: int = 500_000  # advisory files per directory or zip
    file_bytes: int = 4 * 1024 * 1024  # one advisory file
    total_bytes: int = 4 * 1024 * 1024 * 1024  # everything read from one directory or zip


def read_advisories(paths: Sequence[str], limits: Limits = Limits()) -> Iterator[Mapping[str, Any]]:
    """The advisories of each path, one at a time (the caller keeps what it needs of each, so
    memory follows the blocks, not the feed's size): a JSON file (an advisory or a list of
    them), a directory (every *.json below it, sorted; symlinks are not followed) or a .zip
    (every *.json member, sorted; absolute or `..` member names and symlinks refused)."""
    for path in paths:
        if os.path.isdir(path):
            documents = _directory(path, limits)
        elif path.lower().endswith(".zip"):
            documents = _zip(path, path, limits)
        else:
            documents = iter([(path, _read_file(path, limits.file_bytes))])
        for name, raw in documents:
            yield from _parse(name, raw)


def read_zip_bytes(
    label: str, data: bytes, limits: Limits = Limits()
) -> Iterator[Mapping[str, Any]]:
    """The advisories of a zip held in memory (a feed downloaded from a URL), named `label`
    in errors, with the same bounds and refusals as a zip on disk."""
    for name, raw in _zip(io.BytesIO(data), label, limits):
        yield from _parse(name, raw)


def _parse(name: str, raw: bytes) -> list[Mapping[str, Any]]:
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UnreadableAdvisories(f"{name} is not JSON: {exc}") from None
    items = document if isinstance(document, list) else [document]
    if not all(isinstance(item, dict) for item in items):
        raise UnreadableAdvisories(f"{name}: expected an OSV advisory object or a list of them")
    return items


def _read_file(path: str, limit: int) -> bytes:
    try:
        # O_NOFOLLOW: a symlink planted inside a feed directory is not followed out of it.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(descriptor, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise UnreadableAdvisories(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > limit:
        raise UnreadableAdvisories(f"{path} is larger than {limit} bytes: not an advisory")
    return raw


def _directory(root: str, limits: Limits) -> Iterator[tuple[str, bytes]]:
    found: list[str] = []
    for directory, subdirectories, files in os.walk(root, followlinks=False):
        subdirectories.sort()
        for name in files:
            path = os.path.join(directory, name)
            if name.lower().endswith(".json") and not os.path.islink(path):
                found.append(path)
                if len(found) > limits.files:
                    raise UnreadableAdvisories(
                        f"{root} holds more than {limits.files} advisory files"
                    )
    total = 0
    for path in sorted(found):
        raw = _read_file(path, limits.file_bytes)
        total += len(raw)
        if total > limits.total_bytes:
            raise UnreadableAdvisories(
                f"{root} holds more than {limits.total_bytes} bytes of advisories"
            )
        yield path, raw


def _zip(source: str | IO[bytes], path: str, limits: Limits) -> Iterator[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(source) as archive:
            members = [
                info
                for info in archive.infolist()
                if not info.is_dir() and info.filename.lower().endswith(".json")
            ]
            if len(members) > limits.files:
                raise UnreadableAdvisories(f"{path} holds more than {limits.files} advisory files")
            total = 0
            for info in sorted(members, key=lambda member: member.filename):
                name = f"{path}:{info.filename}"
                unsafe_member(info)
                # Read at most one byte past the bound: the sizes a zip declares may lie.
                with archive.open(info) as member:
                    raw = member.read(limits.file_bytes + 1)
                if len(raw) > limits.file_bytes:
                    raise UnreadableAdvisories(
                        f"{name} is larger than {limits.file_bytes} bytes uncompressed: "
                        "not an advisory (a zip bomb?)"
                    )
                total += len(raw)
                if total > limits.total_bytes:
                    raise UnreadableAdvisories(
                        f"{path} holds more than {limits.total_bytes} bytes of advisories "
                        "uncompressed (a zip bomb?)"
                    )
                yield name, raw
    except OSError as exc:
        raise UnreadableAdvisories(f"cannot read {path}: {exc.strerror or exc}") from None
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        RuntimeError,
        NotImplementedError,
        EOFError,
        ValueError,
    ) as exc:
        # A truncated download fails here (EOFError, a bad CRC): the feed is unreadable.
        raise UnreadableAdvisories(f"{path} is not a zip this command reads: {exc}") from None


def unsafe_member(info: zipfile.ZipInfo) -> None:
    """Refuse a member named outside the archive (absolute, a drive, `..`) or a symlink:
    no feed holds one, so the archive is not what it claims to be."""
    name = info.filename.replace("\\", "/")
    parts = name.split("/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise UnreadableAdvisories(f"refused: the zip member {name!r} is named outside the archive")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnreadableAdvisories(f"refused: the zip member {name!r} is a symlink")
