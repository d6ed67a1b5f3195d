"""The hot path: the requests that dominate CI traffic (a cached artifact, a cached rendered
metadata view) answered again from a table in the worker's memory, in front of the app.

The app answers a request the first time (the slow path: routing, middlewares, the adapter,
the policy check, the cache). When its answer is replayable (`mirror.replay`: both marks set,
a plain 200 to a plain GET), the front keeps the exact bytes that went out — status line and
headers as built once, the body — under the request's path and the headers the answer may
depend on (`VARYING_HEADERS`). The next such request is answered with those bytes written
straight to the connection, after a few dictionary look-ups:

- the policy: an artifact is decided again whenever the rules changed (a block, an exemption
  ending: `LivePolicy.version`) and refused by the slow path if now held; a view rendered
  under older rules is dropped (the slow path renders it again). The rules being unavailable
  (settling, never loaded) sends every request to the slow path, which fails closed;
- freshness: past the time its upstream document needs revalidating (or a view's own end by
  the clock), or once that document's copy was replaced (`MetaCache.stamp`: new bytes, gone
  upstream), the entry is dropped and the slow path asks upstream;
- integrity: an artifact's stored digests are compared with the pin this process knows on
  every replay (memory only): once another digest is pinned, the slow path refuses it;
- access: where read tokens are checked, the same check (`identity.read_token`); a request
  it refuses takes the slow path for its 401/403;
- bookkeeping, as the slow path does it: request metrics, the cache hit and traffic tally,
  the download ledger for every GET of an artifact, the blob's use for eviction (once a
  minute), the quarantine queue for a view holding versions back, the access log line.

Anything else — a conditional or ranged request, `Expect`, another method, HTTP/1.0, a query
string, a key longer than `MAX_KEY_CHARS`, an error — takes the slow path unchanged. The table
is one `BudgetedLRU` of the worker's memory budget (keys, heads and bodies charged); a replay
waits for its connection to drain as aiohttp does, so an unread pipeline buffers nothing more.

Only aiohttp's public names: the front wraps the `request_handler` of the runner's
`web.Server`, and a replayed answer is a `StreamResponse` whose `prepare` writes the kept
bytes and waits on `request.writer.drain()`; `write_eof` and `keep_alive` are its own. That
aiohttp prepares a handler's response, ends it and then reads `keep_alive` is what every
`StreamResponse` relies on; `tests/integration/test_hotpath.py` checks it on the pinned
aiohttp."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from typing import cast

from aiohttp import HttpVersion11, hdrs, web

from mirror.budget import BudgetedLRU
from mirror.connections import ServerHandler
from mirror.errors import MirrorError
from mirror.forwarded import READ_TOKEN, client_address
from mirror.holds import HeldSubject, quarantined
from mirror.identity import read_token
from mirror.replay import (
    REPLAY_BODY,
    REPLAY_SOURCE,
    ArtifactBody,
    Decided,
    DocumentStamp,
    ReplaySource,
    ViewBody,
)
from mirror.responses import accepted_codings
from mirror.services import SERVICES, Services

log = logging.getLogger("mirror")
access_log = logging.getLogger("mirror.access")


# The request headers a kept answer may depend on: the packument form and compression
# (Accept, Accept-Encoding) and the base URL of rewritten links (Host). Their values are part
# of the key; an artifact's answer depends on none of them, but keying it the same way keeps
# one rule (a few variants per file, the body shared).
VARYING_HEADERS = (hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.HOST)
_ACCEPT_ENCODING_AT = 1 + VARYING_HEADERS.index(hdrs.ACCEPT_ENCODING)  # in a key, after the path
# Where trusted proxies are configured, the base URL follows these too, when a trusted proxy
# sent them (so the peer's address is part of the key as well); otherwise they change nothing.
FORWARDED_HEADERS = (
    hdrs.X_FORWARDED_HOST,
    hdrs.X_FORWARDED_PROTO,
    "X-Forwarded-Prefix",
    hdrs.FORWARDED,
)
# A request whose path and varying values are longer than this is answered by the slow path
# and never kept: any client chooses them, and kept keys cost memory.
MAX_KEY_CHARS = 1024
# A request with one of these wants another answer than the kept one: the slow path judges it.
UNREPLAYABLE_HEADERS = (
    hdrs.RANGE,
    hdrs.IF_NONE_MATCH,
    hdrs.IF_MATCH,
    hdrs.IF_MODIFIED_SINCE,
    hdrs.IF_UNMODIFIED_SINCE,
    hdrs.IF_RANGE,
    hdrs.EXPECT,
)
# A replayed body up to this size goes out in one write with its head (copied: cheaper than
# a second send); a bigger one is written after the head, not copied.
JOIN_MAX = 64 * 1024
# Kept answers per worker: the bytes of each count against the worker's memory budget too.
MAX_ENTRIES = 16_384
# How often a replayed blob's use is stamped for eviction (the blob store's own interval).
TOUCH_INTERVAL = 60.0
# Response headers never kept: written per answer (Date) or by the connection's state.
_PER_ANSWER = frozenset({hdrs.DATE.lower(), hdrs.CONNECTION.lower()})
_STATUS_LINE = b"HTTP/1.1 200 OK\r\n"
_CLOSE = b"Connection: close\r\n"


Key = tuple[object, ...]


@dataclass(slots=True)
class _Entry:
    """One kept answer: `head` is its status line and headers (no Date, no final CRLF)."""

    head: bytes
    body: bytes
    kind: str  # "artifact" or "metadata", as REQUEST_KIND says
    ecosystem: str
    policy_version: int
    valid_until: datetime
    decided: Decided | None
    artifact: ArtifactBody | None
    held: tuple[HeldSubject, ...]
    upstream_size: int  # bytes a metadata replay saved upstream (the document's)
    document: DocumentStamp | None  # the upstream copy it was built from
    key_size: int  # characters of its key (charged to the budget with it)
    touch_at: float = 0.0  # monotonic: when the blob's use is next stamped


class _Replayed(web.StreamResponse):
    """A kept answer: its bytes written to the connection as they are."""

    def __init__(self, parts: tuple[bytes, ...], *, keep_alive: bool, size: int) -> None:
        super().__init__(status=200)
        self._parts = parts
        self._keep = keep_alive
        self.sent_bytes = size

    async def prepare(self, request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        for part in self._parts:
            transport.write(part)
        # As aiohttp does after writing a body: wait while the connection's buffer is over
        # its high-water mark, so a client that asks (pipelines) without reading cannot make
        # the worker buffer answer after answer.
        await request.writer.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        return None

    @property
    def keep_alive(self) -> bool:
        return self._keep


class HotPath:
    """The front of one worker: see the module docstring. `wrap(app_handler)` gives the
    request handler to run instead of the app's."""

    def __init__(self, services: Services, *, max_entries: int = MAX_ENTRIES) -> None:
        self._services = services
        config = services.config
        self._access_log = config.access_log
        self._entries: BudgetedLRU[Key, _Entry] = BudgetedLRU(
            services.memory, "hot answers", _entry_bytes, max_entries=max_entries
        )
        self._tokens = config.access.tokens
        self._token_required = config.access.required
        self._tokens_checked = bool(self._tokens) or self._token_required
        self._remote_varies = bool(config.trusted_proxies)
        self._date_second = -1
        self._date_line = b""
        self._touches: set[asyncio.Task[None]] = set()
        self.replayed = 0  # answers given from the table (what tests check)

    def wrap(self, app_handler: ServerHandler) -> ServerHandler:
        async def front(request: web.BaseRequest) -> web.StreamResponse:
            # Under an AppRunner, the server's requests are the app's `web.Request`s.
            return await self.handle(cast(web.Request, request), app_handler)

        return front

    async def handle(self, request: web.Request, app_handler: ServerHandler) -> web.StreamResponse:
        method = request.method
        if method not in ("GET", "HEAD") or request.version != HttpVersion11:
            return await app_handler(request)
        headers = request.headers
        for name in UNREPLAYABLE_HEADERS:
            if name in headers:
                return await app_handler(request)
        key = self._key(request)
        if key is None:
            return await app_handler(request)
        entry = self._entries.get(key)
        if entry is not None:
            started = time.perf_counter()
            answer = self._replay(request, entry, key)
            if answer is not None:
                self._account(request, entry, answer, time.perf_counter() - started)
                return answer
        response = await app_handler(request)
        if method == "GET":
            await self._learn(request, response, key)
        return response

    # looking up ------------------------------------------------------------------------

    def _key(self, request: web.Request) -> Key | None:
        """The table's key of `request`; None for a request never kept: a query string (the
        routes ignore it: every spelling would be one more copy) or an over-long key."""
        path = request.raw_path
        if "?" in path:
            return None
        headers = request.headers
        values: list[object] = [path, *(headers.get(name) for name in VARYING_HEADERS)]
        if self._remote_varies:
            # Whether the forwarded headers count depends on who sent them (a trusted proxy).
            values.extend(headers.get(name) for name in FORWARDED_HEADERS)
            values.append(request.remote)
        if _chars(values) > MAX_KEY_CHARS:
            return None
        # Not its spelling but what it accepts decides the body: one entry for every client
        # that accepts the same codings (`q` values a client varies cannot multiply copies).
        values[_ACCEPT_ENCODING_AT] = accepted_codings(str(values[_ACCEPT_ENCODING_AT] or ""))
        return tuple(values)

    def _replay(self, request: web.Request, entry: _Entry, key: Key) -> _Replayed | None:
        """The kept answer, if it is still the answer; None (the slow path) otherwise."""
        services = self._services
        now = services.clock.now()
        if now >= entry.valid_until or (
            entry.document is not None and not services.metacache.unchanged(entry.document)
        ):
            self._entries.pop(key)  # a newer upstream copy, or time to ask: the slow path
            return None
        artifact = entry.artifact
        if artifact is not None and not services.artifacts.still_agrees(
            artifact.ref, artifact.blob
        ):
            self._entries.pop(key)  # another digest is pinned now: the slow path refuses
            return None
        policy = services.policy
        try:
            version = policy.rules_version()
        except MirrorError:
            return None  # unavailable rules: the slow path fails closed
        if version != entry.policy_version:
            decided = entry.decided
            if decided is None:
                self._entries.pop(key)  # a view under older rules: rendered again
                return None
            try:
                decision = policy.decide(decided.subject, decided.published_at, decided.signals)
            except MirrorError:
                return None
            if not decision.visible:
                self._entries.pop(key)  # the slow path refuses it, counted and explained
                return None
            entry.policy_version = version
        if self._tokens_checked:
            try:
                token = read_token(
                    request.headers.get(hdrs.AUTHORIZATION),
                    self._tokens,
                    required=self._token_required,
                )
            except MirrorError:
                return None  # the slow path answers the 401/403
            if token:
                request[READ_TOKEN] = token
        keep_alive = request.keep_alive
        head = entry.head + self._date() + (b"\r\n" if keep_alive else _CLOSE + b"\r\n")
        if request.method != "GET":
            return _Replayed((head,), keep_alive=keep_alive, size=0)
        body = entry.body
        if len(body) <= JOIN_MAX:
            # One write, one send: the event loop sends each part of a list on its own.
            return _Replayed((head + body,), keep_alive=keep_alive, size=len(body))
        return _Replayed((head, body), keep_alive=keep_alive, size=len(body))

    def _date(self) -> bytes:
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date_line = f"Date: {formatdate(second, usegmt=True)}\r\n".encode()
        return self._date_line

    # bookkeeping -----------------------------------------------------------------------

    def _account(
        self, request: web.Request, entry: _Entry, answer: _Replayed, seconds: float
    ) -> None:
        """What the slow path records for the same answer."""
        services = self._services
        metrics = services.metrics
        ecosystem = entry.ecosystem
        size = answer.sent_bytes
        self.replayed += 1
        metrics.observe_request(ecosystem, entry.kind, 200, seconds, size)
        metrics.traffic.request(ecosystem)
        artifact = entry.artifact
        if artifact is not None:
            metrics.hit(ecosystem, "artifact")
            metrics.traffic.hit(ecosystem, size)
            if request.method == "GET":
                services.artifacts.record_download(request, artifact.ref)
            self._touch(entry, artifact)
        else:
            metrics.hit(ecosystem, "metadata")
            metrics.traffic.hit(ecosystem, entry.upstream_size)
        if entry.held:
            note_held(request, services, entry.held, ())
        if self._access_log and access_log.isEnabledFor(logging.INFO):
            log_access(request, services, 200, size, seconds, ecosystem, entry.kind)

    def _touch(self, entry: _Entry, artifact: ArtifactBody) -> None:
        """Stamp the blob's use (eviction keeps what is used) at most once a minute."""
        now = time.monotonic()
        if now < entry.touch_at:
            return
        entry.touch_at = now + TOUCH_INTERVAL
        task = asyncio.get_running_loop().create_task(self._services.blobs.note_use(artifact.blob))
        self._touches.add(task)
        task.add_done_callback(self._touch_done)

    def _touch_done(self, task: asyncio.Task[None]) -> None:
        self._touches.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("could not stamp a blob's use", exc_info=task.exception())

    # learning --------------------------------------------------------------------------

    async def _learn(self, request: web.Request, response: web.StreamResponse, key: Key) -> None:
        """Keep the app's answer to `request` when it is replayable (see `mirror.replay`)."""
        source = request.get(REPLAY_SOURCE)
        body_mark = request.get(REPLAY_BODY)
        if source is None or body_mark is None:
            return
        if type(response) is not web.Response or response.status != 200:
            return
        if response.chunked or response.compression:
            return
        body = response.body
        if not isinstance(body, bytes):
            return
        # Prepared here, so the headers are final (the app's on_response_prepare ran) and
        # the kept head is exactly what this client gets; aiohttp's own prepare is then a
        # no-op and it writes the body as usual.
        try:
            await response.prepare(request)
        except ConnectionError:
            return  # the client left: aiohttp notices on its own, nothing is kept

        if response.content_length != len(body):
            return
        entry = _entry_of(response, body, source, body_mark, key)
        if entry is not None:
            self._entries.put(key, entry)


def _entry_of(
    response: web.Response,
    body: bytes,
    source: ReplaySource,
    mark: ArtifactBody | ViewBody,
    key: Key,
) -> _Entry | None:
    lines = [_STATUS_LINE]
    for name, value in response.headers.items():
        if name.lower() in _PER_ANSWER:
            continue
        lines.append(f"{name}: {value}\r\n".encode())
    if isinstance(mark, ArtifactBody):
        kind = "artifact"
        artifact: ArtifactBody | None = mark
        held: tuple[HeldSubject, ...] = ()
        valid_until = source.fresh_until
    else:
        if source.decided is not None:
            return None  # a view is never decided again: it is rendered again
        kind, artifact, held = "metadata", None, mark.held
        valid_until = source.fresh_until
        if mark.valid_until is not None:
            valid_until = min(valid_until, mark.valid_until)
    return _Entry(
        head=b"".join(lines),
        body=body,
        kind=kind,
        ecosystem=source.ecosystem,
        policy_version=source.policy_version,
        valid_until=valid_until,
        decided=source.decided,
        artifact=artifact,
        held=held,
        upstream_size=source.upstream_size,
        document=source.document,
        key_size=_chars(key),
    )


def _chars(values: Iterable[object]) -> int:
    """The characters of a key's strings."""
    return sum(len(value) for value in values if isinstance(value, str))


def _entry_bytes(entry: _Entry) -> int:
    """What a kept answer holds: its key, head and body (a body shared with another cache is
    counted again: the table must stay within the budget on its own) and its objects."""
    return entry.key_size + len(entry.head) + len(entry.body) + 768


# shared with the app's middlewares -------------------------------------------------------


def note_held(
    request: web.Request,
    services: Services,
    held: tuple[HeldSubject, ...],
    withheld: tuple[object, ...],
) -> None:
    """The quarantine queue: this request (its client, its read token) was held `held` back
    (a view's versions) or refused with `withheld` decisions. Noted in memory, written in
    batches: never delays or fails the answer, so a failure here is logged, never raised."""
    recorder = services.holds
    try:
        subjects = held or quarantined(withheld)
        if subjects:
            client = client_address(request, services.config)
            recorder.note(subjects, client=client, token=request.get(READ_TOKEN, ""))
    except Exception:
        if recorder.first_failure():
            log.warning("could not note a held request in the quarantine queue", exc_info=True)
        else:
            log.debug("could not note a held request in the quarantine queue", exc_info=True)


def log_access(
    request: web.Request,
    services: Services,
    status: int,
    size: int,
    seconds: float,
    ecosystem: str,
    kind: str,
) -> None:
    """One JSON access-log line (`access_log` setting)."""
    access_log.info(
        json.dumps(
            {
                "ts": services.clock.now().isoformat(timespec="milliseconds"),
                "remote": request.remote,
                "method": request.method,
                "path": request.raw_path,
                "status": status,
                "bytes": size,
                "ms": round(seconds * 1000, 2),
                "ecosystem": ecosystem,
                "kind": kind,
                "ua": request.headers.get("User-Agent", ""),
            },
            separators=(",", ":"),
        )
    )


def install(runner: web.BaseRunner) -> HotPath:
    """Put a hot path in front of the app of `runner` (set up: its `server` exists)."""
    server = runner.server
    app = getattr(runner, "app", None)
    if server is None or not isinstance(app, web.Application):
        raise RuntimeError("the hot path needs an AppRunner that is set up")
    hot = HotPath(app[SERVICES])
    server.request_handler = hot.wrap(server.request_handler)
    return hot
