"""Losing the shared state, with real processes: `mirror serve` on a real redis-server of its
own (flushed, restarted empty, rolled back) or on the embedded SQLite file (deleted). The
mirror keeps enforcing the last-known rules, reports not ready naming the reason, logs one
ERROR per worker, and `mirror state restore` brings rules, pins and audit back."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from pytest_aiohttp import AiohttpServer

from tests.conftest import start_redis
from tests.e2e.conftest import REPO, RunningMirror, StartMirror
from tests.fakes.npm import FakeNpmRegistry

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token-0123456789"
PACKAGE = "qm-lost"
TARBALL_NAME = f"{PACKAGE}-1.0.0.tgz"
TARBALL = f"/npm/{PACKAGE}/-/{TARBALL_NAME}"
DEGRADED_LINE = "NOT TRUSTING THE SHARED STATE"
RESTORED_LINE = "the shared state is trusted again"
WORKERS = 2
# Fresh connections per check: with two workers on one socket, both answer some of them.
PARALLEL = 12
PROPAGATION_SECONDS = 1.5


@dataclass
class RedisServer:
    """A redis-server of this test's own (the session's one must not be flushed)."""

    workdir: Path
    url: str = ""
    process: Any = None

    def start(self, port: int | None = None) -> None:
        self.process, self.url = start_redis(self.workdir, port)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def restart_empty(self) -> None:
        """What a restart of a Redis without persistence does: same address, no data."""
        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self.stop()
        self.start(port)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version(PACKAGE, "1.0.0", published=datetime.now(UTC) - timedelta(days=200))
    await registry.start(aiohttp_server)
    return registry


def settings(registry: FakeNpmRegistry, **extra: str) -> dict[str, str]:
    return {
        "MIRROR_NPM_UPSTREAM": registry.url,
        "MIRROR_QUARANTINE": "3d",
        "MIRROR_ADMIN_TOKENS": f"secops:{TOKEN}",
        "MIRROR_ACCESS_LOG": "false",
        **extra,
    }


async def statuses(url: str, path: str = TARBALL) -> set[int]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.get(url + path) as response:
                await response.read()
                return response.status

        return set(await asyncio.gather(*(one() for _ in range(PARALLEL))))


async def api(method: str, url: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{url}{path}", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    """True as soon as `check` passes; False after `seconds` (bounded)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        if await check():
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)


async def state_command(action: str, mirror: RunningMirror, env: dict[str, str]) -> tuple[int, str]:
    """`mirror state ACTION` as an operator runs it, with the server's settings."""
    full = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
    full.update({"MIRROR_DATA_DIR": str(mirror.data_dir), "MIRROR_MAVEN_UPSTREAM": "off", **env})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mirror", "state", action,
        "--config", str(REPO / "config" / "mirror.toml"),
        env=full, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def block_a_cached_tarball(mirror: RunningMirror) -> str:
    # On a brand-new Redis, each worker trusts it once it has settled (LivePolicy).
    assert await eventually(lambda: _all_answer(mirror, "/readyz", 200), 5)
    assert await statuses(mirror.url) == {200}  # cached by every worker that answered
    status, created = await api(
        "POST",
        mirror.url,
        "/api/v1/blocks",
        {"ecosystem": "npm", "package": PACKAGE, "versions": "1.0.0", "reason": "compromised"},
    )
    assert status == 201, created
    assert await eventually(lambda: _all_refuse(mirror), 2)
    # Every worker has the block within the promised second (fresh connections may all
    # reach one worker, so wait rather than probe), and has copied it to its last-known.
    await asyncio.sleep(PROPAGATION_SECONDS)
    return str(created["block"]["id"])


async def _all_refuse(mirror: RunningMirror) -> bool:
    return await _all_answer(mirror, TARBALL, 403)


async def _all_answer(mirror: RunningMirror, path: str, status: int) -> bool:
    return await statuses(mirror.url, path) == {status}


async def readiness(mirror: RunningMirror) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{mirror.url}/readyz") as response:
        return response.status, await response.json()


async def degraded_then_restored(
    mirror: RunningMirror, block_id: str, reason: str, env: dict[str, str]
) -> None:
    try:
        await _degraded_then_restored(mirror, block_id, reason, env)
    except AssertionError as exc:
        events = [line for line in mirror.log().splitlines() if not line.startswith("{")]
        raise AssertionError(f"{exc}\n--- mirror log ---\n" + "\n".join(events[-40:])) from exc


async def _degraded_then_restored(
    mirror: RunningMirror, block_id: str, reason: str, env: dict[str, str]
) -> None:
    async def degraded() -> bool:
        status, body = await readiness(mirror)
        return status == 503 and reason in body["checks"]["policy"]

    # Within the guard's second (plus margin): not ready, naming the reason.
    assert await eventually(degraded, 5), await readiness(mirror)
    assert await eventually(lambda: _all_answer(mirror, "/readyz", 503), 5)

    async def every_worker_degraded() -> bool:
        return mirror.log().count(DEGRADED_LINE) >= WORKERS

    assert await eventually(every_worker_degraded, 5)
    for _ in range(5):
        assert await statuses(mirror.url) == {403}  # the cached blocked tarball stays refused
    status, listing = await api("GET", mirror.url, "/api/v1/blocks")
    assert status == 200
    assert [block["id"] for block in listing["blocks"]] == [block_id]
    assert reason in listing["last_known"]["reason"]
    await asyncio.sleep(2)  # more guard rounds and requests: still one ERROR per worker
    assert await statuses(mirror.url) == {403}
    assert mirror.log().count(DEGRADED_LINE) == WORKERS, mirror.log()[-4000:]

    code, out = await state_command("status", mirror, env)
    assert code == 1, out
    assert "status: DEGRADED" in out
    assert "1 block" in out

    code, out = await state_command("restore", mirror, env)
    assert code == 0, out
    assert "status: ok" in out

    async def ready() -> bool:
        # Every worker finds the restore by itself (fresh connections may all reach one
        # worker: each says so in the log).
        restored = mirror.log().count(RESTORED_LINE) == WORKERS
        return restored and await statuses(mirror.url, "/readyz") == {200}

    assert await eventually(ready, 5), await readiness(mirror)
    status, listing = await api("GET", mirror.url, "/api/v1/blocks")
    assert [block["id"] for block in listing["blocks"]] == [block_id]
    assert "last_known" not in listing
    status, audit = await api("GET", mirror.url, "/api/v1/audit")
    assert block_id in [entry["target"] for entry in audit["entries"]]
    assert await statuses(mirror.url) == {403}
    code, out = await state_command("status", mirror, env)
    assert code == 0, out
    # A restore with nothing to restore refuses, and changes nothing.
    code, out = await state_command("restore", mirror, env)
    assert code == 1
    assert "nothing to restore" in out


async def redis_rules(url: str) -> list[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return list(await client.hkeys("qm:rules:block"))
    finally:
        await client.aclose()


async def redis_pins(url: str) -> list[str]:
    """The artifacts whose first-seen digest the Redis holds."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return list(await client.hkeys("qm:digests:npm"))
    finally:
        await client.aclose()


async def test_redis_flushed(
    redis_server: RedisServer, registry: FakeNpmRegistry, start_mirror: StartMirror
) -> None:
    env = {"MIRROR_REDIS_URL": redis_server.url}
    mirror = await start_mirror(settings(registry, **env), workers=WORKERS)
    assert "persists nothing" in mirror.log()  # the test's redis-server runs without it
    block_id = await block_a_cached_tarball(mirror)

    assert [pin for pin in await redis_pins(redis_server.url) if pin.endswith(TARBALL_NAME)]
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()

    await degraded_then_restored(mirror, block_id, "has no identity", env)
    assert await redis_rules(redis_server.url) == [block_id]
    assert [pin for pin in await redis_pins(redis_server.url) if pin.endswith(TARBALL_NAME)]


async def test_redis_restarted_empty(
    redis_server: RedisServer, registry: FakeNpmRegistry, start_mirror: StartMirror
) -> None:
    env = {"MIRROR_REDIS_URL": redis_server.url}
    mirror = await start_mirror(settings(registry, **env), workers=WORKERS)
    block_id = await block_a_cached_tarball(mirror)

    await asyncio.to_thread(redis_server.restart_empty)

    await degraded_then_restored(mirror, block_id, "has no identity", env)
    assert await redis_rules(redis_server.url) == [block_id]
    assert [pin for pin in await redis_pins(redis_server.url) if pin.endswith(TARBALL_NAME)]


async def test_redis_policy_version_went_back(
    redis_server: RedisServer, registry: FakeNpmRegistry, start_mirror: StartMirror
) -> None:
    env = {"MIRROR_REDIS_URL": redis_server.url}
    mirror = await start_mirror(settings(registry, **env), workers=WORKERS)
    block_id = await block_a_cached_tarball(mirror)

    # What restoring an older copy of the same Redis looks like: same identity, rules and
    # counter from before the block.
    client = aioredis.Redis.from_url(redis_server.url)
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete("qm:rules:block")
        pipe.set("qm:policy:version", 0)
        await pipe.execute()
    await client.aclose()

    await degraded_then_restored(mirror, block_id, "went back", env)


async def test_embedded_state_file_deleted(
    registry: FakeNpmRegistry, start_mirror: StartMirror
) -> None:
    mirror = await start_mirror(settings(registry), workers=WORKERS)
    block_id = await block_a_cached_tarball(mirror)

    for suffix in ("", "-wal", "-shm"):
        await asyncio.to_thread(
            (mirror.data_dir / f"state.sqlite3{suffix}").unlink, missing_ok=True
        )

    await degraded_then_restored(mirror, block_id, "has no identity", {})


# replicas: one with a copy, one started with an empty data dir --------------------------------


def processes_under(pid: int) -> list[int]:
    """The worker processes of a `mirror serve` (Linux: the supervisor's children)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


ADOPTED_LINE = "another replica reported the shared state"
PUBLISHED_LINE = "published the loss of the shared state"


async def every_answer(mirror: RunningMirror, path: str) -> set[int]:
    return await statuses(mirror.url, path)


async def test_a_new_replica_with_an_empty_data_dir_enforces_the_copy_another_published(
    redis_server: RedisServer, registry: FakeNpmRegistry, start_mirror: StartMirror
) -> None:
    env = {"MIRROR_REDIS_URL": redis_server.url}
    old = await start_mirror(settings(registry, **env), workers=WORKERS)
    block_id = await block_a_cached_tarball(old)
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()

    async def published() -> bool:
        return PUBLISHED_LINE in old.log()

    assert await eventually(published, 5), old.log()[-3000:]
    # A replica started now, with no copy of its own: it takes the published one.
    new = await start_mirror(settings(registry, **env), workers=WORKERS, ready=False)

    async def new_degraded() -> bool:
        status, body = await readiness(new)
        return status == 503 and "has no identity" in body["checks"]["policy"]

    assert await eventually(new_degraded, 5), await readiness(new)
    assert await every_answer(new, TARBALL) == {403}  # never fetched here: blocked anyway
    status, listing = await api("GET", new.url, "/api/v1/blocks")
    assert status == 200
    assert [block["id"] for block in listing["blocks"]] == [block_id]
    assert "has no identity" in listing["last_known"]["reason"]
    assert ADOPTED_LINE in new.log()
    # The published copy is not live policy: the state itself still holds no rule.
    assert await redis_rules(redis_server.url) == []

    # Restored from the new replica's data dir (the copy it took): both replicas ready.
    code, out = await state_command("status", new, env)
    assert code == 1, out
    assert "state lost, reported by a replica" in out
    code, out = await state_command("restore", new, env)
    assert code == 0, out

    async def both_ready() -> bool:
        return all([await every_answer(mirror, "/readyz") == {200} for mirror in (old, new)])

    assert await eventually(both_ready, 5), (await readiness(old), await readiness(new))
    assert await redis_rules(redis_server.url) == [block_id]
    assert await every_answer(new, TARBALL) == {403}
    code, out = await state_command("status", old, env)
    assert code == 0, out
    assert "state lost" not in out


async def test_a_new_replica_that_claims_the_flushed_redis_first_never_serves_without_rules(
    redis_server: RedisServer, registry: FakeNpmRegistry, start_mirror: StartMirror
) -> None:
    """The old replica is paused (overloaded, a long GC) while Redis is flushed and a new
    replica with an empty data dir starts: the new one claims a fresh identity before the old
    one can notice. It waits for the state to settle, refusing reads, and then takes the copy
    the old replica published once it runs again: it never serves the blocked file."""
    env = {"MIRROR_REDIS_URL": redis_server.url}
    old = await start_mirror(settings(registry, **env), workers=WORKERS)
    block_id = await block_a_cached_tarball(old)
    paused = [old.process.pid, *processes_under(old.process.pid)]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        client = aioredis.Redis.from_url(redis_server.url)
        await client.flushall()
        await client.aclose()
        new = await start_mirror(settings(registry, **env), workers=WORKERS, ready=False)
        status, body = await readiness(new)
        assert status == 503
        assert body["checks"]["policy"].startswith("not serving yet"), body
        refused = await every_answer(new, TARBALL)
        assert refused == {503}, refused
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)

    seen: set[int] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 8  # past the settle period and the guard's checks
    while loop.time() < deadline:
        seen |= await every_answer(new, TARBALL)
        await asyncio.sleep(0.05)
    assert 200 not in seen, seen
    assert seen <= {403, 503}, seen
    status, body = await readiness(new)
    assert status == 503
    assert body["checks"]["policy"].startswith("last-known rules only"), body
    assert await every_answer(new, TARBALL) == {403}
    status, listing = await api("GET", new.url, "/api/v1/blocks")
    assert [block["id"] for block in listing["blocks"]] == [block_id]

    code, out = await state_command("restore", old, env)
    assert code == 0, out

    async def both_ready() -> bool:
        return all([await every_answer(mirror, "/readyz") == {200} for mirror in (old, new)])

    assert await eventually(both_ready, 5), (await readiness(old), await readiness(new))
    assert await every_answer(new, TARBALL) == {403}
