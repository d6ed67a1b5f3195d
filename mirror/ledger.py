"""The download ledger behind "who already pulled it?": every artifact served is noted, and
the notes reach shared state in batches, off the serving path.

CI runners pull the same file thousands of times a day; one state write per pull would cost
more than serving the file. So the notes of one (client, file) are gathered while they wait
(first seen, last seen, how many) and written as one row; the state adds the rows of every
worker together, so the ledger holds one row per client and file, whatever the traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from mirror.metrics import Metrics
from mirror.model import DownloadEvent
from mirror.state.base import StateStore

log = logging.getLogger("mirror.ledger")

FLUSH_INTERVAL: Final = 0.5  # seconds a note may wait before it is written
MAX_BATCH: Final = 500  # rows in one state write
MAX_PENDING: Final = 50_000  # rows kept while state is down; the oldest are dropped

_Key = tuple[str, str, str, str, str, str]


class DownloadLedger:
    def __init__(
        self,
        state: StateStore,
        metrics: Metrics,
        *,
        backend: str,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._backend = backend
        self._flush_interval = flush_interval
        # One row per (client, file), in the order first noted.
        self._pending: dict[_Key, DownloadEvent] = {}
        self._flusher: asyncio.Task[None] | None = None
        # Set by close(): the waiting flusher writes at once instead of after its interval.
        self._closing = asyncio.Event()
        self._last_write_failed = False

    def note(self, event: DownloadEvent) -> None:
        """Remember one download; written within `flush_interval`. Never blocks or fails."""
        self._add(event)
        if len(self._pending) > MAX_PENDING:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            log.error("download ledger backlog full: the oldest note was dropped")
        if self._flusher is None and not self._closing.is_set():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def flush(self) -> None:
        """Write every pending row now (tests and shutdown)."""
        while self._pending:
            # Taken out before the write: a flush running at the same time (the timer's and
            # an explicit one) must not write the same rows again.
            keys = list(self._pending)[:MAX_BATCH]
            batch = [self._pending.pop(key) for key in keys]
            try:
                await self._state.record_downloads(batch)
            except Exception as exc:  # any state failure: keep the rows, retry later
                for row in batch:
                    self._add(row)
                self._last_write_failed = True
                self._metrics.state_errors.labels(self._backend).inc()
                log.warning("could not record %d downloads: %s", len(batch), exc)
                return
            self._last_write_failed = False

    async def close(self) -> None:
        """Write what is pending. A flush already writing is waited for, never cancelled:
        its batch has left the queue, so cancelling it would lose those notes."""
        self._closing.set()
        flusher = self._flusher
        if flusher is not None:
            await flusher  # it writes at once, everything pending
        if flusher is None or not self._last_write_failed:
            await self.flush()  # what arrived meanwhile; state that just failed is not retried
        if self._pending:
            log.error("download ledger closed with %d rows unwritten", len(self._pending))

    def _add(self, row: DownloadEvent) -> None:
        known = self._pending.get(row.key)
        self._pending[row.key] = row if known is None else known.merged(row)

    async def _flush_soon(self) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._closing.wait()
            await self.flush()
        finally:
            self._flusher = None
            if self._pending and not self._closing.is_set():
                # State failed (or more arrived while writing): try again later.
                self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())
