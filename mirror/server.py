"""`mirror serve`: binds the listening socket once, then runs the app in N worker processes
that share it (forked, so each inherits the socket), with optional TLS, uvloop when
installed, and graceful shutdown. Owns processes and sockets, nothing about requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from aiohttp import web

from mirror.config import Config

log = logging.getLogger("mirror.server")

# A worker that dies this soon after starting is not restarted again: it would crash-loop.
_MIN_WORKER_LIFETIME = 5.0


def bind_socket(config: Config) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.tls.enabled or config.tls.cert is None or config.tls.key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(config.tls.cert), str(config.tls.key))
    return context


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve_in_worker(config: Config, sock: socket.socket, metrics_dir: Path | None) -> None:
    from mirror.app import create_app

    app = create_app(config, metrics_dir=metrics_dir)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=config.shutdown_grace.total_seconds(),
    )
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=ssl_context(config))
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        # Stops accepting, lets in-flight requests finish within shutdown_grace, then runs
        # cleanup_ctx (which removes partial downloads).
        await runner.cleanup()


def run_worker(config: Config, sock: socket.socket, metrics_dir: Path | None) -> None:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_in_worker(config, sock, metrics_dir))


def serve(config: Config, *, announce: Callable[[str], None] = print) -> int:
    """Run the mirror until SIGTERM/SIGINT; return the exit code."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    sock = bind_socket(config)
    host, port = sock.getsockname()[:2]
    scheme = "https" if config.tls.enabled else "http"
    announce(
        f"quarantine-mirror listening on {scheme}://{host}:{port}/ with {config.workers} "
        f"worker(s), data in {config.data_dir}"
    )
    if config.workers == 1:
        run_worker(config, sock, None)
        return 0
    metrics_dir = Path(tempfile.mkdtemp(prefix="mirror-metrics-"))
    # prometheus_client reads this at import time in each worker: set before forking.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        return _supervise(config, sock, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _spawn(config: Config, sock: socket.socket, metrics_dir: Path) -> int:
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            run_worker(config, sock, metrics_dir)
        except BaseException:
            logging.getLogger("mirror").exception("worker %d crashed", os.getpid())
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _supervise(config: Config, sock: socket.socket, metrics_dir: Path) -> int:
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    workers: dict[int, float] = {}
    for _ in range(config.workers):
        workers[_spawn(config, sock, metrics_dir)] = time.monotonic()
    exit_code = 0
    while workers and not stopping:
        with contextlib.suppress(ChildProcessError, InterruptedError):
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.2)
                continue
            started = workers.pop(pid, None)
            if started is None or stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if time.monotonic() - started < _MIN_WORKER_LIFETIME:
                log.error("worker %d exited with %d right after start; stopping", pid, code)
                exit_code = 1
                stopping = True
                break
            log.warning("worker %d exited with %d; starting a new one", pid, code)
            workers[_spawn(config, sock, metrics_dir)] = time.monotonic()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + config.shutdown_grace.total_seconds() + 5
    while workers and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid:
                workers.pop(pid, None)
                continue
        time.sleep(0.1)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return exit_code
