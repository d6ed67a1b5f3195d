"""The serving path's view of shared state: every call bounded, what is known kept in memory,
and writes that failed retried later. A full disk or a slow Redis degrades; it never refuses.

Why: a request must not wait on shared state longer than `state.timeout`, nor fail because a
first-seen digest or a publish time could not be written. What the serving path does instead:
- first-seen digests: a pin seen once is kept in memory (pins never change), so most calls
  make no state round trip at all. When state cannot answer in time, the digest the upstream
  declares now is used (the bytes are still verified against it, as always) and remembering
  it is queued; should the queued write find that another digest was remembered first, that
  is logged and counted as changed bytes and the memory copy takes the first one, so the file
  is refused from then on (`pinned` lets hits check it too);
- first-seen digests while the policy is degraded (the state came back emptied, replaced or
  older: `LivePolicy.degraded`): the pins of the last-known copy win over the state's. A
  digest that differs from the copy's pin is refused as any changed bytes are, and the
  state is not given a pin that contradicts the copy (`mirror state restore` puts the copy's
  pins back);
- reads (publish times) answer "unknown" when state cannot answer in time: callers then ask
  the upstream, as for a value never stored;
- fetch claims across replicas (`mirror.artifacts.download`) answer "unknown" when state
  cannot answer in time: the caller then fetches under its host's file lock alone (at worst
  one more upstream fetch per host; the bytes are verified as always). A release that does
  not land is left to the claim's expiry;
- writes are queued (bounded; the oldest dropped and counted past the bound) and retried in
  the background with backoff. The outage is logged once when it starts and once when it
  ends; while it lasts, reads do not wait on state at all (the retry loop probes it).
Policy is not read through here: rules come from LivePolicy's in-memory copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Final, Protocol, TypeVar

from mirror.budget import BudgetedLRU, ByteBudget
from mirror.errors import StateUnavailable
from mirror.metrics import Metrics
from mirror.state.base import FetchHolder, StateStore

log = logging.getLogger("mirror.state")

T = TypeVar("T")

MAX_PINS: Final = 200_000  # first-seen digests kept in memory (~150 bytes each)
_PIN_BYTES: Final = 160
MAX_BACKLOG: Final = 10_000  # writes kept while state is down; the oldest dropped past it
RETRY_FIRST: Final = 0.5  # seconds before the first retry, doubled up to RETRY_MAX
RETRY_MAX: Final = 5.0

# A queued write: what it does once state answers, by a key that makes repeats one write.
_WriteKey = tuple[str, str, str]
Conflict = Callable[[str, str, str, str], None]  # (ecosystem, key, mine, first)


class KnownPins(Protocol):
    """The last-known copy's digest pins while the shared state is not trusted
    (`LivePolicy`); None from both when it is trusted or pins nothing for `key`."""

    # Changes whenever the state becomes trusted or untrusted.
    trust_epoch: int

    async def known_pin(self, ecosystem: str, key: str) -> str | None: ...

    def known_pin_now(self, ecosystem: str, key: str) -> str | None: ...


class ServingState:
    """See the module docstring. One per worker process; `close()` tries the backlog once."""

    def __init__(
        self,
        state: StateStore,
        metrics: Metrics,
        *,
        backend: str,
        timeout: timedelta,
        on_conflict: Conflict | None = None,
        max_pins: int = MAX_PINS,
        max_backlog: int = MAX_BACKLOG,
        budget: ByteBudget | None = None,
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._backend = backend
        self._timeout = max(timeout.total_seconds(), 0.001)
        self._on_conflict = on_conflict
        self._max_backlog = max_backlog
        # Pins seen, paid for from the worker's memory budget (one dropped is read again).
        self._pins: BudgetedLRU[tuple[str, str], str] = BudgetedLRU(
            budget or ByteBudget(max_pins * _PIN_BYTES),
            "digest pins",
            _pin_bytes,
            max_entries=max_pins,
        )
        self._backlog: OrderedDict[_WriteKey, Callable[[], Awaitable[None]]] = OrderedDict()
        self._retrier: asyncio.Task[None] | None = None
        # Monotonic time the outage started; None while state answers.
        self._down_since: float | None = None
        # Set when an outage was logged; cleared (and logged) once state answers with nothing
        # left queued: a state that fails now and then is one outage, not a log line each.
        self._outage_started: float | None = None
        self._closed = False
        self._known_pins: KnownPins | None = None
        self._trust_epoch = 0

    def use_known_pins(self, known: KnownPins) -> None:
        """Let the last-known copy's pins win while the state is not trusted (set once, when
        the worker's services are built: the policy is built after this)."""
        self._known_pins = known

    # public API -------------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """True while shared state is known not to answer (reads then skip it)."""
        return self._down_since is not None

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def pinned(self, ecosystem: str, key: str) -> str | None:
        """The first-seen digest ("algorithm:hex") of `key` if this process knows it (the
        last-known copy's first while the state is not trusted)."""
        known = self._known_pins
        if known is not None:
            if known.trust_epoch != self._trust_epoch:
                # Trusted or untrusted since: a pin taken from the state before (from an
                # emptied one, before the loss showed) must not outlive the change.
                self._trust_epoch = known.trust_epoch
                self._pins.clear()
            copied = known.known_pin_now(ecosystem, key)
            if copied is not None:
                return copied
        return self._pins.get((ecosystem, key))

    def pin_confirmed(self, ecosystem: str, key: str) -> bool:
        """Whether the pin `remember_digest` gave for `key` came from the shared state (or the
        last-known copy of it), not from the fallback that takes the caller's own digest while
        the state does not answer (then its write is still queued, or the state is down)."""
        if self._known_pins is not None and self._known_pins.known_pin_now(ecosystem, key):
            return True
        return self._down_since is None and ("digest", ecosystem, key) not in self._backlog

    async def remember_digest(self, ecosystem: str, key: str, digest: str) -> str:
        """The first digest seen for `key`: from memory, else from state (storing `digest` if
        none was), else, when state cannot answer within the bound, `digest` itself with the
        write queued. While the state is not trusted, the last-known copy's pin when it has
        one, and nothing is written. The caller verifies the bytes against what this returns,
        as always (a differing declared digest is refused as changed bytes)."""
        if self._known_pins is not None:
            copied = await self._known_pins.known_pin(ecosystem, key)
            if copied is not None:
                return copied
        known = self.pinned(ecosystem, key)
        if known is not None:
            return known
        if self._down_since is None:
            try:
                first = await self._bounded(
                    self._state.remember_digest(ecosystem, key, digest), "remember a digest"
                )
            except StateUnavailable:
                pass
            else:
                self._pin(ecosystem, key, first)
                return first
        self._queue(("digest", ecosystem, key), self._deferred_pin(ecosystem, key, digest))
        return digest

    async def get_publish_time(self, ecosystem: str, key: str) -> datetime | None:
        """The stored publish time of `key`, or None when none is stored or state cannot
        answer within the bound (the caller then asks the upstream, as for a new key)."""
        if self._down_since is not None:
            return None
        try:
            return await self._bounded(
                self._state.get_publish_time(ecosystem, key), "read a publish time"
            )
        except StateUnavailable:
            return None

    def set_publish_time(self, ecosystem: str, key: str, at: datetime) -> None:
        """Store a publish time in the background (never waits): written at once when state
        answers, else kept in the backlog and retried."""

        async def write() -> None:
            await self._state.set_publish_time(ecosystem, key, at)

        self._queue(("publish", ecosystem, key), write)

    async def claim_fetch(self, key: str, owner: str, ttl: timedelta) -> FetchHolder | None:
        """`StateStore.claim_fetch` within the bound: the holder of `key`'s fetch across
        replicas (`owner` when granted), or None when state cannot answer in time."""
        if self._down_since is not None:
            return None
        try:
            return await self._bounded(
                self._state.claim_fetch(key, owner, ttl), "claim an upstream fetch"
            )
        except StateUnavailable:
            return None

    async def renew_fetch(
        self, key: str, owner: str, ttl: timedelta, announced: str = ""
    ) -> bool | None:
        """`StateStore.renew_fetch` within the bound; None when state cannot answer in time."""
        if self._down_since is not None:
            return None
        try:
            return await self._bounded(
                self._state.renew_fetch(key, owner, ttl, announced), "renew a fetch claim"
            )
        except StateUnavailable:
            return None

    async def release_fetch(self, key: str, owner: str) -> None:
        """`StateStore.release_fetch` within the bound; when state cannot answer, the claim
        expires on its own."""
        if self._down_since is not None:
            return
        with contextlib.suppress(StateUnavailable):
            await self._bounded(self._state.release_fetch(key, owner), "release a fetch claim")

    async def close(self) -> None:
        """Stop retrying; one last bounded attempt at the backlog (what fails is logged)."""
        self._closed = True
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
            self._retrier = None
        if self._backlog:
            self._down_since = None
            await self._drain()
            if self._backlog:
                log.error(
                    "shutting down with %d shared-state writes not done (first-seen digests "
                    "or publish times; they are looked up again when next needed)",
                    len(self._backlog),
                )

    # plumbing ---------------------------------------------------------------------------------

    async def _bounded(self, call: Awaitable[T], what: str) -> T:
        """`call` within the bound; a timeout or failure marks the outage and raises
        StateUnavailable."""
        try:
            return await asyncio.wait_for(call, self._timeout)
        except TimeoutError:
            self._outage(f"no answer within {self._timeout:g} s to {what}")
        except StateUnavailable as exc:
            self._outage(str(exc))
        raise StateUnavailable(f"the shared state did not {what} in time")

    def _outage(self, why: str) -> None:
        self._metrics.state_errors.labels(self._backend).inc()
        if self._down_since is None:
            self._down_since = time.monotonic()
        if self._outage_started is None:
            self._outage_started = self._down_since
            log.warning(
                "shared state (%s) is failing (%s): serving from what this worker knows, "
                "pinning the digests upstream declares and retrying writes in the background",
                self._backend,
                why,
            )
        self._kick()

    def _pin(self, ecosystem: str, key: str, digest: str) -> None:
        self._pins.put((ecosystem, key), digest)

    def _deferred_pin(self, ecosystem: str, key: str, digest: str) -> Callable[[], Awaitable[None]]:
        # Kept in memory meanwhile, so this worker verifies every later fetch against it.
        self._pin(ecosystem, key, digest)

        async def write() -> None:
            first = await self._state.remember_digest(ecosystem, key, digest)
            self._pin(ecosystem, key, first)
            if first != digest:
                log.error(
                    "%s %s: the digest pinned while shared state was down (%s) differs from "
                    "the one remembered first (%s); the file is refused from now on",
                    ecosystem,
                    key,
                    digest,
                    first,
                )
                if self._on_conflict is not None:
                    self._on_conflict(ecosystem, key, digest, first)

        return write

    def _queue(self, key: _WriteKey, write: Callable[[], Awaitable[None]]) -> None:
        self._backlog[key] = write
        self._backlog.move_to_end(key)
        self._metrics.child(self._metrics.state_deferred_writes, self._backend, "queued").inc()
        while len(self._backlog) > self._max_backlog:
            self._backlog.popitem(last=False)
            self._metrics.child(self._metrics.state_deferred_writes, self._backend, "dropped").inc()
        self._kick()

    def _kick(self) -> None:
        if self._retrier is None and not self._closed:
            self._retrier = asyncio.get_running_loop().create_task(
                self._retry(), name="shared-state retries"
            )

    async def _retry(self) -> None:
        """Write the backlog; while state fails, probe it with backoff (with the oldest
        queued write, so a state that reads but cannot write, a full disk, stays one outage;
        with a ping when nothing is queued) until it answers."""
        delay = RETRY_FIRST
        try:
            while not self._closed:
                if self._down_since is not None:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    if not await self._write_oldest(probe=True):
                        continue
                    self._down_since = None
                while self._backlog and self._down_since is None:
                    await self._write_oldest(probe=False)
                if not self._backlog and self._down_since is None:
                    self._recovered()
                    return
        finally:
            self._retrier = None

    async def _drain(self) -> None:
        """Write the backlog oldest first, each write bounded; stop at the first failure."""
        while self._backlog and self._down_since is None:
            await self._write_oldest(probe=False)

    async def _write_oldest(self, *, probe: bool) -> bool:
        """Write the oldest queued write (a ping when `probe` and nothing is queued); whether
        state answered."""
        if not self._backlog:
            if not probe:
                return True
            try:
                await self._bounded(self._state.ping(), "answer a ping")
            except StateUnavailable:
                return False
            return True
        key, write = next(iter(self._backlog.items()))
        try:
            await self._bounded(write(), "write")
        except StateUnavailable:
            return False
        except Exception:  # a write that can never succeed must not block the rest
            log.exception("a deferred shared-state write failed; dropped")
            outcome = "dropped"
        else:
            outcome = "landed"
        if self._backlog.get(key) is write:
            del self._backlog[key]
        self._metrics.child(self._metrics.state_deferred_writes, self._backend, outcome).inc()
        return True

    def _recovered(self) -> None:
        started, self._outage_started = self._outage_started, None
        if started is not None:
            log.warning(
                "shared state (%s) answers again after %.1f s; the queued writes landed",
                self._backend,
                time.monotonic() - started,
            )


def _pin_bytes(digest: str) -> int:
    return len(digest) + _PIN_BYTES
