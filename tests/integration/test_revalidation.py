"""What the upstream sees of warm installs through the whole app (`create_app` on a FixedClock
against fake upstreams on 127.0.0.1), the clock moved past `cache.metadata_ttl` and
`cache.negative_ttl` again and again: documents are revalidated in the background (ahead of
their TTL when asked for near it), an upstream without validators costs no re-render and no
new ETag, and release files (Maven artifacts with their checksums and signatures, PyPI files
and their `.metadata`) are never asked for again."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.metacache import IMMUTABLE_NEGATIVE_TTL, REFRESH_AHEAD_FRACTION
from mirror.services import SERVICES, Services
from tests.fakes.maven import FakeMavenRepository, digest
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, Client, MakeClient

TTL = timedelta(minutes=5)
# Past the metadata TTL and the negative TTL (1 minute) each time.
STEP = timedelta(minutes=7)
CORGI = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
SETTINGS = {"MIRROR_CACHE_METADATA_TTL": "5m", "MIRROR_CACHE_NEGATIVE_TTL": "1m"}


def services(client: Client) -> Services:
    return client.app[SERVICES]


def stale_serves(client: Client) -> float:
    registry = services(client).metrics.registry
    return registry.get_sample_value("mirror_stale_serves_total", {"cause": "revalidating"}) or 0


# npm: an upstream without validators ------------------------------------------------------


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry(validators=False)
    registry.add_version("left-pad", "1.0.0", published=OLD)
    registry.add_version("left-pad", "1.3.0", published=NOW - timedelta(days=30))
    await registry.start(aiohttp_server)
    return registry


async def test_npm_without_validators_keeps_the_view_and_its_etag(
    make_mirror: MakeClient, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url, **SETTINGS)
    rendered = services(client).rendered
    first = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    assert first.status == 200
    assert "ETag" not in registry.upstream.last("/left-pad").headers
    etag, body = first.headers["ETag"], await first.read()
    assert rendered.renders == 1
    for round_ in range(1, 6):
        clock.advance(STEP)
        response = await client.get("/npm/left-pad", headers={"Accept": CORGI})
        assert (response.status, response.headers["ETag"]) == (200, etag)
        assert await response.read() == body
        await services(client).metacache.drain()
        # One full GET per TTL (no validator to send), in the background.
        assert registry.upstream.count("/left-pad") == 1 + round_
        last = registry.upstream.last("/left-pad")
        assert "If-None-Match" not in last.headers
        assert "If-Modified-Since" not in last.headers
        again = await client.get("/npm/left-pad", headers={"Accept": CORGI, "If-None-Match": etag})
        assert again.status == 304
    # The same bytes every time: the view rendered once is the one still served.
    assert rendered.renders == 1


async def test_npm_an_install_just_after_expiry_does_not_wait_for_upstream(
    make_mirror: MakeClient, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url, **SETTINGS)
    first = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    etag = first.headers["ETag"]
    # Asked for near the end of its TTL: revalidated ahead, in the background.
    clock.advance(TTL * REFRESH_AHEAD_FRACTION + timedelta(seconds=10))
    near = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    assert near.headers["ETag"] == etag
    await services(client).metacache.drain()
    assert registry.upstream.count("/left-pad") == 2
    # The install just after the first copy's TTL gets a fresh copy: not stale, no request.
    clock.advance(TTL * (1 - REFRESH_AHEAD_FRACTION))
    after = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    assert (after.status, after.headers["ETag"]) == (200, etag)
    await services(client).metacache.drain()
    assert registry.upstream.count("/left-pad") == 2
    assert stale_serves(client) == 0

    # With the upstream hanging, an install past the TTL is answered at once all the same.
    registry.upstream.hold("/left-pad")
    clock.advance(STEP)
    async with asyncio.timeout(5):
        for _ in range(3):
            held = await client.get("/npm/left-pad", headers={"Accept": CORGI})
            assert (held.status, held.headers["ETag"]) == (200, etag)
        tarball = await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")
        assert tarball.status == 200
    await registry.upstream.wait_for("/left-pad", 3)
    registry.upstream.release("/left-pad")
    await services(client).metacache.drain()
    assert registry.upstream.count("/left-pad") == 3  # one revalidation for every request
    assert registry.upstream.count(registry.tarball_path("left-pad", "1.3.0")) == 1
    assert services(client).rendered.renders == 1


# Maven: release files are never revalidated ------------------------------------------------

LIB = "org/example/lib"
MAVEN_FILES = [
    f"{LIB}/1.4.0/lib-1.4.0.{suffix}"
    for suffix in ("pom", "pom.sha1", "jar", "jar.sha1", "jar.sha256", "jar.md5", "jar.asc")
] + [f"{LIB}/1.1.0/lib-1.1.0.{suffix}" for suffix in ("pom", "pom.sha1", "jar", "jar.sha1")]


@pytest.fixture
async def repo(aiohttp_server: AiohttpServer) -> FakeMavenRepository:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.4.0", published=NOW - timedelta(days=20))
    # No .sha256 upstream: the artifact is verified against its .sha1, the 404 remembered.
    repo.add_version("org.example", "lib", "1.1.0", published=OLD, checksums=("sha1", "md5"))
    await repo.start(aiohttp_server)
    return repo


async def get_all(client: Client, repo: FakeMavenRepository) -> None:
    for path in MAVEN_FILES:
        response = await client.get("/maven/" + path)
        assert response.status == 200, path
        assert await response.read() == repo.body(path)


async def test_a_warm_maven_build_asks_upstream_nothing(
    make_mirror: MakeClient, repo: FakeMavenRepository, clock: FixedClock
) -> None:
    client = await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url, **SETTINGS)
    await get_all(client, repo)
    first_round = len(repo.requests)
    for _ in range(6):
        clock.advance(STEP)
        await get_all(client, repo)
        await services(client).metacache.drain()
    # Every request counted (GET and HEAD, any path): none after the first round.
    assert repo.requests[first_round:] == []
    absent = [f"{LIB}/1.1.0/lib-1.1.0.{suffix}.sha256" for suffix in ("jar", "pom")]
    # The absent .sha256 files are asked once a day (IMMUTABLE_NEGATIVE_TTL), no more.
    clock.advance(IMMUTABLE_NEGATIVE_TTL)
    for _ in range(2):
        await get_all(client, repo)
    assert sorted(seen.path for seen in repo.requests[first_round:]) == absent
    # A worker started now reads the checksums from disk and the publish times from shared
    # state; only the remembered 404s (kept in each worker's memory) are asked once again.
    second_round = len(repo.requests)
    other = await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url, **SETTINGS)
    for _ in range(2):
        await get_all(other, repo)
    assert sorted(seen.path for seen in repo.requests[second_round:]) == absent


async def test_maven_metadata_is_still_revalidated(
    make_mirror: MakeClient, repo: FakeMavenRepository, clock: FixedClock
) -> None:
    client = await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url, **SETTINGS)
    metadata = f"{LIB}/maven-metadata.xml"
    assert (await client.get("/maven/" + metadata)).status == 200
    for round_ in range(1, 4):
        clock.advance(STEP)
        assert (await client.get("/maven/" + metadata)).status == 200
        await services(client).metacache.drain()
        assert repo.count(metadata, method="GET") == 1 + round_


async def test_a_checksum_that_is_not_one_is_refused_and_not_kept(
    make_mirror: MakeClient, repo: FakeMavenRepository
) -> None:
    client = await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url, **SETTINGS)
    jar = f"{LIB}/1.4.0/lib-1.4.0.jar"
    repo.add_file(jar + ".sha1", b"<html>rate limited</html>", last_modified=OLD)
    repo.add_file(jar + ".asc", b"<html>rate limited</html>", last_modified=OLD)
    for path in (jar + ".sha1", jar + ".asc", jar):
        assert (await client.get("/maven/" + path)).status == 502, path
    # Fixed upstream: served, as nothing wrong was kept.
    jar_bytes = repo.body(jar)
    repo.add_file(jar + ".sha1", digest(jar_bytes, "sha1").encode(), last_modified=OLD)
    signature = b"-----BEGIN PGP SIGNATURE-----\nfake\n-----END PGP SIGNATURE-----\n"
    repo.add_file(jar + ".asc", signature, last_modified=OLD)
    for path in (jar + ".sha1", jar + ".asc", jar):
        response = await client.get("/maven/" + path)
        assert response.status == 200, path
        assert await response.read() == repo.body(path)


# PyPI: files and their .metadata are never revalidated --------------------------------------


@pytest.fixture
async def index(aiohttp_server: AiohttpServer) -> FakePypiIndex:
    index = FakePypiIndex()
    index.add_sdist("demo", "1.0", uploaded=OLD)
    index.add_wheel("demo", "1.1", uploaded=NOW - timedelta(days=30))
    await index.start(aiohttp_server)
    return index


async def test_a_warm_pypi_install_asks_upstream_for_no_file(
    make_mirror: MakeClient, index: FakePypiIndex, clock: FixedClock
) -> None:
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url, **SETTINGS)
    names = ["demo-1.0.tar.gz", "demo-1.1-py3-none-any.whl", "demo-1.1-py3-none-any.whl.metadata"]

    async def install() -> None:
        page = await client.get(
            "/pypi/simple/demo/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        assert page.status == 200
        for name in names:
            response = await client.get(f"/pypi/files/demo/{name}")
            assert response.status == 200, name

    def file_requests() -> list[str]:
        return [seen.path for seen in index.requests if seen.path.startswith("/packages/")]

    await install()
    assert len(file_requests()) == len(names)
    for round_ in range(1, 6):
        clock.advance(STEP)
        await install()
        await services(client).metacache.drain()
        # Files (requests under /packages/): none again. The simple page, a document, is
        # revalidated once per TTL, in the background.
        assert len(file_requests()) == len(names)
        assert index.upstream.count(index.page_path("demo")) == 1 + round_
    assert {seen.path for seen in index.requests} == {index.page_path("demo"), *file_requests()}
