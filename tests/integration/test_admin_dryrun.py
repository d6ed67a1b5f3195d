"""Shadow mode: `POST /api/v1/blocks?dry_run=true` (or `"dry_run": true` in the body) through
the whole app (SQLite state in tmp_path, a fake npm upstream with real tarballs, downloads
recorded through real tarball requests): validated and authorized as a real create, answered
with what the rule would cover and who already downloaded it, and nothing stored: no rule, no
audit entry, no policy version bump."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.services import SERVICES
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import NOW, OLD, Client, MakeClient

ALICE = "alice-token-0123456789"
BLOCK = {"ecosystem": "npm", "package": "left-pad", "versions": "^1.3.0", "reason": "malware"}
# The test's own 127.0.0.1 is a trusted proxy: X-Forwarded-For names the CI runner.
RUNNERS = ("10.1.4.17", "10.1.4.18")


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ALICE}"}


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    registry.add_version("left-pad", "1.3.0", published=NOW - timedelta(days=30))
    registry.add_version("left-pad", "1.3.1", published=NOW - timedelta(days=20))
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(
        make_mirror,
        MIRROR_NPM_UPSTREAM=registry.url,
        MIRROR_ADMIN_TOKENS=f"alice:{ALICE}",
        MIRROR_TRUSTED_PROXIES="127.0.0.1",
    )


async def download(client: Client, version: str, runner: str) -> None:
    tarball = f"/npm/left-pad/-/left-pad-{version}.tgz"
    response = await client.get(tarball, headers={"X-Forwarded-For": runner})
    assert response.status == 200, await response.text()


async def downloads_recorded(client: Client, count: int) -> None:
    state = client.app[SERVICES].state
    for _ in range(250):  # bounded: about 5 s; the ledger flushes every half second
        if len(await state.downloads("npm", "left-pad")) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} downloads were not recorded in time")


async def stored(client: Client) -> tuple[list[Any], list[Any], int]:
    """Every rule, every audit entry and the policy version the state holds."""
    state = client.app[SERVICES].state
    rules = [
        record
        for kind in ("block", "exemption", "freeze")
        for record in await state.list_rules(kind)
    ]
    audit = (await state.audit_page(limit=100)).entries
    return rules, list(audit), await state.policy_version()


async def test_dry_run_names_who_downloaded_what_it_would_hide_and_stores_nothing(
    client: Client,
) -> None:
    await download(client, "1.3.0", RUNNERS[0])
    await download(client, "1.3.1", RUNNERS[1])
    await download(client, "1.0.0", RUNNERS[1])  # not covered by ^1.3.0
    await downloads_recorded(client, 3)
    before = await stored(client)

    response = await client.post("/api/v1/blocks?dry_run=true", json=BLOCK, headers=auth())
    assert response.status == 200, await response.text()
    answer = await response.json()

    assert answer["dry_run"] is True
    block = answer["block"]
    assert "id" not in block
    assert {key: block[key] for key in ("kind", "ecosystem", "package", "versions", "reason")} == {
        "kind": "block",
        **BLOCK,
    }
    assert block["created_by"] == "alice"
    assert block["covers"] == {"versions": ["1.3.0", "1.3.1", "1.4.0"], "count": 3, "listed": 4}
    impact = answer["impact"]
    assert impact["clients"] == list(RUNNERS)
    assert [(row["client"], row["version"]) for row in impact["downloads"]] == [
        (RUNNERS[0], "1.3.0"),
        (RUNNERS[1], "1.3.1"),
    ]
    assert impact["next_cursor"] is None
    # Nothing stored, audited or reloaded; the versions are still served.
    assert await stored(client) == before
    assert before[:2] == ([], [])
    assert (await (await client.get("/api/v1/blocks")).json())["blocks"] == []
    await download(client, "1.3.1", RUNNERS[0])


async def test_dry_run_in_the_body_answers_as_the_query_does(client: Client) -> None:
    await download(client, "1.3.0", RUNNERS[0])
    await downloads_recorded(client, 1)
    by_query = await client.post("/api/v1/blocks?dry_run=1", json=BLOCK, headers=auth())
    by_body = await client.post("/api/v1/blocks", json={**BLOCK, "dry_run": True}, headers=auth())
    assert by_query.status == by_body.status == 200
    first, second = await by_query.json(), await by_body.json()
    assert first == second
    assert first["impact"]["clients"] == [RUNNERS[0]]
    assert (await stored(client))[:2] == ([], [])


async def test_dry_run_false_creates_the_rule(client: Client) -> None:
    _, _, version = await stored(client)
    response = await client.post(
        "/api/v1/blocks?dry_run=false", json={**BLOCK, "dry_run": False}, headers=auth()
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["block"]["id"]
    rules, audit, bumped = await stored(client)
    assert (len(rules), len(audit)) == (1, 1)
    assert bumped > version  # what the dry runs' unchanged version is compared against


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/blocks?dry_run=maybe", BLOCK, "dry_run"),
        ("/api/v1/blocks", {**BLOCK, "dry_run": "yes"}, "dry_run"),
        ("/api/v1/blocks?dry_run=true", {**BLOCK, "versions": ">=>1"}, "versions"),
        ("/api/v1/blocks?dry_run=true", {**BLOCK, "reason": ""}, "reason"),
        ("/api/v1/blocks?dry_run=true", {**BLOCK, "colour": "red"}, "colour"),
        ("/api/v1/exemptions?dry_run=true", {**BLOCK, "versions": "^1.3.0"}, "expires"),
        ("/api/v1/freezes?dry_run=true", {"ecosystem": "npm", "reason": "x"}, "published_after"),
    ],
)
async def test_dry_run_refuses_what_a_create_refuses(
    client: Client, path: str, body: dict[str, Any], field: str
) -> None:
    before = await stored(client)
    response = await client.post(path, json=body, headers=auth())
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer.get("field") == field or answer["error"].startswith(f"{field}:"), answer
    if field != "dry_run":  # the same refusal, word for word, as a real create
        real_path = path.replace("?dry_run=true", "")
        real = await client.post(real_path, json=body, headers=auth())
        assert real.status == 400
        assert (await real.json())["error"] == answer["error"]
    assert await stored(client) == before


async def test_dry_run_needs_the_write_token(client: Client) -> None:
    response = await client.post("/api/v1/blocks?dry_run=true", json=BLOCK)
    assert response.status == 401
    wrong = await client.post(
        "/api/v1/blocks?dry_run=true", json=BLOCK, headers={"Authorization": "Bearer " + "q" * 20}
    )
    assert wrong.status == 403
    assert (await stored(client))[:2] == ([], [])


async def test_dry_run_of_an_exemption_and_a_freeze_stores_nothing(client: Client) -> None:
    before = await stored(client)
    exemption = await client.post(
        "/api/v1/exemptions",
        json={**BLOCK, "versions": "1.4.0", "reason": "reviewed", "dry_run": True},
        headers=auth(),
    )
    assert exemption.status == 200, await exemption.text()
    shown = (await exemption.json())["exemption"]
    assert "id" not in shown
    assert shown["covers"]["versions"] == ["1.4.0"]
    assert shown["expires_at"]  # the default expiry a real create would give
    freeze = await client.post(
        "/api/v1/freezes?dry_run=true",
        json={"ecosystem": "npm", "published_after": "2026-11-01", "until": "2026-12-01",
              "reason": "incident"},
        headers=auth(),
    )  # fmt: skip
    assert freeze.status == 200, await freeze.text()
    assert "id" not in (await freeze.json())["freeze"]
    assert await stored(client) == before
    # 1.4.0 is still held: the exemption was not created.
    assert (await client.get("/npm/left-pad/-/left-pad-1.4.0.tgz")).status == 403


async def test_dry_run_impact_is_paged_like_impact(client: Client) -> None:
    for n in range(3):
        await download(client, "1.3.0", f"10.2.0.{n}")
    await downloads_recorded(client, 3)
    response = await client.post("/api/v1/blocks?dry_run=true", json=BLOCK, headers=auth())
    impact = (await response.json())["impact"]
    assert len(impact["downloads"]) == 3
    assert impact["next"] is None
