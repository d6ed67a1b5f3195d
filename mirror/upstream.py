"""The one place that talks HTTP to upstream registries: one pooled `ClientSession`, host
allowlist, manual redirects, bounded retries, conditional GET, single-flight per document.
It knows no ecosystem and caches nothing; no aiohttp exception escapes it (all become
`mirror.errors` types).

Encoding: the session never decompresses (`auto_decompress=False`) so `stream()` hands
artifacts over byte for byte (`Accept-Encoding: identity`). Documents (`fetch`, `forward`)
ask for gzip and are decoded here, bounded by `max_bytes`, so callers only see plain bytes and
the returned headers drop `Content-Encoding`/`Content-Length`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from mirror import errors
from mirror.config import UpstreamConfig
from mirror.metrics import Metrics

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
MAX_REDIRECTS = 5
# A Retry-After longer than this is not worth holding a client request for.
RETRY_AFTER_CAP = 5.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
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
_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


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


def host_key(url: URL) -> str | None:
    """The allowlist key of `url`: lower-case host, plus `:port` when not the scheme's default."""
    if url.scheme not in _DEFAULT_PORTS or not url.raw_host:
        return None
    host = url.raw_host.lower()
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is None or port == _DEFAULT_PORTS[url.scheme]:
        return host
    return f"{host}:{port}"


class _Stream:
    def __init__(self, upstream: Upstream, response: aiohttp.ClientResponse, host: str) -> None:
        self._upstream = upstream
        self._response = response
        self._host = host
        self.status = response.status
        self.headers: Mapping[str, str] = CIMultiDictProxy(CIMultiDict(response.headers))
        self.content_length = response.content_length

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        received = 0
        try:
            async for chunk in self._response.content.iter_chunked(CHUNK_SIZE):
                received += len(chunk)
                self._upstream._count_bytes(self._host, len(chunk))
                yield chunk
        except _NETWORK_ERRORS as exc:
            raise self._upstream._unavailable(str(self._response.url), exc) from None
        if self.content_length is not None and received < self.content_length:
            raise errors.UpstreamUnavailable(
                f"upstream closed {redact(str(self._response.url))} after {received} of "
                f"{self.content_length} bytes",
                status=502,
            )


class Upstream:
    """HTTP client for upstream registries. Construct without I/O; `start()` opens the pool."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        allowed_hosts: Iterable[str],
        metrics: Metrics | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._allowed = frozenset(host.strip().lower() for host in allowed_hosts if host.strip())
        # host key → Authorization value, sent to that host only (not across redirects).
        self._credentials = dict(credentials or {})
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[tuple[object, ...], asyncio.Task[UpstreamDocument]] = {}

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
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, errors.MirrorError):
                await task
        self._inflight.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # public API -------------------------------------------------------------------------

    def allows(self, url: str) -> bool:
        """True if `url` is http(s) to an allowlisted host (with port unless the default)."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            return False
        key = host_key(parsed)
        return key is not None and key in self._allowed

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str | None = None,
        max_bytes: int | None = None,
    ) -> UpstreamDocument:
        """GET a document. Status is 200 or (when validators were given) 304.

        Raises UpstreamNotFound (404/410), UpstreamUnavailable (other statuses, network,
        timeouts, after retries), BadUpstreamDocument (body over `max_bytes`, bad gzip),
        HostNotAllowed (before any I/O)."""
        self._check(url)
        headers: dict[str, str] = {"Accept-Encoding": "gzip"}
        if accept:
            headers["Accept"] = accept
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        key = ("GET", url, etag, last_modified, accept, max_bytes)
        return await self._single_flight(
            key, lambda: self._document("GET", url, headers, max_bytes)
        )

    async def head(self, url: str) -> UpstreamDocument:
        """HEAD `url` (body b""), with the same errors, retries and single-flight as `fetch`."""
        self._check(url)
        key = ("HEAD", url)
        return await self._single_flight(key, lambda: self._document("HEAD", url, {}, None))

    def stream(self, url: str) -> AbstractAsyncContextManager[UpstreamStream]:
        """GET an artifact byte for byte. Errors (mapped) are raised on entering, before any
        byte; a connection lost mid-body raises UpstreamUnavailable from `iter_chunks`."""
        return self._stream(url)

    async def forward(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> UpstreamDocument:
        """Pass a request through and return the upstream answer whatever its status (so the
        caller can relay it). Retried only when `method` is idempotent; no single-flight."""
        self._check(url)
        method = method.upper()
        sent: dict[str, str] = {
            name: value
            for name, value in (headers or {}).items()
            if name.lower() not in _HOP_HEADERS
        }
        sent["Accept-Encoding"] = "gzip"
        retry = method in IDEMPOTENT_METHODS
        response, host = await self._open(method, url, sent, body=body, retry=retry, relay=True)
        return await self._read_document(response, host, max_bytes)

    # internals --------------------------------------------------------------------------

    def _check(self, url: str) -> None:
        if not self.allows(url):
            raise errors.HostNotAllowed(
                f"refusing to contact {redact(url)}: its host is not a configured upstream",
                host=_host_of(url),
            )

    async def _single_flight(
        self, key: tuple[object, ...], work: Callable[[], Coroutine[Any, Any, UpstreamDocument]]
    ) -> UpstreamDocument:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(work(), name=f"upstream {key[0]}")
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        elif self._metrics is not None:
            self._metrics.singleflight_joins.labels("document").inc()
        # shield: one waiter giving up (client went away) must not cancel everyone's request.
        return await asyncio.shield(task)

    def _forget(self, key: tuple[object, ...], task: asyncio.Task[UpstreamDocument]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: waiters that left would otherwise leave it unseen

    async def _document(
        self, method: str, url: str, headers: dict[str, str], max_bytes: int | None
    ) -> UpstreamDocument:
        response, host = await self._open(method, url, headers, retry=True)
        return await self._read_document(response, host, max_bytes)

    async def _read_document(
        self, response: aiohttp.ClientResponse, host: str, max_bytes: int | None
    ) -> UpstreamDocument:
        url = str(response.url)
        try:
            if response.status == 304 or response.method == "HEAD":
                body = b""
            else:
                declared = response.content_length
                if max_bytes is not None and declared is not None and declared > max_bytes:
                    raise _too_big(url, max_bytes)
                body = await self._read_body(response, host, max_bytes)
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(url, exc) from None
        finally:
            response.release()
        headers = CIMultiDict(
            (name, value)
            for name, value in response.headers.items()
            if name.lower() not in _HOP_HEADERS and name.lower() != "content-encoding"
        )
        return UpstreamDocument(
            url=url,
            status=response.status,
            body=body,
            headers=CIMultiDictProxy(headers),
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
        )

    async def _read_body(
        self, response: aiohttp.ClientResponse, host: str, max_bytes: int | None
    ) -> bytes:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        decoder: zlib._Decompress | None
        if encoding in ("", "identity"):
            decoder = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            # wbits 47: accept a gzip or zlib header (servers mislabel deflate as either).
            decoder = zlib.decompressobj(47)
        else:
            raise errors.BadUpstreamDocument(
                f"{redact(str(response.url))} came with unsupported Content-Encoding {encoding!r}"
            )
        parts: list[bytes] = []
        size = raw_size = 0
        limit = max_bytes if max_bytes is not None else 0
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            self._count_bytes(host, len(chunk))
            raw_size += len(chunk)
            if decoder is not None:
                chunk = _inflate(decoder, chunk, limit - size if limit else 0, response)
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise _too_big(str(response.url), max_bytes)
            parts.append(chunk)
        if decoder is not None:
            try:
                tail = decoder.flush()
            except zlib.error as exc:
                raise _bad_encoding(response, exc) from None
            if not decoder.eof:
                raise _bad_encoding(response, "the compressed body ended early")
            parts.append(tail)
            size += len(tail)
            if max_bytes is not None and size > max_bytes:
                raise _too_big(str(response.url), max_bytes)
        if response.content_length is not None and raw_size < response.content_length:
            raise errors.UpstreamUnavailable(
                f"upstream closed {redact(str(response.url))} after {raw_size} of "
                f"{response.content_length} bytes",
                status=502,
            )
        return b"".join(parts)

    @contextlib.asynccontextmanager
    async def _stream(self, url: str) -> AsyncIterator[UpstreamStream]:
        self._check(url)
        response, host = await self._open("GET", url, {"Accept-Encoding": "identity"}, retry=True)
        try:
            if response.status != 200:
                raise self._status_error(response)
            yield _Stream(self, response, host)
        finally:
            response.release()

    async def _open(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        body: bytes = b"",
        retry: bool,
        relay: bool = False,
    ) -> tuple[aiohttp.ClientResponse, str]:
        """Send with retries and manual redirects; return the final response (headers read)
        and its host label. Unless `relay`, statuses other than 2xx/304 raise mapped errors."""
        target = URL(url)
        for _hop in range(MAX_REDIRECTS + 1):
            response, host = await self._send(method, target, headers, body, retry=retry)
            location = response.headers.get("Location")
            if response.status not in REDIRECT_STATUSES or not location:
                if not relay and not (200 <= response.status < 300 or response.status == 304):
                    response.release()
                    raise self._status_error(response)
                return response, host
            response.release()
            try:
                next_target = target.join(URL(location))
            except (ValueError, TypeError):
                raise errors.UpstreamUnavailable(
                    f"{redact(str(target))} redirected to an invalid URL", status=502
                ) from None
            if not self.allows(str(next_target)):
                raise errors.HostNotAllowed(
                    f"{redact(str(target))} redirected to {redact(str(next_target))}, whose "
                    "host is not a configured upstream",
                    host=_host_of(str(next_target)),
                )
            if response.status == 303 or (
                response.status in (301, 302) and method not in ("GET", "HEAD")
            ):
                method, body = "GET", b""
            target = next_target
        raise errors.UpstreamUnavailable(
            f"{redact(url)} redirected more than {MAX_REDIRECTS} times", status=502
        )

    async def _send(
        self,
        method: str,
        target: URL,
        headers: Mapping[str, str],
        body: bytes,
        *,
        retry: bool,
    ) -> tuple[aiohttp.ClientResponse, str]:
        session = self._session
        if session is None:
            raise errors.UpstreamUnavailable("the upstream client is not started", status=503)
        host = host_key(target) or "invalid"
        auth = self._credentials.get(host)
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
                self._count(host, _network_outcome(exc), loop.time() - started)
                if last:
                    raise self._unavailable(str(target), exc) from None
                log.info("retrying %s %s after %s", method, redact(str(target)), _describe(exc))
                await self._backoff(attempt, None)
                continue
            self._count(host, _status_outcome(response.status), loop.time() - started)
            if response.status in RETRY_STATUSES and not last:
                retry_after = response.headers.get("Retry-After")
                response.release()
                log.info("retrying %s %s after %d", method, redact(str(target)), response.status)
                await self._backoff(attempt, retry_after if response.status == 429 else None)
                continue
            return response, host
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _backoff(self, attempt: int, retry_after: str | None) -> None:
        delay = self._config.backoff.total_seconds() * (2**attempt)
        if retry_after is not None and retry_after.strip().isdigit():
            delay = max(delay, min(float(retry_after.strip()), RETRY_AFTER_CAP))
        if delay > 0:
            await asyncio.sleep(delay)

    def _status_error(self, response: aiohttp.ClientResponse) -> errors.UpstreamError:
        url = redact(str(response.url))
        if response.status in (404, 410):
            return errors.UpstreamNotFound(
                f"upstream has no {url} (HTTP {response.status})", upstream_status=response.status
            )
        status = 504 if response.status == 504 else 502
        if response.status == 503:
            status = 503
        return errors.UpstreamUnavailable(
            f"upstream answered {url} with HTTP {response.status}",
            status=status,
            upstream_status=response.status,
        )

    def _unavailable(self, url: str, exc: BaseException) -> errors.UpstreamUnavailable:
        status = 504 if isinstance(exc, asyncio.TimeoutError) else 502
        return errors.UpstreamUnavailable(
            f"could not fetch {redact(url)} from upstream: {_describe(exc)}", status=status
        )

    def _count(self, host: str, outcome: str, seconds: float) -> None:
        if self._metrics is None:
            return
        self._metrics.upstream_requests.labels(host, outcome).inc()
        self._metrics.upstream_seconds.labels(host).observe(seconds)

    def _count_bytes(self, host: str, size: int) -> None:
        if self._metrics is not None:
            self._metrics.bytes_fetched.labels(host).inc(size)


def _inflate(
    decoder: zlib._Decompress, chunk: bytes, room: int, response: aiohttp.ClientResponse
) -> bytes:
    """Decompress `chunk`; with `room` > 0 stop just past `room` bytes (a gzip bomb never
    expands fully in memory)."""
    try:
        if room <= 0:
            return decoder.decompress(chunk)
        return decoder.decompress(chunk, room + 1)
    except zlib.error as exc:
        raise _bad_encoding(response, exc) from None


def _bad_encoding(response: aiohttp.ClientResponse, cause: object) -> errors.BadUpstreamDocument:
    return errors.BadUpstreamDocument(
        f"{redact(str(response.url))} has a broken compressed body: {cause}"
    )


def _too_big(url: str, max_bytes: int) -> errors.BadUpstreamDocument:
    return errors.BadUpstreamDocument(
        f"{redact(url)} is larger than the {max_bytes}-byte limit for upstream documents"
    )


def _host_of(url: str) -> str | None:
    try:
        return URL(url).raw_host
    except (ValueError, TypeError):
        return None


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
