"""Three `mirror serve` replicas (separate processes and ports) on one real, persistent
redis-server and one shared cache directory, each with its own state dir, driven round-robin
as a load balancer would: one upstream fetch per artifact across them, one policy, and a
Redis restart that loses nothing. A replica's fetch locks are in its own state dir, so theirs
cannot see each other's, as on separate hosts: one fetch across them is the claim in Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.conftest import start_redis
from tests.e2e.conftest import RunningMirror, StartMirror
from tests.fakes.npm import FakeNpmRegistry

OLD = datetime.now(UTC) - timedelta(days=200)
TOKEN = "replica-token-0123456789"
PROPAGATION = 1.0  # a block reaches every replica within a second


class Redis:
    """A persistent redis-server of the test's own that can be restarted on its port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process, self.url = start_redis(workdir, persistent=True)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        self.process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
        self.process.wait(timeout=10)

    def start(self) -> None:
        self.process, _ = start_redis(self.workdir, self.port, persistent=True)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = Redis(workdir)
    try:
        yield server
    finally:
        server.process.kill()
        server.process.wait(timeout=10)


async def get(mirror: RunningMirror, path: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(mirror.url + path, timeout=aiohttp.ClientTimeout(total=30)) as response,
    ):
        return response.status, await response.read()


async def test_replicas_share_one_cache_and_one_policy(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, redis: Redis, tmp_path: Path
) -> None:
    npm = FakeNpmRegistry()
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        npm.add_version("left-pad", version, published=OLD)
    await npm.start(aiohttp_server)
    cache = tmp_path / "cache"
    replicas = [
        await start_mirror(
            {
                "MIRROR_REDIS_URL": redis.url,
                "MIRROR_NPM_UPSTREAM": npm.url,
                "MIRROR_STATE_DIR": str(tmp_path / f"state-{index}"),
                "MIRROR_ADMIN_TOKENS": f"ops:{TOKEN}",
            },
            data_dir=cache,
        )
        for index in range(3)
    ]

    def tarball(version: str) -> tuple[str, str, bytes]:
        return (
            f"/npm/left-pad/-/left-pad-{version}.tgz",
            npm.tarball_path("left-pad", version),
            npm.version("left-pad", version).tarball,
        )

    # Cached through one replica, served by the others from the shared cache.
    path, upstream_path, body = tarball("1.0.0")
    assert await get(replicas[0], path) == (200, body)
    for replica in replicas[1:]:
        assert await get(replica, path) == (200, body)
    assert npm.upstream.count(upstream_path) == 1

    # 30 concurrent misses spread over the three: one upstream fetch.
    path, upstream_path, body = tarball("1.1.0")
    npm.upstream.hold(upstream_path)
    misses = [asyncio.create_task(get(replicas[index % 3], path)) for index in range(30)]
    for _ in range(100):  # bounded: about 10 s
        if npm.upstream.count(upstream_path) >= 1:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # every request has reached its replica and is waiting
    npm.upstream.release(upstream_path)
    answers = await asyncio.gather(*misses)
    assert answers == [(200, body)] * 30
    assert npm.upstream.count(upstream_path) == 1
    assert not (cache / "artifacts" / "claims").exists()  # no lock shared through the cache
    assert all((tmp_path / f"state-{index}" / "claims").is_dir() for index in range(3))

    # A block through one replica is enforced by all within a second, cached file or not.
    blocked, _, _ = tarball("1.0.0")
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            replicas[0].url + "/api/v1/blocks",
            json={"ecosystem": "npm", "package": "left-pad", "versions": "1.0.0", "reason": "bad"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status == 201, await response.text()
    created = time.monotonic()
    for replica in replicas:
        while (await get(replica, blocked))[0] != 403:
            assert time.monotonic() - created < PROPAGATION, f"{replica.url} still serves it"
            await asyncio.sleep(0.02)

    # Redis restarted mid-run: cached files keep flowing meanwhile, and no block is lost.
    allowed, _, allowed_body = tarball("1.1.0")
    redis.stop()
    for replica in replicas:
        assert await get(replica, allowed) == (200, allowed_body)
        assert (await get(replica, blocked))[0] == 403
    redis.start()
    for replica in replicas:
        assert (await get(replica, blocked))[0] == 403
        assert await get(replica, allowed) == (200, allowed_body)
    async with (
        aiohttp.ClientSession() as session,
        session.get(replicas[2].url + "/api/v1/blocks") as response,
    ):
        blocks = (await response.json())["blocks"]
    assert [(block["package"], block["versions"]) for block in blocks] == [("left-pad", "1.0.0")]
    # A file first asked for after the restart is fetched once and served by all.
    path, upstream_path, body = tarball("1.2.0")
    for replica in replicas:
        assert await get(replica, path) == (200, body)
    assert npm.upstream.count(upstream_path) == 1
