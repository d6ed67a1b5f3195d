"""deploy/: the systemd unit (checked by systemd's own `systemd-analyze verify` and
`security`, and for the keys that matter) and the docker compose example (parsed with Helm's
YAML parser from the deploy-tools venv; no Docker engine here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import helmtool

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "quarantine-mirror.service"
COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"
# The supervisor kills a worker still running shutdown_grace + 15 s after SIGTERM (README
# "Processes and signals"); whatever stops the service must wait longer than that.
SUPERVISOR_EXTRA_SECONDS = 15


def default_shutdown_grace() -> int:
    grace = tomllib.loads((REPO / "config" / "mirror.toml").read_text())["shutdown_grace"]
    match = re.fullmatch(r"(\d+)s", grace)
    assert match is not None, grace
    return int(match.group(1))


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd keys may repeat, so no configparser)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_unit_runs_the_mirror_as_a_service_user_with_its_directories() -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    (exec_start,) = service["ExecStart"]
    program, *arguments = exec_start.split()
    assert program.startswith("/"), "ExecStart needs an absolute path"
    assert program.endswith("/bin/mirror")
    assert arguments == ["serve"]
    assert service["User"][0] not in ("root", "0")

    environment = dict(
        item.split("=", 1) for line in service["Environment"] for item in line.split()
    )
    assert environment["MIRROR_DATA_DIR"] == "/var/cache/quarantine-mirror"
    assert environment["MIRROR_STATE_DIR"] == "/var/lib/quarantine-mirror"
    writable = " ".join(service["ReadWritePaths"]).split()
    assert environment["MIRROR_DATA_DIR"] in writable
    assert environment["MIRROR_STATE_DIR"] in writable
    # CacheDirectory=/StateDirectory= create exactly those, owned by the user.
    assert service["CacheDirectory"] == ["quarantine-mirror"]
    assert service["StateDirectory"] == ["quarantine-mirror"]


def test_the_unit_stops_gracefully_and_is_hardened() -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["KillMode"] == ["mixed"]  # the supervisor stops its workers itself
    (timeout,) = service["TimeoutStopSec"]
    assert int(timeout) > default_shutdown_grace() + SUPERVISOR_EXTRA_SECONDS
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "RestrictSUIDSGID": "yes",
    }.items():
        assert service[key] == [value], key
    assert service["CapabilityBoundingSet"] == [""]


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here: verify checks
    that the program is executable, and this machine has no /opt/quarantine-mirror."""
    program = tmp_path / "mirror"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/quarantine-mirror/bin/mirror", str(program)))
    return copy


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit's keys are checked above only")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(runnable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warned about, with exit status 0.
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_systemd_rates_the_units_exposure_ok(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = runnable_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) < 4.0, "systemd rates anything from 4.0 up as MEDIUM or worse"


@pytest.fixture(scope="module")
def compose(helm_venv: Path) -> dict[str, Any]:
    parsed: dict[str, Any] = helmtool.run_engine(helm_venv, {"parse_yaml": str(COMPOSE)})["parsed"]
    return parsed


def test_compose_runs_redis_with_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    data_dir = command[command.index("--dir") + 1]
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == data_dir
    assert volume in compose["volumes"]


def test_compose_runs_the_image_on_redis_with_its_volumes(compose: dict[str, Any]) -> None:
    mirror = compose["services"]["mirror"]
    context = (COMPOSE.parent / mirror["build"]["context"]).resolve()
    assert (context / "Dockerfile").is_file()
    assert mirror["depends_on"]["redis"]["condition"] == "service_healthy"
    environment = mirror["environment"]
    assert environment["MIRROR_REDIS_URL"].startswith("redis://redis:6379/")

    dockerfile = (context / "Dockerfile").read_text()
    mounted = {entry.partition(":")[2]: entry.partition(":")[0] for entry in mirror["volumes"]}
    for variable in ("MIRROR_DATA_DIR", "MIRROR_STATE_DIR"):
        match = re.search(rf"{variable}=(\S+)", dockerfile)
        assert match is not None, variable
        assert mounted[match.group(1)] in compose["volumes"], variable
    assert mirror["read_only"] is True
    assert "/tmp" in mirror["tmpfs"]  # noqa: S108
    assert mirror["cap_drop"] == ["ALL"]

    grace = re.fullmatch(r"(\d+)s", environment["MIRROR_SHUTDOWN_GRACE"])
    stop = re.fullmatch(r"(\d+)s", mirror["stop_grace_period"])
    assert grace is not None
    assert stop is not None
    assert int(stop.group(1)) > int(grace.group(1)) + SUPERVISOR_EXTRA_SECONDS
