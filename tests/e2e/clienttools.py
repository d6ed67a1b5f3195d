"""The package clients the e2e tests drive that are not on PATH: yarn berry, bun and Poetry.

Each is pinned here, installed from its own registry into a directory of its own named by the
version (yarn berry and bun from the npm registry with `npm install --prefix`, Poetry into a
venv with pip), so the global yarn classic and the project's interpreter stay as they are.
`.ci/run` installs them before the tests (`python3 -m tests.e2e.clienttools`); that is quick
when they are there already. The tests only look them up: where one is missing they skip,
naming that step, except under CI (`CI` set), where a missing client fails the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

YARN_BERRY_VERSION = "4.18.1"  # npm package @yarnpkg/cli-dist
BUN_VERSION = "1.4.4"  # npm package bun (an optional @oven/bun-<platform> package has the binary)
POETRY_VERSION = "2.5.1"  # the Python package index's poetry
INSTALL_TIMEOUT_SECONDS = 600
INSTALL_STEP = "python3 -m tests.e2e.clienttools (a step of .ci/run)"
READY = "ready"  # written last: a directory without it is an interrupted install


def clients_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "quarantine-mirror" / "clients"


@dataclass(frozen=True)
class Client:
    name: str
    version: str

    @property
    def directory(self) -> Path:
        return clients_dir() / f"{self.name}-{self.version}"

    @property
    def entry(self) -> Path:
        """The file that runs it."""
        if self.name == "yarn-berry":
            return self.directory / "node_modules" / "@yarnpkg" / "cli-dist" / "bin" / "yarn.js"
        if self.name == "bun":
            return self.directory / "node_modules" / ".bin" / "bun"
        return self.directory / "bin" / "poetry"

    def argv(self) -> list[str]:
        """The command line that runs it (yarn berry's is a script for node)."""
        if self.name == "yarn-berry":
            return [_node(), str(self.entry)]
        return [str(self.entry)]

    def is_ready(self) -> bool:
        return (self.directory / READY).is_file() and self.entry.is_file()

    def install(self) -> None:
        """Install into `directory` unless it is there already; check it runs its version."""
        if self.is_ready():
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        if self.name == "poetry":
            venv.EnvBuilder(with_pip=True).create(self.directory)
            _run(
                str(self.directory / "bin" / "python"), "-m", "pip", "install", "-q",
                "--disable-pip-version-check", f"poetry=={self.version}",
            )  # fmt: skip
        else:
            package = "@yarnpkg/cli-dist" if self.name == "yarn-berry" else "bun"
            _run(
                _npm(), "install", "--prefix", str(self.directory), "--no-fund", "--no-audit",
                "--no-update-notifier", f"{package}@{self.version}",
            )  # fmt: skip
        shown = _run(*self.argv(), "--version")
        if self.version not in shown:
            raise RuntimeError(f"{self.name} {self.version} installed, but it says {shown!r}")
        (self.directory / READY).write_text(self.version + "\n", encoding="utf-8")


YARN_BERRY = Client("yarn-berry", YARN_BERRY_VERSION)
BUN = Client("bun", BUN_VERSION)
POETRY = Client("poetry", POETRY_VERSION)
CLIENTS = (YARN_BERRY, BUN, POETRY)


def located(client: Client) -> list[str]:
    """The command line of an installed client; skips the test when it is not installed
    (fails under CI, whose .ci/run installs it)."""
    if not client.is_ready():
        message = f"{client.name} {client.version} is not installed: run {INSTALL_STEP}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return client.argv()


def _node() -> str:
    return shutil.which("node") or "node"


def _npm() -> str:
    return shutil.which("npm") or "npm"


def _run(*argv: str) -> str:
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({completed.returncode}):\n"
            f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
        )
    return completed.stdout.strip()


if __name__ == "__main__":
    for each in CLIENTS:
        each.install()
        print(f"{each.name} {each.version}: {each.directory}", file=sys.stderr)
