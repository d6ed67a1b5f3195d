"""POSTs JSON to one webhook URL an admin configured, in the background.

Choices, stated plainly:
- `send` only queues: a delivery never delays the caller (a client request or a metadata
  refresh). The queue holds at most `max_queued` payloads: a flood (a hostile upstream that
  drops every version it has, over and over) cannot grow memory; what does not fit is
  counted as a failure, not kept.
- One delivery at a time, each with `timeout`, retried `attempts` times in all with
  doubling back-off from `backoff`; only a 2xx answer is success. Redirects are not
  followed (a 3xx is a failure): the payload goes to the configured URL and nowhere else.
- The URL is a secret (a Slack-style webhook carries its key in the path): it is never
  logged, nor any error text that could repeat it; failures are logged by status or error
  type alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

import aiohttp

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS: Final = 3
DEFAULT_BACKOFF: Final = timedelta(milliseconds=500)
DEFAULT_MAX_QUEUED: Final = 1000
# How long `close` waits for queued deliveries before it cancels the rest.
CLOSE_GRACE: Final = timedelta(seconds=5)


class Webhook:
    """See the module docstring. Construct without I/O (the session opens on first use);
    `close()` delivers what is queued within CLOSE_GRACE, then drops the rest."""

    def __init__(
        self,
        url: str,
        *,
        timeout: timedelta,
        on_failure: Callable[[str], None],
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: timedelta = DEFAULT_BACKOFF,
        max_queued: int = DEFAULT_MAX_QUEUED,
        what: str = "webhook",
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._on_failure = on_failure
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._what = what
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max(1, max_queued))
        self._worker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # Deliveries that failed after every attempt (or found the queue full).
        self.failures = 0
        self.delivered = 0

    def __repr__(self) -> str:  # never the URL
        return f"Webhook({self._what})"

    def send(self, payload: dict[str, Any]) -> None:
        """Queue `payload` for delivery; never waits, never raises."""
        if self._closed:
            self._fail("the mirror is shutting down")
            return
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self._fail(f"{self._queue.maxsize} deliveries are queued already")
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._deliver_all(), name=f"{self._what} deliveries"
            )

    async def drain(self) -> None:
        """Wait until every queued payload was delivered or given up on."""
        await self._queue.join()

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None and not self._worker.done():
            try:
                await asyncio.wait_for(self.drain(), CLOSE_GRACE.total_seconds())
            except TimeoutError:
                log.warning(
                    "%s: %d deliveries not made before shutdown", self._what, self._queue.qsize()
                )
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver_all(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await self._deliver(payload)
            finally:
                self._queue.task_done()

    async def _deliver(self, payload: dict[str, Any]) -> None:
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff.total_seconds() * 2 ** (attempt - 1))
            problem = await self._post(payload)
            if not problem:
                self.delivered += 1
                return
        self._fail(f"{problem} ({self._attempts} attempts)")

    async def _post(self, payload: dict[str, Any]) -> str:
        """One POST: "" when accepted, else what went wrong (never the URL)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout.total_seconds())
            )
        try:
            async with self._session.post(
                self._url, json=payload, allow_redirects=False
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return ""
                return f"HTTP {response.status}"
        except TimeoutError:
            return "no answer in time"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # The error's text may name the URL: its type only.
            return type(exc).__name__

    def _fail(self, problem: str) -> None:
        self.failures += 1
        log.warning("%s: a delivery failed: %s", self._what, problem)
        with contextlib.suppress(Exception):
            self._on_failure(problem)
