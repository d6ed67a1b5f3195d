"""Who is using the dashboard, per request: the session cookie verified against the current
admin tokens (`mirror.ui.session`), a login required for every page, an admin login and a
valid CSRF token for every change, and forms read bounded."""

from __future__ import annotations

import secrets
import urllib.parse
from typing import Final

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from mirror.config import Config
from mirror.errors import BadRequest, Forbidden
from mirror.forwarded import forwarded_scheme
from mirror.requestbody import read_body
from mirror.services import SERVICES
from mirror.ui import session as sessions
from mirror.ui.session import COOKIE, CSRF_FIELD, UiSession

__all__ = ["CSRF_FIELD", "UiSession"]

LOGIN_PATH: Final = "/ui/login"
HOME_PATH: Final = "/ui/"
MAX_FORM_FIELDS: Final = 200
FORM_TYPE: Final = "application/x-www-form-urlencoded"
_SESSION: Final = web.RequestKey("ui-session", UiSession)
_CHECKED: Final = web.RequestKey("ui-session-checked", bool)


def _config(request: web.Request) -> Config:
    return request.config_dict[SERVICES].config


def current(request: web.Request) -> UiSession | None:
    """The verified session of this request, or None (checked once per request)."""
    if not request.get(_CHECKED):
        request[_CHECKED] = True
        admin = _config(request).admin
        now = request.config_dict[SERVICES].clock.now()
        found = sessions.verify(
            request.cookies.get(COOKIE), admin.tokens, admin.read_tokens, now=now
        )
        if found is not None:
            request[_SESSION] = found
    return request.get(_SESSION)


def reader(request: web.Request) -> UiSession:
    """The session of a page view; without one, a redirect to the login page that comes back
    here."""
    found = current(request)
    if found is None:
        target = urllib.parse.urlencode({"next": request.path_qs})
        raise web.HTTPSeeOther(f"{LOGIN_PATH}?{target}")
    return found


async def writer(request: web.Request) -> tuple[UiSession, MultiDictProxy[str]]:
    """The session and form of a change: an admin login (a read-only one is refused), a
    request from the dashboard's own pages (`Sec-Fetch-Site`, when the browser sends it) and
    the session's CSRF token in the form. Anything else is refused before the change."""
    found, form = await writer_any_role(request)
    if not found.can_write:
        raise Forbidden(f"{found.name} is a read-only login: a change needs an admin token")
    return found, form


async def writer_any_role(request: web.Request) -> tuple[UiSession, MultiDictProxy[str]]:
    """`writer` for what a read-only login may post too (logging out)."""
    found = reader(request)
    form = await read_form(request)
    refuse_cross_site(request)
    if not sessions.csrf_valid(found, _secret(request, found), form.get(CSRF_FIELD)):
        raise Forbidden(
            "the form's CSRF token is missing or stale (from another login?): reload the page "
            "and submit again"
        )
    return found, form


def refuse_cross_site(request: web.Request) -> None:
    """Refuse a POST a browser says another site (or a sibling subdomain) made: every change
    and the login form. A browser that sends no `Sec-Fetch-Site` relies on the CSRF token
    (and SameSite) alone."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("a change must come from the dashboard's own pages")


def csrf_for(request: web.Request, found: UiSession | None) -> str:
    """The CSRF token the page's forms carry ("" with no login)."""
    if found is None:
        return ""
    return sessions.csrf_token(found, _secret(request, found))


def _secret(request: web.Request, found: UiSession) -> str:
    admin = _config(request).admin
    secret = sessions.session_secret(found, admin.tokens, admin.read_tokens)
    if secret is None:  # verified a moment ago; the settings never change while running
        raise Forbidden("this login's token is no longer configured: log in again")
    return secret


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """An HTML form's fields (URL-encoded, bounded on the wire and in count)."""
    if request.content_type != FORM_TYPE:
        raise BadRequest(f"expected a form ({FORM_TYPE})")
    body = await read_body(request)
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form is not valid UTF-8 URL-encoded text") from None
    return MultiDictProxy(MultiDict(pairs))


def local_target(text: str | None) -> str:
    """Where to go after logging in: a dashboard path only (never another site, `//host`,
    a backslash trick, or a dot segment that climbs out of /ui/), else the overview."""
    if (
        not text
        or not text.startswith(HOME_PATH)
        or "\\" in text
        or "//" in text
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)
        or not _stays_on_dashboard(text)
        or text.startswith(LOGIN_PATH)
    ):
        return HOME_PATH
    return text


def _stays_on_dashboard(target: str) -> bool:
    """True when the path of `target`, its dot segments resolved as a browser does (RFC 3986
    5.2.4), also when percent-encoded (`%2e%2e`, `.%2E`, `%2F`), still lies under /ui/ and
    not on the login page."""
    path = urllib.parse.urlsplit(target).path
    # Decoded until stable: `%252e` is `%2e` to a server that decodes twice.
    for _ in range(4):
        decoded = urllib.parse.unquote(path)
        if decoded == path:
            break
        path = decoded
    else:
        return False
    if "\\" in path or "//" in path or any(ord(char) < 0x20 for char in path):
        return False
    resolved: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if resolved:
                resolved.pop()
        elif segment != ".":
            resolved.append(segment)
    if path.endswith(("/.", "/..")):
        resolved.append("")
    normal = "/" + "/".join(resolved)
    return normal.startswith(HOME_PATH) and not normal.startswith(LOGIN_PATH)


def start_session(
    request: web.Request, response: web.StreamResponse, name: str, role: sessions.Role, secret: str
) -> None:
    """Set the session cookie of a new login on `response`."""
    config = _config(request)
    lifetime = config.ui.session_lifetime
    value = sessions.issue(
        name,
        role,
        secret,
        now=request.config_dict[SERVICES].clock.now(),
        lifetime=lifetime,
        nonce=secrets.token_urlsafe(18),
    )
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(lifetime.total_seconds()),
        path=HOME_PATH,
        httponly=True,
        samesite="Strict",
        secure=served_securely(request),
    )


def end_session(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=HOME_PATH, samesite="Strict")


def served_securely(request: web.Request) -> bool:
    """Whether the dashboard's cookies must be `Secure`: served over TLS, directly, behind an
    https public URL, or through a trusted proxy that says the client used https."""
    config = _config(request)
    public = config.public_url or ""
    return (
        request.secure
        or config.tls.enabled
        or public.startswith("https:")
        or forwarded_scheme(request, config) == "https"
    )
