"""`/ui/impact`: who already downloaded the versions a query covers, one page at a time, as
the admin API's `GET /api/v1/impact` answers it (the same parsing, `impact_request`, and the
same page, `impact_page`); `/ui/impact.csv`: every page as the CLI's `mirror impact --format
csv` writes it (`mirror.reportcells`), streamed, bounded in rows."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Final

from aiohttp import web

from mirror import policy
from mirror.admin.impact import DEFAULT_IMPACT_LIMIT, MAX_IMPACT_LIMIT, impact_page
from mirror.admin.parse import ImpactRequest, decode_cursor, impact_request, query_text
from mirror.errors import MirrorError
from mirror.model import ECOSYSTEMS
from mirror.reportcells import DOWNLOAD_COLUMNS, download_lines
from mirror.ui import guard
from mirror.ui.downloads import filters_of, link, stream_csv
from mirror.ui.render import problem_of, render, services

# The most download rows one CSV holds: past it, a last line says it was cut.
MAX_CSV_ROWS: Final = 100_000
# The form's fields, in the order the links write them.
FILTERS: Final = ("ecosystem", "package", "versions", "since")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/impact", impact_view, allow_head=False),
        web.get("/impact.csv", impact_csv_download, allow_head=False),
    ]


def _asked(request: web.Request, *, default_limit: int) -> ImpactRequest:
    return impact_request(
        request.query,
        now=services(request).clock.now(),
        default_limit=default_limit,
        max_limit=MAX_IMPACT_LIMIT,
    )


async def impact_view(request: web.Request) -> web.StreamResponse:
    guard.reader(request)
    filters = filters_of(request.query, FILTERS)
    answer: dict[str, Any] | None = None
    problem: str | None = None
    status = 200
    next_link = csv_link = ""
    glob = False
    try:
        for field in request.query:  # refused whether or not the report is asked for
            query_text(request.query, field)
        if request.query:  # the form submitted (its package is required)
            asked = _asked(request, default_limit=DEFAULT_IMPACT_LIMIT)
            answer = await impact_page(
                services(request), asked.query, limit=asked.limit, cursor=asked.cursor
            )
            glob = not policy.PackagePattern(asked.query.ecosystem, asked.query.package).exact
            if answer["next_cursor"]:
                next_link = link(
                    "/ui/impact",
                    filters,
                    limit=str(asked.limit),
                    cursor=answer["next_cursor"],
                )
            csv_link = link("/ui/impact.csv", filters)
    except MirrorError as exc:  # the form stays, to try again (the state may answer again)
        problem, status = problem_of(exc), exc.status
    return render(
        request,
        "impact.html",
        status=status,
        filters=filters,
        ecosystems=ECOSYSTEMS,
        answer=answer,
        glob=glob,
        later_page=bool(request.query.get("cursor")),
        first_link=link("/ui/impact", filters),
        next_link=next_link,
        csv_link=csv_link,
        problem=problem,
    )


async def impact_csv_download(request: web.Request) -> web.StreamResponse:
    """Every page of the report from the first (or from `cursor`), read in the API's largest
    pages, as CSV (`mirror.cli`'s columns and cells); a bad query is a 400 page, before
    anything is sent."""
    guard.reader(request)
    mirror = services(request)
    asked = _asked(request, default_limit=MAX_IMPACT_LIMIT)
    first = await impact_page(mirror, asked.query, limit=asked.limit, cursor=asked.cursor)

    async def lines() -> AsyncGenerator[str, None]:
        page, query, seen = first, asked.query, set[str]()
        while True:
            for line in download_lines(page):
                yield line
            following = page["next_cursor"]
            if not following or following in seen:
                return
            seen.add(following)
            query, cursor = decode_cursor(following, query)
            page = await impact_page(mirror, query, limit=asked.limit, cursor=cursor)

    name = f"impact-{asked.query.ecosystem}-{asked.query.package}.csv"
    return await stream_csv(
        request, name, DOWNLOAD_COLUMNS, lines(), max_rows=MAX_CSV_ROWS, what="downloads"
    )
