"""The real `npm` and `pnpm` CLIs against `mirror serve` and a fake npm upstream (real
tarballs, chosen publish times): what a developer sees when releases are held back."""

from __future__ import annotations

import json
import os
import shutil
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
from tests.fakes.npm import FakeNpmRegistry

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT = 180  # seconds per client run; a hung client fails the test, never the suite


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: .ci/run installs it "
            "(apt-get install nodejs npm; npm install -g pnpm@9 yarn@1)"
        )
    return path


@dataclass
class Env:
    """Everything a client run needs: the mirror, the upstream and a private HOME."""

    mirror: RunningMirror
    registry: FakeNpmRegistry
    root: Path

    @property
    def registry_url(self) -> str:
        return f"{self.mirror.url}/npm/"

    def project(self, name: str, dependencies: dict[str, str] | None = None) -> Path:
        directory = self.root / name
        directory.mkdir(parents=True)
        manifest = {"name": name, "version": "1.0.0", "private": True}
        if dependencies is not None:
            manifest["dependencies"] = dependencies  # type: ignore[assignment]
        (directory / "package.json").write_text(json.dumps(manifest), encoding="utf-8")
        (directory / ".npmrc").write_text(f"registry={self.registry_url}\n", encoding="utf-8")
        return directory

    async def run(self, tool: str, *args: str, cwd: Path, cache: str = "cache") -> ClientResult:
        """Run `tool` with a private HOME and cache; output is stdout+stderr together."""
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.lower().startswith(("npm_", "pnpm_", "http_proxy", "https_proxy"))
            and key not in {"NODE_OPTIONS"}
        }
        env.update(
            {
                "HOME": str(home),
                "npm_config_registry": self.registry_url,
                "npm_config_cache": str(self.root / cache),
                "npm_config_userconfig": str(home / ".npmrc"),
                "npm_config_update_notifier": "false",
                "npm_config_audit": "false",
                "npm_config_fund": "false",
                "npm_config_store_dir": str(self.root / f"{cache}-pnpm-store"),
                "NO_COLOR": "1",
                "CI": "true",
            }
        )
        return await run_client(_tool(tool), *args, cwd=cwd, env=env, seconds=CLIENT_TIMEOUT)

    async def npm(self, *args: str, cwd: Path, cache: str = "cache") -> ClientResult:
        return await self.run(
            "npm", *args, "--registry", self.registry_url, "--prefer-online",
            "--no-audit", "--no-fund", "--no-update-notifier", cwd=cwd, cache=cache,
        )  # fmt: skip


def installed_version(project: Path, name: str) -> str:
    manifest = project / "node_modules" / name / "package.json"
    version: str = json.loads(manifest.read_text(encoding="utf-8"))["version"]
    return version


@pytest.fixture
async def env(aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path) -> Env:
    _tool("npm")
    now = datetime.now(UTC)
    old = now - timedelta(days=90)
    registry = FakeNpmRegistry()
    registry.add_version("qm-demo", "1.0.0", published=old)
    registry.add_version("qm-demo", "1.1.0", published=now - timedelta(days=10))
    registry.add_version("qm-demo", "1.2.0", published=now - timedelta(hours=2))
    registry.add_version("qm-blocked", "1.0.0", published=old)
    registry.add_version("qm-blocked", "1.0.1", published=now - timedelta(days=20))
    registry.add_version("@qm/widget", "2.0.0", published=old)
    registry.add_version(
        "qm-app", "3.0.0", published=old, dependencies={"qm-demo": "^1.0.0", "@qm/widget": "^2"}
    )
    await registry.start(aiohttp_server)
    data_dir = tmp_path / "mirror-data"
    await block_before_start(data_dir, "npm", "qm-blocked", "1.0.1")
    mirror = await start_mirror(
        {"MIRROR_NPM_UPSTREAM": registry.url, "MIRROR_QUARANTINE": "3d"}, data_dir=data_dir
    )
    return Env(mirror=mirror, registry=registry, root=tmp_path / "clients")


async def test_npm_range_resolves_to_newest_allowed_and_prints_the_notice(env: Env) -> None:
    project = env.project("range")
    result = await env.npm("install", "qm-demo@^1.0.0", cwd=project)
    assert result.code == 0, result
    assert installed_version(project, "qm-demo") == "1.1.0"
    assert "npm notice qm-demo: 1 version held in quarantine (newest 1.2.0" in result.out
    lock = json.loads((project / "package-lock.json").read_text(encoding="utf-8"))
    resolved = lock["packages"]["node_modules/qm-demo"]["resolved"]
    assert resolved == f"{env.registry_url}qm-demo/-/qm-demo-1.1.0.tgz"


async def test_npm_install_of_a_young_version_fails_with_etarget(env: Env) -> None:
    result = await env.npm("install", "qm-demo@1.2.0", cwd=env.project("young"))
    assert result.code != 0, result
    assert "ETARGET" in result.out
    assert "No matching version found for qm-demo@1.2.0" in result.out


async def test_npm_install_of_a_blocked_version_fails(env: Env) -> None:
    project = env.project("blocked")
    result = await env.npm("install", "qm-blocked@1.0.1", cwd=project)
    assert result.code != 0, result
    assert "ETARGET" in result.out
    assert "1 version blocked by block e2e-block: compromised release (1.0.1)" in result.out
    assert not (project / "node_modules" / "qm-blocked").exists()
    fallback = await env.npm("install", "qm-blocked", cwd=project)
    assert fallback.code == 0, fallback
    assert installed_version(project, "qm-blocked") == "1.0.0"


async def test_npm_installs_a_scoped_package_and_dependencies(env: Env) -> None:
    project = env.project("scoped")
    result = await env.npm("install", "qm-app", cwd=project)
    assert result.code == 0, result
    assert installed_version(project, "qm-app") == "3.0.0"
    assert installed_version(project, "qm-demo") == "1.1.0"
    assert installed_version(project, "@qm/widget") == "2.0.0"


async def test_npm_ci_from_a_lockfile_then_zero_upstream_requests(env: Env) -> None:
    first = env.project("first", {"qm-app": "^3.0.0"})
    result = await env.npm("install", cwd=first)
    assert result.code == 0, result
    upstream_requests = len(env.registry.requests)
    assert upstream_requests > 0
    second = env.project("second")
    shutil.copy(first / "package.json", second / "package.json")
    shutil.copy(first / "package-lock.json", second / "package-lock.json")
    result = await env.npm("ci", cwd=second, cache="fresh-cache")
    assert result.code == 0, result
    assert installed_version(second, "qm-demo") == "1.1.0"
    assert installed_version(second, "@qm/widget") == "2.0.0"
    third = env.project("third", {"qm-app": "^3.0.0"})
    result = await env.npm("install", cwd=third, cache="another-cache")
    assert result.code == 0, result
    assert installed_version(third, "qm-app") == "3.0.0"
    # Everything came from the mirror's caches: the upstream saw nothing new.
    assert len(env.registry.requests) == upstream_requests


def pin_held_version(env: Env, name: str, *, resolved: bool) -> Path:
    """A project whose lockfile pins qm-demo 1.2.0 (held: 2 hours old), with its `resolved`
    tarball URL or without it, as npm writes lockfiles with `omit-lockfile-registry-resolved`."""
    project = env.project(name, {"qm-demo": "1.2.0"})
    young = env.registry.version("qm-demo", "1.2.0")
    locked: dict[str, str] = {"version": "1.2.0", "integrity": young.integrity}
    if resolved:
        locked["resolved"] = f"{env.registry_url}qm-demo/-/qm-demo-1.2.0.tgz"
    else:
        with (project / ".npmrc").open("a", encoding="utf-8") as npmrc:
            npmrc.write("omit-lockfile-registry-resolved=true\n")
    lock = {
        "name": name,
        "version": "1.0.0",
        "lockfileVersion": 3,
        "requires": True,
        "packages": {
            "": {"name": name, "version": "1.0.0", "dependencies": {"qm-demo": "1.2.0"}},
            "node_modules/qm-demo": locked,
        },
    }
    (project / "package-lock.json").write_text(json.dumps(lock), encoding="utf-8")
    return project


async def test_npm_ci_with_a_lockfile_pinning_a_held_version_fails_403(env: Env) -> None:
    """With `resolved` URLs npm fetches the tarball straight away: the mirror refuses it and
    npm prints the refusal's reason."""
    result = await env.npm("ci", cwd=pin_held_version(env, "pinned", resolved=True))
    assert result.code != 0, result
    assert "npm error code E403" in result.out
    assert "403 qm-demo@1.2.0 was published " in result.out
    assert " and is in quarantine until " in result.out
    assert env.registry.upstream.count("/qm-demo/-/qm-demo-1.2.0.tgz") == 0


async def test_npm_ci_without_resolved_urls_asks_the_packument_and_fails_etarget(
    env: Env,
) -> None:
    """Without `resolved` URLs npm looks the pinned version up in the packument, where a held
    version is not: `ETARGET`, after the notice saying what holds it."""
    result = await env.npm("ci", cwd=pin_held_version(env, "unresolved", resolved=False))
    assert result.code != 0, result
    assert "npm notice qm-demo: 1 version held in quarantine (newest 1.2.0, available" in (
        result.out
    )
    assert "ETARGET" in result.out
    assert "No matching version found for qm-demo@1.2.0" in result.out
    assert "E403" not in result.out
    assert env.registry.upstream.count("/qm-demo/-/qm-demo-1.2.0.tgz") == 0


async def test_pnpm_resolves_the_newest_allowed_version_and_scoped_packages(env: Env) -> None:
    _tool("pnpm")
    project = env.project("pnpm-project")
    result = await env.run(
        "pnpm", "add", "qm-demo@^1.0.0", "@qm/widget", "--registry", env.registry_url,
        "--reporter", "append-only", cwd=project,
    )  # fmt: skip
    assert result.code == 0, result
    assert installed_version(project, "qm-demo") == "1.1.0"
    assert installed_version(project, "@qm/widget") == "2.0.0"
    lock = (project / "pnpm-lock.yaml").read_text(encoding="utf-8")
    assert "qm-demo@1.1.0" in lock
    assert "1.2.0" not in lock
    young = await env.run(
        "pnpm", "add", "qm-demo@1.2.0", "--registry", env.registry_url,
        "--reporter", "append-only", cwd=project,
    )  # fmt: skip
    assert young.code != 0, young
    assert "qm-demo@1.2.0" in young.out


async def test_yarn_classic_resolves_the_newest_allowed_version_and_refuses_a_young_pin(
    env: Env,
) -> None:
    _tool("yarn")
    project = env.project("yarn-project")
    (project / ".yarnrc").write_text(f'registry "{env.registry_url}"\n', encoding="utf-8")
    yarn_flags = ("--registry", env.registry_url, "--non-interactive", "--no-progress")
    cache = ("--cache-folder", str(env.root / "yarn-cache"))
    result = await env.run("yarn", "add", "qm-demo@^1.0.0", "@qm/widget", *yarn_flags, *cache,
                           cwd=project)  # fmt: skip
    assert result.code == 0, result
    assert installed_version(project, "qm-demo") == "1.1.0"
    assert installed_version(project, "@qm/widget") == "2.0.0"
    lock = (project / "yarn.lock").read_text(encoding="utf-8")
    assert f'resolved "{env.registry_url}qm-demo/-/qm-demo-1.1.0.tgz' in lock
    young = await env.run("yarn", "add", "qm-demo@1.2.0", *yarn_flags, *cache, cwd=project)
    assert young.code != 0, young
    assert 'Couldn\'t find any versions for "qm-demo" that matches "1.2.0"' in young.out


async def test_npm_audit_goes_through_with_its_gzip_body(env: Env) -> None:
    """npm sends the bulk advisory request gzip-compressed: the mirror inflates it (bounded,
    off the event loop) and relays the JSON; npm reports what the upstream answered."""
    project = env.project("audited")
    assert (await env.npm("install", "qm-demo@^1.0.0", cwd=project)).code == 0
    path = "/-/npm/v1/security/advisories/bulk"
    advisory = {
        "id": 1001,
        "url": "http://127.0.0.1/advisories/1001",
        "title": "qm-demo leaks secrets",
        "severity": "high",
        "vulnerable_versions": "<1.2.0",
        "cwe": [],
        "cvss": {"score": 7.5, "vectorString": None},
    }
    env.registry.upstream.add(
        path, json.dumps({"qm-demo": [advisory]}).encode(), content_type="application/json"
    )
    result = await env.run("npm", "audit", "--json", "--registry", env.registry_url, cwd=project)
    asked = env.registry.upstream.last(path)
    assert asked.method == "POST"
    assert "Content-Encoding" not in asked.headers
    assert json.loads(asked.body) == {"qm-demo": ["1.1.0"]}
    report = json.loads(result.out[result.out.index("{") :])
    assert report["vulnerabilities"]["qm-demo"]["severity"] == "high", result
