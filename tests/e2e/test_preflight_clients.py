"""`mirror preflight` on what the real clients wrote: lockfiles from npm, pnpm, yarn, pip
freeze and uv (lock, export, pip compile) made against `mirror serve` with fake upstreams,
plus CycloneDX and SPDX documents written here; then one version of each ecosystem blocked
through the admin API, and preflight names exactly those pins and exits 1. One mirror serves
every npm and Python client, so that walk costs one start; Maven's `dependency:list` (console
and -DoutputFile) has its own, with a fake Maven repository."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import ClientResult, RunningMirror, StartMirror, run_client
from tests.e2e.test_maven_e2e import DEPENDENCY_PLUGIN, LOCAL_M2, MVN_TIMEOUT, _mvn, project_pom
from tests.e2e.test_npm_e2e import Env as NpmEnv
from tests.e2e.test_pypi_e2e import Env as PypiEnv
from tests.e2e.test_pypi_e2e import _uv
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex

pytestmark = pytest.mark.e2e

TOKEN = "preflight-token-0123456789abcdef"
CLI_TIMEOUT = 120


async def mirror_cli(mirror: RunningMirror, *args: str) -> ClientResult:
    """The `mirror` CLI pointed at `mirror` with an admin token."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
    env.update({"MIRROR_URL": mirror.url, "MIRROR_TOKEN": TOKEN})
    return await run_client(
        sys.executable, "-m", "mirror", *args, cwd=mirror.data_dir.parent, env=env,
        seconds=CLI_TIMEOUT,
    )  # fmt: skip


async def preflight_json(mirror: RunningMirror, *files: Path) -> tuple[int, dict[str, Any]]:
    """`mirror preflight --json FILE...`: its exit code and report."""
    result = await mirror_cli(mirror, "preflight", "--json", *map(str, files))
    assert result.code in (0, 1), result
    answer: dict[str, Any] = json.loads(result.out)
    return result.code, answer


class Clients:
    """The npm and Python clients, each isolated the way their own e2e suites do it, and the
    `mirror` CLI pointed at the same mirror."""

    def __init__(self, npm: NpmEnv, pypi: PypiEnv) -> None:
        self.npm = npm
        self.pypi = pypi

    async def mirror_cli(self, *args: str) -> ClientResult:
        return await mirror_cli(self.npm.mirror, *args)

    async def preflight_json(self, *files: Path) -> tuple[int, dict[str, Any]]:
        return await preflight_json(self.npm.mirror, *files)


@pytest.fixture
async def clients(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> Clients:
    now = datetime.now(UTC)
    old, settled = now - timedelta(days=90), now - timedelta(days=10)
    registry = FakeNpmRegistry()
    registry.add_version("qm-demo", "1.0.0", published=old)
    registry.add_version("qm-demo", "1.1.0", published=settled)
    registry.add_version("@qm/widget", "2.0.0", published=old)
    registry.add_version(
        "qm-app", "3.0.0", published=old, dependencies={"qm-demo": "^1.0.0", "@qm/widget": "^2"}
    )
    await registry.start(aiohttp_server)
    index = FakePypiIndex()
    index.add_wheel("qm-lib", "1.0", uploaded=old)
    index.add_wheel("qm-lib", "1.1", uploaded=settled)
    index.add_wheel("qm_tool", "2.0", uploaded=old)
    await index.start(aiohttp_server)
    mirror = await start_mirror(
        {
            "MIRROR_NPM_UPSTREAM": registry.url,
            "MIRROR_PYPI_UPSTREAM": index.url,
            "MIRROR_QUARANTINE": "3d",
            "MIRROR_ADMIN_TOKENS": f"ops:{TOKEN}",
            "MIRROR_ACCESS_LOG": "false",
        }
    )
    root = tmp_path / "clients"
    return Clients(NpmEnv(mirror, registry, root), PypiEnv(mirror, index, root))


async def npm_lockfiles(clients: Clients) -> list[Path]:
    """package-lock.json (with `resolved`), npm-shrinkwrap.json (without), pnpm-lock.yaml,
    yarn.lock: each client resolving qm-app's tree through the mirror."""
    npm = clients.npm
    dependencies = {"qm-app": "^3.0.0"}
    with_resolved = npm.project("npm-app", dependencies)
    installed = await npm.npm("install", cwd=with_resolved)
    assert installed.code == 0, installed
    without_resolved = npm.project("npm-shrinkwrap-app", dependencies)
    locked = await npm.npm(
        "install", "--package-lock-only", "--omit-lockfile-registry-resolved",
        cwd=without_resolved,
    )  # fmt: skip
    assert locked.code == 0, locked
    shrinkwrapped = await npm.npm("shrinkwrap", cwd=without_resolved)
    assert shrinkwrapped.code == 0, shrinkwrapped
    shrinkwrap = without_resolved / "npm-shrinkwrap.json"
    assert '"resolved"' not in shrinkwrap.read_text(encoding="utf-8")

    pnpm_project = npm.project("pnpm-app", dependencies)
    pnpm = await npm.run("pnpm", "install", "--registry", npm.registry_url, cwd=pnpm_project)
    assert pnpm.code == 0, pnpm

    yarn_project = npm.project("yarn-app", dependencies)
    (yarn_project / ".yarnrc").write_text(f'registry "{npm.registry_url}"\n', encoding="utf-8")
    yarn = await npm.run(
        "yarn", "install", "--registry", npm.registry_url, "--non-interactive", "--no-progress",
        "--cache-folder", str(npm.root / "yarn-cache"), cwd=yarn_project,
    )  # fmt: skip
    assert yarn.code == 0, yarn
    return [
        with_resolved / "package-lock.json",
        shrinkwrap,
        pnpm_project / "pnpm-lock.yaml",
        yarn_project / "yarn.lock",
    ]


async def python_lockfiles(clients: Clients) -> list[Path]:
    """`pip freeze` output as freeze.txt, `uv pip compile` output as requirements/base.txt,
    uv.lock, and what `uv export` writes as pylock.toml and as a CycloneDX SBOM."""
    pypi = clients.pypi
    installed = await pypi.pip_install("site", "qm-lib==1.1", "qm-tool==2.0")
    assert installed.code == 0, installed
    frozen = await pypi.run(
        sys.executable, "-m", "pip", "freeze", "--path", str(pypi.root / "site")
    )
    assert frozen.code == 0, frozen
    freeze = pypi.root / "freeze.txt"
    freeze.write_text(frozen.out, encoding="utf-8")

    project = pypi.root / "uv-app"
    (project / "requirements").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "uv-app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["qm-lib>=1", "qm-tool"]\n',
        encoding="utf-8",
    )
    (project / "requirements.in").write_text("qm-lib>=1\nqm-tool\n", encoding="utf-8")
    index = ("--default-index", pypi.index_url)
    steps = [
        ("pip", "compile", "requirements.in", "-o", "requirements/base.txt", *index),
        ("lock", *index),
        ("export", "--format", "pylock.toml", "-o", "pylock.toml", *index),
        ("export", "--format", "cyclonedx1.5", "--preview", "-o", "uv-bom.json", *index),
    ]
    for step in steps:
        result = await pypi.run(_uv(), "--no-config", *step, cwd=project)
        assert result.code == 0, (step, result)
    return [
        freeze,
        project / "requirements" / "base.txt",
        project / "uv.lock",
        project / "pylock.toml",
        project / "uv-bom.json",
    ]


def write_sboms(directory: Path) -> list[Path]:
    """A CycloneDX and an SPDX document as SBOM tools write them, naming both ecosystems and
    a package type the mirror does not serve."""
    cyclonedx = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {"component": {"type": "application", "name": "shipped-app"}},
        "components": [
            {"type": "library", "name": "qm-demo", "purl": "pkg:npm/qm-demo@1.1.0"},
            {"type": "library", "group": "@qm", "name": "widget",
             "purl": "pkg:npm/%40qm/widget@2.0.0"},
            {"type": "library", "name": "net", "purl": "pkg:golang/golang.org/x/net@v0.17.0"},
        ],
    }  # fmt: skip
    spdx = {
        "spdxVersion": "SPDX-2.3",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "shipped-service",
        "packages": [
            {
                "name": "qm-lib",
                "SPDXID": "SPDXRef-qm-lib",
                "versionInfo": "1.1",
                "externalRefs": [
                    {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                     "referenceLocator": "pkg:pypi/qm-lib@1.1"},
                ],
            },
            {
                "name": "qm_tool",
                "SPDXID": "SPDXRef-qm-tool",
                "externalRefs": [
                    {"referenceCategory": "PACKAGE_MANAGER", "referenceType": "purl",
                     "referenceLocator": "pkg:pypi/QM_Tool@2.0"},
                ],
            },
        ],
    }  # fmt: skip
    paths = [directory / "shipped.cdx.json", directory / "shipped.spdx.json"]
    for path, document in zip(paths, (cyclonedx, spdx), strict=True):
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return paths


EXPECTED_FORMATS = [
    "package-lock.json", "package-lock.json", "pnpm-lock.yaml", "yarn.lock",
    "requirements", "requirements", "uv.lock", "pylock.toml", "cyclonedx",
    "cyclonedx", "spdx",
]  # fmt: skip
NPM_PINS = {("npm", "qm-app", "3.0.0"), ("npm", "qm-demo", "1.1.0"), ("npm", "@qm/widget", "2.0.0")}
PYPI_PINS = {("pypi", "qm-lib", "1.1"), ("pypi", "qm-tool", "2.0")}


async def test_preflight_of_what_the_clients_wrote_names_the_blocked_pins(
    clients: Clients,
) -> None:
    npm_files, python_files = await asyncio.gather(
        npm_lockfiles(clients), python_lockfiles(clients)
    )
    files = [*npm_files, *python_files, *write_sboms(clients.npm.root)]

    code, answer = await clients.preflight_json(*files)
    assert code == 0, answer
    assert [entry["format"] for entry in answer["files"]] == EXPECTED_FORMATS
    assert answer["refused"] == []
    assert answer["checked"] == len(NPM_PINS | PYPI_PINS)
    assert "pkg:golang/golang.org/x/net@v0.17.0" in answer["skipped"]

    for ecosystem, package, version in (("npm", "qm-demo", "1.1.0"), ("pypi", "qm-lib", "1.1")):
        blocked = await clients.mirror_cli(
            "block", ecosystem, package, version, "--reason", "compromised release"
        )
        assert blocked.code == 0, blocked

    refusals = {"npm": ("npm", "qm-demo", "1.1.0"), "pypi": ("pypi", "qm-lib", "1.1")}
    for path in files:  # each file on its own names the blocked pin of its ecosystem
        code, answer = await clients.preflight_json(path)
        assert code == 1, (path, answer)
        ecosystem = "npm" if path in npm_files or "cdx" in path.name else "pypi"
        refused = [
            (r["ecosystem"], r["package"], r["version"], r["verdict"]) for r in answer["refused"]
        ]
        assert refused == [(*refusals[ecosystem], "blocked")], (path, answer)

    # All files at once: each refused pin says which files (which builds) pin it.
    code, answer = await clients.preflight_json(*files)
    assert code == 1, answer
    pinned_in = {r["package"]: r["in"] for r in answer["refused"]}
    shipped_cdx, shipped_spdx = files[-2:]
    assert pinned_in == {
        "qm-demo": [*map(str, npm_files), str(shipped_cdx)],
        "qm-lib": [*map(str, python_files), str(shipped_spdx)],
    }

    table = await clients.mirror_cli("preflight", *map(str, files))
    assert table.code == 1, table
    rows = table.out.splitlines()
    assert rows[0].split()[:5] == ["PACKAGE", "VERSION", "VERDICT", "UNTIL", "IN"]
    assert sorted(row.split()[:3] for row in rows[1:3]) == [
        ["qm-demo", "1.1.0", "blocked"],
        ["qm-lib", "1.1", "blocked"],
    ]
    assert f"{len(NPM_PINS | PYPI_PINS)} pinned version(s) checked: 2 would be refused" in rows


# A project depending on org.example:app (which depends on lib); the dependency plugin pinned
# as in test_maven_e2e (its commons-beanutils lifted to the version ~/.m2 holds).
MAVEN_PROJECT_POM = project_pom(
    "shipped",
    """
  <dependencies><dependency>
    <groupId>org.example</groupId><artifactId>app</artifactId><version>1.0.0</version>
  </dependency></dependencies>""",
)


async def test_preflight_of_mvn_dependency_list_names_the_blocked_artifact(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    """`mvn dependency:list` through the mirror, its console output and its -DoutputFile
    file, then a block: preflight names org.example:lib 1.5.0 in both."""
    mvn = _mvn()
    old = datetime.now(UTC) - timedelta(days=60)
    repo = FakeMavenRepository(local_repository=LOCAL_M2)
    repo.add_version("org.example", "lib", "1.5.0", published=old)
    repo.add_version(
        "org.example", "app", "1.0.0", published=old,
        dependencies=[("org.example", "lib", "1.5.0")],
    )  # fmt: skip
    await repo.start(aiohttp_server)
    mirror = await start_mirror(
        {
            "MIRROR_MAVEN_UPSTREAM": repo.url,
            "MIRROR_QUARANTINE": "3d",
            "MIRROR_ADMIN_TOKENS": f"ops:{TOKEN}",
            "MIRROR_ACCESS_LOG": "false",
        }
    )
    (tmp_path / "pom.xml").write_text(MAVEN_PROJECT_POM, encoding="utf-8")
    settings = tmp_path / "settings.xml"
    settings.write_text(
        "<settings><mirrors><mirror><id>quarantine</id><mirrorOf>*</mirrorOf>"
        f"<url>{mirror.url}/maven/</url></mirror></mirrors></settings>\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAVEN_", "MIRROR_"))}
    env["MAVEN_OPTS"] = "-Xshare:auto -XX:TieredStopAtLevel=1"
    # Console output (listed with `[INFO]` prefixes), then the same written with -DoutputFile.
    common = ("-B", "-C", "-s", str(settings), f"-Dmaven.repo.local={tmp_path / 'local'}")
    listed = await run_client(
        mvn, *common, f"{DEPENDENCY_PLUGIN}:list", cwd=tmp_path, env=env, seconds=MVN_TIMEOUT
    )
    assert listed.code == 0, listed
    console = tmp_path / "mvn-output.log"
    console.write_text(listed.out, encoding="utf-8")
    written = await run_client(
        mvn, *common, "-q", f"{DEPENDENCY_PLUGIN}:list", f"-DoutputFile={tmp_path / 'deps.txt'}",
        cwd=tmp_path, env=env, seconds=MVN_TIMEOUT,
    )  # fmt: skip
    assert written.code == 0, written
    files = [console, tmp_path / "deps.txt"]

    for path in files:
        code, answer = await preflight_json(mirror, path)
        assert code == 0, (path, answer)
        assert answer["files"][0]["format"] == "mvn-dependency-list", answer
        assert answer["checked"] == 2, (path, answer)  # app and lib, not the plugin's own
    blocked = await mirror_cli(
        mirror, "block", "maven", "org.example:lib", "1.5.0", "--reason", "compromised release"
    )
    assert blocked.code == 0, blocked
    for path in files:
        code, answer = await preflight_json(mirror, path)
        assert code == 1, (path, answer)
        refused = [(r["package"], r["version"], r["verdict"]) for r in answer["refused"]]
        assert refused == [("org.example:lib", "1.5.0", "blocked")], (path, answer)
