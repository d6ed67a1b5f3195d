"""The shared byte budget: sizes add up across caches, the least recently used entry of any
cache goes first, and nothing larger than one entry's share is kept."""

from __future__ import annotations

import pytest

from mirror.budget import ENTRY_OVERHEAD, BudgetedLRU, ByteBudget, small_input_cache
from mirror.ecosystems.npm import names as npm_names
from mirror.ecosystems.pypi import names as pypi_names
from mirror.pathgate import path_problem


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


def test_small_input_cache_keeps_only_short_inputs_and_never_errors() -> None:
    calls: list[str] = []

    @small_input_cache(4, max_chars=10)
    def shout(text: str) -> str:
        calls.append(text)
        if text == "bad":
            raise ValueError(text)
        return text.upper()

    assert shout("short") == shout("short") == "SHORT"
    assert calls == ["short"]
    long_text = "x" * 11
    assert shout(long_text) == shout(long_text) == long_text.upper()
    assert calls.count(long_text) == 2
    for _ in range(2):
        with pytest.raises(ValueError, match="bad"):
            shout("bad")
    assert shout.cache_info().currsize == 1  # type: ignore[attr-defined]


def test_request_path_parsers_keep_no_entry_for_queries_or_long_paths() -> None:
    npm_names._parse_path.cache_clear()  # type: ignore[attr-defined]
    pypi_names._parse_path.cache_clear()  # type: ignore[attr-defined]
    for index in range(200):
        npm_names.parse_request_path(f"/npm/left-pad?cache-buster={index}")
        pypi_names.parse_request_path(f"/pypi/simple/requests/?x={index}")
    assert npm_names._parse_path.cache_info().currsize == 1  # type: ignore[attr-defined]
    assert pypi_names._parse_path.cache_info().currsize == 1  # type: ignore[attr-defined]
    path_problem.cache_clear()  # type: ignore[attr-defined]
    for index in range(50):
        assert path_problem(f"/npm/{'a' * 600}{index}") is None
    assert path_problem.cache_info().currsize == 0  # type: ignore[attr-defined]
