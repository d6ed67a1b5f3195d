"""`POST /api/v1/preflight` through the whole app: a lockfile, dependency list or SBOM as
the body, each pin explained by its ecosystem's adapter (fake npm upstream on 127.0.0.1,
FixedClock, SQLite state): the report `mirror preflight --json` prints."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from mirror.admin.routes import MAX_PREFLIGHT_PINS
from mirror.app import create_app
from mirror.clock import FixedClock
from mirror.config import load_config
from mirror.lockfiles.formats import FORMATS
from mirror.requestbody import MAX_INFLATED_BYTES
from tests.conftest import mirror_settings
from tests.fakes.npm import FakeNpmRegistry

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
TOKEN = "ops-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]

LOCK = {
    "name": "app",
    "lockfileVersion": 3,
    "packages": {
        "": {"name": "app", "version": "1.0.0"},
        "node_modules/left-pad": {"version": "1.3.0"},
        "node_modules/a/node_modules/left-pad": {"version": "1.4.0"},
        "node_modules/@qm/widget": {"version": "2.0.0"},
        "node_modules/local": {"version": "file:../local"},
    },
}


@pytest.fixture
async def make_client(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> MakeClient:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.3.0", published=NOW - timedelta(days=30))
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    registry.add_version("@qm/widget", "2.0.0", published=NOW - timedelta(days=90))
    await registry.start(aiohttp_server)

    async def make(**settings: str) -> Client:
        env = mirror_settings(
            tmp_path / "data",
            MIRROR_NPM_UPSTREAM=registry.url,
            MIRROR_PYPI_UPSTREAM="off",
            MIRROR_ADMIN_TOKENS=f"ops:{TOKEN}",
            **settings,
        )
        return await aiohttp_client(create_app(load_config(None, env), clock=FixedClock(NOW)))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client()


async def preflight(client: Client, body: bytes | str, **query: str) -> Any:
    response = await client.post("/api/v1/preflight", data=body, params=query)
    assert response.status == 200, await response.text()
    return await response.json()


async def refusal(
    client: Client, body: bytes | str | io.BytesIO, status: int = 400, **query: str
) -> str:
    response = await client.post("/api/v1/preflight", data=body, params=query)
    assert response.status == status, await response.text()
    error: str = (await response.json())["error"]
    return error


async def test_a_lockfile_is_explained_pin_by_pin(client: Client) -> None:
    answer = await preflight(client, json.dumps(LOCK), name="web/package-lock.json")
    assert answer["checked"] == 3
    assert answer["files"] == [
        {"file": "web/package-lock.json", "format": "package-lock.json", "pins": 3}
    ]
    [held] = answer["refused"]
    assert (held["package"], held["version"], held["verdict"]) == (
        "left-pad",
        "1.4.0",
        "quarantined",
    )
    assert held["until"] == "2026-11-25T05:00:00Z"
    assert "quarantine" in held["detail"]
    assert answer["skipped"] == ["local@file:../local"]
    assert answer["unpinned"] == []

    block = {"ecosystem": "npm", "package": "@qm/widget", "versions": "2.0.0", "reason": "bad"}
    created = await client.post("/api/v1/blocks", json=block, headers=AUTH)
    assert created.status == 201, await created.text()
    after = await preflight(client, json.dumps(LOCK))
    assert [(r["package"], r["verdict"]) for r in after["refused"]] == [
        ("@qm/widget", "blocked"),
        ("left-pad", "quarantined"),
    ]
    assert after["files"][0]["file"] == "the request body"


async def test_sbom_with_pins_of_a_disabled_ecosystem(client: Client) -> None:
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "components": [
            {"type": "library", "name": "left-pad", "purl": "pkg:npm/left-pad@1.3.0"},
            {"type": "library", "name": "requests", "purl": "pkg:pypi/requests@2.31.0"},
            {"type": "library", "name": "serde", "purl": "pkg:cargo/serde@1.0.0"},
        ],
    }
    answer = await preflight(client, json.dumps(bom))
    assert answer["files"][0]["format"] == "cyclonedx"
    assert answer["refused"] == [
        {
            "ecosystem": "pypi",
            "package": "requests",
            "version": "2.31.0",
            "verdict": "error",
            "until": None,
            "detail": "pypi is not enabled on this mirror",
            "in": ["the request body"],
        }
    ]
    assert answer["skipped"] == ["pkg:cargo/serde@1.0.0"]


async def test_format_forces_a_reader_and_gzip_bodies_are_read(client: Client) -> None:
    headless_yarn = 'left-pad@^1.0.0:\n  version "1.3.0"\n'
    assert "not a lockfile" in await refusal(client, headless_yarn, name="frontend.lock")
    for query in ({"format": "yarn.lock"}, {"name": "web/yarn.lock"}):  # forced; hinted
        answer = await preflight(client, headless_yarn, **query)
        assert answer["files"][0]["format"] == "yarn.lock"
        assert answer["checked"] == 1
        assert answer["refused"] == []
    response = await client.post(
        "/api/v1/preflight",
        data=gzip.compress(json.dumps(LOCK).encode()),
        headers={"Content-Encoding": "gzip"},
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["checked"] == 3


@pytest.mark.parametrize(
    ("body", "query", "message"),
    [
        ("Install the app with pip.\n", {}, "not a lockfile, dependency list or SBOM"),
        ('{"name": "app"}', {"name": "package.json"}, "package.json: a JSON document that is"),
        ("left-pad==1.0\n", {"format": "gemfile"}, "unknown format 'gemfile'"),
        (b"\xff\xfe\x00garbage", {}, "not UTF-8 text"),
        ("{" * 100_000, {}, "nests"),
        ("".join(f"p{i}==1.0\n" for i in range(MAX_PREFLIGHT_PINS + 1)), {}, "split it"),
        ("x==1\n", {"name": "bad\x1b[2Jname"}, "name: control and formatting characters"),
    ],
    ids=["prose", "package-json", "unknown-format", "binary", "deep", "too-many", "control"],
)
async def test_bad_bodies_are_400_with_a_reason(
    client: Client, body: str | bytes, query: dict[str, str], message: str
) -> None:
    error = await refusal(client, body, **query)
    assert message in error
    if message.startswith(("not a lockfile", "unknown format")):
        assert all(name in error for name in FORMATS)


async def test_the_body_is_bounded_on_the_wire_and_once_inflated(client: Client) -> None:
    raw = io.BytesIO(b"a" * (MAX_INFLATED_BYTES + 1))
    assert (await client.post("/api/v1/preflight", data=raw)).status == 413  # aiohttp's own
    bomb = gzip.compress(b"a==1\n" * (MAX_INFLATED_BYTES // 5 + 1))
    response = await client.post(
        "/api/v1/preflight", data=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert response.status == 413
    assert (await response.json())["reason"] == "too-large"


async def test_protect_reads_needs_a_token(make_client: MakeClient) -> None:
    client = await make_client(MIRROR_ADMIN_PROTECT_READS="true")
    assert (await client.post("/api/v1/preflight", data="x==1\n")).status == 401
    response = await client.post("/api/v1/preflight", data=json.dumps(LOCK), headers=AUTH)
    assert response.status == 200
    assert (await response.json())["checked"] == 3
