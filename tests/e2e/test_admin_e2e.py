"""Emergency control end to end: `mirror serve` as real processes — two worker processes on
one port (embedded SQLite state), and two instances sharing a real Redis — with a fake npm
upstream. A block, exemption or freeze added through one worker or instance is enforced by
every other within one second, for metadata and for tarballs cached before the change.
(Exemption expiry with a fixed clock is in tests/integration/test_admin.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.conftest import empty_redis_db
from tests.e2e.conftest import StartMirror
from tests.fakes.npm import FakeNpmRegistry

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token-0123456789"
PACKAGE = "qm-pkg"
PROPAGATION_SECONDS = 1.0
# Concurrent fresh connections per check: with two workers accepting on one socket, both
# answer some of them.
PARALLEL = 12
REDIS_DB = 9  # a database of its own in the session's redis-server, flushed per test

Check = Callable[[aiohttp.ClientSession, str], Awaitable[bool]]


def tarball_path(version: str) -> str:
    return f"/npm/{PACKAGE}/-/{PACKAGE}-{version}.tgz"


@dataclass
class Setup:
    """The base URLs requests go to (each hit by many connections) and the fake upstream."""

    urls: Sequence[str]
    registry: FakeNpmRegistry
    processes: int  # serving processes in all: each fetches a cold file at most once

    @property
    def writer(self) -> str:
        return self.urls[0]


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    now = datetime.now(UTC)
    registry = FakeNpmRegistry()
    registry.add_version(PACKAGE, "1.0.0", published=now - timedelta(days=200))
    registry.add_version(PACKAGE, "1.1.0", published=now - timedelta(days=10))
    registry.add_version(PACKAGE, "1.2.0", published=now - timedelta(hours=5))
    await registry.start(aiohttp_server)
    return registry


def settings(registry: FakeNpmRegistry, **extra: str) -> dict[str, str]:
    return {
        "MIRROR_NPM_UPSTREAM": registry.url,
        "MIRROR_QUARANTINE": "3d",
        "MIRROR_ADMIN_TOKENS": f"secops:{TOKEN}",
        "MIRROR_ACCESS_LOG": "false",
        **extra,
    }


@pytest.fixture
async def two_workers(registry: FakeNpmRegistry, start_mirror: StartMirror) -> Setup:
    mirror = await start_mirror(settings(registry), workers=2)
    return Setup(urls=[mirror.url], registry=registry, processes=2)


@pytest.fixture
async def two_instances_on_redis(
    registry: FakeNpmRegistry, start_mirror: StartMirror, redis_url: str
) -> Setup:
    url = await empty_redis_db(redis_url, REDIS_DB)
    # Each instance has its own data dir (per-pod caches); only the state is shared.
    first = await start_mirror(settings(registry, MIRROR_REDIS_URL=url))
    second = await start_mirror(settings(registry, MIRROR_REDIS_URL=url))
    return Setup(urls=[first.url, second.url], registry=registry, processes=2)


# what clients see ------------------------------------------------------------------------------


async def listed_versions(session: aiohttp.ClientSession, url: str) -> set[str]:
    async with session.get(f"{url}/npm/{PACKAGE}") as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return set(body["versions"])


async def tarball_status(session: aiohttp.ClientSession, url: str, version: str) -> int:
    async with session.get(url + tarball_path(version)) as response:
        await response.read()
        return response.status


def shows(version: str) -> Check:
    async def check(session: aiohttp.ClientSession, url: str) -> bool:
        return version in await listed_versions(session, url) and (
            await tarball_status(session, url, version) == 200
        )

    return check


def hides(version: str, reason: str) -> Check:
    async def check(session: aiohttp.ClientSession, url: str) -> bool:
        if version in await listed_versions(session, url):
            return False
        async with session.get(url + tarball_path(version)) as response:
            if response.status != 403:
                return False
            body = await response.json()
            return bool(body["reason"] == reason)

    return check


async def everywhere(setup: Setup, check: Check) -> bool:
    """`check` holds on every URL for PARALLEL fresh connections each (so on every worker)."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.gather(
            *(check(session, url) for url in setup.urls for _ in range(PARALLEL))
        )
    return all(results)


async def within_a_second(setup: Setup, check: Check) -> float:
    """Poll until `check` holds everywhere; fail unless it does within the propagation bound.
    Then check twice more at once: a worker that was not asked yet must agree too."""
    started = time.monotonic()
    for _ in range(100):  # bounded; the time limit below ends it long before
        if await everywhere(setup, check):
            break
        if time.monotonic() - started > PROPAGATION_SECONDS:
            pytest.fail(f"not applied everywhere within {PROPAGATION_SECONDS} s")
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    assert elapsed <= PROPAGATION_SECONDS, f"took {elapsed:.2f} s"
    # The first success may have reached one worker only (connections land where they
    # land): once the bound has passed, every worker must agree.
    await asyncio.sleep(max(0.0, started + PROPAGATION_SECONDS - time.monotonic()))
    assert await everywhere(setup, check)
    assert await everywhere(setup, check)
    return elapsed


async def admin(method: str, url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{url}/api/v1{path}", json=body, headers=headers) as response,
    ):
        assert response.status in (200, 201), await response.text()
        return await response.json()


async def ledger_shows_a_download(setup: Setup, version: str) -> None:
    """The download ledger is written just after a response: wait for it (bounded)."""
    query = f"/impact?ecosystem=npm&package={PACKAGE}&versions={version}"
    for _ in range(50):
        if (await admin("GET", setup.writer, query))["downloads"]:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"no download of {version} was recorded")


# the scenarios, run on both set-ups ---------------------------------------------------------


async def block_cached_tarball(setup: Setup) -> None:
    # Fill every cache first: each worker/instance serves the tarball once.
    assert await everywhere(setup, shows("1.1.0"))
    upstream_fetches = setup.registry.upstream.count(f"/{PACKAGE}/-/{PACKAGE}-1.1.0.tgz")
    assert 1 <= upstream_fetches <= setup.processes
    await ledger_shows_a_download(setup, "1.1.0")

    created = await admin(
        "POST",
        setup.writer,
        "/blocks",
        {"ecosystem": "npm", "package": PACKAGE, "versions": "1.1.0", "reason": "compromised"},
    )
    assert created["impact"]["clients"] == ["127.0.0.1"]
    await within_a_second(setup, hides("1.1.0", "blocked"))

    await admin("DELETE", setup.urls[-1], f"/blocks/{created['block']['id']}")
    await within_a_second(setup, shows("1.1.0"))
    # served from the caches filled before the block: no new upstream fetch
    assert setup.registry.upstream.count(f"/{PACKAGE}/-/{PACKAGE}-1.1.0.tgz") == upstream_fetches


async def exemption_lets_a_quarantined_version_through(setup: Setup) -> None:
    assert await everywhere(setup, hides("1.2.0", "quarantined"))
    created = await admin(
        "POST",
        setup.writer,
        "/exemptions",
        {"ecosystem": "npm", "package": PACKAGE, "versions": "1.2.0", "reason": "hotfix"},
    )
    expires = datetime.fromisoformat(created["exemption"]["expires_at"])
    assert timedelta(days=2, hours=18) < expires - datetime.now(UTC) <= timedelta(days=2, hours=19)
    await within_a_second(setup, shows("1.2.0"))
    await admin("DELETE", setup.urls[-1], f"/exemptions/{created['exemption']['id']}")
    await within_a_second(setup, hides("1.2.0", "quarantined"))


async def freeze_hides_a_matured_version_newer_than_the_cutoff(setup: Setup) -> None:
    assert await everywhere(setup, shows("1.1.0"))  # 10 days old: past the 3-day age
    created = await admin(
        "POST",
        setup.writer,
        "/freezes",
        {"ecosystem": "npm", "published_after": "20d", "until": "2d", "reason": "worm outbreak"},
    )
    await within_a_second(setup, hides("1.1.0", "quarantined"))
    assert await everywhere(setup, shows("1.0.0"))  # published before the cutoff
    await admin("DELETE", setup.urls[-1], f"/freezes/{created['freeze']['id']}")
    await within_a_second(setup, shows("1.1.0"))


SCENARIOS = [
    block_cached_tarball,
    exemption_lets_a_quarantined_version_through,
    freeze_hides_a_matured_version_newer_than_the_cutoff,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
async def test_two_worker_processes(
    two_workers: Setup, scenario: Callable[[Setup], Awaitable[None]]
) -> None:
    await scenario(two_workers)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
async def test_two_instances_sharing_redis(
    two_instances_on_redis: Setup, scenario: Callable[[Setup], Awaitable[None]]
) -> None:
    await scenario(two_instances_on_redis)


async def test_eight_concurrent_writers_on_redis_never_fail(
    two_instances_on_redis: Setup,
) -> None:
    # An incident: eight writers (people, import-osv, scripts) creating and removing rules on
    # two instances sharing Redis at once. No write fails; every change is audited.
    setup = two_instances_on_redis
    freeze = {"ecosystem": "npm", "package": "*", "published_after": "1d", "until": "1d"}

    async def writer(n: int) -> list[str]:
        url = setup.urls[n % len(setup.urls)]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        created: list[str] = []
        async with aiohttp.ClientSession(headers=headers) as session:
            for pair in range(50):
                body = {**freeze, "reason": f"writer {n} pair {pair}"}
                async with session.post(f"{url}/api/v1/freezes", json=body) as response:
                    assert response.status == 201, await response.text()
                    rule_id = (await response.json())["freeze"]["id"]
                async with session.delete(f"{url}/api/v1/freezes/{rule_id}") as response:
                    assert response.status == 200, await response.text()
                created.append(rule_id)
        return created

    ids = {rule_id for ids in await asyncio.gather(*map(writer, range(8))) for rule_id in ids}
    assert len(ids) == 400
    assert (await admin("GET", setup.urls[1], "/freezes"))["freezes"] == []
    audited: list[tuple[str, str]] = []
    cursor = ""
    for _ in range(10):  # bounded: 800 entries, 1,000 a page
        page = await admin("GET", setup.writer, f"/audit?limit=1000{cursor}")
        audited += [(entry["action"], entry["target"]) for entry in page["entries"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert sorted(audited) == sorted(
        (f"freeze.{action}", rule_id) for rule_id in ids for action in ("create", "delete")
    )
