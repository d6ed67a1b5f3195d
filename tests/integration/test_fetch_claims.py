"""One upstream fetch per artifact across hosts that share one cache volume: the claim in shared
state (a real redis-server) across hosts, the file lock within a host.

Two hosts on one machine, honestly: two artifact servers over one blob directory, each with a
claims directory of its own (the server's state dir: per host by definition), so their file
locks cannot see each other; only the claim in Redis joins them. Two servers with the same
claims directory are two worker processes of one host."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient, AiohttpServer

from mirror.app import error_middleware
from mirror.artifacts.download import CLUSTER_CLAIM_TTL, HOLD_BACK
from mirror.artifacts.serve import ArtifactServer
from mirror.blobs.claims import open_announced
from mirror.blobs.store import BlobStore
from mirror.clock import SystemClock
from mirror.config import UpstreamConfig
from mirror.metrics import Metrics
from mirror.model import ArtifactRef, Digest
from mirror.state.base import FetchHolder, StateStore
from mirror.state.local import LocalState
from mirror.state.redis import RedisState
from mirror.upstream import Upstream, UpstreamScope
from tests.fakes.upstream import FakeUpstream

CONFIG = UpstreamConfig(
    connect_timeout=timedelta(seconds=5),
    read_timeout=timedelta(seconds=20),
    retries=0,
    backoff=timedelta(0),
)
STATE_TIMEOUT = timedelta(milliseconds=500)
BIG = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB
CLOCK = SystemClock()


def sha512(body: bytes) -> Digest:
    return Digest(algorithm="sha512", hexdigest=hashlib.sha512(body).hexdigest())


class StallingUpstream:
    """Serves `body` in 64 KiB chunks; stalls after `pause_after` bytes until `resumed` is set.
    Counts requests."""

    def __init__(self, body: bytes, pause_after: int) -> None:
        self.body = body
        self.pause_after = pause_after
        self.requests = 0
        self.sent = 0
        self.resumed = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/{name}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(self.body)
        await response.prepare(request)
        for start in range(0, len(self.body), 64 * 1024):
            if start >= self.pause_after:
                await self.resumed.wait()
            chunk = self.body[start : start + 64 * 1024]
            await response.write(chunk)
            self.sent = start + len(chunk)
            await asyncio.sleep(0.002)
        await response.write_eof()
        return response


@dataclass
class Host:
    """One worker process of one host: its own memory, state connection and claims dir; the
    shared cache directory."""

    client: TestClient[web.Request, web.Application]
    server: ArtifactServer
    blobs: BlobStore
    state: StateStore

    async def get(self, name: str) -> tuple[int, bytes]:
        response = await self.client.get(f"/files/{name}")
        return response.status, await response.read()

    async def close(self) -> None:
        await self.server.close()
        await self.blobs.close()
        await self.state.close()


@dataclass
class Cluster:
    cache: Path
    refs: dict[str, ArtifactRef]
    start: Callable[..., Awaitable[Host]]

    def add(self, name: str, url: str, body: bytes) -> ArtifactRef:
        ref = ArtifactRef(
            ecosystem="npm",
            package="left-pad",
            version=name,
            filename=f"{name}.tgz",
            upstream_url=url,
            digests=(sha512(body),),
            content_type="application/gzip",
        )
        self.refs[name] = ref
        return ref


@pytest.fixture
async def cluster(
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
) -> AsyncIterator[Cluster]:
    """`start(host, state)`: a worker of `host` (its claims dir) on `state`, over one cache."""
    cache = tmp_path / "cache"
    refs: dict[str, ArtifactRef] = {}
    hosts: list[Host] = []
    upstreams: list[Upstream] = []

    async def start(host: str, state: StateStore, *, file_hosts: tuple[str, ...] = ()) -> Host:
        metrics = Metrics(CollectorRegistry())
        await state.open()
        scope = UpstreamScope.of("npm", fake_upstream.url("/"), file_hosts=file_hosts)
        upstream = Upstream(CONFIG, scopes=[scope], metrics=metrics)
        await upstream.start()
        upstreams.append(upstream)
        blobs = BlobStore(
            cache, clock=CLOCK, metrics=metrics, claims_dir=tmp_path / host / "claims"
        )
        await blobs.open()
        server = ArtifactServer(
            blobs=blobs, upstream=upstream, state=state, metrics=metrics, clock=CLOCK,
            state_timeout=STATE_TIMEOUT,
        )  # fmt: skip

        async def handler(request: web.Request) -> web.StreamResponse:
            return await server.serve(request, refs[request.match_info["name"]])

        app = web.Application(middlewares=[error_middleware])
        app.router.add_get("/files/{name}", handler)
        worker = Host(client=await aiohttp_client(app), server=server, blobs=blobs, state=state)
        hosts.append(worker)
        return worker

    try:
        yield Cluster(cache=cache, refs=refs, start=start)
    finally:
        for worker in hosts:
            await worker.close()
        for upstream in upstreams:
            await upstream.close()


def redis_state(url: str, namespace: str) -> RedisState:
    return RedisState(url, namespace=namespace)


@pytest.fixture
def namespace() -> str:
    return f"claims-{uuid.uuid4().hex[:8]}"


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


# the claim in shared state -----------------------------------------------------------------


async def test_a_claim_in_redis_is_held_renewed_and_released_by_its_owner_only(
    redis_url: str, namespace: str
) -> None:
    state = redis_state(redis_url, namespace)
    await state.open()
    ttl = timedelta(seconds=5)
    try:
        assert await state.claim_fetch("k", "host-a/1/x", ttl) == FetchHolder("host-a/1/x")
        assert await state.claim_fetch("k", "host-b/1/y", ttl) == FetchHolder("host-a/1/x")
        assert await state.renew_fetch("k", "host-a/1/x", ttl, "0" * 32 + ".part")
        assert await state.claim_fetch("k", "host-b/1/y", ttl) == FetchHolder(
            "host-a/1/x", "0" * 32 + ".part"
        )
        # Another owner can neither renew nor release it; an owner whose name is a prefix
        # of the holder's is another owner.
        assert not await state.renew_fetch("k", "host-b/1/y", ttl, "1" * 32 + ".part")
        assert not await state.renew_fetch("k", "host-a/1/", ttl)
        await state.release_fetch("k", "host-b/1/y")
        await state.release_fetch("k", "host-a/1/")
        assert (await state.claim_fetch("k", "host-b/1/y", ttl)).owner == "host-a/1/x"
        await state.release_fetch("k", "host-a/1/x")
        assert await state.claim_fetch("k", "host-b/1/y", ttl) == FetchHolder("host-b/1/y")
        # Keys are apart.
        assert await state.claim_fetch("other", "host-a/1/x", ttl) == FetchHolder("host-a/1/x")
    finally:
        await state.close()


async def test_an_expired_claim_goes_to_the_next_owner_and_a_late_release_leaves_it(
    redis_url: str, namespace: str
) -> None:
    state = redis_state(redis_url, namespace)
    await state.open()
    try:
        assert (await state.claim_fetch("k", "dead", timedelta(milliseconds=200))).owner == "dead"
        await asyncio.sleep(0.3)
        ttl = timedelta(seconds=5)
        assert await state.claim_fetch("k", "next", ttl) == FetchHolder("next")
        assert not await state.renew_fetch("k", "dead", ttl)
        await state.release_fetch("k", "dead")
        assert (await state.claim_fetch("k", "third", ttl)).owner == "next"
        with pytest.raises(ValueError, match="one non-empty line"):
            await state.claim_fetch("k", "two\nlines", ttl)
    finally:
        await state.close()


async def test_the_embedded_state_always_grants(tmp_path: Path) -> None:
    """One host's state: its workers share a fetch by file lock alone."""
    state = LocalState(tmp_path / "state.sqlite3")
    await state.open()
    try:
        ttl = timedelta(seconds=5)
        assert await state.claim_fetch("k", "a", ttl) == FetchHolder("a")
        assert await state.claim_fetch("k", "b", ttl) == FetchHolder("b")
        assert await state.renew_fetch("k", "a", ttl, "x")
        await state.release_fetch("k", "a")
    finally:
        await state.close()


def test_only_a_temp_file_of_the_store_is_ever_opened(tmp_path: Path) -> None:
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("not for clients")
    name = "a" * 32 + ".part"
    (temp_dir / name).write_bytes(b"in progress")
    peer = open_announced(name, temp_dir)
    assert peer is not None
    peer.close()
    link = "b" * 32 + ".part"
    (temp_dir / link).symlink_to(secret)
    for announced in (str(secret), "../secret", str(temp_dir / name), link, "", "x.part"):
        assert open_announced(announced, temp_dir) is None, announced


# two hosts, one cache ----------------------------------------------------------------------


async def test_concurrent_misses_on_two_hosts_make_one_upstream_request(
    cluster: Cluster, fake_upstream: FakeUpstream, redis_url: str, namespace: str
) -> None:
    fake_upstream.add("/files/one.tgz", BIG)
    cluster.add("one", fake_upstream.url("/files/one.tgz"), BIG)
    # Host a; host b with two worker processes (one claims dir).
    workers = [
        await cluster.start("host-a", redis_state(redis_url, namespace)),
        await cluster.start("host-b", redis_state(redis_url, namespace)),
        await cluster.start("host-b", redis_state(redis_url, namespace)),
    ]
    fake_upstream.hold("/files/one.tgz")
    misses = [asyncio.create_task(workers[i % 3].get("one")) for i in range(12)]
    await until(lambda: fake_upstream.count("/files/one.tgz") >= 1)
    await asyncio.sleep(0.5)  # every worker now waits on a claim, or holds it
    fake_upstream.release("/files/one.tgz")
    assert await asyncio.gather(*misses) == [(200, BIG)] * 12
    assert fake_upstream.count("/files/one.tgz") == 1
    # Then a hit everywhere, and no claim left behind.
    for worker in workers:
        assert await worker.get("one") == (200, BIG)
    assert fake_upstream.count("/files/one.tgz") == 1
    probe = redis_state(redis_url, namespace)
    await probe.open()
    try:
        key = cluster.refs["one"].cache_key
        for _ in range(50):  # released in the background, within state.timeout
            if (await probe.claim_fetch(key, "probe", CLUSTER_CLAIM_TTL)).owner == "probe":
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the claim was not released")
    finally:
        await probe.close()


async def test_without_a_claim_across_hosts_each_host_fetches(
    cluster: Cluster, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The control: with the embedded state (one host's), only the file lock is there, and two
    hosts fetch once each. The claim in Redis is what makes it one."""
    fake_upstream.add("/files/one.tgz", BIG)
    cluster.add("one", fake_upstream.url("/files/one.tgz"), BIG)
    workers = [
        await cluster.start(host, LocalState(tmp_path / host / "state.sqlite3"))
        for host in ("host-a", "host-b")
    ]
    fake_upstream.hold("/files/one.tgz")
    misses = [asyncio.create_task(worker.get("one")) for worker in workers]
    await until(lambda: fake_upstream.count("/files/one.tgz") >= 2)
    fake_upstream.release("/files/one.tgz")
    assert await asyncio.gather(*misses) == [(200, BIG)] * 2
    assert fake_upstream.count("/files/one.tgz") == 2


async def test_a_waiting_host_streams_the_holders_growing_file(
    cluster: Cluster, aiohttp_server: AiohttpServer, redis_url: str, namespace: str
) -> None:
    """Clients of the waiting host get bytes while the other host downloads (pip gives up on
    a connection silent for 15 s), and the unverified tail only once it is verified."""
    slow = StallingUpstream(BIG, pause_after=2 * 1024 * 1024)
    server = await aiohttp_server(slow.app, host="127.0.0.1")
    hosts = (f"127.0.0.1:{server.port}",)
    cluster.add("big", str(server.make_url("/big.tgz")), BIG)
    holder = await cluster.start("host-a", redis_state(redis_url, namespace), file_hosts=hosts)
    waiter = await cluster.start("host-b", redis_state(redis_url, namespace), file_hosts=hosts)
    first = asyncio.create_task(holder.client.get("/files/big"))
    await until(lambda: slow.sent >= slow.pause_after)
    response = await waiter.client.get("/files/big")
    assert response.status == 200
    head = await asyncio.wait_for(response.content.readexactly(512 * 1024), 5)
    assert head == BIG[: 512 * 1024]
    more = await asyncio.wait_for(response.content.read(4 * 1024 * 1024), 5)
    assert len(head) + len(more) <= slow.sent - HOLD_BACK + 64 * 1024
    slow.resumed.set()
    rest = await response.read()
    assert head + more + rest == BIG
    assert await (await first).read() == BIG
    assert slow.requests == 1


async def test_a_holder_that_died_delays_another_host_at_most_the_ttl(
    cluster: Cluster, fake_upstream: FakeUpstream, redis_url: str, namespace: str
) -> None:
    fake_upstream.add("/files/one.tgz", BIG)
    ref = cluster.add("one", fake_upstream.url("/files/one.tgz"), BIG)
    host = await cluster.start("host-a", redis_state(redis_url, namespace))
    # A host took the claim, said where it writes, and died: never renewed, never released.
    dead = redis_state(redis_url, namespace)
    await dead.open()
    try:
        started = time.monotonic()
        assert (await dead.claim_fetch(ref.cache_key, "dead/1/x", CLUSTER_CLAIM_TTL)).owner
        assert await dead.renew_fetch(
            ref.cache_key, "dead/1/x", CLUSTER_CLAIM_TTL, "f" * 32 + ".part"
        )
    finally:
        await dead.close()
    assert await host.get("one") == (200, BIG)
    waited = time.monotonic() - started
    ttl = CLUSTER_CLAIM_TTL.total_seconds()
    assert ttl - 0.5 <= waited <= ttl + 2.0
    assert fake_upstream.count("/files/one.tgz") == 1


async def test_a_hung_redis_holds_a_download_up_no_longer_than_the_state_timeout(
    cluster: Cluster,
    fake_upstream: FakeUpstream,
    stoppable_redis: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, url = stoppable_redis
    for name in ("warm", "one"):
        fake_upstream.add(f"/files/{name}.tgz", BIG)
        cluster.add(name, fake_upstream.url(f"/files/{name}.tgz"), BIG)
    host = await cluster.start("host-a", RedisState(url, namespace="hung"))
    assert await host.get("warm") == (200, BIG)  # connected, as in steady operation
    os.kill(process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert await asyncio.wait_for(host.get("one"), 10) == (200, BIG)
        assert time.monotonic() - started <= STATE_TIMEOUT.total_seconds() + 1.0
        assert fake_upstream.count("/files/one.tgz") == 1
    finally:
        os.kill(process.pid, signal.SIGCONT)


async def test_a_claim_that_comes_to_a_host_whose_followed_fetch_failed_is_released(
    cluster: Cluster, fake_upstream: FakeUpstream, redis_url: str, namespace: str
) -> None:
    """A host streamed another host's growing file to its client; that host then gave up.
    The claim comes to the follower, which cannot fetch (bytes went out already: the client
    gets a broken answer to retry): it must drop the claim at once, not leave the other hosts
    waiting out its TTL."""
    fake_upstream.add("/files/one.tgz", BIG)
    ref = cluster.add("one", fake_upstream.url("/files/one.tgz"), BIG)
    follower = await cluster.start("host-a", redis_state(redis_url, namespace))
    other = redis_state(redis_url, namespace)
    await other.open()
    try:
        name = uuid.uuid4().hex + ".part"
        (cluster.cache / "tmp").mkdir(parents=True, exist_ok=True)
        (cluster.cache / "tmp" / name).write_bytes(BIG[: 2 * HOLD_BACK])
        assert (await other.claim_fetch(ref.cache_key, "other/1/x", CLUSTER_CLAIM_TTL)).owner
        assert await other.renew_fetch(ref.cache_key, "other/1/x", CLUSTER_CLAIM_TTL, name)
        response = await follower.client.get("/files/one")
        assert response.status == 200
        head = await asyncio.wait_for(response.content.readexactly(512 * 1024), 5)
        assert head == BIG[: 512 * 1024]
        await other.release_fetch(ref.cache_key, "other/1/x")  # it gave up
        with contextlib.suppress(aiohttp.ClientPayloadError):
            assert len(head) + len(await response.read()) < len(BIG)
        started = time.monotonic()
        while (await other.claim_fetch(ref.cache_key, "probe", CLUSTER_CLAIM_TTL)).owner != (
            "probe"
        ):
            assert time.monotonic() - started < CLUSTER_CLAIM_TTL.total_seconds() / 2
            await asyncio.sleep(0.02)
        assert fake_upstream.count("/files/one.tgz") == 0
    finally:
        await other.close()
