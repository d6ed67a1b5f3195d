"""The download ledger behind "who already pulled it?": every artifact served is noted, and
the notes reach shared state in batches, off the serving path.

CI runners pull the same file thousands of times a day; one state write per pull would cost
more than serving the file. So repeats of the same (client, file) within `repeat_window` are
noted once: the ledger still answers which clients downloaded a version and when they first
did, which is what an impact report needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Final

from mirror.metrics import Metrics
from mirror.state.base import DownloadEvent, StateStore

log = logging.getLogger("mirror.ledger")

FLUSH_INTERVAL: Final = 0.5  # seconds a note may wait before it is written
MAX_BATCH: Final = 500
MAX_PENDING: Final = 50_000  # notes kept while state is down; older ones are dropped
MAX_REMEMBERED: Final = 100_000
REPEAT_WINDOW: Final = timedelta(minutes=10)

_Key = tuple[str, str, str, str, str]


class DownloadLedger:
    def __init__(
        self,
        state: StateStore,
        metrics: Metrics,
        *,
        backend: str,
        repeat_window: timedelta = REPEAT_WINDOW,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._backend = backend
        self._repeat_window = repeat_window
        self._flush_interval = flush_interval
        self._pending: list[DownloadEvent] = []
        self._recent: OrderedDict[_Key, datetime] = OrderedDict()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    def note(self, event: DownloadEvent) -> None:
        """Remember one download; written within `flush_interval`. Never blocks or fails."""
        key = (event.ecosystem, event.package, event.version, event.filename, event.client)
        last = self._recent.get(key)
        if last is not None and event.at - last < self._repeat_window:
            return
        self._recent[key] = event.at
        self._recent.move_to_end(key)
        while len(self._recent) > MAX_REMEMBERED:
            self._recent.popitem(last=False)
        self._pending.append(event)
        if len(self._pending) > MAX_PENDING:
            dropped = len(self._pending) - MAX_PENDING
            del self._pending[:dropped]
            log.error("download ledger backlog full: %d notes dropped", dropped)
        if self._flusher is None and not self._closed:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def flush(self) -> None:
        """Write every pending note now (tests and shutdown)."""
        while self._pending:
            # Taken out before the write: a flush running at the same time (the timer's and
            # an explicit one) must not write the same notes again.
            batch = self._pending[:MAX_BATCH]
            del self._pending[: len(batch)]
            try:
                await self._state.record_downloads(batch)
            except Exception as exc:  # any state failure: keep the notes, retry later
                self._pending[:0] = batch
                self._metrics.state_errors.labels(self._backend).inc()
                log.warning("could not record %d downloads: %s", len(batch), exc)
                return

    async def close(self) -> None:
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(self._flush_interval)
            await self.flush()
        finally:
            self._flusher = None
            if self._pending and not self._closed:
                # State failed (or more arrived while writing): try again later.
                self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())
