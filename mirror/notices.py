"""What holds a document's withheld versions or files, said in one line: the `npm-notice`
and `X-Mirror-Notice` headers, the "nothing visible" 404s of every ecosystem and the JSON
API's summary all say it with `summary`/`notice`. Pure.

Held items are grouped by cause (`policy.Decision`): quarantine (its newest item and when
it becomes available), each block (id, reason, items), each freeze (id, reason, until when,
items), each exemption that expired (id, when, items now back in quarantine). The line is
bounded whatever the document holds: a few items per cause and a few rules are named, the
rest counted (`and N more`); untrusted text (reasons, names, versions) is escaped
(`safetext`), cut to a length and written in ASCII, so it fits in a response header.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from mirror import policy, safetext
from mirror.clock import iso_minutes, iso_seconds
from mirror.model import RuleRecord

Unit = Literal["version", "file"]
Cause = Literal["quarantine", "block", "freeze", "lapsed", "risk"]

RULES_NAMED: Final = 4  # blocks, freezes and expired exemptions named one by one
ITEMS_NAMED: Final = 3  # versions or files named per cause (the newest ones)
REASON_CHARS: Final = 80  # a rule's reason, cut to this many characters
ITEM_CHARS: Final = 80  # a version, file name, package name or rule id, likewise
NOTICE_CHARS: Final = 2000  # the whole line: a backstop, the bounds above keep it shorter
_CUT: Final = "..."


def count(number: int, unit: Unit) -> str:
    """`1 version`, `2 files`: every count of held items."""
    return f"{number} {unit}{'s' if number != 1 else ''}"


def clean(text: object, limit: int = ITEM_CHARS) -> str:
    """Untrusted text made safe for a header: unsafe characters escaped (`\\n`, `\\x1b`),
    the rest ASCII (`?` for what is not), at most `limit` characters."""
    ascii_text = safetext.escape(text).encode("ascii", "replace").decode("ascii")
    if len(ascii_text) <= limit:
        return ascii_text
    return ascii_text[: max(limit - len(_CUT), 0)] + _CUT


def item_name(decision: policy.Decision) -> str:
    """The held item as a person names it: the file (PyPI decides files), else the version."""
    return decision.filename or decision.version


_KIND_ORDER: Final[tuple[Cause, ...]] = ("quarantine", "risk", "block", "freeze", "lapsed")


@dataclass(slots=True)
class _Group:
    """Held items that one cause holds, in the order given."""

    kind: Cause
    record: RuleRecord | None
    held: list[policy.Decision] = field(default_factory=list)
    signal: str = ""  # of a `risk` group: the signal's name


def _groups(withheld: Iterable[policy.Decision]) -> list[_Group]:
    """Quarantine first, then blocks, freezes and expired exemptions, each kind's rules in
    the order they first hold an item: whatever order the document lists its items in."""
    quarantine = _Group("quarantine", None)
    by_rule: dict[tuple[str, str], _Group] = {}
    kind: Cause
    risk: dict[str, _Group] = {}
    for decision in withheld:
        if decision.risk is not None and decision.block is None:
            name = decision.risk.signal.name
            if name not in risk:
                risk[name] = _Group("risk", None, signal=name)
            risk[name].held.append(decision)
            continue
        if decision.block is not None:
            record, kind = decision.block.record, "block"
        elif decision.freeze is not None:
            record, kind = decision.freeze.record, "freeze"
        elif decision.lapsed is not None:
            record, kind = decision.lapsed.record, "lapsed"
        else:
            quarantine.held.append(decision)
            continue
        group = by_rule.get((kind, record.id))
        if group is None:
            group = by_rule[(kind, record.id)] = _Group(kind, record)
        group.held.append(decision)
    ranked = sorted(by_rule.values(), key=lambda group: _KIND_ORDER.index(group.kind))
    return ([quarantine] if quarantine.held else []) + list(risk.values()) + ranked


def _items(held: Sequence[policy.Decision]) -> str:
    """The newest (last) few items, the rest counted."""
    shown = ", ".join(clean(item_name(decision)) for decision in held[-ITEMS_NAMED:])
    hidden = len(held) - ITEMS_NAMED
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def _newest(held: Sequence[policy.Decision]) -> str:
    """`newest X, available T` of the item that leaves quarantine last (the first given among
    equals), or `publish time unknown: <the newest few>` when none leaves by the clock."""
    timed = [(decision.until, decision) for decision in held if decision.until is not None]
    if not timed:
        return f"publish time unknown: {_items(held)}"
    until, newest = max(timed, key=lambda entry: entry[0])
    return f"newest {clean(item_name(newest))}, available {iso_minutes(until)}"


def _risky(held: Sequence[policy.Decision]) -> str:
    """The newest held item, until when (`until exempted` for a hold) and its signal's
    sentence, the rest counted: `4.2.1, until 2026-12-14T10:00Z: postinstall script added in
    4.2.1; 4.2.0 had none`. The time comes before the sentence: a sentence may hold a `;` or
    a `,` of its own, and a time after it would read as part of it."""
    newest = held[-1]
    verdict = newest.risk
    detail = clean(verdict.signal.detail, REASON_CHARS) if verdict is not None else ""
    until = f"until {iso_minutes(newest.until)}" if newest.until else "until exempted"
    others = f"; and {len(held) - 1} more" if len(held) > 1 else ""
    return f"{clean(item_name(newest))}, {until}: {detail}{others}"


def _describe(group: _Group, unit: Unit) -> str:
    number = count(len(group.held), unit)
    record = group.record
    if group.kind == "risk":
        return f"{number} held for risk signal {clean(group.signal)} ({_risky(group.held)})"
    if record is None:
        return f"{number} held in quarantine ({_newest(group.held)})"
    rule_id = clean(record.id)
    reason = clean(record.reason, REASON_CHARS)
    if group.kind == "block":
        return f"{number} blocked by block {rule_id}: {reason} ({_items(group.held)})"
    if group.kind == "freeze":
        expires = record.expires_at
        until = f"until {iso_minutes(expires)}" if expires is not None else "until lifted"
        return f"{number} held by freeze {rule_id}: {reason} ({until}; {_items(group.held)})"
    expired = iso_minutes(record.expires_at) if record.expires_at is not None else "unknown"
    return (
        f"{number} back in quarantine since exemption {rule_id} expired {expired} "
        f"({_newest(group.held)})"
    )


def summary(withheld: Iterable[policy.Decision], unit: Unit) -> str:
    """What holds `withheld`, cause by cause (`` when nothing is held), e.g. `2 versions held
    in quarantine (newest 1.4.0, available 2026-11-25T10:00Z); 1 version held by freeze
    f-1a2b: release week (until 2026-12-10T00:00Z; 1.5.0); 1 version blocked by block b-9c8d:
    hijacked (1.3.1)`. ASCII, bounded (see the module)."""
    groups = _groups(withheld)
    parts: list[str] = []
    named_rules = 0
    rest_items = 0
    rest_rules = 0
    for group in groups:
        if group.record is not None:
            if named_rules >= RULES_NAMED:
                rest_rules += 1
                rest_items += len(group.held)
                continue
            named_rules += 1
        parts.append(_describe(group, unit))
    if rest_rules:
        rules = f"{rest_rules} more rule{'s' if rest_rules != 1 else ''}"
        parts.append(f"and {count(rest_items, unit)} held by {rules}")
    return clean("; ".join(parts), NOTICE_CHARS)


def notice(
    name: str, withheld: Iterable[policy.Decision], unit: Unit, extra: Sequence[str] = ()
) -> str | None:
    """`name: <summary>[; extra…]` when anything is held back or `extra` says something,
    else None: the notice header's text (ASCII, bounded)."""
    parts = [part for part in (summary(withheld, unit), *extra) if part]
    if not parts:
        return None
    return clean(f"{clean(name)}: " + "; ".join(parts), NOTICE_CHARS)


def hold_clause(decision: policy.Decision) -> str:
    """What holds one hidden version, as the start of a refusal: `blocked by this mirror`,
    `held by freeze f-1a2b until 2026-12-10T00:00:00Z`, `in quarantine until …`, `in
    quarantine again until … (exemption e-… expired …)`, `in quarantine (its publish time is
    unknown)`."""
    if decision.block is not None:
        return "blocked by this mirror"
    until = decision.until
    if decision.risk is not None:
        signal = clean(decision.risk.signal.name)
        if until is None:
            return f"held for risk signal {signal} until an admin exempts it"
        return f"held for risk signal {signal} until {iso_seconds(until)}"
    if decision.freeze is not None:
        record = decision.freeze.record
        until_text = f"until {iso_seconds(until)}" if until else "until the freeze is lifted"
        return f"held by freeze {clean(record.id)} {until_text}"
    if until is None:
        held = "in quarantine (its publish time is unknown)"
    else:
        held = f"in quarantine until {iso_seconds(until)}"
    if decision.lapsed is not None:
        record = decision.lapsed.record
        expired = iso_seconds(record.expires_at)
        return held.replace("in quarantine", "in quarantine again", 1) + (
            f" (exemption {clean(record.id)} expired {expired})"
        )
    return held
