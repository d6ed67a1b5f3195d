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
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Final, Generic, Protocol, Self, TypeVar

from mirror.metrics import Metrics
from mirror.model import DownloadEvent
from mirror.state.base import StateStore

log = logging.getLogger("mirror.ledger")

FLUSH_INTERVAL: Final = 0.5  # seconds a note may wait before it is written
MAX_BATCH: Final = 500  # rows in one state write
MAX_PENDING: Final = 50_000  # rows kept while state is down; the oldest are dropped


class Row(Protocol):
    """What a batch gathers: rows of one key merge into one."""

    @property
    def key(self) -> Hashable: ...

    def merged(self, other: Self, /) -> Self: ...


R = TypeVar("R", bound=Row)


class BatchedWrites(Generic[R]):
    """Rows noted on the serving path, gathered by key (merged) and written to state in
    batches within `flush_interval`, off the serving path: `note` never blocks or fails.
    `what` names the rows in logs ("downloads", "holds")."""

    def __init__(
        self,
        write: Callable[[Sequence[R]], Awaitable[None]],
        metrics: Metrics,
        *,
        backend: str,
        what: str,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._write = write
        self._metrics = metrics
        self._backend = backend
        self._what = what
        self._flush_interval = flush_interval
        # One row per key, in the order first noted.
        self._pending: dict[Hashable, R] = {}
        self._flusher: asyncio.Task[None] | None = None
        # Set by close(): the waiting flusher writes at once instead of after its interval.
        self._closing = asyncio.Event()
        self._last_write_failed = False

    def note(self, event: R) -> None:
        """Remember one row; written within `flush_interval`. Never blocks or fails."""
        self._add(event)
        if len(self._pending) > MAX_PENDING:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            log.error("%s backlog full: the oldest note was dropped", self._what)
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
                await self._write(batch)
            except Exception as exc:  # any state failure: keep the rows, retry later
                for row in batch:
                    self._add(row)
                self._last_write_failed = True
                self._metrics.state_errors.labels(self._backend).inc()
                log.warning("%s: could not record %d rows: %s", self._what, len(batch), exc)
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
            log.error("%s closed with %d rows unwritten", self._what, len(self._pending))

    def _add(self, row: R) -> None:
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


class DownloadLedger(BatchedWrites[DownloadEvent]):
    """The download ledger: one row per (client, file) gathered, `record_downloads`."""

    def __init__(
        self,
        state: StateStore,
        metrics: Metrics,
        *,
        backend: str,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        super().__init__(
            state.record_downloads,
            metrics,
            backend=backend,
            what="download ledger",
            flush_interval=flush_interval,
        )
