"""The dashboard as a sub-application at `/ui/`: its middleware (HTML errors, security
headers), the login and logout forms, its static files and every page module's routes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

from aiohttp import web

from mirror.config import Config
from mirror.forwarded import client_address
from mirror.safetext import escape
from mirror.services import SERVICES
from mirror.ui import guard, render
from mirror.ui import session as sessions
from mirror.ui.pages import audit, explain, impact, overview, queue, review, rules

log = logging.getLogger("mirror.ui")

# Each page module's routes, relative to /ui/.
PAGES: Final[Sequence[Callable[[], list[web.RouteDef]]]] = (
    overview.routes,
    queue.routes,
    rules.routes,
    review.routes,
    explain.routes,
    impact.routes,
    audit.routes,
)


def add_routes(app: web.Application, config: Config) -> None:
    """Mount the dashboard on `app` (unless `ui.enabled` is off)."""
    if not config.ui.enabled:
        return
    app.router.add_get("/ui", _to_dashboard)
    app.add_subapp("/ui/", dashboard())


def dashboard() -> web.Application:
    ui = web.Application(middlewares=[render.ui_middleware])
    ui[render.TEMPLATES] = render.environment()
    ui[review.REVIEW_WORKERS] = review.ReviewWorkers()
    ui.on_cleanup.append(review.close_workers)
    ui.router.add_get("/login", login_form)
    ui.router.add_post("/login", login)
    ui.router.add_post("/logout", logout)
    ui.router.add_static("/static/", render.STATIC_DIR, append_version=False)
    for page_routes in PAGES:
        ui.router.add_routes(page_routes())
    return ui


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(guard.HOME_PATH)


async def login_form(request: web.Request) -> web.StreamResponse:
    if guard.current(request) is not None:
        raise web.HTTPSeeOther(guard.local_target(request.query.get("next")))
    return _login_page(request, status=200, problem=None)


def _login_page(request: web.Request, *, status: int, problem: str | None) -> web.Response:
    admin = request.config_dict[SERVICES].config.admin
    return render.render(
        request,
        "login.html",
        status=status,
        problem=problem,
        target=guard.local_target(request.query.get("next")),
        no_tokens=not admin.tokens and not admin.read_tokens,
    )


async def login(request: web.Request) -> web.StreamResponse:
    """The token typed at the login form: a session cookie and back to the page asked for,
    or the form again with why. Failed logins are logged (never the token)."""
    services = request.config_dict[SERVICES]
    form = await guard.read_form(request)
    admin = services.config.admin
    presented = form.get("token", "").strip()
    matched = sessions.log_in(presented, admin.tokens, admin.read_tokens) if presented else None
    client = client_address(request, services.config)
    if matched is None:
        log.warning("dashboard login refused from %s: not a valid admin token", escape(client))
        return _login_page(
            request, status=403, problem="That is not an admin or read-only admin token here."
        )
    name, role = matched
    secret = (admin.tokens if role == "admin" else admin.read_tokens)[name]
    log.info("dashboard login: %s (%s) from %s", escape(name), role, escape(client))
    target = guard.local_target(form.get("next"))
    response = web.Response(status=303, headers={"Location": target})
    guard.start_session(request, response, name, role, secret)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    found, _ = await guard.writer_any_role(request)
    log.info("dashboard logout: %s", escape(found.name))
    response = web.Response(status=303, headers={"Location": guard.LOGIN_PATH})
    guard.end_session(response)
    return response
