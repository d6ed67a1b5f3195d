"""Turning pre-rendered views into HTTP responses (ETag, 304, br/gzip, Cache-Control, Vary),
and the client-facing base URL that rewritten links are built from. No policy, no I/O."""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import brotli
from aiohttp import web

from mirror.budget import small_input_cache
from mirror.config import Config
from mirror.forwarded import FORWARDED_URL_HEADERS, forwarded_scheme, from_trusted_proxy
from mirror.holds import HeldRendered, HeldSubject
from mirror.model import Rendered
from mirror.replay import REPLAY_BODY, ViewBody

# A view's body from this size is compressed off the event loop (`render_soon`).
RENDER_IN_THREAD_BYTES = 256 * 1024
# Metadata views are small to revalidate; the client may keep them at most this long.
DEFAULT_MAX_AGE = timedelta(minutes=5)
# Smaller bodies are served as they are: compressing them saves less than it costs.
_COMPRESS_MIN_BYTES = 1024
# Brotli quality 5: on a 10.5 MiB packument-like JSON it took about as long as gzip level 6
# (222 vs 195 ms) for a body 9 % smaller (2.22 vs 2.43 MiB); quality 6 took half as long again
# for under 1 % more.
_BROTLI_QUALITY = 5
# A 256 KiB window (brotli's default is 4 MiB): compressing an 8 MiB packument then takes
# about 5 MiB more memory at its peak instead of 33 MiB, for a body about 3 % bigger (still
# smaller than gzip's); several renders at once must stay within a worker's memory target.
_BROTLI_WINDOW_BITS = 18
# The content codings a view may be pre-compressed in, the preferred first.
_VIEW_CODINGS = ("br", "gzip")
# A request whose answer was built from `base_url` while forwarded headers could change it:
# its response must say so in Vary (see `finish_headers`).
_URL_FROM_FORWARDED: web.RequestKey[bool] = web.RequestKey("url_from_forwarded", bool)
# The versions a served view withheld by quarantine (`respond` sets it, the app notes them
# in the quarantine queue).
HELD_VERSIONS: web.RequestKey[tuple[HeldSubject, ...]] = web.RequestKey(
    "held_versions", tuple[HeldSubject, ...]
)
# Sent on every response when the mirror serves TLS itself.
HSTS = "max-age=31536000"


def make_etag(*parts: bytes | str) -> str:
    """A strong ETag over the served bytes and their representation."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return f'"{digest.hexdigest()[:32]}"'


def render(
    body: bytes,
    *,
    content_type: str,
    form: str,
    valid_until: datetime | None = None,
    last_modified: datetime | None = None,
    headers: Mapping[str, str] | None = None,
    held: Sequence[HeldSubject] = (),
) -> Rendered:
    """Build a `Rendered` view once: ETag over bytes + form, gzip and brotli pre-compressed.
    `held`: the versions it withholds by quarantine (`holds.quarantined`), noted per request.
    A big view costs a few hundred ms here: callers render those off the event loop."""
    compress = len(body) >= _COMPRESS_MIN_BYTES
    view = Rendered(
        body=body,
        content_type=content_type,
        etag=make_etag(form, body),
        gzipped=gzip.compress(body, compresslevel=6, mtime=0) if compress else None,
        brotli=(
            brotli.compress(body, quality=_BROTLI_QUALITY, lgwin=_BROTLI_WINDOW_BITS)
            if compress
            else None
        ),
        valid_until=valid_until,
        last_modified=last_modified,
        headers=dict(headers or {}),
    )
    return HeldRendered.of(view, tuple(held)) if held else view


async def render_soon(body: bytes, **view: Any) -> Rendered:
    """`render(body, **view)`, off the event loop for a body of RENDER_IN_THREAD_BYTES or
    more: compressing it twice (gzip and brotli) takes milliseconds per 100 KiB."""
    if len(body) >= RENDER_IN_THREAD_BYTES:
        return await asyncio.to_thread(functools.partial(render, body, **view))
    return render(body, **view)


def encoded_body(accept_encoding: str, view: Rendered) -> tuple[str | None, bytes]:
    """The content coding and body to send `view` with for this Accept-Encoding: br, else
    gzip, each only when the view has that body and the client accepts it; else (None, the
    body as is)."""
    accepted = accepted_codings(accept_encoding)
    if "br" in accepted and view.brotli is not None:
        return "br", view.brotli
    if "gzip" in accepted and view.gzipped is not None:
        return "gzip", view.gzipped
    return None, view.body


@small_input_cache(256)  # clients send a handful of distinct values; long ones are not kept
def accepted_codings(accept_encoding: str) -> frozenset[str]:
    """The codings of a view's bodies (br, gzip) this Accept-Encoding accepts: all that
    decides which body `respond` sends (the hot path keys answers on it, not on the header's
    spelling)."""
    # RFC 9110 §12.5.3: a coding's own entry wins over "*"; weight 0 (or one that is not a
    # weight) refuses it; a coding not listed, with no "*", is not accepted.
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding:
            weights.setdefault(coding, _weight(params))
    wildcard = weights.get("*", 0.0)
    return frozenset(coding for coding in _VIEW_CODINGS if weights.get(coding, wildcard) > 0)


def _weight(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                return 0.0
            # NaN fails both comparisons: refused like any weight out of range.
            return weight if 0.0 <= weight <= 1.0 else 0.0
    return 1.0


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    bare = etag.strip('"')
    for candidate in header.split(","):
        candidate = candidate.strip()
        candidate = candidate.removeprefix("W/")
        if candidate.strip('"') == bare:
            return True
    return False


def max_age_seconds(view: Rendered, now: datetime, ceiling: timedelta = DEFAULT_MAX_AGE) -> int:
    """Never let a client keep a view past the moment it changes by the clock alone."""
    limit = ceiling
    if view.valid_until is not None:
        limit = min(limit, view.valid_until - now)
    return max(0, math.floor(limit.total_seconds()))


def respond(
    request: web.Request,
    view: Rendered,
    *,
    now: datetime,
    vary: str = "Accept, Accept-Encoding",
    ceiling: timedelta = DEFAULT_MAX_AGE,
    status: int = 200,
    extra_headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Answer with `view`: 304 on a matching If-None-Match (If-Modified-Since is ignored
    when If-None-Match is present, RFC 9110 §13.1.3), br or gzip when accepted (one ETag
    for every coding, over the identity body, as aiohttp's own compression does). What the view
    withholds by quarantine is left on the request (`HELD_VERSIONS`) for the queue."""
    if isinstance(view, HeldRendered):
        request[HELD_VERSIONS] = view.held
    headers = {
        "ETag": view.etag,
        "Vary": vary,
        "Cache-Control": f"public, max-age={max_age_seconds(view, now, ceiling)}",
        **view.headers,
        **(extra_headers or {}),
    }
    if view.last_modified is not None:
        headers["Last-Modified"] = _http_date(view.last_modified)
    if_none_match = request.headers.get("If-None-Match")
    if status == 200 and if_none_match is not None and _etag_matches(if_none_match, view.etag):
        return web.Response(status=304, headers=headers)
    if (
        status == 200
        and if_none_match is None
        and view.last_modified is not None
        and _not_modified_since(request.headers.get("If-Modified-Since"), view.last_modified)
    ):
        return web.Response(status=304, headers=headers)
    coding, body = encoded_body(request.headers.get("Accept-Encoding", ""), view)
    if coding is not None:
        headers["Content-Encoding"] = coding
    headers["Content-Type"] = view.content_type
    if status == 200:
        # The view as it went out: the hot path may answer the same request again with it.
        # Its max-age counts down to `valid_until` once within `ceiling` of it: until then
        # these very headers stay the answer.
        held = view.held if isinstance(view, HeldRendered) else ()
        until = None if view.valid_until is None else view.valid_until - ceiling
        request[REPLAY_BODY] = ViewBody(held=held, valid_until=until)
    # On HEAD aiohttp sends the headers (Content-Length included) and no body.
    return web.Response(status=status, body=body, headers=headers)


@functools.lru_cache(maxsize=4096)
def _http_date(moment: datetime) -> str:
    # Views keep their Last-Modified for minutes: format it once, not per request.
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _not_modified_since(header: str | None, last_modified: datetime) -> bool:
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        return False
    return last_modified.replace(microsecond=0) <= since


def base_url(request: web.Request, config: Config) -> str:
    """The URL clients reached the mirror at, without a trailing slash: `public_url` when
    set; else the request's own scheme and Host (plus X-Forwarded-Proto/-Host/-Prefix when
    the request came through a proxy in `trusted_proxies`). Lockfiles store URLs built from
    this, so it must be stable."""
    if config.public_url:
        return config.public_url
    if config.trusted_proxies:
        # Whoever asks (a proxy or not), a shared cache must key this answer on the headers
        # a trusted proxy may set: the mark makes `finish_headers` list them in Vary.
        request[_URL_FROM_FORWARDED] = True
    scheme = request.scheme
    host = request.host
    prefix = ""
    if from_trusted_proxy(request, config):
        scheme = forwarded_scheme(request, config) or scheme
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip() or host
        prefix = request.headers.get("X-Forwarded-Prefix", "").strip().rstrip("/")
    if scheme not in {"http", "https"}:
        scheme = "http"
    return f"{scheme}://{host}{prefix}"


def finish_headers(request: web.Request, response: web.StreamResponse, config: Config) -> None:
    """The last headers of every response, just before they go out: HSTS when the mirror
    serves TLS itself, `private` for `public` when reads need a token, and the forwarded
    headers in Vary when they could have changed URLs in this answer (so a shared cache
    never hands one host's links to another)."""
    if config.tls.enabled:
        response.headers["Strict-Transport-Security"] = HSTS
    if config.access.required:
        # Reads need a token: a shared cache in front must not hand them to anyone else
        # (RFC 9111 §3.5 lets it store an authorized answer marked public).
        cache_control = response.headers.get("Cache-Control", "")
        if cache_control.startswith("public"):
            response.headers["Cache-Control"] = "private" + cache_control[len("public") :]
    if request.get(_URL_FROM_FORWARDED):
        listed = [name.strip() for name in response.headers.get("Vary", "").split(",")]
        known = {name.lower() for name in listed if name}
        added = [name for name in FORWARDED_URL_HEADERS if name.lower() not in known]
        if added and "*" not in known:
            response.headers["Vary"] = ", ".join([*filter(None, listed), *added])
