"""`/ui/events`: takedown events (what an upstream removed or yanked, and who had downloaded
it), newest first, filtered and paged as the admin API's `GET /api/v1/events` answers them
(the same parsing, `events_request`, and the same page, `events_answer`); each with a link
to the Impact page of its version. `/ui/events.csv`: every matching event as `mirror events
--csv` writes it (`mirror.reportcells`), streamed, bounded in rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from mirror import versions
from mirror.admin.events import DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT, events_answer
from mirror.admin.parse import EVENT_FILTERS, EventsRequest, events_request, query_text
from mirror.errors import MirrorError
from mirror.model import ECOSYSTEMS
from mirror.reportcells import EVENT_COLUMNS, event_line, event_subject
from mirror.ui import guard
from mirror.ui.downloads import filters_of, link, paged_lines, stream_csv
from mirror.ui.render import problem_of, render, services

# The most events one CSV holds: past it, a last line says it was cut (the state keeps at
# most `takedowns.EVENTS_KEPT`).
MAX_CSV_ROWS: Final = 100_000


def routes() -> list[web.RouteDef]:
    return [
        web.get("/events", events_view, allow_head=False),
        web.get("/events.csv", events_csv_download, allow_head=False),
    ]


def _asked(request: web.Request, *, default_limit: int) -> EventsRequest:
    return events_request(
        request.query,
        now=services(request).clock.now(),
        default_limit=default_limit,
        max_limit=MAX_EVENTS_LIMIT,
    )


def impact_link(event: Mapping[str, Any]) -> str:
    """The Impact page of exactly the version taken down (every download of it, not only
    the clients the event names)."""
    query = {
        "ecosystem": event["ecosystem"],
        "package": event["package"],
        "versions": versions.exact_spec(event["version"]),
    }
    return link("/ui/impact", query)


async def events_view(request: web.Request) -> web.StreamResponse:
    guard.reader(request)
    filters = filters_of(request.query, EVENT_FILTERS)
    events: list[dict[str, Any]] = []
    answer: dict[str, Any] | None = None
    problem: str | None = None
    status = 200
    next_link = ""
    try:
        for field in request.query:  # every parameter, used or not, is refused alike
            query_text(request.query, field)
        asked = _asked(request, default_limit=DEFAULT_EVENTS_LIMIT)
        answer = await events_answer(services(request), asked)
        events = [
            {**event, "subject": event_subject(event), "impact_link": impact_link(event)}
            for event in answer["events"]
        ]
        if answer["next"]:
            next_link = link("/ui/events", filters, limit=str(asked.limit), after=answer["next"])
    except MirrorError as exc:  # the form stays, to try again (the state may answer again)
        problem, status = problem_of(exc), exc.status
    return render(
        request,
        "events.html",
        status=status,
        filters=filters,
        ecosystems=ECOSYSTEMS,
        answer=answer,
        events=events,
        later_page=bool(request.query.get("after")),
        first_link=link("/ui/events", filters),
        next_link=next_link,
        csv_link=link("/ui/events.csv", filters),
        problem=problem,
    )


async def events_csv_download(request: web.Request) -> web.StreamResponse:
    """Every matching event from the newest (or from `after`), read in the API's largest
    pages, as CSV; a bad filter is a 400 page, before anything is sent."""
    guard.reader(request)
    mirror = services(request)
    asked = _asked(request, default_limit=MAX_EVENTS_LIMIT)
    first = await events_answer(mirror, asked)

    async def page_after(cursor: str) -> dict[str, Any]:
        # The next page as its link asks for it: the same filters, the cursor decoded.
        following = events_request(
            {**asked.texts, "after": cursor},
            now=mirror.clock.now(),
            default_limit=asked.limit,
            max_limit=MAX_EVENTS_LIMIT,
        )
        return await events_answer(mirror, following)

    lines = paged_lines(first, "events", "next", event_line, page_after)
    return await stream_csv(
        request, "events.csv", EVENT_COLUMNS, lines, max_rows=MAX_CSV_ROWS, what="events"
    )
