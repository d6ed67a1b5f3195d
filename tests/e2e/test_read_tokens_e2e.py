"""Read tokens with the real clients against `mirror serve` with `access.required`: npm with
`_authToken` in .npmrc, pip and uv with `team-a:<token>@` in the index URL, mvn with
`<server>` credentials for the mirror's id each install; without a token each fails with
its own authentication error. The last two read the token, the user agent and the CI facts
back from `/api/v1/impact`."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import ClientResult, RunningMirror, StartMirror
from tests.e2e.test_maven_e2e import LOCAL_M2, _mvn
from tests.e2e.test_maven_e2e import Env as MavenEnv
from tests.e2e.test_npm_e2e import Env as NpmEnv
from tests.e2e.test_npm_e2e import installed_version
from tests.e2e.test_pypi_e2e import Env as PypiEnv
from tests.e2e.test_pypi_e2e import _uv, installed
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex

pytestmark = pytest.mark.e2e

TOKEN = "team-a-read-token-0123456789"
ADMIN = "admin-token-abcdefghijklmnop"
ACCESS = {"MIRROR_ACCESS_TOKENS": f"team-a:{TOKEN}", "MIRROR_ACCESS_REQUIRED": "true"}
OLD = datetime.now(UTC) - timedelta(days=90)


async def npm_env(aiohttp_server: AiohttpServer, start_mirror: StartMirror, root: Path) -> NpmEnv:
    registry = FakeNpmRegistry()
    registry.add_version("qm-demo", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    mirror = await start_mirror(
        {**ACCESS, "MIRROR_NPM_UPSTREAM": registry.url, "MIRROR_ADMIN_TOKENS": f"ops:{ADMIN}"}
    )
    return NpmEnv(mirror=mirror, registry=registry, root=root)


def with_token(project: Path, env: NpmEnv) -> Path:
    """The project's .npmrc gains the token for the mirror's registry URL (nerf-darted)."""
    registry = env.registry_url.removeprefix("http:")
    with (project / ".npmrc").open("a", encoding="utf-8") as npmrc:
        npmrc.write(f"{registry}:_authToken={TOKEN}\n")
    return project


async def test_npm_installs_with_its_auth_token_and_fails_e401_without(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    env = await npm_env(aiohttp_server, start_mirror, tmp_path / "clients")
    anonymous = await env.npm("install", "qm-demo", cwd=env.project("anonymous"))
    assert anonymous.code != 0, anonymous
    assert "E401" in anonymous.out, anonymous
    project = with_token(env.project("team-a"), env)
    result = await env.npm("install", "qm-demo", cwd=project)
    assert result.code == 0, result
    assert installed_version(project, "qm-demo") == "1.0.0"
    assert TOKEN not in env.mirror.log()


async def test_pip_and_uv_install_with_the_token_in_the_index_url(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    index = FakePypiIndex()
    index.add_wheel("qm-demo", "1.0", uploaded=OLD)
    await index.start(aiohttp_server)
    mirror = await start_mirror({**ACCESS, "MIRROR_PYPI_UPSTREAM": index.url})
    env = PypiEnv(mirror=mirror, index=index, root=tmp_path / "clients")
    with_token = env.index_url.replace("http://", f"http://team-a:{TOKEN}@")

    async def pip(index_url: str, target: str, *options: str) -> ClientResult:
        return await env.run(
            sys.executable, "-m", "pip", "install", "--no-cache-dir", "--no-input", *options,
            "--index-url", index_url, "--target", str(env.root / target), "qm-demo",
        )  # fmt: skip

    # pip reports a refused index page only with -vv; without, "from versions: none".
    anonymous = await pip(env.index_url, "anonymous", "-vv")
    assert anonymous.code != 0, anonymous
    assert "401 Client Error: this mirror needs a read token" in anonymous.out, anonymous
    result = await pip(with_token, "team-a")
    assert result.code == 0, result
    assert "VERSION = '1.0'" in installed(env.root / "team-a", "qm_demo")

    venv = env.root / "venv"
    created = await env.run(_uv(), "--no-config", "venv", "--python", sys.executable, str(venv))
    assert created.code == 0, created

    async def uv(index_url: str) -> ClientResult:
        return await env.run(
            _uv(), "--no-config", "pip", "install", "--python", str(venv / "bin" / "python"),
            "--no-cache", "--index-url", index_url, "qm-demo",
        )  # fmt: skip

    anonymous = await uv(env.index_url)
    assert anonymous.code != 0, anonymous
    assert "401 Unauthorized" in anonymous.out, anonymous
    result = await uv(with_token)
    assert result.code == 0, result
    assert TOKEN not in mirror.log()


async def test_mvn_resolves_with_server_credentials_and_fails_401_without(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    _mvn()
    repo = FakeMavenRepository(local_repository=LOCAL_M2)
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    await repo.start(aiohttp_server)
    mirror = await start_mirror({**ACCESS, "MIRROR_MAVEN_UPSTREAM": repo.url})
    anonymous = MavenEnv(mirror=mirror, repo=repo, root=tmp_path / "anonymous")
    anonymous.root.mkdir()
    refused = await anonymous.get("org.example:lib:1.0.0", local="repo")
    assert refused.code != 0, refused
    assert "authentication failed for" in refused.out, refused
    assert "status: 401 this mirror needs a read token" in refused.out, refused
    env = MavenEnv(mirror=mirror, repo=repo, root=tmp_path / "team-a", credentials=("ci", TOKEN))
    env.root.mkdir()
    result = await env.get("org.example:lib:1.0.0", local="repo")
    assert result.code == 0, f"{result}\n--- mirror log ---\n{mirror.log()[-4000:]}"
    assert (env.root / "repo/org/example/lib/1.0.0/lib-1.0.0.jar").is_file()
    assert TOKEN not in mirror.log()


async def impact_page(
    mirror: RunningMirror, package: str, ecosystem: str = "npm"
) -> dict[str, Any]:
    """The impact answer for `package` once the ledger has written its rows (bounded wait)."""
    url = f"{mirror.url}/api/v1/impact?ecosystem={ecosystem}&package={package}&versions=*"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as session:
        for _ in range(50):  # about 5 s: the ledger flushes every half second
            async with session.get(url, headers=headers) as response:
                assert response.status == 200, await response.text()
                answer: dict[str, Any] = await response.json()
            if answer["downloads"]:
                return answer
            await asyncio.sleep(0.1)
    pytest.fail(f"no download of {package} was recorded")


async def test_impact_names_the_token_user_agent_and_ci_of_each_download(
    aiohttp_server: AiohttpServer,
    start_mirror: StartMirror,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """npm on a GitHub Actions runner (as ci-info detects it) with team-a's token: the ledger
    names the token, npm's user agent, the CI system and the npm command, and the impact
    answer groups the downloads by token and CI."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    env = await npm_env(aiohttp_server, start_mirror, tmp_path / "clients")
    result = await env.npm("install", "qm-demo", cwd=with_token(env.project("team-a"), env))
    assert result.code == 0, result
    answer = await impact_page(env.mirror, "qm-demo")
    [row] = answer["downloads"]
    assert (row["token"], row["ci"], row["command"]) == ("team-a", "github-actions", "install")
    assert row["user_agent"].startswith("npm/"), row
    assert "ci/github-actions" in row["user_agent"], row
    [identity] = answer["identities"]
    assert (identity["token"], identity["ci"], identity["clients"]) == (
        "team-a",
        "github-actions",
        1,
    )
    assert identity["downloads"] == row["count"] >= 1


async def test_impact_names_the_token_and_ci_of_a_pip_download(
    aiohttp_server: AiohttpServer,
    start_mirror: StartMirror,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pip with the token in its index URL, in CI (pip reads `CI`): its row names team-a,
    pip's user agent and "ci" (pip says only that it runs in CI, not which)."""
    monkeypatch.setenv("CI", "true")
    index = FakePypiIndex()
    index.add_wheel("qm-demo", "1.0", uploaded=OLD)
    await index.start(aiohttp_server)
    mirror = await start_mirror(
        {**ACCESS, "MIRROR_PYPI_UPSTREAM": index.url, "MIRROR_ADMIN_TOKENS": f"ops:{ADMIN}"}
    )
    env = PypiEnv(mirror=mirror, index=index, root=tmp_path / "clients")
    result = await env.run(
        sys.executable, "-m", "pip", "install", "--no-cache-dir", "--no-input",
        "--index-url", env.index_url.replace("http://", f"http://team-a:{TOKEN}@"),
        "--target", str(env.root / "team-a"), "qm-demo",
    )  # fmt: skip
    assert result.code == 0, result
    answer = await impact_page(mirror, "qm-demo", ecosystem="pypi")
    rows = answer["downloads"]  # the wheel (and its PEP 658 metadata file, if pip read it)
    assert any(row["filename"].endswith(".whl") for row in rows), rows
    for row in rows:
        assert (row["token"], row["ci"]) == ("team-a", "ci"), row
        assert row["user_agent"].startswith("pip/"), row
        assert TOKEN not in row["user_agent"]
