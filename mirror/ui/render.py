"""How a dashboard page becomes a response: the Jinja2 environment (autoescaping every value,
undefined names an error), the security headers every `/ui/` answer carries (a strict
Content-Security-Policy: scripts, styles and images from the mirror itself only, no inline
script, no framing), and the middleware that turns errors into HTML pages."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import jinja2
from aiohttp import web
from markupsafe import Markup

from mirror import safetext, versions
from mirror.clock import parse_iso_time, readable_minutes
from mirror.errors import MirrorError, StateUnavailable
from mirror.reportcells import signal_action
from mirror.services import SERVICES, Services
from mirror.ui import guard

log = logging.getLogger("mirror.ui")

TEMPLATE_DIR: Final = Path(__file__).parent / "templates"
STATIC_DIR: Final = Path(__file__).parent / "static"
TEMPLATES: Final = web.AppKey("ui-templates", jinja2.Environment)

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Pages show who pulled what: never kept by a browser or a shared cache.
PAGE_CACHE_CONTROL: Final = "no-store"

# The navigation bar: (path under /ui/, label).
NAVIGATION: Final = (
    ("", "Overview"),
    ("queue", "Quarantine queue"),
    ("rules", "Blocks & exemptions"),
    ("explain", "Explain"),
    ("impact", "Impact"),
    ("audit", "Audit log"),
    ("events", "Takedowns"),
)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # every {{ value }} is HTML-escaped: names and reasons are untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=shown,
    )
    env.filters["when"] = when
    env.filters["spec"] = spec_text
    env.filters["signal_action"] = signal_action
    return env


def spec_text(value: object) -> object:
    """A rule's version spec as people read it (`===1.0` is "exactly 1.0"); anything else
    (a missing spec) as it is."""
    return versions.described(value) if isinstance(value, str) else value


# Kept as they are in shown text: a diff's lines and a reason's layout need them.
_KEPT_WHITESPACE: Final = frozenset("\n\t")


def shown(value: Any) -> Any:
    """Every value a template prints, before HTML escaping: control, bidirectional-override
    and other invisible format characters written out (`\\x1b`, `\\u202e`), so untrusted
    text cannot hide or reorder what a reviewer reads."""
    if not isinstance(value, str) or isinstance(value, Markup) or value.isprintable():
        return value  # Markup: a macro's or include's output, its values shown already
    return "".join(
        safetext.escape(char) if char not in _KEPT_WHITESPACE and safetext.is_unsafe(char) else char
        for char in value
    )


def when(value: datetime | str | None) -> str:
    """A time as pages show it: `2026-12-01 02:34 UTC` ("-" when unknown; a text that is
    not a time as it is)."""
    if value is None or value == "":
        return "-"
    moment = parse_iso_time(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    if moment is None:
        return str(value)
    return readable_minutes(moment)


def problem_of(exc: MirrorError) -> str:
    """What a page says of an error it shows beside its form."""
    if isinstance(exc, StateUnavailable):
        return f"State unavailable: {exc.message}"
    return exc.message


def services(request: web.Request) -> Services:
    return request.config_dict[SERVICES]


def render(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """`template` rendered with `context` and what every page shows: who is logged in, the
    CSRF token for its forms, the navigation."""
    session = guard.current(request)
    env = request.config_dict[TEMPLATES]
    html = env.get_template(template).render(
        session=session,
        csrf=guard.csrf_for(request, session),
        csrf_field=guard.CSRF_FIELD,
        navigation=NAVIGATION,
        here=request.path,
        **context,
    )
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def ui_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every `/ui/` answer: errors as HTML pages (never the API's JSON), redirects kept, and
    the security headers on all of them."""
    try:
        response = await handler(request)
    except web.HTTPRedirection as exc:
        location = exc.headers.get("Location", guard.HOME_PATH)
        response = web.Response(status=exc.status, headers={"Location": location})
    except MirrorError as exc:
        retry = {name: value for name, value in exc.headers if name == "Retry-After"}
        response = _error_page(request, exc.status, exc.message, retry)
    except web.HTTPNotFound:
        response = _error_page(request, 404, f"there is no dashboard page at {request.path}")
    except web.HTTPMethodNotAllowed:
        response = _error_page(request, 405, f"{request.method} is not allowed here")
    except web.HTTPException as exc:
        response = _error_page(request, exc.status, exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.raw_path)
        response = _error_page(request, 500, "internal error; the mirror logged the details")
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = PAGE_CACHE_CONTROL
    return response


def _error_page(
    request: web.Request, status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return render(
        request, "error.html", status=status, headers=headers, status_code=status, message=message
    )
