"""Takedowns, pure: what an upstream stopped offering between two copies of one document, and
takedown events as stored data.

A document's *listing* maps each thing it offers to its state: a version (npm, Maven) or a
file (PyPI: `version/filename`) to `Listed`. Comparing the copy the mirror held with the
refreshed one (`taken_down`) finds what was removed (listed before, absent now) and what was
newly yanked (PEP 592). Each ecosystem's parser says how to list its document (`listing`);
the takedown watcher (`mirror.takedownwatch`) records the events, with who had downloaded
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from mirror.clock import iso_microseconds, parse_iso_time
from mirror.model import (
    TAKEDOWN_KINDS,
    ImpactRow,
    TakedownEvent,
    TakedownKind,
    takedown_id,
)

# One refreshed document yields at most this many events: a hostile or broken upstream that
# drops every version of a big package must not flood the state, the log and the webhook.
MAX_PER_DOCUMENT: Final = 100
# An event keeps at most this many clients by name (`TakedownEvent.impact`); all are counted.
MAX_IMPACT_ROWS: Final = 200
# The state keeps at most this many events (the oldest go first).
EVENTS_KEPT: Final = 10_000


@dataclass(frozen=True, slots=True)
class Listed:
    """One thing a document offers: its version, its file ("" = the version as a whole) and,
    when yanked, the yank's reason (`yanked` True, `reason` possibly "")."""

    version: str
    filename: str = ""
    yanked: bool = False
    reason: str = ""


Listing = Mapping[str, Listed]


class Lists(Protocol):
    """A document parser that can list what a parsed document offers (the metadata cache
    hands both copies' listings to the watcher)."""

    def listing(self, parsed: Any) -> Listing: ...


@dataclass(frozen=True, slots=True)
class Takedown:
    """One thing taken down, before it is recorded as an event."""

    version: str
    filename: str
    kind: TakedownKind
    reason: str = ""


def taken_down(
    before: Listing, after: Listing, *, limit: int | None = MAX_PER_DOCUMENT
) -> list[Takedown]:
    """What `after` no longer offers that `before` did (`removed`), and what `after` marks
    yanked that `before` did not (`yanked`), in `before`'s order; past `limit` (None: no
    limit) the last ones are kept: listings run oldest to newest, and the newest is the
    likely reason for a takedown."""
    found: list[Takedown] = []
    for key, listed in before.items():
        now = after.get(key)
        if now is None:
            found.append(Takedown(listed.version, listed.filename, "removed"))
        elif now.yanked and not listed.yanked:
            found.append(Takedown(now.version, now.filename, "yanked", now.reason))
    if limit is not None and len(found) > limit:
        return found[len(found) - limit :]
    return found


def event_of(
    ecosystem: str,
    package: str,
    takedown: Takedown,
    detected_at: datetime,
    impact: tuple[ImpactRow, ...] = (),
    *,
    clients: int = 0,
    downloads: int = 0,
) -> TakedownEvent:
    """The event recording `takedown` of `package`, with its id (`model.takedown_id`)."""
    return TakedownEvent(
        id=takedown_id(ecosystem, package, takedown.version, takedown.filename, takedown.kind),
        ecosystem=ecosystem,
        package=package,
        version=takedown.version,
        filename=takedown.filename,
        kind=takedown.kind,
        reason=takedown.reason,
        detected_at=detected_at,
        clients=clients,
        downloads=downloads,
        impact=impact[:MAX_IMPACT_ROWS],
    )


def event_to_json(event: TakedownEvent) -> dict[str, Any]:
    """The event as JSON-able data: what the state stores, the API lists and the webhook
    receives."""
    return {
        "id": event.id,
        "ecosystem": event.ecosystem,
        "package": event.package,
        "version": event.version,
        "filename": event.filename,
        "kind": event.kind,
        "reason": event.reason,
        "detected_at": iso_microseconds(event.detected_at),
        "clients": event.clients,
        "downloads": event.downloads,
        "impact": [
            {
                "client": row.client,
                "token": row.token,
                "ci": row.ci,
                "count": row.count,
                "first_at": iso_microseconds(row.first_at),
                "last_at": iso_microseconds(row.last_at),
            }
            for row in event.impact
        ],
    }


def event_from_json(data: Mapping[str, Any]) -> TakedownEvent | None:
    """An event read back from the state, or None when the stored data is not one (skipped,
    never a 500)."""
    try:
        kind = data["kind"]
        detected_at = parse_iso_time(data["detected_at"])
        if kind not in TAKEDOWN_KINDS or detected_at is None:
            return None
        impact = []
        for row in data.get("impact", ()):
            first_at = parse_iso_time(row["first_at"]) or datetime.min.replace(tzinfo=UTC)
            last_at = parse_iso_time(row["last_at"]) or first_at
            impact.append(
                ImpactRow(
                    client=str(row["client"]),
                    token=str(row.get("token", "")),
                    ci=str(row.get("ci", "")),
                    count=int(row.get("count", 0)),
                    first_at=first_at,
                    last_at=last_at,
                )
            )
        return TakedownEvent(
            id=str(data["id"]),
            ecosystem=str(data["ecosystem"]),
            package=str(data["package"]),
            version=str(data["version"]),
            filename=str(data.get("filename", "")),
            kind=kind,
            reason=str(data.get("reason", "")),
            detected_at=detected_at,
            clients=int(data.get("clients", 0)),
            downloads=int(data.get("downloads", 0)),
            impact=tuple(impact),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
