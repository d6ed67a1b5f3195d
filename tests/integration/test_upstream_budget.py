"""No client turns its requests into upstream requests: names a client makes up (unknown
files, versions, packages) cost at most one upstream request per document per
`cache.refresh_interval` (a name the copy does not list) or `cache.negative_ttl` (a name
upstream does not have), through the whole app against each ecosystem's fake upstream, with
a FixedClock. A name published meanwhile is served once the interval has passed."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, Client, MakeClient

REFRESH_INTERVAL = timedelta(seconds=20)
NEGATIVE_TTL = timedelta(minutes=2)
TIMES = 50


@pytest.fixture
def make_mirror(make_mirror: MakeClient) -> MakeClient:
    return partial(
        make_mirror,
        MIRROR_CACHE_REFRESH_INTERVAL="20s",
        MIRROR_CACHE_NEGATIVE_TTL="2m",
        MIRROR_UPSTREAM_RETRIES="0",
    )


async def explain(client: Client, ecosystem: str, package: str, version: str) -> int:
    response = await client.get(
        "/api/v1/explain",
        params={"ecosystem": ecosystem, "package": package, "version": version},
    )
    return response.status


# npm ------------------------------------------------------------------------------------------


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
async def npm(make_mirror: MakeClient, registry: FakeNpmRegistry) -> Client:
    return await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)


async def test_npm_unknown_tarballs_refetch_the_packument_once_per_interval(
    npm: Client, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    packument = registry.packument_path("left-pad")
    assert (await npm.get("/npm/left-pad")).status == 200
    clock.advance(REFRESH_INTERVAL)
    for number in range(TIMES):
        response = await npm.get(f"/npm/left-pad/-/left-pad-9.9.{number}.tgz")
        assert response.status == 404
        assert "left-pad has no tarball" in (await response.json())["error"]
    assert registry.upstream.count(packument) == 2  # the first fetch and one refetch
    assert [r.path for r in registry.requests if r.path != packument] == []


async def test_npm_explain_of_unknown_versions_refetches_once_per_interval(
    npm: Client, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    packument = registry.packument_path("left-pad")
    assert await explain(npm, "npm", "left-pad", "1.0.0") == 200
    clock.advance(REFRESH_INTERVAL)
    for number in range(TIMES):
        assert await explain(npm, "npm", "left-pad", f"9.9.{number}") == 404
    assert registry.upstream.count(packument) == 2


async def test_npm_a_version_published_meanwhile_is_served_after_the_interval(
    npm: Client, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    """A lockfile naming a version newer than the mirror's copy works within the interval."""
    assert (await npm.get("/npm/left-pad")).status == 200
    registry.add_version("left-pad", "1.1.0", published=NOW - timedelta(days=5))
    tarball = "/npm/left-pad/-/left-pad-1.1.0.tgz"
    assert (await npm.get(tarball)).status == 404  # the copy is younger than the interval
    clock.advance(REFRESH_INTERVAL)
    response = await npm.get(tarball)
    assert response.status == 200
    assert await response.read() == registry.version("left-pad", "1.1.0").tarball


async def test_npm_an_unknown_package_is_asked_once_per_negative_ttl(
    npm: Client, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    packument = registry.packument_path("not-yet")
    paths = ["/npm/not-yet", "/npm/not-yet/-/not-yet-1.0.0.tgz", "/npm/not-yet/1.0.0"]
    errors = set()
    for number in range(TIMES):
        response = await npm.get(paths[number % len(paths)])
        assert response.status == 404
        errors.add((await response.json())["error"])
    assert await explain(npm, "npm", "not-yet", "1.0.0") == 404
    assert registry.upstream.count(packument) == 1
    assert len(errors) == 1  # every answer says the same thing

    registry.add_version("not-yet", "1.0.0", published=OLD)
    clock.advance(NEGATIVE_TTL - timedelta(seconds=1))
    assert (await npm.get("/npm/not-yet")).status == 404
    clock.advance(timedelta(seconds=1))
    assert (await npm.get("/npm/not-yet")).status == 200
    assert registry.upstream.count(packument) == 2


# PyPI -----------------------------------------------------------------------------------------


@pytest.fixture
async def index(aiohttp_server: AiohttpServer) -> FakePypiIndex:
    index = FakePypiIndex()
    index.add_sdist("demo", "1.0", uploaded=OLD)
    await index.start(aiohttp_server)
    return index


@pytest.fixture
async def pypi(make_mirror: MakeClient, index: FakePypiIndex) -> Client:
    return await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)


async def test_pypi_unknown_files_refetch_the_page_once_per_interval(
    pypi: Client, index: FakePypiIndex, clock: FixedClock
) -> None:
    page = index.page_path("demo")
    assert (await pypi.get("/pypi/simple/demo/")).status == 200
    clock.advance(REFRESH_INTERVAL)
    for number in range(TIMES):
        response = await pypi.get(f"/pypi/files/demo/demo-9.{number}-py3-none-any.whl")
        assert response.status == 404
    assert index.upstream.count(page) == 2
    assert [r.path for r in index.requests if r.path != page] == []


async def test_pypi_explain_of_unknown_versions_refetches_once_per_interval(
    pypi: Client, index: FakePypiIndex, clock: FixedClock
) -> None:
    page = index.page_path("demo")
    assert await explain(pypi, "pypi", "demo", "1.0") == 200
    clock.advance(REFRESH_INTERVAL)
    for number in range(TIMES):
        assert await explain(pypi, "pypi", "demo", f"9.{number}") == 404
    assert index.upstream.count(page) == 2


async def test_pypi_a_file_uploaded_meanwhile_is_served_after_the_interval(
    pypi: Client, index: FakePypiIndex, clock: FixedClock
) -> None:
    assert (await pypi.get("/pypi/simple/demo/")).status == 200
    wheel = index.add_wheel("demo", "1.1", uploaded=NOW - timedelta(days=5))
    path = f"/pypi/files/demo/{wheel.filename}"
    assert (await pypi.get(path)).status == 404
    clock.advance(REFRESH_INTERVAL)
    response = await pypi.get(path)
    assert response.status == 200
    assert await response.read() == wheel.data


async def test_pypi_an_unknown_project_is_asked_once_per_negative_ttl(
    pypi: Client, index: FakePypiIndex, clock: FixedClock
) -> None:
    paths = ["/pypi/simple/not-yet/", "/pypi/files/not-yet/not_yet-1.0.tar.gz"]
    for number in range(TIMES):
        assert (await pypi.get(paths[number % len(paths)])).status == 404
    assert index.upstream.count(index.page_path("not-yet")) == 1
    index.add_sdist("not-yet", "1.0", uploaded=OLD)
    clock.advance(NEGATIVE_TTL)
    assert (await pypi.get("/pypi/simple/not-yet/")).status == 200
    assert index.upstream.count(index.page_path("not-yet")) == 2


# Maven ----------------------------------------------------------------------------------------

LIB = "org/example/lib"


@pytest.fixture
async def repo(aiohttp_server: AiohttpServer) -> FakeMavenRepository:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    await repo.start(aiohttp_server)
    return repo


@pytest.fixture
async def maven(make_mirror: MakeClient, repo: FakeMavenRepository) -> Client:
    return await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url)


MAVEN_FILES = (".pom", ".jar", "-sources.jar", ".jar.sha1", ".pom.asc", ".module", ".jar.sha256")


async def test_maven_files_of_an_unknown_version_cost_one_request_per_negative_ttl(
    maven: Client, repo: FakeMavenRepository, clock: FixedClock
) -> None:
    pom = f"{LIB}/3.0.0/lib-3.0.0.pom"
    for number in range(TIMES):
        suffix = MAVEN_FILES[number % len(MAVEN_FILES)]
        response = await maven.get(f"/maven/{LIB}/3.0.0/lib-3.0.0{suffix}")
        assert response.status == 404
        assert "does not exist upstream" in (await response.json())["error"]
    for _ in range(TIMES):
        assert await explain(maven, "maven", "org.example:lib", "3.0.0") == 404
    assert repo.count() == repo.count(pom, method="HEAD") == 1

    repo.add_version("org.example", "lib", "3.0.0", published=OLD)
    clock.advance(NEGATIVE_TTL)
    assert (await maven.get(f"/maven/{pom}")).status == 200


async def test_maven_unknown_versions_cost_one_request_each_at_most(
    maven: Client, repo: FakeMavenRepository
) -> None:
    """Maven has no document that lists every version reliably (metadata may lag or be
    incomplete), so a version's own `.pom` is the question: asked once per name, not once
    per request."""
    for _ in range(2):
        for number in range(TIMES // 2):
            response = await maven.get(f"/maven/{LIB}/9.{number}/lib-9.{number}.jar")
            assert response.status == 404
    assert repo.count() == repo.count(method="HEAD") == TIMES // 2


async def test_maven_absent_companions_and_metadata_cost_one_request_each(
    maven: Client, repo: FakeMavenRepository
) -> None:
    repo.add_version("org.example", "lib", "1.1.0", published=OLD, checksums=("sha1",))
    paths = [
        f"{LIB}/1.1.0/lib-1.1.0.jar.md5",
        f"{LIB}/1.1.0/lib-1.1.0.jar.sha512",
        "org/example/nothing/maven-metadata.xml",
    ]
    for number in range(TIMES):
        assert (await maven.get("/maven/" + paths[number % len(paths)])).status == 404
    assert [repo.count(path) for path in paths] == [1, 1, 1]
