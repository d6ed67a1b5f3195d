"""What the admin commands print: aligned tables and short texts of the API's answers. Every
text from an answer (reasons, package names, error messages) goes through `show()`, so no
control character or escape sequence reaches the terminal."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

# The CSV rows and cells are the dashboard's too: one writer, in the pure layer (re-exported
# here for the commands that print them).
from mirror.reportcells import DOWNLOAD_COLUMNS as DOWNLOAD_COLUMNS
from mirror.reportcells import (
    EVENT_COLUMNS,
    audit_summary,
    csv_line,
    download_record,
    event_line,
    event_subject,
    signal_action,
)
from mirror.reportcells import impact_csv as impact_csv
from mirror.reportcells import show as show

COVERED_IN_TABLE: Final = 5  # versions a table row shows before "(+N)"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned on two spaces; the last column is never padded. Every cell goes
    through `show()`."""
    if not rows:
        return "(none)"
    cells = [[show(value) for value in headers], *[[show(v) for v in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = []
    for row in cells:
        padded = [value.ljust(width) for value, width in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def _expiry(rule: Mapping[str, Any]) -> str:
    expires = rule.get("expires_at") or "never"
    return f"{expires} (expired)" if rule.get("expired") else str(expires)


def covers_cell(rule: Mapping[str, Any]) -> str:
    """What a rule covers now, in a table cell: a few versions, NONE, or ? (unknown)."""
    covers = rule.get("covers")
    if not isinstance(covers, Mapping):
        return ""
    if covers.get("warning"):
        return "NONE (covers no version the upstream lists)"
    listed = covers.get("versions")
    if not isinstance(listed, list):
        return "?"
    declared = covers.get("count")
    count = declared if isinstance(declared, int) else len(listed)
    shown = ", ".join(show(version) for version in listed[:COVERED_IN_TABLE])
    return shown + (f" (+{count - COVERED_IN_TABLE})" if count > COVERED_IN_TABLE else "")


def coverage_lines(rule: Mapping[str, Any]) -> list[str]:
    """What a new rule or an explained one covers now, said in full (warning first)."""
    covers = rule.get("covers")
    if not isinstance(covers, Mapping):
        return []
    if covers.get("warning"):
        return [f"WARNING: {show(covers['warning'])}"]
    listed = covers.get("versions")
    if not isinstance(listed, list):
        return [f"covers: unknown ({show(covers.get('note'))})"]
    count, total = covers.get("count"), covers.get("listed")
    line = f"covers now: {', '.join(show(version) for version in listed)}"
    line += f" ({show(count)} of {show(total)} versions upstream lists)"
    lines = [line]
    if covers.get("note"):
        lines.append(f"note: {show(covers['note'])}")
    return lines


def rules_table(kind: str, rules: Sequence[Mapping[str, Any]]) -> str:
    if kind == "freeze":
        return format_table(
            ("ID", "ECOSYSTEM", "PACKAGE", "PUBLISHED AFTER", "UNTIL", "BY", "REASON"),
            [
                (r["id"], r["ecosystem"], r["package"], r.get("published_after"), _expiry(r),
                 r["created_by"], r["reason"])
                for r in rules
            ],
        )  # fmt: skip
    return format_table(
        ("ID", "ECOSYSTEM", "PACKAGE", "VERSIONS", "EXPIRES", "BY", "COVERS NOW", "REASON"),
        [
            (r["id"], r["ecosystem"], r["package"], r["versions"], _expiry(r), r["created_by"],
             covers_cell(r), r["reason"])
            for r in rules
        ],
    )  # fmt: skip


def _who_columns(downloads: Sequence[Mapping[str, Any]]) -> list[str]:
    """The read-token and CI columns, shown when some row of the page has one (a mirror
    without read tokens, or one whose answer predates them, shows neither)."""
    return [field for field in ("token", "ci") if any(d.get(field) for d in downloads)]


def identities_table(identities: Sequence[Mapping[str, Any]]) -> str:
    """Who downloaded, summed by read token and CI value ("-": none)."""
    return format_table(
        ("TOKEN", "CI", "CLIENTS", "DOWNLOADS", "FIRST SEEN", "LAST SEEN"),
        [
            (i.get("token") or "-", i.get("ci") or "-", i.get("clients", ""),
             i.get("downloads", ""), i.get("first_seen", ""), i.get("last_seen", ""))
            for i in identities
        ],
    )  # fmt: skip


def impact_text(impact: Mapping[str, Any]) -> str:
    if "error" in impact:
        return f"impact unknown: {show(impact['error'])}"
    downloads = impact.get("downloads", [])
    lines = []
    more = impact.get("next_cursor")
    if downloads:
        lines.append(
            f"already downloaded by {len(impact['clients'])} client(s) "
            f"({len(downloads)} client/file row(s){' on this page' if more else ''}):"
        )
        who = _who_columns(downloads)
        lines.append(
            format_table(
                ("CLIENT", *(field.upper() for field in who), "PACKAGE", "VERSION", "FILE",
                 "FIRST SEEN", "LAST SEEN", "COUNT"),
                [
                    (d["client"], *(d.get(field) or "-" for field in who), d.get("package", ""),
                     d["version"], d["filename"], d["first_seen"], d["last_seen"],
                     str(d["count"]))
                    for d in downloads
                ],
            )
        )  # fmt: skip
    elif more:
        lines.append("no recorded downloads of matching versions on this page")
    else:
        lines.append("no recorded downloads of matching versions")
    identities = impact.get("identities") or []
    if identities:
        lines.append("identities:")
        lines.append(identities_table(identities))
    if more:
        words = [impact.get("ecosystem"), impact.get("package"), impact.get("versions") or "*"]
        words += ["--cursor", more, "--limit", impact.get("limit") or ""]
        hint = " ".join(shlex.quote(show(word)) for word in words if word != "")
        lines.append(f"more downloads: mirror impact {hint}")
    return "\n".join(lines)


# `mirror impact --format csv|json`: every page, one row per download, for machines (the CSV
# lines: `mirror.reportcells`) -------------------------------------------------------------------


class IdentityTally:
    """The identities of the rows written: per (read token, CI value) the distinct clients,
    the downloads (counts summed), first and last seen (ISO 8601 UTC strings compare in
    time order)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._clients: dict[tuple[str, str], set[str]] = {}

    def add(self, record: Mapping[str, Any]) -> None:
        key = (record["token"], record["ci"])
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = {
                "token": key[0], "ci": key[1], "clients": 0, "downloads": 0,
                "first_seen": record["first_seen"], "last_seen": record["last_seen"],
            }  # fmt: skip
            self._clients[key] = set()
        self._clients[key].add(record["client"])
        row["clients"] = len(self._clients[key])
        row["downloads"] += record["count"]
        row["first_seen"] = min(row["first_seen"], record["first_seen"])
        row["last_seen"] = max(row["last_seen"], record["last_seen"])

    def identities(self) -> list[dict[str, Any]]:
        """Most downloads first."""
        return sorted(
            self._rows.values(), key=lambda row: (-row["downloads"], row["token"], row["ci"])
        )


def impact_json(query: Mapping[str, Any], pages: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """One JSON document, {"query": …, "downloads": [one record per download of every page],
    "identities": [per read token and CI value, over those rows]}, written as the pages
    arrive (a line per download), so an interrupted walk leaves invalid JSON, never a
    shorter valid answer. json.dumps escapes every control and non-ASCII character."""
    yield '{"query": ' + json.dumps(dict(query)) + ',\n"downloads": ['
    tally = IdentityTally()
    separator = "\n"
    for page in pages:
        for download in page["downloads"]:
            record = download_record(page, download)
            tally.add(record)
            yield separator + json.dumps(record)
            separator = ",\n"
    yield '\n],\n"identities": ' + json.dumps(tally.identities()) + "}\n"


def explain_text(answer: Mapping[str, Any]) -> str:
    rule = answer.get("rule") or {}
    lines = [
        f"{show(answer['ecosystem'])} {show(answer['package'])} {show(answer['version'])}: "
        f"{show(answer['verdict'])}",
        f"  {show(answer['detail'])}",
        f"  published: {show(answer.get('published_at') or 'unknown')}",
    ]
    if answer.get("until"):
        lines.append(f"  until:     {show(answer['until'])}")
    if rule:
        lines.append(
            f"  rule:      {show(rule.get('id'))} ({show(rule.get('kind'))}: "
            f"{show(rule.get('reason'))})"
        )
        lines.extend(f"  {line}" for line in coverage_lines(rule))
    lines.extend(signal_lines(answer.get("signals") or [], answer.get("risk"), "  "))
    files = answer.get("files") or []
    if files:
        # PyPI decides file by file: a file's signals are named in a column of their own,
        # when any file shows one (`--file` prints them in full).
        signalled = any(f.get("signals") for f in files)
        headers = ("  FILE", "VERDICT", "PUBLISHED", "UNTIL") + (("SIGNALS",) if signalled else ())
        lines.append(
            format_table(
                headers,
                [
                    (f"  {f.get('filename', '')}", f.get("verdict", ""),
                     f.get("published_at") or "", f.get("until") or "",
                     *((_signal_names(f),) if signalled else ()))
                    for f in files
                ],
            )
        )  # fmt: skip
    return "\n".join(lines)


def _signal_names(explained: Mapping[str, Any]) -> str:
    return ", ".join(str(signal.get("signal")) for signal in explained.get("signals") or [])


def signal_lines(
    signals: Sequence[Mapping[str, Any]], acting: Mapping[str, Any] | None, indent: str
) -> list[str]:
    """`signals:` then one line per risk signal, the strongest first: `name (action): what
    changed`, the one whose rule holds the version (`acting`) marked `holds it`; nothing when
    there is none."""
    if not signals:
        return []
    lines = [f"{indent}signals:"]
    for signal in signals:
        holds = ", holds it" if acting is not None and signal == acting else ""
        lines.append(
            f"{indent}  {show(signal.get('signal'))} ({signal_action(signal)}{holds}): "
            f"{show(signal.get('detail'))}"
        )
    return lines


def audit_table(entries: Sequence[Mapping[str, Any]]) -> str:
    return format_table(
        ("AT", "ACTOR", "CLIENT", "ACTION", "TARGET", "WHAT"),
        [
            (e["at"], e["actor"], e["client"], e["action"], e["target"], audit_summary(e))
            for e in entries
        ],
    )


def audit_text(answer: Mapping[str, Any]) -> str:
    """The entries, then where older ones went: pruned, or on the next page."""
    lines = [audit_table(answer["entries"]) if answer["entries"] else "no matching entries"]
    if answer.get("pruned_before"):
        lines.append(
            f"entries up to {show(answer['pruned_before'])} were pruned (older than the "
            "audit retention; the entry that created a rule still stored is kept)"
        )
    if answer.get("next_cursor"):
        cursor = shlex.quote(show(answer["next_cursor"]))
        lines.append(f"older entries: mirror audit --cursor {cursor} (with the same filters)")
    return "\n".join(lines)


def _event_kind(event: Mapping[str, Any]) -> str:
    reason = event.get("reason")
    return f"{event['kind']} ({reason})" if reason else str(event["kind"])


def events_text(answer: Mapping[str, Any]) -> str:
    """The takedown events of one page, newest first, then where older ones are."""
    rows = [
        (
            e["detected_at"],
            _event_kind(e),
            e["ecosystem"],
            e["package"],
            event_subject(e),
            e["clients"],
            e["downloads"],
        )
        for e in answer["events"]
    ]
    headers = ("WHEN", "KIND", "ECOSYSTEM", "PACKAGE", "VERSION/FILE", "CLIENTS", "DOWNLOADS")
    lines = [format_table(headers, rows) if rows else "no matching takedown events"]
    if answer.get("next"):
        cursor = shlex.quote(show(answer["next"]))
        lines.append(f"older events: mirror events --after {cursor} (with the same filters)")
    return "\n".join(lines)


def events_csv(answer: Mapping[str, Any]) -> Iterator[str]:
    """A header, then one line per event of the page (cells safe to open, `reportcells`)."""
    yield csv_line(EVENT_COLUMNS)
    for event in answer["events"]:
        yield event_line(event)
