"""The real `pip` and `uv` through `mirror serve` while the upstream index resets connections:
a transient failure on a page, a `.metadata` file or a wheel not cached yet reaches the client
as a 503 with `Retry-After`, the client retries, and the install succeeds (with a 502, pip
gave up at once). The mirror's own retries are off, so each reset reaches the client."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import StartMirror
from tests.e2e.test_pypi_e2e import Env, installed
from tests.fakes.pypi import FakePypiIndex

pytestmark = pytest.mark.e2e

# Resets per path: aiohttp (the mirror's client) silently retries a reset once when the
# connection came from its pool, so two make sure the client sees at least one.
RESETS = 2


@pytest.fixture
async def env(aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path) -> Env:
    index = FakePypiIndex()
    old = datetime.now(UTC) - timedelta(days=90)
    for project in ("qm-flaky", "qm-flaky-uv"):
        index.add_wheel(project, "1.0", uploaded=old)
    await index.start(aiohttp_server)
    mirror = await start_mirror(
        {
            "MIRROR_PYPI_UPSTREAM": index.url,
            "MIRROR_QUARANTINE": "3d",
            "MIRROR_UPSTREAM_RETRIES": "0",
            "MIRROR_ACCESS_LOG": "true",
        }
    )
    return Env(mirror=mirror, index=index, root=tmp_path / "clients")


def break_once(index: FakePypiIndex, project: str) -> list[str]:
    """Reset the first requests for the project's page, its wheel's `.metadata` and the
    wheel; the upstream paths."""
    wheel = index.files[project][0]
    paths = [FakePypiIndex.page_path(project), wheel.path + ".metadata", wheel.path]
    for path in paths:
        index.upstream.reset(path, times=RESETS)
    return paths


def answered_503(log: str, fragment: str) -> list[dict[str, object]]:
    """The access-log lines of 503 answers for paths containing `fragment`."""
    lines = []
    for line in log.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            entry = json.loads(line[start:])
        except ValueError:
            continue
        if entry.get("status") == 503 and fragment in str(entry.get("path")):
            lines.append(entry)
    return lines


async def test_pip_retries_a_transient_failure_and_installs(env: Env) -> None:
    paths = break_once(env.index, "qm-flaky")
    result = await env.pip_install("flaky", "qm-flaky==1.0")
    assert result.code == 0, f"{result}\n--- mirror log ---\n{env.mirror.log()[-4000:]}"
    assert "VERSION = '1.0'" in installed(env.root / "flaky", "qm_flaky")
    log = env.mirror.log()
    # pip saw a 503 for the page, the `.metadata` file and the wheel (it retries 500 and 503
    # only) and got each on a retry.
    wheel = env.index.files["qm-flaky"][0].filename
    failed = {str(entry["path"]) for entry in answered_503(log, "qm-flaky")}
    assert failed == {
        "/pypi/simple/qm-flaky/",
        f"/pypi/files/qm-flaky/{wheel}.metadata",
        f"/pypi/files/qm-flaky/{wheel}",
    }, log[-4000:]
    for path in paths:
        assert env.index.upstream.count(path) > RESETS, path
    # The outage was told once for the host and its end once, not once per failure.
    assert log.count(f"upstream {env.index.upstream.host} is failing") == 1, log[-4000:]


async def test_uv_retries_a_transient_failure_and_installs(env: Env) -> None:
    break_once(env.index, "qm-flaky-uv")
    result = await env.uv_install("venv", "qm-flaky-uv==1.0")
    assert result.code == 0, f"{result}\n--- mirror log ---\n{env.mirror.log()[-4000:]}"
    assert answered_503(env.mirror.log(), "qm-flaky-uv"), env.mirror.log()[-4000:]
