"""A recording fake upstream registry: a real aiohttp app on 127.0.0.1 that serves registered
bodies from memory, answers conditional GETs, and injects faults per path. It knows nothing
about npm, PyPI or Maven; ecosystem fakes build their documents and `add` them here."""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from pytest_aiohttp import AiohttpServer


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    """One request as the fake saw it. `path` is the raw (still percent-encoded) path."""

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes = b""


@dataclass(slots=True, kw_only=True)
class _Route:
    body: bytes
    content_type: str
    headers: dict[str, str]
    status: int
    etag: str | None
    last_modified: str | None
    compress: bool


@dataclass(slots=True, kw_only=True)
class _Failure:
    status: int
    remaining: int | None  # None: every request
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None  # None: every method


class FakeUpstream:
    """Serve `add`ed paths; every request is recorded in `requests` (bounded by the test).

    Start it with `await fake.start(aiohttp_server)`; then `fake.url("/path")` is the
    absolute URL and `fake.host` the `host:port` to put in an allowlist."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.requests: list[RecordedRequest] = []
        self.base_url: str | None = None
        self._routes: dict[str, _Route] = {}
        self._redirects: dict[str, tuple[int, str]] = {}
        self._failures: dict[str, _Failure] = {}
        self._truncated: set[str] = set()
        self._resets: dict[str, int | None] = {}
        self._delays: dict[str, float] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._held_bodies: dict[str, asyncio.Event] = {}
        self._no_ranges: set[str] = set()
        self._down = False
        self._arrival = asyncio.Event()

    # lifecycle --------------------------------------------------------------------------

    async def start(self, aiohttp_server: AiohttpServer) -> str:
        """Serve on a free 127.0.0.1 port (closed by the fixture); returns the base URL."""
        server = await aiohttp_server(self.app, host="127.0.0.1")
        self.base_url = str(server.make_url("/"))
        return self.base_url

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the allowlist entry for this fake."""
        if self.base_url is None:
            raise RuntimeError("FakeUpstream is not started")
        return self.base_url.split("://", 1)[1].rstrip("/")

    def url(self, path: str) -> str:
        if self.base_url is None:
            raise RuntimeError("FakeUpstream is not started")
        return self.base_url.rstrip("/") + path

    # building ---------------------------------------------------------------------------

    def add(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/octet-stream",
        headers: Mapping[str, str] | None = None,
        status: int = 200,
        etag: str | None = None,
        last_modified: str | datetime | None = None,
        compress: bool = False,
    ) -> None:
        """Serve `body` at `path` (raw, percent-encoded form, no query). Re-adding replaces it.

        `etag` is sent as given (quote it: `'"v1"'`); `compress=True` gzips the body for
        clients that send `Accept-Encoding: gzip`."""
        if isinstance(last_modified, datetime):
            last_modified = format_datetime(last_modified, usegmt=True)
        self._routes[path] = _Route(
            body=body,
            content_type=content_type,
            headers=dict(headers or {}),
            status=status,
            etag=etag,
            last_modified=last_modified,
            compress=compress,
        )

    def remove(self, path: str) -> None:
        self._routes.pop(path, None)

    def redirect(self, path: str, location: str, *, status: int = 302) -> None:
        """Answer `path` with a redirect to `location` (relative or absolute)."""
        self._redirects[path] = (status, location)

    # faults -----------------------------------------------------------------------------

    def fail(
        self,
        path: str,
        status: int,
        *,
        times: int | None = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
    ) -> None:
        """Answer `path` with `status` for the next `times` requests (None: until `heal`); with
        `method`, only requests of that method (others are answered as usual)."""
        self._failures[path] = _Failure(
            status=status, remaining=times, headers=dict(headers or {}), method=method
        )

    def truncate(self, path: str) -> None:
        """Declare the full Content-Length, send only the first half of the body, then close."""
        self._truncated.add(path)

    def reset(self, path: str, *, times: int | None = None) -> None:
        """Reset the connection (a TCP RST, no answer) on the next `times` requests for
        `path` (None: until `heal`)."""
        self._resets[path] = times

    def slow(self, path: str, seconds: float) -> None:
        """Wait `seconds` before answering `path`."""
        self._delays[path] = seconds

    def hold(self, path: str) -> None:
        """Keep every request for `path` waiting until `release(path)`: no timing involved."""
        self._gates[path] = asyncio.Event()

    def hold_body(self, path: str) -> None:
        """Answer a whole-file GET of `path` with its headers and the first half of its body,
        then wait until `release(path)` to send the rest (HEAD and ranged GETs answer at
        once): a download that is under way and cannot finish."""
        self._held_bodies[path] = asyncio.Event()

    def ignore_ranges(self, path: str) -> None:
        """Answer a ranged GET of `path` with the whole file (200), as a server without range
        support does. Ranges are honoured otherwise (one range: 206, else 416)."""
        self._no_ranges.add(path)

    def release(self, path: str) -> None:
        gate = self._gates.pop(path, None)
        if gate is not None:
            gate.set()
        held = self._held_bodies.pop(path, None)
        if held is not None:
            held.set()

    def heal(self, path: str) -> None:
        """Remove every fault set for `path`."""
        self._failures.pop(path, None)
        self._truncated.discard(path)
        self._no_ranges.discard(path)
        self._resets.pop(path, None)
        self._delays.pop(path, None)
        self.release(path)

    def down(self) -> None:
        """Every request gets 503 until `up()`."""
        self._down = True

    def up(self) -> None:
        self._down = False

    # inspection -------------------------------------------------------------------------

    def count(self, path: str, *, method: str | None = None) -> int:
        """Requests recorded for `path` (raw or decoded form), optionally of one method."""
        return sum(
            1
            for request in self.requests
            if path in (request.path, _decoded(request.path))
            and (method is None or request.method == method)
        )

    async def wait_for(self, path: str, count: int = 1) -> None:
        """Wait (at most 10 s) until at least `count` requests for `path` have arrived."""
        async with asyncio.timeout(10):
            while self.count(path) < count:
                self._arrival.clear()
                await self._arrival.wait()

    def last(self, path: str) -> RecordedRequest:
        for request in reversed(self.requests):
            if path in (request.path, _decoded(request.path)):
                return request
        raise LookupError(f"no request recorded for {path}")

    # serving ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        body = await request.read()
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=path,
                query=request.rel_url.raw_query_string,
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
            )
        )
        self._arrival.set()
        key = path if path in self._known_paths() else _decoded(path)
        gate = self._gates.get(key)
        if gate is not None:
            await gate.wait()
        delay = self._delays.get(key)
        if delay:
            await asyncio.sleep(delay)
        if key in self._resets:
            remaining = self._resets[key]
            if remaining is not None:
                if remaining <= 1:
                    del self._resets[key]
                else:
                    self._resets[key] = remaining - 1
            _reset(request)
            return web.Response(status=204)  # never sent: the connection is gone
        if self._down:
            return web.Response(status=503, text="upstream is down")
        failure = self._failures.get(key)
        if failure is not None and failure.method not in (None, request.method):
            failure = None
        if failure is not None:
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    del self._failures[key]
            return web.Response(status=failure.status, headers=failure.headers, text="fault")
        if key in self._redirects:
            status, location = self._redirects[key]
            return web.Response(status=status, headers={"Location": location})
        route = self._routes.get(key)
        if route is None:
            return web.Response(status=404, text="not found")
        return await self._answer(request, key, route)

    async def _answer(self, request: web.Request, key: str, route: _Route) -> web.StreamResponse:
        headers = CIMultiDict(route.headers)
        headers["Content-Type"] = route.content_type
        if route.etag is not None:
            headers["ETag"] = route.etag
        if route.last_modified is not None:
            headers["Last-Modified"] = route.last_modified
        if route.status == 200 and _not_modified(request, route):
            return web.Response(status=304, headers=headers)
        body = route.body
        accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        if route.compress and accepts_gzip:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if key in self._truncated:
            sent = body[: len(body) // 2] if len(body) >= 2 else body
            response = web.StreamResponse(status=route.status, headers=headers)
            response.content_length = max(len(body), len(sent) + 1)
            await response.prepare(request)
            await response.write(sent)
            # Closing the socket mid-body is the fault: the client sees fewer bytes than promised.
            if request.transport is not None:
                request.transport.close()
            return response
        ranged = "Range" in request.headers and request.method == "GET" and route.status == 200
        if ranged and key not in self._no_ranges and "Content-Encoding" not in headers:
            return _ranged(request, body, headers)
        held = self._held_bodies.get(key)
        if held is not None and request.method == "GET":
            response = web.StreamResponse(status=route.status, headers=headers)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            await held.wait()
            await response.write(body[len(body) // 2 :])
            await response.write_eof()
            return response
        return web.Response(status=route.status, body=body, headers=headers)

    def _known_paths(self) -> set[str]:
        return {
            *self._routes,
            *self._redirects,
            *self._failures,
            *self._truncated,
            *self._resets,
            *self._delays,
            *self._gates,
            *self._held_bodies,
            *self._no_ranges,
        }


def _ranged(request: web.Request, body: bytes, headers: CIMultiDict[str]) -> web.Response:
    """The one byte range asked for, as a file server answers it: 206, or 416."""
    try:
        wanted = request.http_range
    except ValueError:
        wanted = None
    size = len(body)
    if wanted is not None and wanted.start is not None and wanted.start < 0:
        wanted = slice(max(size + wanted.start, 0), None)
    if wanted is None or wanted.start is None or wanted.start >= size:
        headers["Content-Range"] = f"bytes */{size}"
        return web.Response(status=416, headers=headers)
    part = body[wanted]
    headers["Content-Range"] = f"bytes {wanted.start}-{wanted.start + len(part) - 1}/{size}"
    return web.Response(status=206, body=part, headers=headers)


def _reset(request: web.Request) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0): the client sees a reset."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _decoded(path: str) -> str:
    return unquote(path)


def _not_modified(request: web.Request, route: _Route) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        if route.etag is None:
            return False
        wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in wanted or route.etag.removeprefix("W/") in wanted
    if_modified_since = request.headers.get("If-Modified-Since")
    if if_modified_since is not None and route.last_modified is not None:
        try:
            since = parsedate_to_datetime(if_modified_since)
            modified = parsedate_to_datetime(route.last_modified)
        except (TypeError, ValueError):
            return False
        return modified <= since
    return False
