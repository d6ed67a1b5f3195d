"""The artifact server behind a real aiohttp app, against a real fake upstream on 127.0.0.1,
with a real blob directory and SQLite state: hits from disk, single-flight misses that stream
while verifying, integrity refusals, the download ledger."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient, AiohttpServer

from mirror import errors
from mirror.app import error_middleware
from mirror.artifacts.download import HOLD_BACK
from mirror.artifacts.passthrough import RANGE_RELAY_MAX
from mirror.artifacts.serve import ARTIFACT_CACHE_CONTROL, RANGE_RELAYS_AT_ONCE, ArtifactServer
from mirror.blobs.store import BlobStore
from mirror.clock import FixedClock
from mirror.config import UpstreamConfig
from mirror.metrics import Metrics
from mirror.model import ArtifactRef, Digest
from mirror.state.local import LocalState
from mirror.upstream import Upstream, UpstreamScope
from tests.fakes.upstream import FakeUpstream
from tests.integration.conftest import fill_disk, small_disk

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SMALL_DISK = "small disk"  # `disk`'s parameter: the blob store on a tmpfs of its own
CONFIG = UpstreamConfig(
    connect_timeout=timedelta(seconds=5),
    read_timeout=timedelta(seconds=10),
    retries=0,
    backoff=timedelta(0),
)
SMALL = b"a small tarball\n" * 500
BIG = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB
TGZ = "application/octet-stream"


def sha(algorithm: str, body: bytes) -> Digest:
    return Digest(algorithm=algorithm, hexdigest=hashlib.new(algorithm, body).hexdigest())


def blob_files(directory: Path) -> list[Path]:
    return [path for path in (directory / "sha256").rglob("*") if path.is_file()]


def temp_files(directory: Path) -> list[Path]:
    return [path for path in (directory / "tmp").rglob("*") if path.is_file()]


class ChunkedUpstream:
    """A slow upstream: after `release()`, sends `body` in 64 KiB chunks with a pause between
    them, with or without Content-Length. Counts requests."""

    def __init__(self) -> None:
        self.body = b""
        self.content_length = True
        self.requests = 0
        self.sent = 0
        self.released = asyncio.Event()
        # Optionally stall mid-body (after `pause_after` bytes) until `resumed` is set.
        self.pause_after: int | None = None
        self.resumed = asyncio.Event()
        # Ranges: cut halfway (the default), or, with `hold_ranges`, stall halfway until
        # `ranges_resumed` is set, then end cleanly. `ranges` counts them.
        self.hold_ranges = False
        self.ranges_resumed = asyncio.Event()
        self.ranges = 0
        self.app = web.Application()
        self.app.router.add_get("/{name}", self._handle)
        self.base_url = ""

    def release(self) -> None:
        self.released.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if "Range" in request.headers:
            return await self._cut_range(request)
        await self.released.wait()
        response = web.StreamResponse(headers={"Content-Type": TGZ})
        if self.content_length:
            response.content_length = len(self.body)
        await response.prepare(request)
        for start in range(0, len(self.body), 64 * 1024):
            if self.pause_after is not None and start >= self.pause_after:
                await self.resumed.wait()
            await response.write(self.body[start : start + 64 * 1024])
            self.sent = start + len(self.body[start : start + 64 * 1024])
            await asyncio.sleep(0.002)
        await response.write_eof()
        return response

    async def _cut_range(self, request: web.Request) -> web.StreamResponse:
        """The range asked for, announced in full, then the connection closed halfway (or,
        with `hold_ranges`, the rest once `ranges_resumed` is set)."""
        self.ranges += 1
        wanted = request.http_range
        start = wanted.start if wanted.start >= 0 else len(self.body) + wanted.start
        part = self.body[wanted]
        response = web.StreamResponse(status=206, headers={"Content-Type": TGZ})
        response.headers["Content-Range"] = (
            f"bytes {start}-{start + len(part) - 1}/{len(self.body)}"
        )
        response.content_length = len(part)
        await response.prepare(request)
        await response.write(part[: len(part) // 2])
        if self.hold_ranges:
            await self.ranges_resumed.wait()
            await response.write(part[len(part) // 2 :])
            await response.write_eof()
            return response
        if request.transport is not None:
            request.transport.close()
        return response


@dataclass
class Mirror:
    client: TestClient[web.Request, web.Application]
    fake: FakeUpstream
    slow: ChunkedUpstream
    state: LocalState
    blobs: BlobStore
    server: ArtifactServer
    metrics: Metrics
    directory: Path
    upstream: Upstream
    refs: dict[str, ArtifactRef] = field(default_factory=dict)

    def add(
        self,
        name: str,
        body: bytes,
        *,
        digests: tuple[Digest, ...] | None = None,
        served: bytes | None = None,
        url: str | None = None,
        size: int | None = None,
        slow: bool = False,
    ) -> ArtifactRef:
        """Publish `name` upstream (serving `served`, default `body`) and declare `digests`
        (default: sha512 and sha1 of `body`) as its metadata does."""
        if slow:
            self.slow.body = body if served is None else served
            url = f"{self.slow.base_url}{name}"
        elif url is None:
            self.fake.add(f"/files/{name}", body if served is None else served)
            url = self.fake.url(f"/files/{name}")
        ref = ArtifactRef(
            ecosystem="npm",
            package="left-pad",
            version=name,
            filename=f"{name}.tgz",
            upstream_url=url,
            digests=digests if digests is not None else (sha("sha512", body), sha("sha1", body)),
            content_type="application/gzip",
            size=size,
        )
        self.refs[name] = ref
        return ref

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def downloads(self, count: int) -> list[str]:
        """Wait (bounded) for `count` ledger entries; return their versions."""
        for _ in range(200):
            events = await self.state.downloads("npm", "left-pad")
            if len(events) >= count:
                return [event.version for event in events]
            await asyncio.sleep(0.01)
        events = await self.state.downloads("npm", "left-pad")
        return [event.version for event in events]

    async def stored(self, name: str) -> bool:
        return await self.blobs.lookup(self.refs[name].cache_key) is not None


@pytest.fixture
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """Where the blob store lives: tmp_path, or (parametrized indirectly with SMALL_DISK) a
    file system of its own that a test can really fill up with `fill_disk(disk)`."""
    if getattr(request, "param", None) != SMALL_DISK:
        yield tmp_path
        return
    with small_disk(tmp_path / "disk") as own:
        yield own


@pytest.fixture
async def mirror(
    tmp_path: Path,
    disk: Path,
    fake_upstream: FakeUpstream,
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
) -> AsyncIterator[Mirror]:
    clock = FixedClock(T0)
    metrics = Metrics(CollectorRegistry())
    state = LocalState(tmp_path / "state.sqlite3", clock=clock)
    await state.open()
    slow = ChunkedUpstream()
    slow_server = await aiohttp_server(slow.app, host="127.0.0.1")
    slow.base_url = str(slow_server.make_url("/"))
    scope = UpstreamScope.of(
        "npm", fake_upstream.url("/"), file_hosts=[f"127.0.0.1:{slow_server.port}"]
    )
    upstream = Upstream(CONFIG, scopes=[scope], metrics=metrics)
    await upstream.start()
    directory = disk / "artifacts"
    blobs = BlobStore(directory, clock=clock, metrics=metrics)
    await blobs.open()
    server = ArtifactServer(
        blobs=blobs, upstream=upstream, state=state, metrics=metrics, clock=clock
    )
    refs: dict[str, ArtifactRef] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        return await server.serve(request, refs[request.match_info["name"]])

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/files/{name}", handler)
    client = await aiohttp_client(app)
    harness = Mirror(
        client=client,
        fake=fake_upstream,
        slow=slow,
        state=state,
        blobs=blobs,
        server=server,
        metrics=metrics,
        directory=directory,
        upstream=upstream,
        refs=refs,
    )
    try:
        yield harness
    finally:
        await server.close()
        await blobs.close()
        await upstream.close()
        await state.close()


# hits -----------------------------------------------------------------------------------------


async def preload(mirror: Mirror, ref: ArtifactRef, body: bytes) -> None:
    writer = await mirror.blobs.begin(ref.cache_key, {d.algorithm for d in ref.digests})
    await writer.write(body)
    await writer.commit(ref.digests, what=ref.filename)
    writer.close()


async def test_hit_is_served_from_disk_without_upstream(mirror: Mirror) -> None:
    ref = mirror.add("1.0.0", SMALL)
    await preload(mirror, ref, SMALL)
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 200
    assert await response.read() == SMALL
    assert response.headers["Content-Type"] == "application/gzip"
    assert response.headers["Cache-Control"] == ARTIFACT_CACHE_CONTROL
    assert response.headers["ETag"] == f'"{hashlib.sha256(SMALL).hexdigest()}"'
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Length"] == str(len(SMALL))
    assert mirror.fake.requests == []
    assert mirror.sample("mirror_cache_hits_total", ecosystem="npm", kind="artifact") == 1


async def test_head_range_and_conditional_requests_on_a_hit(mirror: Mirror) -> None:
    ref = mirror.add("1.0.0", SMALL)
    await preload(mirror, ref, SMALL)
    etag = f'"{hashlib.sha256(SMALL).hexdigest()}"'

    head = await mirror.client.head("/files/1.0.0")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(SMALL))
    assert head.headers["ETag"] == etag
    assert await head.read() == b""

    ranged = await mirror.client.get("/files/1.0.0", headers={"Range": "bytes=10-19"})
    assert ranged.status == 206
    assert await ranged.read() == SMALL[10:20]
    assert ranged.headers["Content-Range"] == f"bytes 10-19/{len(SMALL)}"

    cached = await mirror.client.get("/files/1.0.0", headers={"If-None-Match": etag})
    assert cached.status == 304
    assert cached.headers["ETag"] == etag
    assert await cached.read() == b""

    other = await mirror.client.get("/files/1.0.0", headers={"If-None-Match": '"abc"'})
    assert other.status == 200
    assert await other.read() == SMALL
    assert mirror.fake.requests == []


async def test_bytes_from_the_cache_are_the_bytes_each_answer_sent(mirror: Mirror) -> None:
    """The overview's "from the cache": a 304 or a HEAD sends no body, a range its bytes."""
    small, big = mirror.add("1.0.0", SMALL), mirror.add("2.0.0", BIG)
    await preload(mirror, small, SMALL)
    await preload(mirror, big, BIG)
    answers = [
        ("1.0.0", "GET", {}, 200),
        ("1.0.0", "HEAD", {}, 200),
        ("1.0.0", "GET", {"If-None-Match": f'"{hashlib.sha256(SMALL).hexdigest()}"'}, 304),
        ("1.0.0", "GET", {"Range": "bytes=10-19"}, 206),
        ("2.0.0", "GET", {"Range": "bytes=-100"}, 206),
        ("2.0.0", "GET", {"If-None-Match": f'"{hashlib.sha256(BIG).hexdigest()}"'}, 304),
        ("2.0.0", "HEAD", {}, 200),
    ]
    for name, method, headers, status in answers:
        response = await mirror.client.request(method, f"/files/{name}", headers=headers)
        assert response.status == status
        await response.read()
    [count] = mirror.metrics.traffic.take(T0)
    assert count.hits == len(answers)
    assert count.bytes_from_cache == len(SMALL) + 10 + 100


async def test_a_file_stored_for_the_review_page_is_no_cache_miss_of_a_client(
    mirror: Mirror,
) -> None:
    review, prewarm = mirror.add("1.0.0", SMALL), mirror.add("2.0.0", BIG)
    entry, cached = await mirror.server.store(review, for_client=False)
    assert (entry.size, cached) == (len(SMALL), False)
    [count] = mirror.metrics.traffic.take(T0)
    assert (count.requests, count.hits, count.misses) == (0, 0, 0)
    assert count.bytes_from_upstream == len(SMALL)  # upstream did send them
    assert mirror.sample("mirror_cache_misses_total", ecosystem="npm", kind="artifact") == 0
    await mirror.server.store(prewarm)  # a pre-warm stands in for its clients: a miss
    [count] = mirror.metrics.traffic.take(T0)
    assert count.misses == 1
    assert mirror.sample("mirror_cache_misses_total", ecosystem="npm", kind="artifact") == 1


async def test_small_hits_come_from_memory_and_a_damaged_blob_is_fetched_again(
    mirror: Mirror,
) -> None:
    ref = mirror.add("1.0.0", SMALL)
    await preload(mirror, ref, SMALL)
    entry = await mirror.blobs.lookup(ref.cache_key)
    assert entry is not None
    entry.path.write_bytes(b"bit rot" + SMALL[7:])  # damaged on disk after it was stored
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 200
    assert await response.read() == SMALL  # re-verified on read: fetched again, not served
    assert mirror.fake.count("/files/1.0.0") == 1
    # Now in memory: served even if the file disappears underneath.
    assert (await mirror.client.get("/files/1.0.0")).status == 200
    stored = await mirror.blobs.lookup(ref.cache_key)
    assert stored is not None
    stored.path.unlink()
    again = await mirror.client.get("/files/1.0.0")
    assert await again.read() == SMALL
    assert mirror.fake.count("/files/1.0.0") == 1


async def test_hit_is_never_compressed(mirror: Mirror) -> None:
    ref = mirror.add("1.0.0", SMALL)
    await preload(mirror, ref, SMALL)
    entry = await mirror.blobs.lookup(ref.cache_key)
    assert entry is not None
    # A sibling aiohttp would pick for Accept-Encoding: gzip if it were a plain FileResponse.
    entry.path.with_name(entry.path.name + ".gz").write_bytes(b"not the artifact")
    response = await mirror.client.get(
        "/files/1.0.0", headers={"Accept-Encoding": "gzip, br"}, auto_decompress=False
    )
    assert response.status == 200
    assert "Content-Encoding" not in response.headers
    assert await response.read() == SMALL


@contextlib.asynccontextmanager
async def on_uvloop(mirror: Mirror) -> AsyncIterator[str]:
    """A second artifact server over the same blob directory, in a thread running uvloop: the
    event loop `mirror serve` runs on, which has no sendfile (big files go out in chunks read
    off the loop). Yields its base URL."""
    uvloop = pytest.importorskip("uvloop")
    started: queue.Queue[tuple[asyncio.AbstractEventLoop, asyncio.Event, int] | BaseException]
    started = queue.Queue()

    async def serve() -> None:
        clock = FixedClock(T0)
        metrics = Metrics(CollectorRegistry())
        state = LocalState(mirror.directory.parent / "uvloop-state.sqlite3", clock=clock)
        await state.open()
        scope = UpstreamScope.of("npm", mirror.fake.url("/"))
        upstream = Upstream(CONFIG, scopes=[scope], metrics=metrics)
        await upstream.start()
        blobs = BlobStore(mirror.directory, clock=clock, metrics=metrics)
        await blobs.open()
        server = ArtifactServer(
            blobs=blobs, upstream=upstream, state=state, metrics=metrics, clock=clock
        )

        async def handler(request: web.Request) -> web.StreamResponse:
            return await server.serve(request, mirror.refs[request.match_info["name"]])

        app = web.Application(middlewares=[error_middleware])
        app.router.add_get("/files/{name}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            stop = asyncio.Event()
            started.put((asyncio.get_running_loop(), stop, runner.addresses[0][1]))
            await stop.wait()
        finally:
            await runner.cleanup()
            await server.close()
            await blobs.close()
            await upstream.close()
            await state.close()

    def run() -> None:
        try:
            uvloop.run(serve())
        except BaseException as exc:
            started.put(exc)

    thread = threading.Thread(target=run, name="uvloop artifact server", daemon=True)
    thread.start()
    outcome = await asyncio.to_thread(started.get, True, 30)
    if isinstance(outcome, BaseException):
        raise outcome
    loop, stop, port = outcome
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(thread.join, 30)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_a_big_hit_answers_ranges_and_conditional_requests(mirror: Mirror, loop: str) -> None:
    ref = mirror.add("1.0.0", BIG)
    await preload(mirror, ref, BIG)
    etag, size = f'"{hashlib.sha256(BIG).hexdigest()}"', len(BIG)
    never, long_ago = "Fri, 01 Jan 2100 00:00:00 GMT", "Sat, 01 Jan 2000 00:00:00 GMT"
    ten_of_size = f"bytes 10-19/{size}"
    # (method, request headers, status, body, response headers)
    answers: list[tuple[str, dict[str, str], int, bytes, dict[str, str]]] = [
        ("GET", {}, 200, BIG, {"ETag": etag, "Content-Length": str(size)}),
        ("HEAD", {}, 200, b"", {"ETag": etag, "Content-Length": str(size)}),
        ("GET", {"Range": "bytes=10-19"}, 206, BIG[10:20], {"Content-Range": ten_of_size}),
        ("GET", {"Range": "bytes=-100"}, 206, BIG[-100:], {"Content-Length": "100"}),
        ("GET", {"Range": f"bytes={size}-"}, 416, b"", {"Content-Range": f"bytes */{size}"}),
        ("GET", {"Range": "bytes=0-1,5-6"}, 416, b"", {"Content-Range": f"bytes */{size}"}),
        ("GET", {"If-None-Match": etag}, 304, b"", {"ETag": etag}),
        ("GET", {"If-Modified-Since": never}, 304, b"", {"ETag": etag}),
        ("GET", {"If-Match": '"other"'}, 412, b"", {}),
        ("GET", {"If-Match": etag, "Range": "bytes=0-0"}, 206, BIG[:1], {"ETag": etag}),
        ("GET", {"If-Range": never, "Range": "bytes=0-0"}, 206, BIG[:1], {}),
        ("GET", {"If-Range": long_ago, "Range": "bytes=0-0"}, 200, BIG, {}),  # an older copy
        ("GET", {"Accept-Encoding": "gzip, br"}, 200, BIG, {"Content-Length": str(size)}),
    ]  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        if loop == "uvloop":
            base = await stack.enter_async_context(on_uvloop(mirror))
        else:
            base = str(mirror.client.make_url("/")).rstrip("/")
        # One connection after another on a keep-alive session: a body that is one byte
        # off its Content-Length would break the next answer.
        connector = aiohttp.TCPConnector(limit=1)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=connector, auto_decompress=False)
        )
        for method, headers, status, body, expected in answers:
            async with session.request(method, f"{base}/files/1.0.0", headers=headers) as response:
                assert (response.status, await response.read()) == (status, body), headers
                assert response.headers["Cache-Control"] == ARTIFACT_CACHE_CONTROL
                assert "Content-Encoding" not in response.headers
                for name, value in expected.items():
                    assert response.headers[name] == value, (headers, name)
    assert mirror.fake.requests == []


async def test_a_big_blob_evicted_by_another_process_is_fetched_again(mirror: Mirror) -> None:
    ref = mirror.add("1.0.0", BIG)
    await preload(mirror, ref, BIG)
    entry = await mirror.blobs.lookup(ref.cache_key)  # this process remembers the entry
    assert entry is not None
    entry.path.unlink()
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 200
    assert await response.read() == BIG
    assert mirror.fake.count("/files/1.0.0") == 1
    assert await mirror.blobs.lookup(ref.cache_key) is not None


async def test_hit_whose_declared_digest_changed_is_refused(mirror: Mirror) -> None:
    ref = mirror.add("1.0.0", SMALL)
    await preload(mirror, ref, SMALL)
    mirror.add("1.0.0", SMALL, digests=(sha("sha512", b"other bytes"),))
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 502
    body = await response.json()
    assert body["reason"] == "integrity"
    assert "changed" in body["error"]
    assert mirror.sample("mirror_integrity_failures_total", ecosystem="npm", cause="changed") == 1


# misses ---------------------------------------------------------------------------------------


async def test_miss_fetches_verifies_stores_then_hits(mirror: Mirror) -> None:
    mirror.add("1.0.0", SMALL)
    first = await mirror.client.get("/files/1.0.0")
    assert first.status == 200
    assert await first.read() == SMALL
    assert first.headers["Content-Length"] == str(len(SMALL))
    second = await mirror.client.get("/files/1.0.0")
    assert await second.read() == SMALL
    assert mirror.fake.count("/files/1.0.0") == 1
    assert await mirror.stored("1.0.0")
    assert temp_files(mirror.directory) == []
    assert mirror.sample("mirror_cache_misses_total", ecosystem="npm", kind="artifact") == 1
    assert mirror.sample("mirror_cache_hits_total", ecosystem="npm", kind="artifact") == 1
    # The strongest declared digest is remembered as the first one seen.
    first_seen = await mirror.state.remember_digest("npm", mirror.refs["1.0.0"].cache_key, "x")
    assert first_seen == f"sha512:{hashlib.sha512(SMALL).hexdigest()}"


def full_gets(mirror: Mirror, path: str) -> int:
    """Whole-file GETs of `path` the fake upstream received (the downloads)."""
    return sum(
        1
        for request in mirror.fake.requests
        if request.path == path and request.method == "GET" and "Range" not in request.headers
    )


def ranged_gets(mirror: Mirror, path: str) -> int:
    return mirror.fake.count(path, method="GET") - full_gets(mirror, path)


async def wait_stored(mirror: Mirror, name: str) -> None:
    for _ in range(1000):  # bounded: 10 s
        if await mirror.stored(name):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} was not stored within 10 s")


async def test_head_on_a_miss_answers_from_upstream_while_the_download_runs(
    mirror: Mirror,
) -> None:
    mirror.add("3.0.0", BIG)  # no size declared: upstream's HEAD says it
    mirror.add("4.0.0", SMALL, digests=(sha("sha256", SMALL),), size=len(SMALL))
    for name in ("3.0.0", "4.0.0"):
        mirror.fake.hold_body(f"/files/{name}")  # the download gets half the body, then waits
    big = await mirror.client.head("/files/3.0.0")
    assert big.status == 200
    assert big.headers["Content-Length"] == str(len(BIG))
    assert big.headers["Accept-Ranges"] == "bytes"
    assert big.headers["Content-Type"] == "application/gzip"
    assert big.headers["Cache-Control"] == "no-store"
    assert "ETag" not in big.headers  # nothing the mirror can vouch for yet
    small = await mirror.client.head("/files/4.0.0")
    assert small.status == 200
    assert small.headers["Content-Length"] == str(len(SMALL))
    # Not verified yet: no ETag, even with a sha256 declared (as for a relayed range).
    assert "ETag" not in small.headers
    # Both answers went out while the downloads they started were held mid-body.
    for name in ("3.0.0", "4.0.0"):
        await mirror.fake.wait_for(f"/files/{name}", 2)
        assert full_gets(mirror, f"/files/{name}") == 1
        assert not await mirror.stored(name)
        mirror.fake.release(f"/files/{name}")
        await wait_stored(mirror, name)
    hit = await mirror.client.get("/files/3.0.0")
    assert await hit.read() == BIG
    assert hit.headers["ETag"] == f'"{hashlib.sha256(BIG).hexdigest()}"'
    assert full_gets(mirror, "/files/3.0.0") == 1
    assert mirror.fake.count("/files/3.0.0", method="HEAD") == 1
    assert temp_files(mirror.directory) == []
    await mirror.server.ledger.flush()
    assert await mirror.downloads(1) == ["3.0.0"]  # the GET; a HEAD is not a download


async def test_ranges_on_a_miss_are_relayed_while_the_download_runs(mirror: Mirror) -> None:
    size = len(BIG)
    mirror.add("3.0.0", BIG, digests=(sha("sha256", BIG),), size=size)
    mirror.fake.hold_body("/files/3.0.0")
    # (Range, the bytes, Content-Range): a suffix (how a zip reader starts), a middle, an
    # open end, a stop past the end.
    asked = [
        ("bytes=-100", BIG[-100:], f"bytes {size - 100}-{size - 1}/{size}"),
        ("bytes=10-19", BIG[10:20], f"bytes 10-19/{size}"),
        (f"bytes={size - 50}-", BIG[-50:], f"bytes {size - 50}-{size - 1}/{size}"),
        (f"bytes=1000-{size + 100}", BIG[1000:], f"bytes 1000-{size - 1}/{size}"),
    ]
    for header, body, content_range in asked:
        response = await mirror.client.get("/files/3.0.0", headers={"Range": header})
        assert response.status == 206, header
        assert await response.read() == body, header
        assert response.headers["Content-Range"] == content_range
        assert response.headers["Content-Length"] == str(len(body))
        assert response.headers["Cache-Control"] == "no-store"  # unverified: never cached
        assert "ETag" not in response.headers
    # All answered while the one download was held mid-body.
    assert full_gets(mirror, "/files/3.0.0") == 1
    assert ranged_gets(mirror, "/files/3.0.0") == len(asked)
    assert not await mirror.stored("3.0.0")
    await mirror.server.ledger.flush()
    assert await mirror.downloads(1) == ["3.0.0"]  # a relayed range is a download
    mirror.fake.release("/files/3.0.0")
    await wait_stored(mirror, "3.0.0")
    hit = await mirror.client.get("/files/3.0.0", headers={"Range": "bytes=-100"})
    assert (hit.status, await hit.read()) == (206, BIG[-100:])
    assert hit.headers["Cache-Control"] == ARTIFACT_CACHE_CONTROL
    assert full_gets(mirror, "/files/3.0.0") == 1
    assert ranged_gets(mirror, "/files/3.0.0") == len(asked)


async def test_a_relayed_range_the_upstream_cuts_short_is_cut_short(mirror: Mirror) -> None:
    mirror.add("3.0.0", BIG, slow=True)  # its ranges end halfway; its download waits
    response = await mirror.client.get("/files/3.0.0", headers={"Range": "bytes=-200000"})
    assert response.status == 206
    assert response.headers["Content-Length"] == "200000"
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()  # never a short body that looks complete
    mirror.slow.release()
    again = await mirror.client.get("/files/3.0.0")
    assert await again.read() == BIG
    assert mirror.slow.requests == 2  # the range, and the one download


async def test_a_corrupt_file_whose_range_was_relayed_is_not_stored(mirror: Mirror) -> None:
    evil = SMALL[:-1] + b"!"
    mirror.add("1.0.0", SMALL, served=evil)
    mirror.fake.hold_body("/files/1.0.0")
    # The price of answering before the whole file is there: these bytes are not verified.
    ranged = await mirror.client.get("/files/1.0.0", headers={"Range": "bytes=-10"})
    assert (ranged.status, await ranged.read()) == (206, evil[-10:])
    mirror.fake.release("/files/1.0.0")
    # The download fails verification: nothing is stored, the next GET fetches again.
    for attempt in (1, 2):
        refused = await mirror.client.get("/files/1.0.0")
        assert refused.status == 502
        assert (await refused.json())["reason"] == "integrity"
        assert full_gets(mirror, "/files/1.0.0") == attempt
    assert not await mirror.stored("1.0.0")
    assert blob_files(mirror.directory) == []
    assert temp_files(mirror.directory) == []


async def test_what_cannot_be_answered_early_is_answered_once_stored(mirror: Mirror) -> None:
    size = len(SMALL)
    mirror.add("1.0.0", SMALL)
    several = await mirror.client.get("/files/1.0.0", headers={"Range": "bytes=0-1,5-6"})
    assert several.status == 416  # as a hit answers it
    assert several.headers["Content-Range"] == f"bytes */{size}"
    mirror.add("2.0.0", SMALL, size=size)  # past the declared end: upstream is not asked
    past_the_end = await mirror.client.get(
        "/files/2.0.0", headers={"Range": f"bytes={size}-{size + 9}"}
    )
    assert past_the_end.status == 416
    # A range longer than a relay may be: from the stored copy.
    mirror.add("3.0.0", SMALL)
    long = await mirror.client.get("/files/3.0.0", headers={"Range": f"bytes=0-{RANGE_RELAY_MAX}"})
    assert (long.status, await long.read()) == (206, SMALL)
    assert long.headers["Cache-Control"] == ARTIFACT_CACHE_CONTROL
    # A conditional request is judged on the stored copy.
    mirror.add("4.0.0", SMALL)
    conditional = await mirror.client.get(
        "/files/4.0.0", headers={"Range": "bytes=0-9", "If-Match": '"other"'}
    )
    assert conditional.status == 412
    for name in ("1.0.0", "2.0.0", "3.0.0", "4.0.0"):
        assert ranged_gets(mirror, f"/files/{name}") == 0
        assert full_gets(mirror, f"/files/{name}") == 1
        assert await mirror.stored(name)
    # An upstream without range support sends the whole file: dropped, the download answers.
    mirror.add("5.0.0", SMALL)
    mirror.fake.ignore_ranges("/files/5.0.0")
    whole = await mirror.client.get("/files/5.0.0", headers={"Range": "bytes=10-19"})
    assert (whole.status, await whole.read()) == (206, SMALL[10:20])
    assert whole.headers["Cache-Control"] == ARTIFACT_CACHE_CONTROL
    assert full_gets(mirror, "/files/5.0.0") == 1


async def test_a_size_upstream_disagrees_on_is_not_trusted(mirror: Mirror) -> None:
    mirror.add("1.0.0", SMALL, size=len(SMALL) + 1)
    head = await mirror.client.head("/files/1.0.0")
    assert head.status == 502  # the download's verdict, not the upstream's HEAD
    mirror.add("2.0.0", SMALL, size=len(SMALL) + 1)
    ranged = await mirror.client.get("/files/2.0.0", headers={"Range": "bytes=-10"})
    assert ranged.status == 502
    assert (await ranged.json())["reason"] == "integrity"
    assert not await mirror.stored("1.0.0")
    assert not await mirror.stored("2.0.0")
    mirror.add("5.0.0", SMALL)
    mirror.fake.remove("/files/5.0.0")
    gone = await mirror.client.head("/files/5.0.0")
    assert gone.status == 404  # upstream's HEAD failed: the download says why


async def test_many_ranges_of_one_miss_make_one_download_and_bounded_relays(
    mirror: Mirror,
) -> None:
    mirror.add("3.0.0", BIG)
    mirror.fake.hold("/files/3.0.0")  # every upstream request waits: relays stay open
    asked = RANGE_RELAYS_AT_ONCE + 3
    requests = [
        asyncio.create_task(
            mirror.client.get("/files/3.0.0", headers={"Range": f"bytes={i * 10}-{i * 10 + 9}"})
        )
        for i in range(asked)
    ]
    await mirror.fake.wait_for("/files/3.0.0", 1 + RANGE_RELAYS_AT_ONCE)
    await wait_for_misses(mirror, asked)  # each decided: relayed, or waits for the download
    mirror.fake.release("/files/3.0.0")
    for i, response in enumerate(await asyncio.gather(*requests)):
        assert (response.status, await response.read()) == (206, BIG[i * 10 : i * 10 + 10])
    assert full_gets(mirror, "/files/3.0.0") == 1
    assert ranged_gets(mirror, "/files/3.0.0") == RANGE_RELAYS_AT_ONCE


async def wait_for_misses(mirror: Mirror, count: int) -> None:
    for _ in range(500):
        if mirror.sample("mirror_cache_misses_total", ecosystem="npm", kind="artifact") >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} misses were counted")


@dataclass
class OtherProcess:
    """A second ArtifactServer over the same directory: a second worker process as far as
    the store is concerned (its own memory, the same files and state)."""

    client: TestClient[web.Request, web.Application]
    server: ArtifactServer
    blobs: BlobStore

    async def close(self) -> None:
        await self.server.close()
        await self.blobs.close()


async def other_process(mirror: Mirror, aiohttp_client: AiohttpClient) -> OtherProcess:
    blobs = BlobStore(mirror.directory, clock=mirror.state.clock, metrics=Metrics())
    await blobs.open()
    server = ArtifactServer(
        blobs=blobs, upstream=mirror.upstream, state=mirror.state, metrics=Metrics(),
        clock=mirror.state.clock,
    )  # fmt: skip

    async def handler(request: web.Request) -> web.StreamResponse:
        return await server.serve(request, mirror.refs[request.match_info["name"]])

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/files/{name}", handler)
    return OtherProcess(client=await aiohttp_client(app), server=server, blobs=blobs)


async def stalled_mid_body(mirror: Mirror) -> None:
    """Wait (bounded: 5 s) until the slow upstream has sent `pause_after` bytes and stalls."""
    pause_after = mirror.slow.pause_after or 0
    for _ in range(500):
        if mirror.slow.sent >= pause_after:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the upstream sent {mirror.slow.sent} of {pause_after} bytes in 5 s")


async def test_misses_in_two_processes_sharing_the_store_make_one_upstream_request(
    mirror: Mirror, aiohttp_client: AiohttpClient
) -> None:
    mirror.add("3.0.0", BIG, slow=True)
    other = await other_process(mirror, aiohttp_client)

    async def get(client: TestClient[web.Request, web.Application]) -> bytes:
        response = await client.get("/files/3.0.0")
        assert response.status == 200
        return await response.read()

    first = [asyncio.create_task(get(mirror.client)) for _ in range(10)]
    await wait_for_misses(mirror, 10)
    second = [asyncio.create_task(get(other.client)) for _ in range(10)]
    await asyncio.sleep(0.2)  # the second "process" is now waiting on the first one's claim
    mirror.slow.release()
    bodies = await asyncio.gather(*first, *second)
    assert all(body == BIG for body in bodies)
    assert mirror.slow.requests == 1
    await other.close()


async def test_a_second_process_streams_the_first_ones_download_as_it_grows(
    mirror: Mirror, aiohttp_client: AiohttpClient
) -> None:
    """Clients of the waiting process get bytes while the other one downloads (pip gives up
    on a connection silent for 15 s), and the unverified tail only once it is verified."""
    mirror.add("3.0.0", BIG, slow=True)
    mirror.slow.pause_after = 2 * 1024 * 1024
    mirror.slow.release()
    other = await other_process(mirror, aiohttp_client)
    first = asyncio.create_task(mirror.client.get("/files/3.0.0"))
    await stalled_mid_body(mirror)
    response = await other.client.get("/files/3.0.0")
    assert response.status == 200
    head = await asyncio.wait_for(response.content.readexactly(512 * 1024), 5)
    assert head == BIG[: 512 * 1024]
    # Still stalled upstream: nothing past the held-back tail has reached this client.
    more = await asyncio.wait_for(response.content.read(4 * 1024 * 1024), 5)
    assert len(head) + len(more) <= mirror.slow.sent - HOLD_BACK + 64 * 1024
    mirror.slow.resumed.set()
    rest = await response.read()
    assert head + more + rest == BIG
    assert await (await first).read() == BIG
    assert mirror.slow.requests == 1
    await other.close()


async def test_a_followed_fetch_that_fails_verification_cuts_the_other_process_off_too(
    mirror: Mirror, aiohttp_client: AiohttpClient
) -> None:
    evil = BIG[:-10] + b"0123456789"
    mirror.add("3.0.0", BIG, served=evil, slow=True)
    mirror.slow.pause_after = 2 * 1024 * 1024
    mirror.slow.release()
    other = await other_process(mirror, aiohttp_client)
    first = await mirror.client.get("/files/3.0.0")
    await stalled_mid_body(mirror)
    followed = await other.client.get("/files/3.0.0")
    assert followed.status == 200
    head = await asyncio.wait_for(followed.content.readexactly(512 * 1024), 5)
    mirror.slow.resumed.set()
    for response, received in ((first, b""), (followed, head)):
        data = bytearray(received)

        async def read_all(response: aiohttp.ClientResponse, data: bytearray) -> None:
            async for chunk in response.content.iter_any():
                data.extend(chunk)

        with pytest.raises(aiohttp.ClientPayloadError):
            await read_all(response, data)
        assert len(data) <= len(BIG) - HOLD_BACK  # never the whole (wrong) file
    assert blob_files(mirror.directory) == []
    await other.close()


async def test_fifty_concurrent_misses_make_one_upstream_request(mirror: Mirror) -> None:
    ref = mirror.add("3.0.0", BIG, slow=True)

    async def get() -> bytes:
        response = await mirror.client.get("/files/3.0.0")
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(BIG))
        return await response.read()

    clients = [asyncio.create_task(get()) for _ in range(50)]
    await wait_for_misses(mirror, 50)  # every client waits on the one download
    mirror.slow.release()
    bodies = await asyncio.gather(*clients)
    assert mirror.slow.requests == 1
    assert all(body == BIG for body in bodies)
    assert mirror.sample("mirror_singleflight_joins_total", kind="artifact") == 49
    assert await mirror.blobs.lookup(ref.cache_key) is not None
    # One client pulling one file 50 times is one ledger note (see mirror/ledger.py).
    await mirror.server.ledger.flush()
    assert len(await mirror.downloads(1)) == 1


async def test_stream_without_content_length_is_chunked_and_verified(mirror: Mirror) -> None:
    mirror.add("3.0.0", BIG, slow=True)
    mirror.slow.content_length = False
    mirror.slow.release()
    response = await mirror.client.get("/files/3.0.0")
    assert response.status == 200
    assert "Content-Length" not in response.headers
    assert await response.read() == BIG
    assert await mirror.stored("3.0.0")


async def test_a_store_with_a_maximum_size_refuses_a_larger_file_as_it_arrives(
    mirror: Mirror,
) -> None:
    # With a Content-Length over the bound: refused before a byte is written.
    mirror.add("1.0.0", SMALL)
    with pytest.raises(errors.UpstreamError, match="over the 100 bytes"):
        await mirror.server.store(mirror.refs["1.0.0"], max_size=100)
    # Without a Content-Length (and no declared size): stopped as the bytes arrive.
    mirror.add("3.0.0", BIG, slow=True)
    mirror.slow.content_length = False
    mirror.slow.release()
    with pytest.raises(errors.UpstreamError, match=f"over the {len(BIG) - 1} bytes"):
        await mirror.server.store(mirror.refs["3.0.0"], max_size=len(BIG) - 1)
    assert not await mirror.stored("1.0.0")
    assert not await mirror.stored("3.0.0")
    assert blob_files(mirror.directory) == []
    assert temp_files(mirror.directory) == []
    # Not remembered as refused: a store without the bound fetches and keeps it.
    entry, cached = await mirror.server.store(mirror.refs["3.0.0"])
    assert (entry.size, cached) == (len(BIG), False)


async def test_corrupt_small_body_is_a_clean_502_and_not_stored(mirror: Mirror) -> None:
    mirror.add("1.0.0", SMALL, served=SMALL[:-5] + b"EVIL!")
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 502
    body = await response.json()
    assert body["reason"] == "integrity"
    assert "1.0.0.tgz" in body["error"]
    assert blob_files(mirror.directory) == []
    assert temp_files(mirror.directory) == []
    assert not await mirror.stored("1.0.0")
    assert mirror.sample("mirror_integrity_failures_total", ecosystem="npm", cause="mismatch") == 1
    # Not cached: the next request asks upstream again (and still refuses).
    again = await mirror.client.get("/files/1.0.0")
    assert again.status == 502
    assert mirror.fake.count("/files/1.0.0") == 2
    assert await mirror.downloads(0) == []


async def test_corrupt_big_body_is_cut_off_before_its_end(mirror: Mirror) -> None:
    evil = BIG[:-10] + b"0123456789"
    mirror.add("3.0.0", BIG, served=evil, slow=True)
    mirror.slow.release()
    response = await mirror.client.get("/files/3.0.0")
    # Headers went out once more than the held-back tail had arrived: the only way left to
    # refuse is to cut the connection, so the client never holds the whole wrong file.
    assert response.status == 200
    received = bytearray()

    async def read_all() -> None:
        async for chunk in response.content.iter_any():
            received.extend(chunk)

    with pytest.raises(aiohttp.ClientPayloadError):
        await read_all()
    assert len(received) <= len(BIG) - HOLD_BACK
    assert bytes(received) == evil[: len(received)]
    assert blob_files(mirror.directory) == []
    assert temp_files(mirror.directory) == []
    assert mirror.sample("mirror_integrity_failures_total", ecosystem="npm", cause="mismatch") == 1


async def test_truncated_upstream_body_is_not_stored(mirror: Mirror) -> None:
    mirror.add("1.0.0", SMALL)
    mirror.fake.truncate("/files/1.0.0")
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 503  # transient: the client retries
    assert response.headers["Retry-After"] == "2"
    assert blob_files(mirror.directory) == []
    assert temp_files(mirror.directory) == []
    assert mirror.sample("mirror_integrity_failures_total", ecosystem="npm", cause="truncated") == 1
    mirror.fake.heal("/files/1.0.0")
    healed = await mirror.client.get("/files/1.0.0")
    assert await healed.read() == SMALL


async def test_body_shorter_than_the_declared_size_is_not_stored(mirror: Mirror) -> None:
    mirror.add("1.0.0", SMALL, size=len(SMALL) + 100)
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 502
    assert (await response.json())["reason"] == "integrity"
    assert blob_files(mirror.directory) == []
    assert mirror.sample("mirror_integrity_failures_total", ecosystem="npm", cause="truncated") == 1


async def test_upstream_404_names_the_file(mirror: Mirror) -> None:
    mirror.add("1.0.0", SMALL)
    mirror.fake.remove("/files/1.0.0")
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 404
    assert "1.0.0.tgz" in (await response.json())["error"]


async def test_upstream_failure_is_relayed(mirror: Mirror) -> None:
    mirror.add("1.0.0", SMALL)
    mirror.fake.fail("/files/1.0.0", 503)
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 503
    assert (await response.json())["reason"] == "upstream-unavailable"
    assert blob_files(mirror.directory) == []


async def test_changed_digest_is_refused_before_fetching(mirror: Mirror) -> None:
    ref = mirror.add("1.0.0", SMALL)
    first = f"sha512:{hashlib.sha512(b'the bytes first mirrored').hexdigest()}"
    await mirror.state.remember_digest("npm", ref.cache_key, first)
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 502
    body = await response.json()
    assert body["reason"] == "integrity"
    assert "since it was first mirrored" in body["error"]
    assert mirror.fake.requests == []
    assert mirror.sample("mirror_integrity_failures_total", ecosystem="npm", cause="changed") == 1


@pytest.mark.parametrize("method", ["HEAD", "GET"])
async def test_changed_digest_is_refused_before_a_range_or_head_is_answered(
    mirror: Mirror, method: str
) -> None:
    ref = mirror.add("1.0.0", SMALL)
    first = f"sha512:{hashlib.sha512(b'the bytes first mirrored').hexdigest()}"
    await mirror.state.remember_digest("npm", ref.cache_key, first)
    response = await mirror.client.request(
        method, "/files/1.0.0", headers={"Range": "bytes=-10"} if method == "GET" else {}
    )
    assert response.status == 502
    if method == "GET":
        assert "since it was first mirrored" in (await response.json())["error"]
    assert mirror.fake.requests == []  # no byte relayed, no size asked
    assert mirror.sample("mirror_integrity_failures_total", ecosystem="npm", cause="changed") == 1


async def test_changed_bytes_under_a_weaker_remembered_digest_are_refused(mirror: Mirror) -> None:
    # First mirrored when only a sha1 was declared; now a sha512 is declared too, for new bytes.
    new = SMALL + b"trojan"
    ref = mirror.add("1.0.0", new)
    await mirror.state.remember_digest("npm", ref.cache_key, f"sha1:{sha('sha1', SMALL).hexdigest}")
    mirror.add("1.0.0", new, digests=(sha("sha512", new),))
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 502
    assert "since it was first mirrored" in (await response.json())["error"]
    assert blob_files(mirror.directory) == []


async def test_without_declared_digests_the_first_bytes_are_pinned(mirror: Mirror) -> None:
    ref = mirror.add("1.0.0", SMALL, digests=())
    first = await mirror.client.get("/files/1.0.0")
    assert await first.read() == SMALL
    # Evicted, and upstream now serves other bytes for the same version.
    entry = await mirror.blobs.lookup(ref.cache_key)
    assert entry is not None
    entry.path.unlink()
    mirror.blobs.forget(ref.cache_key)
    mirror.fake.add("/files/1.0.0", b"different bytes")
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 502
    assert "since it was first mirrored" in (await response.json())["error"]


async def test_ledger_records_gets_but_not_heads(mirror: Mirror) -> None:
    mirror.add("1.0.0", SMALL)
    mirror.add("2.0.0", SMALL + b"2")
    assert (await mirror.client.get("/files/1.0.0")).status == 200  # miss
    assert (await mirror.client.get("/files/1.0.0")).status == 200  # hit
    assert (await mirror.client.head("/files/2.0.0")).status == 200
    await mirror.server.ledger.flush()
    assert await mirror.downloads(1) == ["1.0.0"]
    events = await mirror.state.downloads("npm", "left-pad")
    assert len(events) == 1  # a repeat by the same client is noted once
    assert {event.client for event in events} == {"127.0.0.1"}
    assert {event.filename for event in events} == {"1.0.0.tgz"}


async def test_a_failing_ledger_never_fails_the_download(mirror: Mirror) -> None:
    mirror.add("1.0.0", SMALL)
    await mirror.state.close()  # every state call now fails
    await preload(mirror, mirror.refs["1.0.0"], SMALL)
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 200
    assert await response.read() == SMALL
    await mirror.server.close()
    assert mirror.sample("mirror_state_errors_total", backend="local") == 1


async def test_client_leaving_mid_stream_does_not_stop_the_store(mirror: Mirror) -> None:
    mirror.add("3.0.0", BIG, slow=True)
    mirror.slow.release()
    response = await mirror.client.get("/files/3.0.0")
    assert response.status == 200
    await response.content.readexactly(64 * 1024)
    response.close()
    for _ in range(500):
        if await mirror.stored("3.0.0"):
            break
        await asyncio.sleep(0.01)
    assert await mirror.stored("3.0.0")
    again = await mirror.client.get("/files/3.0.0")
    assert await again.read() == BIG
    assert mirror.slow.requests == 1
    assert temp_files(mirror.directory) == []


async def test_close_cancels_downloads_and_removes_temp_files(mirror: Mirror) -> None:
    mirror.add("3.0.0", BIG, slow=True)
    waiting = asyncio.create_task(mirror.client.get("/files/3.0.0"))
    await wait_for_misses(mirror, 1)
    for _ in range(500):  # the upstream request is out and held
        if mirror.slow.requests:
            break
        await asyncio.sleep(0.01)
    await mirror.server.close()
    response = await waiting
    assert response.status == 503
    assert temp_files(mirror.directory) == []
    assert blob_files(mirror.directory) == []
    mirror.slow.release()


@pytest.mark.parametrize("disk", [SMALL_DISK], indirect=True)
@pytest.mark.parametrize("body", [SMALL, BIG], ids=["small", "big"])
async def test_a_full_disk_still_serves_verified_bytes_uncached(
    mirror: Mirror, disk: Path, body: bytes
) -> None:
    fill_disk(disk)
    mirror.add("1.0.0", body)
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 200
    assert await response.read() == body
    assert response.headers["Cache-Control"] == "no-store"
    assert blob_files(mirror.directory) == []
    assert temp_files(mirror.directory) == []
    assert mirror.sample("mirror_uncached_serves_total", ecosystem="npm") == 1
    head = await mirror.client.head("/files/1.0.0")
    assert head.status == 200
    assert head.headers["Cache-Control"] == "no-store"
    # Answered by an upstream HEAD (after one more attempt to store), not a relayed body.
    assert mirror.fake.count("/files/1.0.0", method="HEAD") == 1


@pytest.mark.parametrize("disk", [SMALL_DISK], indirect=True)
async def test_a_full_disk_never_relays_a_complete_wrong_file(mirror: Mirror, disk: Path) -> None:
    fill_disk(disk)
    evil = BIG[:-10] + b"0123456789"
    mirror.add("1.0.0", BIG, served=evil)
    response = await mirror.client.get("/files/1.0.0")
    assert response.status == 200  # headers went out once more than the tail had arrived
    received = bytearray()

    async def read_all() -> None:
        async for chunk in response.content.iter_any():
            received.extend(chunk)

    with pytest.raises(aiohttp.ClientPayloadError):
        await read_all()
    assert len(received) <= len(BIG) - HOLD_BACK
    # A small file is verified before any header: a clean 502.
    mirror.add("2.0.0", SMALL, served=SMALL[:-1] + b"!")
    refused = await mirror.client.get("/files/2.0.0")
    assert refused.status == 502
    assert (await refused.json())["reason"] == "integrity"


# review fixes: what an early answer may and may not do ---------------------------------------


async def test_what_a_client_earns_upstream_is_no_upstream_failure(
    mirror: Mirror, caplog: pytest.LogCaptureFixture
) -> None:
    """A range past the end of a file of undeclared size (upstream: 416) and an upstream that
    refuses HEAD (405) are the client's doing or the upstream's taste, not an outage: no
    warning, no error counted, and the client gets its answer from the download."""
    caplog.set_level(logging.INFO, logger="mirror")
    mirror.add("1.0.0", SMALL)  # no size declared: upstream is asked for the range
    past = await mirror.client.get("/files/1.0.0", headers={"Range": "bytes=99999999-99999999"})
    assert past.status == 416
    assert past.headers["Content-Range"] == f"bytes */{len(SMALL)}"
    assert ranged_gets(mirror, "/files/1.0.0") == 1
    mirror.add("2.0.0", SMALL)
    mirror.fake.fail("/files/2.0.0", 405, method="HEAD")
    head = await mirror.client.head("/files/2.0.0")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(SMALL))
    assert mirror.fake.count("/files/2.0.0", method="HEAD") == 1
    assert await mirror.stored("1.0.0")
    assert await mirror.stored("2.0.0")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    for kind in ("http-4xx", "http-5xx"):
        assert mirror.sample("mirror_upstream_errors_total", ecosystem="npm", kind=kind) == 0


async def test_a_relay_is_cut_when_the_download_fails_verification(mirror: Mirror) -> None:
    evil = BIG[:-1] + b"!"
    mirror.add("3.0.0", BIG, served=evil, slow=True)
    mirror.slow.hold_ranges = True  # the range stalls halfway, until told to end cleanly
    ranged = await mirror.client.get("/files/3.0.0", headers={"Range": "bytes=0-199999"})
    assert ranged.status == 206
    mirror.slow.release()  # the download: all of it, then verification fails
    for _ in range(500):  # bounded: 5 s
        if mirror.sample("mirror_integrity_failures_total", ecosystem="npm", cause="mismatch"):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    mirror.slow.ranges_resumed.set()  # upstream would end the range cleanly now
    with pytest.raises(aiohttp.ClientPayloadError):
        await ranged.read()  # cut: never a clean end of bytes now known bad
    # Known bad: nothing more of it is answered early; the next download says why.
    again = await mirror.client.get("/files/3.0.0", headers={"Range": "bytes=0-9"})
    assert again.status == 502
    assert (await again.json())["reason"] == "integrity"
    head = await mirror.client.head("/files/3.0.0")
    assert head.status == 502
    assert mirror.slow.ranges == 1
    assert not await mirror.stored("3.0.0")


async def test_no_early_answer_while_the_first_seen_pin_cannot_be_checked(
    mirror: Mirror, tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    down = LocalState(tmp_path / "down.sqlite3")  # never opened: every call fails
    server = ArtifactServer(
        blobs=mirror.blobs, upstream=mirror.upstream, state=down, metrics=Metrics(),
        clock=mirror.state.clock, state_timeout=timedelta(milliseconds=50),
    )  # fmt: skip

    async def handler(request: web.Request) -> web.StreamResponse:
        return await server.serve(request, mirror.refs[request.match_info["name"]])

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/files/{name}", handler)
    client = await aiohttp_client(app)
    try:
        mirror.add("3.0.0", BIG, digests=(sha("sha256", BIG),), size=len(BIG))
        head = await client.head("/files/3.0.0")
        assert (head.status, head.headers["Content-Length"]) == (200, str(len(BIG)))
        ranged = await client.get("/files/3.0.0", headers={"Range": "bytes=-100"})
        assert (ranged.status, await ranged.read()) == (206, BIG[-100:])
        # Both waited for the verified download: upstream got no HEAD and no ranged GET.
        assert mirror.fake.count("/files/3.0.0", method="HEAD") == 0
        assert ranged_gets(mirror, "/files/3.0.0") == 0
        assert full_gets(mirror, "/files/3.0.0") == 1
    finally:
        await server.close()


async def test_a_client_that_stops_reading_frees_its_relay_slot(
    mirror: Mirror, aiohttp_client: AiohttpClient
) -> None:
    server = ArtifactServer(
        blobs=mirror.blobs, upstream=mirror.upstream, state=mirror.state, metrics=Metrics(),
        clock=mirror.state.clock, range_relays=1, range_relay_deadline=timedelta(seconds=0.5),
    )  # fmt: skip

    async def handler(request: web.Request) -> web.StreamResponse:
        return await server.serve(request, mirror.refs[request.match_info["name"]])

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/files/{name}", handler)
    client = await aiohttp_client(app)
    huge = bytes(range(256)) * (RANGE_RELAY_MAX // 256 + 4096)
    mirror.add("9.0.0", huge)
    mirror.fake.hold_body("/files/9.0.0")  # the download never ends in this test
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        stuck.connect(("127.0.0.1", client.port))
        stuck.sendall(
            b"GET /files/9.0.0 HTTP/1.1\r\nHost: mirror\r\n"
            + f"Range: bytes=0-{RANGE_RELAY_MAX - 1}\r\n\r\n".encode()
        )  # and never reads: the relay's writes block once the buffers are full
        await mirror.fake.wait_for("/files/9.0.0", 2)  # the download and the range
        await asyncio.sleep(1.5)  # past the deadline: the relay is cut, its slot free
        async with asyncio.timeout(5):
            ranged = await client.get("/files/9.0.0", headers={"Range": "bytes=10-19"})
            assert (ranged.status, await ranged.read()) == (206, huge[10:20])
        assert ranged_gets(mirror, "/files/9.0.0") == 2  # relayed, not left to the download
    finally:
        stuck.close()
        mirror.fake.release("/files/9.0.0")
        await server.close()


async def test_a_size_upstream_disagrees_on_is_logged_once(
    mirror: Mirror, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mirror")
    mirror.add("1.0.0", SMALL, size=len(SMALL) + 1)
    mirror.fake.hold_body("/files/1.0.0")
    asked = [
        asyncio.create_task(mirror.client.head("/files/1.0.0")),
        asyncio.create_task(mirror.client.get("/files/1.0.0", headers={"Range": "bytes=0-9"})),
        asyncio.create_task(mirror.client.get("/files/1.0.0", headers={"Range": "bytes=-9"})),
    ]
    await wait_for_misses(mirror, 3)
    await mirror.fake.wait_for("/files/1.0.0", 4)  # the download, the HEAD, two ranges
    await asyncio.sleep(0.1)
    mirror.fake.release("/files/1.0.0")
    assert [response.status for response in await asyncio.gather(*asked)] == [502, 502, 502]
    said = [r.getMessage() for r in caplog.records if "metadata" in r.getMessage()]
    assert said == [
        f"upstream says {mirror.refs['1.0.0'].cache_key} has {len(SMALL)} bytes, its metadata "
        f"{len(SMALL) + 1}: answering it only once downloaded and verified"
    ]
