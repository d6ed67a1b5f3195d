"""The advisory feeds (`feeds.sources`) synced by the server on its schedule: a feed directory
and a zip served over real HTTP on 127.0.0.1 (npm, PyPI and Maven advisories and one of an
ecosystem the mirror does not serve), real npm and PyPI upstreams to see the blocks enforced,
the test's clock moved by an interval instead of waiting for one. A feed that cannot be read
changes nothing; two mirrors syncing one feed at once create each block once."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import zipfile
from datetime import timedelta
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.feeds import LEASE_KEY, FeedSync
from mirror.services import SERVICES
from tests.conftest import wait_until
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.osvfeed import FEED, ROOT, malicious, pypi_range, write_feed, zipped
from tests.fakes.pypi import FakePypiIndex
from tests.fakes.upstream import FakeUpstream
from tests.integration.conftest import OLD, Client, MakeClient

TOKEN = "feeds-admin-token-0123456789"
INTERVAL = timedelta(seconds=1)  # real ticks stay short; the test's clock says when one is due
ZIP_PATH = "/osv/malicious-packages.zip"
SECRET = "feed-password-9876"


# The feed's next version: the npm advisory withdrawn, the PyPI one widened.
FEED_2 = {
    **FEED,
    "npm/evil-npm/MAL-2026-1.json": {
        **FEED["npm/evil-npm/MAL-2026-1.json"],
        "withdrawn": "2026-11-21T00:00:00Z",
    },
    "pypi/evil-py/MAL-2026-2.json": malicious("MAL-2026-2", "PyPI", "evil-py", **pypi_range("2.0")),
}
FIRST_BLOCKS = {
    ("npm", "evil-npm"): "1.0.0",
    ("pypi", "evil-py"): "<1.0",
    ("maven", "org.evil:lib"): "[1.0]",
}


@pytest.fixture
async def npm(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("evil-npm", "1.0.0", published=OLD)
    registry.add_version("evil-npm", "1.1.0", published=OLD)
    registry.add_version("hand-pkg", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
async def pypi(aiohttp_server: AiohttpServer) -> FakePypiIndex:
    index = FakePypiIndex()
    for version in ("0.5", "1.5", "2.5"):
        index.add_wheel("evil-py", version, uploaded=OLD)
    await index.start(aiohttp_server)
    return index


@pytest.fixture
async def feed_server(aiohttp_server: AiohttpServer) -> FakeUpstream:
    server = FakeUpstream()
    server.add(ZIP_PATH, zipped(FEED), content_type="application/zip")
    await server.start(aiohttp_server)
    return server


@pytest.fixture
def make_mirror(make_mirror: MakeClient, npm: FakeNpmRegistry, pypi: FakePypiIndex) -> MakeClient:
    return partial(
        make_mirror,
        MIRROR_NPM_UPSTREAM=npm.url,
        MIRROR_PYPI_UPSTREAM=pypi.url,
        MIRROR_ADMIN_TOKENS=f"ops:{TOKEN}",
        MIRROR_FEEDS_INTERVAL="1s",
    )


@pytest.fixture
def feed_dir(tmp_path: Path) -> Path:
    return write_feed(tmp_path, FEED, "directory")


def url_with_password(server: FakeUpstream) -> str:
    return server.url(ZIP_PATH).replace("://", f"://reader:{SECRET}@", 1)


async def blocks(client: Client) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(ecosystem, package) → (versions, id, reason) of every block the mirror holds."""
    response = await client.get("/api/v1/blocks")
    assert response.status == 200
    listed = (await response.json())["blocks"]
    found = {(b["ecosystem"], b["package"]): (b["versions"], b["id"], b["reason"]) for b in listed}
    assert len(found) == len(listed), f"duplicate blocks: {listed}"
    return found


def specs(held: dict[tuple[str, str], tuple[str, str, str]]) -> dict[tuple[str, str], str]:
    return {key: versions for key, (versions, _, _) in held.items()}


async def verdict(client: Client, ecosystem: str, package: str, version: str) -> str:
    query = {"ecosystem": ecosystem, "package": package, "version": version}
    response = await client.get("/api/v1/explain", params=query)
    assert response.status == 200, await response.text()
    return str((await response.json())["verdict"])


async def audit(client: Client) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = await client.get("/api/v1/audit", params={"actor": "feed"}, headers=headers)
    assert response.status == 200, await response.text()
    return list((await response.json())["entries"])


def syncs(client: Client, outcome: str) -> float:
    registry = client.app[SERVICES].metrics.registry
    return registry.get_sample_value("mirror_feed_syncs_total", {"outcome": outcome}) or 0.0


async def next_sync(client: Client, clock: FixedClock, outcome: str = "synced") -> None:
    """Move the clock by an interval and wait for the mirror's own schedule to sync."""
    before = syncs(client, outcome)
    clock.advance(INTERVAL)
    assert await wait_until(lambda: syncs(client, outcome) > before, 15), f"no {outcome} sync"


# the schedule: blocks appear, are enforced, and a second sync changes nothing -----------------


async def test_a_feed_directory_is_synced_shortly_after_start_and_its_blocks_enforced(
    make_mirror: MakeClient, feed_dir: Path, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mirror")
    assert await verdict(await make_mirror(), "npm", "evil-npm", "1.0.0") == "allowed"
    client = await make_mirror(MIRROR_FEEDS=str(feed_dir))
    # The first sync runs by itself, shortly after start (no clock moved).
    assert await wait_until(lambda: syncs(client, "synced") >= 1, 15)
    held = await blocks(client)
    assert specs(held) == FIRST_BLOCKS
    assert held[("npm", "evil-npm")][2] == "MAL-2026-1: malicious code in evil-npm"
    assert await verdict(client, "npm", "evil-npm", "1.0.0") == "blocked"
    assert await verdict(client, "npm", "evil-npm", "1.1.0") == "allowed"
    assert await verdict(client, "pypi", "evil-py", "0.5") == "blocked"
    assert await verdict(client, "pypi", "evil-py", "1.5") == "allowed"
    response = await client.get("/npm/evil-npm")
    assert set((await response.json())["versions"]) == {"1.1.0"}

    # Each change audited as the feed's, naming the source; and logged once.
    entries = await audit(client)
    assert sorted(entry["action"] for entry in entries) == ["block.create"] * 3
    assert {entry["client"] for entry in entries} == {f"feed {feed_dir}"}
    lines = [r.getMessage() for r in caplog.records if r.name == "mirror.admin"]
    assert len([line for line in lines if line.startswith("block.create")]) == 3
    assert all(f"by feed from feed {feed_dir}" in line for line in lines)
    # The skipped ecosystem is counted: in the log and the metric.
    metrics = client.app[SERVICES].metrics.registry
    assert metrics.get_sample_value("mirror_feed_unsupported_entries") == 1
    assert metrics.get_sample_value("mirror_feed_last_success_timestamp_seconds") == (
        clock.now().timestamp()
    )
    assert any(
        "1 entries of unsupported ecosystems skipped" in r.getMessage() for r in caplog.records
    )

    # Not due again until an interval passed; then the same feed changes nothing.
    await asyncio.sleep(INTERVAL.total_seconds() * 2)
    assert syncs(client, "synced") == 1
    await next_sync(client, clock)
    assert await blocks(client) == held
    assert len(await audit(client)) == 3


# the lifecycle over HTTP: a zip, a second version ----------------------------------------------


async def test_a_zip_feed_over_http_lifts_the_withdrawn_and_widens_the_changed(
    make_mirror: MakeClient,
    feed_server: FakeUpstream,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = url_with_password(feed_server)
    client = await make_mirror(MIRROR_FEEDS=url)
    # Made by hand, its reason naming the advisory the feed withdraws: the feed never owns it.
    hand = {
        "ecosystem": "npm",
        "package": "hand-pkg",
        "versions": "1.0.0",
        "reason": "MAL-2026-1: confirmed by the security team, INC-7",
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.post("/api/v1/blocks", json=hand, headers=headers)).status == 201
    assert await wait_until(lambda: syncs(client, "synced") >= 1, 15)
    first = await blocks(client)
    assert specs(first) == {**FIRST_BLOCKS, ("npm", "hand-pkg"): "1.0.0"}
    # The URL's credentials went to the feed's host, as Basic auth.
    sent = feed_server.last(ZIP_PATH).headers.get("Authorization")
    assert sent == "Basic " + base64.b64encode(f"reader:{SECRET}".encode()).decode()

    feed_server.add(ZIP_PATH, zipped(FEED_2), content_type="application/zip")
    await next_sync(client, clock)
    second = await blocks(client)
    assert specs(second) == {
        ("pypi", "evil-py"): "<2.0",
        ("maven", "org.evil:lib"): "[1.0]",
        ("npm", "hand-pkg"): "1.0.0",
    }
    assert second[("npm", "hand-pkg")] == first[("npm", "hand-pkg")]
    assert second[("maven", "org.evil:lib")] == first[("maven", "org.evil:lib")]
    assert await verdict(client, "npm", "evil-npm", "1.0.0") == "allowed"
    assert await verdict(client, "pypi", "evil-py", "1.5") == "blocked"

    # Creations before deletions, each audited under the feed, named without its password.
    actions = [(entry["action"], entry["target"]) for entry in reversed(await audit(client))]
    widened, lifted_npm, lifted_py = actions[3:]
    assert widened == ("block.create", second[("pypi", "evil-py")][1])
    assert {lifted_npm, lifted_py} == {
        ("block.delete", first[("npm", "evil-npm")][1]),
        ("block.delete", first[("pypi", "evil-py")][1]),
    }
    label = f"feed {feed_server.url(ZIP_PATH)}"
    assert {entry["client"] for entry in await audit(client)} == {label}
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(await audit(client))


# failing closed --------------------------------------------------------------------------------


def break_zip(server: FakeUpstream, how: str) -> None:
    good = zipped(FEED_2)
    if how == "unreachable":
        server.down()
    elif how == "not found":
        server.remove(ZIP_PATH)
    elif how == "truncated in transit":
        server.add(ZIP_PATH, good, content_type="application/zip")
        server.truncate(ZIP_PATH)
    elif how == "cut short":
        server.add(ZIP_PATH, good[: len(good) // 2], content_type="application/zip")
    elif how == "not a zip":
        server.add(ZIP_PATH, b"<html>maintenance</html>", content_type="text/html")
    elif how == "empty zip":
        server.add(ZIP_PATH, zipped({}), content_type="application/zip")
    elif how == "a broken advisory":
        body = BytesIO(good)
        with zipfile.ZipFile(body, "a") as archive:
            archive.writestr(f"{ROOT}/osv/malicious/npm/zz/MAL-9.json", "{not")
        server.add(ZIP_PATH, body.getvalue(), content_type="application/zip")


@pytest.mark.parametrize(
    "how",
    [
        "unreachable",
        "not found",
        "truncated in transit",
        "cut short",
        "not a zip",
        "empty zip",
        "a broken advisory",
    ],
)
async def test_an_unreadable_zip_feed_changes_nothing(
    make_mirror: MakeClient,
    feed_server: FakeUpstream,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    client = await make_mirror(MIRROR_FEEDS=url_with_password(feed_server))
    assert await wait_until(lambda: syncs(client, "synced") >= 1, 15)
    held = await blocks(client)
    # The next version would lift the npm block; broken, it must lift nothing.
    break_zip(feed_server, how)
    caplog.clear()
    await next_sync(client, clock, "failed")
    assert await blocks(client) == held
    assert len(await audit(client)) == 3
    warnings = [r for r in caplog.records if r.name == "mirror.feeds" and r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "nothing changed" in warnings[0].getMessage()
    assert SECRET not in caplog.text
    # Mended, the next interval's sync goes through.
    feed_server.up()
    feed_server.heal(ZIP_PATH)
    feed_server.add(ZIP_PATH, zipped(FEED_2), content_type="application/zip")
    await next_sync(client, clock)
    assert ("npm", "evil-npm") not in await blocks(client)


def break_directory(feed_dir: Path, how: str) -> None:
    """The feed's next version (which would lift the npm block), made unreadable."""
    write_feed(feed_dir.parent, FEED_2, "directory")
    if how == "emptied":
        write_feed(feed_dir.parent, {}, "directory")
    elif how == "removed":
        feed_dir.rename(feed_dir.with_name("gone"))
    elif how == "one file unreadable":
        (feed_dir / "osv" / "malicious" / "npm" / "zz.json").write_text("{trunc", encoding="utf-8")
    else:
        write_feed(feed_dir.parent, {}, "directory")
        (feed_dir / "README.md").write_text("moved elsewhere", encoding="utf-8")


@pytest.mark.parametrize("how", ["emptied", "removed", "one file unreadable", "only a stray file"])
async def test_an_unreadable_feed_directory_changes_nothing(
    make_mirror: MakeClient, feed_dir: Path, clock: FixedClock, how: str
) -> None:
    client = await make_mirror(MIRROR_FEEDS=str(feed_dir))
    assert await wait_until(lambda: syncs(client, "synced") >= 1, 15)
    held = await blocks(client)
    break_directory(feed_dir, how)
    await next_sync(client, clock, "failed")
    assert await blocks(client) == held


# one sync at a time ----------------------------------------------------------------------------


async def test_two_workers_sharing_a_state_sync_once(
    make_mirror: MakeClient, feed_dir: Path, tmp_path: Path
) -> None:
    # Two apps on one data dir: two worker processes of one host (the embedded state).
    first = await make_mirror(MIRROR_FEEDS=str(feed_dir), MIRROR_FEEDS_INTERVAL="1h")
    second = await make_mirror(MIRROR_FEEDS=str(feed_dir), MIRROR_FEEDS_INTERVAL="1h")
    reports = await asyncio.gather(
        *(FeedSync(app.app[SERVICES]).tick() for app in (first, second, first, second))
    )
    assert sorted(report.outcome for report in reports).count("synced") == 1
    assert sum(report.created for report in reports) == 3
    assert specs(await blocks(first)) == FIRST_BLOCKS
    assert len(await audit(first)) == 3


@pytest.fixture
def shared_redis(stoppable_redis: tuple[Any, str]) -> str:
    return stoppable_redis[1]


async def test_two_replicas_on_redis_sync_once_and_a_lost_lease_expires(
    make_mirror: MakeClient, feed_dir: Path, tmp_path: Path, shared_redis: str
) -> None:
    settings = {
        "MIRROR_FEEDS": str(feed_dir),
        "MIRROR_FEEDS_INTERVAL": "1h",
        "MIRROR_REDIS_URL": shared_redis,
    }
    # Two replicas: data dirs (and file locks) of their own, one Redis.
    one = await make_mirror(data_dir=tmp_path / "one", **settings)
    two = await make_mirror(data_dir=tmp_path / "two", **settings)
    state = one.app[SERVICES].state
    # A replica that died holding the lease: it blocks syncing only until the lease expires.
    await state.claim_fetch(LEASE_KEY, "dead-replica", timedelta(seconds=1))
    assert (await FeedSync(two.app[SERVICES]).tick()).outcome == "busy"
    assert await blocks(one) == {}
    await asyncio.sleep(1.2)
    reports = await asyncio.gather(
        *(FeedSync(app.app[SERVICES]).tick() for app in (one, two, one, two))
    )
    assert [report.outcome for report in reports].count("synced") == 1
    assert specs(await blocks(two)) == FIRST_BLOCKS
    # The lease is kept for an interval: the other replica does not sync again meanwhile.
    assert {(await FeedSync(app.app[SERVICES]).tick()).outcome for app in (one, two)} <= {
        "busy",
        "not due",
    }


async def test_a_feed_url_redirecting_to_another_host_is_refused(
    make_mirror: MakeClient, feed_server: FakeUpstream, aiohttp_server: AiohttpServer
) -> None:
    # Each feed URL is an upstream scope of its own host: a redirect off it is not followed
    # (the README says to give the URL the zip is finally served from).
    elsewhere = FakeUpstream()
    await elsewhere.start(aiohttp_server)
    elsewhere.redirect("/moved.zip", feed_server.url(ZIP_PATH))
    client = await make_mirror(MIRROR_FEEDS=elsewhere.url("/moved.zip"))
    report = await FeedSync(client.app[SERVICES]).sync()
    assert report.outcome == "failed"
    assert "redirected moved.zip to a host that is not one of the feed1" in report.error
    assert feed_server.count(ZIP_PATH) == 0
    assert await blocks(client) == {}


async def test_a_replica_stopped_mid_sync_frees_the_lease_at_once(
    make_mirror: MakeClient, feed_server: FakeUpstream, tmp_path: Path, shared_redis: str
) -> None:
    settings = {
        "MIRROR_FEEDS": feed_server.url(ZIP_PATH),
        "MIRROR_FEEDS_INTERVAL": "1h",
        "MIRROR_REDIS_URL": shared_redis,
    }
    one = await make_mirror(data_dir=tmp_path / "one", **settings)
    two = await make_mirror(data_dir=tmp_path / "two", **settings)
    feed_server.hold(ZIP_PATH)
    stopped = asyncio.create_task(FeedSync(one.app[SERVICES]).tick())
    assert await wait_until(lambda: feed_server.count(ZIP_PATH) == 1, 10)
    assert (await FeedSync(two.app[SERVICES]).tick()).outcome == "busy"
    stopped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopped
    feed_server.release(ZIP_PATH)
    assert (await FeedSync(two.app[SERVICES]).tick()).outcome == "synced"
    assert specs(await blocks(one)) == FIRST_BLOCKS
