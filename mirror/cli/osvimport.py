"""`mirror import-osv FILE|DIR|ZIP...`: a block per affected range of each OSV advisory,
unless an identical block exists already (so re-importing a feed is harmless); the blocks of
withdrawn advisories lifted, those a changed advisory no longer proposes replaced
(`osv.plan`). Reads JSON files, directories and zips of advisories (the OSV
malicious-packages feed layout), within bounds (`Limits`). With `--dry-run`, each
block it would create is previewed by the API's dry run: what it would cover and who already
downloaded it, nothing created."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from mirror.advisories import UnreadableAdvisories, read_advisories
from mirror.cli.client import AdminError, Endpoint, UsageError, call, emit, expect, unexpected
from mirror.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from mirror.cli.tables import coverage_lines, format_table, impact_text, show
from mirror.osv import Change, StoredBlock, collect, outcomes, plan

ACTION_DONE = {"lift": "lifted", "remove": "removed", "create": "created"}
ACTION_PLANNED = {"lift": "would lift", "remove": "would remove", "create": "would create"}


def import_osv_text(answer: Mapping[str, Any]) -> str:
    rows = [
        (row["action"], row["ecosystem"], row["package"], row["versions"], row.get("id") or "")
        for row in answer["blocks"]
    ]
    lines = []
    if rows:
        lines.append(format_table(("ACTION", "ECOSYSTEM", "PACKAGE", "VERSIONS", "ID"), rows))
    lines.extend(_preview_lines(answer["blocks"]))
    lines.extend(f"skipped: {show(note)}" for note in answer["notes"])
    created = sum(1 for row in answer["blocks"] if row["action"] == "created")
    lines.append(f"{len(rows)} block(s) from {answer['advisories']} advisory(ies); {created} new")
    by_outcome: dict[str, int] = {}
    for outcome in (answer.get("outcomes") or {}).values():
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    counted = [f"{count} {outcome}" for outcome, count in sorted(by_outcome.items())]
    if answer.get("unsupported"):
        counted.append(f"{answer['unsupported']} unsupported ecosystem entry(ies) skipped")
    if counted:
        lines.append("advisories: " + show(", ".join(counted)))
    return "\n".join(lines)


def run_import_osv(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """`mirror import-osv FILE|DIR|ZIP...`: the advisories' blocks created, those of withdrawn
    advisories lifted, those a changed advisory no longer proposes removed; blocks that exist
    already are left alone (so re-importing a feed is harmless)."""
    try:
        endpoint = Endpoint.from_args(args, environ)
        collected = collect(
            (path, advisory) for path in args.files for advisory in read_advisories([path])
        )
    except (UsageError, UnreadableAdvisories) as exc:
        print(f"mirror: usage: {show(exc)}", file=sys.stderr)
        return EXIT_USAGE
    notes = list(collected.notes)
    imported = collected.imported
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        changes = plan(imported, _stored_blocks(endpoint))
        not_created: set[str] = set()  # advisories whose new block failed: keep their old ones
        for change in changes:
            row = _row(change)
            if change.action in ("unchanged", "exists"):
                row["action"] = "exists"  # the outcomes tell whose block it is
            elif args.dry_run:
                row["action"] = ACTION_PLANNED[change.action]
            elif change.action == "remove" and change.advisory in not_created:
                row["action"] = "kept"
                notes.append(
                    f"{change.advisory}: {change.ecosystem} {change.package} {change.versions} "
                    "kept: its replacement could not be created"
                )
            else:
                try:
                    _apply(endpoint, change, row, notes)
                except AdminError as exc:
                    row["action"], row["error"] = "failed", str(exc)
                    notes.append(f"{change.ecosystem} {change.package} {change.versions}: {exc}")
                    failed = True
                    not_created.add(change.advisory)
            rows.append(row)
        for row in rows:
            if row["action"] != "would create":
                continue
            try:
                row.update(_preview(endpoint, row))
            except AdminError as exc:
                row["action"], row["error"] = "failed", str(exc)
                notes.append(f"{row['ecosystem']} {row['package']} {row['versions']}: {exc}")
                failed = True
        answer = {
            "advisories": collected.read,
            "blocks": rows,
            "outcomes": outcomes(imported, changes),
            "unsupported": collected.unsupported,
            "notes": notes,
        }
        emit(args, answer, import_osv_text, sys.stdout)
    except AdminError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


def _row(change: Change) -> dict[str, Any]:
    row: dict[str, Any] = {
        "advisory": change.advisory,
        "ecosystem": change.ecosystem,
        "package": change.package,
        "versions": change.versions,
        "reason": change.reason,
    }
    if change.block_id is not None:
        row["id"] = change.block_id
    return row


def _apply(endpoint: Endpoint, change: Change, row: dict[str, Any], notes: list[str]) -> None:
    if change.action in ("lift", "remove"):
        call(endpoint, "DELETE", f"/blocks/{urllib.parse.quote(str(change.block_id), safe='')}")
        row["action"] = ACTION_DONE[change.action]
        return
    created = call(endpoint, "POST", "/blocks", body=_rule_body(row))
    row["action"], row["id"] = "created", _created_id(created)
    if isinstance(created.get("warning"), str):
        row["warning"] = created["warning"]
        notes.append(f"warning: {created['warning']}")


def _stored_blocks(endpoint: Endpoint) -> list[StoredBlock]:
    """The blocks in force (an expired one enforces nothing and is left alone)."""
    listed = expect(call(endpoint, "GET", "/blocks"), "GET /api/v1/blocks", blocks=list)["blocks"]
    try:
        return [
            StoredBlock(
                id=str(rule["id"]),
                ecosystem=str(rule["ecosystem"]),
                package=str(rule["package"]),
                versions=str(rule["versions"]),
                reason=str(rule.get("reason") or ""),
            )
            for rule in listed
            if not rule.get("expired")
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise unexpected("GET /api/v1/blocks", f"{type(exc).__name__}: {exc}") from None


def _created_id(created: Mapping[str, Any]) -> str:
    block = created.get("block")
    if not isinstance(block, Mapping) or not isinstance(block.get("id"), str):
        raise unexpected("POST /api/v1/blocks", "no block id")
    return str(block["id"])


def _rule_body(row: Mapping[str, Any]) -> dict[str, Any]:
    return {field: row[field] for field in ("ecosystem", "package", "versions", "reason")}


def _preview(endpoint: Endpoint, row: Mapping[str, Any]) -> dict[str, Any]:
    """What a block would cover and who already downloaded it: the API's dry run of it."""
    answer = call(endpoint, "POST", "/blocks", query={"dry_run": "true"}, body=_rule_body(row))
    block = expect(answer, "POST /api/v1/blocks?dry_run=true", block=dict)["block"]
    preview: dict[str, Any] = {}
    if isinstance(block.get("covers"), Mapping):
        preview["covers"] = block["covers"]
    if isinstance(answer.get("impact"), Mapping):
        preview["impact"] = answer["impact"]
    if isinstance(answer.get("warning"), str):
        preview["warning"] = answer["warning"]
    return preview


def _preview_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per advisory, each block a dry run would create: what it covers, who downloaded it."""
    lines: list[str] = []
    for row in rows:
        if row.get("action") != "would create":
            continue
        lines.append("")
        lines.append(
            f"{show(row.get('advisory'))}: would block {show(row['ecosystem'])} "
            f"{show(row['package'])} {show(row['versions'])}"
        )
        lines.extend(coverage_lines(row))
        if isinstance(row.get("impact"), Mapping):
            lines.append(impact_text(row["impact"]))
    return lines
