"""One memory budget in bytes shared by every in-memory cache of a worker (pure core).

Each cache is a `BudgetedLRU`: a mapping whose entries carry a size in bytes, estimated by
the cache's own `size_of` (raw lengths, never a walk over objects). The sizes of all the
caches of one `ByteBudget` add up against its limit; when a new entry pushes the total
over, the least recently used entries of ANY cache go first, so a burst of one kind (a
thousand packuments rendered) makes room by dropping the coldest entries wherever they are.
An entry larger than `max_share` of the limit is not kept at all: one giant document must
not flush everything else.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# What each entry costs beyond its payload (dict slots, the key, the accounting itself).
ENTRY_OVERHEAD = 256
DEFAULT_MAX_SHARE = 0.5


@runtime_checkable
class Weighed(Protocol):
    """A value that knows what it holds in memory (a parsed document that keeps slices of
    its raw bytes instead of decoded objects); caches charge that instead of an estimate."""

    def memory_bytes(self) -> int: ...


class ByteBudget:
    """The shared limit and the one least-recently-used order across its caches."""

    def __init__(self, limit: int, *, max_share: float = DEFAULT_MAX_SHARE) -> None:
        self.limit = max(1, limit)
        self.max_entry = max(1, int(self.limit * max_share))
        self.used = 0
        self._order: OrderedDict[tuple[int, Hashable], int] = OrderedDict()
        self._caches: dict[int, BudgetedLRU[Any, Any]] = {}

    def _register(self, cache: BudgetedLRU[Any, Any]) -> int:
        ident = len(self._caches)
        self._caches[ident] = cache
        return ident

    def _charge(self, ident: int, key: Hashable, size: int) -> None:
        slot = (ident, key)
        self.used += size - self._order.pop(slot, 0)
        self._order[slot] = size
        while self.used > self.limit and self._order:
            (owner, victim), victim_size = self._order.popitem(last=False)
            self.used -= victim_size
            self._caches[owner]._evicted(victim)

    def _touch(self, ident: int, key: Hashable) -> None:
        slot = (ident, key)
        if slot in self._order:
            self._order.move_to_end(slot)

    def _release(self, ident: int, key: Hashable) -> None:
        self.used -= self._order.pop((ident, key), 0)

    def usage(self) -> dict[str, int]:
        """Bytes held per cache name (for metrics and tests)."""
        totals: dict[str, int] = {cache.name: 0 for cache in self._caches.values()}
        for (owner, _), size in self._order.items():
            totals[self._caches[owner].name] += size
        return totals


class BudgetedLRU(Generic[K, V]):
    """A least-recently-used mapping whose entries are paid for from a `ByteBudget`."""

    def __init__(
        self,
        budget: ByteBudget,
        name: str,
        size_of: Callable[[V], int],
        *,
        max_entries: int | None = None,
    ) -> None:
        self.name = name
        self._budget = budget
        self._size_of = size_of
        self._max_entries = max_entries
        self._items: OrderedDict[K, V] = OrderedDict()
        self._ident = budget._register(self)

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            self._budget._touch(self._ident, key)
        return value

    def peek(self, key: K) -> V | None:
        """The value without making it recently used."""
        return self._items.get(key)

    def put(self, key: K, value: V) -> bool:
        """Keep `value` as the most recently used entry; False (and nothing kept under
        `key`) when it alone is larger than the budget lets one entry be."""
        size = self._size_of(value) + ENTRY_OVERHEAD
        if size > self._budget.max_entry:
            self.pop(key)
            return False
        self._items[key] = value
        self._items.move_to_end(key)
        self._budget._charge(self._ident, key, size)
        if self._max_entries is not None:
            while len(self._items) > self._max_entries:
                oldest = next(iter(self._items))
                self.pop(oldest)
        return key in self._items

    def pop(self, key: K) -> V | None:
        value = self._items.pop(key, None)
        self._budget._release(self._ident, key)
        return value

    def clear(self) -> None:
        for key in list(self._items):
            self.pop(key)

    def _evicted(self, key: K) -> None:
        self._items.pop(key, None)

    def bytes_held(self) -> int:
        return self._budget.usage()[self.name]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._items))


# Longest string argument a `small_input_cache` keeps: request paths of real clients are
# far shorter; longer ones (a client may send up to the request-line limit) are not kept.
SMALL_INPUT_CHARS = 512

F = TypeVar("F", bound=Callable[..., Any])


def small_input_cache(maxsize: int, *, max_chars: int = SMALL_INPUT_CHARS) -> Callable[[F], F]:
    """`functools.lru_cache(maxsize)` for a pure function of strings that keeps only calls
    whose string arguments total at most `max_chars` (longer calls are computed every time):
    the cache then holds at most `maxsize` small entries whatever clients send. Exceptions
    are never cached (as with lru_cache), so invalid input creates no entry either."""

    def decorate(function: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(function)

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            chars = sum(len(value) for value in (*args, *kwargs.values()) if isinstance(value, str))
            if chars <= max_chars:
                return cached(*args, **kwargs)
            return function(*args, **kwargs)

        call.cache_info = cached.cache_info  # type: ignore[attr-defined]
        call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate
