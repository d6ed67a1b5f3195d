"""Single-flight: concurrent callers for one key share one piece of work (pure core: asyncio
only, no I/O, no aiohttp).

The rules, written once for every place that needs them (upstream requests, metadata loads,
revalidations and parses, rendered views, npm filters, Maven publish-time look-ups):
- the first caller for a key starts the work as a task; callers arriving while it runs join
  that task instead of starting another;
- each caller waits through `asyncio.shield`: a caller that leaves (its client went away, its
  request was cancelled) does not cancel the work for the others;
- the outcome, value or error, reaches every caller still waiting;
- the key is forgotten as soon as the work ends, so the next call runs it anew (keeping a
  result is the caller's cache's business, not this module's);
- the outcome is retrieved when the work ends, so an error nobody was left to see is not
  logged by asyncio as "Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """The work running now, one task per key. `name` names the tasks (for debugging);
    `on_join` is called each time a caller joins work already running (a metric)."""

    def __init__(self, name: str, *, on_join: Callable[[], object] | None = None) -> None:
        self.name = name
        self._on_join = on_join
        self._tasks: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, make: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """The outcome of the work for `key`: joined if running, else `make()` started now
        (`make` is called before this returns control to the loop, so it sees the state
        of the moment of the call). Cancelling this call leaves the work running for
        everyone else."""
        return await asyncio.shield(self.start(key, make))

    def start(self, key: K, make: Callable[[], Coroutine[Any, Any, V]]) -> asyncio.Task[V]:
        """The task doing the work for `key`: joined if running, else `make()` started now.
        For work nobody waits for (a background revalidation); `run` to wait for it."""
        task = self._tasks.get(key)
        if task is not None:
            if self._on_join is not None:
                self._on_join()
            return task
        task = asyncio.get_running_loop().create_task(make(), name=self.name)
        self._tasks[key] = task
        task.add_done_callback(functools.partial(self._finished, key))
        return task

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have left before it ended

    def tasks(self) -> list[asyncio.Task[V]]:
        """The work running now (to wait for it, e.g. when draining)."""
        return list(self._tasks.values())

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel the work running now and wait until it has ended; its outcomes (errors
        included) already went to its callers and are not raised here."""
        tasks = self.tasks()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
