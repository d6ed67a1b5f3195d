"""Shared fixtures: a clean environment, free ports and a real `redis-server`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

# Recording fake upstreams (`fake_upstream`, `other_upstream`) for every test layer.
pytest_plugins = ["tests.fakes.fixtures"]

_STRIPPED_PREFIXES = ("MIRROR_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's MIRROR_* settings or proxies."""
    for name in list(os.environ):
        if name.upper().startswith(_STRIPPED_PREFIXES):
            monkeypatch.delenv(name, raising=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(
    workdir: Path, port: int | None = None, *, persistent: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a real redis-server on `port` (default: a free 127.0.0.1 port), without
    persistence unless `persistent` (an append-only file in `workdir`, written on every
    change, as the README asks of production); returns the process and its URL. The caller
    stops it."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        pytest.fail(
            "redis-server is not installed: .ci/run installs it (apt-get install redis-server)"
        )
    port = port or free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes" if persistent else "no", "--appendfsync", "always",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("redis-server did not start within 10 s")
    return process, f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free 127.0.0.1 port, for the whole test session."""
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


async def empty_redis_db(redis_url: str, db: int) -> str:
    """The URL of database `db` of the session's redis-server, emptied: a test's own."""
    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return url


@pytest.fixture
def stoppable_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A redis-server of this test's own, which the test may SIGSTOP (a hung Redis) or
    kill: (process, url). Resumed and killed afterwards whatever state it was left in."""
    process, url = start_redis(tmp_path)
    try:
        yield process, url
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait(10)


def mirror_settings(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The MIRROR_* settings tests build apps with: data in `data_dir`, Maven off (its
    default upstream is off this machine), no retry back-off, a 3-day quarantine, no access
    log; `overrides` win."""
    return {
        "MIRROR_DATA_DIR": str(data_dir),
        "MIRROR_MAVEN_UPSTREAM": "off",
        "MIRROR_UPSTREAM_BACKOFF": "0",
        "MIRROR_QUARANTINE": "3d",
        "MIRROR_ACCESS_LOG": "false",
        **overrides,
    }


async def wait_until(condition: Callable[[], bool], seconds: float, step: float = 0.05) -> bool:
    """Poll `condition` every `step` for at most `seconds`; whether it became true (for what a
    background task does, which has no event to wait on)."""
    for _ in range(max(1, int(seconds / step))):
        if condition():
            return True
        await asyncio.sleep(step)
    return condition()
