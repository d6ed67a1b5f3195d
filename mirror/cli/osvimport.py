"""`mirror import-osv FILE...`: a block per affected range of each OSV advisory, unless an
identical block exists already (so re-importing a feed is harmless). With `--dry-run`, each
block it would create is previewed by the API's dry run: what it would cover and who already
downloaded it, nothing created."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from mirror.cli.client import AdminError, Endpoint, UsageError, call, emit, expect, unexpected
from mirror.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from mirror.cli.tables import coverage_lines, format_table, impact_text, show
from mirror.osv import ProposedBlock, blocks_from_advisory


def _read_advisories(paths: Sequence[str]) -> list[Mapping[str, Any]]:
    advisories: list[Mapping[str, Any]] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} is not JSON: {exc}") from None
        items = document if isinstance(document, list) else [document]
        if not all(isinstance(item, dict) for item in items):
            raise UsageError(f"{path}: expected an OSV advisory object or a list of them")
        advisories.extend(items)
    return advisories


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
    return "\n".join(lines)


def run_import_osv(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """`mirror import-osv FILE...`: a block per affected range of each advisory, unless an
    identical block exists already (so re-importing a feed is harmless)."""
    try:
        endpoint = Endpoint.from_args(args, environ)
        advisories = _read_advisories(args.files)
    except UsageError as exc:
        print(f"mirror: usage: {show(exc)}", file=sys.stderr)
        return EXIT_USAGE
    proposed: list[ProposedBlock] = []
    notes: list[str] = []
    origin: dict[ProposedBlock, str] = {}  # the advisory a block comes from
    for advisory in advisories:
        blocks, skipped = blocks_from_advisory(advisory)
        proposed.extend(blocks)
        notes.extend(skipped)
        for block in blocks:
            origin.setdefault(block, str(advisory.get("id") or "OSV advisory"))
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        existing = _existing_blocks(endpoint)
        for block in sorted(set(proposed)):
            row: dict[str, Any] = {
                "advisory": origin[block],
                "ecosystem": block.ecosystem,
                "package": block.package,
                "versions": block.versions,
                "reason": block.reason,
            }
            if (block.ecosystem, block.package, block.versions) in existing:
                row["action"] = "exists"
            elif args.dry_run:
                row["action"] = "would create"
            else:
                try:
                    created = call(endpoint, "POST", "/blocks", body=_rule_body(row))
                except AdminError as exc:
                    row["action"], row["error"] = "failed", str(exc)
                    notes.append(f"{block.ecosystem} {block.package} {block.versions}: {exc}")
                    failed = True
                else:
                    row["action"], row["id"] = "created", _created_id(created)
                    existing.add((block.ecosystem, block.package, block.versions))
                    if isinstance(created.get("warning"), str):
                        row["warning"] = created["warning"]
                        notes.append(f"warning: {created['warning']}")
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
        answer = {"advisories": len(advisories), "blocks": rows, "notes": notes}
        emit(args, answer, import_osv_text, sys.stdout)
    except AdminError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


def _existing_blocks(endpoint: Endpoint) -> set[tuple[str, str, str]]:
    listed = expect(call(endpoint, "GET", "/blocks"), "GET /api/v1/blocks", blocks=list)["blocks"]
    try:
        return {
            (rule["ecosystem"], rule["package"], rule["versions"])
            for rule in listed
            if not rule.get("expired")
        }
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
