"""Behind a configured proxy the ledger names the client the proxy saw (the rightmost
untrusted X-Forwarded-For hop), so two clients behind one proxy stay two; from anywhere
else X-Forwarded-* are ignored (a client cannot name someone else or change the URLs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from mirror.app import create_app
from mirror.clock import FixedClock
from mirror.config import load_config
from mirror.services import SERVICES
from tests.conftest import mirror_settings
from tests.fakes.npm import FakeNpmRegistry

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
TARBALL = "/npm/left-pad/-/left-pad-1.0.0.tgz"

Client = TestClient[web.Request, web.Application]


async def _client(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path, proxies: str
) -> Client:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=NOW - timedelta(days=200))
    await registry.start(aiohttp_server)
    env = mirror_settings(
        tmp_path / "data", MIRROR_NPM_UPSTREAM=registry.url, MIRROR_TRUSTED_PROXIES=proxies
    )
    return await aiohttp_client(create_app(load_config(None, env), clock=FixedClock(NOW)))


async def _downloads_by(client: Client, *forwarded_for: str) -> list[str]:
    for hops in forwarded_for:
        response = await client.get(TARBALL, headers={"X-Forwarded-For": hops})
        assert response.status == 200
        await response.read()
    services = client.app[SERVICES]
    await services.artifacts.ledger.flush()
    return sorted(event.client for event in await services.state.downloads("npm", "left-pad"))


async def test_ledger_names_each_client_behind_a_trusted_proxy(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    # The test client connects from 127.0.0.1: here that is the trusted proxy.
    client = await _client(aiohttp_client, aiohttp_server, tmp_path, "127.0.0.1")
    clients = await _downloads_by(client, "10.1.4.17", "6.6.6.6, 10.1.9.3")
    assert clients == ["10.1.4.17", "10.1.9.3"]


async def test_forwarded_headers_from_anyone_else_are_ignored(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, aiohttp_server, tmp_path, "192.0.2.1")
    assert await _downloads_by(client, "10.1.4.17") == ["127.0.0.1"]
    packument = await client.get(
        "/npm/left-pad",
        headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    )
    body = await packument.json()
    tarball = body["versions"]["1.0.0"]["dist"]["tarball"]
    assert tarball.startswith(str(client.make_url("/npm/")))
    assert "evil.example" not in tarball
