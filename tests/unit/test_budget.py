"""The shared byte budget: sizes add up across caches, the least recently used entry of any
cache goes first, and nothing larger than one entry's share is kept."""

from __future__ import annotations

from mirror.budget import ENTRY_OVERHEAD, BudgetedLRU, ByteBudget


def _lru(budget: ByteBudget, name: str) -> BudgetedLRU[str, bytes]:
    return BudgetedLRU(budget, name, len)


def test_the_least_recently_used_entry_of_any_cache_goes_first() -> None:
    budget = ByteBudget(3 * (100 + ENTRY_OVERHEAD), max_share=1.0)
    documents, views = _lru(budget, "documents"), _lru(budget, "views")
    documents.put("a", b"x" * 100)
    views.put("b", b"x" * 100)
    documents.put("c", b"x" * 100)
    assert documents.get("a") == b"x" * 100  # now "b" is the coldest
    views.put("d", b"x" * 100)
    assert "b" not in views
    assert set(documents) == {"a", "c"}
    assert set(views) == {"d"}
    assert budget.used == 3 * (100 + ENTRY_OVERHEAD) <= budget.limit
    assert budget.usage() == {
        "documents": 2 * (100 + ENTRY_OVERHEAD),
        "views": 100 + ENTRY_OVERHEAD,
    }


def test_usage_never_exceeds_the_limit_and_follows_replacements_and_removals() -> None:
    budget = ByteBudget(10_000)
    cache = _lru(budget, "c")
    for index in range(1_000):
        cache.put(f"k{index % 37}", b"y" * (index % 500))
        assert budget.used <= budget.limit
        assert budget.used == sum(len(cache.peek(key) or b"") + ENTRY_OVERHEAD for key in cache)
    for key in list(cache):
        cache.pop(key)
    assert budget.used == 0
    assert len(cache) == 0


def test_an_entry_larger_than_its_share_is_not_kept_and_evicts_nothing() -> None:
    budget = ByteBudget(1_000, max_share=0.5)
    cache = _lru(budget, "c")
    assert cache.put("small", b"s" * 100)
    assert not cache.put("huge", b"h" * 600)
    assert "huge" not in cache
    assert "small" in cache
    # Replacing a kept entry with one too large drops the old value rather than keep stale.
    assert not cache.put("small", b"h" * 600)
    assert "small" not in cache
    assert budget.used == 0


def test_a_count_limit_still_applies_within_the_budget() -> None:
    budget = ByteBudget(1_000_000)
    cache = BudgetedLRU(budget, "c", len, max_entries=3)
    for index in range(5):
        cache.put(index, b"z")
    assert list(cache) == [2, 3, 4]
    assert budget.used == 3 * (1 + ENTRY_OVERHEAD)
