"""`mirror serve` under the faults of a real deployment: workers killed (as an OOM killer
does), signals from log rotation and process managers, a stop in the middle of a slow
download, thousands of idle or slow connections, and a hostile upstream document."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import RunningMirror, StartMirror, stop_mirror
from tests.fakes.npm import integrity_of, make_tarball

pytestmark = pytest.mark.e2e


def workers_of(mirror: RunningMirror) -> set[int]:
    """The worker processes of a running `mirror serve` (Linux: the supervisor's children)."""
    pid = mirror.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children}


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def wait_until(condition: object, seconds: float, what: str) -> None:
    """Poll `condition()` every 0.1 s for at most `seconds`."""
    assert callable(condition)
    for _ in range(int(seconds * 10)):
        if condition():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"not within {seconds} s: {what}")


async def answers(mirror: RunningMirror, path: str = "/healthz", seconds: float = 20) -> int:
    """Poll until the mirror answers `path` (any status) within `seconds`; return it."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(int(seconds * 10)):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{mirror.url}{path}") as response:
                    await response.read()
                    return response.status
            await asyncio.sleep(0.1)
    pytest.fail(f"{path} did not answer within {seconds} s:\n{mirror.log()[-4000:]}")


# staying up --------------------------------------------------------------------------------


async def test_two_workers_killed_a_second_apart_the_server_stays_up(
    start_mirror: StartMirror,
) -> None:
    mirror = await start_mirror(workers=2)
    first, second = sorted(workers_of(mirror))
    os.kill(first, signal.SIGKILL)
    await asyncio.sleep(1.0)
    os.kill(second, signal.SIGKILL)
    # A replacement that dies at once does not stop the supervisor either.
    await wait_until(lambda: len(workers_of(mirror) - {first, second}) >= 1, 10, "a replacement")
    (replacement, *_) = workers_of(mirror) - {first, second}
    os.kill(replacement, signal.SIGKILL)

    await wait_until(lambda: len(workers_of(mirror) - {first, second, replacement}) == 2, 20, "2")
    assert await answers(mirror, "/readyz") == 200
    assert mirror.process.returncode is None
    log = mirror.log()
    assert f"worker {first} was killed by SIGKILL" in log
    assert f"worker {second} was killed by SIGKILL" in log
    assert f"worker {replacement} was killed by SIGKILL" in log
    assert log.count(f"worker {first} ") == 1  # each crash logged once
    # The slot whose replacement died at once waits twice as long for the next one.
    assert log.count("starting a replacement in 0.5 s") == 2
    assert "starting a replacement in 1.0 s" in log
    assert await stop_mirror(mirror) == 0


async def readiness(mirror: RunningMirror) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"{mirror.url}/readyz") as response,
    ):
        return response.status, await response.json()


async def test_readyz_reports_the_restart_backoff_of_a_crashing_worker(
    start_mirror: StartMirror,
) -> None:
    mirror = await start_mirror(workers=2)
    survivor, victim = sorted(workers_of(mirror))
    status, body = await readiness(mirror)
    assert (status, body["checks"]["workers"]) == (200, "ok")
    seen = {survivor, victim}
    for crash in (1, 2, 3):
        os.kill(victim, signal.SIGKILL)
        if crash >= 2:
            # Backing off (1 s, then 2 s) before the next replacement: whichever worker
            # answers (the survivor: the slot is empty) says so; it is alive meanwhile.
            async def backoff_reported(crashes: int = crash) -> bool:
                status, body = await readiness(mirror)
                return status == 503 and (
                    f"crashed {crashes} times, restarting in" in str(body["checks"]["workers"])
                )

            assert await polled(backoff_reported, 1.0), await readiness(mirror)
            assert await answers(mirror, "/healthz") == 200
        await wait_until(lambda: len(workers_of(mirror) - seen) == 1, 10, "a replacement")
        (victim,) = workers_of(mirror) - seen
        seen.add(victim)
    assert survivor in workers_of(mirror)
    status, body = await readiness(mirror)  # the replacement runs: ready again
    assert (status, body["checks"]["workers"]) == (200, "ok"), body
    assert await stop_mirror(mirror) == 0
    assert not (mirror.data_dir / "supervisor.json").exists()


async def polled(check: object, seconds: float) -> bool:
    """Poll the coroutine function `check` for at most `seconds`, as fast as it answers."""
    assert callable(check)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_workers_die_with_the_supervisor_and_free_the_port(
    start_mirror: StartMirror,
) -> None:
    mirror = await start_mirror(workers=2)
    workers = workers_of(mirror)
    mirror.process.send_signal(signal.SIGKILL)
    await mirror.process.wait()
    await wait_until(lambda: all(gone(pid) for pid in workers), 15, "workers gone")
    port = int(mirror.url.rsplit(":", 1)[1])
    with socket.socket() as sock:  # nobody holds the port any more
        sock.bind(("127.0.0.1", port))


# signals ---------------------------------------------------------------------------------


async def test_hup_usr1_usr2_kill_nothing(start_mirror: StartMirror) -> None:
    mirror = await start_mirror(workers=2)
    workers = workers_of(mirror)
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        mirror.process.send_signal(signum)
        await asyncio.sleep(0.3)
    for pid in workers:  # a log-rotation script may signal every process it finds
        os.kill(pid, signal.SIGHUP)
        os.kill(pid, signal.SIGUSR2)
    await asyncio.sleep(0.5)
    assert await answers(mirror) == 200
    assert mirror.process.returncode is None
    assert workers_of(mirror) == workers
    log = mirror.log()
    assert "SIGHUP: reopened 0 log file(s)" in log
    assert "SIGUSR2 ignored" in log
    assert "killed" not in log
    assert await stop_mirror(mirror) == 0


@dataclass
class SlowUpstream:
    """An npm upstream whose one tarball streams slowly, and a deeply nested packument."""

    url: str
    tarball: bytes
    started: asyncio.Event


SLOW_CHUNK = 32 * 1024


@pytest.fixture
async def slow_upstream(aiohttp_server: AiohttpServer) -> SlowUpstream:
    tarball = make_tarball("slowpkg", "1.0.0") + os.urandom(2 * 1024 * 1024)
    started = asyncio.Event()
    base: list[str] = []

    async def packument(request: web.Request) -> web.Response:
        document = {
            "name": "slowpkg",
            "dist-tags": {"latest": "1.0.0"},
            "versions": {
                "1.0.0": {
                    "name": "slowpkg",
                    "version": "1.0.0",
                    "dist": {
                        "tarball": f"{base[0]}slowpkg/-/slowpkg-1.0.0.tgz",
                        "integrity": integrity_of(tarball),
                        "shasum": hashlib.sha1(tarball).hexdigest(),  # noqa: S324 (npm's)
                    },
                }
            },
            "time": {"1.0.0": "2020-01-01T00:00:00.000Z"},
        }
        return web.json_response(document)

    async def slow_tarball(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(tarball)
        await response.prepare(request)
        started.set()
        for offset in range(0, len(tarball), SLOW_CHUNK):  # about 13 s in all
            await response.write(tarball[offset : offset + SLOW_CHUNK])
            await asyncio.sleep(0.2)
        return response

    async def deep(request: web.Request) -> web.Response:
        nested = b"[" * 200_000 + b"]" * 200_000  # 400 KB that crashed orjson 3.8
        body = b'{"name": "deep", "versions": {}, "time": ' + nested + b"}"
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/slowpkg", packument)
    app.router.add_get("/slowpkg/-/slowpkg-1.0.0.tgz", slow_tarball)
    app.router.add_get("/deep", deep)
    server = await aiohttp_server(app, host="127.0.0.1")
    base.append(str(server.make_url("/")))
    return SlowUpstream(url=base[0], tarball=tarball, started=started)


async def test_sigterm_during_a_slow_download_cleans_up_within_the_grace(
    start_mirror: StartMirror, slow_upstream: SlowUpstream
) -> None:
    grace = 2.0
    mirror = await start_mirror(
        {
            "MIRROR_NPM_UPSTREAM": slow_upstream.url,
            "MIRROR_QUARANTINE": "3d",
            "MIRROR_SHUTDOWN_GRACE": "2s",
        }
    )
    received = 0
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{mirror.url}/npm/slowpkg/-/slowpkg-1.0.0.tgz") as response:
            assert response.status == 200
            received += len(await response.content.read(SLOW_CHUNK))
            assert slow_upstream.started.is_set()
            temp_files = list(mirror.data_dir.rglob("*.part"))
            assert temp_files, "the download is written to a temp file while it runs"
            stopped_at = time.monotonic()
            mirror.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(aiohttp.ClientError):
                async with asyncio.timeout(grace + 10):
                    while chunk := await response.content.read(SLOW_CHUNK):
                        received += len(chunk)
        async with asyncio.timeout(grace + 15):
            code = await mirror.process.wait()
    took = time.monotonic() - stopped_at
    log = mirror.log()
    assert code == 0, log[-3000:]
    # In-flight requests get the grace, then the clean-up runs (the app's own waits for
    # downloads included), well before the supervisor would use SIGKILL.
    assert grace - 0.5 <= took <= grace + 8, f"{took:.1f} s\n{log[-3000:]}"
    assert received < len(slow_upstream.tarball)  # the download was cut, not finished
    assert not list(mirror.data_dir.rglob("*.part")), "no temp file left"
    assert "1 request(s) still running after shutdown_grace" in log
    assert "stopped; clean-up done" in log
    assert "SIGKILL" not in log


async def test_a_deeply_nested_upstream_document_is_a_502_and_the_worker_lives(
    start_mirror: StartMirror, slow_upstream: SlowUpstream
) -> None:
    mirror = await start_mirror({"MIRROR_NPM_UPSTREAM": slow_upstream.url}, workers=1)
    workers = workers_of(mirror)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{mirror.url}/npm/deep") as response:
            assert response.status == 502
            assert "levels deep" in (await response.json())["error"]
        async with session.get(f"{mirror.url}/healthz") as response:
            assert response.status == 200
    assert workers_of(mirror) == workers
    assert "killed" not in mirror.log()


# connections -------------------------------------------------------------------------------


def _raise_own_fd_limit(wanted: int) -> int:
    """Raise this test process's open-file limit; returns how many sockets it may open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + 200)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return min(wanted, soft - 200)


async def _open_idle(address: tuple[str, int], source: str, count: int) -> list[socket.socket]:
    loop = asyncio.get_running_loop()
    sockets: list[socket.socket] = []

    async def one() -> None:
        sock = socket.socket()
        sockets.append(sock)
        sock.setblocking(False)
        sock.bind((source, 0))
        with contextlib.suppress(OSError):
            await loop.sock_connect(sock, address)

    for start in range(0, count, 100):
        await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return sockets


async def test_two_thousand_idle_sockets_from_one_address_leave_others_served(
    start_mirror: StartMirror,
) -> None:
    count = _raise_own_fd_limit(2000)
    per_client = max(16, count // 8)
    mirror = await start_mirror({"MIRROR_MAX_CONNECTIONS_PER_CLIENT": str(per_client)})
    port = int(mirror.url.rsplit(":", 1)[1])
    # 127.0.0.2 is this machine too (all of 127/8 is): another client address.
    idle = await _open_idle(("127.0.0.1", port), "127.0.0.2", count)
    try:
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for _ in range(5):
                async with session.get(f"{mirror.url}/healthz") as response:
                    assert response.status == 200
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.5)
        log = mirror.log()
        assert "127.0.0.2 has" in log, log[-3000:]
        assert "(limits.max_connections_per_client)" in log
        # Rate-limited: one warning for the burst, not one per refused connection.
        assert 1 <= log.count("refused") <= 3
    finally:
        for sock in idle:
            sock.close()


async def test_a_slowloris_connection_is_closed_after_the_header_timeout(
    start_mirror: StartMirror,
) -> None:
    mirror = await start_mirror({"MIRROR_HEADER_TIMEOUT": "1s", "MIRROR_IDLE_TIMEOUT": "30s"})
    host, port = mirror.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: mirror\r\n")
    closed = False
    for number in range(40):  # a header line every 0.2 s: at most 8 s
        try:
            writer.write(f"X-Slow-{number}: yes\r\n".encode())
            await writer.drain()
            async with asyncio.timeout(0.2):
                if await reader.read(1024) == b"":
                    closed = True
                    break
        except TimeoutError:
            continue
        except ConnectionError:
            closed = True
            break
    took = time.monotonic() - started
    writer.close()
    assert closed, "the connection stayed open"
    assert 0.8 <= took <= 4
    assert "no complete request headers within 1 s" in mirror.log()


async def test_keep_alive_outlives_the_header_timeout_but_not_the_idle_timeout(
    start_mirror: StartMirror,
) -> None:
    mirror = await start_mirror({"MIRROR_HEADER_TIMEOUT": "1s", "MIRROR_IDLE_TIMEOUT": "3s"})
    host, port = mirror.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = b"GET /healthz HTTP/1.1\r\nHost: mirror\r\n\r\n"

    async def ask() -> bytes:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        return head

    assert (await ask()).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(1.8)  # idle longer than the header timeout: still open
    assert (await ask()).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    async with asyncio.timeout(8):
        assert await reader.read(1024) == b""  # closed by the idle timeout
    assert 2 <= time.monotonic() - started <= 5
    writer.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except ConnectionError:
        return True


async def test_the_worker_limit_counts_everyone_and_trusted_proxies_are_no_single_client(
    start_mirror: StartMirror,
) -> None:
    mirror = await start_mirror(
        {
            "MIRROR_TRUSTED_PROXIES": "127.0.0.2",
            "MIRROR_MAX_CONNECTIONS": "48",
            "MIRROR_MAX_CONNECTIONS_PER_CLIENT": "16",
        }
    )
    port = int(mirror.url.rsplit(":", 1)[1])
    proxy = await _open_idle(("127.0.0.1", port), "127.0.0.2", 40)
    await asyncio.sleep(0.5)
    others = await _open_idle(("127.0.0.1", port), "127.0.0.3", 20)
    try:
        await asyncio.sleep(0.5)
        # The proxy's 40 are many clients: all kept although one client may hold 16.
        assert sum(map(_closed_by_peer, proxy)) == 0
        # 8 more fit in the worker's 48; the other 12 are closed at once.
        assert sum(map(_closed_by_peer, others)) == 12
        log = mirror.log()
        assert "48 connections open in this worker (limits.max_connections)" in log
        assert "(limits.max_connections_per_client)" not in log
    finally:
        for sock in proxy + others:
            sock.close()
    assert await answers(mirror) == 200  # once they are gone, others are served again
