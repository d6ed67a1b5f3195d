"""The serving benchmark: the mirror against nginx serving the same bytes from disk, in one
run on one machine, so the figures are ratios that survive a small, noisy machine.

    python3 -m bench.run [--seconds 5] [--connections 20] [--workers 2] [--huge-mib 1024]
                         [--hosts 1000] [--install-set 150] [--only install-set|ledger]
                         [--ledger] [--ledger-rows 1000000] [--ledger-runs 5]

Needs `nginx` and `wrk` (Debian packages `nginx-light` and `wrk`). It starts a fake npm
registry on 127.0.0.1 (real tarballs; a small packument, a 2,000-version one, and 50
packages of 4 versions), a fake PyPI index (5 projects), `mirror serve` with N workers on an
empty data dir, and nginx with N workers on a copy of what the mirror serves (the bytes
fetched from the mirror); then it measures:

- cold fetch: upstream requests for one packument and one tarball (target: 1 each), and
  100 concurrent requests for one uncached tarball (target: 1 upstream fetch);
- requests per second of mirror / nginx with wrk (and of a bare aiohttp server), each
  `--seconds` long: one cached tarball, 200 cached tarballs walked in turn by a wrk Lua
  script (targets: >= 30 %), the warm abbreviated and the warm full 2-version packument and
  the warm PyPI simple pages of the 5 projects, walked in turn (targets: >= 25 %), the warm
  2,000-version packument over 20 connections (rate: >= 1/3; mean latency: <= 2x nginx's);
  warm = fetched once through the mirror before the load;
- for each of those runs, the CPU time per request of each server: user + system time of
  its processes (the `mirror serve` parent and its workers, nginx's master and workers,
  the bare aiohttp processes) and all their descendants, read from /proc just before and
  just after the wrk run, over the requests wrk completed (target for the cached
  artifacts: <= 0.04 ms a request);
- the mirror processes' memory while a 1 GiB artifact streams through, cold and cached;
- the growth of the mirror processes' memory after 1,000 requests for the largest packument,
  each with another `Host` (target: < 50 MB; the views are kept for 8 bases at most);
- peak RSS per worker while an install set is replayed against a fresh `mirror serve` with
  default settings: `--install-set N` generated packuments of real-world sizes (1 to 10 MiB
  of JSON each: many versions with full manifests and per-version readme text), each asked
  for as npm does (the corgi form, then one tarball) by 10 concurrent clients, once cold and
  once warm, every worker's RSS sampled every 100 ms (target: <= 200 MB). `--only
  install-set` runs only this measure.
- impact at scale (`bench.ledger`; only with `--ledger` or `--only ledger`, as building the
  ledger takes minutes): `--ledger-rows` rows (default 1,000,000) in SQLite and in a real
  redis-server, then each impact read's median and worst of `--ledger-runs`, in ms.

Every server listens on 127.0.0.1 and every load run is bounded by `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.ledger import main_ledger
from bench.load import (
    STAT_PPID,
    STAT_RSS,
    WrkSummary,
    path_walk_script,
    proc_stats,
    require_tool,
    run_wrk,
    tree_cpu_seconds,
)
from tests.conftest import free_port
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex

REPO = Path(__file__).resolve().parents[1]
CORGI = "application/vnd.npm.install-v1+json"
FULL_PACKUMENT = "application/json"
PIP_ACCEPT = (  # what pip asks a simple index for
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
OLD = datetime.now(UTC) - timedelta(days=400)
BIG_VERSIONS = 2000
BIG_CONNECTIONS = 20  # the 2,000-version packument is measured over 20 connections
ARTIFACT_PACKAGES, ARTIFACT_VERSIONS = 50, 4  # 200 small cached tarballs
PYPI_PROJECTS, PYPI_VERSIONS = 5, 3  # a wheel and an sdist for each version
WARM_CONCURRENCY = 10
COLD_CONCURRENCY = 100
HOST_CONCURRENCY = 10
INSTALL_CONCURRENCY = 10  # npm's default number of sockets per registry
INSTALL_MIN_MIB, INSTALL_MAX_MIB = 1, 10
RSS_SAMPLE_SECONDS = 0.1
REPLAY_TIMEOUT_SECONDS = 900
MIB = 1024 * 1024


@dataclass(frozen=True)
class Served:
    """A server under load: its URL, and the processes whose trees do its work (the `mirror
    serve` parent, whose children are the workers; nginx's master; each bare process)."""

    url: str
    roots: tuple[int, ...]

    @property
    def pid(self) -> int:
        return self.roots[0]


@dataclass(frozen=True)
class Case:
    """One load measure: the paths wrk asks the mirror for and the same bytes' paths on
    nginx and the bare server (more than one: walked in turn by a Lua script), and the
    targets the mirror is held to against nginx."""

    name: str
    mirror_paths: tuple[str, ...]
    static_paths: tuple[str, ...]
    headers: dict[str, str]
    rate_target: float  # mirror/nginx requests per second, at least
    cpu_target_ms: float | None = None  # the mirror's CPU per request, at most
    latency_target: float | None = None  # mirror/nginx mean latency, at most
    connections: int | None = None  # None: --connections


@dataclass(frozen=True)
class ServerRun:
    wrk: WrkSummary
    cpu_seconds: float  # of the server's process trees, over the wrk run

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds * 1e3 / self.wrk.requests if self.wrk.requests else 0.0


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _verdict(met: bool) -> str:
    return "ok" if met else "below target"


@dataclass(frozen=True)
class Measure:
    case: Case
    mirror: ServerRun
    nginx: ServerRun
    bare: ServerRun
    connections: int

    def lines(self) -> list[str]:
        case, mirror, nginx, bare = self.case, self.mirror, self.nginx, self.bare
        rate = _ratio(mirror.wrk.rate, nginx.wrk.rate)
        lines = [
            f"{case.name:<39} mirror/nginx {rate:6.1%} (target >= {case.rate_target:.0%}: "
            f"{_verdict(rate >= case.rate_target)}); mirror/bare aiohttp "
            f"{_ratio(mirror.wrk.rate, bare.wrk.rate):6.1%}   [req/s: mirror "
            f"{mirror.wrk.rate:.0f}, nginx {nginx.wrk.rate:.0f}, bare aiohttp "
            f"{bare.wrk.rate:.0f}; {len(case.mirror_paths)} path(s), {self.connections} "
            "connections]"
        ]
        cpu = (
            f"    CPU per request: mirror {mirror.cpu_ms_per_request:.3f} ms, nginx "
            f"{nginx.cpu_ms_per_request:.3f} ms, bare aiohttp {bare.cpu_ms_per_request:.3f} ms;"
            f" mirror/nginx {_ratio(mirror.cpu_ms_per_request, nginx.cpu_ms_per_request):.1f}x"
        )
        if case.cpu_target_ms is not None:
            met = mirror.cpu_ms_per_request <= case.cpu_target_ms
            cpu += f" (target: mirror <= {case.cpu_target_ms} ms: {_verdict(met)})"
        lines.append(cpu)
        if case.latency_target is not None:
            latency = _ratio(mirror.wrk.latency_ms, nginx.wrk.latency_ms)
            lines.append(
                f"    mean latency: mirror {mirror.wrk.latency_ms:.2f} ms, nginx "
                f"{nginx.wrk.latency_ms:.2f} ms, bare aiohttp {bare.wrk.latency_ms:.2f} ms; "
                f"mirror/nginx {latency:.2f}x (target <= {case.latency_target:g}x: "
                f"{_verdict(latency <= case.latency_target)})"
            )
        return lines


ServeApp = Callable[..., Awaitable[TestServer]]


@contextlib.asynccontextmanager
async def _upstreams() -> AsyncIterator[ServeApp]:
    """What fake upstreams start with (`registry.start(serve)`): each app on a free
    127.0.0.1 port, every one closed on the way out."""
    servers: list[TestServer] = []

    async def serve(app: web.Application, host: str = "127.0.0.1") -> TestServer:
        server = TestServer(app, host=host)
        await server.start_server()
        servers.append(server)
        return server

    try:
        yield serve
    finally:
        for server in servers:
            await server.close()


def _build_registry(huge_mib: int = 0) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    if huge_mib:
        registry.add_version("bench-huge", "1.0.0", published=OLD)
        registry.replace_tarball("bench-huge", "1.0.0", os.urandom(MIB) * huge_mib)
    registry.add_version("bench-small", "1.0.0", published=OLD)
    registry.add_version("bench-small", "1.1.0", published=OLD + timedelta(days=1))
    for index in range(BIG_VERSIONS):
        registry.add_version(
            "bench-big", f"1.{index // 100}.{index % 100}", published=OLD + timedelta(hours=index)
        )
    for name in _artifact_names():
        for minor in range(ARTIFACT_VERSIONS):
            registry.add_version(name, f"1.{minor}.0", published=OLD + timedelta(days=minor))
    return registry


def _artifact_names() -> list[str]:
    return [f"bench-art-{index:02d}" for index in range(ARTIFACT_PACKAGES)]


def _build_pypi() -> FakePypiIndex:
    index = FakePypiIndex()
    for project in range(PYPI_PROJECTS):
        for minor in range(PYPI_VERSIONS):
            uploaded = OLD + timedelta(days=minor)
            index.add_wheel(f"bench-py-{project}", f"1.{minor}.0", uploaded=uploaded)
            index.add_sdist(f"bench-py-{project}", f"1.{minor}.0", uploaded=uploaded)
    return index


@contextlib.asynccontextmanager
async def _mirror(
    registry: FakeNpmRegistry, workers: int, root: Path, pypi: FakePypiIndex | None = None
) -> AsyncIterator[Served]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
    env.update(
        {
            "MIRROR_LISTEN": f"127.0.0.1:{port}",
            "MIRROR_DATA_DIR": str(root / "mirror-data"),
            "MIRROR_WORKERS": str(workers),
            "MIRROR_NPM_UPSTREAM": registry.url,
            "MIRROR_MAVEN_UPSTREAM": "off",
            "MIRROR_ACCESS_LOG": "false",
            "MIRROR_LOG_LEVEL": "WARNING",
        }
    )
    if pypi is not None:
        env["MIRROR_PYPI_UPSTREAM"] = pypi.url
    log = (root / "mirror.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mirror", "serve", "--config", str(REPO / "config/mirror.toml"),
        env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url + "/readyz")
        yield Served(url=url, roots=(process.pid,))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


def _rss_mib(parent: int) -> float:
    """Resident memory of `parent` and its children (the worker processes), in MiB."""
    total = 0
    for pid, fields in proc_stats():
        if pid == parent or int(fields[STAT_PPID]) == parent:
            total += int(fields[STAT_RSS]) * os.sysconf("SC_PAGE_SIZE")  # rss in pages
    return total / MIB


def _worker_rss_mib(parent: int) -> dict[int, float]:
    """Resident memory of each child of `parent` (the worker processes), in MiB by pid."""
    found: dict[int, float] = {}
    for pid, fields in proc_stats():
        if int(fields[STAT_PPID]) == parent:
            found[pid] = int(fields[STAT_RSS]) * os.sysconf("SC_PAGE_SIZE") / MIB
    return found


class WorkerPeaks:
    """Samples every worker's RSS every RSS_SAMPLE_SECONDS while in use; `peak` is the
    highest any one worker reached (a replaced worker counts under its own pid)."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self.by_pid: dict[int, float] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def peak(self) -> float:
        return max(self.by_pid.values(), default=0.0)

    async def _sample(self) -> None:
        while not self._stop.is_set():
            for pid, rss in (await asyncio.to_thread(_worker_rss_mib, self.parent)).items():
                self.by_pid[pid] = max(self.by_pid.get(pid, 0.0), rss)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RSS_SAMPLE_SECONDS)

    async def __aenter__(self) -> WorkerPeaks:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def _stream_huge(
    session: aiohttp.ClientSession, url: str, parent: int, expected: int
) -> tuple[int, float]:
    """Download `url` to nowhere while sampling the mirror's memory; (bytes, peak MiB)."""
    received = 0
    peak = _rss_mib(parent)
    async with session.get(url) as response:
        async for chunk in response.content.iter_chunked(4 * MIB):
            received += len(chunk)
            peak = max(peak, await asyncio.to_thread(_rss_mib, parent))
    if received != expected:
        raise RuntimeError(f"{url}: {received} of {expected} bytes")
    return received, peak


async def _wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not become ready in 10 s")


@contextlib.asynccontextmanager
async def _nginx(root: Path, workers: int) -> AsyncIterator[Served]:
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {root}/nginx-tmp;
    proxy_temp_path {root}/nginx-tmp;
    fastcgi_temp_path {root}/nginx-tmp;
    uwsgi_temp_path {root}/nginx-tmp;
    scgi_temp_path {root}/nginx-tmp;
    types {{ application/json json; application/octet-stream tgz; text/html html; }}
    server {{
        listen 127.0.0.1:{port};
        root {root}/static;
        gzip_static on;
    }}
}}
""",
        encoding="utf-8",
    )
    (root / "nginx-tmp").mkdir(exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        require_tool("nginx"), "-c", str(conf), "-g", "daemon off;", "-e", str(root / "nginx.err")
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url + "/small.json")
        yield Served(url=url, roots=(process.pid,))  # the master; the workers are its children
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def _bare_aiohttp(static: Path, workers: int) -> AsyncIterator[Served]:
    port = free_port()
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bare", str(port), str(static), cwd=str(REPO)
        )
        for _ in range(workers)
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url + "/small.json")
        yield Served(url=url, roots=tuple(process.pid for process in processes))
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _fetch(session: aiohttp.ClientSession, url: str, **headers: str) -> bytes:
    async with session.get(url, headers=headers) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {body[:200]!r}")
        return body


async def _host_flood(
    session: aiohttp.ClientSession, url: str, parent: int, hosts: int
) -> tuple[float, float]:
    """`hosts` GETs of `url`, each with another Host, HOST_CONCURRENCY at a time; the mirror
    processes' memory (MiB) before and after."""
    before = await asyncio.to_thread(_rss_mib, parent)
    limit = asyncio.Semaphore(HOST_CONCURRENCY)

    async def one(index: int) -> None:
        async with limit:
            host = f"bench-{index}.mirror.test"
            async with session.get(url, headers={"Host": host, "Accept": CORGI}) as response:
                body = await response.read()
                if response.status != 200 or f"http://{host}/".encode() not in body:
                    raise RuntimeError(f"{url} for Host {host}: {response.status}")

    await asyncio.gather(*(one(index) for index in range(hosts)))
    return before, await asyncio.to_thread(_rss_mib, parent)


async def _warm(
    session: aiohttp.ClientSession, urls: Sequence[str], headers: dict[str, str]
) -> list[bytes]:
    """Fetch each of `urls` once through the mirror, WARM_CONCURRENCY at a time."""
    limit = asyncio.Semaphore(WARM_CONCURRENCY)

    async def one(url: str) -> bytes:
        async with limit:
            return await _fetch(session, url, **headers)

    return list(await asyncio.gather(*(one(url) for url in urls)))


def _write_static(static: Path, path: str, body: bytes) -> None:
    """`body` where nginx and the bare server serve `path` (a directory's `index.html` for a
    path ending in `/`)."""
    target = static / path.lstrip("/")
    if path.endswith("/"):
        target = target / "index.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)


def _walk_script(paths: Sequence[str], script: Path) -> Path | None:
    """For more than one path, the Lua script that walks them, written to `script`."""
    if len(paths) < 2:
        return None
    script.write_text(path_walk_script(paths), encoding="utf-8")
    return script


async def _load(
    server: Served,
    paths: Sequence[str],
    headers: dict[str, str],
    seconds: int,
    connections: int,
    script: Path,
) -> ServerRun:
    """One wrk run against `server` (more than one path: walked by a Lua script written to
    `script`), with the CPU its process trees spent from just before to just after it."""
    walk = _walk_script(paths, script)
    before = await asyncio.to_thread(tree_cpu_seconds, server.roots)
    summary = await run_wrk(server.url + paths[0], seconds, connections, headers, walk)
    after = await asyncio.to_thread(tree_cpu_seconds, server.roots)
    return ServerRun(wrk=summary, cpu_seconds=after - before)


async def run(
    seconds: int, connections: int, workers: int, huge_mib: int, hosts: int = 1000
) -> list[str]:
    report: list[str] = []
    registry = _build_registry(huge_mib)
    pypi = _build_pypi()
    async with contextlib.AsyncExitStack() as stack:
        serve = await stack.enter_async_context(_upstreams())
        await registry.start(serve)
        await pypi.start(serve)
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qm-bench-")))
        static = _readable_dirs(root)
        server = await stack.enter_async_context(_mirror(registry, workers, root, pypi))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        mirror = server.url
        upstream = registry.upstream
        # cold: one upstream request per document and per file
        small = await _fetch(session, f"{mirror}/npm/bench-small", Accept=CORGI)
        tarball_path = registry.tarball_path("bench-small", "1.1.0")
        tarball = await _fetch(session, f"{mirror}/npm{tarball_path}")
        report.append(
            "cold fetch: upstream requests for a packument "
            f"{upstream.count(registry.packument_path('bench-small'))}, for a tarball "
            f"{upstream.count(tarball_path)} (target: 1 and 1)"
        )
        cold_path = registry.tarball_path("bench-small", "1.0.0")
        bodies = await asyncio.gather(
            *(_fetch(session, f"{mirror}/npm{cold_path}") for _ in range(COLD_CONCURRENCY))
        )
        expected = registry.version("bench-small", "1.0.0").tarball
        correct = sum(body == expected for body in bodies)
        report.append(
            f"{COLD_CONCURRENCY} concurrent misses for one tarball over {workers} worker "
            f"processes: {upstream.count(cold_path)} upstream fetch(es) (target: 1); "
            f"{correct}/{COLD_CONCURRENCY} bodies correct"
        )
        # warm: every document and file of the load runs fetched once through the mirror;
        # nginx and the bare server serve the bytes the mirror answered
        big = await _fetch(session, f"{mirror}/npm/bench-big", Accept=CORGI)
        full = await _fetch(session, f"{mirror}/npm/bench-small", Accept=FULL_PACKUMENT)
        for path, body in (
            ("/small.json", small), ("/full.json", full), ("/big.json", big),
            ("/file.tgz", tarball),
        ):  # fmt: skip
            _write_static(static, path, body)
        artifacts = [
            registry.tarball_path(name, version)
            for name in _artifact_names()
            for version in registry.packages[name].versions
        ]
        artifact_paths = tuple(f"/npm{path}" for path in artifacts)
        artifact_bodies = await _warm(session, [mirror + path for path in artifact_paths], {})
        for path, served, body in zip(artifacts, artifact_paths, artifact_bodies, strict=True):
            name = path.split("/-/", 1)[0].lstrip("/")
            version = path.rsplit("-", 1)[1].removesuffix(".tgz")
            if body != registry.version(name, version).tarball:
                raise RuntimeError(f"{served}: the mirror's bytes are not the upstream's")
            _write_static(static, served, body)
        page_paths = tuple(f"/pypi/simple/{project}/" for project in sorted(pypi.files))
        pages = await _warm(session, [mirror + path for path in page_paths], {"Accept": PIP_ACCEPT})
        for path, body in zip(page_paths, pages, strict=True):
            _write_static(static, path, body)
        upstream_before_load = len(upstream.requests) + len(pypi.requests)
        cases = [
            Case("cached tarball (one)", (f"/npm{tarball_path}",), ("/file.tgz",), {}, 0.30,
                 cpu_target_ms=0.04),
            Case(f"cached artifacts ({len(artifact_paths)} tarballs)", artifact_paths,
                 artifact_paths, {}, 0.30, cpu_target_ms=0.04),
            Case("warm abbreviated packument (2 versions)", ("/npm/bench-small",),
                 ("/small.json",), {"Accept": CORGI}, 0.25),
            Case("warm full packument (2 versions)", ("/npm/bench-small",), ("/full.json",),
                 {"Accept": FULL_PACKUMENT}, 0.25),
            Case(f"warm packument ({BIG_VERSIONS} versions)", ("/npm/bench-big",),
                 ("/big.json",), {"Accept": CORGI}, 1 / 3, latency_target=2.0,
                 connections=BIG_CONNECTIONS),
            Case(f"warm simple pages ({len(page_paths)} projects)", page_paths, page_paths,
                 {"Accept": PIP_ACCEPT}, 0.25),
        ]  # fmt: skip
        measures: list[Measure] = []
        async with _nginx(root, workers) as nginx, _bare_aiohttp(static, workers) as bare:
            for number, case in enumerate(cases):
                clients = case.connections or connections
                script = root / f"walk-{number}.lua"
                runs = [
                    await _load(target, paths, case.headers, seconds, clients, script)
                    for target, paths in (
                        (nginx, case.static_paths), (bare, case.static_paths),
                        (server, case.mirror_paths),
                    )
                ]  # fmt: skip
                measures.append(Measure(case, runs[2], runs[0], runs[1], clients))
        for measure in measures:
            report.extend(measure.lines())
        report.append(
            "upstream requests during the load runs: "
            f"{len(upstream.requests) + len(pypi.requests) - upstream_before_load} (target: 0)"
        )
        if huge_mib:
            huge = f"{mirror}/npm{registry.tarball_path('bench-huge', '1.0.0')}"
            before = await asyncio.to_thread(_rss_mib, server.pid)
            for phase in ("miss (streamed while stored)", "hit (sendfile)"):
                _, peak = await _stream_huge(session, huge, server.pid, huge_mib * MIB)
                report.append(
                    f"{huge_mib} MiB artifact, {phase}: mirror processes' memory "
                    f"{before:.0f} MiB before, {peak:.0f} MiB at peak "
                    f"(target: flat, < 150 MB per worker)"
                )
        if hosts:
            before, after = await _host_flood(session, f"{mirror}/npm/bench-big", server.pid, hosts)
            report.append(
                f"{hosts} distinct Host values on the {BIG_VERSIONS}-version packument "
                f"({len(big) / MIB:.1f} MiB corgi): mirror processes' memory {before:.0f} → "
                f"{after:.0f} MiB, growth {after - before:.0f} MiB (target: < 50 MB)"
            )
    return report


def _install_set_registry(count: int) -> FakeNpmRegistry:
    """`count` packages whose full packuments grow evenly from INSTALL_MIN_MIB to
    INSTALL_MAX_MIB of JSON: versions with the manifests real packages carry (dependencies,
    devDependencies, scripts, people, repository, a few KB of readme text per version, as
    older publishes have), each with a real tarball. Built before the registry starts, so
    each packument is serialised once."""
    registry = FakeNpmRegistry()
    names = [f"install-set-{index:04d}" for index in range(count)]
    for index, name in enumerate(names):
        share = index / (count - 1) if count > 1 else 0.0
        target = (INSTALL_MIN_MIB + share * (INSTALL_MAX_MIB - INSTALL_MIN_MIB)) * MIB
        text = _manifest_text(name, index)
        dependencies = {names[(index + step) % count]: f"^{step}.0.0" for step in range(1, 9)}
        per_version = len(json.dumps(text)) + 900  # plus name, version, dist, _id ...
        for number in range(max(1, round(target / per_version))):
            version = f"{number // 100}.{(number // 10) % 10}.{number % 10}"
            registry.add_version(
                name,
                version,
                published=OLD + timedelta(hours=number),
                dependencies=dependencies,
                extra={**text, "gitHead": f"{index:08x}{number:032x}"},
            )
    return registry


def _manifest_text(name: str, seed: int) -> dict[str, Any]:
    """The text fields of one package's manifests, shared by its versions (as they mostly
    are): about 6 KB of JSON, half of it readme."""
    words = [f"word{(seed * 7 + step * 13) % 997}" for step in range(420)]
    readme = f"# {name}\n\n" + "\n\n".join(
        " ".join(words[start : start + 60]) for start in range(0, len(words), 60)
    )
    people = [{"name": f"maintainer{k}", "email": f"m{k}@example.com"} for k in range(4)]
    return {
        "description": f"{name}: a package of the benchmark's install set",
        "keywords": [f"keyword{k}" for k in range(12)],
        "homepage": f"https://example.com/{name}#readme",
        "repository": {"type": "git", "url": f"git+https://example.com/{name}.git"},
        "bugs": {"url": f"https://example.com/{name}/issues"},
        "author": people[0],
        "maintainers": people,
        "contributors": people,
        "scripts": {script: f"node scripts/{script}.js --flag" for script in
                    ("build", "test", "lint", "prepare", "prepublishOnly", "coverage")},
        "devDependencies": {f"dev-tool-{k}": f"^{k}.{k}.0" for k in range(30)},
        "engines": {"node": ">=14"},
        "files": ["index.js", "lib/", "types/"],
        "types": "types/index.d.ts",
        "_npmUser": people[1],
        "_nodeVersion": "20.11.1",
        "directories": {},
        "readme": readme,
        "readmeFilename": "README.md",
    }  # fmt: skip


async def _replay_install(
    session: aiohttp.ClientSession, mirror: str, names: list[str]
) -> tuple[int, int]:
    """Ask the mirror for every package as npm does: the corgi packument, then the tarball of
    its `latest`, INSTALL_CONCURRENCY at a time; (packument bytes, tarballs) received."""
    limit = asyncio.Semaphore(INSTALL_CONCURRENCY)
    received = [0, 0]

    async def one(name: str) -> None:
        async with limit:
            packument = await _fetch(session, f"{mirror}/npm/{name}", Accept=CORGI)
            document = json.loads(packument)
            latest = document["dist-tags"]["latest"]
            tarball = document["versions"][latest]["dist"]["tarball"]
            if not tarball.startswith(mirror):
                raise RuntimeError(f"{name}: tarball URL {tarball} is not the mirror's")
            await _fetch(session, tarball)
            received[0] += len(packument)
            received[1] += 1

    async with asyncio.timeout(REPLAY_TIMEOUT_SECONDS):
        await asyncio.gather(*(one(name) for name in names))
    return received[0], received[1]


async def run_install_set(count: int, workers: int) -> list[str]:
    started = time.monotonic()
    registry = _install_set_registry(count)
    phases: list[str] = []
    async with _upstreams() as serve:
        await registry.start(serve)
        names = list(registry.packages)
        # The bodies the fake serves: what the packuments weigh on the wire, uncompressed.
        full_sizes = [
            len(registry.upstream._routes[registry.packument_path(name)].body) for name in names
        ]
        built = time.monotonic() - started
        with tempfile.TemporaryDirectory(prefix="qm-bench-install-") as tmp:
            root = Path(tmp)
            async with (
                _mirror(registry, workers, root) as server,
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=INSTALL_CONCURRENCY)
                ) as session,
                WorkerPeaks(server.pid) as overall,
            ):
                idle = max(_worker_rss_mib(server.pid).values(), default=0.0)
                for phase in ("cold", "warm"):
                    upstream_before = len(registry.upstream.requests)
                    phase_started = time.monotonic()
                    async with WorkerPeaks(server.pid) as peaks:
                        corgi_bytes, tarballs = await _replay_install(session, server.url, names)
                    took = time.monotonic() - phase_started
                    phases.append(
                        f"{phase} {peaks.peak:.0f} MiB in {took:.0f} s, "
                        f"{len(registry.upstream.requests) - upstream_before} upstream requests"
                    )
                    if tarballs != len(names):
                        raise RuntimeError(f"{phase}: {tarballs} of {len(names)} tarballs")
    verdict = "ok" if overall.peak * MIB <= 200e6 else "above target"
    return [
        f"install set ({count} packuments, {INSTALL_MIN_MIB}-{INSTALL_MAX_MIB} MB): peak RSS "
        f"per worker {overall.peak:.0f} MiB (target: <= 200 MB: {verdict})   "
        f"[idle {idle:.0f} MiB; {'; '.join(phases)}; "
        f"{sum(full_sizes) / MIB:.0f} MiB of full packuments, "
        f"{corgi_bytes / MIB:.0f} MiB of corgi per pass, {len(overall.by_pid)} worker pid(s), "
        f"generated in {built:.0f} s]"
    ]


def _readable_dirs(root: Path) -> Path:
    # nginx started by root serves as an unprivileged user: it must be able to read.
    root.chmod(0o755)
    static = root / "static"
    static.mkdir(mode=0o755)
    return static


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each load run")
    parser.add_argument("--connections", type=int, default=20, help="parallel clients")
    parser.add_argument("--workers", type=int, default=2, help="mirror and nginx workers")
    parser.add_argument(
        "--huge-mib", type=int, default=1024, help="size of the streamed artifact (0: skip)"
    )
    parser.add_argument(
        "--hosts", type=int, default=1000, help="distinct Host values for one packument (0: skip)"
    )
    parser.add_argument(
        "--install-set",
        type=int,
        default=150,
        help="packuments (1-10 MiB each) replayed for the peak RSS per worker (0: skip)",
    )
    parser.add_argument(
        "--only",
        choices=["install-set", "ledger"],
        help="run only this measure (default: all of them but the ledger)",
    )
    parser.add_argument(
        "--ledger", action="store_true", help="also measure impact reads on a big ledger"
    )
    parser.add_argument(
        "--ledger-rows",
        type=int,
        default=1_000_000,
        help="ledger rows for the impact measure (default 1,000,000; 0: skip)",
    )
    parser.add_argument(
        "--ledger-runs", type=int, default=5, help="runs of each impact read (median, worst)"
    )
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    lines: list[str] = []
    if args.only is None:
        lines += asyncio.run(
            run(args.seconds, args.connections, args.workers, args.huge_mib, args.hosts)
        )
    if args.install_set > 0 and args.only in (None, "install-set"):
        # A fresh mirror and registry: the earlier measures' memory is not counted.
        lines += asyncio.run(run_install_set(args.install_set, args.workers))
    if (args.ledger or args.only == "ledger") and args.ledger_rows > 0:
        lines += main_ledger(args.ledger_rows, args.ledger_runs)
    print(f"quarantine-mirror benchmark, {started:%Y-%m-%d %H:%M}Z, {os.cpu_count()} CPUs")
    for line in lines:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
