"""The dashboard as a sub-application at `/ui/`: its middleware (HTML errors, security
headers), the login and logout forms, its static files and every page module's routes."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Final

from aiohttp import web

from mirror.clock import iso_seconds
from mirror.config import Config
from mirror.forwarded import client_address
from mirror.safetext import escape
from mirror.services import SERVICES
from mirror.ui import guard, render
from mirror.ui import session as sessions
from mirror.ui.pages import audit, events, explain, impact, overview, queue, review, rules

log = logging.getLogger("mirror.ui")

# Failed logins per client address, this worker's (see `sessions.LoginThrottle`).
LOGIN_THROTTLE: Final = web.AppKey("ui-login-throttle", sessions.LoginThrottle)

# Each page module's routes, relative to /ui/.
PAGES: Final[Sequence[Callable[[], list[web.RouteDef]]]] = (
    overview.routes,
    queue.routes,
    rules.routes,
    review.routes,
    explain.routes,
    impact.routes,
    audit.routes,
    events.routes,
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
    ui[LOGIN_THROTTLE] = sessions.LoginThrottle()
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
    or the form again with why. Refused from another site (login CSRF); failed logins are
    logged (never the token) and, past `MAX_FAILED_LOGINS` a minute from one client,
    answered 429 without checking tokens until the minute ends."""
    services = request.config_dict[SERVICES]
    guard.refuse_cross_site(request)
    client = client_address(request, services.config)
    throttle = request.config_dict[LOGIN_THROTTLE]
    now = services.clock.now()
    refused_until = throttle.refused_until(client, now)
    if refused_until is not None:
        wait = max(1, math.ceil((refused_until - now).total_seconds()))
        response = _login_page(
            request,
            status=429,
            problem=f"Too many failed logins from your address: try again in {wait} seconds.",
        )
        response.headers["Retry-After"] = str(wait)
        return response
    form = await guard.read_form(request)
    admin = services.config.admin
    presented = form.get("token", "").strip()
    matched = sessions.log_in(presented, admin.tokens, admin.read_tokens) if presented else None
    if matched is None:
        log.warning("dashboard login refused from %s: not a valid admin token", escape(client))
        if throttle.failed(client, now):
            log.warning(
                "dashboard logins from %s throttled until %s: %d failed within %d s",
                escape(client),
                iso_seconds(throttle.refused_until(client, now) or now),
                throttle.max_failures,
                throttle.window.total_seconds(),
            )
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
