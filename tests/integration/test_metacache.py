"""`mirror.metacache` against a real FakeUpstream on 127.0.0.1, real files and a FixedClock."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from pytest_aiohttp import AiohttpServer

from mirror import errors
from mirror.budget import ByteBudget
from mirror.clock import FixedClock
from mirror.config import UpstreamConfig
from mirror.metacache import (
    IMMUTABLE_NEGATIVE_TTL,
    LARGE_PARSES_AT_ONCE,
    PARSE_IN_THREAD_BYTES,
    REFRESH_AHEAD_FRACTION,
    DocumentChange,
    MetaCache,
    RenderedCache,
    Watcher,
)
from mirror.metrics import Metrics
from mirror.model import Rendered
from mirror.upstream import Upstream, UpstreamScope
from tests.fakes.upstream import FakeUpstream

START = datetime(2025, 4, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=5)
STALE_MAX = timedelta(days=7)
REFRESH_INTERVAL = timedelta(seconds=30)
NEGATIVE_TTL = timedelta(minutes=1)
CONFIG = UpstreamConfig(
    connect_timeout=timedelta(seconds=5),
    read_timeout=timedelta(seconds=5),
    retries=0,
    backoff=timedelta(0),
)
DOC = b'{"name": "left-pad", "versions": ["1.0.0"]}'
DOC2 = b'{"name": "left-pad", "versions": ["1.0.0", "1.1.0"]}'


class CountingParser:
    """`orjson.loads` that counts its calls and can be told to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.threads: list[str] = []
        self.broken = False

    def __call__(self, raw: bytes) -> object:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        if self.broken:
            raise ValueError("not the document we expected")
        return orjson.loads(raw)


@dataclass(frozen=True)
class KeyedParser:
    """Like an ecosystem's parser object: a new instance per request, equal by value."""

    name: str
    log: list[str]

    def __call__(self, raw: bytes) -> object:
        self.log.append(self.name)
        return orjson.loads(raw)


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeUpstream:
    upstream = FakeUpstream()
    await upstream.start(aiohttp_server)
    upstream.add("/left-pad", DOC, content_type="application/json", etag='"v1"', compress=True)
    return upstream


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
async def upstream(fake: FakeUpstream, metrics: Metrics) -> AsyncIterator[Upstream]:
    client = Upstream(CONFIG, scopes=[UpstreamScope.of("npm", fake.url("/"))], metrics=metrics)
    await client.start()
    yield client
    await client.close()


CacheFactory = Callable[..., MetaCache]  # (*, max_entries=2048, max_absent=4096) -> MetaCache


@pytest.fixture
async def make_cache(
    upstream: Upstream, clock: FixedClock, metrics: Metrics, tmp_path: Path
) -> AsyncIterator[CacheFactory]:
    """Build MetaCaches on one directory (like sibling workers or a restart); all closed."""
    caches: list[MetaCache] = []

    def make(
        *,
        max_entries: int = 2048,
        max_absent: int = 4096,
        budget: ByteBudget | None = None,
        watcher: Watcher | None = None,
    ) -> MetaCache:
        cache = MetaCache(
            upstream,
            directory=tmp_path / "metadata",
            ttl=TTL,
            stale_max=STALE_MAX,
            clock=clock,
            metrics=metrics,
            max_entries=max_entries,
            refresh_interval=REFRESH_INTERVAL,
            negative_ttl=NEGATIVE_TTL,
            max_absent=max_absent,
            budget=budget,
            watcher=watcher,
        )
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        await cache.close()


@pytest.fixture
def cache(make_cache: CacheFactory) -> MetaCache:
    return make_cache()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# fresh, stale-while-revalidate, refresh -------------------------------------------------


async def test_first_get_fetches_and_parses_once(cache: MetaCache, fake: FakeUpstream) -> None:
    parse = CountingParser()
    document = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    assert document.parsed == {"name": "left-pad", "versions": ["1.0.0"]}
    assert document.raw == DOC
    assert document.version == hashlib.sha256(DOC).hexdigest()
    assert (document.stale, document.etag, document.fetched_at) == (False, '"v1"', START)
    assert parse.calls == 1


async def test_fresh_hit_makes_no_request(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    first = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    clock.advance(TTL - timedelta(seconds=1))
    again = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    assert again.parsed is first.parsed
    assert again.stale is False
    assert fake.count("/left-pad") == 1
    assert parse.calls == 1


async def test_after_ttl_stale_is_served_and_a_304_keeps_the_parsed_value(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock, metrics: Metrics
) -> None:
    parse = CountingParser()
    first = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    clock.advance(TTL)
    stale = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    assert stale.stale is True
    assert stale.parsed is first.parsed
    # Concurrent stale hits do not start more revalidations.
    await asyncio.gather(
        *(cache.get(fake.url("/left-pad"), parse, ecosystem="npm") for _ in range(10))
    )
    await cache.drain()
    assert fake.count("/left-pad") == 2
    assert sample(metrics, "mirror_singleflight_joins_total", kind="document") == 0
    assert fake.last("/left-pad").headers["If-None-Match"] == '"v1"'

    revalidated = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    assert revalidated.stale is False
    assert revalidated.fetched_at == START + TTL
    assert revalidated.parsed is first.parsed
    assert parse.calls == 1
    assert fake.count("/left-pad") == 2
    assert sample(metrics, "mirror_stale_serves_total", cause="revalidating") >= 1


async def test_a_changed_document_is_parsed_again(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    first = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.add("/left-pad", DOC2, content_type="application/json", etag='"v2"')
    clock.advance(TTL)
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    await cache.drain()
    changed = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    assert changed.parsed == orjson.loads(DOC2)
    assert changed.version != first.version
    assert changed.etag == '"v2"'
    assert parse.calls == 2


async def test_same_bytes_under_new_validators_are_not_parsed_again(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    first = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.add("/left-pad", DOC, content_type="application/json", etag='"v1-regenerated"')
    clock.advance(REFRESH_INTERVAL)
    again = await cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm")
    assert fake.last("/left-pad").headers["If-None-Match"] == '"v1"'
    assert (again.etag, again.version) == ('"v1-regenerated"', first.version)
    assert again.parsed is first.parsed
    assert parse.calls == 1


async def test_equal_parser_objects_share_the_parsed_value(
    cache: MetaCache, fake: FakeUpstream
) -> None:
    calls: list[str] = []
    first = await cache.get(fake.url("/left-pad"), KeyedParser("left-pad", calls), ecosystem="npm")
    again = await cache.get(fake.url("/left-pad"), KeyedParser("left-pad", calls), ecosystem="npm")
    assert again.parsed is first.parsed
    other = await cache.get(fake.url("/left-pad"), KeyedParser("other", calls), ecosystem="npm")
    assert other.parsed is not first.parsed
    assert calls == ["left-pad", "other"]
    assert fake.count("/left-pad") == 1


async def test_refresh_forces_one_conditional_request(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.add("/left-pad", DOC2, content_type="application/json", etag='"v2"')
    clock.advance(REFRESH_INTERVAL)
    refreshed = await cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm")
    assert refreshed.parsed == orjson.loads(DOC2)
    assert refreshed.stale is False
    assert fake.count("/left-pad") == 2
    assert fake.last("/left-pad").headers["If-None-Match"] == '"v1"'


async def test_concurrent_cold_gets_share_one_request_and_one_parse(
    cache: MetaCache, fake: FakeUpstream
) -> None:
    parse = CountingParser()
    fake.hold("/left-pad")
    tasks = [
        asyncio.create_task(cache.get(fake.url("/left-pad"), parse, ecosystem="npm"))
        for _ in range(20)
    ]
    await fake.wait_for("/left-pad")
    fake.release("/left-pad")
    documents = await asyncio.gather(*tasks)
    assert fake.count("/left-pad") == 1
    assert parse.calls == 1
    assert all(document.parsed is documents[0].parsed for document in documents)


async def test_accept_is_part_of_the_key(cache: MetaCache, fake: FakeUpstream) -> None:
    parse = CountingParser()
    await cache.get(fake.url("/left-pad"), parse, accept="application/json", ecosystem="npm")
    await cache.get(
        fake.url("/left-pad"), parse, accept="application/vnd.npm.install-v1+json", ecosystem="npm"
    )
    await cache.get(fake.url("/left-pad"), parse, accept="application/json", ecosystem="npm")
    assert fake.count("/left-pad") == 2
    accepts = [request.headers["Accept"] for request in fake.requests]
    assert accepts == ["application/json", "application/vnd.npm.install-v1+json"]


async def test_large_bodies_are_parsed_off_the_event_loop(
    cache: MetaCache, fake: FakeUpstream
) -> None:
    big = orjson.dumps({"versions": ["x" * 100] * 20_000})
    assert len(big) > 1024 * 1024
    fake.add("/big", big, content_type="application/json")
    parse = CountingParser()
    await cache.get(fake.url("/big"), parse, ecosystem="npm")
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    assert parse.threads[0] != threading.main_thread().name
    assert parse.threads[1] == threading.main_thread().name


# failures -------------------------------------------------------------------------------


async def test_stale_if_error_within_stale_max_then_raises(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock, metrics: Metrics
) -> None:
    parse = CountingParser()
    first = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.down()
    clock.advance(TTL)
    # Background revalidation fails; the copy is still served.
    assert (await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")).stale is True
    await cache.drain()
    # A foreground refresh (once the failure is older than the refresh interval) fails too:
    # stale-if-error.
    clock.advance(REFRESH_INTERVAL)
    served = await cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm")
    assert (served.stale, served.parsed) == (True, first.parsed)
    assert sample(metrics, "mirror_stale_serves_total", cause="upstream-error") == 1

    clock.set(START + STALE_MAX)
    with pytest.raises(errors.UpstreamUnavailable):
        await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")

    fake.up()
    recovered = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    assert (recovered.stale, recovered.fetched_at) == (False, START + STALE_MAX)


async def test_a_failed_background_revalidation_backs_off(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.down()
    clock.advance(TTL)
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    await cache.drain()
    assert fake.count("/left-pad") == 2
    for _ in range(5):
        assert (await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")).stale is True
        await cache.drain()
    assert fake.count("/left-pad") == 2
    clock.advance(timedelta(seconds=30))
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    await cache.drain()
    assert fake.count("/left-pad") == 3


async def test_no_copy_and_upstream_down_raises(cache: MetaCache, fake: FakeUpstream) -> None:
    fake.down()
    with pytest.raises(errors.UpstreamUnavailable):
        await cache.get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")


async def test_not_found_is_not_masked_and_drops_the_copy(
    cache: MetaCache, make_cache: CacheFactory, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.remove("/left-pad")
    clock.advance(REFRESH_INTERVAL)
    with pytest.raises(errors.UpstreamNotFound):
        await cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm")
    fake.down()
    clock.advance(NEGATIVE_TTL)  # past the remembered 404: the copy is gone, not just hidden
    with pytest.raises(errors.UpstreamUnavailable):
        await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    with pytest.raises(errors.UpstreamUnavailable):
        await make_cache().get(fake.url("/left-pad"), parse, ecosystem="npm")


async def test_parse_failure_is_not_cached(cache: MetaCache, fake: FakeUpstream) -> None:
    parse = CountingParser()
    parse.broken = True
    with pytest.raises(errors.BadUpstreamDocument, match="could not parse"):
        await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    parse.broken = False
    document = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    assert document.parsed == orjson.loads(DOC)
    assert fake.count("/left-pad") == 2


async def test_a_bad_new_version_keeps_serving_the_good_copy(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    good = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.add("/left-pad", b"<html>maintenance</html>", etag='"bad"')
    clock.advance(REFRESH_INTERVAL)
    served = await cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm")
    assert (served.stale, served.parsed, served.version) == (True, good.parsed, good.version)
    clock.advance(STALE_MAX)
    with pytest.raises(errors.BadUpstreamDocument):
        await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")


# forced refreshes and unknown names: clients do not choose how often upstream is asked --


async def test_forced_refreshes_reach_upstream_once_per_interval(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.add("/left-pad", DOC2, content_type="application/json", etag='"v2"')
    # Within the interval of the first fetch: the copy, no request.
    for _ in range(50):
        served = await cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm")
        assert (served.parsed, served.stale) == (orjson.loads(DOC), False)
    assert fake.count("/left-pad") == 1
    # After it: one forced refresh goes, and the 49 after it get its answer.
    clock.advance(REFRESH_INTERVAL)
    for _ in range(50):
        served = await cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm")
        assert served.parsed == orjson.loads(DOC2)
    assert fake.count("/left-pad") == 2
    clock.advance(REFRESH_INTERVAL - timedelta(seconds=1))
    await cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm")
    assert fake.count("/left-pad") == 2
    clock.advance(timedelta(seconds=1))
    await cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm")
    assert fake.count("/left-pad") == 3


async def test_concurrent_forced_refreshes_share_one_request(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.add("/left-pad", DOC2, content_type="application/json", etag='"v2"')
    clock.advance(REFRESH_INTERVAL)
    fake.hold("/left-pad")
    tasks = [
        asyncio.create_task(cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm"))
        for _ in range(20)
    ]
    await fake.wait_for("/left-pad", 2)
    fake.release("/left-pad")
    documents = await asyncio.gather(*tasks)
    assert all(document.parsed == orjson.loads(DOC2) for document in documents)
    assert fake.count("/left-pad") == 2


async def test_a_failed_refresh_counts_against_the_interval(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    first = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.down()
    clock.advance(REFRESH_INTERVAL)
    for _ in range(50):
        served = await cache.get(fake.url("/left-pad"), parse, refresh=True, ecosystem="npm")
        assert served.parsed is first.parsed
    assert fake.count("/left-pad") == 2


async def test_the_interval_holds_across_instances_through_the_disk_copy(
    cache: MetaCache, make_cache: CacheFactory, fake: FakeUpstream, clock: FixedClock
) -> None:
    await cache.get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")
    clock.advance(REFRESH_INTERVAL - timedelta(seconds=1))
    sibling = make_cache()
    await sibling.get(fake.url("/left-pad"), CountingParser(), refresh=True, ecosystem="npm")
    assert fake.count("/left-pad") == 1


async def test_an_unknown_document_is_asked_once_per_negative_ttl(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock, metrics: Metrics
) -> None:
    url = fake.url("/no-such-package")
    messages = set()
    for attempt in range(50):
        with pytest.raises(errors.UpstreamNotFound) as raised:
            await cache.get(url, CountingParser(), refresh=attempt % 2 == 1, ecosystem="npm")
        assert raised.value.status == 404
        messages.add((raised.value.message, raised.value.data["upstream_status"]))
    # The remembered answer is the first one, word for word.
    assert messages == {("the npm upstream has no no-such-package (HTTP 404)", 404)}
    assert fake.count("/no-such-package") == 1
    assert sample(metrics, "mirror_cache_hits_total", ecosystem="npm", kind="metadata") == 49

    clock.advance(NEGATIVE_TTL - timedelta(seconds=1))
    with pytest.raises(errors.UpstreamNotFound):
        await cache.get(url, CountingParser(), refresh=True, ecosystem="npm")
    assert fake.count("/no-such-package") == 1
    # Published meanwhile: visible once the 404 is forgotten.
    fake.add("/no-such-package", DOC, content_type="application/json")
    clock.advance(timedelta(seconds=1))
    document = await cache.get(url, CountingParser(), ecosystem="npm")
    assert document.raw == DOC
    assert fake.count("/no-such-package") == 2


async def test_concurrent_requests_for_an_unknown_document_share_one_request(
    cache: MetaCache, fake: FakeUpstream
) -> None:
    fake.hold("/no-such-package")
    tasks = [
        asyncio.create_task(
            cache.get(fake.url("/no-such-package"), CountingParser(), ecosystem="npm")
        )
        for _ in range(20)
    ]
    await fake.wait_for("/no-such-package")
    fake.release("/no-such-package")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, errors.UpstreamNotFound) for result in results)
    assert fake.count("/no-such-package") == 1


async def test_an_unpublished_document_is_remembered_as_absent(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    await cache.get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")
    fake.remove("/left-pad")
    clock.advance(TTL)
    await cache.get(
        fake.url("/left-pad"), CountingParser(), ecosystem="npm"
    )  # stale; revalidation finds 404
    await cache.drain()
    assert fake.count("/left-pad") == 2
    for _ in range(10):
        with pytest.raises(errors.UpstreamNotFound):
            await cache.get(fake.url("/left-pad"), CountingParser(), refresh=True, ecosystem="npm")
    assert fake.count("/left-pad") == 2


async def test_remembered_absences_are_a_bounded_lru(
    make_cache: CacheFactory, fake: FakeUpstream
) -> None:
    cache = make_cache(max_absent=2)

    async def ask(name: str) -> None:
        with pytest.raises(errors.UpstreamNotFound):
            await cache.get(fake.url(f"/{name}"), CountingParser(), ecosystem="npm")

    for name in ("a", "b", "a", "c"):  # "a" asked again, so "b" is the oldest
        await ask(name)
    assert (fake.count("/a"), fake.count("/b"), fake.count("/c")) == (1, 1, 1)
    await ask("b")  # forgotten: asked again (and now remembered, evicting "a")
    await ask("c")
    assert (fake.count("/b"), fake.count("/c")) == (2, 1)


async def test_direct_callers_share_the_remembered_absences(
    cache: MetaCache, fake: FakeUpstream, upstream: Upstream, clock: FixedClock
) -> None:
    url = fake.url("/lib-1.0.pom")
    cache.raise_if_absent(url, ecosystem="npm")  # nothing remembered: no error
    with pytest.raises(errors.UpstreamNotFound) as raised:
        await upstream.head(url, ecosystem="npm")
    cache.note_absent(url, raised.value)
    with pytest.raises(errors.UpstreamNotFound, match="HTTP 404"):
        cache.raise_if_absent(url, ecosystem="npm")
    with pytest.raises(errors.UpstreamNotFound):
        await cache.get(url, CountingParser(), ecosystem="npm")
    assert fake.count("/lib-1.0.pom") == 1
    clock.advance(NEGATIVE_TTL)
    cache.raise_if_absent(url, ecosystem="npm")


# persistence ----------------------------------------------------------------------------


async def test_a_new_instance_serves_fresh_copies_from_disk_without_a_request(
    cache: MetaCache, make_cache: CacheFactory, fake: FakeUpstream
) -> None:
    await cache.get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")
    sibling_parse = CountingParser()
    document = await make_cache().get(fake.url("/left-pad"), sibling_parse, ecosystem="npm")
    assert (document.raw, document.etag, document.stale) == (DOC, '"v1"', False)
    assert sibling_parse.calls == 1
    assert fake.count("/left-pad") == 1


async def test_a_restarted_instance_serves_stale_if_error_from_disk(
    cache: MetaCache, make_cache: CacheFactory, fake: FakeUpstream, clock: FixedClock
) -> None:
    await cache.get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")
    await cache.close()
    fake.down()
    clock.advance(timedelta(days=2))
    restarted = make_cache()
    document = await restarted.get(
        fake.url("/left-pad"), CountingParser(), refresh=True, ecosystem="npm"
    )
    assert (document.raw, document.stale, document.fetched_at) == (DOC, True, START)

    clock.advance(STALE_MAX)
    with pytest.raises(errors.UpstreamUnavailable):
        await make_cache().get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")


async def test_a_304_is_persisted_so_restarts_see_the_new_time(
    cache: MetaCache, make_cache: CacheFactory, fake: FakeUpstream, clock: FixedClock
) -> None:
    await cache.get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")
    clock.advance(timedelta(days=6))
    await cache.get(fake.url("/left-pad"), CountingParser(), refresh=True, ecosystem="npm")
    assert fake.count("/left-pad") == 2
    clock.advance(timedelta(days=3))  # 9 days after the 200, 3 after the 304
    fake.down()
    document = await make_cache().get(
        fake.url("/left-pad"), CountingParser(), refresh=True, ecosystem="npm"
    )
    assert (document.stale, document.fetched_at) == (True, START + timedelta(days=6))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda meta, body: body.write_bytes(b"flipped"), id="body-changed"),
        pytest.param(lambda meta, body: meta.write_bytes(b"{not json"), id="meta-garbage"),
        pytest.param(lambda meta, body: body.unlink(), id="body-missing"),
        pytest.param(
            lambda meta, body: meta.write_bytes(orjson.dumps({"url": 1})), id="meta-incomplete"
        ),
    ],
)
async def test_a_corrupt_copy_on_disk_is_ignored_and_removed(
    cache: MetaCache,
    make_cache: CacheFactory,
    fake: FakeUpstream,
    tmp_path: Path,
    damage: Callable[[Path, Path], object],
) -> None:
    await cache.get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")
    (meta,) = (tmp_path / "metadata").glob("*.meta")
    body = meta.with_suffix(".body")
    damage(meta, body)
    fake.down()
    with pytest.raises(errors.UpstreamUnavailable):
        await make_cache().get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")
    assert not meta.exists()
    assert not body.exists()
    fake.up()
    document = await make_cache().get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")
    assert document.raw == DOC
    assert meta.exists()
    assert body.read_bytes() == DOC


async def test_memory_is_bounded_and_evicted_documents_reload_from_disk(
    make_cache: CacheFactory, fake: FakeUpstream
) -> None:
    cache = make_cache(max_entries=2)
    for name in ("a", "b", "c"):
        fake.add(f"/{name}", name.encode(), etag=f'"{name}"')
        await cache.get(fake.url(f"/{name}"), bytes.decode, ecosystem="npm")
    assert len(cache) == 2
    document = await cache.get(fake.url("/a"), bytes.decode, ecosystem="npm")
    assert document.parsed == "a"
    assert len(cache) == 2
    assert fake.count("/a") == 1


# RenderedCache ----------------------------------------------------------------------------


def rendered(body: bytes, valid_until: datetime | None = None) -> Rendered:
    return Rendered(body=body, content_type="application/json", etag='"e"', valid_until=valid_until)


def test_rendered_view_expires_at_valid_until() -> None:
    views = RenderedCache()
    boundary = START + timedelta(hours=3)
    views.put("left-pad", rendered(b"1", valid_until=boundary))
    views.put("forever", rendered(b"2"))
    hit = views.get("left-pad", boundary - timedelta(microseconds=1))
    assert hit is not None
    assert hit.body == b"1"
    assert views.get("left-pad", boundary) is None
    assert views.get("left-pad", START) is None  # expired views are dropped, not kept
    forever = views.get("forever", START + timedelta(days=3650))
    assert forever is not None
    assert forever.body == b"2"
    assert views.get("absent", START) is None


def test_rendered_cache_is_a_bounded_lru() -> None:
    views = RenderedCache(max_entries=2)
    views.put("a", rendered(b"a"))
    views.put("b", rendered(b"b"))
    assert views.get("a", START) is not None  # a is now most recently used
    views.put("c", rendered(b"c"))
    assert views.get("b", START) is None
    assert views.get("a", START) is not None
    assert views.get("c", START) is not None
    assert len(views) == 2
    views.clear()
    assert views.get("a", START) is None
    assert len(views) == 0


async def test_concurrent_misses_share_one_render_and_failures_are_not_kept() -> None:
    views = RenderedCache()
    now = datetime(2026, 11, 22, tzinfo=UTC)
    calls = 0
    gate = asyncio.Event()

    async def render() -> Rendered:
        nonlocal calls
        calls += 1
        await gate.wait()
        return Rendered(body=b"view", content_type="application/json", etag='"v"')

    waiting = [asyncio.create_task(views.get_or_render("k", now, render)) for _ in range(20)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # a client leaving does not cancel the render for the others
    gate.set()
    results = await asyncio.gather(*waiting[1:])
    assert calls == 1
    assert {result.body for result in results} == {b"view"}
    assert views.get("k", now) is not None

    async def broken() -> Rendered:
        raise errors.BadUpstreamDocument("bad document")

    with pytest.raises(errors.BadUpstreamDocument):
        await views.get_or_render("other", now, broken)
    assert views.get("other", now) is None


async def test_prune_drops_copies_too_old_to_serve(
    make_cache: CacheFactory, fake: FakeUpstream, clock: FixedClock, tmp_path: Path
) -> None:
    fake.add("/other", DOC2, content_type="application/json")
    first = make_cache()
    await first.get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")
    await first.get(fake.url("/other"), CountingParser(), ecosystem="npm")
    directory = tmp_path / "metadata"
    assert len(list(directory.glob("*.meta"))) == 2
    # /left-pad's copy was last written longer ago than stale_max (by the clock).
    old = (clock.now() - STALE_MAX - timedelta(hours=1)).timestamp()
    meta = next(
        path
        for path in directory.glob("*.meta")
        if orjson.loads(path.read_bytes())["url"] == fake.url("/left-pad")
    )
    aged = (meta, meta.with_suffix(".body"))
    for path in aged:
        os.utime(path, (old, old))
    assert await first.prune() == 1
    assert not any(path.exists() for path in aged)
    assert len(list(directory.glob("*.meta"))) == 1
    # A fresh cache (a restart) fetches the pruned document again, the kept one it does not.
    restarted = make_cache()
    await restarted.get(fake.url("/left-pad"), CountingParser(), ecosystem="npm")
    await restarted.get(fake.url("/other"), CountingParser(), ecosystem="npm")
    assert fake.count("/left-pad") == 2
    assert fake.count("/other") == 1


@dataclass(frozen=True)
class LoggingParser:
    """An ecosystem-like parser: equal and hashable by name, logging each parse."""

    name: str
    log: list[str] = field(compare=False, hash=False)

    def __call__(self, raw: bytes) -> object:
        self.log.append(self.name)
        return orjson.loads(raw)


async def test_a_parsed_form_too_big_for_the_budget_is_dropped_and_parsed_once_at_a_time(
    make_cache: CacheFactory, fake: FakeUpstream
) -> None:
    big = orjson.dumps({"name": "big", "versions": [f"1.0.{index}" for index in range(2000)]})
    fake.add("/big", big, content_type="application/json")
    # Room for the raw bytes (one entry may take half), not for the parsed form (5x raw).
    budget = ByteBudget(4 * len(big))
    cache = make_cache(budget=budget)
    calls: list[str] = []
    url = fake.url("/big")
    first = await cache.get(url, LoggingParser("big", calls), ecosystem="npm")
    assert first.parsed == orjson.loads(big)
    assert len(big) <= cache.memory_bytes() < 2 * len(big)  # the raw bytes only
    calls.clear()
    docs = await asyncio.gather(
        *(cache.get(url, LoggingParser("big", calls), ecosystem="npm") for _ in range(20))
    )
    assert all(doc.parsed == orjson.loads(big) for doc in docs)
    assert calls == ["big"]  # twenty waiting requests, one parse
    assert cache.memory_bytes() < 2 * len(big)
    # The bytes and version need no parse at all.
    current = await cache.current(url, LoggingParser("big", calls), ecosystem="npm")
    assert current.version == first.version
    assert current.parsed is None
    assert calls == ["big"]
    assert fake.count("/big") == 1


async def test_large_documents_are_parsed_two_at_a_time(
    cache: MetaCache, fake: FakeUpstream
) -> None:
    """A parsed large document costs far more memory than its bytes: ten concurrent misses
    of large documents parse LARGE_PARSES_AT_ONCE at a time, not all at once."""
    big = b'{"x": "' + b"a" * (PARSE_IN_THREAD_BYTES + 1) + b'"}'
    for index in range(6):
        fake.add(f"/big-{index}", big, content_type="application/json")
    running = peak = 0
    lock = threading.Lock()

    def slow_parse(raw: bytes) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return len(raw)

    documents = await asyncio.gather(
        *(cache.get(fake.url(f"/big-{index}"), slow_parse, ecosystem="npm") for index in range(6))
    )
    assert [document.parsed for document in documents] == [len(big)] * 6
    assert peak == LARGE_PARSES_AT_ONCE


# refresh-ahead, upstreams without validators, immutable documents ------------------------

AHEAD = TTL * REFRESH_AHEAD_FRACTION


async def test_a_copy_asked_for_near_its_ttl_is_revalidated_ahead_and_never_served_stale(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock, metrics: Metrics
) -> None:
    parse = CountingParser()
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    clock.advance(AHEAD - timedelta(seconds=1))
    assert (await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")).stale is False
    await cache.drain()
    assert fake.count("/left-pad") == 1  # not yet: younger than the refresh-ahead point
    fake.hold("/left-pad")
    clock.advance(timedelta(seconds=1))
    # Past it: answered at once from the copy, fresh, while one revalidation waits upstream.
    async with asyncio.timeout(2):
        for _ in range(5):
            ahead = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
            assert (ahead.stale, ahead.fetched_at) == (False, START)
    await fake.wait_for("/left-pad", 2)
    fake.release("/left-pad")
    await cache.drain()
    assert fake.count("/left-pad") == 2
    assert fake.last("/left-pad").headers["If-None-Match"] == '"v1"'
    # Just past the first copy's TTL: the refreshed copy is fresh, nothing goes upstream.
    clock.advance(TTL - AHEAD + timedelta(seconds=1))
    after = await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    await cache.drain()
    assert (after.stale, after.fetched_at) == (False, START + AHEAD)
    assert fake.count("/left-pad") == 2
    assert sample(metrics, "mirror_stale_serves_total", cause="revalidating") == 0
    assert parse.calls == 1


async def test_a_failed_refresh_ahead_backs_off_and_keeps_serving_fresh(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    parse = CountingParser()
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    fake.down()
    clock.advance(AHEAD)
    for _ in range(5):
        assert (await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")).stale is False
        await cache.drain()
    assert fake.count("/left-pad") == 2  # one attempt, then the failure back-off
    fake.up()
    clock.advance(timedelta(seconds=30))  # min(ttl, FAILURE_BACKOFF)
    await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")
    await cache.drain()
    assert fake.count("/left-pad") == 3
    assert (await cache.get(fake.url("/left-pad"), parse, ecosystem="npm")).fetched_at == (
        clock.now()
    )


async def test_without_validators_an_unchanged_body_keeps_its_version_and_parsed_value(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    fake.add("/bare", DOC, content_type="application/json")  # no ETag, no Last-Modified
    parse = CountingParser()
    first = await cache.get(fake.url("/bare"), parse, ecosystem="npm")
    assert (first.etag, first.last_modified) == (None, None)
    for round_ in range(1, 5):
        clock.advance(TTL)
        served = await cache.get(fake.url("/bare"), parse, ecosystem="npm")
        await cache.drain()
        assert served.parsed is first.parsed
        assert served.version == first.version
        request = fake.last("/bare")
        assert "If-None-Match" not in request.headers
        assert "If-Modified-Since" not in request.headers
        assert fake.count("/bare") == 1 + round_  # one full GET per TTL, in the background
    assert parse.calls == 1
    # A changed body is a new version, parsed once.
    fake.add("/bare", DOC2, content_type="application/json")
    clock.advance(TTL)
    await cache.get(fake.url("/bare"), parse, ecosystem="npm")
    await cache.drain()
    changed = await cache.get(fake.url("/bare"), parse, ecosystem="npm")
    assert changed.version == hashlib.sha256(DOC2).hexdigest()
    assert parse.calls == 2


async def test_an_immutable_document_is_never_revalidated(
    cache: MetaCache, make_cache: CacheFactory, fake: FakeUpstream, clock: FixedClock
) -> None:
    fake.add("/lib.jar.sha1", b"a" * 40, content_type="text/plain", etag='"s1"')
    url = fake.url("/lib.jar.sha1")
    first = await cache.get(url, bytes, ecosystem="npm", immutable=True)
    for step in (TTL, AHEAD, NEGATIVE_TTL, STALE_MAX, STALE_MAX):
        clock.advance(step)
        for refresh in (False, True):
            held = await cache.get(url, bytes, ecosystem="npm", immutable=True, refresh=refresh)
            assert (held.raw, held.stale, held.fetched_at) == (b"a" * 40, False, START)
        await cache.drain()
    # From disk too (a sibling worker, a restart), past stale_max: no request.
    restarted = make_cache()
    assert (await restarted.current(url, bytes, ecosystem="npm", immutable=True)).raw == first.raw
    await restarted.drain()
    assert fake.count("/lib.jar.sha1") == 1
    # Only an urgent refresh asks again.
    await cache.get(url, bytes, ecosystem="npm", immutable=True, refresh="urgent")
    assert fake.count("/lib.jar.sha1") == 2


async def test_an_absent_immutable_document_is_remembered_for_a_day(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    url = fake.url("/lib.jar.sha256")
    for _ in range(3):
        with pytest.raises(errors.UpstreamNotFound):
            await cache.get(url, bytes, ecosystem="npm", immutable=True)
        clock.advance(NEGATIVE_TTL * 5)
    assert fake.count("/lib.jar.sha256") == 1
    clock.advance(IMMUTABLE_NEGATIVE_TTL - NEGATIVE_TTL * 15)
    with pytest.raises(errors.UpstreamNotFound):
        await cache.get(url, bytes, ecosystem="npm", immutable=True)
    assert fake.count("/lib.jar.sha256") == 2
    # A document that is not immutable keeps `negative_ttl`.
    with pytest.raises(errors.UpstreamNotFound):
        await cache.get(fake.url("/maven-metadata.xml"), bytes, ecosystem="npm")
    clock.advance(NEGATIVE_TTL)
    with pytest.raises(errors.UpstreamNotFound):
        await cache.get(fake.url("/maven-metadata.xml"), bytes, ecosystem="npm")
    assert fake.count("/maven-metadata.xml") == 2


async def test_an_immutable_copy_is_pruned_with_the_rest_then_fetched_once_again(
    make_cache: CacheFactory, fake: FakeUpstream, clock: FixedClock, tmp_path: Path
) -> None:
    fake.add("/lib.jar.sha1", b"b" * 40, content_type="text/plain")
    url = fake.url("/lib.jar.sha1")
    first = make_cache()
    await first.get(url, bytes, ecosystem="npm", immutable=True)
    # Its files were last written longer ago than stale_max (by the clock): never rewritten,
    # as it is never revalidated.
    clock.advance(STALE_MAX + timedelta(hours=1))
    written = (clock.now() - STALE_MAX - timedelta(minutes=1)).timestamp()
    for path in (tmp_path / "metadata").iterdir():
        os.utime(path, (written, written))
    assert await first.prune() == 1
    # Still in this worker's memory; a restart fetches it once, then holds it again.
    await first.get(url, bytes, ecosystem="npm", immutable=True)
    assert fake.count("/lib.jar.sha1") == 1
    restarted = make_cache()
    for _ in range(3):
        await restarted.get(url, bytes, ecosystem="npm", immutable=True)
    assert fake.count("/lib.jar.sha1") == 2


async def test_an_immutable_document_that_does_not_parse_is_not_kept(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    fake.add("/lib.jar.sha1", b"<html>try again later</html>", content_type="text/html")
    parse = CountingParser()
    parse.broken = True
    for _ in range(2):
        with pytest.raises(errors.BadUpstreamDocument):
            await cache.get(fake.url("/lib.jar.sha1"), parse, ecosystem="npm", immutable=True)
    assert fake.count("/lib.jar.sha1") == 2
    fake.add("/lib.jar.sha1", DOC, content_type="application/json")
    parse.broken = False
    held = await cache.get(fake.url("/lib.jar.sha1"), parse, ecosystem="npm", immutable=True)
    assert held.raw == DOC
    assert fake.count("/lib.jar.sha1") == 3


def forty_hex(raw: bytes) -> str:
    """A strict checksum parser (like Maven's): the whole body is one SHA-1."""
    text = raw.decode("ascii").strip()
    if len(text) != 40 or any(char not in "0123456789abcdef" for char in text):
        raise ValueError("not a sha1")
    return text


async def test_a_copy_on_disk_a_stricter_parser_refuses_is_fetched_again_not_kept_forever(
    make_cache: CacheFactory, fake: FakeUpstream
) -> None:
    # An earlier release kept an error page under its identity parser, immutable.
    fake.add("/lib.jar.sha1", b"<html>upstream error</html>", content_type="text/html")
    url = fake.url("/lib.jar.sha1")
    earlier = make_cache()
    await earlier.get(url, bytes, ecosystem="npm", immutable=True)
    fake.add("/lib.jar.sha1", b"a" * 40, content_type="text/plain")
    # This release, a new worker: `current` checks the copy on disk with the parser given.
    restarted = make_cache()
    held = await restarted.current(url, forty_hex, ecosystem="npm", immutable=True)
    assert held.raw == b"a" * 40
    assert (await restarted.get(url, forty_hex, ecosystem="npm", immutable=True)).parsed == "a" * 40
    assert fake.count("/lib.jar.sha1") == 2
    # The good copy replaced the bad one on disk: the next worker asks nothing.
    again = make_cache()
    assert (await again.current(url, forty_hex, ecosystem="npm", immutable=True)).raw == b"a" * 40
    assert fake.count("/lib.jar.sha1") == 2


async def test_an_immutable_copy_in_memory_its_parser_refuses_is_fetched_again(
    cache: MetaCache, fake: FakeUpstream
) -> None:
    fake.add("/lib.jar.sha1", b"<html>upstream error</html>", content_type="text/html")
    url = fake.url("/lib.jar.sha1")
    await cache.get(url, bytes, ecosystem="npm", immutable=True)
    fake.add("/lib.jar.sha1", b"b" * 40, content_type="text/plain")
    for _ in range(2):
        held = await cache.get(url, forty_hex, ecosystem="npm", immutable=True)
        assert held.parsed == "b" * 40
    assert fake.count("/lib.jar.sha1") == 2


async def test_a_forgotten_immutable_copy_is_asked_for_again(
    cache: MetaCache, make_cache: CacheFactory, fake: FakeUpstream
) -> None:
    fake.add("/lib.jar.sha1", b"c" * 40, content_type="text/plain")
    url = fake.url("/lib.jar.sha1")
    await cache.get(url, forty_hex, ecosystem="npm", immutable=True)
    fake.add("/lib.jar.sha1", b"d" * 40, content_type="text/plain")
    await cache.forget(url)
    assert (await cache.get(url, forty_hex, ecosystem="npm", immutable=True)).parsed == "d" * 40
    assert (await make_cache().current(url, forty_hex, ecosystem="npm", immutable=True)).raw == (
        b"d" * 40
    )
    assert fake.count("/lib.jar.sha1") == 2


async def test_a_required_immutable_document_absent_upstream_is_asked_again_after_negative_ttl(
    cache: MetaCache, fake: FakeUpstream, clock: FixedClock
) -> None:
    url = fake.url("/lib.jar.sha1")
    with pytest.raises(errors.UpstreamNotFound):
        await cache.get(url, forty_hex, ecosystem="npm", immutable=True, required=True)
    clock.advance(NEGATIVE_TTL)
    # Uploaded after the jar, as some repositories do: found a minute later, not a day.
    fake.add("/lib.jar.sha1", b"e" * 40, content_type="text/plain")
    held = await cache.get(url, forty_hex, ecosystem="npm", immutable=True, required=True)
    assert held.parsed == "e" * 40
    assert fake.count("/lib.jar.sha1") == 2


async def test_a_per_call_size_cap_refuses_a_bigger_document(
    cache: MetaCache, fake: FakeUpstream
) -> None:
    fake.add("/lib.jar.asc", b"x" * 4096, content_type="text/plain")
    with pytest.raises(errors.BadUpstreamDocument):
        await cache.get(fake.url("/lib.jar.asc"), bytes, ecosystem="npm", max_bytes=1024)
    held = await cache.get(fake.url("/lib.jar.asc"), bytes, ecosystem="npm", max_bytes=8192)
    assert len(held.raw) == 4096


# takedowns: replaced copies handed to the watcher ------------------------------------------


@dataclass(frozen=True)
class ListingParser:
    """A parser that lists what a document offers (`takedowns.Lists`)."""

    def __call__(self, raw: bytes) -> dict[str, object]:
        parsed: dict[str, object] = orjson.loads(raw)
        return parsed

    def listing(self, parsed: dict[str, object]) -> dict[str, object]:
        return {str(v): v for v in parsed["versions"]}  # type: ignore[attr-defined]


async def test_replaced_and_unpublished_copies_reach_the_watcher_whose_errors_stay_out(
    make_cache: CacheFactory, fake: FakeUpstream, clock: FixedClock
) -> None:
    seen: list[DocumentChange] = []

    def watcher(change: DocumentChange) -> None:
        seen.append(change)
        raise RuntimeError("a broken watcher")

    url = fake.url("/left-pad")
    cache = make_cache(watcher=watcher)
    await cache.get(url, ListingParser(), ecosystem="npm")
    fake.add("/left-pad", DOC2, content_type="application/json", etag='"v2"')
    clock.advance(STALE_MAX)
    changed = await cache.get(url, ListingParser(), ecosystem="npm")  # never the watcher's error
    assert changed.parsed == orjson.loads(DOC2)
    [change] = seen
    assert (change.ecosystem, change.url, change.before_parsed) == ("npm", url, True)
    assert (change.before, change.after) == (orjson.loads(DOC), orjson.loads(DOC2))

    # A sibling worker holding the copy from disk hands it over too; a 404 is "nothing left".
    sibling = make_cache(watcher=watcher)
    fake.remove("/left-pad")
    clock.advance(STALE_MAX)
    with pytest.raises(errors.UpstreamNotFound):
        await sibling.get(url, ListingParser(), ecosystem="npm", refresh="urgent")
    gone = seen[-1]
    assert (gone.before, gone.before_parsed, gone.after) == (orjson.loads(DOC2), True, None)

    # A parser that lists nothing is never watched.
    fake.add("/other", DOC, content_type="application/json", etag='"o1"')
    await cache.get(fake.url("/other"), CountingParser(), ecosystem="npm")
    fake.add("/other", DOC2, content_type="application/json", etag='"o2"')
    clock.advance(STALE_MAX)
    await cache.get(fake.url("/other"), CountingParser(), ecosystem="npm")
    assert len(seen) == 2
