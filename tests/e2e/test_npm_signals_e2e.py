"""The real `npm` CLI against `mirror serve` and a fake npm upstream whose newest release adds
a postinstall script: npm resolves to the release before it, and asking for the suspicious
one fails with the risk signal named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import StartMirror
from tests.e2e.test_npm_e2e import Env, _tool, installed_version
from tests.fakes.npm import FakeNpmRegistry

pytestmark = pytest.mark.e2e

SIGNAL = "install-script-added"
DETAIL = "postinstall script added in 1.2.0; 1.1.0 had none"


@pytest.fixture
async def env(aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path) -> Env:
    _tool("npm")
    now = datetime.now(UTC)
    registry = FakeNpmRegistry()
    registry.add_version("qm-signal", "1.0.0", published=now - timedelta(days=90))
    registry.add_version("qm-signal", "1.1.0", published=now - timedelta(days=40))
    # Past the 3-day quarantine, but its new install script holds it 14 days.
    registry.add_version(
        "qm-signal",
        "1.2.0",
        published=now - timedelta(days=5),
        scripts={"postinstall": "node -e \"require('fs').writeFileSync('ran', '')\""},
    )
    await registry.start(aiohttp_server)
    mirror = await start_mirror(
        {"MIRROR_NPM_UPSTREAM": registry.url, "MIRROR_QUARANTINE": "3d"},
        data_dir=tmp_path / "mirror-data",
    )
    return Env(mirror=mirror, registry=registry, root=tmp_path / "clients")


async def test_npm_install_resolves_to_the_release_before_the_suspicious_one(env: Env) -> None:
    project = env.project("latest")
    result = await env.npm("install", "qm-signal", cwd=project)
    assert result.code == 0, result
    assert installed_version(project, "qm-signal") == "1.1.0"
    assert f"npm notice qm-signal: 1 version held for risk signal {SIGNAL}" in result.out
    assert DETAIL in result.out
    assert env.registry.upstream.count("/qm-signal/-/qm-signal-1.2.0.tgz") == 0


async def test_npm_install_of_the_suspicious_version_fails_naming_the_signal(env: Env) -> None:
    project = env.project("pinned")
    result = await env.npm("install", "qm-signal@1.2.0", cwd=project)
    assert result.code != 0, result
    assert "ETARGET" in result.out
    assert "No matching version found for qm-signal@1.2.0" in result.out
    assert f"{SIGNAL} (1.2.0, until " in result.out
    assert DETAIL in result.out
    assert not (project / "node_modules" / "qm-signal").exists()
    assert env.registry.upstream.count("/qm-signal/-/qm-signal-1.2.0.tgz") == 0


async def test_npm_ci_of_a_lockfile_pinning_it_fails_403_naming_the_signal(env: Env) -> None:
    """With a `resolved` URL npm fetches the tarball at once: the mirror's 403 says why."""
    project = env.project("locked", {"qm-signal": "1.2.0"})
    suspicious = env.registry.version("qm-signal", "1.2.0")
    lock = {
        "name": "locked",
        "version": "1.0.0",
        "lockfileVersion": 3,
        "requires": True,
        "packages": {
            "": {"name": "locked", "version": "1.0.0", "dependencies": {"qm-signal": "1.2.0"}},
            "node_modules/qm-signal": {
                "version": "1.2.0",
                "resolved": f"{env.registry_url}qm-signal/-/qm-signal-1.2.0.tgz",
                "integrity": suspicious.integrity,
                "hasInstallScript": True,
            },
        },
    }
    (project / "package-lock.json").write_text(json.dumps(lock), encoding="utf-8")
    result = await env.npm("ci", cwd=project)
    assert result.code != 0, result
    assert "npm error code E403" in result.out
    assert f"{DETAIL} (risk signal {SIGNAL}: quarantine extended to 14d)" in result.out
    assert not (project / "ran").exists()
    assert env.registry.upstream.count("/qm-signal/-/qm-signal-1.2.0.tgz") == 0
