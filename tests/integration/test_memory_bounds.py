"""Memory stays bounded in bytes whatever clients send: made-up Host values cannot multiply
rendered views, and every cache pays from the one `cache.memory_budget` (issue 10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from mirror.app import SERVICES, create_app
from mirror.clock import FixedClock
from mirror.config import load_config
from mirror.metacache import DEFAULT_MAX_BASES
from tests.conftest import mirror_settings
from tests.fakes.npm import FakeNpmRegistry

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=200)

Client = TestClient[web.Request, web.Application]


async def _client(
    aiohttp_client: AiohttpClient, registry: FakeNpmRegistry, data: Path, **settings: str
) -> Client:
    env = mirror_settings(data, **{"MIRROR_NPM_UPSTREAM": registry.url, **settings})
    return await aiohttp_client(create_app(load_config(None, env), clock=FixedClock(NOW)))


async def test_a_thousand_host_values_render_correct_urls_but_keep_few_views(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    registry = FakeNpmRegistry()
    for index in range(300):
        registry.add_version("wide", f"1.0.{index}", published=OLD + timedelta(hours=index))
    await registry.start(aiohttp_server)
    client = await _client(aiohttp_client, registry, tmp_path / "data")
    services = client.app[SERVICES]

    for index in range(1_000):
        host = f"h{index}.mirror.test:4873"
        response = await client.get("/npm/wide", headers={"Host": host})
        assert response.status == 200
        body = orjson.loads(await response.read())
        tarball = body["versions"]["1.0.7"]["dist"]["tarball"]
        # Every client still gets links to the host it used, cached or not.
        assert tarball.startswith(f"http://{host}/npm/wide/-/"), tarball
        assert len(services.rendered) <= DEFAULT_MAX_BASES
    assert services.memory.used <= services.memory.limit
    view_bytes = services.rendered.memory_bytes()
    assert 0 < view_bytes <= DEFAULT_MAX_BASES * (len(await response.read()) * 2 + 4096)
    assert registry.upstream.count(registry.packument_path("wide")) == 1

    # The first bases seen keep their cached view: the same bytes, ETag and all.
    first = await client.get("/npm/wide", headers={"Host": "h0.mirror.test:4873"})
    again = await client.get("/npm/wide", headers={"Host": "h0.mirror.test:4873"})
    assert first.headers["ETag"] == again.headers["ETag"]
    assert await first.read() == await again.read()


async def test_with_public_url_the_host_header_changes_nothing(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    registry = FakeNpmRegistry()
    registry.add_version("tiny", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    client = await _client(
        aiohttp_client, registry, tmp_path / "data", MIRROR_PUBLIC_URL="https://npm.mirror.test"
    )
    for index in range(50):
        response = await client.get("/npm/tiny", headers={"Host": f"x{index}.test"})
        body = orjson.loads(await response.read())
        assert body["versions"]["1.0.0"]["dist"]["tarball"].startswith("https://npm.mirror.test/")
    assert len(client.app[SERVICES].rendered) == 1


async def test_every_cache_pays_from_one_budget_and_serving_survives_eviction(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    registry = FakeNpmRegistry()
    for package in range(40):
        for index in range(60):
            registry.add_version(f"pkg{package}", f"2.0.{index}", published=OLD)
    await registry.start(aiohttp_server)
    client = await _client(aiohttp_client, registry, tmp_path / "data", MIRROR_MEMORY_BUDGET="256K")
    services = client.app[SERVICES]
    assert services.memory.limit == 256 * 1024
    for round_ in range(2):
        for package in range(40):
            response = await client.get(f"/npm/pkg{package}")
            assert response.status == 200
            body = orjson.loads(await response.read())
            assert sorted(body["versions"]) == sorted(f"2.0.{index}" for index in range(60))
            tarball = await client.get(f"/npm/pkg{package}/-/pkg{package}-2.0.3.tgz")
            assert tarball.status == 200, round_
            await tarball.read()
            assert services.memory.used <= services.memory.limit
    usage = services.memory.usage()
    assert usage["documents"] > 0
    assert usage["rendered"] > 0
    # The evicted documents came back from disk, not from the upstream.
    for package in range(40):
        assert registry.upstream.count(registry.packument_path(f"pkg{package}")) == 1
