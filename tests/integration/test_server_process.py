"""The process-level helpers of `mirror serve`: the open-file limit and log reopening."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from mirror.server import FD_RESERVE, reopen_log_files

_PROBE = """
import logging, resource, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
from mirror.server import raise_open_file_limit
allowed = raise_open_file_limit(int(sys.argv[3]))
print(allowed, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _probe(soft: int, hard: int, max_connections: int) -> tuple[int, int, str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(soft), str(hard), str(max_connections)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    allowed, new_soft = result.stdout.split()
    return int(allowed), int(new_soft), result.stderr


def test_the_soft_limit_is_raised_to_the_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if hard < 2048 + FD_RESERVE:
        pytest.skip(f"this machine's hard limit of open files is {hard}")
    allowed, soft, warnings = _probe(300, hard, 2048)
    assert soft == hard
    assert allowed == 2048
    assert warnings == ""


def test_a_low_hard_limit_lowers_the_connections_with_a_warning() -> None:
    allowed, soft, warnings = _probe(300, 1024, 2048)
    assert soft == 1024
    assert allowed == 1024 - FD_RESERVE
    assert "the open-file limit is 1024" in warnings
    assert f"at most {1024 - FD_RESERVE} connections" in warnings


def test_reopen_log_files_reopens_a_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "mirror.log"
    handler = logging.FileHandler(path)
    logger = logging.getLogger("mirror.test-reopen")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("before rotation")
        path.rename(tmp_path / "mirror.log.1")  # what logrotate does, then it sends SIGHUP
        assert reopen_log_files() >= 1
        logger.warning("after rotation")
        handler.flush()
        assert path.read_text() == "after rotation\n"
        assert (tmp_path / "mirror.log.1").read_text() == "before rotation\n"
    finally:
        logger.removeHandler(handler)
        handler.close()
