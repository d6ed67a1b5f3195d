"""`mirror explain`, `mirror impact` and `mirror audit`: questions to the API."""

from __future__ import annotations

import argparse
from typing import Any

from mirror.cli.client import Endpoint, UsageError, call, expect
from mirror.cli.tables import audit_text, explain_text, impact_text


def split_subject(ecosystem: str, text: str) -> tuple[str, str]:
    """`axios@1.14.1`, `@scope/name@1.0.0`, `requests==2.31.0`, `org.example:lib:1.0`."""
    if ecosystem == "npm":
        package, at, version = text.rpartition("@")
        if not at or not package:
            raise UsageError(f"write the npm version as name@version, got {text!r}")
    elif ecosystem == "pypi":
        package, sep, version = text.partition("==")
        if not sep:
            raise UsageError(f"write the PyPI version as project==version, got {text!r}")
    elif ecosystem == "maven":
        package, sep, version = text.rpartition(":")
        if not sep or ":" not in package:
            raise UsageError(f"write the Maven version as group:artifact:version, got {text!r}")
    else:
        raise UsageError(f"unknown ecosystem {ecosystem!r} (expected npm, pypi or maven)")
    if not package.strip() or not version.strip():
        raise UsageError(f"both a package and a version are needed, got {text!r}")
    return package.strip(), version.strip()


def explain(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
    if args.version is not None:
        package, version = args.subject, args.version
    else:
        package, version = split_subject(args.ecosystem, args.subject)
    query = {"ecosystem": args.ecosystem, "package": package, "version": version}
    if getattr(args, "file", None):
        query["file"] = args.file
    answer = call(endpoint, "GET", "/explain", query=query)
    return expect(answer, "mirror explain", verdict=str, detail=str), explain_text


def impact(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
    query = {
        "ecosystem": args.ecosystem,
        "package": args.package,
        "versions": args.versions,
        "since": args.since,
        "limit": None if args.limit is None else str(args.limit),
        "cursor": args.cursor,
    }
    answer = call(endpoint, "GET", "/impact", query=query)
    return expect(answer, "mirror impact", downloads=list, clients=tuple), impact_text


def audit(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
    query = {
        "limit": str(args.limit),
        "target": getattr(args, "target", None),
        "actor": getattr(args, "actor", None),
        "since": getattr(args, "since", None),
        "until": getattr(args, "until", None),
        "cursor": getattr(args, "cursor", None),
    }
    answer = call(endpoint, "GET", "/audit", query=query)
    expect(answer, "mirror audit", entries=list)
    return answer, audit_text
