"""`mirror state export` / `mirror state import`: the policy of a shared state as one JSON
file — rules (blocks, exemptions, freezes), first-seen digest pins and the whole audit log,
optionally the download ledger — for backups, upgrades and moving from the embedded SQLite
state to Redis.

An import re-seeds the target the way `mirror state restore` does (`StateStore.restore`): it
adds the rules the target lacks (ids it has are kept), sets the pins (the file's first-seen
digests win), merges the audit by time without duplicates, and records the exported state's
identity as one the target continues. So a replica whose last-known copy came from the old
state trusts the new one, and importing the same file twice changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mirror import lastknown
from mirror.lastknown import LastKnown, LastKnownError
from mirror.model import ECOSYSTEMS, AuditEntry, DownloadEvent
from mirror.state.base import AUDIT_CAP, StateStore

FORMAT = "quarantine-mirror-state-export"
FORMAT_VERSION = 1
PAGE = 1000  # rows a read or write takes at once: memory stays bounded per page


class ExportError(ValueError):
    """An export file this version cannot read (damaged, or not an export)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Export:
    """What a file holds: the policy (as a last-known copy) and, if exported, the ledger."""

    policy: LastKnown
    ledger: tuple[DownloadEvent, ...] | None = None

    def counts(self) -> dict[str, int]:
        counts = self.policy.counts()
        if self.ledger is not None:
            counts["ledger rows"] = len(self.ledger)
        return counts


async def _whole_audit(state: StateStore) -> tuple[AuditEntry, ...]:
    entries: list[AuditEntry] = []
    after: str | None = None
    for _ in range(AUDIT_CAP // PAGE + 100):  # bounded: the audit never holds more
        page = await state.audit_page(limit=PAGE, after=after)
        entries.extend(page.entries)
        after = page.next_after
        if after is None:
            break
    return tuple(entries)


async def _whole_ledger(state: StateStore) -> tuple[DownloadEvent, ...]:
    events: list[DownloadEvent] = []
    for ecosystem in ECOSYSTEMS:
        for package in await state.downloaded_packages(ecosystem):
            after: str | None = None
            while True:
                page = await state.downloads_page(ecosystem, package, limit=PAGE, after=after)
                events.extend(page.events)
                after = page.next_after
                if after is None:
                    break
    return tuple(events)


async def read_export(state: StateStore, *, ledger: bool) -> Export:
    """Everything the file will hold, read from `state` (an identity is claimed for a state
    that has none, so that the file names the state it came from)."""
    seen = await state.state_identity()
    identity = seen.identity or await state.claim_identity(uuid.uuid4().hex)
    policy = LastKnown(
        identity=identity,
        version=seen.version,
        rules=tuple(await state.list_rules()),
        digests=await state.pinned_digests(),
        audit=await _whole_audit(state),
    )
    return Export(policy=policy, ledger=await _whole_ledger(state) if ledger else None)


# Who downloaded (the read token's name, what the client said about itself): files exported
# before the ledger kept them have none, and import as "".
_IDENTITY_FIELDS = ("token", "user_agent", "ci", "command", "session")


def _event_doc(event: DownloadEvent) -> dict[str, Any]:
    return {
        "ecosystem": event.ecosystem,
        "package": event.package,
        "version": event.version,
        "filename": event.filename,
        "client": event.client,
        "at": event.at.isoformat(),
        "last_at": event.last_seen.isoformat(),
        "count": event.count,
        **{name: getattr(event, name) for name in _IDENTITY_FIELDS},
    }


def _event_from(doc: Mapping[str, Any]) -> DownloadEvent:
    at, last_at = datetime.fromisoformat(doc["at"]), datetime.fromisoformat(doc["last_at"])
    if at.tzinfo is None or last_at.tzinfo is None:
        raise ValueError(f"a time without a zone: {doc['at']!r}")
    count = doc["count"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"a download count must be a whole number >= 1, got {count!r}")
    ecosystem = str(doc["ecosystem"])
    if ecosystem not in ECOSYSTEMS:
        raise ValueError(f"unknown ecosystem {ecosystem!r}")
    identity = {name: doc.get(name, "") for name in _IDENTITY_FIELDS}
    for name, value in identity.items():
        if not isinstance(value, str):
            raise ValueError(f"a download's {name} must be text, got {type(value).__name__}")
    return DownloadEvent(
        ecosystem=ecosystem,
        package=str(doc["package"]),
        version=str(doc["version"]),
        filename=str(doc["filename"]),
        client=str(doc["client"]),
        at=at,
        last_at=last_at,
        count=count,
        **identity,
    )


def encode(export: Export) -> bytes:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "policy": lastknown.to_doc(export.policy),
    }
    if export.ledger is not None:
        doc["ledger"] = [_event_doc(event) for event in export.ledger]
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def decode(data: bytes) -> Export:
    """Raises ExportError naming what is wrong; nothing is written before a file decodes."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ExportError(f"not a state export (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ExportError("not a state export (written by `mirror state export`)")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"export format version {doc.get('format_version')!r}; this mirror reads "
            f"{FORMAT_VERSION}"
        )
    try:
        policy = lastknown.from_doc(doc.get("policy"))
    except LastKnownError as exc:
        raise ExportError(f"the export's policy cannot be read: {exc}") from None
    ledger_docs = doc.get("ledger")
    if ledger_docs is None:
        return Export(policy=policy)
    try:
        if not isinstance(ledger_docs, list):
            raise TypeError("the ledger is not a list")
        ledger = tuple(_event_from(event) for event in ledger_docs)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ExportError(f"the export's ledger cannot be read: {exc}") from None
    return Export(policy=policy, ledger=ledger)


async def write_import(state: StateStore, export: Export) -> int:
    """Re-seed `state` with the export (see the module docstring); returns its new policy
    version. The ledger rows are added to the target's (counts summed per client address,
    token and file: import a ledger once)."""
    seen = await state.state_identity()
    if seen.identity is None:
        await state.claim_identity(uuid.uuid4().hex)
    policy = export.policy
    version = await state.restore(
        rules=policy.rules,
        digests=policy.digests,
        audit=policy.audit,
        version_floor=policy.version,
        predecessor=policy.identity,
    )
    for start in range(0, len(export.ledger or ()), PAGE):
        rows: Sequence[DownloadEvent] = (export.ledger or ())[start : start + PAGE]
        await state.record_downloads(rows)
    return version
