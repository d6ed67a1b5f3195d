"""The deploy tests' shared fixture: the venv with Helm's engine (see helmtool.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import helmtool


@pytest.fixture(scope="session")
def helm_venv() -> Path:
    directory = helmtool.prepare()
    if directory is None:
        pytest.skip(
            "no Python >= 3.12 here (PATH or pyenv): Helm's engine for Python (helm-sdkpy) "
            "needs one: the chart is not linted or rendered, the compose file not parsed"
        )
    return directory
