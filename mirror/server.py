"""`mirror serve`: binds the listening socket once, then a supervisor runs the app in N worker
processes that share it (forked, so each inherits the socket), with optional TLS and uvloop
when installed. Owns processes, signals and sockets, nothing about requests.

Staying up: the supervisor restarts a worker that died, after a delay that doubles while
replacements keep dying (RESTART_DELAY_MIN to RESTART_DELAY_MAX), and never exits because
workers crash. Signals (to the supervisor; workers act the same when sent one directly):
TERM, INT and QUIT stop gracefully; HUP and USR1 reopen log files; the others a user or the
system may send are logged and ignored. Workers die with the supervisor (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import resource
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from aiohttp import web

from mirror import directories, malloc, workerstatus
from mirror.config import Config
from mirror.connections import ConnectionGate

log = logging.getLogger("mirror.server")

# A replacement for a dead worker starts after this delay, doubled while replacements die
# within WORKER_STABLE_AFTER of starting; a worker that lived longer resets it.
RESTART_DELAY_MIN = 0.5
RESTART_DELAY_MAX = 30.0
WORKER_STABLE_AFTER = 30.0
# From this many crashes in a row (the delay has started doubling), `/readyz` on the other
# workers says the supervisor is backing off (`mirror.workerstatus`); one crash and a 0.5 s
# restart is not worth taking a replica out of a load balancer.
BACKOFF_REPORTED_FROM = 2
# After shutdown_grace, a worker cancels what is still running, then runs the app's clean-up
# (downloads end, temp files go, the ledger is flushed); the supervisor waits this much longer
# for it before it uses SIGKILL.
CLEANUP_MARGIN = 15.0
# How long cancelled requests get to unwind before the app's clean-up starts.
UNWIND_TIMEOUT = 2.0
# Open files a worker needs besides its client connections: blobs being sent, temp files,
# upstream connections, the embedded state.
FD_RESERVE = 256
LISTEN_BACKLOG = 2048

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
REOPEN_SIGNALS = (signal.SIGHUP, signal.SIGUSR1)
# Signals whose default action would end the process, or stop it (TTIN/TTOU, which some
# process managers send to add or remove workers): logged and ignored.
IGNORED_SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        *("SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGPOLL", "SIGPWR"),
        *("SIGTTIN", "SIGTTOU", "SIGXCPU", "SIGXFSZ"),
    )
    if hasattr(signal, name)
)
_PR_SET_PDEATHSIG = 1


def bind_socket(config: Config) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.tls.enabled or config.tls.cert is None or config.tls.key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(config.tls.cert), str(config.tls.key))
    return context


def raise_open_file_limit(max_connections: int) -> int:
    """Raise this process's soft limit of open files to its hard limit (workers inherit it)
    and return how many connections a worker may hold: `max_connections`, lowered with a
    warning when the limit cannot fit them and FD_RESERVE other files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_RESERVE
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    allowed = max(soft - FD_RESERVE, soft // 2)
    log.warning(
        "the open-file limit is %d (hard limit %s): each worker holds at most %d connections "
        "instead of limits.max_connections = %d; raise the hard limit (ulimit -Hn, systemd "
        "LimitNOFILE=, a container's nofile ulimit)",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        allowed,
        max_connections,
    )
    return allowed


def reopen_log_files() -> int:
    """Close every logging FileHandler so that its next record opens the file again (after
    log rotation moved it away); returns how many. Handlers on stderr/stdout have nothing to
    reopen (a rotation there is the job of whatever writes those streams to a file)."""
    loggers = [logging.getLogger()] + [
        item
        for item in logging.root.manager.loggerDict.values()
        if isinstance(item, logging.Logger)
    ]
    handlers = {handler for logger in loggers for handler in logger.handlers}
    files = [handler for handler in handlers if isinstance(handler, logging.FileHandler)]
    for handler in files:
        handler.close()  # FileHandler.emit opens the file again (append mode) when needed
    return len(files)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def serve(config: Config, *, announce: Callable[[str], None] = print) -> int:
    """Run the mirror until TERM, INT or QUIT; return the exit code."""
    directories.prepare(config)  # before anything says it listens
    tls = ssl_context(config)  # here, not in a worker: a bad certificate stops the start
    max_connections = raise_open_file_limit(config.limits.max_connections)
    sock = bind_socket(config)
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    announce(
        f"quarantine-mirror listening on {scheme}://{host}:{port}/ with {config.workers} "
        f"worker(s), data in {config.data_dir}"
        + (f", state in {config.state_dir}" if config.state_dir is not None else "")
    )
    metrics_dir = Path(tempfile.mkdtemp(prefix="mirror-metrics-"))
    # prometheus_client reads this at import time in each worker: set before forking.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    worker = _Worker(config, sock, tls, metrics_dir, max_connections)
    try:
        return _Supervisor(config, worker).run()
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


# the supervisor -------------------------------------------------------------------------


@dataclass
class _Slot:
    """One of the N workers: the process filling it now, or when the next one starts."""

    pid: int | None = None
    started: float = 0.0
    restart_at: float = 0.0
    delay: float = RESTART_DELAY_MIN
    crashes: int = 0  # workers of this slot that died in a row, each soon after starting
    restart_at_wall: float = 0.0  # restart_at on the wall clock, for the workers to report


@dataclass
class _Supervisor:
    config: Config
    worker: _Worker
    slots: list[_Slot] = field(default_factory=list)
    received: list[int] = field(default_factory=list)  # signals not yet handled
    reported: list[workerstatus.Restarting] | None = None  # what the status file says
    status_failed: bool = False

    def run(self) -> int:
        for signum in STOP_SIGNALS + REOPEN_SIGNALS + IGNORED_SIGNALS:
            signal.signal(signum, self._on_signal)
        self.slots = [_Slot() for _ in range(self.config.workers)]
        self._report()  # before any worker reads it: replaces a killed supervisor's file
        stop: int | None = None
        try:
            while stop is None:
                now = time.monotonic()
                for slot in self.slots:
                    if slot.pid is None and now >= slot.restart_at:
                        self._start(slot)
                self._reap(restart=True)
                self._report()
                stop = self._handle_signals()
                if stop is None:
                    time.sleep(0.05)
        finally:
            with contextlib.suppress(OSError):
                workerstatus.path_in(self.config.state_directory).unlink()
        log.info(
            "%s: stopping; requests in flight get up to %.1f s (shutdown_grace)",
            signal.Signals(stop).name,
            self.config.shutdown_grace.total_seconds(),
        )
        self._stop_workers()
        return 0

    def _report(self) -> None:
        """Tell the workers (their `/readyz`) which slots are backing off; the file is
        rewritten only when that changed."""
        restarting = [
            workerstatus.Restarting(worker=number, crashes=slot.crashes, at=slot.restart_at_wall)
            for number, slot in enumerate(self.slots, start=1)
            if slot.pid is None and slot.crashes >= BACKOFF_REPORTED_FROM
        ]
        if restarting == self.reported:
            return
        try:
            workerstatus.write(
                workerstatus.path_in(self.config.state_directory), os.getpid(), restarting
            )
        except OSError as exc:
            if not self.status_failed:
                log.warning("could not write the supervisor status for /readyz: %s", exc)
            self.status_failed = True
            return
        self.status_failed = False
        self.reported = restarting

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)  # handled by the loop: no logging in a signal handler

    def _handle_signals(self) -> int | None:
        """Act on the signals received; the stop signal if one came."""
        while self.received:
            signum = self.received.pop(0)
            name = signal.Signals(signum).name
            if signum in STOP_SIGNALS:
                return signum
            if signum in REOPEN_SIGNALS:
                reopened = reopen_log_files()
                log.info("%s: reopened %d log file(s); nothing else changes", name, reopened)
                self._signal_workers(signum)
            else:
                log.warning(
                    "%s ignored (TERM, INT or QUIT stop the mirror; HUP or USR1 reopen log files)",
                    name,
                )
        return None

    def _start(self, slot: _Slot) -> None:
        try:
            slot.pid = self.worker.spawn()
        except OSError as exc:
            log.error("could not start a worker: %s; trying again in %.1f s", exc, slot.delay)
            slot.crashes += 1
            slot.restart_at = time.monotonic() + slot.delay
            slot.restart_at_wall = time.time() + slot.delay
            slot.delay = min(slot.delay * 2, RESTART_DELAY_MAX)
            return
        slot.started = time.monotonic()

    def _reap(self, *, restart: bool) -> None:
        """Collect every worker that ended; log each once, schedule its replacement."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((slot for slot in self.slots if slot.pid == pid), None)
            if slot is None:
                continue
            slot.pid = None
            if not restart:
                continue
            now = time.monotonic()
            lived = now - slot.started
            if lived >= WORKER_STABLE_AFTER:
                slot.delay = RESTART_DELAY_MIN
                slot.crashes = 0
            slot.crashes += 1
            log.error(
                "worker %d %s after %.1f s; starting a replacement in %.1f s",
                pid,
                _describe_exit(status),
                lived,
                slot.delay,
            )
            slot.restart_at = now + slot.delay
            slot.restart_at_wall = time.time() + slot.delay
            slot.delay = min(slot.delay * 2, RESTART_DELAY_MAX)

    def _signal_workers(self, signum: int) -> None:
        for slot in self.slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    def _stop_workers(self) -> None:
        self._signal_workers(signal.SIGTERM)
        patience = self.config.shutdown_grace.total_seconds() + CLEANUP_MARGIN
        deadline = time.monotonic() + patience
        while any(slot.pid for slot in self.slots) and time.monotonic() < deadline:
            self._reap(restart=False)
            self.received.clear()  # a second TERM changes nothing: the stop is under way
            time.sleep(0.05)
        for slot in self.slots:
            if slot.pid is None:
                continue
            log.error(
                "worker %d still running %.0f s after SIGTERM (shutdown_grace + %.0f s for its "
                "clean-up); killing it with SIGKILL",
                slot.pid,
                patience,
                CLEANUP_MARGIN,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(slot.pid, 0)
            slot.pid = None


def _describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


# a worker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Worker:
    config: Config
    sock: socket.socket
    tls: ssl.SSLContext | None
    metrics_dir: Path
    max_connections: int

    def spawn(self) -> int:
        """Fork a worker; returns its pid in the supervisor, never returns in the worker."""
        parent = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            # Until the loop's handlers are in place: stop at once, ignore the others (the
            # supervisor's Python handlers must not run here).
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            for signum in REOPEN_SIGNALS + IGNORED_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
            watch_parent = not _die_with_parent(parent)
            malloc.tune()
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._serve(parent if watch_parent else None))
            code = 0
        except BaseException:
            logging.getLogger("mirror").exception("worker %d crashed", os.getpid())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    async def _serve(self, watch_parent: int | None) -> None:
        from mirror import hotpath
        from mirror.app import create_app
        from mirror.services import SUPERVISOR_STATUS

        config = self.config
        app = create_app(config, metrics_dir=self.metrics_dir)
        app[SUPERVISOR_STATUS] = workerstatus.StatusFile(
            workerstatus.path_in(config.state_directory), os.getppid()
        )
        gate = ConnectionGate(
            max_connections=self.max_connections,
            max_per_client=config.limits.max_connections_per_client,
            header_timeout=config.limits.header_timeout.total_seconds(),
            trusted_proxies=config.trusted_proxies,
        )
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=config.limits.idle_timeout.total_seconds(),
            # The grace is spent in gate.drain; what is left when aiohttp shuts down is
            # connections that are closing anyway.
            shutdown_timeout=UNWIND_TIMEOUT,
        )
        await runner.setup()
        loop = asyncio.get_running_loop()
        handler_factory = runner.server
        if handler_factory is None:  # set by setup(); a broken runner is a crashed worker
            raise RuntimeError("aiohttp's runner has no server after setup()")
        # In front of the app: the hot path, and outermost the connection gate (a request
        # starts there, however it is answered).
        hotpath.install(runner)
        handler_factory.request_handler = gate.wrap(handler_factory.request_handler)
        server = await loop.create_server(
            gate.protocol_factory(handler_factory),
            sock=self.sock,
            ssl=self.tls,
            backlog=LISTEN_BACKLOG,
            ssl_handshake_timeout=config.limits.header_timeout.total_seconds()
            if self.tls
            else None,
        )
        stop = asyncio.Event()
        stopped_by: list[str] = []

        def request_stop(name: str) -> None:
            if not stopped_by:
                stopped_by.append(name)
            stop.set()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, request_stop, signal.Signals(signum).name)
        for signum in REOPEN_SIGNALS:
            loop.add_signal_handler(signum, reopen_log_files)
        for signum in IGNORED_SIGNALS:
            loop.add_signal_handler(signum, lambda: None)
        watcher = (
            asyncio.create_task(_watch_parent(watch_parent, request_stop))
            if watch_parent is not None
            else None
        )
        stop_trimming = malloc.start_trimming()
        try:
            await stop.wait()
        finally:
            grace = config.shutdown_grace.total_seconds()
            log.info(
                "worker %d stopping (%s): %d request(s) in flight get up to %.1f s",
                os.getpid(),
                stopped_by[0] if stopped_by else "error",
                gate.inflight,
                grace,
            )
            server.close()  # stop accepting; the supervisor and other workers keep the port
            handler_factory.pre_shutdown()  # keep-alive connections close once idle
            await gate.drain(grace, UNWIND_TIMEOUT)
            await runner.cleanup()  # closes what is left, then the app's cleanup_ctx
            if watcher is not None:
                watcher.cancel()
            stop_trimming()
            log.info("worker %d stopped; clean-up done", os.getpid())


def _die_with_parent(parent: int) -> bool:
    """Ask Linux to send this worker SIGTERM when the supervisor dies (even by SIGKILL), so
    no orphan keeps the port. False where that is not available."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the supervisor died before the request took effect
        os._exit(0)
    return True


async def _watch_parent(parent: int, request_stop: Callable[[str], None]) -> None:
    """Where PR_SET_PDEATHSIG is missing: stop when the supervisor is gone."""
    while os.getppid() == parent:  # noqa: ASYNC110 (no event tells a process its parent died)
        await asyncio.sleep(1.0)
    request_stop("the supervisor is gone")
