"""`mirror warm` against `mirror serve` with fake upstreams: it fetches every allowed pinned
artifact through the mirror, lists held and blocked ones without fetching them (the upstream's
request log says so), and then, with the upstreams down, the real npm and pip install those
versions from the mirror alone."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import (
    ClientResult,
    RunningMirror,
    StartMirror,
    block_before_start,
    run_client,
)
from tests.e2e.test_npm_e2e import Env as NpmEnv
from tests.e2e.test_npm_e2e import installed_version
from tests.e2e.test_pypi_e2e import Env as PypiEnv
from tests.fakes.maven import FakeMavenRepository, build_pom
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex

pytestmark = pytest.mark.e2e

CLI_TIMEOUT = 120


async def mirror_cli(
    mirror: RunningMirror, *args: str, env: dict[str, str] | None = None
) -> ClientResult:
    settings = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
    settings.update({"MIRROR_URL": mirror.url, **(env or {})})
    return await run_client(
        sys.executable, "-m", "mirror", *args, cwd=mirror.data_dir.parent, env=settings,
        seconds=CLI_TIMEOUT,
    )  # fmt: skip


def outcome(answer: dict[str, Any], kind: str) -> set[tuple[str, str, str]]:
    return {(r["ecosystem"], r["package"], r["version"]) for r in answer[kind]}


async def test_warm_then_install_with_the_upstreams_down(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=90)
    registry = FakeNpmRegistry()
    registry.add_version("qm-demo", "1.0.0", published=old)
    registry.add_version("qm-demo", "1.1.0", published=old)
    registry.add_version("@qm/widget", "2.0.0", published=old)
    registry.add_version("qm-fresh", "1.0.0", published=now - timedelta(hours=1))
    registry.add_version("qm-evil", "6.6.6", published=old)
    await registry.start(aiohttp_server)
    index = FakePypiIndex()
    index.add_wheel("qm-lib", "1.0", uploaded=old)
    index.add_sdist("qm-lib", "1.0", uploaded=old)
    index.add_wheel("qm-lib", "1.1", uploaded=old)
    index.add_wheel("qm-new", "2.0", uploaded=now - timedelta(hours=1))
    await index.start(aiohttp_server)
    data_dir = tmp_path / "mirror-data"
    await block_before_start(data_dir, "npm", "qm-evil", "6.6.6")
    mirror = await start_mirror(
        {
            "MIRROR_NPM_UPSTREAM": registry.url,
            "MIRROR_PYPI_UPSTREAM": index.url,
            "MIRROR_QUARANTINE": "3d",
            "MIRROR_ACCESS_LOG": "false",
        },
        data_dir=data_dir,
    )
    lockfile = tmp_path / "package-lock.json"
    lockfile.write_text(
        json.dumps(
            {
                "name": "app",
                "lockfileVersion": 3,
                "packages": {
                    "": {"name": "app"},
                    "node_modules/qm-demo": {"version": "1.0.0"},
                    "node_modules/@qm/widget": {"version": "2.0.0"},
                    "node_modules/qm-fresh": {"version": "1.0.0"},
                    "node_modules/qm-evil": {"version": "6.6.6"},
                },
            }
        ),
        encoding="utf-8",
    )
    requirements = tmp_path / "freeze.txt"
    requirements.write_text("qm-lib==1.0\nqm-new==2.0\n", encoding="utf-8")

    result = await mirror_cli(mirror, "warm", "--json", str(lockfile), str(requirements))
    assert result.code == 1, result  # held and blocked pins: the build would not install
    answer = json.loads(result.out[result.out.index("{") :])
    assert outcome(answer, "fetched") == {
        ("npm", "qm-demo", "1.0.0"), ("npm", "@qm/widget", "2.0.0"), ("pypi", "qm-lib", "1.0"),
    }  # fmt: skip
    assert outcome(answer, "held") == {("npm", "qm-fresh", "1.0.0"), ("pypi", "qm-new", "2.0")}
    assert outcome(answer, "blocked") == {("npm", "qm-evil", "6.6.6")}
    assert answer["failed"] == []
    assert all(r["until"] for r in answer["held"])
    sizes = {r["package"]: (r["files"], r["bytes"]) for r in answer["fetched"]}
    every_file = [item for files in index.files.values() for item in files]
    wheel, sdist = (f for f in every_file if f.project == "qm-lib" and f.version == "1.0")
    assert sizes["qm-lib"][0] >= 2  # the wheel and the sdist (and their metadata)
    assert sizes["qm-lib"][1] >= len(wheel.data) + len(sdist.data)
    assert sizes["qm-demo"] == (1, len(registry.version("qm-demo", "1.0.0").tarball))
    # What reached the upstreams: the allowed artifacts, never a held or blocked one, and
    # nothing of a version no file pins.
    for name, version in (("qm-demo", "1.0.0"), ("@qm/widget", "2.0.0")):
        assert registry.upstream.count(registry.tarball_path(name, version)) == 1
    for name, version in (("qm-fresh", "1.0.0"), ("qm-evil", "6.6.6"), ("qm-demo", "1.1.0")):
        assert registry.upstream.count(registry.tarball_path(name, version)) == 0
    fetched_files = {request.path.rsplit("/", 1)[-1] for request in index.upstream.requests}
    assert wheel.filename in fetched_files
    assert sdist.filename in fetched_files
    held = [f.filename for f in every_file if f.project == "qm-new" or f.version == "1.1"]
    assert held
    assert not fetched_files & set(held)

    # The text report: the summary line, the held and blocked ones named.
    again = await mirror_cli(mirror, "warm", str(lockfile), str(requirements))
    assert again.code == 1, again
    assert "fetched 3 of 6 pinned version(s)" in again.out
    assert "held 2, blocked 1, failed 0" in again.out
    assert "qm-evil" in again.out
    assert "qm-fresh" in again.out
    assert "qm-new" in again.out

    # Offline: every upstream answers 503; the real clients install from the mirror alone.
    registry.upstream.down()
    index.upstream.down()
    npm = NpmEnv(mirror, registry, tmp_path / "npm")
    project = npm.project("offline-app", {"qm-demo": "1.0.0", "@qm/widget": "2.0.0"})
    installed = await npm.npm("install", cwd=project)
    assert installed.code == 0, installed
    assert installed_version(project, "qm-demo") == "1.0.0"
    assert installed_version(project, "@qm/widget") == "2.0.0"
    pip = PypiEnv(mirror, index, tmp_path / "pip")
    pip_installed = await pip.pip_install("target", "qm-lib==1.0")
    assert pip_installed.code == 0, pip_installed
    assert list((tmp_path / "pip" / "target").glob("qm_lib-1.0*.dist-info"))


async def test_warm_reports_a_failure_and_exits_1(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    """An allowed version whose tarball the upstream cannot give is a failure, not a fetch."""
    registry = FakeNpmRegistry()
    registry.add_version("qm-demo", "1.0.0", published=datetime.now(UTC) - timedelta(days=90))
    await registry.start(aiohttp_server)
    registry.upstream.fail(registry.tarball_path("qm-demo", "1.0.0"), 500, times=None)
    mirror = await start_mirror({"MIRROR_NPM_UPSTREAM": registry.url, "MIRROR_ACCESS_LOG": "false"})
    lockfile = tmp_path / "package-lock.json"
    lockfile.write_text(
        json.dumps(
            {"lockfileVersion": 3, "packages": {"node_modules/qm-demo": {"version": "1.0.0"}}}
        ),
        encoding="utf-8",
    )
    result = await mirror_cli(mirror, "warm", "--parallel", "2", str(lockfile))
    assert result.code == 1, result
    assert "fetched 0 of 1 pinned version(s)" in result.out
    assert "failed 1" in result.out
    usage = await mirror_cli(mirror, "warm", "--parallel", "0", str(lockfile))
    assert usage.code == 2, usage


async def test_warm_maven_then_serve_with_the_upstream_failing(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    """Maven: the pom and jar of each allowed GAV (a pom-packaging one has no jar, which is
    not a failure); held and blocked not fetched; then every upstream file answers 503 and the
    mirror still serves what warm fetched, byte for byte."""
    old = datetime.now(UTC) - timedelta(days=60)
    repo = FakeMavenRepository()
    lib = repo.add_version("org.example", "lib", "1.5.0", published=old)
    bom = repo.add_version("org.example", "bom", "2.0.0", published=old, jar=False)
    repo.add_file(
        f"{bom}/bom-2.0.0.pom",
        build_pom("org.example", "bom", "2.0.0").replace(b">jar<", b">pom<"),
        last_modified=old,
    )
    fresh = repo.add_version(
        "org.example", "fresh", "3.0.0", published=datetime.now(UTC) - timedelta(hours=1)
    )
    evil = repo.add_version("org.example", "evil", "1.0.0", published=old)
    await repo.start(aiohttp_server)
    data_dir = tmp_path / "mirror-data"
    await block_before_start(data_dir, "maven", "org.example:evil", "1.0.0")
    mirror = await start_mirror(
        {
            "MIRROR_MAVEN_UPSTREAM": repo.url,
            "MIRROR_QUARANTINE": "3d",
            "MIRROR_ACCESS_LOG": "false",
        },
        data_dir=data_dir,
    )
    listing = tmp_path / "dependencies.txt"
    listing.write_text(
        "The following files have been resolved:\n"
        "   org.example:lib:jar:1.5.0:compile\n"
        "   org.example:bom:pom:2.0.0:import\n"
        "   org.example:fresh:jar:3.0.0:compile\n"
        "   org.example:evil:jar:1.0.0:runtime\n",
        encoding="utf-8",
    )
    result = await mirror_cli(mirror, "warm", "--json", str(listing))
    assert result.code == 1, result
    answer = json.loads(result.out[result.out.index("{") :])
    fetched = {r["package"]: r["files"] for r in answer["fetched"]}
    assert fetched == {"org.example:lib": 2, "org.example:bom": 1}
    assert outcome(answer, "held") == {("maven", "org.example:fresh", "3.0.0")}
    assert outcome(answer, "blocked") == {("maven", "org.example:evil", "1.0.0")}
    assert answer["failed"] == []
    for directory, stem in ((fresh, "fresh-3.0.0"), (evil, "evil-1.0.0")):
        assert repo.count(f"{directory}/{stem}.jar") == 0
    wanted = [f"{lib}/lib-1.5.0.pom", f"{lib}/lib-1.5.0.jar", f"{bom}/bom-2.0.0.pom"]
    for path in wanted:
        assert repo.count(path, method="GET") == 1, path
        repo.fail(path, 503)
    async with aiohttp.ClientSession() as session:
        for path in wanted:
            async with session.get(f"{mirror.url}/maven/{path}") as response:
                assert response.status == 200, path
                assert await response.read() == repo.body(path)


async def test_warm_sends_its_read_token_to_a_mirror_that_requires_one(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    registry = FakeNpmRegistry()
    registry.add_version("qm-demo", "1.0.0", published=datetime.now(UTC) - timedelta(days=90))
    await registry.start(aiohttp_server)
    token = "ci-read-token-0123456789"
    mirror = await start_mirror(
        {
            "MIRROR_NPM_UPSTREAM": registry.url,
            "MIRROR_ACCESS_TOKENS": f"ci:{token}",
            "MIRROR_ACCESS_REQUIRED": "true",
        }
    )
    lockfile = tmp_path / "package-lock.json"
    lockfile.write_text(
        json.dumps(
            {"lockfileVersion": 3, "packages": {"node_modules/qm-demo": {"version": "1.0.0"}}}
        ),
        encoding="utf-8",
    )
    anonymous = await mirror_cli(mirror, "warm", str(lockfile))
    assert anonymous.code == 1, anonymous
    assert "HTTP 401 this mirror needs a read token" in anonymous.out, anonymous
    warmed = await mirror_cli(mirror, "warm", str(lockfile), env={"MIRROR_READ_TOKEN": token})
    assert warmed.code == 0, warmed
    assert "fetched 1 of 1 pinned version(s)" in warmed.out, warmed
    assert token not in warmed.out
    assert token not in mirror.log()


async def test_post_warm_with_a_lockfile_npm_wrote_then_npm_ci_offline(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    """`POST /api/v1/warm` with the package-lock.json real npm wrote (`--package-lock-only`:
    documents, no tarballs) to a mirror of two worker processes: 202 and a Location whose GET
    (on either worker) shows the job to its summary; then, every upstream down, `npm ci` with
    an empty npm cache installs from the mirror alone."""
    old = datetime.now(UTC) - timedelta(days=90)
    registry = FakeNpmRegistry()
    registry.add_version("qm-demo", "1.0.0", published=old)
    registry.add_version("@qm/widget", "2.0.0", published=old)
    registry.add_version(
        "qm-app", "3.0.0", published=old, dependencies={"qm-demo": "^1.0.0", "@qm/widget": "^2"}
    )
    await registry.start(aiohttp_server)
    token = "warm-e2e-token-0123456789"
    mirror = await start_mirror(
        {
            "MIRROR_NPM_UPSTREAM": registry.url,
            "MIRROR_ADMIN_TOKENS": f"ci:{token}",
            "MIRROR_ACCESS_LOG": "false",
        },
        workers=2,
    )
    npm = NpmEnv(mirror, registry, tmp_path / "npm")
    project = npm.project("locked-app", {"qm-app": "3.0.0"})
    locked = await npm.npm("install", "--package-lock-only", cwd=project)
    assert locked.code == 0, locked
    tarballs = [
        registry.tarball_path(name, version)
        for name, version in (("qm-app", "3.0.0"), ("qm-demo", "1.0.0"), ("@qm/widget", "2.0.0"))
    ]
    assert [registry.upstream.count(path) for path in tarballs] == [0, 0, 0]

    auth = {"Authorization": f"Bearer {token}"}
    lockfile = (project / "package-lock.json").read_bytes()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{mirror.url}/api/v1/warm", data=lockfile, headers=auth,
            params={"name": "package-lock.json"},
        ) as response:  # fmt: skip
            assert response.status in (200, 202), await response.text()
            location = response.headers["Location"]
        status: dict[str, Any] = {}
        for _ in range(300):  # bounded: about 30 s
            async with session.get(f"{mirror.url}{location}", headers=auth) as response:
                assert response.status == 200, await response.text()
                status = (await response.json())["warm"]
            if status["state"] != "running":
                break
            await asyncio.sleep(0.1)
    assert status["state"] == "finished", status
    summary = status["summary"]
    assert outcome(summary, "fetched") == {
        ("npm", "qm-app", "3.0.0"), ("npm", "qm-demo", "1.0.0"), ("npm", "@qm/widget", "2.0.0"),
    }  # fmt: skip
    assert summary["held"] == summary["blocked"] == summary["failed"] == []
    assert [registry.upstream.count(path) for path in tarballs] == [1, 1, 1]

    registry.upstream.down()
    installed = await npm.npm("ci", cwd=project, cache="offline-cache")
    assert installed.code == 0, installed
    assert installed_version(project, "qm-app") == "3.0.0"
    assert installed_version(project, "qm-demo") == "1.0.0"
    assert installed_version(project, "@qm/widget") == "2.0.0"
    assert [registry.upstream.count(path) for path in tarballs] == [1, 1, 1]
