"""The real `pip` and `uv` against `mirror serve` and a fake index upstream (real wheels,
chosen upload times, PEP 658 metadata): what a developer sees when files are held back."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import (
    ClientResult,
    RunningMirror,
    StartMirror,
    block_before_start,
    run_client,
)
from tests.fakes.pypi import FakePypiIndex

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT = 180  # seconds per client run; a hung client fails the test, never the suite
# A tag this interpreter ranks above `py3-none-any`.
EXACT_TAG = f"py{sys.version_info.major}{sys.version_info.minor}-none-any"
_DROPPED_ENV = ("PIP_", "UV_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "VIRTUAL_ENV")


@dataclass
class Env:
    mirror: RunningMirror
    index: FakePypiIndex
    root: Path

    @property
    def index_url(self) -> str:
        return f"{self.mirror.url}/pypi/simple/"

    async def run(self, *args: str, cwd: Path | None = None) -> ClientResult:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.upper().startswith(_DROPPED_ENV)
        }
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        env.update(
            {
                "HOME": str(home),
                "PIP_CONFIG_FILE": os.devnull,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "UV_NO_CONFIG": "1",
                "UV_CACHE_DIR": str(self.root / "uv-cache"),
                "NO_COLOR": "1",
            }
        )
        return await run_client(*args, cwd=cwd or self.root, env=env, seconds=CLIENT_TIMEOUT)

    async def pip_install(self, target: str, *requirements: str) -> ClientResult:
        return await self.run(
            sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
            "--index-url", self.index_url, "--target", str(self.root / target), *requirements,
        )  # fmt: skip

    async def uv_install(self, venv: str, *requirements: str) -> ClientResult:
        directory = self.root / venv
        created = await self.run(
            _uv(), "--no-config", "venv", "--python", sys.executable, str(directory)
        )
        assert created.code == 0, created
        return await self.run(
            _uv(), "--no-config", "pip", "install", "--python", str(directory / "bin" / "python"),
            "--index-url", self.index_url, *requirements,
        )  # fmt: skip


def _uv() -> str:
    path = shutil.which("uv")
    if path is None:
        pytest.fail("uv is not installed: .ci/run installs it (pip install uv)")
    return path


def installed(target: Path, module: str) -> str:
    return (target / module / "__init__.py").read_text(encoding="utf-8")


@pytest.fixture
async def env(aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path) -> Env:
    now = datetime.now(UTC)
    old = now - timedelta(days=90)
    index = FakePypiIndex()
    index.add_wheel("qm-demo", "1.0", uploaded=old)
    index.add_wheel("qm-demo", "1.1", uploaded=now - timedelta(days=10))
    index.add_wheel("qm-demo", "1.2", uploaded=now - timedelta(hours=2))
    # An old release that gained a wheel today, for exactly this interpreter (clients prefer
    # it to the generic one): while it is young the old generic wheel is what gets installed.
    index.add_wheel("qm-late", "1.0", uploaded=old)
    index.add_wheel("qm-late", "1.0", uploaded=now - timedelta(hours=1), tag=EXACT_TAG)
    index.add_sdist("qm-late", "0.9", uploaded=old)
    index.add_wheel("qm-blocked", "1.0", uploaded=old)
    index.add_wheel("qm-blocked", "1.1", uploaded=now - timedelta(days=20))
    await index.start(aiohttp_server)
    data_dir = tmp_path / "mirror-data"
    await block_before_start(data_dir, "pypi", "qm-blocked", "==1.1")
    mirror = await start_mirror(
        {"MIRROR_PYPI_UPSTREAM": index.url, "MIRROR_QUARANTINE": "3d"}, data_dir=data_dir
    )
    return Env(mirror=mirror, index=index, root=tmp_path / "clients")


async def test_pip_range_resolves_to_the_newest_allowed_version(env: Env) -> None:
    result = await env.pip_install("range", "qm-demo>=1.0,<2")
    assert result.code == 0, result
    assert "VERSION = '1.1'" in installed(env.root / "range", "qm_demo")


async def test_pip_install_of_a_young_version_fails(env: Env) -> None:
    result = await env.pip_install("young", "qm-demo==1.2")
    assert result.code != 0, result
    assert "from versions: 1.0, 1.1" in result.out
    assert "No matching distribution found for qm-demo==1.2" in result.out


async def test_pip_installs_the_older_file_of_a_release_with_a_young_wheel(env: Env) -> None:
    result = await env.pip_install("late", "qm-late==1.0")
    assert result.code == 0, result
    assert "TAG = 'py3-none-any'" in installed(env.root / "late", "qm_late")
    assert EXACT_TAG not in result.out


async def test_pip_install_of_a_blocked_version_is_refused(env: Env) -> None:
    result = await env.pip_install("blocked", "qm-blocked==1.1")
    assert result.code != 0, result
    assert "from versions: 1.0" in result.out
    fallback = await env.pip_install("blocked-ok", "qm-blocked")
    assert fallback.code == 0, fallback
    assert "VERSION = '1.0'" in installed(env.root / "blocked-ok", "qm_blocked")


async def test_pip_require_hashes_and_the_second_install_hits_no_upstream_file(env: Env) -> None:
    item = env.index.file("qm_demo-1.1-py3-none-any.whl")
    requirements = env.root / "requirements.txt"
    requirements.parent.mkdir(parents=True, exist_ok=True)
    requirements.write_text(f"qm-demo==1.1 --hash=sha256:{item.sha256}\n", encoding="utf-8")
    first = await env.pip_install("hashes", "--require-hashes", "-r", str(requirements))
    assert first.code == 0, first
    assert env.index.upstream.count(item.path) == 1
    second = await env.pip_install("hashes-again", "--require-hashes", "-r", str(requirements))
    assert second.code == 0, second
    assert env.index.upstream.count(item.path) == 1


async def test_pip_direct_download_of_a_held_file_says_why(env: Env) -> None:
    url = f"{env.mirror.url}/pypi/files/qm-demo/qm_demo-1.2-py3-none-any.whl"
    result = await env.pip_install("direct", url)
    assert result.code != 0, result
    assert "403" in result.out


async def test_uv_range_young_pin_and_blocked_version(env: Env) -> None:
    ranged = await env.uv_install("uv-range", "qm-demo>=1.0,<2")
    assert ranged.code == 0, ranged
    assert "qm-demo==1.1" in ranged.out
    young = await env.uv_install("uv-young", "qm-demo==1.2")
    assert young.code != 0, young
    assert "qm-demo" in young.out
    blocked = await env.uv_install("uv-blocked", "qm-blocked==1.1")
    assert blocked.code != 0, blocked
    late = await env.uv_install("uv-late", "qm-late==1.0")
    assert late.code == 0, late
    site = next((env.root / "uv-late" / "lib").glob("python*/site-packages"))
    assert "TAG = 'py3-none-any'" in installed(site, "qm_late")


# uv on a cold cache, with an index that declares no PEP 658 metadata ---------------------


@pytest.fixture
async def cold_env(aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path) -> Env:
    """Wheels without `.metadata` files: uv reads their METADATA by HEAD and Range requests."""
    now = datetime.now(UTC)
    old = now - timedelta(days=90)
    index = FakePypiIndex()
    for project, version, uploaded, padding in (
        ("qm-alpha", "1.0", old, 0),
        ("qm-alpha", "1.1", old, 0),
        ("qm-alpha", "2.0", now - timedelta(hours=2), 0),  # young: held
        # Over 16 KiB: uv asks for its last 16 KiB (central directory and METADATA).
        ("qm-beta", "3.0", old, 256 * 1024),
    ):
        index.add_wheel(project, version, uploaded=uploaded, metadata=False, padding=padding)
    await index.start(aiohttp_server)
    mirror = await start_mirror(
        {"MIRROR_PYPI_UPSTREAM": index.url, "MIRROR_QUARANTINE": "3d"},
        data_dir=tmp_path / "mirror-data",
    )
    return Env(mirror=mirror, index=index, root=tmp_path / "clients")


async def test_uv_compile_reads_uncached_wheels_by_range_before_they_are_downloaded(
    cold_env: Env,
) -> None:
    env = cold_env
    wheels = [item for files in env.index.files.values() for item in files]
    for item in wheels:
        env.index.upstream.hold_body(item.path)  # every full download stays under way
    requirements = env.root / "requirements.in"
    requirements.parent.mkdir(parents=True, exist_ok=True)
    requirements.write_text("qm-alpha>=1.0\nqm-beta\n", encoding="utf-8")
    compiled = await env.run(
        _uv(), "--no-config", "pip", "compile", str(requirements), "--index-url", env.index_url,
        "--no-header", "--no-annotate",
    )  # fmt: skip
    try:
        assert compiled.code == 0, compiled
        assert "qm-alpha==1.1" in compiled.out, compiled
        assert "qm-beta==3.0" in compiled.out, compiled
        # uv read each wheel it needed by HEAD and ranges (the bigger one: its last 16 KiB),
        # answered while no wheel's full download could finish: they were all held.
        wanted = [
            (filename, method, status)
            for filename in ("qm_alpha-1.1-py3-none-any.whl", "qm_beta-3.0-py3-none-any.whl")
            for method, status in (("HEAD", 200), ("GET", 206))
        ]
        for _ in range(50):  # the last access-log lines may follow the answers by a moment
            access = [line for line in env.mirror.log().splitlines() if '"kind":"art' in line]
            seen = {
                (filename, method, status)
                for filename, method, status in wanted
                for line in access
                if f'/{filename}"' in line
                and f'"method":"{method}"' in line
                and f'"status":{status}' in line
            }
            if seen == set(wanted):
                break
            await asyncio.sleep(0.1)
        assert seen == set(wanted), access
        assert not any('"method":"GET"' in line and '"status":200' in line for line in access)
    finally:
        for item in wheels:
            env.index.upstream.release(item.path)
    read = [item for item in wheels if env.index.upstream.count(item.path) > 0]
    assert {item.filename for item in read} == {
        "qm_alpha-1.1-py3-none-any.whl",
        "qm_beta-3.0-py3-none-any.whl",
    }
    installed_ = await env.uv_install("cold", "qm-alpha>=1.0", "qm-beta")
    assert installed_.code == 0, installed_
    for item in read:
        full = [
            request
            for request in env.index.upstream.requests
            if request.path == item.path
            and request.method == "GET"
            and "Range" not in request.headers
        ]
        assert len(full) == 1, item.filename  # one download, started by the first HEAD
