"""End-to-end fixtures: `mirror serve` as a real subprocess on a free 127.0.0.1 port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from mirror.config import load_config
from mirror.model import RuleRecord
from mirror.state import create_state
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunningMirror:
    url: str  # e.g. http://127.0.0.1:PORT (no trailing slash)
    data_dir: Path
    process: asyncio.subprocess.Process
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


StartMirror = Callable[..., Awaitable[RunningMirror]]


@pytest.fixture
async def start_mirror(tmp_path: Path) -> AsyncIterator[StartMirror]:
    """Start `python -m mirror serve` with the given MIRROR_* settings; stopped at teardown.

    The ecosystems not named in `settings` are switched off (Maven's default upstream would
    otherwise point off this machine)."""
    started: list[RunningMirror] = []

    async def start(
        settings: Mapping[str, str] | None = None,
        *,
        workers: int = 1,
        data_dir: Path | None = None,
        readiness_scheme: str = "http",
        ready: bool = True,
    ) -> RunningMirror:
        port = free_port()
        data = data_dir or tmp_path / f"mirror-data-{len(started)}"
        env = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
        env.update(
            {
                "MIRROR_LISTEN": f"127.0.0.1:{port}",
                "MIRROR_DATA_DIR": str(data),
                "MIRROR_WORKERS": str(workers),
                "MIRROR_MAVEN_UPSTREAM": "off",
                "MIRROR_UPSTREAM_BACKOFF": "0",
                "MIRROR_SHUTDOWN_GRACE": "5s",
            }
        )
        env.update(settings or {})
        log_path = tmp_path / f"mirror-{len(started)}.log"
        log_file = log_path.open("wb")
        config_file = str(REPO / "config" / "mirror.toml")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mirror", "serve", "--config", config_file,
            cwd=str(tmp_path), env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        log_file.close()
        mirror = RunningMirror(
            url=f"http://127.0.0.1:{port}", data_dir=data, process=process, log_path=log_path
        )
        started.append(mirror)
        # ready=False: until it answers at all (/healthz), for a mirror expected not ready.
        await _wait_ready(mirror, readiness_scheme, "/readyz" if ready else "/healthz")
        return mirror

    yield start
    for mirror in started:
        await stop_mirror(mirror)


async def stop_mirror(mirror: RunningMirror) -> int:
    if mirror.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            mirror.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await mirror.process.wait()
        except TimeoutError:
            mirror.process.kill()
            await mirror.process.wait()
    return mirror.process.returncode or 0


async def _wait_ready(mirror: RunningMirror, scheme: str = "http", path: str = "/readyz") -> None:
    url = mirror.url.replace("http://", f"{scheme}://") + path
    async with aiohttp.ClientSession() as session:
        for _ in range(200):  # bounded: about 20 s
            if mirror.process.returncode is not None:
                pytest.fail(f"mirror exited with {mirror.process.returncode}:\n{mirror.log()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url, ssl=False) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    pytest.fail(f"mirror did not become ready:\n{mirror.log()}")


async def block_before_start(data_dir: Path, ecosystem: str, package: str, versions: str) -> None:
    """Store a block in the embedded state a mirror will open from `data_dir` (the same
    SQLite file `mirror serve` uses), for suites that are not about the admin API."""
    config = load_config(None, {"MIRROR_DATA_DIR": str(data_dir), "MIRROR_MAVEN_UPSTREAM": "off"})
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    state = create_state(config)
    await state.open()
    try:
        await state.add_rule(
            RuleRecord(
                id="e2e-block",
                kind="block",
                ecosystem=ecosystem,
                package=package,
                versions=versions,
                reason="compromised release",
                created_at=datetime.now(UTC),
                created_by="e2e",
            )
        )
    finally:
        await state.close()


@dataclass(frozen=True)
class ClientResult:
    """What a real client printed (stdout and stderr together) and its exit code."""

    code: int
    out: str

    def __str__(self) -> str:
        return f"exit {self.code}\n{self.out[-6000:]}"


async def run_client(*argv: str, cwd: Path, env: Mapping[str, str], seconds: float) -> ClientResult:
    """Run a real package client; a hung one fails the test (bounded), never the suite."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=str(cwd), env=dict(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(seconds):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{' '.join(argv)} did not finish in {seconds} s")
    return ClientResult(code=process.returncode or 0, out=out.decode("utf-8", "replace"))
