"""The real `pip` and `uv` against `mirror serve` (two worker processes) and an index that
declares no PEP 658 metadata: after one install has brought wheels into the cache, the next
resolver run reads their `.metadata` from the mirror instead of the wheels.

The newest release's METADATA says `Requires-Python: <3` and the index does not say so: a
resolver must read that metadata to reject it, and then never needs its wheel."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import StartMirror
from tests.e2e.test_pypi_e2e import Env, _uv
from tests.fakes.pypi import FakeFile, FakePypiIndex, make_wheel

pytestmark = pytest.mark.e2e

WHEEL = "qm_meta-1.0-py3-none-any.whl"
REJECTED = "qm_meta-2.0-py3-none-any.whl"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
async def env(aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path) -> Env:
    old = datetime.now(UTC) - timedelta(days=90)
    index = FakePypiIndex()
    index.add_wheel("qm-meta", "1.0", uploaded=old, metadata=False)
    filename, data, _metadata = make_wheel("qm-meta", "2.0", requires_python="<3")
    assert filename == REJECTED
    index.add_file(
        FakeFile(project="qm-meta", version="2.0", filename=filename, data=data, uploaded=old)
    )
    await index.start(aiohttp_server)
    mirror = await start_mirror(
        {"MIRROR_PYPI_UPSTREAM": index.url, "MIRROR_QUARANTINE": "3d"}, workers=2
    )
    return Env(mirror=mirror, index=index, root=tmp_path / "clients")


def requests_logged(log: str) -> list[dict[str, Any]]:
    """The access log's entries (one JSON object a line) in `log`."""
    entries = []
    for line in log.splitlines():
        start = line.find('{"ts"')
        if start >= 0:
            entries.append(json.loads(line[start:]))
    return entries


async def page_declares(env: Env, filename: str) -> bool:
    """Whether the mirror's page declares metadata for `filename`, asked on fresh connections
    (so either worker answers) until it does, bounded."""
    url = f"{env.index_url}qm-meta/"
    for _ in range(100):
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers={"Accept": JSON_TYPE}) as response,
        ):
            body = await response.json(content_type=None)
        entry = next(item for item in body["files"] if item["filename"] == filename)
        if "core-metadata" in entry:
            return True
        await asyncio.sleep(0.1)
    return False


async def second_run_paths(env: Env, run: Any) -> list[str]:
    """Install once (the wheel comes into the cache), then run `run()`: the paths the mirror
    was asked for during the second run."""
    first = await env.pip_install("first", "qm-meta")
    assert first.code == 0, first
    assert "VERSION = '1.0'" in (env.root / "first" / "qm_meta" / "__init__.py").read_text()
    for filename in (WHEEL, REJECTED):  # both read: the newer one to find it is for <3
        assert env.index.upstream.count(env.index.file(filename).path) == 1
        assert await page_declares(env, filename)
    before = len(requests_logged(env.mirror.log()))
    result = await run()
    assert result.code == 0, result
    await asyncio.sleep(0.5)  # the access log line is written after the response
    return [entry["path"] for entry in requests_logged(env.mirror.log())[before:]]


async def test_pip_reads_the_metadata_of_a_cached_wheel_instead_of_the_wheel(env: Env) -> None:
    report = env.root / "report.json"
    paths = await second_run_paths(
        env,
        lambda: env.run(
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            "--index-url",
            env.index_url,
            "qm-meta",
        ),
    )
    # pip 23 downloads the wheel it installs even with --dry-run; the rejected release it
    # judged by its metadata alone.
    assert f"/pypi/files/qm-meta/{REJECTED}.metadata" in paths
    assert f"/pypi/files/qm-meta/{REJECTED}" not in paths
    assert f"/pypi/files/qm-meta/{WHEEL}.metadata" in paths
    installs = json.loads(report.read_text())["install"]
    assert [item["metadata"]["version"] for item in installs] == ["1.0"]
    # Nothing more from the upstream: the metadata came from the cached wheels.
    for filename in (WHEEL, REJECTED):
        assert env.index.upstream.count(env.index.file(filename).path) == 1


async def test_uv_compile_reads_the_metadata_of_a_cached_wheel_instead_of_the_wheel(
    env: Env,
) -> None:
    requirements = env.root / "requirements.in"
    requirements.parent.mkdir(parents=True, exist_ok=True)
    requirements.write_text("qm-meta\n")
    output = env.root / "requirements.txt"
    paths = await second_run_paths(
        env,
        lambda: env.run(
            _uv(),
            "--no-config",
            "pip",
            "compile",
            "--no-cache",
            "--python",
            sys.executable,
            "--index-url",
            env.index_url,
            str(requirements),
            "-o",
            str(output),
        ),
    )
    # uv judges candidates by the Requires-Python the index declares, not the metadata's:
    # it picks 2.0, and reads only its metadata (no wheel at all).
    assert "qm-meta==2.0" in output.read_text()
    assert f"/pypi/files/qm-meta/{REJECTED}.metadata" in paths
    assert [path for path in paths if path.endswith(".whl")] == []
    for filename in (WHEEL, REJECTED):
        assert env.index.upstream.count(env.index.file(filename).path) == 1
