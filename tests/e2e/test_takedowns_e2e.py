"""Takedowns with the real `npm` and `pip` against `mirror serve` and fake upstreams: a
version an install pulled is unpublished upstream, the mirror notices on its next refresh
(the log line and the event name the client) and the version no longer installs; a yanked
PyPI file is skipped by `pip install pkg` but still installs by exact pin (PEP 592)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.config import load_config
from mirror.state import create_state
from tests.conftest import wait_until
from tests.e2e.conftest import RunningMirror, StartMirror
from tests.e2e.test_npm_e2e import Env as NpmEnv
from tests.e2e.test_npm_e2e import installed_version
from tests.e2e.test_pypi_e2e import Env as PypiEnv
from tests.e2e.test_pypi_e2e import installed
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex

pytestmark = pytest.mark.e2e

# Copies older than this are fetched again in the foreground: the next install refreshes.
FAST_REFRESH = {
    "MIRROR_CACHE_METADATA_TTL": "1s",
    "MIRROR_CACHE_STALE_MAX": "1s",
    "MIRROR_CACHE_REFRESH_INTERVAL": "1s",
    "MIRROR_QUARANTINE": "3d",
}
PAST_TTL = 1.5  # seconds


async def takedown_line(mirror: RunningMirror, what: str) -> str:
    """The mirror's log line about `what`'s takedown (waited for: the check runs in the
    background of the request that refreshed the document)."""
    assert await wait_until(lambda: f"takedown: {what}" in mirror.log(), 15), mirror.log()
    [line] = [line for line in mirror.log().splitlines() if f"takedown: {what}" in line]
    return line


async def stored_clients(data_dir: Path, package: str) -> list[list[str]]:
    """The clients each stored event of `package` names, read from the mirror's own state."""
    config = load_config(None, {"MIRROR_DATA_DIR": str(data_dir), "MIRROR_MAVEN_UPSTREAM": "off"})
    state = create_state(config)
    await state.open()
    try:
        found = await state.events(limit=10, package=package)
    finally:
        await state.close()
    return [[row.client for row in event.impact] for event in found]


async def test_npm_install_of_an_unpublished_version_fails_and_the_event_names_who_had_it(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    old = datetime.now(UTC) - timedelta(days=90)
    registry = FakeNpmRegistry()
    registry.add_version("qm-pad", "1.0.0", published=old)
    registry.add_version("qm-pad", "1.0.1", published=old + timedelta(days=1))
    await registry.start(aiohttp_server)
    mirror = await start_mirror({"MIRROR_NPM_UPSTREAM": registry.url, **FAST_REFRESH})
    env = NpmEnv(mirror=mirror, registry=registry, root=tmp_path / "clients")

    first = env.project("first")
    result = await env.npm("install", "qm-pad@1.0.1", cwd=first)
    assert result.code == 0, result
    assert installed_version(first, "qm-pad") == "1.0.1"

    registry.remove_version("qm-pad", "1.0.1")
    await asyncio.sleep(PAST_TTL)
    again = await env.npm("install", "qm-pad@1.0.1", cwd=env.project("again"), cache="cache2")
    assert again.code != 0, again
    assert "ETARGET" in again.out

    line = await takedown_line(mirror, "npm qm-pad@1.0.1 removed upstream")
    assert "1 clients had downloaded it (1 downloads): 127.0.0.1" in line
    assert await stored_clients(mirror.data_dir, "qm-pad") == [["127.0.0.1"]]


async def test_pip_skips_a_yanked_file_for_a_range_but_installs_it_pinned(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    old = datetime.now(UTC) - timedelta(days=90)
    index = FakePypiIndex()
    index.add_wheel("qm-yank", "1.0", uploaded=old)
    wheel = index.add_wheel("qm-yank", "1.1", uploaded=old + timedelta(days=1))
    await index.start(aiohttp_server)
    mirror = await start_mirror({"MIRROR_PYPI_UPSTREAM": index.url, **FAST_REFRESH})
    env = PypiEnv(mirror=mirror, index=index, root=tmp_path / "clients")

    result = await env.pip_install("before", "qm-yank")
    assert result.code == 0, result
    assert "VERSION = '1.1'" in installed(env.root / "before", "qm_yank")

    index.yank(wheel.filename, "broken build")
    await asyncio.sleep(PAST_TTL)
    ranged = await env.pip_install("ranged", "qm-yank")
    assert ranged.code == 0, ranged
    assert "VERSION = '1.0'" in installed(env.root / "ranged", "qm_yank")
    pinned = await env.pip_install("pinned", "qm-yank==1.1")
    assert pinned.code == 0, pinned
    assert "VERSION = '1.1'" in installed(env.root / "pinned", "qm_yank")
    assert "yanked" in pinned.out.lower()
    assert "broken build" in pinned.out

    line = await takedown_line(mirror, f"pypi qm-yank@1.1 ({wheel.filename}) yanked upstream")
    assert ": broken build; 1 clients had downloaded it (1 downloads): 127.0.0.1" in line
