"""Rules say exactly what they cover, through the whole app: a block whose spec would cover
less than it says is refused (400, nothing stored, the message says what to write), the
written-out list blocks each version it names, and a rule stored before specs were strict
still blocks (every version of its package) instead of silently nothing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.model import RuleRecord
from mirror.services import SERVICES
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import Client, MakeClient

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=200)
TOKEN = "alice-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RELEASES = ("0.1.4", "0.1.5", "0.1.6", "0.1.7")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def client(make_mirror: MakeClient, aiohttp_server: AiohttpServer) -> Client:
    registry = FakeNpmRegistry()
    for version in RELEASES:
        registry.add_version("left-pad", version, published=OLD)
    await registry.start(aiohttp_server)
    return await make_mirror(MIRROR_NPM_UPSTREAM=registry.url, MIRROR_ADMIN_TOKENS=f"alice:{TOKEN}")


async def tarball_statuses(client: Client) -> dict[str, int]:
    statuses = {}
    for version in RELEASES:
        response = await client.get(f"/npm/left-pad/-/left-pad-{version}.tgz")
        await response.read()
        statuses[version] = response.status
    return statuses


async def explained(client: Client, version: str) -> Any:
    response = await client.get(f"/api/v1/explain?ecosystem=npm&package=left-pad&version={version}")
    assert response.status == 200, await response.text()
    return (await response.json())["verdict"]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("0.1.5, 0.1.6", "write '0.1.5 || 0.1.6'"),
        ("0.1.5 | 0.1.6", "write '0.1.5 || 0.1.6'"),
        ("0.1.5 or 0.1.6", "write '0.1.5 || 0.1.6'"),
        ("0.1.5 0.1.6", "0.1.5 AND 0.1.6, which no version is"),
        ("latest", "'latest' is a dist-tag"),
        (">2 <1", "can never match a version"),
    ],
)
async def test_a_spec_that_would_cover_less_than_it_says_is_refused(
    client: Client, spec: str, says: str
) -> None:
    body = {"ecosystem": "npm", "package": "left-pad", "versions": spec, "reason": "worm"}
    response = await client.post("/api/v1/blocks", json=body, headers=AUTH)
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer["field"] == "versions"
    assert says in answer["error"]
    assert await (await client.get("/api/v1/blocks")).json() == {"blocks": []}
    assert set((await tarball_statuses(client)).values()) == {200}


async def test_the_written_out_list_blocks_each_version_it_names(client: Client) -> None:
    body = {"ecosystem": "npm", "package": "left-pad", "versions": "0.1.5 || 0.1.6", "reason": "w"}
    response = await client.post("/api/v1/blocks", json=body, headers=AUTH)
    assert response.status == 201, await response.text()
    statuses = await tarball_statuses(client)
    assert statuses == {"0.1.4": 200, "0.1.5": 403, "0.1.6": 403, "0.1.7": 200}
    assert [await explained(client, version) for version in RELEASES] == [
        "allowed",
        "blocked",
        "blocked",
        "allowed",
    ]
    packument = await (await client.get("/npm/left-pad")).json()
    assert set(packument["versions"]) == {"0.1.4", "0.1.7"}


async def test_a_stored_rule_that_no_longer_parses_still_blocks(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A block stored before specs were strict (`0.1.5, 0.1.6` was accepted, and npm's loose
    parser read it as 0.1.6 alone) now blocks every version of the package, with an error
    in the log, until someone replaces it."""
    services = client.app[SERVICES]
    stored = RuleRecord(
        id="b-000000000001",
        kind="block",
        ecosystem="npm",
        package="left-pad",
        versions="0.1.5, 0.1.6",
        reason="worm",
        created_at=NOW - timedelta(days=1),
        created_by="alice",
    )
    with caplog.at_level(logging.ERROR):
        await services.state.add_rule(stored)
        await services.policy.reload()
    assert "b-000000000001" in caplog.text
    assert "applied to every version" in caplog.text
    assert set((await tarball_statuses(client)).values()) == {403}
    assert {await explained(client, version) for version in RELEASES} == {"blocked"}
