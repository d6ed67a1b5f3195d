"""The cache (`data_dir`) and the state (`state_dir`) apart: clearing the cache keeps every
rule, and a directory the mirror cannot write is named before anything starts."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from mirror import directories
from mirror.app import create_app
from mirror.config import load_config
from mirror.errors import ConfigError
from tests.conftest import mirror_settings

TOKEN = "dir-token-0123456789ab"
BLOCK = {"ecosystem": "npm", "package": "left-pad", "versions": "1.3.0", "reason": "compromised"}


async def start(aiohttp_client: AiohttpClient, cache: Path, state: Path) -> TestClient:
    env = mirror_settings(cache, MIRROR_STATE_DIR=str(state), MIRROR_ADMIN_TOKENS=f"ops:{TOKEN}")
    return await aiohttp_client(create_app(load_config(None, env)))


async def test_clearing_the_cache_keeps_the_policy(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    cache, state = tmp_path / "cache", tmp_path / "state"
    client = await start(aiohttp_client, cache, state)
    response = await client.post(
        "/api/v1/blocks", json=BLOCK, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status == 201, await response.text()
    await client.close()
    assert sorted(path.name for path in state.iterdir() if path.name.startswith("state.")) != []
    assert not any(cache.glob("state.sqlite3*"))
    assert not any(cache.glob("lastknown*"))

    shutil.rmtree(cache)  # an operator clears the cache
    client = await start(aiohttp_client, cache, state)
    blocks = (await (await client.get("/api/v1/blocks")).json())["blocks"]
    assert [(block["package"], block["versions"]) for block in blocks] == [("left-pad", "1.3.0")]
    ready = await (await client.get("/readyz")).json()
    assert ready["checks"]["data_dir"] == "ok"
    assert ready["checks"]["state_dir"] == "ok"


def test_without_a_state_dir_the_state_stays_in_the_data_dir(tmp_path: Path) -> None:
    config = load_config(None, {"MIRROR_DATA_DIR": str(tmp_path)})
    assert config.state_directory == tmp_path
    assert directories.writable_directories(config) == {"data_dir": tmp_path}


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory not even root may write: the immutable attribute (where the file system
    and the process's capabilities allow setting it)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    try:
        subprocess.run(["chattr", "+i", str(locked)], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("chattr +i is not available here")
    try:
        yield locked
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False, timeout=30)


@pytest.mark.parametrize("key", ["MIRROR_DATA_DIR", "MIRROR_STATE_DIR"])
def test_a_directory_under_a_file_is_named_with_its_setting(key: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory", encoding="utf-8")
    env = {"MIRROR_DATA_DIR": str(tmp_path / "data"), key: str(tmp_path / "file" / "sub")}
    with pytest.raises(ConfigError) as caught:
        directories.prepare(load_config(None, env))
    setting = key.removeprefix("MIRROR_").lower()
    assert str(caught.value).startswith(f"{setting}: {tmp_path / 'file' / 'sub'} is not writable")
    assert "\n" not in str(caught.value)


def test_a_directory_it_cannot_write_into_is_named(immutable_dir: Path, tmp_path: Path) -> None:
    env = {"MIRROR_DATA_DIR": str(tmp_path / "data"), "MIRROR_STATE_DIR": str(immutable_dir)}
    with pytest.raises(ConfigError, match=r"^state_dir: .*locked is not writable by uid \d+"):
        directories.prepare(load_config(None, env))
