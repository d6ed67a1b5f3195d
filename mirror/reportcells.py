"""The impact and audit reports and the takedown events as CSV for machines and spreadsheets,
the one writer of both the CLI (`mirror impact --format csv`, `mirror events --csv`) and the
dashboard's downloads: the columns, one flat record per row, and every cell made safe to
open; and the few words both say of a risk signal (`signal_action`). Pure.

A cell is text: unsafe characters escaped (`mirror.safetext`), and a value a spreadsheet
would run as a formula (CSV injection) prefixed with `'`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from mirror import safetext

# The columns of a download row, in order (CSV header, JSON keys). The answer's rows lack
# `ecosystem` (the query's) and, from a mirror without read tokens, the who-fields: "" then.
DOWNLOAD_COLUMNS: Final = (
    "ecosystem", "package", "version", "filename", "client", "token", "ci", "command",
    "session", "user_agent", "first_seen", "last_seen", "count",
)  # fmt: skip
# The columns of an audit entry; `before` and `after` are the rule as JSON text.
AUDIT_COLUMNS: Final = ("at", "actor", "client", "action", "target", "before", "after")
# The columns of a takedown event, one row per event (who had it: the API's `impact`).
EVENT_COLUMNS: Final = (
    "detected_at", "kind", "ecosystem", "package", "version", "filename", "reason", "clients",
    "downloads", "id",
)  # fmt: skip
# A spreadsheet reads a cell starting with one of these as a formula (CSV injection), some
# also after leading blanks, and some locales also read their full-width forms; tab and
# carriage return are escaped by `show()`, and the raw value is checked too.
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def show(value: object) -> str:
    """Text from an answer as it may reach a terminal or a cell: unsafe characters escaped."""
    return "" if value is None else safetext.escape(value)


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text: unsafe characters escaped (`show`), and a
    leading `'` before a value that would start a formula (`=1+1`, `@SUM(…)`, the same after
    spaces, tabs or a carriage return, a full-width equals sign, and so also every npm scope
    `@scope/name` and a negative number)."""
    text = show(value)
    raw = "" if value is None else str(value)
    return "'" + text if _starts_formula(text) or _starts_formula(raw) else text


def _starts_formula(text: str) -> bool:
    """True when the first character that is not whitespace starts a formula."""
    return text.lstrip().startswith(FORMULA_STARTS)


def csv_line(values: Sequence[object]) -> str:
    """One CSV line of `values`, each through `csv_cell`."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([csv_cell(value) for value in values])
    return buffer.getvalue()


def download_record(page: Mapping[str, Any], download: Mapping[str, Any]) -> dict[str, Any]:
    """One download of an answer page as a flat record of DOWNLOAD_COLUMNS: strings ("" when
    absent), `count` an int."""
    record: dict[str, Any] = {
        column: "" if download.get(column) is None else str(download[column])
        for column in DOWNLOAD_COLUMNS
    }
    record["ecosystem"] = str(page.get("ecosystem") or "")
    count = download.get("count")
    record["count"] = count if isinstance(count, int) and not isinstance(count, bool) else 0
    return record


def download_lines(page: Mapping[str, Any]) -> Iterator[str]:
    """The CSV lines of one impact page's downloads (no header)."""
    for download in page["downloads"]:
        record = download_record(page, download)
        yield csv_line([record[column] for column in DOWNLOAD_COLUMNS])


def impact_csv(pages: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """A header, then one line per download of every page, as the pages arrive."""
    yield csv_line(DOWNLOAD_COLUMNS)
    for page in pages:
        yield from download_lines(page)


def audit_summary(entry: Mapping[str, Any]) -> str:
    """What an audit entry changed, in a few words: the rule after (else before) the change
    as `ecosystem package versions (reason)`, every part through `show()`."""
    rule = entry.get("after") or entry.get("before") or {}
    if not isinstance(rule, Mapping):
        return show(rule)
    parts = [rule.get("ecosystem"), rule.get("package"), rule.get("versions")]
    text = " ".join(show(part) for part in parts if part)
    return f"{text} ({show(rule['reason'])})" if rule.get("reason") else text


def signal_action(signal: Mapping[str, Any]) -> str:
    """What a risk signal's rule does (a signal as explain answers it, `RiskVerdict.describe`),
    as `mirror explain` and the dashboard say it: `note`, `extended to 14d`, `held until
    exempted`; a value this mirror does not know, shown safely."""
    action = signal.get("action")
    if action == "note":
        return "note"
    if action == "extend":
        return f"extended to {show(signal.get('age') or '?')}"
    if action == "hold":
        return "held until exempted"
    return show(action)


def audit_line(entry: Mapping[str, Any]) -> str:
    """One audit entry (as the API answers it) as a CSV line of AUDIT_COLUMNS; `before` and
    `after` as compact JSON text ("" when absent), keys sorted so equal rules read alike."""

    def rule_text(value: object) -> str:
        return "" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)

    return csv_line(
        [
            *(entry.get(column) for column in AUDIT_COLUMNS[:5]),
            rule_text(entry.get("before")),
            rule_text(entry.get("after")),
        ]
    )


def event_line(event: Mapping[str, Any]) -> str:
    """One takedown event (as the API answers it) as a CSV line of EVENT_COLUMNS."""
    return csv_line([event.get(column) for column in EVENT_COLUMNS])


def event_subject(event: Mapping[str, Any]) -> str:
    """What was taken down, in a few words: the version, and on PyPI the file
    (`1.0 evil_pkg-1.0.tar.gz`), every part through `show()`."""
    version = show(event.get("version"))
    filename = event.get("filename")
    return f"{version} {show(filename)}" if filename else version
