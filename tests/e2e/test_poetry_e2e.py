"""The real Poetry (pinned in clienttools) against `mirror serve` and the PyPI suite's fake
index: a `[[tool.poetry.source]]` of priority primary pointing at the mirror's simple index
(what `poetry source add --priority=primary` writes). Poetry reads the simple pages and the
PEP 658 metadata files; it asks nothing of the legacy JSON API."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e import clienttools
from tests.e2e.conftest import ClientResult, run_client
from tests.e2e.test_pypi_e2e import CLIENT_TIMEOUT, EXACT_TAG, Env, installed
from tests.e2e.test_pypi_e2e import env as env  # the PyPI suite's mirror and fake index

pytestmark = pytest.mark.e2e

_DROPPED_ENV = (
    "PIP_", "UV_", "POETRY_", "VIRTUALENV_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
    "VIRTUAL_ENV", "PYTHONPATH",
)  # fmt: skip


@pytest.fixture(autouse=True)
def client_installed() -> None:
    """Skip (fail under CI) before a mirror starts when Poetry is not installed."""
    clienttools.located(clienttools.POETRY)


def project(env: Env, name: str, *requirements: str) -> Path:
    directory = env.root / name
    directory.mkdir(parents=True)
    pyproject = "\n".join(
        [
            "[project]",
            f'name = "{name}"',
            'version = "0.1.0"',
            'requires-python = ">=3.11"',
            f"dependencies = {json.dumps(list(requirements))}",
            "",
            "[tool.poetry]",
            "package-mode = false",
            "",
            "[[tool.poetry.source]]",
            'name = "mirror"',
            f'url = "{env.index_url}"',
            'priority = "primary"',
            "",
        ]
    )
    (directory / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    return directory


async def poetry(env: Env, *args: str, cwd: Path, cache: str = "poetry-cache") -> ClientResult:
    """Poetry with its own cache (`cache` names it: a new name is a cold cache), config and
    data directories, the project's venv in `.venv` (created without pip, so virtualenv
    has nothing to update), no keyring, and none of this machine's pip settings."""
    home = env.root / "home"
    home.mkdir(parents=True, exist_ok=True)
    environment = {
        key: value for key, value in os.environ.items() if not key.upper().startswith(_DROPPED_ENV)
    }
    environment.update(
        {
            "HOME": str(home),
            "PIP_CONFIG_FILE": os.devnull,
            "POETRY_CACHE_DIR": str(env.root / cache),
            "POETRY_CONFIG_DIR": str(env.root / "poetry-config"),
            "POETRY_DATA_DIR": str(env.root / "poetry-data"),
            "POETRY_VIRTUALENVS_IN_PROJECT": "true",
            "POETRY_VIRTUALENVS_OPTIONS_NO_PIP": "true",
            "POETRY_KEYRING_ENABLED": "false",
            "VIRTUALENV_NO_PERIODIC_UPDATE": "true",
            "NO_COLOR": "1",
        }
    )
    argv = [*clienttools.located(clienttools.POETRY), *args, "--no-interaction", "--no-ansi"]
    return await run_client(*argv, cwd=cwd, env=environment, seconds=CLIENT_TIMEOUT)


def site_packages(directory: Path) -> Path:
    return next((directory / ".venv" / "lib").glob("python*/site-packages"))


def repin(lock: str, locked: str, pinned: str, env: Env) -> str:
    """`lock` with the file `locked` (and its release) replaced by `pinned`: the lockfile
    as Poetry wrote it while `pinned` was still allowed (the content hash stays valid)."""
    old, new = env.index.file(locked), env.index.file(pinned)
    release = f'name = "{old.project}"\nversion = "{old.version}"\n'
    assert release in lock, lock
    lock = lock.replace(release, f'name = "{new.project}"\nversion = "{new.version}"\n')
    return lock.replace(old.filename, new.filename).replace(old.sha256, new.sha256)


async def test_poetry_locks_and_installs_the_newest_allowed_files(env: Env) -> None:
    directory = project(env, "poetry-range", "qm-demo>=1.0,<2", "qm-late==1.0")
    locked = await poetry(env, "lock", cwd=directory)
    assert locked.code == 0, locked
    lock = (directory / "poetry.lock").read_text(encoding="utf-8")
    demo = env.index.file("qm_demo-1.1-py3-none-any.whl")
    assert f'{{file = "{demo.filename}", hash = "sha256:{demo.sha256}"}}' in lock
    assert "qm_demo-1.2" not in lock
    assert EXACT_TAG not in lock  # qm-late 1.0's young wheel is held on its own
    result = await poetry(env, "install", cwd=directory)
    assert result.code == 0, result
    assert "Installing qm-demo (1.1)" in result.out
    assert "VERSION = '1.1'" in installed(site_packages(directory), "qm_demo")
    assert "TAG = 'py3-none-any'" in installed(site_packages(directory), "qm_late")
    # Pages and metadata files only: the legacy JSON API is no part of Poetry's path.
    assert '"path":"/pypi/simple/qm-demo/"' in env.mirror.log()
    assert '"path":"/pypi/pypi/' not in env.mirror.log()


async def test_poetry_refuses_a_held_or_blocked_pin(env: Env) -> None:
    young = await poetry(env, "lock", cwd=project(env, "young", "qm-demo==1.2"))
    assert young.code != 0, young
    assert "depends on qm-demo (1.2) which doesn't match any versions" in young.out
    blocked = await poetry(env, "lock", cwd=project(env, "blocked", "qm-blocked==1.1"))
    assert blocked.code != 0, blocked
    assert "depends on qm-blocked (1.1) which doesn't match any versions" in blocked.out
    fallback = project(env, "fallback", "qm-blocked")
    assert (await poetry(env, "lock", cwd=fallback)).code == 0
    assert 'name = "qm-blocked"\nversion = "1.0"\n' in (fallback / "poetry.lock").read_text()


async def test_poetry_install_from_a_lockfile_pinning_held_files_fails(env: Env) -> None:
    """Poetry looks a locked file up on the index page, which does not list a held one: it
    never asks for the file, so the mirror's reason never reaches it."""
    cases = (
        ("qm-demo>=1.0", "qm_demo-1.1-py3-none-any.whl", "qm_demo-1.2-py3-none-any.whl"),
        ("qm-blocked>=1.0", "qm_blocked-1.0-py3-none-any.whl", "qm_blocked-1.1-py3-none-any.whl"),
    )
    for requirement, locked, pinned in cases:
        directory = project(env, f"pinned-{pinned}", requirement)
        assert (await poetry(env, "lock", cwd=directory)).code == 0
        lock_path = directory / "poetry.lock"
        lock_path.write_text(
            repin(lock_path.read_text(encoding="utf-8"), locked, pinned, env), encoding="utf-8"
        )
        result = await poetry(env, "install", cwd=directory)
        assert result.code != 0, result
        held = env.index.file(pinned)
        assert f"Unable to find installation candidates for {held.project} ({held.version})" in (
            result.out
        )
        assert env.index.upstream.count(held.path) == 0
        assert not list(site_packages(directory).glob(f"{held.filename.split('-')[0]}*"))


async def test_poetry_install_in_a_fresh_project_checks_hashes_and_asks_the_upstream_nothing(
    env: Env,
) -> None:
    first = project(env, "poetry-first", "qm-demo>=1.0,<2")
    assert (await poetry(env, "lock", cwd=first)).code == 0
    result = await poetry(env, "install", cwd=first)
    assert result.code == 0, result
    upstream_requests = len(env.index.requests)
    demo = env.index.file("qm_demo-1.1-py3-none-any.whl")
    assert env.index.upstream.count(demo.path) == 1
    second = env.root / "poetry-second"
    second.mkdir()
    shutil.copy(first / "pyproject.toml", second / "pyproject.toml")
    shutil.copy(first / "poetry.lock", second / "poetry.lock")
    # A cold Poetry cache: the wheel comes from the mirror again, checked against the lock.
    result = await poetry(env, "install", cwd=second, cache="cold-cache")
    assert result.code == 0, result
    assert "VERSION = '1.1'" in installed(site_packages(second), "qm_demo")
    assert len(env.index.requests) == upstream_requests
