"""`mirror block|exempt|freeze`, `mirror unblock|unexempt|unfreeze` and
`mirror blocks|exemptions|freezes`: rules created, removed and listed through the API."""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from mirror.admin.parse import COLLECTIONS
from mirror.cli.client import Endpoint, call, expect
from mirror.cli.tables import coverage_lines, impact_text, rules_table, show
from mirror.model import RuleKind


def _created(kind: RuleKind, *, dry_run: bool = False) -> Callable[[Any], str]:
    def text(answer: Mapping[str, Any]) -> str:
        rule = answer[kind]
        verb = {"block": "blocked", "exemption": "exempted", "freeze": "froze"}[kind]
        if dry_run:
            verb = "would " + {"block": "block", "exemption": "exempt", "freeze": "freeze"}[kind]
        # A dry run's rule has no id: it was not stored.
        stored = "dry run, nothing created" if dry_run else f"id {show(rule['id'])}"
        if kind == "freeze":
            head = (
                f"{verb} {show(rule['ecosystem'])} {show(rule['package'])}: nothing published "
                f"after {show(rule['published_after'])} until {show(rule['expires_at'])} "
                f"({stored})"
            )
        else:
            until = f" until {show(rule['expires_at'])}" if rule.get("expires_at") else ""
            head = (
                f"{verb} {show(rule['ecosystem'])} {show(rule['package'])} "
                f"{show(rule['versions'])}{until} ({stored})"
            )
        lines = [head, *coverage_lines(rule)]
        if "impact" in answer:
            lines.append(impact_text(answer["impact"]))
        return "\n".join(lines)

    return text


def create_rule(kind: RuleKind) -> Callable[[argparse.Namespace, Endpoint], tuple[Any, Any]]:
    def command(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
        if kind == "freeze":
            body = {
                "ecosystem": args.ecosystem,
                "package": args.package,
                "published_after": args.published_after,
                "until": args.until,
                "reason": args.reason,
            }
        else:
            body = {
                "ecosystem": args.ecosystem,
                "package": args.package,
                "versions": args.versions,
                "reason": args.reason,
                "expires": args.expires,
            }
        dry_run = bool(getattr(args, "dry_run", False))
        query = {"dry_run": "true"} if dry_run else None
        answer = call(endpoint, "POST", f"/{COLLECTIONS[kind]}", query=query, body=body)
        expect(answer, f"mirror {args.command}", **{kind: dict})
        return answer, _created(kind, dry_run=dry_run)

    return command


def delete_rule(kind: RuleKind) -> Callable[[argparse.Namespace, Endpoint], tuple[Any, Any]]:
    def command(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
        rule_id = urllib.parse.quote(args.id, safe="")
        answer = call(endpoint, "DELETE", f"/{COLLECTIONS[kind]}/{rule_id}")
        expect(answer, f"mirror {args.command}", deleted=dict)
        return answer, lambda a: f"removed {kind} {show(a['deleted']['id'])}"

    return command


def list_rules(kind: RuleKind) -> Callable[[argparse.Namespace, Endpoint], tuple[Any, Any]]:
    def command(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
        answer = call(endpoint, "GET", f"/{COLLECTIONS[kind]}", query={"ecosystem": args.ecosystem})
        expect(answer, f"mirror {args.command}", **{COLLECTIONS[kind]: list})
        return answer, lambda a: rules_table(kind, a[COLLECTIONS[kind]])

    return command
