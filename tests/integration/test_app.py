"""The app with no ecosystem adapter wired: health, readiness, metrics, errors, access log."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from mirror.app import create_app
from mirror.clock import FixedClock
from mirror.config import load_config
from tests.conftest import free_port

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path) -> TestClient:
    config = load_config(None, {"MIRROR_DATA_DIR": str(tmp_path), "MIRROR_MAVEN_UPSTREAM": "off"})
    return await aiohttp_client(create_app(config, clock=FixedClock(NOW)))


async def test_healthz(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_reports_each_check(client: TestClient) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body == {
        "status": "ready",
        "checks": {"data_dir": "ok", "state": "ok", "policy": "ok"},
    }


async def test_readyz_fails_when_data_dir_is_not_writable(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    config = load_config(None, {"MIRROR_DATA_DIR": str(data_dir), "MIRROR_MAVEN_UPSTREAM": "off"})
    client = await aiohttp_client(create_app(config, clock=FixedClock(NOW)))
    # The volume goes away under the running mirror (root can write anywhere, so a chmod
    # would not do): a plain file now stands where the data dir was.
    data_dir.rename(tmp_path / "moved")
    data_dir.write_text("not a directory", encoding="utf-8")
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["data_dir"].startswith("not writable")


async def test_readyz_fails_when_redis_is_down(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    config = load_config(
        None,
        {
            "MIRROR_DATA_DIR": str(tmp_path),
            "MIRROR_MAVEN_UPSTREAM": "off",
            "MIRROR_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        },
    )
    client = await aiohttp_client(create_app(config, clock=FixedClock(NOW)))
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["state"].startswith("unavailable")


@pytest.mark.parametrize(
    ("path", "env"),
    [
        ("/npm/left-pad", "MIRROR_NPM_UPSTREAM"),
        ("/pypi/simple/requests/", "MIRROR_PYPI_UPSTREAM"),
        ("/maven/org/example/lib/maven-metadata.xml", "MIRROR_MAVEN_UPSTREAM"),
    ],
)
async def test_disabled_ecosystem_says_how_to_enable_it(
    client: TestClient, path: str, env: str
) -> None:
    response = await client.get(path)
    assert response.status == 404
    body = await response.json()
    assert body["reason"] == "ecosystem-disabled"
    assert env in body["error"]


async def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = await client.get("/nothing/here")
    assert response.status == 404
    body = await response.json()
    assert body["reason"] == "not-found"
    assert body["until"] is None
    assert body["block"] is None


async def test_metrics_count_requests(client: TestClient) -> None:
    await client.get("/healthz")
    await client.get("/nothing")
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'mirror_requests_total{ecosystem="none",kind="other",status="200"}' in text
    assert 'mirror_requests_total{ecosystem="none",kind="other",status="404"}' in text


async def test_access_log_is_one_json_line_per_request(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mirror.access"):
        await client.get("/healthz?probe=1", headers={"User-Agent": "probe/1.0"})
    lines = [record.getMessage() for record in caplog.records if record.name == "mirror.access"]
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["method"] == "GET"
    assert entry["path"] == "/healthz?probe=1"
    assert entry["status"] == 200
    assert entry["ua"] == "probe/1.0"
    assert entry["ts"].startswith("2026-11-22T12:00:00")


async def test_index_lists_ecosystems(client: TestClient) -> None:
    body = await (await client.get("/")).json()
    assert body["ecosystems"]["npm"] == {"enabled": False, "path": "/npm/"}
