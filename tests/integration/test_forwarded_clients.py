"""Behind a configured proxy the ledger names the client the proxy saw (the rightmost
untrusted X-Forwarded-For hop), so two clients behind one proxy stay two; from anywhere
else X-Forwarded-* are ignored (a client cannot name someone else or change the URLs)."""

from __future__ import annotations

from pytest_aiohttp import AiohttpServer

from mirror.services import SERVICES
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import OLD, Client, MakeClient

TARBALL = "/npm/left-pad/-/left-pad-1.0.0.tgz"


async def _client(make_mirror: MakeClient, aiohttp_server: AiohttpServer, proxies: str) -> Client:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    return await make_mirror(MIRROR_NPM_UPSTREAM=registry.url, MIRROR_TRUSTED_PROXIES=proxies)


async def _downloads_by(client: Client, *forwarded_for: str) -> list[str]:
    for hops in forwarded_for:
        response = await client.get(TARBALL, headers={"X-Forwarded-For": hops})
        assert response.status == 200
        await response.read()
    services = client.app[SERVICES]
    await services.artifacts.ledger.flush()
    return sorted(event.client for event in await services.state.downloads("npm", "left-pad"))


async def test_ledger_names_each_client_behind_a_trusted_proxy(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    # The test client connects from 127.0.0.1: here that is the trusted proxy.
    client = await _client(make_mirror, aiohttp_server, "127.0.0.1")
    clients = await _downloads_by(client, "10.1.4.17", "6.6.6.6, 10.1.9.3")
    assert clients == ["10.1.4.17", "10.1.9.3"]


async def test_forwarded_headers_from_anyone_else_are_ignored(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    client = await _client(make_mirror, aiohttp_server, "192.0.2.1")
    assert await _downloads_by(client, "10.1.4.17") == ["127.0.0.1"]
    packument = await client.get(
        "/npm/left-pad",
        headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    )
    body = await packument.json()
    tarball = body["versions"]["1.0.0"]["dist"]["tarball"]
    assert tarball.startswith(str(client.make_url("/npm/")))
    assert "evil.example" not in tarball
