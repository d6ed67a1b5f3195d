"""The hot path in front of the app (`mirror.hotpath`), as `mirror serve` runs it: a repeated
request for a cached tarball or a rendered view is answered from the worker's table with the
very bytes the app gave, yet every rule still holds — a block reaches a warm replay within a
second, every replayed download is in the ledger, read tokens are checked, metrics count it,
and whatever is not a plain repeat (conditional, ranged, HTTP/1.0) takes the slow path."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import brotli
import pytest
from aiohttp import ClientResponse
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient, AiohttpServer

from mirror.app import create_app
from mirror.clock import FixedClock
from mirror.config import load_config
from mirror.errors import PolicyUnavailable
from mirror.hotpath import HotPath
from mirror.services import SERVICES
from tests.conftest import mirror_settings, wait_until
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, Client, start_mirror

TARBALL = "/npm/left-pad/-/left-pad-1.3.0.tgz"
CORGI = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
ADMIN = "admin-token-abcdefghijklmnop"
READER = "ci-read-token-0123456789abcdef"
NPM_CI = "npm/11.19.1 node/v20.20.2 linux x64 workspaces/false ci/github-actions"

MakeHot = Callable[..., Awaitable[tuple[Client, HotPath]]]


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    registry.add_version("left-pad", "1.3.0", published=NOW - timedelta(days=30))
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_hot(
    aiohttp_client: AiohttpClient, tmp_path: Path, clock: FixedClock, registry: FakeNpmRegistry
) -> MakeHot:
    async def make(*, data_dir: Path | None = None, **settings: str) -> tuple[Client, HotPath]:
        env = mirror_settings(
            data_dir or tmp_path / "data",
            MIRROR_NPM_UPSTREAM=registry.url,
            MIRROR_ADMIN_TOKENS=f"sec:{ADMIN}",
            **settings,
        )
        return await start_mirror(aiohttp_client, create_app(load_config(None, env), clock=clock))

    return make


def answer_headers(response: ClientResponse) -> list[tuple[str, str]]:
    return [(name, value) for name, value in response.headers.items() if name != "Date"]


async def test_a_repeated_tarball_is_replayed_with_the_very_same_answer(
    make_hot: MakeHot, registry: FakeNpmRegistry
) -> None:
    client, hot = await make_hot()
    expected = registry.version("left-pad", "1.3.0").tarball
    answers = []
    for _ in range(4):  # a miss, a hit through the app (kept), then two replays
        response = await client.get(TARBALL)
        assert response.status == 200
        assert await response.read() == expected
        answers.append(answer_headers(response))
    assert hot.replayed == 2
    assert answers[1] == answers[2] == answers[3]
    assert response.headers["ETag"].strip('"')
    head = await client.head(TARBALL)
    assert head.status == 200
    assert await head.read() == b""
    assert head.headers["Content-Length"] == str(len(expected))
    assert hot.replayed == 3
    assert registry.upstream.count("/left-pad/-/left-pad-1.3.0.tgz") == 1


async def test_every_replayed_download_is_in_the_ledger(make_hot: MakeHot) -> None:
    client, hot = await make_hot()
    for _ in range(25):
        response = await client.get(TARBALL, headers={"User-Agent": NPM_CI})
        assert response.status == 200
    for _ in range(3):  # a HEAD downloads nothing
        assert (await client.head(TARBALL, headers={"User-Agent": NPM_CI})).status == 200
    assert hot.replayed == 26
    services = client.app[SERVICES]
    await services.artifacts.ledger.flush()
    rows = await services.state.downloads("npm", "left-pad")
    assert [(row.version, row.count, row.ci, row.client) for row in rows] == [
        ("1.3.0", 25, "github-actions", "127.0.0.1")
    ]


async def test_a_block_reaches_a_warm_replay_in_another_worker_within_a_second(
    make_hot: MakeHot, tmp_path: Path
) -> None:
    # Two workers: two apps on one data dir and state, as `mirror serve` runs them.
    admin_side, _ = await make_hot(data_dir=tmp_path / "shared")
    worker, hot = await make_hot(data_dir=tmp_path / "shared")
    for _ in range(3):
        assert (await worker.get(TARBALL)).status == 200
    assert hot.replayed == 1
    created = await admin_side.post(
        "/api/v1/blocks",
        json={"ecosystem": "npm", "package": "left-pad", "versions": "1.3.0", "reason": "INC-7"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert created.status == 201, await created.text()
    started = time.monotonic()
    while (response := await worker.get(TARBALL)).status == 200:
        assert time.monotonic() - started < 1.0, "the block did not reach the replay in 1 s"
        await asyncio.sleep(0.02)
    assert response.status == 403
    body = await response.json()
    assert body["reason"] == "blocked"
    assert "INC-7" in body["error"]
    assert (await worker.get(TARBALL)).status == 403  # and stays refused


async def test_a_view_is_replayed_per_form_and_rendered_again_under_new_rules(
    make_hot: MakeHot,
) -> None:
    client, hot = await make_hot()
    corgi = [await client.get("/npm/left-pad", headers={"Accept": CORGI}) for _ in range(3)]
    full = [await client.get("/npm/left-pad") for _ in range(3)]
    assert hot.replayed == 4
    assert len({await response.read() for response in corgi}) == 1
    assert len({await response.read() for response in full}) == 1
    assert await corgi[0].read() != await full[0].read()
    assert corgi[2].headers["Content-Type"].startswith("application/vnd.npm.install-v1+json")
    versions = (await corgi[2].json(content_type=None))["versions"]
    assert sorted(versions) == ["1.0.0", "1.3.0"]  # 1.4.0 is in quarantine
    assert "npm-notice" in corgi[2].headers
    # A block changes the view at once: the replay of the older view is not used.
    created = await client.post(
        "/api/v1/blocks",
        json={"ecosystem": "npm", "package": "left-pad", "versions": "1.3.0", "reason": "bad"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert created.status == 201
    after = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    assert sorted((await after.json(content_type=None))["versions"]) == ["1.0.0"]


async def test_a_view_asked_in_brotli_comes_in_brotli_and_is_replayed_as_is(
    make_hot: MakeHot,
) -> None:
    client, hot = await make_hot()
    asked = {"Accept": "application/json"}
    identity = await client.get("/npm/left-pad", headers={**asked, "Accept-Encoding": "identity"})
    assert "Content-Encoding" not in identity.headers
    plain = await identity.read()
    answers = [
        await client.get(
            "/npm/left-pad", headers={**asked, "Accept-Encoding": "br"}, auto_decompress=False
        )
        for _ in range(2)  # the app renders, then the hot path replays
    ]
    assert hot.replayed == 1
    first, second = [await answer.read() for answer in answers]
    assert first == second
    assert answers[0].headers["Content-Encoding"] == answers[1].headers["Content-Encoding"] == "br"
    assert brotli.decompress(first) == plain
    assert json.loads(brotli.decompress(first))["name"] == "left-pad"
    # One ETag over the identity bytes for every coding, as for gzip; Vary keeps them apart.
    assert answers[1].headers["ETag"] == identity.headers["ETag"]
    assert "Accept-Encoding" in answers[1].headers["Vary"]
    refused = await client.get(
        "/npm/left-pad", headers={**asked, "Accept-Encoding": "br;q=0, gzip"}
    )
    assert refused.headers["Content-Encoding"] == "gzip"
    assert await refused.read() == plain  # aiohttp inflated it


async def test_a_view_is_not_replayed_past_the_end_of_a_quarantine(
    make_hot: MakeHot, clock: FixedClock
) -> None:
    client, _ = await make_hot()
    for _ in range(3):
        response = await client.get("/npm/left-pad", headers={"Accept": CORGI})
        assert "1.4.0" not in (await response.json(content_type=None))["versions"]
    clock.advance(timedelta(days=3))  # 1.4.0 leaves its 3-day quarantine
    response = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    assert "1.4.0" in (await response.json(content_type=None))["versions"]


async def test_past_its_freshness_the_upstream_is_asked_again(
    make_hot: MakeHot, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    client, hot = await make_hot()
    for _ in range(3):
        assert (await client.get("/npm/left-pad")).status == 200
    assert registry.upstream.count("/left-pad") == 1
    assert hot.replayed == 2  # a view is kept from its first answer
    clock.advance(timedelta(minutes=5))  # the metadata TTL
    assert (await client.get("/npm/left-pad")).status == 200
    assert hot.replayed == 2  # the slow path answered, and revalidates in the background
    assert await wait_until(lambda: registry.upstream.count("/left-pad") == 2, 5)


async def test_conditional_and_ranged_requests_take_the_slow_path(make_hot: MakeHot) -> None:
    client, hot = await make_hot()
    for _ in range(2):
        first = await client.get(TARBALL)
    etag = first.headers["ETag"]
    body = await first.read()
    not_modified = await client.get(TARBALL, headers={"If-None-Match": etag})
    assert not_modified.status == 304
    ranged = await client.get(TARBALL, headers={"Range": "bytes=0-9"})
    assert ranged.status == 206
    assert await ranged.read() == body[:10]
    assert hot.replayed == 0


async def test_read_tokens_are_checked_on_replays(make_hot: MakeHot) -> None:
    client, hot = await make_hot(MIRROR_ACCESS_TOKENS=f"ci:{READER}", MIRROR_ACCESS_REQUIRED="true")
    reader = {"Authorization": f"Bearer {READER}"}
    for _ in range(4):
        assert (await client.get(TARBALL, headers=reader)).status == 200
    assert hot.replayed == 2
    assert (await client.get(TARBALL)).status == 401
    wrong = {"Authorization": "Bearer wrong-token-000000000000000"}
    assert (await client.get(TARBALL, headers=wrong)).status == 401
    assert hot.replayed == 2
    replayed = await client.get(TARBALL, headers=reader)
    assert replayed.headers["Cache-Control"].startswith("private")
    services = client.app[SERVICES]
    await services.artifacts.ledger.flush()
    rows = await services.state.downloads("npm", "left-pad")
    assert [(row.token, row.count) for row in rows] == [("ci", 5)]


async def test_replays_are_counted_in_the_metrics(make_hot: MakeHot) -> None:
    client, hot = await make_hot()
    for _ in range(6):
        assert (await client.get(TARBALL)).status == 200
    assert hot.replayed == 4
    text = await (await client.get("/metrics")).text()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    artifact = (("ecosystem", "npm"), ("kind", "artifact"))
    assert samples[("mirror_requests_total", (*artifact, ("status", "200")))] == 6
    assert samples[("mirror_cache_hits_total", artifact)] == 5
    assert samples[("mirror_request_seconds_count", artifact)] == 6


async def test_a_connection_close_request_gets_its_connection_closed(make_hot: MakeHot) -> None:
    client, hot = await make_hot()
    for _ in range(2):
        assert (await client.get(TARBALL)).status == 200
    response = await client.get(TARBALL, headers={"Connection": "close"})
    assert response.status == 200
    assert hot.replayed == 1
    assert response.headers.get("Connection", "").lower() == "close"


async def test_http_1_0_takes_the_slow_path(make_hot: MakeHot) -> None:
    client, hot = await make_hot()
    for _ in range(2):
        assert (await client.get(TARBALL)).status == 200
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {TARBALL} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.0 200")
    assert hot.replayed == 0


async def test_pypi_pages_and_files_are_replayed_under_the_same_rules(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    clock: FixedClock,
) -> None:
    index = FakePypiIndex()
    index.add_wheel("demo", "1.0", uploaded=OLD)
    index.add_wheel("demo", "1.1", uploaded=NOW - timedelta(days=30))
    index.add_wheel("demo", "2.0", uploaded=NOW - timedelta(hours=5))
    await index.start(aiohttp_server)
    env = mirror_settings(
        tmp_path / "data", MIRROR_PYPI_UPSTREAM=index.url, MIRROR_ADMIN_TOKENS=f"sec:{ADMIN}"
    )
    client, hot = await start_mirror(
        aiohttp_client, create_app(load_config(None, env), clock=clock)
    )
    pip = {"Accept": "application/vnd.pypi.simple.v1+json"}
    pages = [await client.get("/pypi/simple/demo/", headers=pip) for _ in range(3)]
    assert hot.replayed == 2
    assert len({await page.read() for page in pages}) == 1
    files = [item["filename"] for item in (await pages[2].json(content_type=None))["files"]]
    assert files == ["demo-1.0-py3-none-any.whl", "demo-1.1-py3-none-any.whl"]
    wheel = "/pypi/files/demo/demo-1.1-py3-none-any.whl"
    expected = index.file("demo-1.1-py3-none-any.whl").data
    for _ in range(4):
        response = await client.get(wheel, headers={"User-Agent": "pip/25.3"})
        assert response.status == 200
        assert await response.read() == expected
    assert hot.replayed == 4
    services = client.app[SERVICES]
    await services.artifacts.ledger.flush()
    rows = await services.state.downloads("pypi", "demo")
    assert [(row.filename, row.count) for row in rows] == [("demo-1.1-py3-none-any.whl", 4)]
    created = await client.post(
        "/api/v1/blocks",
        json={"ecosystem": "pypi", "package": "demo", "versions": "1.1", "reason": "INC-9"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert created.status == 201
    assert (await client.get(wheel)).status == 403
    page = await client.get("/pypi/simple/demo/", headers=pip)
    files = [item["filename"] for item in (await page.json(content_type=None))["files"]]
    assert files == ["demo-1.0-py3-none-any.whl"]


async def test_maven_files_and_metadata_are_replayed_until_the_rules_change(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    clock: FixedClock,
) -> None:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    repo.add_version("org.example", "lib", "1.4.0", published=NOW - timedelta(days=20))
    await repo.start(aiohttp_server)
    env = mirror_settings(
        tmp_path / "data", MIRROR_MAVEN_UPSTREAM=repo.url, MIRROR_ADMIN_TOKENS=f"sec:{ADMIN}"
    )
    client, hot = await start_mirror(
        aiohttp_client, create_app(load_config(None, env), clock=clock)
    )
    jar = "/maven/org/example/lib/1.4.0/lib-1.4.0.jar"
    expected = repo.body("org/example/lib/1.4.0/lib-1.4.0.jar")
    for _ in range(4):
        response = await client.get(jar)
        assert response.status == 200
        assert await response.read() == expected
    metadata = [await client.get("/maven/org/example/lib/maven-metadata.xml") for _ in range(3)]
    assert len({await answer.read() for answer in metadata}) == 1
    assert hot.replayed == 4
    created = await client.post(
        "/api/v1/blocks",
        json={
            "ecosystem": "maven",
            "package": "org.example:lib",
            "versions": "1.4.0",
            "reason": "x",
        },
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert created.status == 201, await created.text()
    assert (await client.get(jar)).status == 403
    listed = await (await client.get("/maven/org/example/lib/maven-metadata.xml")).text()
    assert "<version>1.0.0</version>" in listed
    assert "<version>1.4.0</version>" not in listed


async def test_a_client_that_does_not_read_does_not_make_the_worker_buffer_replays(
    make_hot: MakeHot, registry: FakeNpmRegistry
) -> None:
    # A packument view of about 1 MiB, asked 60 times in one pipelined burst by a client
    # that reads nothing: replays wait for the connection to drain, as the slow path does.
    filler = {"description": "x" * 900}
    for minor in range(1200):
        registry.add_version("big", f"1.{minor}.0", published=OLD, extra=filler, tag=None)
    client, hot = await make_hot()
    # Uncompressed, as the raw requests below ask (no Accept-Encoding): the same kept answer.
    first = await client.get("/npm/big", skip_auto_headers=("Accept", "Accept-Encoding"))
    body = await first.read()
    assert len(body) > 1024**2
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET /npm/big HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    writer.write(request * 60)
    await writer.drain()
    await asyncio.sleep(1.0)  # the worker answers what the socket buffers take, then waits
    assert hot.replayed < 30
    received = 0
    async with asyncio.timeout(60):
        while received < 60 * len(body):
            chunk = await reader.read(1024**2)
            assert chunk, "the connection closed early"
            received += len(chunk)
    writer.close()
    assert hot.replayed == 60


async def test_query_strings_and_long_keys_are_never_kept(make_hot: MakeHot) -> None:
    client, hot = await make_hot()
    for attempt in range(3):
        assert (await client.get(f"{TARBALL}?v={attempt}")).status == 200
        huge = {"Accept": "application/octet-stream;" + "x" * 2000}
        assert (await client.get(TARBALL, headers=huge)).status == 200
    assert hot.replayed == 0
    assert client.app[SERVICES].memory.usage().get("hot answers", 0) == 0


async def test_forwarded_headers_do_not_vary_the_key_without_trusted_proxies(
    make_hot: MakeHot,
) -> None:
    client, hot = await make_hot()
    for attempt in range(5):
        forwarded = {"X-Forwarded-Host": f"made-up-{attempt}.example", "Forwarded": "for=x"}
        assert (await client.get(TARBALL, headers=forwarded)).status == 200
    assert hot.replayed == 3  # one kept answer, whatever a client claims to be forwarded


async def test_a_replay_stops_once_another_digest_is_pinned(make_hot: MakeHot) -> None:
    client, hot = await make_hot()
    for _ in range(3):
        assert (await client.get(TARBALL)).status == 200
    assert hot.replayed == 1
    # What a late conflict does once shared state answers again (another worker had pinned
    # other bytes first while this one could not ask): this process's pin changes.
    shared = client.app[SERVICES].artifacts.shared
    shared._pin("npm", "npm/left-pad/1.3.0/left-pad-1.3.0.tgz", "sha512:" + "0" * 128)
    response = await client.get(TARBALL)
    assert response.status == 502
    assert "changed the bytes" in (await response.json())["error"]
    assert hot.replayed == 1


async def test_a_newer_upstream_copy_ends_the_replay_at_once(
    make_hot: MakeHot, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    client, hot = await make_hot()
    for _ in range(3):
        assert (await client.get("/npm/left-pad")).status == 200
    assert hot.replayed == 2
    registry.add_version("left-pad", "1.3.1", published=OLD)
    clock.advance(timedelta(seconds=31))  # past refresh_interval, well within the TTL
    # A lockfile names a version the copy held does not list: the packument is fetched anew.
    assert (await client.get("/npm/left-pad/-/left-pad-1.3.1.tgz")).status == 200
    listed = await (await client.get("/npm/left-pad")).json(content_type=None)
    assert "1.3.1" in listed["versions"]
    assert hot.replayed == 2


async def test_spellings_of_one_accept_encoding_share_one_kept_answer(make_hot: MakeHot) -> None:
    client, hot = await make_hot()
    for n in range(20):
        spelled = {"Accept-Encoding": f"br;q=0.{n:03d}1, gzip;q=0.5"}
        response = await client.get("/npm/left-pad", headers=spelled)
        assert response.headers["Content-Encoding"] == "br"
    assert hot.replayed == 19


async def test_rules_that_become_unavailable_stop_every_replay(
    make_hot: MakeHot, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, hot = await make_hot()
    for _ in range(3):
        assert (await client.get(TARBALL)).status == 200
        assert (await client.get("/npm/left-pad")).status == 200
    assert hot.replayed == 3
    # A fault the real state cannot be made to show on demand once rules are loaded: the
    # policy cannot say which rules hold (as while a new shared state settles).
    policy = client.app[SERVICES].policy

    def unavailable() -> NoReturn:
        raise PolicyUnavailable("not serving yet: a test says so")

    monkeypatch.setattr(policy, "rules", unavailable)
    refused = await client.get(TARBALL)
    assert refused.status == 503
    assert "a test says so" in (await refused.json())["error"]
    await client.get("/npm/left-pad")  # the slow path answers it, as it would without a table
    assert hot.replayed == 3


async def test_replays_write_access_lines_and_stamp_the_blob_in_use(
    make_hot: MakeHot, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    client, hot = await make_hot(MIRROR_ACCESS_LOG="true")
    for _ in range(2):
        assert (await client.get(TARBALL)).status == 200
    clock.advance(timedelta(minutes=2))  # the blob's last use is two minutes old
    caplog.set_level(logging.INFO, logger="mirror.access")
    assert (await client.get(TARBALL, headers={"User-Agent": NPM_CI})).status == 200
    assert hot.replayed == 1
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    assert [(line["path"], line["status"], line["kind"], line["ua"]) for line in lines] == [
        (TARBALL, 200, "artifact", NPM_CI)
    ]
    services = client.app[SERVICES]
    entry = await services.blobs.lookup("npm/left-pad/1.3.0/left-pad-1.3.0.tgz")
    assert entry is not None
    stamped = (NOW + timedelta(minutes=2)).timestamp()
    assert await wait_until(lambda: abs(entry.path.stat().st_mtime - stamped) < 1, 5)
