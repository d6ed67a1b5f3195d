"""`mirror explain`, `mirror impact`, `mirror audit` and `mirror events`: questions to the
API."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator, Mapping
from typing import Any, Final

from mirror.admin import parse
from mirror.cli.client import AdminError, Endpoint, UsageError, call, expect, unexpected
from mirror.cli.tables import (
    audit_text,
    events_csv,
    events_text,
    explain_text,
    impact_csv,
    impact_json,
    impact_text,
)
from mirror.errors import BadRequest


def split_subject(ecosystem: str, text: str) -> tuple[str, str]:
    """`axios@1.14.1`, `@scope/name@1.0.0`, `requests==2.31.0`, `org.example:lib:1.0`."""
    try:
        return parse.split_subject(ecosystem, text)
    except BadRequest as exc:
        raise UsageError(exc.message) from None


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


IMPACT_FORMATS: Final = ("table", "csv", "json")
# The most rows `--format csv|json` writes unless `--max-rows` says otherwise, and the most
# pages it reads whatever it says (a glob's page may hold no row: 100 packages are read a page).
DEFAULT_MAX_ROWS: Final = 1_000_000
MAX_PAGES: Final = 100_000
WALK_LIMIT: Final = 1000  # rows a page when walking every page (the API's largest page)


def _impact_query(args: argparse.Namespace, limit: int | None) -> dict[str, str | None]:
    return {
        "ecosystem": args.ecosystem,
        "package": args.package,
        "versions": args.versions,
        "since": args.since,
        "limit": None if limit is None else str(limit),
    }


def _impact_page(endpoint: Endpoint, query: Mapping[str, str | None], cursor: str | None) -> Any:
    answer = call(endpoint, "GET", "/impact", query={**query, "cursor": cursor})
    return expect(answer, "mirror impact", downloads=list, clients=tuple)


def impact_pages(
    endpoint: Endpoint,
    query: Mapping[str, str | None],
    *,
    cursor: str | None,
    max_rows: int,
) -> Iterator[Mapping[str, Any]]:
    """Every page of an impact report from `cursor` on, following `next_cursor` to the end;
    AdminError past `max_rows` rows or MAX_PAGES pages, or when a cursor comes back (the
    walk would never end). Lazy: each page is requested when the one before is written."""
    rows, seen = 0, {cursor}
    for _ in range(MAX_PAGES):
        page = _impact_page(endpoint, query, cursor)
        rows += len(page["downloads"])
        if rows > max_rows:
            raise AdminError(
                f"more than {max_rows} downloads match (the output above is incomplete): "
                "narrow the query (versions, --since) or raise --max-rows"
            )
        yield page
        cursor = page.get("next_cursor")
        if not cursor:
            return
        if not isinstance(cursor, str) or cursor in seen:
            raise unexpected("mirror impact", "next_cursor repeats an earlier page")
        seen.add(cursor)
    raise AdminError(
        f"the report has more than {MAX_PAGES} pages (the output above is incomplete): "
        "narrow the query (versions, --since)"
    )


def impact(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
    """The table: one page, as asked. CSV and JSON: every page from `--cursor` on (the API's
    largest pages unless `--limit`), written as they arrive."""
    if args.format == "table":
        return _impact_page(endpoint, _impact_query(args, args.limit), args.cursor), impact_text
    if args.json:
        raise UsageError(
            "--json prints one page as the API answers it; --format csv|json print every page: "
            "choose one"
        )
    if args.max_rows < 1:
        raise UsageError(f"--max-rows must be at least 1, got {args.max_rows}")
    query = _impact_query(args, args.limit or WALK_LIMIT)
    pages = impact_pages(endpoint, query, cursor=args.cursor, max_rows=args.max_rows)
    if args.format == "csv":
        return pages, impact_csv
    # What was asked (the page size is no part of the answer; a cursor is: the walk began there).
    shown = {key: value for key, value in query.items() if key != "limit"}
    shown["cursor"] = args.cursor
    return pages, functools.partial(impact_json, shown)


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


def events(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
    """One page of takedown events: a table, `--json` as the API answers it, or `--csv`."""
    if args.csv and args.json:
        raise UsageError("--json and --csv print the same page two ways: choose one")
    query = {
        "ecosystem": args.ecosystem,
        "package": args.package,
        "since": args.since,
        "limit": None if args.limit is None else str(args.limit),
        "after": args.after,
    }
    answer = call(endpoint, "GET", "/events", query=query)
    expect(answer, "mirror events", events=list)
    return answer, events_csv if args.csv else events_text
