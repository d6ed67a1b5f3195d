"""Rule changes as the state keeps them, whoever makes them (an admin through `/api/v1/`, the
advisory feed sync): a stored rule described, found by id, and each change stored with its
audit entry in the change's own write and reported in one log line on `mirror.admin`.

Callers validate first and reload the live policy afterwards (once per request or per sync,
not once per rule: a feed of thousands of advisories would reload thousands of times)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mirror import policy, safetext
from mirror.clock import Clock
from mirror.errors import NotFound
from mirror.model import AuditEntry, RuleKind, RuleRecord
from mirror.state.base import StateStore

if TYPE_CHECKING:  # the services build the takedown watch, which stores rules through here
    from mirror.services import Services

# The logger every change is reported on (the README names it).
log = logging.getLogger("mirror.admin")


def describe_rule(record: RuleRecord, now: datetime) -> dict[str, Any]:
    """A stored rule as the API shows it; `expired` says whether it still applies."""
    return {
        **policy.describe_record(record),
        "expired": record.expires_at is not None and record.expires_at <= now,
    }


async def find_rule(services: Services, kind: RuleKind, rule_id: str) -> RuleRecord:
    for record in await services.state.list_rules(kind):
        if record.id == rule_id:
            return record
    raise NotFound(f"there is no {kind} with id {rule_id!r}")


def audit_entry(
    clock: Clock,
    actor: str,
    client: str,
    action: str,
    target: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> AuditEntry:
    """The audit entry of a change; state stores it in the change's own transaction."""
    return AuditEntry(
        at=clock.now(),
        actor=actor,
        client=client,
        action=action,
        target=target,
        before=before,
        after=after,
    )


def change_line(entry: AuditEntry) -> str:
    """The log line of a rule change: one line whatever its fields hold (a reason with a
    newline must not forge a second line attributed to another admin)."""
    change = entry.after if entry.after is not None else entry.before or {}
    fields = (
        entry.action,
        entry.target,
        entry.actor,
        entry.client,
        change.get("ecosystem", ""),
        change.get("package", ""),
        change.get("versions", ""),
        change.get("reason", ""),
    )
    action, target, actor, client, ecosystem, package, spec, reason = map(safetext.escape, fields)
    return f"{action} {target} by {actor} from {client}: {ecosystem} {package} {spec} ({reason})"


def log_change(entry: AuditEntry) -> None:
    log.warning("%s", change_line(entry))


async def add_rule(
    services: Services, record: RuleRecord, *, actor: str, client: str
) -> dict[str, Any]:
    """Store a validated rule with its audit entry and log it; the rule as described."""
    return await store_rule(services.state, services.clock, record, actor=actor, client=client)


async def store_rule(
    state: StateStore, clock: Clock, record: RuleRecord, *, actor: str, client: str
) -> dict[str, Any]:
    """`add_rule` for a caller holding the state and clock only (the takedown watch, which
    the services build)."""
    after = describe_rule(record, clock.now())
    entry = audit_entry(clock, actor, client, f"{record.kind}.create", record.id, None, after)
    await state.add_rule(record, audit=entry)
    log_change(entry)
    return after


async def remove_rule(
    services: Services, kind: RuleKind, rule_id: str, *, actor: str, client: str
) -> dict[str, Any]:
    """Delete a stored rule with its audit entry and log it; the rule as it was. NotFound
    when there is none (or it was removed meanwhile)."""
    found = await find_rule(services, kind, rule_id)
    before = describe_rule(found, services.clock.now())
    entry = audit_entry(services.clock, actor, client, f"{kind}.delete", rule_id, before, None)
    if await services.state.remove_rule(kind, rule_id, audit=entry) is None:
        raise NotFound(f"there is no {kind} with id {rule_id!r}")  # removed meanwhile
    log_change(entry)
    return before
