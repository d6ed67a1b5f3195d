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


def _created(kind: RuleKind) -> Callable[[Any], str]:
    def text(answer: Mapping[str, Any]) -> str:
        rule = answer[kind]
        verb = {"block": "blocked", "exemption": "exempted", "freeze": "froze"}[kind]
        if kind == "freeze":
            head = (
                f"{verb} {show(rule['ecosystem'])} {show(rule['package'])}: nothing published "
                f"after {show(rule['published_after'])} until {show(rule['expires_at'])} "
                f"(id {show(rule['id'])})"
            )
        else:
            until = f" until {show(rule['expires_at'])}" if rule.get("expires_at") else ""
            head = (
                f"{verb} {show(rule['ecosystem'])} {show(rule['package'])} "
                f"{show(rule['versions'])}{until} (id {show(rule['id'])})"
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
        answer = call(endpoint, "POST", f"/{COLLECTIONS[kind]}", body=body)
        return expect(answer, f"mirror {args.command}", **{kind: dict}), _created(kind)

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
