"""The Dockerfile, without a Docker engine: the build context its .dockerignore admits is
enough to build the wheel, the wheel installed into a clean venv runs `mirror --help`,
`mirror config` with the image's environment, and `mirror serve` answers the image's own
HEALTHCHECK command; the Dockerfile itself copies what exists, runs the console script as a
non-root user and keeps build tools out of the final stage."""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_SECONDS = 600


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): instructions with continuation lines joined."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = words[0]
            for name, value in args.items():
                base = base.replace(f"${{{name}}}", value)
            stages.append(Stage(base, words[2] if len(words) > 2 else None))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec form: {args}"
    return [str(item) for item in value]


def copy_sources(args: str) -> list[str]:
    words = [w for w in shlex.split(args) if not w.startswith("--")]
    return words[:-1]


def dockerignore_admits(patterns: list[str], relative: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    admitted = True
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        bare = pattern.removeprefix("**/")
        if any(
            fnmatch.fnmatchcase(prefix, pattern) or fnmatch.fnmatchcase(prefix.split("/")[-1], bare)
            for prefix in prefixes
        ):
            admitted = negated
    return admitted


def build_context() -> list[str]:
    """The repository files (as git tracks them) that `docker build .` would send."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    return sorted(p for p in listed if (REPO / p).is_file() and dockerignore_admits(patterns, p))


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile((REPO / "Dockerfile").read_text())


# ---------------------------------------------------------------- the Dockerfile


def test_the_final_image_is_slim_python_311_with_no_build_stage_leftovers(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2, "a build stage and a final stage"
    build, final = stages[0], stages[-1]
    for stage in stages:
        assert stage.base.startswith("python:3.11-slim"), stage.base
    assert build.name, "the build stage is named, for --from"
    assert any("pip wheel" in run for run in build.all("RUN"))
    for run in final.all("RUN"):
        assert "apt-get" not in run
        assert "gcc" not in run
        assert "build-essential" not in run
        assert "--no-index" in run, "the final stage installs only the built wheels"
        assert f"from={build.name}" in run
    for copy in final.all("COPY"):
        assert "--from" not in copy or "/wheels" not in copy, "wheels would stay in a layer"


def test_the_image_runs_the_console_script_as_a_non_root_user(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    final = dockerfile[1][-1]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert exec_form(final.last("ENTRYPOINT")) == ["mirror"]
    assert scripts["mirror"] == "mirror.cli.main:main"
    assert exec_form(final.last("CMD")) == ["serve"]
    user = final.last("USER").split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "numeric, so Kubernetes' runAsNonRoot can check it"
    assert final.last("STOPSIGNAL") == "SIGTERM"


def test_data_and_state_directories_are_volumes(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    final = dockerfile[1][-1]
    environment = image_environment(final)
    volumes = exec_form(final.last("VOLUME"))
    assert environment["MIRROR_DATA_DIR"] in volumes
    assert environment["MIRROR_STATE_DIR"] in volumes
    assert environment["MIRROR_DATA_DIR"] != environment["MIRROR_STATE_DIR"]
    chown = " ".join(final.all("RUN"))
    for directory in volumes:
        assert directory in chown, f"{directory} is not made writable for the user"


def test_every_copy_source_is_in_the_build_context(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    context = build_context()
    copied: set[str] = set()
    for stage in dockerfile[1]:
        for copy in stage.all("COPY"):
            if "--from" in copy:
                continue
            for source in copy_sources(copy):
                source = source.rstrip("/")
                matched = [p for p in context if p == source or p.startswith(source + "/")]
                assert matched, f"COPY {source}: not in the build context"
                copied.update(matched)
    # What building the wheel needs: the project file, its readme, every module.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "pyproject.toml" in copied
    assert project["readme"] in copied
    package_files = subprocess.run(
        ["git", "ls-files", "mirror"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert package_files
    assert set(package_files) <= copied


def test_the_healthcheck_asks_healthz_without_curl(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    final = dockerfile[1][-1]
    healthcheck = final.last("HEALTHCHECK")
    command = exec_form(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    assert "urllib" in command[2]
    assert "curl" not in healthcheck
    assert "wget" not in healthcheck


def image_environment(stage: Stage) -> dict[str, str]:
    environment: dict[str, str] = {}
    for env in stage.all("ENV"):
        for item in shlex.split(env):
            name, _, value = item.partition("=")
            environment[name] = value
    return environment


# ---------------------------------------------------------------- the wheel, installed


def context_digest(files: list[str]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.encode() + b"\0" + (REPO / path).read_bytes() + b"\0")
    digest.update(sys.version.encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv (no system site-packages) with the wheel built from the build context
    alone. Cached by the context's content: an unchanged tree reuses the venv."""
    files = build_context()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = cache / "quarantine-mirror" / "image-venvs"
    venv = root / context_digest(files)
    if (venv / "ready").is_file():
        (venv / "ready").touch()
        return venv
    # The venvs of older trees, unused for a day (another checkout may still use a newer one).
    for old in root.glob("*/ready"):
        if time.time() - old.stat().st_mtime > 86400:
            shutil.rmtree(old.parent, ignore_errors=True)
    # Built in place: console scripts hold the venv's absolute path. "ready" is written last.
    shutil.rmtree(venv, ignore_errors=True)
    context = tmp_path_factory.mktemp("context")
    for path in files:
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, context / path)
    wheels = tmp_path_factory.mktemp("wheels")
    pip = ["-m", "pip", "--disable-pip-version-check", "-q"]
    # Run from the wheel directory and without PYTHONPATH: with the checkout on sys.path, pip
    # would find its quarantine_mirror.egg-info (an editable install's), take the project as
    # installed already, and skip the wheel.
    outside = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, *pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(context)],
        check=True, timeout=BUILD_TIMEOUT_SECONDS, cwd=wheels, env=outside,
    )  # fmt: skip
    (wheel,) = wheels.glob("quarantine_mirror-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), *pip, "install", str(wheel)],
        check=True, timeout=BUILD_TIMEOUT_SECONDS, cwd=wheels, env=outside,
    )  # fmt: skip
    if not (venv / "bin" / "mirror").is_file():
        pytest.fail(f"installing {wheel.name} into {venv} left no `mirror` command")
    (venv / "ready").write_text(wheel.name + "\n")
    return venv


def clean_environment(extra: dict[str, str]) -> dict[str, str]:
    """No PYTHONPATH, no MIRROR_* of the test run: only what the image would set."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
    return {**keep, "PATH": "/usr/bin:/bin", **extra}


def test_the_installed_wheel_runs_outside_the_source_tree(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import mirror; print(mirror.__file__)"],
        cwd=tmp_path, env=clean_environment({}), capture_output=True, text=True, check=True,
        timeout=60,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(installed), where

    helped = subprocess.run(
        [str(installed / "bin" / "mirror"), "--help"],
        cwd=tmp_path, env=clean_environment({}), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    for command in ("serve", "config"):
        assert command in helped.stdout


def test_mirror_config_with_the_images_environment(
    installed: Path, tmp_path: Path, dockerfile: tuple[dict[str, str], list[Stage]]
) -> None:
    final = dockerfile[1][-1]
    environment = image_environment(final)
    # The image's settings file is the repository's config/mirror.toml (COPY'd into place).
    (config_copy,) = [c for c in final.all("COPY") if "--from" not in c]
    source, target = copy_sources(config_copy)[0], shlex.split(config_copy)[-1]
    assert environment["MIRROR_CONFIG"] == target
    environment["MIRROR_CONFIG"] = str(REPO / source)
    environment.pop("PATH")
    shown = subprocess.run(
        [str(installed / "bin" / "mirror"), "config"],
        cwd=tmp_path, env=clean_environment(environment), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    config = json.loads(shown.stdout)
    assert (config["host"], config["port"]) == ("0.0.0.0", 8080)
    assert config["data_dir"] == environment["MIRROR_DATA_DIR"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def serving(installed: Path, tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    port = free_port()
    environment = clean_environment(
        {
            "MIRROR_LISTEN": f"127.0.0.1:{port}",
            "MIRROR_DATA_DIR": str(tmp_path / "cache"),
            "MIRROR_STATE_DIR": str(tmp_path / "state"),
            "MIRROR_WORKERS": "1",
        }
    )
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(installed / "bin" / "mirror"), "serve"],
        cwd=tmp_path, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield port, environment
    finally:
        log.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run_healthcheck(command: list[str], installed: Path, environment: dict[str, str]) -> int:
    # `python` is the venv's: the image puts its bin first on PATH.
    env = {**environment, "PATH": f"{installed / 'bin'}:{environment['PATH']}"}
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


def test_the_images_healthcheck_passes_against_mirror_serve(
    installed: Path,
    serving: tuple[int, dict[str, str]],
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _port, environment = serving
    healthcheck = dockerfile[1][-1].last("HEALTHCHECK")
    command = exec_form(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    deadline = time.monotonic() + 30
    while run_healthcheck(command, installed, environment) != 0:
        assert time.monotonic() < deadline, "the health check never passed"
        time.sleep(0.3)


def test_the_images_healthcheck_fails_when_nothing_listens(
    installed: Path, dockerfile: tuple[dict[str, str], list[Stage]]
) -> None:
    healthcheck = dockerfile[1][-1].last("HEALTHCHECK")
    command = exec_form(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    environment = clean_environment({"MIRROR_LISTEN": f"127.0.0.1:{free_port()}"})
    assert run_healthcheck(command, installed, environment) != 0


def test_the_installed_wheel_serves_the_dashboard_with_its_templates_and_assets(
    serving: tuple[int, dict[str, str]],
) -> None:
    # The templates and the stylesheet are package data: a wheel without them would answer
    # the dashboard with 500s while every test of the checkout passes.
    port, _environment = serving

    def get(path: str) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            return answer.status, answer.getheader("Content-Type", ""), answer.read()
        finally:
            connection.close()

    deadline = time.monotonic() + 30
    while True:
        try:
            status, _, page = get("/ui/login")
            break
        except OSError:
            assert time.monotonic() < deadline, "the dashboard never answered"
            time.sleep(0.3)
    assert status == 200
    assert b"Admin or read-only admin token" in page
    status, content_type, stylesheet = get("/ui/static/ui.css")
    assert (status, content_type.split(";")[0]) == (200, "text/css")
    assert b"--accent" in stylesheet
