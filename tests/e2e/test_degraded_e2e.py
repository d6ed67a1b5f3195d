"""`mirror serve` (two worker processes) on a real redis-server that hangs (SIGSTOP): cached
files keep flowing within `state.timeout`, a first fetch is served verified, and the writes
it could not make land once Redis answers again (SIGCONT)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import aiohttp
from pytest_aiohttp import AiohttpServer

from mirror.state.redis import RedisState
from tests.e2e.conftest import StartMirror
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry

OLD = datetime.now(UTC) - timedelta(days=200)
TIMEOUT = 0.5  # the default state.timeout
MARGIN = 1.5
JAR = "org/example/lib/1.0.0/lib-1.0.0.jar"
JAR_2 = "org/example/lib/1.1.0/lib-1.1.0.jar"


async def test_a_hung_redis_holds_up_no_download(
    aiohttp_server: AiohttpServer,
    start_mirror: StartMirror,
    stoppable_redis: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, url = stoppable_redis
    npm = FakeNpmRegistry()
    npm.add_version("left-pad", "1.0.0", published=OLD)
    npm.add_version("left-pad", "1.1.0", published=OLD)
    await npm.start(aiohttp_server)
    maven = FakeMavenRepository()
    maven.add_version("org.example", "lib", "1.0.0", published=OLD)
    maven.add_version("org.example", "lib", "1.1.0", published=OLD + timedelta(days=1))
    await maven.start(aiohttp_server)
    mirror = await start_mirror(
        {
            "MIRROR_REDIS_URL": url,
            "MIRROR_NPM_UPSTREAM": npm.url,
            "MIRROR_MAVEN_UPSTREAM": maven.url,
        },
        workers=2,
    )

    async def get(path: str) -> tuple[int, bytes, float]:
        # A new connection each time: the kernel spreads them over both workers.
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            async with session.get(mirror.url + path) as response:
                body = await response.read()
                return response.status, body, time.monotonic() - started

    tarball = "/npm/left-pad/-/left-pad-1.0.0.tgz"
    assert (await get(tarball))[0] == 200
    assert (await get("/maven/" + JAR))[0] == 200

    process.send_signal(signal.SIGSTOP)
    for _ in range(6):
        for path, expected in (
            (tarball, npm.version("left-pad", "1.0.0").tarball),
            ("/maven/" + JAR, maven.body(JAR)),
        ):
            status, body, took = await get(path)
            assert (status, body) == (200, expected), body[:300]
            assert took < TIMEOUT + MARGIN, f"{path} took {took:.2f} s"
    for path, expected in (
        ("/npm/left-pad/-/left-pad-1.1.0.tgz", npm.version("left-pad", "1.1.0").tarball),
        ("/maven/" + JAR_2, maven.body(JAR_2)),
    ):
        status, body, took = await get(path)
        assert (status, body) == (200, expected), body[:300]
        assert took < TIMEOUT + MARGIN, f"{path} took {took:.2f} s"

    process.send_signal(signal.SIGCONT)
    state = RedisState(url)
    await state.open()
    try:
        key = "npm/left-pad/1.1.0/left-pad-1.1.0.tgz"
        # Bounded: about 40 s (each worker retries its own writes, backing off up to 5 s).
        for _ in range(400):
            published = await state.get_publish_time("maven", "org.example:lib:1.1.0")
            landed = (await state.pinned_digests()).get("npm", {}).get(key)
            if published is not None and landed is not None:
                break
            await asyncio.sleep(0.1)
        assert published == (OLD + timedelta(days=1)).replace(microsecond=0)
        pinned = await state.remember_digest("npm", key, "sha256:not-this-one")
        assert pinned.startswith("sha512:")
    finally:
        await state.close()
    assert "is failing" in mirror.log()
