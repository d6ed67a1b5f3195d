"""The connections one worker holds, bounded: at most `max_connections`, at most
`limits.max_connections_per_client` from one address (trusted proxies excepted: every client
behind them shares their address), and a request's headers complete within
`limits.header_timeout`. Idle keep-alive connections are closed by aiohttp's own
`keepalive_timeout`. Also knows which requests are in flight, for a graceful stop.

Wraps aiohttp's protocol factory; it sees bytes arrive and requests start and end, nothing
about what a request asks for. A refused connection is closed at once, before a byte is read:
an answer written before the request is read is lost to most clients anyway."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

from mirror.config import IPNetwork
from mirror.forwarded import is_trusted

# The request handler of aiohttp's `web.Server` (what `wrap` wraps and gives).
ServerHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
log = logging.getLogger("mirror.connections")

# Refusals are logged at most once per this many seconds per kind, with a count: a client
# opening thousands of connections must not fill the log.
WARNING_INTERVAL = 10.0


class ConnectionGate:
    """Admits connections within the limits, closes those whose headers are late and keeps
    the set of requests in flight. One per worker; `protocol_factory` wraps aiohttp's server
    and `middleware` must run outermost in the app."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_client: int,
        header_timeout: float,
        trusted_proxies: tuple[IPNetwork, ...] = (),
    ) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.header_timeout = header_timeout
        self._trusted = trusted_proxies
        self._open: dict[asyncio.BaseTransport, _Connection] = {}
        self._per_client: Counter[str] = Counter()
        self._inflight: set[asyncio.Task[object]] = set()
        self._events: Counter[str] = Counter()  # refusals and closings since last logged
        self._logged_at: dict[str, float] = {}

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def protocol_factory(
        self, inner: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` around aiohttp's (`runner.server`)."""
        return lambda: _Connection(self, inner())

    def wrap(self, handler: ServerHandler) -> ServerHandler:
        """The request handler around `handler` (the server's, in front of the hot path and
        the app): ends the header timer of the request's connection and tracks the request's
        task, for every request however it is answered."""

        async def track(request: web.BaseRequest) -> web.StreamResponse:
            return await self._track(request, handler)

        return track

    async def _track(self, request: web.BaseRequest, handler: ServerHandler) -> web.StreamResponse:
        connection = self._open.get(request.transport) if request.transport else None
        if connection is not None:
            connection.request_started()
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            return await handler(request)
        finally:
            if task is not None:
                self._inflight.discard(task)
            if connection is not None:
                connection.request_finished()

    async def drain(self, grace: float, unwind: float) -> int:
        """Wait up to `grace` seconds for the requests in flight (new ones included) to end;
        then cancel those left and give them up to `unwind` seconds to run their clean-up.
        Returns how many were cancelled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._inflight and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._inflight), timeout=remaining)
        left = set(self._inflight)
        if not left:
            return 0
        log.warning(
            "%d request(s) still running after shutdown_grace (%.1f s); closing them",
            len(left),
            grace,
        )
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=unwind)
        return len(left)

    # bookkeeping (called by _Connection) ------------------------------------------------

    def _admit(self, connection: _Connection, transport: asyncio.BaseTransport) -> bool:
        client = connection.client
        if len(self._open) >= self.max_connections:
            self._refuse(
                "worker",
                f"{self.max_connections} connections open in this worker (limits.max_connections)",
            )
            return False
        exempt = is_trusted(client, self._trusted)
        if not exempt and self._per_client[client] >= self.max_per_client:
            self._refuse(
                "client",
                f"{client} has {self.max_per_client} connections open to this worker "
                "(limits.max_connections_per_client)",
            )
            return False
        self._open[transport] = connection
        self._per_client[client] += 1
        return True

    def _release(self, connection: _Connection, transport: asyncio.BaseTransport) -> None:
        if self._open.pop(transport, None) is None:
            return
        self._per_client[connection.client] -= 1
        if self._per_client[connection.client] <= 0:
            del self._per_client[connection.client]

    def _refuse(self, kind: str, why: str) -> None:
        self._note(
            kind, logging.WARNING, "refused %d new connection(s) in the last %.0f s: %s", why
        )

    def _closed_late(self, client: str) -> None:
        why = (
            f"no complete request headers within {self.header_timeout:g} s "
            f"(limits.header_timeout), the last from {client}"
        )
        self._note("headers", logging.INFO, "closed %d connection(s) in the last %.0f s: %s", why)

    def _note(self, kind: str, level: int, message: str, why: str) -> None:
        """Count an event of `kind`; log the count at most once per WARNING_INTERVAL."""
        self._events[kind] += 1
        now = time.monotonic()
        if now - self._logged_at.get(kind, -WARNING_INTERVAL) < WARNING_INTERVAL:
            return
        self._logged_at[kind] = now
        log.log(level, message, self._events.pop(kind), WARNING_INTERVAL, why)


class _Connection(asyncio.Protocol):
    """One client connection: admitted or closed at once; aiohttp's handler does the rest.
    The header timer runs from the connection's start, and again from the first byte after
    a response, until the request reaches the app."""

    def __init__(self, gate: ConnectionGate, inner: asyncio.Protocol) -> None:
        self._gate = gate
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self.client = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._gate._admit(self, transport):
            transport.close()
            return
        self._transport = transport
        self._start_header_timer()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        if not self._busy and self._timer is None:
            self._start_header_timer()  # the first byte of the next request
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._transport is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        self._stop_header_timer()
        self._gate._release(self, transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def request_started(self) -> None:
        self._busy = True
        self._stop_header_timer()

    def request_finished(self) -> None:
        self._busy = False

    def _start_header_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._gate.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        if self._busy or cast(asyncio.WriteTransport, transport).get_write_buffer_size():
            # Still answering (aiohttp writes a response after the app returns it): the
            # clock for the next request's headers has not really started.
            self._start_header_timer()
            return
        self._gate._closed_late(self.client)
        transport.close()
