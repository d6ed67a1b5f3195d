"""The dashboard's rules page (being built: see issue 15)."""

from __future__ import annotations

from aiohttp import web

from mirror.ui import guard
from mirror.ui.render import render


def routes() -> list[web.RouteDef]:
    return [web.get("/rules", rules_page, allow_head=False)]


async def rules_page(request: web.Request) -> web.StreamResponse:
    guard.reader(request)
    return render(request, "pending.html", title="rules")
