"""Integration fixtures: the whole app (`create_app`) behind aiohttp's test client, on a fixed
clock, with the MIRROR_* settings of `tests.conftest.mirror_settings`.

A module whose tests need other defaults overrides a fixture by its name and asks for the
shared one under the same name, e.g. an npm upstream for every mirror it makes:

    @pytest.fixture
    def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
        return functools.partial(make_mirror, MIRROR_NPM_UPSTREAM=registry.url)

(settings given at the call still win), or another moment: `def clock() -> FixedClock`.
Modules import the constants and types from here: `from tests.integration.conftest import
NOW, OLD, Client, MakeClient`."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from mirror import hotpath
from mirror.app import create_app
from mirror.clock import FixedClock
from mirror.config import load_config
from mirror.metrics import Metrics
from mirror.services import SERVICES
from mirror.state.base import StateStore
from mirror.state.local import LocalState
from mirror.state.redis import RedisState
from tests.conftest import mirror_settings, wait_until

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)  # the fixed moment of `clock`
OLD = NOW - timedelta(days=200)  # published long before NOW: out of quarantine

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]  # `make_mirror` and the modules' own builders


@pytest.fixture
def clock() -> FixedClock:
    """The clock of every mirror `make_mirror` builds: NOW until a test moves it."""
    return FixedClock(NOW)


@pytest.fixture
def metrics() -> Metrics:
    """Metrics on a registry of this test's own (the default one is process-wide)."""
    return Metrics(CollectorRegistry())


@pytest.fixture
def make_mirror(aiohttp_client: AiohttpClient, tmp_path: Path, clock: FixedClock) -> MakeClient:
    """`make_mirror(data_dir=None, **settings)`: a started test client on a fresh app over
    `mirror_settings(data_dir, **settings)` and the test's `clock`, with the hot path in
    front (`start_mirror`); `data_dir` defaults to
    `tmp_path / "data"`, so mirrors made in one test share disk and state like sibling workers
    or a restart. Stopped at teardown by `aiohttp_client`."""

    async def make(*, data_dir: Path | None = None, **settings: str) -> Client:
        env = mirror_settings(data_dir or tmp_path / "data", **settings)
        return (
            await start_mirror(aiohttp_client, create_app(load_config(None, env), clock=clock))
        )[0]

    return make


async def start_mirror(
    aiohttp_client: AiohttpClient, app: web.Application
) -> tuple[Client, hotpath.HotPath]:
    """A started test client on `app` with the hot path in front, as `mirror serve` runs it:
    every test that asks the same thing twice also checks a replayed answer."""
    client = await aiohttp_client(app)
    runner = client.server.runner
    assert runner is not None
    return client, hotpath.install(runner)


@pytest.fixture
async def client(make_mirror: MakeClient) -> Client:
    """A started mirror with the module's defaults (see `make_mirror`)."""
    return await make_mirror()


# Shared state stores, each backend in turn ---------------------------------------------------

OpenStore = Callable[..., Awaitable[StateStore]]
# The embedded backend's poll interval in state tests: changes are seen quickly.
FAST_POLL = timedelta(milliseconds=50)


def on_backend(
    request: pytest.FixtureRequest, make_mirror: MakeClient, **settings: str
) -> MakeClient:
    """`make_mirror` with `settings` on the backend `request.param` names: "local" (SQLite)
    or "redis" (a redis-server of the test's own, so other tests' data never shows, waited
    for until a copy-less worker stops settling on the brand-new state)."""
    if request.param == "local":
        return functools.partial(make_mirror, **settings)
    _, redis_url = request.getfixturevalue("stoppable_redis")

    async def make(**overrides: str) -> Client:
        client = await make_mirror(**{**settings, "MIRROR_REDIS_URL": redis_url, **overrides})
        assert await wait_until(lambda: client.app[SERVICES].policy.settling is None, 10)
        return client

    return make


@pytest.fixture(params=["local", "redis"])
async def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock
) -> AsyncIterator[OpenStore]:
    """`open_store(**options)`: opens stores of one backend (SQLite, then a real Redis) that
    share one location (file / URL + namespace), like sibling workers or replicas, on the
    test's `clock`; keyword options (retention, caps) go to the backend. Closed at teardown."""
    opened: list[StateStore] = []
    namespace = f"test-{uuid.uuid4().hex}"

    async def build(**options: Any) -> StateStore:
        store: StateStore
        if request.param == "local":
            store = LocalState(
                tmp_path / "state.sqlite3", poll_interval=FAST_POLL, clock=clock, **options
            )
        else:
            url: str = request.getfixturevalue("redis_url")
            store = RedisState(url, namespace=namespace, clock=clock, **options)
        await store.open()
        opened.append(store)
        return store

    yield build
    for store in opened:
        await store.close()


@pytest.fixture
async def state(open_store: OpenStore) -> StateStore:
    """One open store of each backend (see `open_store`)."""
    return await open_store()


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m") -> Iterator[bool]:
    """Create `path` and mount a tmpfs of `size` there when this process may (root; CI runs
    as root): whether it did. A file system of its own that a test can really fill up (the
    kernel answers ENOSPC as on a full volume); unmounted afterwards."""
    path.mkdir(parents=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
        mounted = (
            subprocess.run(mount, capture_output=True, check=False, timeout=30).returncode == 0
        )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    """`path` on a `tmpfs` of `size`, for `fill_disk`; the test skips where none can be
    mounted (not root)."""
    with tmpfs(path, size) as mounted:
        if not mounted:
            pytest.skip("a full disk needs a tmpfs of its own, and mounting one needs root")
        yield path


def fill_disk(disk: Path, leave: int = 0) -> None:
    """Take every free byte of the file system at `disk` (into `disk / "filler"`), then give
    back `leave` bytes (whole pages): writes beyond them fail with ENOSPC."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        for _ in range(16 * 1024):  # 1 GiB at most: bounded, far above any `small_disk`
            out.write(chunk)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
