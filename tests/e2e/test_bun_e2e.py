"""The real bun (pinned in clienttools) against `mirror serve` and the npm suite's fake
upstream: `[install] registry` in `bunfig.toml` is all it takes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e import clienttools
from tests.e2e.conftest import ClientResult, run_client
from tests.e2e.test_npm_e2e import CLIENT_TIMEOUT, Env, installed_version
from tests.e2e.test_npm_e2e import env as env  # the npm suite's mirror and fake upstream

pytestmark = pytest.mark.e2e

_DROPPED_ENV = ("BUN_", "NPM_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def client_installed() -> None:
    """Skip (fail under CI) before a mirror starts when bun is not installed."""
    clienttools.located(clienttools.BUN)


def bunfig(env: Env) -> str:
    """The README's `bunfig.toml`, with bun's analytics off."""
    return f'telemetry = false\n\n[install]\nregistry = "{env.registry_url}"\n'


def project(env: Env, name: str, dependencies: dict[str, str] | None = None) -> Path:
    directory = env.project(name, dependencies)
    (directory / ".npmrc").unlink()  # bunfig.toml alone points bun at the mirror
    (directory / "bunfig.toml").write_text(bunfig(env), encoding="utf-8")
    return directory


def lock_entry(env: Env, name: str, version: str) -> list[object]:
    """A package of `bun.lock` as bun writes it: id, tarball URL, its manifest, integrity."""
    url = f"{env.registry_url}{name}/-/{name}-{version}.tgz"
    return [f"{name}@{version}", url, {}, env.registry.version(name, version).integrity]


async def bun(env: Env, *args: str, cwd: Path, cache: str) -> ClientResult:
    """bun with a private HOME and install cache (`cache` names it: a new name is a cold
    cache), no crash reports or analytics sent anywhere."""
    home = env.root / "home"
    home.mkdir(exist_ok=True)
    environment = {
        key: value for key, value in os.environ.items() if not key.upper().startswith(_DROPPED_ENV)
    }
    environment.update(
        {
            "HOME": str(home),
            "BUN_INSTALL_CACHE_DIR": str(env.root / cache),
            "BUN_ENABLE_CRASH_REPORTING": "0",
            "DO_NOT_TRACK": "1",
            "NO_COLOR": "1",
        }
    )
    argv = clienttools.located(clienttools.BUN)
    return await run_client(*argv, *args, cwd=cwd, env=environment, seconds=CLIENT_TIMEOUT)


async def test_bun_resolves_the_newest_allowed_version_and_refuses_a_held_pin(env: Env) -> None:
    directory = project(env, "bun-range")
    result = await bun(env, "add", "qm-demo", "qm-app", cwd=directory, cache="bun-cache")
    assert result.code == 0, result
    # `latest` moved back to 1.1.0; qm-app's `^1.0.0` resolves to it as well.
    assert "installed qm-demo@1.1.0" in result.out
    assert installed_version(directory, "qm-demo") == "1.1.0"
    assert installed_version(directory, "qm-app") == "3.0.0"
    assert installed_version(directory, "@qm/widget") == "2.0.0"
    lock = (directory / "bun.lock").read_text(encoding="utf-8")
    assert json.dumps(lock_entry(env, "qm-demo", "1.1.0"))[1:-1] in lock  # URL and integrity
    assert "1.2.0" not in lock
    young = await bun(env, "add", "qm-demo@1.2.0", cwd=directory, cache="bun-cache")
    assert young.code != 0, young
    assert 'No version matching "1.2.0" found for specifier "qm-demo"' in young.out
    blocked = await bun(env, "add", "qm-blocked", cwd=directory, cache="bun-cache")
    assert blocked.code == 0, blocked
    assert installed_version(directory, "qm-blocked") == "1.0.0"


async def test_bun_frozen_lockfile_pinning_held_versions_is_refused(env: Env) -> None:
    pins = {"qm-demo": "1.2.0", "qm-blocked": "1.0.1"}
    directory = project(env, "pinned", pins)
    # A lockfile written while these versions were allowed.
    lock = {
        "lockfileVersion": 1,
        "workspaces": {"": {"name": "pinned", "dependencies": pins}},
        "packages": {name: lock_entry(env, name, version) for name, version in pins.items()},
    }
    (directory / "bun.lock").write_text(json.dumps(lock, indent=2), encoding="utf-8")
    result = await bun(env, "install", "--frozen-lockfile", cwd=directory, cache="bun-cache")
    assert result.code != 0, result
    # bun prints the status only, not the reason the mirror sends with it.
    for name, version in pins.items():
        assert f"GET {env.registry_url}{name}/-/{name}-{version}.tgz - 403" in result.out
        assert env.registry.upstream.count(env.registry.tarball_path(name, version)) == 0
    assert not (directory / "node_modules" / "qm-demo").exists()


async def test_bun_frozen_install_checks_integrity_and_asks_the_upstream_nothing(
    env: Env,
) -> None:
    first = project(env, "bun-first", {"qm-app": "^3.0.0"})
    result = await bun(env, "install", cwd=first, cache="bun-cache")
    assert result.code == 0, result
    upstream_requests = len(env.registry.requests)
    assert upstream_requests > 0
    second = project(env, "bun-second")
    shutil.copy(first / "package.json", second / "package.json")
    shutil.copy(first / "bun.lock", second / "bun.lock")
    # A cold cache: every tarball comes from the mirror again, checked against the
    # lockfile's integrity.
    result = await bun(env, "install", "--frozen-lockfile", cwd=second, cache="cold-cache")
    assert result.code == 0, result
    assert installed_version(second, "qm-demo") == "1.1.0"
    assert installed_version(second, "@qm/widget") == "2.0.0"
    assert len(env.registry.requests) == upstream_requests
