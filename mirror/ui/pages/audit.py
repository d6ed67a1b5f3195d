"""`/ui/audit`: the audit log, newest first, filtered and paged as the admin API's `GET
/api/v1/audit` answers it (the same parsing, `audit_request`, and the same page,
`audit_answer`); `/ui/audit.csv`: every matching entry as CSV (`mirror.reportcells`),
streamed, bounded in rows."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Final

from aiohttp import web

from mirror.admin.parse import AUDIT_FILTERS, AuditRequest, audit_request, query_text
from mirror.admin.routes import DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT, audit_answer
from mirror.errors import MirrorError
from mirror.reportcells import AUDIT_COLUMNS, audit_line, audit_summary
from mirror.ui import guard
from mirror.ui.downloads import filters_of, link, paged_lines, stream_csv
from mirror.ui.render import problem_of, render, services

# The most entries one CSV holds: past it, a last line says it was cut.
MAX_CSV_ROWS: Final = 100_000


def routes() -> list[web.RouteDef]:
    return [
        web.get("/audit", audit_view, allow_head=False),
        web.get("/audit.csv", audit_csv_download, allow_head=False),
    ]


def rule_json(value: object) -> str:
    """A rule before or after a change, in full, for people ("" when there is none)."""
    return "" if value is None else json.dumps(value, indent=2, sort_keys=True)


def _asked(request: web.Request, *, default_limit: int) -> AuditRequest:
    return audit_request(
        request.query,
        now=services(request).clock.now(),
        default_limit=default_limit,
        max_limit=MAX_AUDIT_LIMIT,
    )


async def audit_view(request: web.Request) -> web.StreamResponse:
    guard.reader(request)
    filters = filters_of(request.query, AUDIT_FILTERS)
    entries: list[dict[str, Any]] = []
    answer: dict[str, Any] | None = None
    problem: str | None = None
    status = 200
    next_link = ""
    try:
        for field in request.query:  # every parameter, used or not, is refused alike
            query_text(request.query, field)
        asked = _asked(request, default_limit=DEFAULT_AUDIT_LIMIT)
        answer = await audit_answer(services(request), asked)
        entries = [
            {
                **entry,
                "summary": audit_summary(entry),
                "before_json": rule_json(entry["before"]),
                "after_json": rule_json(entry["after"]),
            }
            for entry in answer["entries"]
        ]
        if answer["next_cursor"]:
            next_link = link(
                "/ui/audit", filters, limit=str(asked.limit), cursor=answer["next_cursor"]
            )
    except MirrorError as exc:  # the form stays, to try again (the state may answer again)
        problem, status = problem_of(exc), exc.status
    return render(
        request,
        "audit.html",
        status=status,
        filters=filters,
        answer=answer,
        entries=entries,
        later_page=bool(request.query.get("cursor")),
        first_link=link("/ui/audit", filters),
        next_link=next_link,
        csv_link=link("/ui/audit.csv", filters),
        problem=problem,
    )


async def audit_csv_download(request: web.Request) -> web.StreamResponse:
    """Every matching entry from the newest (or from `cursor`), read in the API's largest
    pages, as CSV; a bad filter is a 400 page, before anything is sent."""
    guard.reader(request)
    mirror = services(request)
    asked = _asked(request, default_limit=MAX_AUDIT_LIMIT)
    first = await audit_answer(mirror, asked)

    async def page_after(cursor: str) -> dict[str, Any]:
        return await audit_answer(mirror, dataclasses.replace(asked, cursor=cursor))

    lines = paged_lines(first, "entries", "next_cursor", audit_line, page_after)

    return await stream_csv(
        request, "audit.csv", AUDIT_COLUMNS, lines, max_rows=MAX_CSV_ROWS, what="entries"
    )
