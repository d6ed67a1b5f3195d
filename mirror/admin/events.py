"""Takedown events as the admin API lists them (`GET /api/v1/events`) and the dashboard
shows them: newest first, filtered by ecosystem, package and time, paged by an opaque cursor
built from the last event's (detected_at, id). Events name client addresses, so they are
guarded as impact reports are (`auth.impact_needs_token`)."""

from __future__ import annotations

from typing import Any, Final

from mirror.admin.parse import EventsRequest, encode_event_cursor
from mirror.services import Services
from mirror.takedowns import event_to_json

DEFAULT_EVENTS_LIMIT: Final = 100
# Events in one page, at most: each keeps up to `takedowns.MAX_IMPACT_ROWS` clients.
MAX_EVENTS_LIMIT: Final = 500


async def events_answer(services: Services, asked: EventsRequest) -> dict[str, Any]:
    """One page of takedown events: `events` (each as `takedowns.event_to_json`) and `next`,
    the cursor of the page after it (None when this one is the last)."""
    # One more than asked: whether a next page exists is known without another read.
    found = await services.state.events(
        limit=asked.limit + 1,
        ecosystem=asked.ecosystem,
        package=asked.package,
        since=asked.since,
        before=asked.after,
    )
    shown = found[: asked.limit]
    following = None
    if len(found) > asked.limit:
        last = shown[-1]
        following = encode_event_cursor(asked, last.detected_at, last.id)
    return {"events": [event_to_json(event) for event in shown], "next": following}
