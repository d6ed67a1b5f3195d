"""The dashboard's overview page (`/ui/`) through the whole app: real package requests through
the mirror to a fake npm registry, the figures read back from shared state, the state's health
(durability warning, unreachable state) and the login it needs."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer
from yarl import URL

from mirror.clock import FixedClock
from mirror.services import SERVICES
from mirror.traffic import size_text
from tests.conftest import free_port
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import NOW, OLD, Client, MakeClient
from tests.integration.dashboard import DASHBOARD_TOKENS, READER, log_in, page

TARBALL = "/npm/left-pad/-/left-pad-1.0.0.tgz"


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(make_mirror, MIRROR_NPM_UPSTREAM=registry.url, **DASHBOARD_TOKENS)


def row_of(html: str, caption: str, window: str) -> str:
    """The text of one window's row in the traffic table of `caption`, tags removed."""
    table = html.split(f"<caption>{caption}", 1)[1].split("</table>", 1)[0]
    row = table.split(f'<th scope="row">{window}</th>', 1)[1].split("</tr>", 1)[0]
    row = re.sub(r"<svg.*?</svg>", " ", row, flags=re.DOTALL)
    return " ".join(re.sub(r"<[^>]+>", " ", row).split())


async def test_a_miss_then_a_hit_shows_two_requests_half_from_the_cache(
    client: Client, registry: FakeNpmRegistry
) -> None:
    first = await client.get(TARBALL)
    assert first.status == 200
    tarball = await first.read()
    second = await client.get(TARBALL)
    assert second.status == 200
    assert await second.read() == tarball
    fetched_upstream = sum(1 for request in registry.requests if request.path.endswith(".tgz"))
    assert fetched_upstream == 1  # the second came from the cache

    await log_in(client)
    html = await page(client, "/ui/")
    for window in ("last hour", "last day"):
        row = row_of(html, "npm", window)
        # Two requests; four lookups (the packument and the tarball, each a miss then a hit).
        assert row.startswith("2 requests 50 % (2 of 4 lookups)"), row
        # From the cache: the cached packument and tarball the second request used; from
        # upstream: what the first one fetched (the packument and the same tarball).
        traffic = await client.app[SERVICES].state.traffic(NOW - timedelta(days=1))
        [count] = traffic
        assert count.bytes_from_cache > len(tarball)
        assert count.bytes_from_upstream > len(tarball)
        assert size_text(count.bytes_from_cache) in row
        assert size_text(count.bytes_from_upstream) in row
    assert row_of(html, "pypi", "last hour").startswith("0 requests - (0 of 0 lookups)")
    # The charts read without the picture: a title on each, a bar with its figure.
    assert '<title id="npm-1-requests">npm requests per 5 minutes, last hour: 2 in all' in html
    assert "npm bytes per 60 minutes, last day:" in html
    assert "10:00 UTC: 2 requests" in html  # the five minutes from NOW
    assert 'role="img"' in html
    assert "style=" not in html
    # State health: reachable, live policy, SQLite persists.
    assert "reachable" in html
    assert "live rules of the shared state" in html
    assert "no warning" in html
    assert "none in the last day" in html  # no upstream failure


async def test_upstream_failures_and_stale_serves_show_with_their_kind(
    client: Client, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    assert (await client.get("/npm/left-pad")).status == 200
    registry.upstream.down()
    clock.advance(timedelta(minutes=10))  # past the metadata TTL: the copy is stale
    # Served stale while a revalidation runs, which fails; then served stale again, because
    # upstream fails (the one the overview counts).
    assert (await client.get("/npm/left-pad")).status == 200
    await client.app[SERVICES].metacache.drain()
    assert (await client.get("/npm/left-pad")).status == 200
    await log_in(client)
    html = await page(client, "/ui/")
    upstream = html.split('id="upstream-health"', 1)[1].split("</table>", 1)[0]
    npm = " ".join(re.sub(r"<[^>]+>", " ", upstream.split('<th scope="row">npm</th>')[1]).split())
    assert npm.startswith("2026-11-22 10:10 UTC http-5xx"), npm
    errors, stale = (int(figure) for figure in npm.split()[4:6])
    assert errors >= 1
    assert stale == 1


async def test_the_page_says_when_the_state_may_lose_everything(
    make_mirror: MakeClient, stoppable_redis: tuple[subprocess.Popen[bytes], str]
) -> None:
    _, url = stoppable_redis  # a redis-server without persistence
    client = await make_mirror(MIRROR_REDIS_URL=url)
    await log_in(client, READER)  # a read-only login sees the overview too
    html = await page(client, "/ui/")
    assert "Durability warning:" in html
    assert "persists nothing" in html
    assert "reachable" in html


async def test_an_unreachable_state_shows_a_notice_not_an_error(make_mirror: MakeClient) -> None:
    client = await make_mirror(MIRROR_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    await log_in(client)
    html = await page(client, "/ui/")  # 200, not a 500
    assert 'role="alert">State unavailable:' in html
    assert "Not known while the state is unavailable." in html
    health = " ".join(re.sub(r"<[^>]+>", " ", html.split('id="state-health"')[1]).split())
    assert "Shared state (redis) unavailable" in health


async def test_a_state_that_never_answers_shows_the_notice_within_the_state_timeout(
    make_mirror: MakeClient,
    stoppable_redis: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, url = stoppable_redis
    client = await make_mirror(MIRROR_REDIS_URL=url, MIRROR_STATE_TIMEOUT="300ms")
    client.app[SERVICES].metrics.traffic.request("npm")  # a count waiting to be written
    await log_in(client)
    process.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    started = time.monotonic()
    html = await page(client, "/ui/")
    took = time.monotonic() - started
    assert 'role="alert">State unavailable: the shared state did not answer within 0.3 s' in html
    assert "Not known while the state is unavailable." in html
    assert took < 1.5, took  # the pre-read write and each read waited 0.3 s at most
    process.send_signal(signal.SIGCONT)


async def test_a_lost_state_shows_the_last_known_policy_in_force(
    make_mirror: MakeClient, tmp_path: Path
) -> None:
    first = await make_mirror()  # a new install: it writes its last-known copy
    await first.close()
    for suffix in ("-wal", "-shm", ""):
        (tmp_path / "data" / f"state.sqlite3{suffix}").unlink(missing_ok=True)
    client = await make_mirror()  # the state is gone: the copy's rules are enforced
    await log_in(client)
    html = await page(client, "/ui/")
    assert "Last-known policy in force (degraded):" in html
    assert "has no identity" in html


async def test_the_overview_needs_a_login(client: Client) -> None:
    response = await client.get("/ui/", allow_redirects=False)
    assert response.status == 303
    assert URL(response.headers["Location"]).path == "/ui/login"
    assert "requests" not in await response.text()
