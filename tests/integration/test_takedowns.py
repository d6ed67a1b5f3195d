"""Takedowns through the whole app, against fake upstreams on 127.0.0.1 and both state
backends: an upstream that stops offering a version (or a PyPI file), or yanks one, is
recorded once with who had downloaded it, counted, posted to the webhook (a test server on
127.0.0.1; a failing one retried and counted) and no longer served."""

from __future__ import annotations

import logging
import signal
import subprocess
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from mirror import policy, takedowns, takedownwatch
from mirror.clock import FixedClock
from mirror.model import TakedownEvent
from mirror.services import SERVICES, Services
from mirror.state.redis import RedisState
from mirror.webhook import Webhook
from tests.conftest import wait_until
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, Client, MakeClient, on_backend

TTL = timedelta(minutes=1)
PAST_STALE = timedelta(minutes=5)  # past MIRROR_CACHE_STALE_MAX: the next request refetches
TARBALL = "/npm/left-pad/-/left-pad-1.3.1.tgz"


@dataclass
class WebhookServer:
    """A webhook receiver on 127.0.0.1: records each JSON body; answers `status`."""

    url: str = ""
    status: int = 204
    received: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0


@pytest.fixture
async def hook(aiohttp_server: AiohttpServer) -> WebhookServer:
    server = WebhookServer()

    async def receive(request: web.Request) -> web.Response:
        server.attempts += 1
        if server.status < 300:
            server.received.append(await request.json())
        return web.Response(status=server.status)

    app = web.Application()
    app.router.add_post("/hooks/secret-key", receive)
    running = await aiohttp_server(app, host="127.0.0.1")
    server.url = str(running.make_url("/hooks/secret-key"))
    return server


@pytest.fixture(params=["local", "redis"])
def make_mirror(
    request: pytest.FixtureRequest, make_mirror: MakeClient, hook: WebhookServer
) -> MakeClient:
    """Mirrors with a short metadata TTL, 127.0.0.1 as the trusted proxy (the test names
    clients with X-Forwarded-For), the webhook, and each state backend in turn."""
    settings: dict[str, str] = {
        "MIRROR_CACHE_METADATA_TTL": "1m",
        "MIRROR_CACHE_STALE_MAX": "2m",
        "MIRROR_TRUSTED_PROXIES": "127.0.0.1",
        "MIRROR_TAKEDOWNS_WEBHOOK": hook.url,
    }
    return on_backend(request, make_mirror, **settings)


async def refreshed(client: Client, clock: FixedClock, path: str) -> int:
    """Ask for `path` once its copy is too old to serve stale: fetched from upstream in the
    foreground, the takedown checks it schedules and their deliveries waited for."""
    clock.advance(PAST_STALE)
    response = await client.get(path)
    await response.read()
    await client.app[SERVICES].takedowns.drain()
    return response.status


async def events(services: Services) -> list[TakedownEvent]:
    return await services.state.events(limit=100)


def count(services: Services, ecosystem: str, kind: str) -> float:
    value = services.metrics.registry.get_sample_value(
        "mirror_takedowns_total", {"ecosystem": ecosystem, "kind": kind}
    )
    return value or 0.0


# npm -------------------------------------------------------------------------------------


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.3.0", published=OLD)
    registry.add_version("left-pad", "1.3.1", published=OLD + timedelta(days=1))
    await registry.start(aiohttp_server)
    return registry


async def test_an_unpublished_version_is_one_event_naming_who_pulled_it(
    make_mirror: MakeClient,
    registry: FakeNpmRegistry,
    hook: WebhookServer,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    services = client.app[SERVICES]
    for address in ("10.1.0.7", "10.1.0.8", "10.1.0.7"):
        response = await client.get(TARBALL, headers={"X-Forwarded-For": address})
        assert response.status == 200
        await response.read()
    other = await client.get(
        "/npm/left-pad/-/left-pad-1.3.0.tgz", headers={"X-Forwarded-For": "10.9.9.9"}
    )
    assert other.status == 200

    registry.remove_version("left-pad", "1.3.1")
    with caplog.at_level(logging.WARNING, logger="mirror.takedownwatch"):
        assert await refreshed(client, clock, "/npm/left-pad") == 200

    [event] = await events(services)
    assert (event.ecosystem, event.package, event.version, event.kind) == (
        "npm",
        "left-pad",
        "1.3.1",
        "removed",
    )
    assert event.detected_at == clock.now()
    assert (event.clients, event.downloads) == (2, 3)
    assert sorted((row.client, row.count) for row in event.impact) == [
        ("10.1.0.7", 2),
        ("10.1.0.8", 1),
    ]
    # The webhook got the event as the API shows it; the log line names it once, without
    # the webhook's URL.
    assert hook.received == [takedowns.event_to_json(event)]
    lines = [r.getMessage() for r in caplog.records if "takedown:" in r.getMessage()]
    assert lines == [
        "takedown: npm left-pad@1.3.1 removed upstream; 2 clients had downloaded it "
        "(3 downloads): 10.1.0.7, 10.1.0.8"
    ]
    assert "secret-key" not in caplog.text
    assert count(services, "npm", "removed") == 1

    # Refreshed again (new bytes again, still without 1.3.1): still the one event.
    registry.set_dist_tag("left-pad", "beta", "1.3.0")
    assert await refreshed(client, clock, "/npm/left-pad") == 200
    assert [e.id for e in await events(services)] == [event.id]
    assert len(hook.received) == 1
    assert count(services, "npm", "removed") == 1

    # No longer served, though its bytes are in the cache: neither the tarball nor the
    # version document; the version left stays.
    tarball = await client.get(TARBALL)
    assert tarball.status == 404
    assert "left-pad-1.3.1.tgz" in (await tarball.json())["error"]
    assert (await client.get("/npm/left-pad/1.3.1")).status == 404
    body = await (await client.get("/npm/left-pad")).json()
    assert list(body["versions"]) == ["1.3.0"]
    assert (await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")).status == 200

    # And blocked, exactly that version, by `takedowns`, audited: every worker refuses it.
    [block] = await services.state.list_rules("block")
    assert (block.package, block.versions, block.created_by) == (
        "left-pad",
        "===1.3.1",
        "takedowns",
    )
    assert block.reason == f"removed upstream (takedown {event.id})"
    [entry] = await services.state.audit_log(limit=10)
    assert (entry.action, entry.actor, entry.target) == ("block.create", "takedowns", block.id)
    decision = services.policy.decide(policy.Subject("npm", "left-pad", "1.3.1"), OLD)
    assert decision.verdict == policy.Verdict.BLOCKED


async def test_a_worker_still_holding_the_old_copy_refuses_the_removed_version(
    make_mirror: MakeClient, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    first = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    second = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url, MIRROR_CACHE_METADATA_TTL="1h")
    for client in (first, second):
        response = await client.get(TARBALL)
        assert response.status == 200
        await response.read()
    registry.remove_version("left-pad", "1.3.1")
    assert await refreshed(first, clock, "/npm/left-pad") == 200
    # The second still holds the packument that lists 1.3.1 and the tarball's bytes; the
    # block reaches it (here at once; a running worker polls the state).
    await second.app[SERVICES].policy.reload()
    refused = await second.get(TARBALL)
    assert refused.status == 403
    assert (await refused.json())["reason"] == "blocked"
    assert len(await second.app[SERVICES].state.list_rules("block")) == 1


async def test_a_second_mirror_on_the_same_state_records_no_second_event(
    make_mirror: MakeClient, registry: FakeNpmRegistry, hook: WebhookServer, clock: FixedClock
) -> None:
    # Two workers (or replicas) on one state both held the packument: one event, one post.
    first = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    second = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    for client in (first, second):
        assert (await client.get("/npm/left-pad")).status == 200
    registry.remove_version("left-pad", "1.3.1")
    clock.advance(PAST_STALE)
    for client in (first, second):
        assert (await client.get("/npm/left-pad")).status == 200
        await client.app[SERVICES].takedowns.drain()
    assert len(await events(first.app[SERVICES])) == 1
    assert len(hook.received) == 1


async def test_a_whole_package_unpublished_is_an_event_per_version(
    make_mirror: MakeClient, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    assert (await client.get("/npm/left-pad")).status == 200
    registry.remove_package("left-pad")
    assert await refreshed(client, clock, "/npm/left-pad") == 404
    found = await events(client.app[SERVICES])
    assert sorted((e.version, e.kind) for e in found) == [
        ("1.3.0", "removed"),
        ("1.3.1", "removed"),
    ]


async def test_a_failing_webhook_is_retried_then_counted(
    make_mirror: MakeClient,
    registry: FakeNpmRegistry,
    hook: WebhookServer,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook.status = 500
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    services = client.app[SERVICES]
    assert (await client.get("/npm/left-pad")).status == 200
    registry.remove_version("left-pad", "1.3.1")
    with caplog.at_level(logging.WARNING):
        assert await refreshed(client, clock, "/npm/left-pad") == 200
    assert hook.attempts == 3
    assert services.metrics.registry.get_sample_value("mirror_takedown_webhook_failures_total") == 1
    assert "takedown webhook: a delivery failed: HTTP 500 (3 attempts)" in caplog.text
    assert "secret-key" not in caplog.text
    assert len(await events(services)) == 1  # the event is recorded all the same


async def test_a_hostile_upstream_dropping_thousands_of_versions_is_bounded(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer, hook: WebhookServer, clock: FixedClock
) -> None:
    registry = FakeNpmRegistry()
    for minor in range(5000):
        registry.add_version("huge", f"1.{minor}.0", published=OLD)
    registry.add_version("huge", "2.0.0", published=OLD)
    await registry.start(aiohttp_server)
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    assert (await client.get("/npm/huge")).status == 200
    for minor in range(5000):
        del registry.packages["huge"].versions[f"1.{minor}.0"]
    registry.set_dist_tag("huge", "latest", "2.0.0")
    assert await refreshed(client, clock, "/npm/huge") == 200
    found = await events(client.app[SERVICES])
    assert len(found) == takedowns.MAX_PER_DOCUMENT
    assert len(hook.received) == takedowns.MAX_PER_DOCUMENT


# PyPI ------------------------------------------------------------------------------------

WHEEL = "demo-1.1-py3-none-any.whl"
OLD_WHEEL = "demo-1.0-py3-none-any.whl"


@pytest.fixture
async def index(aiohttp_server: AiohttpServer) -> FakePypiIndex:
    index = FakePypiIndex()
    index.add_wheel("demo", "1.0", uploaded=OLD)
    index.add_wheel("demo", "1.1", uploaded=OLD + timedelta(days=1))
    await index.start(aiohttp_server)
    return index


async def test_a_removed_pypi_file_and_a_yanked_one_are_events(
    make_mirror: MakeClient, index: FakePypiIndex, clock: FixedClock
) -> None:
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    services = client.app[SERVICES]
    assert (await client.get("/pypi/simple/demo/")).status == 200
    response = await client.get(
        f"/pypi/files/demo/{WHEEL}", headers={"X-Forwarded-For": "10.2.0.1"}
    )
    assert response.status == 200
    await response.read()

    index.remove_file(WHEEL)
    index.yank(OLD_WHEEL, "broken \x1b[31mbuild")
    assert await refreshed(client, clock, "/pypi/simple/demo/") == 200
    found = {e.kind: e for e in await events(services)}
    assert set(found) == {"removed", "yanked"}
    removed, yanked = found["removed"], found["yanked"]
    assert (removed.package, removed.version, removed.filename) == ("demo", "1.1", WHEEL)
    assert [row.client for row in removed.impact] == ["10.2.0.1"]
    assert (yanked.version, yanked.filename, yanked.clients) == ("1.0", OLD_WHEEL, 0)
    assert yanked.reason == "broken \\x1b[31mbuild"  # upstream text, escaped
    assert count(services, "pypi", "yanked") == 1

    # The removed file is no longer served though its bytes are cached; the yanked one
    # still is (PEP 592: installable by exact pin) and stays marked yanked on the page.
    assert (await client.get(f"/pypi/files/demo/{WHEEL}")).status == 404
    assert (await client.get(f"/pypi/files/demo/{OLD_WHEEL}")).status == 200
    page = await (
        await client.get(
            "/pypi/simple/demo/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
    ).json()
    assert [(f["filename"], f["yanked"]) for f in page["files"]] == [
        (OLD_WHEEL, "broken \x1b[31mbuild")
    ]


# Maven -----------------------------------------------------------------------------------

LIB = "org/example/lib"


async def test_a_version_gone_from_maven_metadata_is_an_event(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer, clock: FixedClock
) -> None:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    repo.add_version("org.example", "lib", "1.1.0", published=OLD + timedelta(days=1))
    await repo.start(aiohttp_server)
    client = await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url, MIRROR_UPSTREAM_RETRIES="0")
    services = client.app[SERVICES]
    assert (await client.get(f"/maven/{LIB}/maven-metadata.xml")).status == 200
    jar = await client.get(
        f"/maven/{LIB}/1.1.0/lib-1.1.0.jar", headers={"X-Forwarded-For": "10.3.0.1"}
    )
    assert jar.status == 200
    repo.remove_version("org.example", "lib", "1.1.0", at=NOW)
    assert await refreshed(client, clock, f"/maven/{LIB}/maven-metadata.xml") == 200
    [event] = await events(services)
    assert (event.package, event.version, event.kind) == ("org.example:lib", "1.1.0", "removed")
    assert [row.client for row in event.impact] == ["10.3.0.1"]
    assert count(services, "maven", "removed") == 1
    # Maven asks for files by coordinates, not through the metadata: the block refuses them,
    # cached or not.
    for name in ("lib-1.1.0.jar", "lib-1.1.0.pom"):
        refused = await client.get(f"/maven/{LIB}/1.1.0/{name}")
        assert refused.status == 403
        assert "removed upstream" in (await refused.json())["error"]
    assert (await client.get(f"/maven/{LIB}/1.0.0/lib-1.0.0.jar")).status == 200


# bounds and failures ----------------------------------------------------------------------
# A Maven refresh made by a file request is checked too; only versions the mirror served, and
# that an exact spec can name, are blocked, at most MAX_BLOCKS_PER_PACKAGE per package; a
# takedown met while the state is down is recorded and blocked once it is back.


async def test_a_maven_refresh_made_by_a_file_request_still_finds_the_takedown(
    make_mirror: MakeClient,
    aiohttp_server: AiohttpServer,
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    repo.add_version("org.example", "lib", "1.1.0", published=OLD + timedelta(days=1))
    await repo.start(aiohttp_server)
    # A rule that acts on signatures: a file request then reads the metadata (the path that
    # refreshed it without the takedown check).
    settings = tmp_path / "mirror.toml"
    settings.write_text('[[risk.rules]]\nsignal = "signature-missing"\naction = "hold"\n')
    client = await make_mirror(
        MIRROR_MAVEN_UPSTREAM=repo.url, MIRROR_UPSTREAM_RETRIES="0", MIRROR_CONFIG=str(settings)
    )
    services = client.app[SERVICES]
    assert (await client.get(f"/maven/{LIB}/maven-metadata.xml")).status == 200
    jar = await client.get(f"/maven/{LIB}/1.1.0/lib-1.1.0.jar")
    assert jar.status == 200
    await jar.read()
    # Upstream takes 1.1.0 down and publishes 1.2.0; a build asks for the new jar first.
    repo.add_version("org.example", "lib", "1.2.0", published=NOW - timedelta(hours=1))
    repo.remove_version("org.example", "lib", "1.1.0", at=NOW)
    assert await refreshed(client, clock, f"/maven/{LIB}/1.2.0/lib-1.2.0.jar") == 403
    [event] = await events(services)
    assert (event.version, event.kind) == ("1.1.0", "removed")
    refused = await client.get(f"/maven/{LIB}/1.1.0/lib-1.1.0.jar")
    assert refused.status == 403
    assert "removed upstream" in (await refused.json())["error"]


async def test_an_odd_version_string_dropped_blocks_nothing(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer, clock: FixedClock
) -> None:
    registry = FakeNpmRegistry()
    registry.add_version("victim", "1.0.0", published=OLD)
    registry.add_version("victim", "=9.9.9", published=OLD, tag=None)
    await registry.start(aiohttp_server)
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    services = client.app[SERVICES]
    assert (await client.get("/npm/victim")).status == 200
    odd = await client.get("/npm/victim/-/victim-=9.9.9.tgz")
    assert odd.status == 200  # served: downloaded, so only its odd spelling spares a block
    await odd.read()
    registry.remove_version("victim", "=9.9.9")
    assert await refreshed(client, clock, "/npm/victim") == 200
    assert [(e.version, e.downloads) for e in await events(services)] == [("=9.9.9", 1)]
    # A block `====9.9.9` would not parse, and would then apply to every version.
    assert await services.state.list_rules("block") == []
    assert (await client.get("/npm/victim/-/victim-1.0.0.tgz")).status == 200


async def test_a_version_never_served_is_recorded_but_not_blocked(
    make_mirror: MakeClient, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    services = client.app[SERVICES]
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=1), tag=None)
    assert (await client.get("/npm/left-pad")).status == 200  # 1.4.0 held: never served
    registry.remove_version("left-pad", "1.4.0")
    assert await refreshed(client, clock, "/npm/left-pad") == 200
    [event] = await events(services)
    assert (event.version, event.downloads) == ("1.4.0", 0)
    assert await services.state.list_rules("block") == []


async def test_takedown_blocks_per_package_are_capped_with_a_warning(
    make_mirror: MakeClient,
    aiohttp_server: AiohttpServer,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    many = takedownwatch.MAX_BLOCKS_PER_PACKAGE + 3
    registry = FakeNpmRegistry()
    registry.add_version("flap", "1.0.0", published=OLD)
    for patch in range(many):
        registry.add_version("flap", f"2.0.{patch}", published=OLD, tag=None)
    await registry.start(aiohttp_server)
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    services = client.app[SERVICES]
    for patch in range(many):
        response = await client.get(f"/npm/flap/-/flap-2.0.{patch}.tgz")
        assert response.status == 200
        await response.read()
    for patch in range(many):
        registry.remove_version("flap", f"2.0.{patch}")
    with caplog.at_level(logging.WARNING, logger="mirror.takedownwatch"):
        assert await refreshed(client, clock, "/npm/flap") == 200
    assert len(await events(services)) == many
    blocks = await services.state.list_rules("block")
    assert len(blocks) == takedownwatch.MAX_BLOCKS_PER_PACKAGE
    assert "takedown blocks of this package exist already" in caplog.text
    # The newest are blocked; the oldest are left out (and logged).
    blocked = {block.versions for block in blocks}
    assert f"===2.0.{many - 1}" in blocked
    assert "===2.0.0" not in blocked


async def test_a_takedown_met_while_redis_is_down_is_recorded_and_blocked_once_it_is_back(
    make_mirror: MakeClient,
    registry: FakeNpmRegistry,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
    stoppable_redis: tuple[subprocess.Popen[bytes], str],
) -> None:
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    services = client.app[SERVICES]
    if not isinstance(services.state, RedisState):
        pytest.skip("needs a Redis to stop")
    process, _ = stoppable_redis
    response = await client.get(TARBALL)
    assert response.status == 200
    await response.read()
    await services.artifacts.ledger.flush()
    registry.remove_version("left-pad", "1.3.1")
    process.send_signal(signal.SIGSTOP)  # a hung Redis: every call times out
    try:
        with caplog.at_level(logging.WARNING, logger="mirror.takedownwatch"):
            clock.advance(PAST_STALE)
            assert (await client.get("/npm/left-pad")).status == 200
            assert await wait_until(lambda: "(will retry)" in caplog.text, 30)
    finally:
        process.send_signal(signal.SIGCONT)
    await services.takedowns.drain()
    [event] = await events(services)
    assert (event.version, event.downloads) == ("1.3.1", 1)
    [block] = await services.state.list_rules("block")
    assert (block.versions, block.created_by) == ("===1.3.1", "takedowns")


# the webhook client alone ------------------------------------------------------------------


async def test_the_webhook_queue_is_bounded_and_never_waits(hook: WebhookServer) -> None:
    failures: list[str] = []
    webhook = Webhook(
        hook.url, timeout=timedelta(seconds=5), on_failure=failures.append, max_queued=2
    )
    # Nothing runs until the loop gets control: three sends, room for two.
    for n in range(3):
        webhook.send({"n": n})
    assert failures == ["2 deliveries are queued already"]
    await webhook.drain()
    assert [body["n"] for body in hook.received] == [0, 1]
    await webhook.close()


async def test_the_webhook_follows_no_redirect(aiohttp_server: AiohttpServer) -> None:
    landed: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        landed.append(request.path)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", moved)
    app.router.add_post("/elsewhere", elsewhere)
    server = await aiohttp_server(app, host="127.0.0.1")
    failures: list[str] = []
    webhook = Webhook(
        str(server.make_url("/hook")),
        timeout=timedelta(seconds=5),
        on_failure=failures.append,
        attempts=1,
    )
    webhook.send({"id": "x"})
    await webhook.drain()
    await webhook.close()
    assert landed == []
    assert failures == ["HTTP 302 (1 attempts)"]
