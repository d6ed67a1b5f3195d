"""Maven publish-time look-ups are bounded: a metadata document naming thousands of versions
without Last-Modified costs a bounded number of HEADs at a time, each once for every worker.
The whole app against a fake Maven repository on 127.0.0.1."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from mirror.ecosystems.maven.routes import LOOKUP_CONCURRENCY, LOOKUPS_PER_REQUEST
from mirror.services import SERVICES
from tests.conftest import wait_until
from tests.fakes.maven import FakeMavenRepository
from tests.integration.conftest import NOW, OLD, Client, MakeClient

VERSIONS = 2000
METADATA = "/maven/org/example/many/maven-metadata.xml"


class TimelessMaven(FakeMavenRepository):
    """Answers `.pom` HEADs without Last-Modified, each taking a moment, and records how
    many were in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most_in_flight = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "HEAD" or not request.path.endswith(".pom"):
            return await super()._handle(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)
            response = await super()._handle(request)
        finally:
            self.in_flight -= 1
        response.headers.pop("Last-Modified", None)
        return response

    def pom_heads(self) -> int:
        return sum(1 for seen in self.requests if seen.method == "HEAD")


@pytest.fixture
async def timeless(aiohttp_server: AiohttpServer) -> TimelessMaven:
    repo = TimelessMaven()
    for index in range(VERSIONS):
        repo.add_version(
            "org.example", "many", f"1.{index}.0", published=OLD, jar=False, signature=False
        )
    await repo.start(aiohttp_server)
    return repo


async def maven_worker(make_mirror: MakeClient, repo: FakeMavenRepository) -> Client:
    return await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url, MIRROR_UPSTREAM_RETRIES="0")


async def test_thousands_of_versions_without_last_modified_cost_bounded_heads_once(
    make_mirror: MakeClient, timeless: TimelessMaven
) -> None:
    worker = await maven_worker(make_mirror, timeless)
    response = await worker.get(METADATA)
    # No version has a known age: nothing is visible (held), and the request did not wait
    # for 2,000 look-ups.
    assert response.status == 404
    assert timeless.pom_heads() <= LOOKUPS_PER_REQUEST + LOOKUP_CONCURRENCY
    # The walk goes on in the background, bounded, until every version was asked once.
    assert await wait_until(lambda: timeless.pom_heads() >= VERSIONS, 120)
    assert timeless.pom_heads() == VERSIONS
    assert 1 < timeless.most_in_flight <= LOOKUP_CONCURRENCY
    heads = [seen.path for seen in timeless.requests if seen.method == "HEAD"]
    assert len(set(heads)) == VERSIONS  # each .pom once
    assert (await worker.get(METADATA)).status == 404
    assert timeless.pom_heads() == VERSIONS  # none asked again by this worker
    # What was found ("no Last-Modified") is shared: another worker asks upstream nothing.
    shared = worker.app[SERVICES].artifacts.shared
    assert await wait_until(lambda: shared.backlog == 0, 60)
    other = await maven_worker(make_mirror, timeless)
    assert (await other.get(METADATA)).status == 404
    assert timeless.pom_heads() == VERSIONS


async def test_a_young_version_among_many_is_found_without_a_fan_out(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    """The usual case keeps its single look-up: old `lastUpdated`, newest `.pom` old."""
    repo = FakeMavenRepository()
    for index in range(VERSIONS):
        repo.add_version(
            "org.example", "many", f"1.{index}.0", published=OLD, jar=False, signature=False
        )
    await repo.start(aiohttp_server)
    worker = await maven_worker(make_mirror, repo)
    response = await worker.get(METADATA)
    assert response.status == 200
    assert f"<release>1.{VERSIONS - 1}.0</release>" in await response.text()
    assert repo.count(method="HEAD") == 1


async def test_many_young_versions_do_not_hide_the_old_ones(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    """Twenty releases within the quarantine window above a hundred old ones: the first
    metadata request already lists the old ones (the look-ups it waits for are batched)."""
    repo = FakeMavenRepository()
    for index in range(100):
        repo.add_version(
            "org.example", "many", f"1.{index}.0", published=OLD, jar=False, signature=False
        )
    for index in range(20):
        repo.add_version(
            "org.example", "many", f"2.{index}.0", published=NOW - timedelta(hours=index + 1),
            jar=False, signature=False,
        )  # fmt: skip
    await repo.start(aiohttp_server)
    worker = await maven_worker(make_mirror, repo)
    response = await worker.get(METADATA)
    assert response.status == 200
    text = await response.text()
    assert "<release>1.99.0</release>" in text
    assert "<version>1.0.0</version>" in text
    assert "2.0.0" not in text
    assert repo.count(method="HEAD") <= 21 + LOOKUP_CONCURRENCY
