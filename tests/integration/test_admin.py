"""The admin API through the whole app: `create_app` with a FixedClock, SQLite state in
tmp_path, and a fake npm upstream (a real aiohttp server on 127.0.0.1 with real tarballs)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.admin import rules
from mirror.clock import FixedClock
from mirror.model import DownloadEvent
from mirror.services import SERVICES
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import NOW, OLD, Client, MakeClient

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789abc"
TOKENS = f"alice:{ALICE},bob:{BOB}"


def auth(token: str = ALICE) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    registry.add_version("left-pad", "1.3.0", published=NOW - timedelta(days=30))
    registry.add_version("left-pad", "1.3.1", published=NOW - timedelta(days=10))
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    registry.add_version("no-time", "1.0.0", published=None)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(make_mirror, MIRROR_NPM_UPSTREAM=registry.url, MIRROR_ADMIN_TOKENS=TOKENS)


async def post(client: Client, path: str, body: object, token: str = ALICE) -> Any:
    response = await client.post(path, json=body, headers=auth(token))
    assert response.status == 201, await response.text()
    return await response.json()


async def visible_versions(client: Client, name: str = "left-pad") -> set[str]:
    response = await client.get(f"/npm/{name}")
    assert response.status == 200, await response.text()
    return set((await response.json())["versions"])


BLOCK = {"ecosystem": "npm", "package": "left-pad", "versions": "1.3.0", "reason": "compromised"}


# authentication ---------------------------------------------------------------------------


async def test_write_without_token_is_401_with_bearer_challenge(client: Client) -> None:
    response = await client.post("/api/v1/blocks", json=BLOCK)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = await response.json()
    assert body["reason"] == "unauthorized"
    assert "Authorization: Bearer" in body["error"]
    assert await (await client.get("/api/v1/blocks")).json() == {"blocks": []}


async def test_write_with_other_scheme_is_401(client: Client) -> None:
    response = await client.post(
        "/api/v1/blocks", json=BLOCK, headers={"Authorization": f"Basic {ALICE}"}
    )
    assert response.status == 401


async def test_write_with_wrong_token_is_403(client: Client) -> None:
    response = await client.post("/api/v1/blocks", json=BLOCK, headers=auth("x" * 22))
    assert response.status == 403
    assert (await response.json())["error"] == "the admin token is not valid on this mirror"
    response = await client.delete("/api/v1/blocks/b-000000000000", headers=auth("x" * 22))
    assert response.status == 403


async def test_write_with_right_token_names_the_token(client: Client) -> None:
    created = await post(client, "/api/v1/blocks", BLOCK, token=BOB)
    block = created["block"]
    assert block["created_by"] == "bob"
    assert block["id"].startswith("b-")
    assert len(block["id"]) == 14
    assert block["package"] == "left-pad"
    assert block["versions"] == "1.3.0"
    assert block["expires_at"] is None
    assert block["expired"] is False


async def test_no_tokens_configured_refuses_every_write(make_mirror: MakeClient) -> None:
    client = await make_mirror(MIRROR_ADMIN_TOKENS="")
    response = await client.post("/api/v1/blocks", json=BLOCK, headers=auth())
    assert response.status == 403
    assert "MIRROR_ADMIN_TOKENS" in (await response.json())["error"]
    response = await client.get("/api/v1/audit", headers=auth())
    assert response.status == 403
    assert (await client.get("/api/v1/blocks")).status == 200


async def test_protect_reads_needs_a_token_for_reads(make_mirror: MakeClient) -> None:
    client = await make_mirror(MIRROR_ADMIN_PROTECT_READS="true")
    for path in (
        "/api/v1/blocks",
        "/api/v1/exemptions",
        "/api/v1/freezes",
        "/api/v1/impact?ecosystem=npm&package=left-pad",
        "/api/v1/explain?ecosystem=npm&package=left-pad&version=1.0.0",
    ):
        assert (await client.get(path)).status == 401, path
        assert (await client.get(path, headers=auth("y" * 20))).status == 403, path
        assert (await client.get(path, headers=auth(BOB))).status == 200, path


async def test_reads_are_open_but_audit_is_always_protected(client: Client) -> None:
    assert (await client.get("/api/v1/exemptions")).status == 200
    assert (await client.get("/api/v1/freezes")).status == 200
    assert (await client.get("/api/v1/audit")).status == 401
    assert (await client.get("/api/v1/audit", headers=auth())).status == 200


# validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/blocks", {**BLOCK, "ecosystem": "cargo"}, "ecosystem"),
        ("/api/v1/blocks", {**BLOCK, "ecosystem": None}, "ecosystem"),
        ("/api/v1/blocks", {**BLOCK, "package": " "}, "package"),
        ("/api/v1/blocks", {**BLOCK, "package": 7}, "package"),
        ("/api/v1/blocks", {**BLOCK, "versions": ">=>1.0"}, "versions"),
        ("/api/v1/blocks", {**BLOCK, "versions": ""}, "versions"),
        ("/api/v1/blocks", {**BLOCK, "ecosystem": "pypi", "versions": "=>2.0"}, "versions"),
        (
            "/api/v1/blocks",
            {**BLOCK, "ecosystem": "maven", "package": "org.example:lib", "versions": "[1.0"},
            "versions",
        ),
        ("/api/v1/blocks", {**BLOCK, "ecosystem": "maven"}, "package"),
        ("/api/v1/blocks", {k: v for k, v in BLOCK.items() if k != "reason"}, "reason"),
        ("/api/v1/blocks", {**BLOCK, "reason": "   "}, "reason"),
        ("/api/v1/blocks", {**BLOCK, "expires": "next tuesday"}, "expires"),
        ("/api/v1/blocks", {**BLOCK, "expires": "2026-01-01"}, "expires"),
        ("/api/v1/blocks", {**BLOCK, "expire": "7d"}, "expire"),
        ("/api/v1/exemptions", {**BLOCK, "versions": "^1.3.0"}, "expires"),
        ("/api/v1/exemptions", {**BLOCK, "versions": "9.9.9"}, "expires"),
        ("/api/v1/exemptions", {**BLOCK, "package": "no-time", "versions": "1.0.0"}, "expires"),
        ("/api/v1/exemptions", {**BLOCK, "versions": "1.0.0"}, "expires"),
        (
            "/api/v1/freezes",
            {"ecosystem": "npm", "until": "2d", "reason": "worm"},
            "published_after",
        ),
        (
            "/api/v1/freezes",
            {"ecosystem": "npm", "published_after": "1d", "reason": "worm"},
            "until",
        ),
        (
            "/api/v1/freezes",
            {"ecosystem": "npm", "published_after": "yesterday", "until": "2d", "reason": "w"},
            "published_after",
        ),
        (
            "/api/v1/freezes",
            {"ecosystem": "npm", "published_after": "1d", "until": "2026-11-01", "reason": "w"},
            "until",
        ),
        (
            "/api/v1/freezes",
            {"ecosystem": "npm", "published_after": "1d", "until": "2d", "reason": ""},
            "reason",
        ),
    ],
)
async def test_validation_errors_name_the_field(
    client: Client, path: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post(path, json=body, headers=auth())
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer["reason"] == "bad-request"
    assert answer["field"] == field
    assert answer["error"].startswith(f"{field}:"), answer["error"]
    assert await (await client.get(path)).json() == {path.rsplit("/", 1)[1]: []}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"\xff\xfe"])
async def test_malformed_json_names_the_body(client: Client, raw: bytes) -> None:
    response = await client.post(
        "/api/v1/blocks", data=raw, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status == 400
    answer = await response.json()
    assert answer["field"] == "body"
    assert answer["error"].startswith("body:")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/api/v1/explain?package=left-pad&version=1.0.0", "ecosystem"),
        ("/api/v1/explain?ecosystem=cargo&package=left-pad&version=1.0.0", "ecosystem"),
        ("/api/v1/explain?ecosystem=npm&version=1.0.0", "package"),
        ("/api/v1/explain?ecosystem=npm&package=left-pad", "version"),
        ("/api/v1/impact?ecosystem=npm&package=left-pad&versions=>=>1", "versions"),
        ("/api/v1/impact?ecosystem=npm&package=left-pad&since=soon", "since"),
        ("/api/v1/blocks?ecosystem=cargo", "ecosystem"),
    ],
)
async def test_query_validation_names_the_field(client: Client, query: str, field: str) -> None:
    response = await client.get(query, headers=auth())
    assert response.status == 400
    assert (await response.json())["field"] == field


async def test_audit_limit_is_validated(client: Client) -> None:
    response = await client.get("/api/v1/audit?limit=0", headers=auth())
    assert response.status == 400
    assert (await response.json())["field"] == "limit"


# rules take effect, are listed and audited ----------------------------------------------------


async def test_block_applies_at_once_to_metadata_and_cached_tarball(client: Client) -> None:
    tarball = "/npm/left-pad/-/left-pad-1.3.0.tgz"
    assert (await client.get(tarball)).status == 200  # now cached
    assert "1.3.0" in await visible_versions(client)
    block = (await post(client, "/api/v1/blocks", BLOCK))["block"]
    assert "1.3.0" not in await visible_versions(client)
    refused = await client.get(tarball)
    assert refused.status == 403
    body = await refused.json()
    assert body["reason"] == "blocked"
    assert body["block"]["id"] == block["id"]
    assert "compromised" in body["error"]

    response = await client.delete(f"/api/v1/blocks/{block['id']}", headers=auth())
    assert response.status == 200
    assert (await response.json())["deleted"]["id"] == block["id"]
    assert "1.3.0" in await visible_versions(client)
    assert (await client.get(tarball)).status == 200


async def test_list_show_and_delete(client: Client, clock: FixedClock) -> None:
    first = (await post(client, "/api/v1/blocks", BLOCK))["block"]
    clock.advance(timedelta(minutes=1))  # listed oldest first
    pypi = {"ecosystem": "pypi", "package": "Requests", "versions": ">=2.99", "reason": "typo"}
    second = (await post(client, "/api/v1/blocks", pypi))["block"]
    listed = await (await client.get("/api/v1/blocks")).json()
    assert [block["id"] for block in listed["blocks"]] == [first["id"], second["id"]]
    only_pypi = await (await client.get("/api/v1/blocks?ecosystem=pypi")).json()
    assert [block["id"] for block in only_pypi["blocks"]] == [second["id"]]
    shown = await (await client.get(f"/api/v1/blocks/{second['id']}")).json()
    assert shown == {"block": second}
    assert (await client.get("/api/v1/blocks/b-nope")).status == 404
    assert (await client.get(f"/api/v1/exemptions/{first['id']}")).status == 404
    missing = await client.delete("/api/v1/blocks/b-nope", headers=auth())
    assert missing.status == 404
    assert "b-nope" in (await missing.json())["error"]


async def test_audit_records_every_write_with_before_and_after(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mirror.admin"):
        block = (await post(client, "/api/v1/blocks", BLOCK, token=BOB))["block"]
        response = await client.delete(f"/api/v1/blocks/{block['id']}", headers=auth())
        assert response.status == 200
    refused = await client.post("/api/v1/blocks", json=BLOCK, headers=auth("z" * 20))
    assert refused.status == 403

    entries = (await (await client.get("/api/v1/audit", headers=auth())).json())["entries"]
    assert [entry["action"] for entry in entries] == ["block.delete", "block.create"]
    deleted, created = entries
    assert created["actor"] == "bob"
    assert deleted["actor"] == "alice"
    assert created["client"] == deleted["client"] == "127.0.0.1"
    assert created["target"] == deleted["target"] == block["id"]
    assert created["before"] is None
    # The audit keeps the rule as stored; what it covered is the answer's, not the rule's.
    stored = {key: value for key, value in block.items() if key != "covers"}
    assert created["after"] == stored
    assert deleted["before"] == stored
    assert deleted["after"] is None
    assert created["at"] == "2026-11-22T10:00:00Z"
    limited = await (await client.get("/api/v1/audit?limit=1", headers=auth())).json()
    assert [entry["action"] for entry in limited["entries"]] == ["block.delete"]

    messages = [r.getMessage() for r in caplog.records if r.name == "mirror.admin"]
    assert any(f"block.create {block['id']} by bob" in m and "compromised" in m for m in messages)
    assert any(f"block.delete {block['id']} by alice" in m for m in messages)


async def get_audit(client: Client, **params: str) -> tuple[int, Any]:
    response = await client.get("/api/v1/audit", params=params, headers=auth())
    return response.status, await response.json()


async def test_audit_is_kept_by_age_and_keeps_the_creation_of_a_live_rule(
    make_mirror: MakeClient, clock: FixedClock
) -> None:
    client = await make_mirror(MIRROR_AUDIT_RETENTION="30d")
    live = (await post(client, "/api/v1/blocks", BLOCK, token=BOB))["block"]["id"]
    for _ in range(3):  # churn: rules created and removed
        gone = (await post(client, "/api/v1/blocks", {**BLOCK, "versions": "1.0.0"}))["block"]
        assert (await client.delete(f"/api/v1/blocks/{gone['id']}", headers=auth())).status == 200
    status, answer = await get_audit(client)
    assert (status, len(answer["entries"]), answer["pruned_before"]) == (200, 7, None)

    clock.advance(timedelta(days=31))
    status, answer = await get_audit(client)
    assert status == 200
    assert [(e["action"], e["target"]) for e in answer["entries"]] == [("block.create", live)]
    assert answer["pruned_before"] == "2026-11-22T10:00:00Z"
    status, found = await get_audit(client, target=live)
    assert [e["actor"] for e in found["entries"]] == ["bob"]


async def test_audit_filters_and_pages(client: Client, clock: FixedClock) -> None:
    ids = []
    for n, token in enumerate((ALICE, BOB, ALICE, BOB)):
        ids.append((await post(client, "/api/v1/blocks", BLOCK, token=token))["block"]["id"])
        clock.advance(timedelta(hours=1 + n))
    assert (await client.delete(f"/api/v1/blocks/{ids[0]}", headers=auth(BOB))).status == 200

    status, answer = await get_audit(client, target=ids[0])
    assert [(e["action"], e["actor"]) for e in answer["entries"]] == [
        ("block.delete", "bob"),
        ("block.create", "alice"),
    ]
    status, answer = await get_audit(client, actor="bob")
    assert [e["target"] for e in answer["entries"]] == [ids[0], ids[3], ids[1]]
    # since inclusive, until exclusive: the creations at 11:00 and 13:00
    window = {"since": "2026-11-22T11:00Z", "until": "2026-11-22T16:00Z"}
    status, answer = await get_audit(client, **window)
    assert [e["target"] for e in answer["entries"]] == [ids[2], ids[1]]

    seen: list[str] = []
    query: dict[str, str] = {"limit": "2"}
    for _ in range(10):  # bounded
        status, answer = await get_audit(client, **query)
        assert status == 200
        seen += [f"{e['action']} {e['target']}" for e in answer["entries"]]
        if answer["next_cursor"] is None:
            assert answer["next"] is None
            break
        assert answer["next"].startswith("/api/v1/audit?")
        query = {"limit": "2", "cursor": answer["next_cursor"]}
    assert seen == [f"block.delete {ids[0]}"] + [f"block.create {i}" for i in reversed(ids)]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "0" * 19 + "-x"}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-22", "until": "2026-11-21"}, "until"),
        ({"target": "b-\u0000"}, "target"),
    ],
)
async def test_audit_refuses_bad_filters(
    client: Client, params: dict[str, str], field: str
) -> None:
    status, answer = await get_audit(client, **params)
    assert status == 400, answer
    assert answer["field"] == field


async def test_eight_concurrent_admins_never_fail(client: Client) -> None:
    # Eight writers creating and removing rules at once: every write succeeds, every change
    # has its audit entry.
    async def churn(token: str) -> list[str]:
        ids = []
        for _ in range(5):
            rule_id = (await post(client, "/api/v1/blocks", BLOCK, token=token))["block"]["id"]
            response = await client.delete(f"/api/v1/blocks/{rule_id}", headers=auth(token))
            assert response.status == 200, await response.text()
            ids.append(rule_id)
        return ids

    done = await asyncio.gather(*(churn((ALICE, BOB)[n % 2]) for n in range(8)))
    changed = {rule_id for ids in done for rule_id in ids}
    assert len(changed) == 40
    status, answer = await get_audit(client, limit="1000")
    assert status == 200
    audited = [(e["action"], e["target"]) for e in answer["entries"]]
    assert sorted(audited) == sorted(
        (f"block.{action}", rule_id) for rule_id in changed for action in ("create", "delete")
    )
    assert (await (await client.get("/api/v1/blocks")).json())["blocks"] == []


async def test_audit_client_is_the_peer_unless_it_is_a_trusted_proxy(
    make_mirror: MakeClient,
) -> None:
    # The client wrote 198.51.100.9 itself; the trusted proxy (the test's own 127.0.0.1, via
    # 10.0.0.1) appended the address it saw: 203.0.113.7 is the client.
    headers = {**auth(), "X-Forwarded-For": "198.51.100.9, 203.0.113.7, 10.0.0.1"}
    untrusting = await make_mirror()
    assert (await untrusting.post("/api/v1/blocks", json=BLOCK, headers=headers)).status == 201
    trusting = await make_mirror(MIRROR_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8")
    assert (await trusting.post("/api/v1/blocks", json=BLOCK, headers=headers)).status == 201
    elsewhere = await make_mirror(MIRROR_TRUSTED_PROXIES="192.0.2.1")  # not the peer
    assert (await elsewhere.post("/api/v1/blocks", json=BLOCK, headers=headers)).status == 201
    entries = (await (await elsewhere.get("/api/v1/audit", headers=auth())).json())["entries"]
    assert [entry["client"] for entry in entries] == ["127.0.0.1", "203.0.113.7", "127.0.0.1"]


# impact -------------------------------------------------------------------------------------


async def test_block_reports_who_already_downloaded_matching_versions(client: Client) -> None:
    state = client.app[SERVICES].state
    for client_address, version in (("10.0.0.5", "1.3.1"), ("10.0.0.6", "1.0.0")):
        await state.record_download(
            DownloadEvent(
                ecosystem="npm",
                package="left-pad",
                version=version,
                filename=f"left-pad-{version}.tgz",
                client=client_address,
                at=NOW - timedelta(days=2),
            )
        )
    # and one real download through the adapter (the ledger is written in the background)
    assert (await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")).status == 200
    for _ in range(250):  # bounded: about 5 s; the ledger flushes every half second
        if len(await state.downloads("npm", "left-pad")) == 3:
            break
        await asyncio.sleep(0.02)

    created = await post(client, "/api/v1/blocks", {**BLOCK, "versions": "^1.3.0"})
    impact = created["impact"]
    assert impact["next_cursor"] is None
    assert impact["clients"] == ["10.0.0.5", "127.0.0.1"]
    # What the test client says about itself (its user agent) is the serving path's to note.
    said = ("user_agent", "ci", "command", "session")
    assert [{k: v for k, v in row.items() if k not in said} for row in impact["downloads"]] == [
        {
            "client": "10.0.0.5",
            "token": "",
            "package": "left-pad",
            "version": "1.3.1",
            "filename": "left-pad-1.3.1.tgz",
            "first_seen": "2026-11-20T10:00:00Z",
            "last_seen": "2026-11-20T10:00:00Z",
            "count": 1,
        },
        {
            "client": "127.0.0.1",
            "token": "",
            "package": "left-pad",
            "version": "1.3.0",
            "filename": "left-pad-1.3.0.tgz",
            "first_seen": "2026-11-22T10:00:00Z",
            "last_seen": "2026-11-22T10:00:00Z",
            "count": 1,
        },
    ]
    assert impact["downloads"][0]["user_agent"] == ""  # recorded without one
    since = await client.get(
        "/api/v1/impact",
        params={"ecosystem": "npm", "package": "left-pad", "since": "1d"},
        headers=auth(),
    )
    assert [d["client"] for d in (await since.json())["downloads"]] == ["127.0.0.1"]
    everything = await client.get(
        "/api/v1/impact", params={"ecosystem": "npm", "package": "left-pad"}, headers=auth()
    )
    assert (await everything.json())["clients"] == ["10.0.0.5", "10.0.0.6", "127.0.0.1"]


async def test_impact_of_a_glob_covers_every_matching_package(client: Client) -> None:
    state = client.app[SERVICES].state
    downloads = [
        ("@evil/a", "10.0.0.5", NOW - timedelta(days=2)),
        ("@evil/b", "10.0.0.6", NOW - timedelta(days=1)),
        ("@good/c", "10.0.0.7", NOW - timedelta(days=1)),
    ]
    for package, client_address, at in downloads:
        await state.record_download(
            DownloadEvent(
                ecosystem="npm", package=package, version="1.0.0",
                filename=f"{package.split('/')[1]}-1.0.0.tgz", client=client_address, at=at,
            )
        )  # fmt: skip
    created = await post(client, "/api/v1/blocks", {**BLOCK, "package": "@evil/*", "versions": "*"})
    impact = created["impact"]
    assert impact["next_cursor"] is None
    assert impact["packages"] == ["@evil/a", "@evil/b"]
    assert impact["clients"] == ["10.0.0.5", "10.0.0.6"]
    assert [d["package"] for d in impact["downloads"]] == ["@evil/a", "@evil/b"]


def pulled(
    package: str, version: str, client_address: str, at: datetime, **who: Any
) -> DownloadEvent:
    return DownloadEvent(
        ecosystem="npm", package=package, version=version,
        filename=f"{package.rsplit('/', 1)[-1]}-{version}.tgz", client=client_address, at=at,
        **who,
    )  # fmt: skip


def iso_z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def test_impact_shows_who_downloaded_grouped_by_token_and_ci(client: Client) -> None:
    state = client.app[SERVICES].state
    actions = "npm/10.8.2 node/v22.11.0 linux x64 workspaces/false ci/github-actions"
    builds = {"token": "ci-builds", "ci": "github-actions", "user_agent": actions}
    day = timedelta(days=1)
    await state.record_downloads(
        [
            pulled("left-pad", "1.3.1", "10.0.0.5", NOW - 2 * day, count=3, command="ci",
                   session="9f1c", **builds),
            pulled("left-pad", "1.3.1", "10.0.0.6", NOW - day / 2, count=2, **builds),
            # The same address without a token: a row (and an identity) of its own.
            pulled("left-pad", "1.3.1", "10.0.0.5", NOW - 2 * day, user_agent="curl/8.5.0"),
            pulled("left-pad", "1.3.0", "10.0.0.7", NOW - 3 * day, count=10, token="release",
                   ci="jenkins"),
            # Not a matching version: in no identity.
            pulled("left-pad", "1.0.0", "10.0.0.8", NOW - day, count=100),
        ]
    )  # fmt: skip
    params = {"ecosystem": "npm", "package": "left-pad", "versions": "^1.3.0", "limit": "2"}
    downloads, pages = await read_impact_pages(client, params)
    expected = [
        {"token": "release", "ci": "jenkins", "clients": 1, "downloads": 10,
         "first_seen": iso_z(NOW - 3 * day), "last_seen": iso_z(NOW - 3 * day)},
        {"token": "ci-builds", "ci": "github-actions", "clients": 2, "downloads": 5,
         "first_seen": iso_z(NOW - 2 * day), "last_seen": iso_z(NOW - day / 2)},
        {"token": "", "ci": "", "clients": 1, "downloads": 1,
         "first_seen": iso_z(NOW - 2 * day), "last_seen": iso_z(NOW - 2 * day)},
    ]  # fmt: skip
    # The first page totals the whole package, not only its own rows; a later page totals
    # its own rows (a walk over every page pays for the whole package once).
    assert pages[0]["identities"] == expected
    assert [page["identities_cover"] for page in pages] == ["package", "page"]
    second = pages[1]
    own: dict[tuple[str, str], int] = {}
    for row in second["downloads"]:
        own[row["token"], row["ci"]] = own.get((row["token"], row["ci"]), 0) + row["count"]
    assert {(i["token"], i["ci"]): i["downloads"] for i in second["identities"]} == own
    assert [len(page["downloads"]) for page in pages] == [2, 2]
    by_who = {(d["client"], d["token"]): d for d in downloads}
    assert sorted(by_who) == [
        ("10.0.0.5", ""), ("10.0.0.5", "ci-builds"), ("10.0.0.6", "ci-builds"),
        ("10.0.0.7", "release"),
    ]  # fmt: skip
    row = by_who[("10.0.0.5", "ci-builds")]
    assert (row["ci"], row["user_agent"], row["command"], row["session"], row["count"]) == (
        "github-actions", actions, "ci", "9f1c", 3,
    )  # fmt: skip
    assert by_who[("10.0.0.5", "")]["user_agent"] == "curl/8.5.0"
    assert pages[0]["clients"] == ["10.0.0.5", "10.0.0.7"]  # this page's addresses
    # `since` narrows the totals as it narrows the rows.
    _, recent = await read_impact_pages(client, {**params, "since": "1d"})
    assert [
        (i["token"], i["ci"], i["clients"], i["downloads"]) for i in recent[0]["identities"]
    ] == [("ci-builds", "github-actions", 1, 2)]
    # Nothing downloaded: no identities.
    _, none = await read_impact_pages(client, {**params, "versions": "9.9.9"})
    assert none[0]["identities"] == []


async def test_impact_of_a_glob_totals_identities_of_the_rows_it_shows(client: Client) -> None:
    state = client.app[SERVICES].state
    at = NOW - timedelta(hours=1)
    await state.record_downloads(
        [
            pulled("@evil/a", "1.0.0", "10.0.0.5", at, token="ci-builds", ci="ci", count=2),
            pulled("@evil/b", "1.0.0", "10.0.0.5", at, token="ci-builds", ci="ci", count=3),
            pulled("@evil/b", "1.0.0", "10.0.0.6", at, count=1),
            pulled("@good/c", "1.0.0", "10.0.0.7", at, token="ci-builds", ci="ci", count=50),
        ]
    )
    params = {"ecosystem": "npm", "package": "@evil/*"}
    _, pages = await read_impact_pages(client, params)
    # The address that pulled both packages is one client.
    assert [
        (i["token"], i["ci"], i["clients"], i["downloads"]) for i in pages[0]["identities"]
    ] == [
        ("ci-builds", "ci", 1, 5),
        ("", "", 1, 1),
    ]
    assert pages[0]["identities_cover"] == "page"
    # A page of one row totals that row: pages of a glob stay bounded by what they show.
    _, single = await read_impact_pages(client, {**params, "limit": "1"})
    assert [
        [(i["token"], i["clients"], i["downloads"]) for i in page["identities"]] for page in single
    ] == [[("ci-builds", 1, 2)], [("ci-builds", 1, 3)], [("", 1, 1)]]


# exemptions ----------------------------------------------------------------------------------


async def test_exemption_defaults_to_maturity_and_expires_by_the_clock(
    client: Client, clock: FixedClock
) -> None:
    tarball = "/npm/left-pad/-/left-pad-1.4.0.tgz"
    assert "1.4.0" not in await visible_versions(client)
    assert (await client.get(tarball)).status == 403
    body = {**BLOCK, "versions": "1.4.0", "reason": "hotfix needed today"}
    exemption = (await post(client, "/api/v1/exemptions", body))["exemption"]
    matured = NOW - timedelta(hours=5) + timedelta(days=3)
    assert exemption["expires_at"] == matured.isoformat().replace("+00:00", "Z")
    assert exemption["id"].startswith("e-")
    assert exemption["expired"] is False
    assert "1.4.0" in await visible_versions(client)
    assert (await client.get(tarball)).status == 200
    explained = await client.get(
        "/api/v1/explain", params={"ecosystem": "npm", "package": "left-pad", "version": "1.4.0"}
    )
    assert (await explained.json())["verdict"] == "exempted"

    clock.set(matured - timedelta(seconds=1))
    assert (await client.get(tarball)).status == 200
    clock.set(matured + timedelta(seconds=1))  # matured by now, so visible on its own
    listed = (await (await client.get("/api/v1/exemptions")).json())["exemptions"]
    assert [(e["id"], e["expired"]) for e in listed] == [(exemption["id"], True)]


async def test_exemption_with_explicit_expiry_stops_applying_when_it_passes(
    client: Client, clock: FixedClock
) -> None:
    tarball = "/npm/left-pad/-/left-pad-1.4.0.tgz"
    body = {**BLOCK, "versions": "1.4.0", "expires": "2h"}
    exemption = (await post(client, "/api/v1/exemptions", body))["exemption"]
    assert exemption["expires_at"] == "2026-11-22T12:00:00Z"
    assert (await client.get(tarball)).status == 200
    assert "1.4.0" in await visible_versions(client)  # the rendered view is now cached
    clock.advance(timedelta(hours=2))
    assert "1.4.0" not in await visible_versions(client)  # dropped by the clock alone
    refused = await client.get(tarball)
    assert refused.status == 403
    assert (await refused.json())["reason"] == "quarantined"
    shown = await (await client.get(f"/api/v1/exemptions/{exemption['id']}")).json()
    assert shown["exemption"]["expired"] is True


async def test_exemption_never_lifts_a_block(client: Client) -> None:
    await post(client, "/api/v1/blocks", {**BLOCK, "versions": "1.4.0"})
    await post(client, "/api/v1/exemptions", {**BLOCK, "versions": "1.4.0"})
    refused = await client.get("/npm/left-pad/-/left-pad-1.4.0.tgz")
    assert refused.status == 403
    assert (await refused.json())["reason"] == "blocked"


async def test_exemption_of_unknown_publish_time_asks_for_expires(client: Client) -> None:
    body = {**BLOCK, "package": "no-time", "versions": "1.0.0"}
    response = await client.post("/api/v1/exemptions", json=body, headers=auth())
    assert response.status == 400
    assert "could not be found" in (await response.json())["error"]
    created = await post(client, "/api/v1/exemptions", {**body, "expires": "2026-12-01"})
    assert created["exemption"]["expires_at"] == "2026-12-01T00:00:00Z"


# freezes --------------------------------------------------------------------------------------


async def test_freeze_hides_versions_newer_than_the_cutoff(client: Client) -> None:
    assert "1.3.1" in await visible_versions(client)  # 10 days old: past the 3-day age
    body = {
        "ecosystem": "npm",
        "published_after": "2026-11-11T00:00Z",
        "until": "2026-11-29",
        "reason": "worm outbreak",
    }
    freeze = (await post(client, "/api/v1/freezes", body))["freeze"]
    assert freeze["id"].startswith("f-")
    assert freeze["package"] == "*"
    assert freeze["versions"] == "*"
    assert freeze["published_after"] == "2026-11-11T00:00:00Z"
    assert freeze["expires_at"] == "2026-11-29T00:00:00Z"
    assert await visible_versions(client) == {"1.0.0", "1.3.0"}
    refused = await client.get("/npm/left-pad/-/left-pad-1.3.1.tgz")
    assert refused.status == 403
    assert "worm outbreak" in (await refused.json())["error"]
    explained = await client.get(
        "/api/v1/explain", params={"ecosystem": "npm", "package": "left-pad", "version": "1.3.1"}
    )
    answer = await explained.json()
    assert answer["verdict"] == "quarantined"
    assert answer["until"] == "2026-11-29T00:00:00Z"
    assert answer["rule"]["id"] == freeze["id"]  # explain names the freeze that holds it

    response = await client.delete(f"/api/v1/freezes/{freeze['id']}", headers=auth())
    assert response.status == 200
    assert "1.3.1" in await visible_versions(client)


async def test_freeze_scoped_to_a_package_glob(client: Client) -> None:
    body = {
        "ecosystem": "npm",
        "package": "other-*",
        "published_after": "30d",
        "until": "7d",
        "reason": "worm",
    }
    freeze = (await post(client, "/api/v1/freezes", body))["freeze"]
    assert freeze["published_after"] == "2026-10-23T10:00:00Z"
    assert freeze["expires_at"] == "2026-11-29T10:00:00Z"
    assert "1.3.1" in await visible_versions(client)


# explain ------------------------------------------------------------------------------------


async def test_explain_names_the_rule(client: Client) -> None:
    block = (await post(client, "/api/v1/blocks", BLOCK))["block"]
    response = await client.get(
        "/api/v1/explain", params={"ecosystem": "npm", "package": "left-pad", "version": "1.3.0"}
    )
    assert response.status == 200
    answer = await response.json()
    assert answer["verdict"] == "blocked"
    assert answer["rule"]["id"] == block["id"]
    assert answer["published_at"] == "2026-10-23T10:00:00Z"
    assert "compromised" in answer["detail"]
    assert answer["files"] == []


async def test_explain_of_a_quarantined_version_says_until_when(client: Client) -> None:
    response = await client.get(
        "/api/v1/explain", params={"ecosystem": "npm", "package": "left-pad", "version": "1.4.0"}
    )
    answer = await response.json()
    assert answer["verdict"] == "quarantined"
    assert answer["until"] == "2026-11-25T05:00:00Z"
    assert answer["rule"] is None


async def test_explain_for_a_disabled_ecosystem_is_404(client: Client) -> None:
    response = await client.get(
        "/api/v1/explain", params={"ecosystem": "pypi", "package": "requests", "version": "2.0"}
    )
    assert response.status == 404
    answer = await response.json()
    assert answer["reason"] == "ecosystem-disabled"
    assert "MIRROR_PYPI_UPSTREAM" in answer["error"]


async def test_explain_of_an_unknown_version_is_404(client: Client) -> None:
    response = await client.get(
        "/api/v1/explain", params={"ecosystem": "npm", "package": "left-pad", "version": "9.9.9"}
    )
    assert response.status == 404
    assert "9.9.9" in (await response.json())["error"]


# every bad input is a 4xx with a message ---------------------------------------------------

UNSAFE_TEXTS = ["a\x01b", "a\nb", "a\rb", "\x1b[31mred", "a\u202eb", "a\u2028b", "a\x7fb", "a\x85b"]
BAD_TIMES: list[object] = [
    "99999999999d",
    "9" * 400 + "d",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "0001-01-01",
    "9999-12-31",
    "1969-12-31",
    "10000-01-01",
    "2026-13-01",
    "x" * 100,
    123,
    [],
    {},
    True,
]
BAD_LIMITS = ["\u00b2", "\u0661\u0660", "\uff11", "0", "1001", "-1", "1e3", "1.0", " ", "9" * 50]
RULE_BODIES: dict[str, dict[str, object]] = {
    "/api/v1/blocks": dict(BLOCK),
    "/api/v1/exemptions": {**BLOCK, "expires": "7d"},
    "/api/v1/freezes": {
        "ecosystem": "npm",
        "package": "left-*",
        "published_after": "1d",
        "until": "2d",
        "reason": "incident",
    },
}


def bad_body_cases() -> list[tuple[str, str, object]]:
    """(route, field, value) for every field of every rule body: each must be a 400."""
    cases: list[tuple[str, str, object]] = []
    for path, body in RULE_BODIES.items():
        for field in body:
            for text in UNSAFE_TEXTS:
                cases.append((path, field, text))
            cases += [(path, field, 7), (path, field, ["x"]), (path, field, {"a": 1})]
            if field in ("package", "versions"):
                cases.append((path, field, "x" * 600))
        cases.append((path, "reason", "x" * 2001))
    for path, field in [
        ("/api/v1/blocks", "expires"),
        ("/api/v1/exemptions", "expires"),
        ("/api/v1/freezes", "published_after"),
        ("/api/v1/freezes", "until"),
    ]:
        cases += [(path, field, value) for value in BAD_TIMES]
    return cases


@pytest.mark.parametrize(("path", "field", "value"), bad_body_cases())
async def test_every_bad_body_field_is_a_400_naming_it(
    client: Client, path: str, field: str, value: object
) -> None:
    response = await client.post(path, json={**RULE_BODIES[path], field: value}, headers=auth())
    assert response.status == 400, (await response.text())[:300]
    answer = await response.json()
    assert answer["field"] == field
    assert answer["error"].startswith(f"{field}:")
    # Refused, never stored, and the answer does not carry the raw characters either.
    assert all(char not in answer["error"] for char in "\x01\n\r\x1b\u202e\u2028\x7f\x85")
    assert await (await client.get(path)).json() == {path.rsplit("/", 1)[1]: []}


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (deep(100_000), 400),
        (deep(9), 400),
        (b'{"reason": ' + deep(100_000) + b"}", 400),
        (b'{"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}', 400),
        (b'{"reason": "' + b"x" * 70_000 + b'"}', 413),
        (b'{"reason": ' + b"1" * 5000 + b"}", 400),
        (b'{"reason": NaN}', 400),
        (b'{"reason": -Infinity}', 400),
        (b'"just a string"', 400),
    ],
    ids=lambda value: f"{len(value)}-bytes" if isinstance(value, bytes) else str(value),
)
async def test_hostile_json_bodies_are_refused(client: Client, raw: bytes, status: int) -> None:
    for path in RULE_BODIES:
        response = await client.post(
            path, data=raw, headers={**auth(), "Content-Type": "application/json"}
        )
        assert response.status == status, (path, (await response.text())[:300])
        assert (await response.json())["field"] == "body"


def bad_query_cases() -> list[tuple[str, dict[str, str], str]]:
    """(path, params, field) for every query parameter of every admin read: each a 400."""
    explain = {"ecosystem": "npm", "package": "left-pad", "version": "1.0.0"}
    impact = {"ecosystem": "npm", "package": "left-pad"}
    cases: list[tuple[str, dict[str, str], str]] = []
    for text in UNSAFE_TEXTS:
        for field in ("ecosystem", "package", "version", "file"):
            cases.append(("/api/v1/explain", {**explain, field: text}, field))
        for field in ("ecosystem", "package", "versions", "since", "cursor"):
            cases.append(("/api/v1/impact", {**impact, field: text}, field))
        for collection in ("blocks", "exemptions", "freezes"):
            cases.append((f"/api/v1/{collection}", {"ecosystem": text}, "ecosystem"))
    for value in BAD_TIMES:
        if isinstance(value, str):
            cases.append(("/api/v1/impact", {**impact, "since": value}, "since"))
    for limit in BAD_LIMITS:
        cases.append(("/api/v1/impact", {**impact, "limit": limit}, "limit"))
        cases.append(("/api/v1/audit", {"limit": limit}, "limit"))
    for cursor in ["", "x", "!!", "e30", "x" * 5000, "bnVsbA", "W10"]:
        if cursor:
            cases.append(("/api/v1/impact", {**impact, "cursor": cursor}, "cursor"))
    cases.append(("/api/v1/explain", {**explain, "package": "x" * 600}, "package"))
    return cases


@pytest.mark.parametrize(("path", "params", "field"), bad_query_cases())
async def test_every_bad_query_parameter_is_a_400_naming_it(
    client: Client, path: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(path, params=params, headers=auth())
    assert response.status == 400, (await response.text())[:300]
    answer = await response.json()
    assert answer["field"] == field, answer
    assert answer["error"].startswith(f"{field}:")


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("collection", ["blocks", "exemptions", "freezes"])
@pytest.mark.parametrize("raw_id", ["%01", "%0A", "%1B%5B31m", "%E2%80%AE", "x" * 600])
async def test_rule_ids_with_control_characters_are_a_400(
    client: Client, method: str, collection: str, raw_id: str
) -> None:
    response = await client.request(
        method, f"/api/v1/{collection}/{raw_id}", headers=auth(), skip_auto_headers=()
    )
    assert response.status == 400, await response.text()
    answer = await response.json()
    # The path gate refuses control characters before the admin API sees them; a long id
    # reaches the admin API, which names the field.
    assert answer["reason"] == "bad-request"
    assert answer.get("field", "id") == "id"
    assert "id" in answer["error"] or "control character" in answer["error"]


async def test_explain_with_a_control_character_version_is_a_json_400(client: Client) -> None:
    response = await client.get(
        "/api/v1/explain?ecosystem=npm&package=left-pad&version=%01", headers=auth()
    )
    assert response.status == 400
    assert response.reason is not None
    assert response.reason.isascii()
    assert (await response.json())["field"] == "version"


async def test_unknown_and_repeated_query_parameters_do_not_crash(client: Client) -> None:
    for path in (
        "/api/v1/explain?ecosystem=npm&package=left-pad&version=1.0.0&zzz=%01&zzz=2",
        "/api/v1/impact?ecosystem=npm&package=left-pad&bogus=1&limit=5&limit=%C2%B2",
        "/api/v1/blocks?nothing=%FF%FE",
        "/api/v1/audit?limit=3&other=%00",
    ):
        response = await client.get(path, headers=auth())
        assert response.status == 200, (path, await response.text())


async def test_far_but_valid_times_are_accepted(client: Client) -> None:
    body = {**BLOCK, "expires": "2999-12-31"}
    assert (await post(client, "/api/v1/blocks", body))["block"]["expires_at"] == (
        "2999-12-31T00:00:00Z"
    )
    body = {**BLOCK, "versions": "1.0.0", "expires": "36500d"}
    assert (await post(client, "/api/v1/blocks", body))["block"]["expires_at"] == (
        (NOW + timedelta(days=36500)).isoformat().replace("+00:00", "Z")
    )


# the change log is one line -------------------------------------------------------------------


async def test_a_change_is_one_log_line_whatever_the_stored_reason_holds(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # The API refuses control characters; a rule stored before (or by another tool) may
    # still hold them, and deleting it logs it.
    from mirror.model import RuleRecord

    forged = "ok\n2026-11-22 10:00:00 WARNING mirror.admin: block.delete b-1 by bob\x1b[2J"
    record = RuleRecord(
        id="b-0123456789ab", kind="block", ecosystem="npm", package="left\npad",
        versions="1.0.0", reason=forged, created_at=NOW, created_by="alice",
    )  # fmt: skip
    await client.app[SERVICES].state.add_rule(record)
    with caplog.at_level(logging.WARNING, logger="mirror.admin"):
        response = await client.delete("/api/v1/blocks/b-0123456789ab", headers=auth())
        assert response.status == 200
    (line,) = [r.getMessage() for r in caplog.records if r.name == "mirror.admin"]
    assert "\n" not in line
    assert "\x1b" not in line
    assert line.startswith("block.delete b-0123456789ab by alice from 127.0.0.1: npm left\\npad")
    assert "ok\\n2026-11-22 10:00:00 WARNING" in line


# impact: protected, paginated, bounded -----------------------------------------------------------


async def record(
    client: Client, package: str, versions_and_clients: list[tuple[str, str]], start: datetime
) -> None:
    await client.app[SERVICES].state.record_downloads(
        [
            DownloadEvent(
                ecosystem="npm", package=package, version=version,
                filename=f"{package.rsplit('/', 1)[-1]}-{version}.tgz", client=address,
                at=start + timedelta(seconds=n),
            )
            for n, (version, address) in enumerate(versions_and_clients)
        ]
    )  # fmt: skip


async def test_impact_needs_a_token_unless_opened(make_mirror: MakeClient) -> None:
    path = "/api/v1/impact?ecosystem=npm&package=left-pad"
    closed = await make_mirror()
    assert (await closed.get(path)).status == 401
    assert (await closed.get(path, headers=auth("q" * 20))).status == 403
    assert (await closed.get(path, headers=auth(BOB))).status == 200
    opened = await make_mirror(MIRROR_ADMIN_OPEN_IMPACT="true")
    assert (await opened.get(path)).status == 200
    both = await make_mirror(MIRROR_ADMIN_OPEN_IMPACT="true", MIRROR_ADMIN_PROTECT_READS="true")
    assert (await both.get(path)).status == 401


async def read_impact_pages(
    client: Client, params: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page of an impact query, following next_cursor (bounded)."""
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(200):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/v1/impact", params=query, headers=auth())
        assert response.status == 200, await response.text()
        page = await response.json()
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return [d for p in pages for d in p["downloads"]], pages
    raise AssertionError("impact paging did not end")


async def test_impact_pages_walk_every_matching_download_once(client: Client) -> None:
    start = NOW - timedelta(days=3)
    versions = ["1.0.0", "1.3.0", "1.3.1", "2.0.0"]
    events = [(versions[n % 4], f"10.0.{n // 250}.{n % 250}") for n in range(1500)]
    await record(client, "left-pad", events, start)
    await record(client, "other", [("1.3.0", "10.9.9.9")], start)
    downloads, pages = await read_impact_pages(
        client, {"ecosystem": "npm", "package": "left-pad", "versions": "^1.3.0", "limit": "200"}
    )
    expected = [(v, c) for v, c in events if v in ("1.3.0", "1.3.1")]
    assert [(d["version"], d["client"]) for d in downloads] == expected
    assert [len(page["downloads"]) for page in pages] == [200] * 3 + [150]
    assert pages[0]["next"].startswith("/api/v1/impact?")
    assert "cursor=" in pages[0]["next"]
    assert "limit=200" in pages[0]["next"]
    assert pages[-1]["next"] is None
    assert all(page["packages"] == ["left-pad"] for page in pages)
    # The default page is 100, the largest 1000, whatever the ledger holds.
    default, _ = await read_impact_pages(client, {"ecosystem": "npm", "package": "left-pad"})
    assert len(default) == 1500
    first = await client.get(
        "/api/v1/impact", params={"ecosystem": "npm", "package": "left-pad"}, headers=auth()
    )
    assert len((await first.json())["downloads"]) == 100
    largest = await client.get(
        "/api/v1/impact",
        params={"ecosystem": "npm", "package": "left-pad", "limit": "1000"},
        headers=auth(),
    )
    assert len((await largest.json())["downloads"]) == 1000


async def test_impact_of_a_glob_pages_across_packages(client: Client) -> None:
    start = NOW - timedelta(days=1)
    for n in range(130):
        await record(client, f"@evil/p{n:03d}", [("1.0.0", f"10.0.0.{n}")], start)
    await record(client, "@good/x", [("1.0.0", "10.1.1.1")], start)
    downloads, pages = await read_impact_pages(
        client, {"ecosystem": "npm", "package": "@evil/*", "limit": "50"}
    )
    assert [d["package"] for d in downloads] == [f"@evil/p{n:03d}" for n in range(130)]
    assert all(page["packages_total"] == 130 for page in pages)
    assert all(len(page["downloads"]) <= 50 for page in pages)
    # A glob matching nothing downloaded in many packages reads a bounded number per page.
    none, pages = await read_impact_pages(
        client, {"ecosystem": "npm", "package": "@evil/*", "versions": "9.9.9", "limit": "10"}
    )
    assert none == []
    assert len(pages) == 2  # 100 packages per page at most


async def test_a_cursor_belongs_to_its_query(client: Client) -> None:
    await record(client, "left-pad", [("1.0.0", "10.0.0.1"), ("1.0.0", "10.0.0.2")], NOW)
    params = {"ecosystem": "npm", "package": "left-pad", "limit": "1"}
    first = await (await client.get("/api/v1/impact", params=params, headers=auth())).json()
    cursor = first["next_cursor"]
    assert cursor
    for other in ({"versions": "1.0.0"}, {"package": "right-pad"}, {"since": "1d"}):
        response = await client.get(
            "/api/v1/impact", params={**params, **other, "cursor": cursor}, headers=auth()
        )
        assert response.status == 400
        assert (await response.json())["field"] == "cursor"
    second = await client.get("/api/v1/impact", params={**params, "cursor": cursor}, headers=auth())
    assert [d["client"] for d in (await second.json())["downloads"]] == ["10.0.0.2"]


async def test_a_new_block_answers_the_first_impact_page_and_where_the_rest_is(
    client: Client,
) -> None:
    await record(client, "left-pad", [("1.3.0", f"10.0.1.{n}") for n in range(150)], NOW)
    created = await post(client, "/api/v1/blocks", BLOCK)
    impact = created["impact"]
    assert len(impact["downloads"]) == 100
    rest = await client.get(impact["next"], headers=auth())
    assert rest.status == 200
    assert len((await rest.json())["downloads"]) == 50


# coverage: what a rule covers now -------------------------------------------------------------


async def test_a_rule_answers_the_versions_it_covers_now(client: Client) -> None:
    created = await post(client, "/api/v1/blocks", {**BLOCK, "versions": "^1.3.0"})
    assert created["block"]["covers"] == {
        "versions": ["1.3.0", "1.3.1", "1.4.0"],
        "count": 3,
        "listed": 4,
    }
    assert "warning" not in created
    listed = (await (await client.get("/api/v1/blocks")).json())["blocks"]
    assert listed[0]["covers"]["versions"] == ["1.3.0", "1.3.1", "1.4.0"]
    shown = await client.get(f"/api/v1/blocks/{created['block']['id']}")
    assert (await shown.json())["block"]["covers"]["count"] == 3
    explained = await client.get(
        "/api/v1/explain", params={"ecosystem": "npm", "package": "left-pad", "version": "1.3.1"}
    )
    answer = await explained.json()
    assert answer["verdict"] == "blocked"
    assert answer["rule"]["covers"]["versions"] == ["1.3.0", "1.3.1", "1.4.0"]


async def test_a_rule_covering_no_listed_version_says_so_loudly(
    client: Client, registry: FakeNpmRegistry
) -> None:
    created = await post(client, "/api/v1/blocks", {**BLOCK, "versions": "9.9.9"})
    assert created["block"]["covers"]["versions"] == []
    assert "covers no version the upstream lists" in created["warning"]
    listed = (await (await client.get("/api/v1/blocks")).json())["blocks"]
    assert "covers no version the upstream lists" in listed[0]["covers"]["warning"]
    gone = await post(client, "/api/v1/blocks", {**BLOCK, "package": "no-such-package"})
    assert "covers no version the upstream lists" in gone["warning"]


async def test_a_new_rule_sees_a_version_published_after_the_cache_was_filled(
    client: Client, registry: FakeNpmRegistry
) -> None:
    assert "1.4.0" not in await visible_versions(client)  # the packument is cached now
    registry.add_version("left-pad", "1.5.0", published=NOW - timedelta(minutes=1))
    created = await post(client, "/api/v1/blocks", {**BLOCK, "versions": "1.5.0"})
    assert created["block"]["covers"]["versions"] == ["1.5.0"]
    assert "warning" not in created


async def test_listing_rules_reads_no_upstream_document_it_has_cached(
    client: Client, registry: FakeNpmRegistry
) -> None:
    for spec in ("1.0.0", "1.3.0", "1.3.1"):
        await post(client, "/api/v1/blocks", {**BLOCK, "versions": spec})
    before = len(registry.requests)
    for _ in range(5):
        listed = (await (await client.get("/api/v1/blocks")).json())["blocks"]
        assert [rule["covers"]["count"] for rule in listed] == [1, 1, 1]
    assert len(registry.requests) == before


async def test_a_glob_rule_says_its_coverage_is_per_package(client: Client) -> None:
    created = await post(client, "/api/v1/blocks", {**BLOCK, "package": "left-*"})
    assert created["block"]["covers"]["versions"] is None
    assert "glob" in created["block"]["covers"]["note"]


async def test_pypi_and_maven_rules_answer_what_they_cover(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    from tests.fakes.maven import FakeMavenRepository
    from tests.fakes.pypi import FakePypiIndex

    index = FakePypiIndex()
    for version in ("2.30.0", "2.31.0", "2.32.0rc1"):
        index.add_wheel("requests", version, uploaded=OLD)
    index.add_sdist("requests", "2.31.0", uploaded=OLD)
    await index.start(aiohttp_server)
    repo = FakeMavenRepository()
    for version in ("1.0", "1.1", "2.0"):
        repo.add_version("org.example", "lib", version, published=OLD)
    await repo.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url, MIRROR_MAVEN_UPSTREAM=repo.url)

    pypi = await post(
        client, "/api/v1/blocks",
        {"ecosystem": "pypi", "package": "Requests", "versions": ">=2.31", "reason": "r"},
    )  # fmt: skip
    # What the policy matches: a block covers pre-releases in its range too.
    assert pypi["block"]["covers"] == {
        "versions": ["2.31.0", "2.32.0rc1"],
        "count": 2,
        "listed": 3,
    }
    maven = await post(
        client, "/api/v1/blocks",
        {"ecosystem": "maven", "package": "org.example:lib", "versions": "[1.0,2.0)",
         "reason": "r"},
    )  # fmt: skip
    assert maven["block"]["covers"] == {"versions": ["1.0", "1.1"], "count": 2, "listed": 3}
    missing = await post(
        client, "/api/v1/blocks",
        {"ecosystem": "maven", "package": "org.example:nope", "versions": "1.0", "reason": "r"},
    )  # fmt: skip
    assert "covers no version the upstream lists" in missing["warning"]
    exemption = await post(
        client, "/api/v1/exemptions",
        {"ecosystem": "pypi", "package": "requests", "versions": "==9.9", "reason": "r",
         "expires": "1d"},
    )  # fmt: skip
    assert "covers no version the upstream lists" in exemption["warning"]


async def test_an_exemption_of_a_version_published_at_the_end_of_time_is_a_400(
    client: Client, registry: FakeNpmRegistry
) -> None:
    # A hostile upstream's publish time: the default expiry would overflow datetime.
    registry.add_version("far-future", "1.0.0", published=datetime(9999, 12, 31, tzinfo=UTC))
    response = await client.post(
        "/api/v1/exemptions",
        json={"ecosystem": "npm", "package": "far-future", "versions": "1.0.0", "reason": "r"},
        headers=auth(),
    )
    assert response.status == 400, await response.text()
    assert (await response.json())["field"] == "expires"


async def test_a_listing_does_not_wait_long_for_an_upstream_document(
    client: Client, registry: FakeNpmRegistry
) -> None:
    from mirror.model import RuleRecord

    await post(client, "/api/v1/blocks", BLOCK)  # left-pad's packument is cached now
    registry.add_version("stalled", "1.0.0", published=OLD)
    path = registry.packument_path("stalled")
    registry.upstream.hold(path)
    try:
        stored = RuleRecord(
            id="b-00000000000a", kind="block", ecosystem="npm", package="stalled",
            versions="1.0.0", reason="r", created_at=NOW, created_by="alice",
        )  # fmt: skip
        await client.app[SERVICES].state.add_rule(stored)
        started = asyncio.get_running_loop().time()
        response = await client.get("/api/v1/blocks")
        waited = asyncio.get_running_loop().time() - started
        assert response.status == 200
        listed = {rule["package"]: rule["covers"] for rule in (await response.json())["blocks"]}
        assert listed["left-pad"]["versions"] == ["1.3.0"]
        assert listed["stalled"]["versions"] is None
        assert "not at hand in time" in listed["stalled"]["note"]
        assert waited < rules.LISTING_COVERAGE_TIMEOUT.total_seconds() + 2
    finally:
        registry.upstream.release(path)


async def test_a_read_only_admin_token_reads_the_audit_log_and_changes_nothing(
    make_mirror: MakeClient,
) -> None:
    reader = "auditor-token-0123456789"
    client = await make_mirror(MIRROR_ADMIN_READ_TOKENS=f"auditor:{reader}")
    await post(client, "/api/v1/blocks", BLOCK)
    audit = await client.get("/api/v1/audit", headers=auth(reader))
    assert audit.status == 200
    assert [entry["actor"] for entry in (await audit.json())["entries"]] == ["alice"]
    refused = await client.post("/api/v1/blocks", json=BLOCK, headers=auth(reader))
    assert refused.status == 403
    assert "read-only admin token" in (await refused.json())["error"]
    listed = await client.get("/api/v1/blocks", headers=auth(reader))
    assert len((await listed.json())["blocks"]) == 1
