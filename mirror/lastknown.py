"""The last-known policy: the rules (with the first-seen digest pins and the audit log) a
worker last read from a shared state it trusted, with that state's identity and policy
version. Kept in memory by `LivePolicy` and on local disk (`<state_dir>/lastknown.json`,
replaced atomically), so that a shared state that comes back empty, replaced or older can
be told apart from one an admin emptied, and the rules an admin left are never dropped.

`assess` (pure) says whether a state may be trusted against the copy; `load`/`save` are the
only file I/O here."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from mirror.files import atomic_write
from mirror.model import AuditEntry, RuleKind, RuleRecord
from mirror.state.base import StateIdentity

FILENAME = "lastknown.json"
FORMAT = 1
# The copy's digest pins as a sorted index (`PinIndex`), built from FILENAME when a worker
# stops trusting the state: the pins are many (think 100k), and a dict of them would cost a
# worker tens of MB; the index is read with positioned reads (the kernel's page cache, not
# the worker's memory).
PINS_FILENAME = "lastknown.pins"
_PINS_MAGIC = b"QMPINS1 "
_KEY_HASH = 16  # bytes of blake2b over (ecosystem, key): collisions are out of reach


class LastKnownError(ValueError):
    """The last-known file cannot be read as written (damaged or of another format)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LastKnown:
    identity: str
    version: int
    rules: tuple[RuleRecord, ...]
    # ecosystem -> artifact key -> first digest seen
    digests: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # newest first, as `StateStore.audit_log` returns it
    audit: tuple[AuditEntry, ...] = ()

    def counts(self) -> dict[str, int]:
        """Rules per kind, pins and audit entries: what `mirror state status` prints."""
        counts = dict.fromkeys(("block", "exemption", "freeze"), 0)
        for rule in self.rules:
            counts[rule.kind] += 1
        counts["digest pins"] = sum(len(keys) for keys in self.digests.values())
        counts["audit entries"] = len(self.audit)
        return counts


def assess(known: LastKnown | None, seen: StateIdentity) -> str | None:
    """Why the state `seen` cannot be trusted against the last-known copy, or None when it
    can. A state with no last-known copy is always trusted (a new install)."""
    if known is None:
        return None
    if seen.identity is None:
        return (
            f"the shared state has no identity: it was emptied or replaced since it held "
            f"policy version {known.version} (identity {known.identity})"
        )
    if seen.identity != known.identity:
        if known.identity in seen.restored_from:
            return None
        return (
            f"the shared state is another one (identity {seen.identity}, not "
            f"{known.identity} where the last-known rules come from)"
        )
    if seen.version < known.version:
        return (
            f"the shared state's policy version went back from {known.version} to "
            f"{seen.version}: it was restored from an older copy"
        )
    return None


def merged_rules(known: Iterable[RuleRecord], current: Iterable[RuleRecord]) -> list[RuleRecord]:
    """The last-known rules plus any the current state added (same id: the current one),
    oldest first: what a degraded worker enforces, never fewer than an admin left."""
    merged = {(rule.kind, rule.id): rule for rule in known}
    merged.update({(rule.kind, rule.id): rule for rule in current})
    return sorted(merged.values(), key=lambda rule: (rule.created_at, rule.id))


# encoding ----------------------------------------------------------------------------------


def _rule_doc(rule: RuleRecord) -> dict[str, Any]:
    return {
        "id": rule.id,
        "kind": rule.kind,
        "ecosystem": rule.ecosystem,
        "package": rule.package,
        "versions": rule.versions,
        "reason": rule.reason,
        "created_at": rule.created_at.isoformat(),
        "created_by": rule.created_by,
        "expires_at": None if rule.expires_at is None else rule.expires_at.isoformat(),
        "data": dict(rule.data),
    }


def _rule_from(doc: Mapping[str, Any]) -> RuleRecord:
    expires = doc["expires_at"]
    return RuleRecord(
        id=str(doc["id"]),
        kind=cast(RuleKind, doc["kind"]),
        ecosystem=str(doc["ecosystem"]),
        package=str(doc["package"]),
        versions=str(doc["versions"]),
        reason=str(doc["reason"]),
        created_at=_aware(doc["created_at"]),
        created_by=str(doc["created_by"]),
        expires_at=None if expires is None else _aware(expires),
        data=dict(doc["data"]),
    )


def _audit_doc(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "client": entry.client,
        "action": entry.action,
        "target": entry.target,
        "before": None if entry.before is None else dict(entry.before),
        "after": None if entry.after is None else dict(entry.after),
    }


def _audit_from(doc: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(
        at=_aware(doc["at"]),
        actor=str(doc["actor"]),
        client=str(doc["client"]),
        action=str(doc["action"]),
        target=str(doc["target"]),
        before=doc["before"],
        after=doc["after"],
    )


def _aware(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise LastKnownError(f"a time without a zone: {text!r}")
    return moment


def to_doc(known: LastKnown) -> dict[str, Any]:
    """The copy as plain JSON data (also the policy part of `mirror state export`)."""
    return {
        "format": FORMAT,
        "identity": known.identity,
        "version": known.version,
        "rules": [_rule_doc(rule) for rule in known.rules],
        "digests": {eco: dict(keys) for eco, keys in known.digests.items()},
        "audit": [_audit_doc(entry) for entry in known.audit],
    }


def from_doc(doc: Any) -> LastKnown:
    """`to_doc`'s data read back; raises LastKnownError for anything else."""
    try:
        if doc.get("format") != FORMAT:
            raise LastKnownError(f"format {doc.get('format')!r}, expected {FORMAT}")
        return LastKnown(
            identity=str(doc["identity"]),
            version=int(doc["version"]),
            rules=tuple(_rule_from(rule) for rule in doc["rules"]),
            digests={
                str(eco): {str(key): str(value) for key, value in keys.items()}
                for eco, keys in doc["digests"].items()
            },
            audit=tuple(_audit_from(entry) for entry in doc["audit"]),
        )
    except LastKnownError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LastKnownError(f"not a last-known policy file: {type(exc).__name__}: {exc}") from exc


def encode(known: LastKnown) -> bytes:
    return json.dumps(to_doc(known), separators=(",", ":"), sort_keys=True).encode()


def decode(data: bytes) -> LastKnown:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise LastKnownError(f"not a last-known policy file: {type(exc).__name__}: {exc}") from exc
    return from_doc(doc)


# the file ------------------------------------------------------------------------------------


def path_in(directory: Path) -> Path:
    return directory / FILENAME


def load(path: Path) -> LastKnown | None:
    """The copy at `path`, or None when there is none. Raises LastKnownError when damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode(data)


def save(path: Path, data: bytes) -> None:
    """Replace the file atomically (a reader sees the old copy or the new one, whole), and
    durably: the copy matters exactly when something else was lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, durable=True)


# the digest pins, indexed ---------------------------------------------------------------------


def _key_hash(ecosystem: str, key: str) -> bytes:
    text = f"{ecosystem}\0{key}".encode(errors="surrogatepass")
    return hashlib.blake2b(text, digest_size=_KEY_HASH).digest()


def build_pins(digests: Mapping[str, Mapping[str, str]], source: str) -> bytes:
    """The pins as one index file: a header line (JSON: `source`, record width, count), then
    fixed-width records sorted by key hash: the hash, then the digest text padded with NULs."""
    records = sorted(
        (_key_hash(ecosystem, key), digest.encode())
        for ecosystem, keys in digests.items()
        for key, digest in keys.items()
    )
    width = max((len(digest) for _, digest in records), default=0)
    header = json.dumps(
        {"source": source, "width": width, "count": len(records)}, separators=(",", ":")
    ).encode()
    body = b"".join(hashed + digest.ljust(width, b"\0") for hashed, digest in records)
    return _PINS_MAGIC + header + b"\n" + body


class PinIndex:
    """The first-seen digest pins of a last-known copy: `get` is a binary search in the open
    index file by positioned reads (about 17 of a few dozen bytes for 100k pins, from the
    kernel's page cache): nothing is held in the worker's memory but the open file."""

    def __init__(self, fd: int, *, start: int, width: int, count: int) -> None:
        self._fd = fd
        self._start = start
        self._record = _KEY_HASH + width
        self._count = count

    def __len__(self) -> int:
        return self._count

    def get(self, ecosystem: str, key: str) -> str | None:
        wanted = _key_hash(ecosystem, key)
        low, high = 0, self._count
        start, size = self._start, self._record
        while low < high:
            middle = (low + high) // 2
            record = os.pread(self._fd, size, start + middle * size)
            found = record[:_KEY_HASH]
            if found == wanted:
                return record[_KEY_HASH:].rstrip(b"\0").decode()
            if found < wanted:
                low = middle + 1
            else:
                high = middle
        return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_HEADER_MAX = 4096


def _open_index(path: Path, source: str) -> PinIndex | None:
    """The index at `path` if it was built from `source`, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    try:
        head = os.pread(fd, _HEADER_MAX, 0)
        end = head.find(b"\n")
        if not head.startswith(_PINS_MAGIC) or end < 0:
            raise ValueError("not a pin index")
        header = json.loads(head[len(_PINS_MAGIC) : end])
        width, count = int(header["width"]), int(header["count"])
        size = os.fstat(fd).st_size
        if header["source"] != source or size != end + 1 + count * (_KEY_HASH + width):
            raise ValueError("built from another copy")
    except (OSError, ValueError, KeyError, TypeError):
        os.close(fd)
        return None
    return PinIndex(fd, start=end + 1, width=width, count=count)


def open_pins(directory: Path) -> PinIndex | None:
    """The pins of the copy in `directory`, indexed (built first when the index is missing or
    older than the copy); None when there is no copy. Raises LastKnownError for a damaged
    copy and OSError when the index cannot be written. Blocking: run it in a thread."""
    path = path_in(directory)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    source = f"{stat.st_mtime_ns}:{stat.st_size}"
    pins_path = directory / PINS_FILENAME
    index = _open_index(pins_path, source)
    if index is not None:
        return index
    known = load(path)
    if known is None:
        return None
    atomic_write(pins_path, build_pins(known.digests, source))
    del known  # the parsed copy (the large part of it) goes before the index is mapped
    index = _open_index(pins_path, source)
    if index is None:
        raise OSError(f"the pin index {pins_path} was replaced while it was read")
    return index
