"""Start-up against the last-known copy (in-process apps on the embedded SQLite state): a new
install starts normally and writes its copy; a state that is empty, another one or
unreachable while a copy exists keeps the copy's rules and is not ready. (The same losses
while running, with real processes and Redis: tests/e2e/test_policy_loss.py.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from mirror import lastknown
from mirror.app import create_app
from mirror.cli.main import main
from mirror.clock import SystemClock
from mirror.config import Config, load_config
from mirror.livepolicy import SETTLE_SECONDS, LivePolicy
from mirror.services import SERVICES
from mirror.state import RuleKind, RuleRecord
from mirror.state.local import LocalState
from tests.conftest import free_port, start_redis, wait_until
from tests.fakes.npm import FakeNpmRegistry

TOKEN = "integration-admin-token-0123"
REPO = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)

Started = Callable[[Path], Awaitable[TestClient]]


def block(rule_id: str) -> RuleRecord:
    return RuleRecord(
        id=rule_id, kind="block", ecosystem="npm", package="left-pad", versions="1.3.0",
        reason="compromised", created_at=NOW, created_by="secops",
    )  # fmt: skip


def config_for(data_dir: Path, **settings: str) -> Config:
    return load_config(
        None,
        {
            "MIRROR_DATA_DIR": str(data_dir),
            "MIRROR_MAVEN_UPSTREAM": "off",
            "MIRROR_ADMIN_TOKENS": f"secops:{TOKEN}",
            **settings,
        },
    )


@asynccontextmanager
async def running(
    aiohttp_client: AiohttpClient, data_dir: Path, **settings: str
) -> AsyncIterator[TestClient]:
    client = await aiohttp_client(create_app(config_for(data_dir, **settings)))
    try:
        yield client
    finally:
        await client.close()


async def readiness(client: TestClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    return response.status, await response.json()


async def blocks(client: TestClient) -> dict[str, Any]:
    response = await client.get("/api/v1/blocks", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def delete_state(data_dir: Path) -> None:
    for suffix in ("-wal", "-shm", ""):
        await asyncio.to_thread((data_dir / f"state.sqlite3{suffix}").unlink, missing_ok=True)


async def install_with_a_block(aiohttp_client: AiohttpClient, data_dir: Path) -> str:
    """A mirror that ran once with one block; returns its state's identity."""
    async with running(aiohttp_client, data_dir) as client:
        services = client.app[SERVICES]
        await services.state.add_rule(block("b1"))
        await services.policy.reload()
        await asyncio.sleep(0.1)  # the guard copies the change at once
        assert (await readiness(client))[0] == 200
    known = lastknown.load(lastknown.path_in(data_dir))
    assert known is not None
    assert [rule.id for rule in known.rules] == ["b1"]
    return known.identity


async def test_a_new_install_starts_ready_and_writes_its_copy(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    async with running(aiohttp_client, tmp_path) as client:
        status, body = await readiness(client)
        assert status == 200
        assert body["checks"]["policy"] == "ok"
        seen = await client.app[SERVICES].state.state_identity()
    known = lastknown.load(lastknown.path_in(tmp_path))
    assert known is not None
    assert seen.identity is not None
    assert known.identity == seen.identity


async def test_an_emptied_state_at_start_keeps_the_copys_rules_and_is_not_ready(
    aiohttp_client: AiohttpClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    identity = await install_with_a_block(aiohttp_client, tmp_path)
    await delete_state(tmp_path)

    with caplog.at_level(logging.ERROR, logger="mirror.policy"):
        async with running(aiohttp_client, tmp_path) as client:
            status, body = await readiness(client)
            assert status == 503
            assert "has no identity" in body["checks"]["policy"]
            assert identity in body["checks"]["policy"]
            listing = await blocks(client)
            assert [rule["id"] for rule in listing["blocks"]] == ["b1"]
            assert "has no identity" in listing["last_known"]["reason"]
            # The empty state was not made "the" state: no identity claimed, copy untouched.
            assert (await client.app[SERVICES].state.state_identity()).identity is None
    assert sum("NOT TRUSTING" in record.message for record in caplog.records) == 1
    known = lastknown.load(lastknown.path_in(tmp_path))
    assert known is not None
    assert (known.identity, [rule.id for rule in known.rules]) == (identity, ["b1"])


async def test_another_install_s_state_at_start_is_not_trusted(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"
    await install_with_a_block(aiohttp_client, mine)
    async with running(aiohttp_client, other):
        pass
    await delete_state(mine)
    for suffix in ("", "-wal", "-shm"):
        source = other / f"state.sqlite3{suffix}"
        if source.exists():
            await asyncio.to_thread(source.replace, mine / source.name)

    async with running(aiohttp_client, mine) as client:
        status, body = await readiness(client)
        assert status == 503
        assert "is another one" in body["checks"]["policy"]
        assert [rule["id"] for rule in (await blocks(client))["blocks"]] == ["b1"]


async def test_an_unreachable_state_at_start_enforces_the_copy(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    await install_with_a_block(aiohttp_client, tmp_path)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # a Redis that is down at start

    async with running(aiohttp_client, tmp_path, MIRROR_REDIS_URL=nowhere) as client:
        status, body = await readiness(client)
        assert status == 503
        assert body["checks"]["state"].startswith("unavailable")
        # Serving does not fail closed on "no rules": it has the copy's.
        rules = client.app[SERVICES].policy.rules()
        assert [record.id for record in rules.records] == ["b1"]


async def test_a_damaged_copy_is_set_aside_and_logged(
    aiohttp_client: AiohttpClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = lastknown.path_in(tmp_path)
    path.write_bytes(b"{not json")
    with caplog.at_level(logging.ERROR, logger="mirror.policy"):
        async with running(aiohttp_client, tmp_path) as client:
            assert (await readiness(client))[0] == 200
    assert "cannot be read" in caplog.text
    assert (tmp_path / "lastknown.json.damaged").read_bytes() == b"{not json"
    assert lastknown.load(path) is not None  # a fresh copy of the (trusted) state


def test_state_commands_without_a_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = ["--data-dir", str(tmp_path), "--config", str(REPO / "config" / "mirror.toml")]
    assert main(["state", "restore", *settings]) == 1
    assert "no last-known copy" in capsys.readouterr().err
    assert main(["state", "status", *settings]) == 0
    out = capsys.readouterr().out
    assert "last-known copy: none" in out
    assert "status: ok" in out
    assert "0 block" in out


class LosesItsFileBeforeListing(LocalState):
    """A real SQLite state whose file is deleted exactly between the identity read and the
    rules read of the next reload: a timing no test can hit by chance."""

    lose_next = False

    async def list_rules(self, kind: RuleKind | None = None) -> list[RuleRecord]:
        if self.lose_next:
            self.lose_next = False
            await delete_state(self.path.parent)
        return await super().list_rules(kind)


async def test_a_loss_between_reads_is_not_taken_for_an_admin_emptying_the_rules(
    tmp_path: Path,
) -> None:
    state = LosesItsFileBeforeListing(tmp_path / "state.sqlite3")
    config = config_for(tmp_path)
    live = LivePolicy(
        state, config.quarantine, SystemClock(), last_known_path=lastknown.path_in(tmp_path)
    )
    await state.open()
    try:
        await state.add_rule(block("b1"))
        await live.start()
        assert live.degraded is None

        state.lose_next = True
        await live.reload()

        assert live.degraded is not None
        assert "has no identity" in live.degraded
        assert [record.id for record in live.rules().records] == ["b1"]
        known = lastknown.load(lastknown.path_in(tmp_path))
        assert known is not None
        assert [rule.id for rule in known.rules] == ["b1"]
    finally:
        await state.close()


async def test_a_new_install_on_redis_settles_for_a_moment_then_comes_up_by_itself(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """With no copy, a worker does not trust a Redis whose identity is seconds old (another
    replica may be about to report it lost): reads are refused saying why, and /readyz says
    so, then the install comes up with no command."""
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.3.0", published=NOW - timedelta(days=30))
    await registry.start(aiohttp_server)
    process, url = start_redis(tmp_path)
    settings = {"MIRROR_REDIS_URL": url, "MIRROR_NPM_UPSTREAM": registry.url}
    try:
        async with running(aiohttp_client, tmp_path / "data", **settings) as client:
            started = asyncio.get_running_loop().time()
            status, body = await readiness(client)
            assert status == 503
            assert body["checks"]["policy"].startswith("not serving yet: the shared state is new")
            refused = await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")
            assert refused.status == 503
            assert refused.headers["Retry-After"] == "2"  # clients retry; it comes up
            assert "this replica has no last-known copy" in (await refused.json())["error"]

            async def ready() -> bool:
                return (await readiness(client))[0] == 200

            while not await ready():
                assert asyncio.get_running_loop().time() - started < SETTLE_SECONDS + 3
                await asyncio.sleep(0.1)
            assert asyncio.get_running_loop().time() - started >= SETTLE_SECONDS - 0.5
            # Trusted now: the copy is written (by the guard, right after), and a restart with
            # it does not wait again.
            copy_path = lastknown.path_in(tmp_path / "data")
            assert await wait_until(lambda: lastknown.load(copy_path) is not None, 10)
            assert (await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")).status == 200
        async with running(aiohttp_client, tmp_path / "data", **settings) as client:
            assert (await readiness(client))[0] == 200
    finally:
        process.kill()
        process.wait(10)
