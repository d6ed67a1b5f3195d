"""The quarantine queue's recorder: every request held back by quarantine is noted here on the
serving path and reaches shared state in batches (`ledger.BatchedWrites`,
`StateStore.record_holds`): one row per (version, client address, read token) gathered,
counts summed. It never delays or fails a request: a state that does not answer keeps the
rows for the next write, bounded.

A request costs one dict update, whatever the number of versions it held back: it is noted
under the identity of the tuple of held versions (a rendered view's, shared by every request
served it), and expanded into one row per version only when written, off the request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mirror.clock import Clock
from mirror.holds import HeldSubject, HoldEvent
from mirror.ledger import FLUSH_INTERVAL, BatchedWrites
from mirror.metrics import Metrics
from mirror.state import backend_name
from mirror.state.base import StateStore


@dataclass(frozen=True, slots=True)
class HeldRequests:
    """Requests by one requester that held the same versions back (`held`, one tuple
    object): first `at`, latest `last_at`, `count` requests."""

    held: tuple[HeldSubject, ...]
    client: str
    token: str
    at: datetime
    last_at: datetime
    count: int = 1

    @property
    def key(self) -> tuple[object, str, str]:
        # Several versions (a view's tuple, shared by every request served it): by the tuple's
        # identity, O(1) whatever its length; the row keeps the tuple alive, so no other tuple
        # can take its id while the row waits. One version (a refusal builds a new tuple each
        # time): by value, so the refusals of one file by one client gather in one row.
        held: object = self.held if len(self.held) == 1 else id(self.held)
        return (held, self.client, self.token)

    def merged(self, other: HeldRequests) -> HeldRequests:
        return HeldRequests(
            held=self.held,
            client=self.client,
            token=self.token,
            at=min(self.at, other.at),
            last_at=max(self.last_at, other.last_at),
            count=self.count + other.count,
        )

    def events(self) -> list[HoldEvent]:
        """One row per version held (what the state stores)."""
        return [
            HoldEvent(
                subject=subject,
                client=self.client,
                token=self.token,
                at=self.at,
                last_at=self.last_at,
                count=self.count,
            )
            for subject in self.held
        ]


class HoldRecorder:
    def __init__(
        self,
        state: StateStore,
        metrics: Metrics,
        clock: Clock,
        *,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._clock = clock
        self._state = state
        self._failed = False
        self._batches: BatchedWrites[HeldRequests] = BatchedWrites(
            self._write,
            metrics,
            backend=backend_name(state),
            what="quarantine queue",
            flush_interval=flush_interval,
        )

    def note(self, held: tuple[HeldSubject, ...], *, client: str, token: str) -> None:
        """One request by `client` (read token `token`, "" = none) held `held` back."""
        if not held:
            return
        now = self._clock.now()
        self._batches.note(HeldRequests(held=held, client=client, token=token, at=now, last_at=now))

    def first_failure(self) -> bool:
        """Noting failed (the serving path logs it, `app._note_held`): True the first time,
        so that it is logged at WARNING once, not on every request."""
        first, self._failed = not self._failed, True
        return first

    async def flush(self) -> None:
        """Write every pending row now (tests and shutdown)."""
        await self._batches.flush()

    async def close(self) -> None:
        await self._batches.close()

    async def _write(self, batch: Sequence[HeldRequests]) -> None:
        await self._state.record_holds([event for requests in batch for event in requests.events()])
