"""The advisory feed synced by a real `mirror serve` with several worker processes: the feed
zip served over HTTP on 127.0.0.1 (credentials in its URL), blocks appear shortly after
start, each once whichever worker synced, are audited as the feed's, and the feed's next
version (one advisory withdrawn) is applied at the next interval."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import RunningMirror, StartMirror
from tests.e2e.test_cli import TOKEN, Cli
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.osvfeed import FEED, zipped
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

ZIP = "/feeds/malicious-packages.zip"
PASSWORD = "zip-password-31415"


async def blocks(cli: Cli) -> list[dict[str, Any]]:
    listed = await cli("blocks", "--json")
    assert listed.code == 0, listed.err
    return list(listed.json()["blocks"])


async def synced(mirror: RunningMirror) -> float:
    """mirror_feed_syncs_total{outcome="synced"}, summed over the worker processes."""
    async with aiohttp.ClientSession() as session, session.get(f"{mirror.url}/metrics") as got:
        text = await got.text()

    found = re.search(r'^mirror_feed_syncs_total\{outcome="synced"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def wait_for(condition: Any, seconds: float) -> bool:
    for _ in range(int(seconds * 4)):  # bounded
        if await condition():
            return True
        await asyncio.sleep(0.25)
    return bool(await condition())


async def test_three_workers_sync_a_feed_url_once_per_interval(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror
) -> None:
    npm = FakeNpmRegistry()
    npm.add_version("evil-npm", "1.0.0", published=datetime.now(UTC) - timedelta(days=100))
    await npm.start(aiohttp_server)
    feed = FakeUpstream()
    feed.add(ZIP, zipped(FEED), content_type="application/zip")
    await feed.start(aiohttp_server)
    url = feed.url(ZIP).replace("://", f"://reader:{PASSWORD}@", 1)
    mirror = await start_mirror(
        {
            "MIRROR_NPM_UPSTREAM": npm.url,
            "MIRROR_ADMIN_TOKENS": f"ops:{TOKEN}",
            "MIRROR_FEEDS": url,
            "MIRROR_FEEDS_INTERVAL": "4s",
        },
        workers=3,
    )
    cli = Cli(mirror)

    async def three_blocks() -> bool:
        return len(await blocks(cli)) >= 3

    assert await wait_for(three_blocks, 30), mirror.log()
    held = await blocks(cli)
    assert sorted((b["ecosystem"], b["package"], b["versions"]) for b in held) == [
        ("maven", "org.evil:lib", "[1.0]"),
        ("npm", "evil-npm", "1.0.0"),
        ("pypi", "evil-py", "<1.0"),
    ]
    explained = await cli("explain", "npm", "evil-npm@1.0.0", "--json")
    assert explained.json()["verdict"] == "blocked", explained.out

    # The next version withdraws the npm advisory: lifted at a next interval, by one worker.
    withdrawn = dict(FEED)
    withdrawn["npm/evil-npm/MAL-2026-1.json"] = {
        **FEED["npm/evil-npm/MAL-2026-1.json"],
        "withdrawn": "2026-11-30T00:00:00Z",
    }
    feed.add(ZIP, zipped(withdrawn), content_type="application/zip")

    async def lifted() -> bool:
        return len(await blocks(cli)) == 2

    assert await wait_for(lifted, 30), mirror.log()
    audit = (await cli("audit", "--json", "--actor", "feed")).json()["entries"]
    assert sorted(entry["action"] for entry in audit) == ["block.create"] * 3 + ["block.delete"]
    assert {entry["client"] for entry in audit} == {f"feed {feed.url(ZIP)}"}
    # Several intervals passed with three workers ticking: far fewer syncs than ticks, and
    # the feed's host saw one download per sync.
    count = await synced(mirror)
    assert 2 <= count == len([r for r in feed.requests if r.path == ZIP])
    assert feed.requests[0].headers["Authorization"].startswith("Basic ")
    assert PASSWORD not in mirror.log()
