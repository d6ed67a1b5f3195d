"""The one place that talks HTTP to upstream registries: one pooled `ClientSession`, a scope
per ecosystem, manual redirects, bounded retries, conditional GET, single-flight per document.
It caches nothing; no aiohttp exception escapes it (all become `mirror.errors` types).

Failures: a transient one (reset, refused connection, timeout, truncated body, 500, 502,
503, 504, 429), after the retries, is `UpstreamUnavailable` (503 with `Retry-After`, so clients
retry); a definite one keeps its meaning (404/410 `UpstreamNotFound`; other 4xx, other 5xx and
bad redirects `UpstreamUnavailable(transient=False)`, 502; broken bodies
`BadUpstreamDocument`). Each is counted (`mirror_upstream_errors_total`, by ecosystem and
kind) and logged through an `OutageLog`, by the host that failed (after redirects: the file
host): the first failure of a host at once, then one summary per host per interval, and a
line when it answers again, never a line per request. A redirect refused because it leaves
the scope is no outage but an attack signal: its own WARNING (kind `redirect-refused`). A
HEAD or ranged GET sent to answer a client early is the client's request passed on: a 416
or 405 it earns is no failure (see `_early_status_error`).

Scopes: every call names its ecosystem (never derived from the URL). A request, and every
redirect hop, goes only to that ecosystem's upstream host or one of its file hosts; its
credentials go only to the exact origin (scheme, host, port) they were configured for, on that
ecosystem's requests. Upstream URLs and hosts are settings and may be internal: error messages
(which reach clients) name what was fetched relative to the upstream, and the URL goes to the
log; metrics are labelled by ecosystem, never by host.

Encoding: the session never decompresses (`auto_decompress=False`) so `stream()` hands
artifacts over byte for byte (`Accept-Encoding: identity`). Documents (`fetch`, `forward`)
ask for gzip and are decoded here, bounded by `max_bytes`, so callers only see plain bytes and
the returned headers drop `Content-Encoding`/`Content-Length`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from mirror import errors
from mirror.clock import Clock, SystemClock
from mirror.config import UpstreamConfig
from mirror.flight import SingleFlight
from mirror.hosts import DEFAULT_PORTS, host_key
from mirror.inflate import inflate_steps
from mirror.metrics import Metrics
from mirror.outages import OutageLog, OutageReport

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
MAX_REDIRECTS = 5
# A Retry-After longer than this is not worth holding a client request for.
RETRY_AFTER_CAP = 5.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Statuses that may well differ on the next try (see `transient_status`).
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# `Retry-After` as delay-seconds: ASCII digits only (`str.isdigit` also takes superscripts
# and Arabic-Indic digits).
_DELAY_SECONDS = re.compile(r"[0-9]{1,9}")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Headers that describe one hop or the transfer, not the document: never copied either way.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
    }
)
# Never taken from a caller's headers: the only credentials sent are the scope's own.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
# A refused redirect is logged at most once per (host, target host) per this interval; the
# pairs remembered for that are bounded (the oldest forgotten first).
REFUSED_REDIRECT_INTERVAL = timedelta(seconds=30)
MAX_REFUSED_REDIRECTS = 256

# (scheme, lower-case host, port with the scheme's default filled in)
Origin = tuple[str, str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamDocument:
    """A whole upstream response. `body` is decoded (never gzip); a 304 has an empty body."""

    url: str
    status: int
    body: bytes
    headers: Mapping[str, str]
    etag: str | None
    last_modified: str | None


class UpstreamStream(Protocol):
    """An artifact response whose body is still on the wire (what `stream()` yields)."""

    status: int
    headers: Mapping[str, str]
    content_length: int | None

    def iter_chunks(self) -> AsyncIterator[bytes]: ...


def redact(url: str) -> str:
    """`url` without user info, query or fragment, for messages and logs."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return "<invalid URL>"
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


def origin_of(url: URL) -> Origin | None:
    """The exact origin credentials are bound to: http://h and https://h differ, and so do
    two ports of one host."""
    if url.scheme not in DEFAULT_PORTS or not url.raw_host:
        return None
    return (url.scheme, url.raw_host.lower(), url.port or DEFAULT_PORTS[url.scheme])


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamScope:
    """Where one ecosystem's upstream requests may go and what they may carry. Build with
    `UpstreamScope.of(...)`."""

    ecosystem: str
    base: URL
    # host keys (see `host_key`): the upstream's own host and the ecosystem's file hosts
    hosts: frozenset[str]
    # the Authorization value, sent to `auth_origin` only
    auth: str | None = field(default=None, repr=False)
    auth_origin: Origin | None = None

    @classmethod
    def of(
        cls,
        ecosystem: str,
        upstream: str,
        *,
        file_hosts: Iterable[str] = (),
        auth: str | None = None,
    ) -> UpstreamScope:
        base = URL(upstream)
        own = host_key(base)
        if own is None:
            raise ValueError(f"the {ecosystem} upstream is not an http(s) URL")
        hosts = {own, *(host.strip().lower() for host in file_hosts if host.strip())}
        return cls(
            ecosystem=ecosystem,
            base=base,
            hosts=frozenset(hosts),
            auth=auth,
            auth_origin=origin_of(base) if auth else None,
        )

    def allows(self, url: URL) -> bool:
        key = host_key(url)
        return key is not None and key in self.hosts

    def authorization(self, url: URL) -> str | None:
        """The credentials for `url`: only on the configured origin, never a file host."""
        if self.auth is None or origin_of(url) != self.auth_origin:
            return None
        return self.auth

    def subject(self, url: str) -> str:
        """What `url` fetches, in a client's terms: on the upstream's own host, its path
        below the part it shares with the upstream's path (`left-pad`,
        `pypi/requests/json`); elsewhere, its file name. Never the host or a path prefix
        (settings, possibly internal), never the query."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            return "a document"
        segments = [segment for segment in parsed.raw_path.split("/") if segment]
        if origin_of(parsed) == origin_of(self.base):
            base = [segment for segment in self.base.raw_path.split("/") if segment]
            shared = 0
            while shared < min(len(base), len(segments) - 1) and base[shared] == segments[shared]:
                shared += 1
            rest = "/".join(segments[shared:])
        else:
            rest = segments[-1] if segments else ""
        return rest[:200] or "the registry root"


class _Stream:
    def __init__(
        self, upstream: Upstream, response: aiohttp.ClientResponse, scope: UpstreamScope, url: str
    ) -> None:
        self._upstream = upstream
        self._response = response
        self._scope = scope
        self._url = url  # what the client asked for: messages name it
        # where the bytes come from after redirects (a file host): failures are its own
        self._source = str(response.url)
        self.status = response.status
        self.headers: Mapping[str, str] = CIMultiDictProxy(CIMultiDict(response.headers))
        self.content_length = response.content_length

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        received = 0
        try:
            async for chunk in self._response.content.iter_chunked(CHUNK_SIZE):
                received += len(chunk)
                self._upstream._count_bytes(self._scope, len(chunk))
                yield chunk
        except _NETWORK_ERRORS as exc:
            raise self._upstream._failed(
                self._scope,
                self._source,
                _network_failure(self._scope, self._url, exc, source=self._source),
            ) from None
        if self.content_length is not None and received < self.content_length:
            raise self._upstream._failed(
                self._scope,
                self._source,
                _truncated(
                    self._scope, self._url, received, self.content_length, source=self._source
                ),
            )
        self._upstream._answered(self._source)


class Upstream:
    """HTTP client for upstream registries. Construct without I/O; `start()` opens the pool.
    Every call names its `ecosystem`: a scope in `scopes` (none: refused, fail closed)."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        scopes: Iterable[UpstreamScope],
        metrics: Metrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        self._scopes = {scope.ecosystem: scope for scope in scopes}
        self._metrics = metrics
        self._clock = clock or SystemClock()
        # Failures are logged per host and interval, not per request (see `_failed`).
        self._outages = OutageLog()
        # When each (host, target host) redirect refusal was last logged (bounded).
        self._refused_redirects: dict[tuple[str, str], datetime] = {}
        self._session: aiohttp.ClientSession | None = None
        # GETs and HEADs of documents: concurrent requests for one URL share one request.
        self._documents: SingleFlight[tuple[object, ...], UpstreamDocument] = SingleFlight(
            "upstream document", on_join=functools.partial(self._count_join, "document")
        )
        # HEADs of artifacts (their sizes), shared the same way.
        self._sizes: SingleFlight[tuple[str, str], int | None] = SingleFlight(
            "upstream artifact size", on_join=functools.partial(self._count_join, "artifact-size")
        )

    # lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._session is not None:
            return
        # sock_connect, not connect: aiohttp's `connect` also counts the wait for a free pooled
        # connection, and a burst of long artifact downloads must queue, not time out.
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._config.connect_timeout.total_seconds(),
            sock_read=self._config.read_timeout.total_seconds(),
        )
        connector = aiohttp.TCPConnector(limit=100, limit_per_host=32, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            # Mirrors often sit behind an egress proxy: honour HTTP(S)_PROXY / NO_PROXY.
            trust_env=True,
            headers={"User-Agent": self._config.user_agent},
        )

    async def close(self) -> None:
        await self._documents.close()
        await self._sizes.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # public API -------------------------------------------------------------------------

    def allows(self, url: str, *, ecosystem: str) -> bool:
        """True if `url` is http(s) to `ecosystem`'s upstream host or one of its file hosts
        (with the port unless the scheme's default)."""
        scope = self._scopes.get(ecosystem)
        key = _host_key_of(url)
        return scope is not None and key is not None and key in scope.hosts

    def check(self, url: str, *, ecosystem: str) -> None:
        """Raise HostNotAllowed unless `ecosystem` may fetch `url` (see `allows`)."""
        self._scope(url, ecosystem)

    async def fetch(
        self,
        url: str,
        *,
        ecosystem: str,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str | None = None,
        max_bytes: int | None = None,
    ) -> UpstreamDocument:
        """GET a document. Status is 200 or (when validators were given) 304.

        Raises UpstreamNotFound (404/410), UpstreamUnavailable (other statuses, network,
        timeouts, after retries), BadUpstreamDocument (body over `max_bytes`, bad gzip),
        HostNotAllowed (before any I/O, or before following a redirect off the scope)."""
        scope = self._scope(url, ecosystem)
        headers: dict[str, str] = {"Accept-Encoding": "gzip"}
        if accept:
            headers["Accept"] = accept
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        # The ecosystem is part of the key: a flight carries its own scope's credentials.
        key = ("GET", ecosystem, url, etag, last_modified, accept, max_bytes)
        return await self._documents.run(
            key, lambda: self._document(scope, "GET", url, headers, max_bytes)
        )

    async def head(self, url: str, *, ecosystem: str) -> UpstreamDocument:
        """HEAD `url` (body b""), with the same errors, retries and single-flight as `fetch`."""
        scope = self._scope(url, ecosystem)
        key = ("HEAD", ecosystem, url)
        return await self._documents.run(key, lambda: self._document(scope, "HEAD", url, {}, None))

    def stream(
        self, url: str, *, ecosystem: str, byte_range: str | None = None
    ) -> AbstractAsyncContextManager[UpstreamStream]:
        """GET an artifact byte for byte. Errors (mapped) are raised on entering, before any
        byte; a connection lost mid-body raises UpstreamUnavailable from `iter_chunks`.
        With `byte_range` (the value of a `Range` header, `bytes=…`), the answer is a 206 or,
        from an upstream that ignores ranges, a 200 with the whole file: the caller looks at
        `status` (and `Content-Range`) before reading."""
        return self._stream(url, ecosystem, byte_range)

    async def artifact_size(self, url: str, *, ecosystem: str) -> int | None:
        """HEAD an artifact (through the same scope and redirect checks as `stream`): the
        length of its bytes as `stream` gets them, None when upstream does not say (or
        would send them encoded). Concurrent asks for one URL share one request. Raises as
        `head` does."""
        scope = self._scope(url, ecosystem)
        return await self._sizes.run((ecosystem, url), lambda: self._artifact_size(scope, url))

    async def forward(
        self,
        method: str,
        url: str,
        *,
        ecosystem: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> UpstreamDocument:
        """Pass a request through and return the upstream answer whatever its status (so the
        caller can relay it). Retried only when `method` is idempotent; no single-flight.
        The caller's credential headers are dropped: only the scope's own are sent."""
        scope = self._scope(url, ecosystem)
        method = method.upper()
        sent: dict[str, str] = {
            name: value
            for name, value in (headers or {}).items()
            if name.lower() not in _HOP_HEADERS and name.lower() not in _CREDENTIAL_HEADERS
        }
        sent["Accept-Encoding"] = "gzip"
        retry = method in IDEMPOTENT_METHODS
        response = await self._open(scope, method, url, sent, body=body, retry=retry, relay=True)
        return await self._read_document(scope, url, response, max_bytes)

    def relayed_failure(
        self, url: str, answer: UpstreamDocument, *, ecosystem: str
    ) -> errors.UpstreamError | None:
        """For an answer `forward` returned (whatever its status) to `url`: when its status
        tells of an outage (`transient_status`), the error to raise (503 with the upstream's
        `Retry-After`), counted and logged as any failure; else None (the caller judges it)."""
        if not transient_status(answer.status):
            return None
        scope = self._scope(url, ecosystem)
        failure = _status_failure(scope, url, answer, answer.url, self._clock.now())
        return self._failed(scope, answer.url, failure)

    # internals --------------------------------------------------------------------------

    def _count_join(self, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.singleflight_joins.labels(kind).inc()

    def _scope(self, url: str, ecosystem: str) -> UpstreamScope:
        scope = self._scopes.get(ecosystem)
        if scope is None:
            log.warning("refused %s: no %s upstream is configured", redact(url), ecosystem)
            raise errors.HostNotAllowed(f"no {ecosystem} upstream is configured on this mirror")
        if not self.allows(url, ecosystem=ecosystem):
            log.warning(
                "refused %s: its host is not the %s upstream's or one of its file hosts",
                redact(url),
                ecosystem,
            )
            raise errors.HostNotAllowed(
                f"refusing to fetch {scope.subject(url)}: it is not on the {ecosystem} "
                "upstream or one of its file hosts"
            )
        return scope

    async def _document(
        self,
        scope: UpstreamScope,
        method: str,
        url: str,
        headers: dict[str, str],
        max_bytes: int | None,
    ) -> UpstreamDocument:
        response = await self._open(scope, method, url, headers, retry=True)
        return await self._read_document(scope, url, response, max_bytes)

    async def _read_document(
        self,
        scope: UpstreamScope,
        url: str,
        response: aiohttp.ClientResponse,
        max_bytes: int | None,
    ) -> UpstreamDocument:
        """`url` is the one asked for (messages name it); the document's `url` is the
        final one after redirects."""
        try:
            if response.status == 304 or response.method == "HEAD":
                body = b""
            else:
                declared = response.content_length
                if max_bytes is not None and declared is not None and declared > max_bytes:
                    raise self._failed(scope, url, _too_big(scope, url, max_bytes))
                body = await self._read_body(scope, url, response, max_bytes)
        except _NETWORK_ERRORS as exc:
            raise self._failed(scope, url, _network_failure(scope, url, exc)) from None
        finally:
            response.release()
        if not transient_status(response.status):  # a relayed 5xx is no sign of recovery
            self._answered(url)
        headers = CIMultiDict(
            (name, value)
            for name, value in response.headers.items()
            if name.lower() not in _HOP_HEADERS and name.lower() != "content-encoding"
        )
        return UpstreamDocument(
            url=str(response.url),
            status=response.status,
            body=body,
            headers=CIMultiDictProxy(headers),
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
        )

    async def _read_body(
        self,
        scope: UpstreamScope,
        url: str,
        response: aiohttp.ClientResponse,
        max_bytes: int | None,
    ) -> bytes:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        decoder: zlib._Decompress | None
        if encoding in ("", "identity"):
            decoder = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            # wbits 47: accept a gzip or zlib header (servers mislabel deflate as either).
            decoder = zlib.decompressobj(47)
        else:
            raise self._failed(
                scope,
                url,
                _bad_document(
                    url,
                    f"the {scope.ecosystem} upstream sent {scope.subject(url)} with an "
                    f"unsupported Content-Encoding {encoding[:40]!r}",
                ),
            )
        parts: list[bytes] = []
        size = raw_size = 0
        try:
            async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                self._count_bytes(scope, len(chunk))
                raw_size += len(chunk)
                if decoder is not None:
                    room = max_bytes - size if max_bytes is not None else None
                    chunk = inflate_steps(decoder, chunk, room=room, steps=1)
                    if decoder.unconsumed_tail and not (room is not None and len(chunk) > room):
                        # A chunk that expands past one step (a bomb, or a very compressible
                        # document) goes on in a thread, a step at a time: the loop keeps
                        # serving.
                        rest = room - len(chunk) if room is not None else None
                        chunk += await asyncio.to_thread(_inflate_rest, decoder, rest)
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise self._failed(scope, url, _too_big(scope, url, max_bytes))
                parts.append(chunk)
            if decoder is not None:
                tail = decoder.flush()
                if not decoder.eof:
                    raise self._failed(
                        scope, url, _bad_encoding(scope, url, "the compressed body ended early")
                    )
                parts.append(tail)
                size += len(tail)
                if max_bytes is not None and size > max_bytes:
                    raise self._failed(scope, url, _too_big(scope, url, max_bytes))
        except zlib.error as exc:
            raise self._failed(scope, url, _bad_encoding(scope, url, exc)) from None
        if response.content_length is not None and raw_size < response.content_length:
            raise self._failed(
                scope, url, _truncated(scope, url, raw_size, response.content_length)
            )
        return b"".join(parts)

    @contextlib.asynccontextmanager
    async def _stream(
        self, url: str, ecosystem: str, byte_range: str | None
    ) -> AsyncIterator[UpstreamStream]:
        scope = self._scope(url, ecosystem)
        headers = {"Accept-Encoding": "identity"}
        if byte_range is not None:
            headers["Range"] = byte_range
        # A ranged GET is the client's own request passed on: a status it earned (416 for a
        # range past the end) is no failure of the upstream (see `_early_status_error`).
        ranged = byte_range is not None
        response = await self._open(scope, "GET", url, headers, retry=True, relay=ranged)
        try:
            if response.status != 200 and not (ranged and response.status == 206):
                if ranged:
                    raise self._early_status_error(scope, url, response)
                raise self._status_error(scope, url, response)
            yield _Stream(self, response, scope, url)
        finally:
            response.release()

    async def _artifact_size(self, scope: UpstreamScope, url: str) -> int | None:
        response = await self._open(
            scope, "HEAD", url, {"Accept-Encoding": "identity"}, retry=True, relay=True
        )
        try:
            if response.status != 200:
                raise self._early_status_error(scope, url, response)
            self._answered(str(response.url))
            return response.content_length if identity_encoded(response.headers) else None
        finally:
            response.release()

    async def _open(
        self,
        scope: UpstreamScope,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        body: bytes = b"",
        retry: bool,
        relay: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send with retries and manual redirects, each hop checked against `scope` before
        any request to it; return the final response (headers read). Unless `relay`,
        statuses other than 2xx/304 raise mapped errors."""
        target = URL(url)
        for _hop in range(MAX_REDIRECTS + 1):
            response = await self._send(scope, method, target, headers, body, retry=retry)
            location = response.headers.get("Location")
            if response.status not in REDIRECT_STATUSES or not location:
                if not relay and not (200 <= response.status < 300 or response.status == 304):
                    response.release()
                    raise self._status_error(scope, url, response)
                return response
            response.release()
            try:
                next_target = target.join(URL(location))
            except (ValueError, TypeError):
                message = (
                    f"the {scope.ecosystem} upstream redirected {scope.subject(url)} to an "
                    "invalid URL"
                )
                raise self._failed(
                    scope, str(target), _bad_redirect(str(target), message)
                ) from None
            if not scope.allows(next_target):
                raise self._refused_redirect(scope, url, target, next_target)
            if response.status == 303 or (
                response.status in (301, 302) and method not in ("GET", "HEAD")
            ):
                method, body = "GET", b""
            target = next_target
        message = (
            f"the {scope.ecosystem} upstream redirected {scope.subject(url)} more than "
            f"{MAX_REDIRECTS} times"
        )
        raise self._failed(scope, url, _bad_redirect(url, message))

    async def _send(
        self,
        scope: UpstreamScope,
        method: str,
        target: URL,
        headers: Mapping[str, str],
        body: bytes,
        *,
        retry: bool,
    ) -> aiohttp.ClientResponse:
        session = self._session
        if session is None:
            raise errors.UpstreamUnavailable("the upstream client is not started")
        auth = scope.authorization(target)
        if auth is not None:
            headers = {**headers, "Authorization": auth}
        attempts = self._config.retries + 1 if retry else 1
        loop = asyncio.get_running_loop()
        for attempt in range(attempts):
            last = attempt == attempts - 1
            started = loop.time()
            try:
                response = await session.request(
                    method,
                    target,
                    headers=headers,
                    data=body or None,
                    allow_redirects=False,
                )
            except _NETWORK_ERRORS as exc:
                self._count(scope, _network_outcome(exc), loop.time() - started)
                if last:
                    failure = _network_failure(scope, str(target), exc)
                    raise self._failed(scope, str(target), failure) from None
                # Debug only: a failure that outlasts the retries is reported (`_failed`).
                log.debug("retrying %s %s after %s", method, redact(str(target)), _describe(exc))
                await self._backoff(attempt, None)
                continue
            self._count(scope, _status_outcome(response.status), loop.time() - started)
            if response.status in RETRY_STATUSES and not last:
                retry_after = response.headers.get("Retry-After")
                response.release()
                log.debug("retrying %s %s after %d", method, redact(str(target)), response.status)
                await self._backoff(attempt, retry_after if response.status == 429 else None)
                continue
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _backoff(self, attempt: int, asked: str | None) -> None:
        delay = self._config.backoff.total_seconds() * (2**attempt)
        wait = parse_retry_after(asked, self._clock.now())
        if wait is not None:
            delay = max(delay, min(float(wait), RETRY_AFTER_CAP))
        if delay > 0:
            await asyncio.sleep(delay)

    def _count(self, scope: UpstreamScope, outcome: str, seconds: float) -> None:
        if self._metrics is None:
            return
        metrics = self._metrics
        metrics.child(metrics.upstream_requests, scope.ecosystem, outcome).inc()
        metrics.child(metrics.upstream_seconds, scope.ecosystem).observe(seconds)

    def _count_bytes(self, scope: UpstreamScope, size: int) -> None:
        if self._metrics is not None:
            self._metrics.child(self._metrics.bytes_fetched, scope.ecosystem).inc(size)
            self._metrics.traffic.fetched(scope.ecosystem, size)

    # failures: counted, and logged per host and interval ------------------------------------

    def _status_error(
        self, scope: UpstreamScope, url: str, response: aiohttp.ClientResponse
    ) -> errors.UpstreamError:
        return self._failed(
            scope,
            str(response.url),
            _status_failure(scope, url, response, str(response.url), self._clock.now()),
        )

    def _early_status_error(
        self, scope: UpstreamScope, url: str, response: aiohttp.ClientResponse
    ) -> errors.UpstreamError:
        """The error for a status answering a HEAD or a ranged GET sent to answer a client
        early (the download answers it otherwise). Only what tells of an outage (429, 5xx)
        is a failure, and 404/410 an answer, as for any request; anything else (416 for a
        range past the end, 403/405 from an upstream that refuses HEAD) may be the client's
        own doing, so it is neither counted nor logged: the caller waits for the download."""
        if response.status in (404, 410, 429) or response.status >= 500:
            return self._status_error(scope, url, response)
        self._answered(str(response.url))
        return errors.UpstreamUnavailable(
            f"the {scope.ecosystem} upstream answered HTTP {response.status} for "
            f"{scope.subject(url)}",
            transient=False,
            upstream_status=response.status,
        )

    def _refused_redirect(
        self, scope: UpstreamScope, url: str, source: URL, target: URL
    ) -> errors.UpstreamError:
        """A redirect off the scope: an attack signal (or a misconfigured file host), not an
        outage of the host that sent it. Counted as `redirect-refused` and logged at WARNING
        on its own, at most once per (host, target host) per `REFUSED_REDIRECT_INTERVAL`."""
        if self._metrics is not None:
            metrics = self._metrics
            metrics.child(metrics.upstream_errors, scope.ecosystem, "redirect-refused").inc()
            metrics.traffic.upstream_error(scope.ecosystem, "redirect-refused")
        pair = (_host_key_of(str(source)) or "?", _host_key_of(str(target)) or str(target.host))
        now = self._clock.now()
        last = self._refused_redirects.get(pair)
        if last is None or now - last >= REFUSED_REDIRECT_INTERVAL:
            if last is None and len(self._refused_redirects) >= MAX_REFUSED_REDIRECTS:
                self._refused_redirects.pop(next(iter(self._refused_redirects)))
            self._refused_redirects[pair] = now
            log.warning(
                "refused a redirect from %s to %s: not the %s upstream's host or one of its "
                "file hosts (an attack signal, or a file host missing from the settings)",
                redact(str(source)),
                redact(str(target)),
                scope.ecosystem,
            )
        return errors.HostNotAllowed(
            f"the {scope.ecosystem} upstream redirected {scope.subject(url)} to a host that is "
            f"not one of the {scope.ecosystem} upstream's hosts; the mirror does not follow it"
        )

    def _failed(self, scope: UpstreamScope, url: str, failure: _Failure) -> errors.UpstreamError:
        """`failure`'s error, after counting it and telling the outage log (which says when
        a line is due). A 404/410 is an answer, not a failure: logged at INFO as before."""
        if isinstance(failure.error, errors.UpstreamNotFound):
            log.info("%s", failure.detail)
            self._answered(url)
            return failure.error
        if self._metrics is not None:
            metrics = self._metrics
            metrics.child(metrics.upstream_errors, scope.ecosystem, failure.kind).inc()
            metrics.traffic.upstream_error(scope.ecosystem, failure.kind)
        host = _host_key_of(url) or scope.ecosystem
        _log_report(self._outages.failed(host, failure.kind, failure.detail, self._clock.now()))
        return failure.error

    def _answered(self, url: str) -> None:
        """The host of `url` answered: the end of its outage, if it had one."""
        host = _host_key_of(url)
        if host is None or not self._outages.watching(host):
            return
        _log_report(self._outages.answered(host, self._clock.now()))


def _log_report(report: OutageReport | None) -> None:
    if report is not None:
        level = logging.INFO if report.kind == "recovered" else logging.WARNING
        log.log(level, "%s", report.text)


# errors: what reaches a client names the ecosystem and what was fetched, never the URL ----


@dataclass(frozen=True, slots=True)
class _Failure:
    """An error for the client, with what the operator and the metrics get of it."""

    error: errors.UpstreamError
    kind: str  # bounded: the `kind` label of mirror_upstream_errors_total, the outage log's
    detail: str  # for the log: the message with the (redacted) URL, or the exception's text


class _Answer(Protocol):
    """What `_status_failure` reads of an answer: an aiohttp response or an UpstreamDocument."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


def _status_failure(
    scope: UpstreamScope, url: str, response: _Answer, final_url: str, now: datetime
) -> _Failure:
    what = scope.subject(url)
    where = f"the {scope.ecosystem} upstream"
    final = redact(final_url)
    if response.status in (404, 410):
        message = f"{where} has no {what} (HTTP {response.status})"
        error: errors.UpstreamError = errors.UpstreamNotFound(
            message, upstream_status=response.status
        )
        return _Failure(error, "not-found", f"{message} ({final})")
    message = f"{where} answered HTTP {response.status} for {what}"
    if transient_status(response.status):
        error = errors.UpstreamUnavailable(
            message,
            retry_after=retry_after(response.headers.get("Retry-After"), now),
            upstream_status=response.status,
        )
    else:
        error = errors.UpstreamUnavailable(
            message, transient=False, upstream_status=response.status
        )
    kind = "http-429" if response.status == 429 else f"http-{response.status // 100}xx"
    return _Failure(error, kind, f"{message} ({final})")


def _network_failure(
    scope: UpstreamScope, url: str, exc: BaseException, *, source: str | None = None
) -> _Failure:
    """A network failure: the client learns its kind (of `url`, what it asked for); the log
    gets the exception's text (which names the host and address) and `source`, the URL that
    failed after redirects when it differs."""
    kind = _network_kind(exc)
    return _Failure(
        errors.UpstreamUnavailable(
            f"could not fetch {scope.subject(url)} from the {scope.ecosystem} upstream: {kind}"
        ),
        _NETWORK_LABELS.get(kind, "network"),
        f"could not fetch {redact(source or url)} from the {scope.ecosystem} upstream: "
        f"{_describe(exc)}",
    )


def _truncated(
    scope: UpstreamScope, url: str, received: int, declared: int, *, source: str | None = None
) -> _Failure:
    message = (
        f"the {scope.ecosystem} upstream closed the connection after {received} of "
        f"{declared} bytes of {scope.subject(url)}"
    )
    return _Failure(
        errors.UpstreamUnavailable(message), "truncated", f"{message} ({redact(source or url)})"
    )


def _bad_redirect(url: str, message: str) -> _Failure:
    """A redirect the mirror cannot follow (an invalid URL, a loop): definite, a 502."""
    return _Failure(
        errors.UpstreamUnavailable(message, transient=False),
        "redirect",
        f"{message} ({redact(url)})",
    )


def _bad_document(url: str, message: str) -> _Failure:
    return _Failure(
        errors.BadUpstreamDocument(message), "bad-document", f"{message} ({redact(url)})"
    )


def _bad_encoding(scope: UpstreamScope, url: str, cause: object) -> _Failure:
    return _bad_document(
        url,
        f"the {scope.ecosystem} upstream sent {scope.subject(url)} with a broken compressed "
        f"body: {cause}",
    )


def _too_big(scope: UpstreamScope, url: str, max_bytes: int) -> _Failure:
    return _bad_document(
        url,
        f"{scope.subject(url)} from the {scope.ecosystem} upstream is larger than the "
        f"{max_bytes}-byte limit for upstream documents",
    )


def transient_status(status: int) -> bool:
    """An upstream status that may well be different on the next try: 429 and the 5xx that
    say so (500, 502, 503, 504); 501 and 505 will not change and are definite."""
    return status in TRANSIENT_STATUSES


def parse_retry_after(value: str | None, now: datetime) -> int | None:
    """A `Retry-After` value (RFC 9110 §10.2.3: ASCII digits, or an HTTP date) as seconds from
    `now` (a date in the past: 0 or less); None when absent or not one of those forms."""
    text = (value or "").strip()
    if _DELAY_SECONDS.fullmatch(text):
        return int(text)
    if not text:
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        return None
    return math.ceil((moment - now).total_seconds())


def retry_after(value: str | None, now: datetime) -> int:
    """The upstream's `Retry-After` in whole seconds, or the mirror's own default when it sent
    none that parses (bounded by `UpstreamUnavailable`)."""
    seconds = parse_retry_after(value, now)
    return errors.RETRY_AFTER if seconds is None else seconds


def identity_encoded(headers: Mapping[str, str]) -> bool:
    """Whether a response's body is sent as is (no `Content-Encoding` but identity)."""
    return headers.get("Content-Encoding", "identity").strip().lower() in ("", "identity")


def _inflate_rest(decoder: zlib._Decompress, room: int | None) -> bytes:
    """The rest of a chunk that expands past one step (run in a thread)."""
    return inflate_steps(decoder, b"", room=room)


@functools.lru_cache(maxsize=4096)  # pure; the same few thousand URLs are checked per request
def _host_key_of(url: str) -> str | None:
    """`host_key` of `url`, None when it is not an http(s) URL."""
    try:
        return host_key(URL(url))
    except (ValueError, TypeError):
        return None


# `_network_kind`'s words as metric labels.
_NETWORK_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "timed out": "timeout",
        "could not connect": "connect",
        "the connection was lost": "connection-lost",
    }
)


def _network_kind(exc: BaseException) -> str:
    """The kind of a network failure, without its text (aiohttp's names host and address)."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return "could not connect"
    if isinstance(
        exc,
        aiohttp.ServerDisconnectedError
        | aiohttp.ClientPayloadError
        | aiohttp.ClientOSError
        | ConnectionError,
    ):
        return "the connection was lost"
    return type(exc).__name__


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _network_outcome(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, asyncio.TimeoutError) else "network-error"


def _status_outcome(status: int) -> str:
    if status == 304:
        return "not-modified"
    if status in REDIRECT_STATUSES:
        return "redirect"
    if status in (404, 410):
        return "not-found"
    if 200 <= status < 300:
        return "ok"
    return "http-error"
