"""The Helm engine for the chart tests, in a Python >= 3.12 venv of its own.

The mirror runs on 3.11; Helm's engine for Python (helm-sdkpy, which lints, and
helm-python-sdk, which renders templates offline) needs 3.12 or 3.10+ and ships Helm's Go
library as a shared object. Both go into one venv, built once and cached (keyed by the
pinned versions); `.ci/run` builds it before the tests (`python3 -m tests.deploy.helmtool`),
so the tests download nothing. The tests talk to it through `helm_engine.py`, run by the
venv's interpreter, with JSON on stdin and stdout.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# helm-sdkpy: Helm's lint (the engine). helm-python-sdk: Helm's template rendering
# without a cluster (helm-sdkpy renders only through an install against a cluster).
REQUIREMENTS = ("helm-sdkpy==0.1.32", "helm-python-sdk==0.2.2")
BUILD_TIMEOUT_SECONDS = 600
ENGINE = Path(__file__).with_name("helm_engine.py")


def venv_dir() -> Path:
    """`$QM_HELM_VENV`, else a directory under the user's cache named by the pins."""
    if os.environ.get("QM_HELM_VENV"):
        return Path(os.environ["QM_HELM_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()[:12]
    return cache / "quarantine-mirror" / f"helm-venv-{key}"


def find_python312() -> str | None:
    """A working Python >= 3.12 interpreter: pyenv's, else on PATH (a pyenv shim on PATH may
    name a version that is not selected, so each candidate is asked to run)."""
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates = [
        *sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3")),
        *sorted(glob.glob(f"{pyenv_root}/versions/3.13*/bin/python3")),
        *filter(None, (shutil.which(name) for name in ("python3.12", "python3.13"))),
    ]
    for candidate in candidates:
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys, venv; sys.exit(sys.version_info < (3, 12))"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return candidate
    return None


def venv_python(directory: Path) -> Path:
    return directory / "bin" / "python"


def is_ready(directory: Path) -> bool:
    return (directory / "ready").is_file() and venv_python(directory).is_file()


def prepare() -> Path | None:
    """The ready venv (built now if missing), or None where no Python >= 3.12 exists.
    A failed build raises: only a missing interpreter is a reason to skip."""
    directory = venv_dir()
    if is_ready(directory):
        return directory
    interpreter = find_python312()
    if interpreter is None:
        return None
    building = directory.with_name(directory.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([interpreter, "-m", "venv", str(building)], check=True, timeout=120)
        subprocess.run(
            [str(venv_python(building)), "-m", "pip", "install", "-q",
             "--disable-pip-version-check", *REQUIREMENTS],
            check=True,
            timeout=BUILD_TIMEOUT_SECONDS,
        )  # fmt: skip
        (building / "ready").write_text("\n".join(REQUIREMENTS) + "\n")
        if is_ready(directory):  # another process finished first
            return directory
        shutil.rmtree(directory, ignore_errors=True)
        # venvs hold their own path in bin/ scripts; the interpreter is called by path and
        # finds its site-packages relative to itself, so a renamed venv works for `-c`/scripts.
        building.rename(directory)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return directory


def run_engine(directory: Path, request: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Run one request through helm_engine.py in the venv; its JSON answer."""
    completed = subprocess.run(
        [str(venv_python(directory)), str(ENGINE)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"helm engine failed ({completed.returncode}):\n{completed.stderr}")
    answer: dict[str, Any] = json.loads(completed.stdout)
    return answer


if __name__ == "__main__":
    ready = prepare()
    if ready is None:
        print("helm venv: no Python >= 3.12 found; the chart tests will skip", file=sys.stderr)
    else:
        print(f"helm venv: {ready}", file=sys.stderr)
