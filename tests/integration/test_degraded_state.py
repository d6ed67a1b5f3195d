"""A full disk or a slow Redis degrades, never refuses: the whole app against a real
redis-server (SIGSTOPped: a hung Redis, the fault a real part produces) or an embedded SQLite
state on a filesystem that is really full, with fake npm and Maven upstreams on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.services import SERVICES
from mirror.state.redis import RedisState
from tests.conftest import wait_until
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import OLD, Client, MakeClient, fill_disk, tmpfs

TIMEOUT = 0.5  # state.timeout's default
# Time a request may take beyond the bound: fake upstreams on loopback, a busy CI machine.
MARGIN = 1.5
JAR = "org/example/lib/1.0.0/lib-1.0.0.jar"
JAR_2 = "org/example/lib/1.1.0/lib-1.1.0.jar"


@pytest.fixture
async def npm(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        registry.add_version("left-pad", version, published=OLD)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
async def maven(aiohttp_server: AiohttpServer) -> FakeMavenRepository:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    repo.add_version("org.example", "lib", "1.1.0", published=OLD + timedelta(days=1))
    await repo.start(aiohttp_server)
    return repo


async def make_worker(
    make_mirror: MakeClient,
    data_dir: Path,
    npm: FakeNpmRegistry,
    maven: FakeMavenRepository,
    **settings: str,
) -> Client:
    """One worker's app: its own memory, the shared data dir and state."""
    client = await make_mirror(
        data_dir=data_dir,
        MIRROR_NPM_UPSTREAM=npm.url,
        MIRROR_MAVEN_UPSTREAM=maven.url,
        MIRROR_UPSTREAM_RETRIES="0",
        **settings,
    )
    # A copy-less worker on a brand-new Redis waits for it to settle (LivePolicy).
    assert await wait_until(lambda: client.app[SERVICES].policy.settling is None, 10)
    return client


async def timed_get(client: Client, path: str) -> tuple[int, bytes, float]:
    started = time.monotonic()
    response = await client.get(path)
    body = await response.read()
    return response.status, body, time.monotonic() - started


async def test_a_stopped_redis_holds_up_no_download_past_the_bound(
    make_mirror: MakeClient,
    npm: FakeNpmRegistry,
    maven: FakeMavenRepository,
    stoppable_redis: tuple[subprocess.Popen[bytes], str],
    tmp_path: Path,
) -> None:
    process, url = stoppable_redis
    data = tmp_path / "data"
    first = await make_worker(make_mirror, data, npm, maven, MIRROR_REDIS_URL=url)
    tarball = "/npm/left-pad/-/left-pad-1.0.0.tgz"
    assert (await first.get(tarball)).status == 200
    assert (await first.get("/maven/" + JAR)).status == 200
    # A second worker, started while Redis answers, has seen none of it.
    second = await make_worker(make_mirror, data, npm, maven, MIRROR_REDIS_URL=url)

    process.send_signal(signal.SIGSTOP)
    # Cached on disk, never seen by this worker: its publish time (Maven) is in Redis only.
    status, body, took = await timed_get(second, "/maven/" + JAR)
    assert status == 200, body
    assert body == maven.body(JAR)
    assert took < TIMEOUT + MARGIN
    status, body, took = await timed_get(second, tarball)
    assert (status, body) == (200, npm.version("left-pad", "1.0.0").tarball)
    assert took < TIMEOUT + MARGIN

    # A miss of a file whose pin this worker saw before (its blob evicted since).
    services = first.app[SERVICES]
    key = "npm/left-pad/1.0.0/left-pad-1.0.0.tgz"
    entry = await services.blobs.lookup(key)
    assert entry is not None
    entry.path.unlink()
    services.blobs.forget(key)
    status, body, took = await timed_get(first, tarball)
    assert (status, body) == (200, npm.version("left-pad", "1.0.0").tarball)
    assert took < TIMEOUT + MARGIN

    # Misses never seen anywhere: served, verified against the declared digest.
    for path, expected in (
        ("/npm/left-pad/-/left-pad-1.1.0.tgz", npm.version("left-pad", "1.1.0").tarball),
        ("/maven/" + JAR_2, maven.body(JAR_2)),
    ):
        status, body, took = await timed_get(second, path)
        assert (status, body) == (200, expected)
        assert took < TIMEOUT + MARGIN
    # ... and wrong bytes are still refused: the declared digest is checked as always.
    npm.upstream.add(npm.tarball_path("left-pad", "1.2.0"), b"not the published bytes")
    status, body, took = await timed_get(second, "/npm/left-pad/-/left-pad-1.2.0.tgz")
    assert status == 502, body
    assert took < TIMEOUT + MARGIN
    assert second.app[SERVICES].artifacts.shared.backlog >= 2

    # Redis answers again: the queued pins and publish times land.
    process.send_signal(signal.SIGCONT)
    state = RedisState(url)
    await state.open()
    try:
        shared = second.app[SERVICES].artifacts.shared
        assert await wait_until(lambda: shared.backlog == 0, 40)
        published = await state.get_publish_time("maven", "org.example:lib:1.1.0")
        assert published == OLD + timedelta(days=1)
        declared = npm.version("left-pad", "1.1.0").integrity
        pinned = await state.remember_digest(
            "npm", "npm/left-pad/1.1.0/left-pad-1.1.0.tgz", "sha256:not-this-one"
        )
        assert pinned.startswith("sha512:")
        assert declared.startswith("sha512-")
    finally:
        await state.close()


async def test_a_pin_written_late_that_differs_is_refused_from_then_on(
    make_mirror: MakeClient,
    npm: FakeNpmRegistry,
    maven: FakeMavenRepository,
    stoppable_redis: tuple[subprocess.Popen[bytes], str],
    tmp_path: Path,
) -> None:
    """While Redis was stopped, a worker pinned what upstream declares now; another digest
    had been remembered first: once Redis answers, the file is refused (an attack signal)."""
    process, url = stoppable_redis
    key = "npm/left-pad/1.1.0/left-pad-1.1.0.tgz"
    state = RedisState(url)
    await state.open()
    try:
        await state.remember_digest("npm", key, "sha512:" + "ab" * 64)
    finally:
        await state.close()
    worker = await make_worker(make_mirror, tmp_path / "data", npm, maven, MIRROR_REDIS_URL=url)
    process.send_signal(signal.SIGSTOP)
    tarball = "/npm/left-pad/-/left-pad-1.1.0.tgz"
    assert (await worker.get(tarball)).status == 200
    process.send_signal(signal.SIGCONT)
    shared = worker.app[SERVICES].artifacts.shared
    assert await wait_until(lambda: shared.backlog == 0, 40)
    assert shared.pinned("npm", key) == "sha512:" + "ab" * 64
    refused = await worker.get(tarball)
    assert refused.status == 502
    assert "changed the bytes" in (await refused.json())["error"]


# a full disk -------------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path) -> Iterator[str]:
    """`path` on a 4 MiB tmpfs when this process may mount one (root), else a plain
    directory whose state file is made read-only later (see `fill_up`: then only the state
    fails, the blob store keeps storing). Yields the method."""
    with tmpfs(path, "4m") as mounted:
        if not mounted and os.geteuid() == 0:
            # root ignores file modes, so the read-only fallback would not fail a write.
            pytest.skip("cannot mount a tmpfs here and, as root, cannot make the state read-only")
        yield "tmpfs" if mounted else "read-only"


def fill_up(path: Path, method: str) -> None:
    """Leave no byte free on the tmpfs; or, unmountable, make the state read-only (a real
    SQLite error too: "attempt to write a readonly database")."""
    if method == "tmpfs":
        fill_disk(path)
        return
    for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
        with contextlib.suppress(FileNotFoundError):
            (path / name).chmod(0o444)


@pytest.fixture
async def full_disk(tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    data = tmp_path / "small"
    with small_filesystem(data) as method:
        yield data, method


async def test_a_full_disk_keeps_installs_working(
    make_mirror: MakeClient,
    npm: FakeNpmRegistry,
    maven: FakeMavenRepository,
    full_disk: tuple[Path, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, method = full_disk
    worker = await make_worker(make_mirror, data, npm, maven)
    cached = "/npm/left-pad/-/left-pad-1.0.0.tgz"
    assert (await worker.get(cached)).status == 200
    assert (await worker.get("/maven/" + JAR)).status == 200
    fill_up(data, method)
    # Later workers find the disk full too.
    fresh = await make_worker(make_mirror, data, npm, maven)
    for client in (worker, fresh):
        status, body, _ = await timed_get(client, cached)
        assert (status, body) == (200, npm.version("left-pad", "1.0.0").tarball)
        status, body, _ = await timed_get(client, "/maven/" + JAR)
        assert (status, body) == (200, maven.body(JAR))
    # Misses: the first-seen digest and the publish time cannot be written; served uncached.
    for client in (worker, fresh):
        for version in ("1.1.0", "1.2.0"):
            status, body, _ = await timed_get(client, f"/npm/left-pad/-/left-pad-{version}.tgz")
            assert (status, body) == (200, npm.version("left-pad", version).tarball)
        status, body, _ = await timed_get(client, "/maven/" + JAR_2)
        assert (status, body) == (200, maven.body(JAR_2))
    shared = fresh.app[SERVICES].artifacts.shared
    assert shared.degraded or shared.backlog > 0, f"the state write never failed ({method})"
    # Retried in the background, logged once per outage (per worker), not once per retry.
    await asyncio.sleep(2)
    failing = [r for r in caplog.records if "shared state (local) is failing" in r.message]
    assert 1 <= len(failing) <= 2
