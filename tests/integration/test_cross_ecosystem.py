"""Hosts and credentials per ecosystem, through the whole app: npm, PyPI (with a file host) and
Maven upstreams as real servers on 127.0.0.1 that differ only by port, each private upstream
with its own credentials. No ecosystem's request reaches another's host, follows a redirect
there, or carries another's credentials; no answer and no metric names an upstream host."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.config import UpstreamConfig
from mirror.errors import HostNotAllowed
from mirror.metacache import MetaCache
from mirror.upstream import Upstream, UpstreamScope
from tests.fakes.maven import build_metadata
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.fakes.upstream import FakeUpstream, RecordedRequest
from tests.integration.conftest import NOW, OLD, Client, MakeClient

NPM_AUTH = "Bearer npm-secret-token"
PYPI_AUTH = "Bearer pypi-secret-token"
MAVEN_AUTH = "Bearer maven-secret-token"
TARBALL = "/left-pad/-/left-pad-1.0.0.tgz"
MAVEN_METADATA = "/com/acme/lib/maven-metadata.xml"


@dataclass(slots=True)
class Upstreams:
    npm: FakeNpmRegistry
    pypi: FakePypiIndex
    pypi_files: FakeUpstream
    maven: FakeUpstream

    def by_name(self, name: str) -> FakeUpstream:
        return {
            "npm": self.npm.upstream,
            "pypi": self.pypi.upstream,
            "pypi-files": self.pypi_files,
            "maven": self.maven,
        }[name]

    def all(self) -> dict[str, FakeUpstream]:
        return {name: self.by_name(name) for name in ("npm", "pypi", "pypi-files", "maven")}

    def ports(self) -> list[str]:
        return [fake.host.rsplit(":", 1)[1] for fake in self.all().values()]


@pytest.fixture
async def upstreams(aiohttp_server: AiohttpServer) -> Upstreams:
    npm = FakeNpmRegistry()
    npm.add_version("left-pad", "1.0.0", published=OLD)
    npm.add_version("is-odd", "3.0.1", published=OLD)
    await npm.start(aiohttp_server)
    pypi = FakePypiIndex()
    pypi.add_wheel("demo", "1.0", uploaded=OLD)
    await pypi.start(aiohttp_server)
    pypi_files = FakeUpstream()
    await pypi_files.start(aiohttp_server)
    maven = FakeUpstream()
    await maven.start(aiohttp_server)
    maven.add(
        MAVEN_METADATA,
        build_metadata("com.acme", "lib", ["1.0"], OLD),
        content_type="application/xml",
    )
    # A version's age is its .pom's Last-Modified (the newest is always looked up).
    maven.add("/com/acme/lib/1.0/lib-1.0.pom", b"<project/>", last_modified=OLD)
    return Upstreams(npm=npm, pypi=pypi, pypi_files=pypi_files, maven=maven)


@pytest.fixture
def make_mirror(make_mirror: MakeClient, upstreams: Upstreams) -> MakeClient:
    return partial(
        make_mirror,
        MIRROR_NPM_UPSTREAM=upstreams.npm.url,
        MIRROR_NPM_UPSTREAM_AUTH=NPM_AUTH,
        MIRROR_PYPI_UPSTREAM=upstreams.pypi.url,
        MIRROR_PYPI_UPSTREAM_AUTH=PYPI_AUTH,
        MIRROR_PYPI_FILE_HOSTS=upstreams.pypi_files.host,
        MIRROR_MAVEN_UPSTREAM=upstreams.maven.url("/"),
        MIRROR_MAVEN_UPSTREAM_AUTH=MAVEN_AUTH,
    )


def authorizations(requests: list[RecordedRequest]) -> set[str | None]:
    return {request.headers.get("Authorization") for request in requests}


def assert_credentials_stayed_home(upstreams: Upstreams) -> None:
    """Each upstream saw only its own ecosystem's credentials (or none, for a file host)."""
    own = {"npm": NPM_AUTH, "pypi": PYPI_AUTH, "pypi-files": None, "maven": MAVEN_AUTH}
    for name, fake in upstreams.all().items():
        assert authorizations(fake.requests) <= {own[name]}, name


async def assert_discloses_no_upstream(response: ClientResponse, upstreams: Upstreams) -> None:
    shown = f"{response.reason} {await response.text()}"
    for secret in ("127.0.0.1", "localhost", "http:", *upstreams.ports()):
        assert secret not in shown, (secret, shown)


def point_tarball_at(upstreams: Upstreams, url: str) -> None:
    """The upstream packument of left-pad now declares its tarball at `url`."""
    packument: dict[str, Any] = upstreams.npm.packument("left-pad")
    packument["versions"]["1.0.0"]["dist"]["tarball"] = url
    upstreams.npm.upstream.add(
        FakeNpmRegistry.packument_path("left-pad"),
        json.dumps(packument).encode(),
        content_type="application/json",
    )


# npm documents and redirects that point at another ecosystem ------------------------------


@pytest.mark.parametrize("target", ["maven", "pypi-files", "pypi"])
async def test_a_packument_pointing_at_another_ecosystems_host_is_never_followed(
    client: Client, upstreams: Upstreams, target: str
) -> None:
    elsewhere = upstreams.by_name(target)
    elsewhere.add(TARBALL, b"another ecosystem's bytes")
    point_tarball_at(upstreams, elsewhere.url(TARBALL))

    response = await client.get(f"/npm{TARBALL}")

    # The tarball came from the npm upstream itself (the canonical URL), verified.
    assert response.status == 200
    assert await response.read() == upstreams.npm.version("left-pad", "1.0.0").tarball
    assert upstreams.npm.upstream.count(TARBALL) == 1
    assert elsewhere.requests == []
    assert authorizations(upstreams.npm.requests) == {NPM_AUTH}
    assert_credentials_stayed_home(upstreams)


@pytest.mark.parametrize("target", ["maven", "pypi-files"])
async def test_an_npm_redirect_to_another_ecosystems_host_is_a_502_without_a_request_there(
    client: Client, upstreams: Upstreams, target: str
) -> None:
    elsewhere = upstreams.by_name(target)
    elsewhere.add(TARBALL, b"another ecosystem's bytes")
    elsewhere.add("/is-odd", b"{}", content_type="application/json")
    upstreams.npm.upstream.redirect(TARBALL, elsewhere.url(TARBALL))
    upstreams.npm.upstream.redirect("/is-odd", elsewhere.url("/is-odd"), status=301)

    tarball = await client.get(f"/npm{TARBALL}")
    packument = await client.get("/npm/is-odd")

    for response in (tarball, packument):
        assert response.status == 502
        body = await response.json()
        assert body["reason"] == "host-not-allowed"
        assert "redirected" in body["error"]
        assert "does not follow it" in body["error"]
        await assert_discloses_no_upstream(response, upstreams)
    assert elsewhere.requests == []
    assert_credentials_stayed_home(upstreams)


async def test_the_npm_relay_never_follows_a_redirect_to_another_ecosystems_host(
    client: Client, upstreams: Upstreams
) -> None:
    upstreams.maven.add("/-/v1/search", b'{"objects": []}', content_type="application/json")
    upstreams.npm.upstream.redirect("/-/v1/search", upstreams.maven.url("/-/v1/search"))

    response = await client.get(
        "/npm/-/v1/search?text=left-pad", headers={"Authorization": "Bearer a-clients-token"}
    )

    assert response.status == 502
    assert (await response.json())["reason"] == "host-not-allowed"
    await assert_discloses_no_upstream(response, upstreams)
    assert upstreams.maven.requests == []
    assert authorizations(upstreams.npm.requests) == {NPM_AUTH}


async def test_a_pypi_page_linking_files_on_other_ecosystems_hosts_offers_none_of_them(
    client: Client, upstreams: Upstreams
) -> None:
    """A PyPI file URL on the npm or Maven upstream host is dropped from the page, and its
    file is a 404 without any request to those hosts."""
    wheel = upstreams.pypi.file("demo-1.0-py3-none-any.whl")
    page = upstreams.pypi.page_json("demo")
    page["files"][0]["url"] = upstreams.npm.upstream.url(wheel.path)
    page["files"].append({**page["files"][0], "url": upstreams.maven.url(wheel.path)})
    upstreams.pypi.upstream.add(
        FakePypiIndex.page_path("demo"),
        json.dumps(page).encode(),
        content_type="application/vnd.pypi.simple.v1+json",
    )
    upstreams.npm.upstream.add(wheel.path, wheel.data)
    upstreams.maven.add(wheel.path, wheel.data)

    listing = await client.get(
        "/pypi/simple/demo/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    # Both links were dropped, so nothing is left to offer: a 404 that says so.
    assert listing.status == 404
    assert "demo" in (await listing.json())["error"]
    file = await client.get(f"/pypi/files/demo/{wheel.filename}")
    assert file.status == 404
    assert upstreams.npm.upstream.count(wheel.path) == 0
    assert upstreams.maven.count(wheel.path) == 0
    assert_credentials_stayed_home(upstreams)


async def test_a_maven_redirect_to_the_npm_host_is_refused(
    client: Client, upstreams: Upstreams
) -> None:
    upstreams.npm.upstream.add(MAVEN_METADATA, b"<metadata/>", content_type="application/xml")
    upstreams.maven.redirect(MAVEN_METADATA, upstreams.npm.upstream.url(MAVEN_METADATA))

    response = await client.get(f"/maven{MAVEN_METADATA}")

    assert response.status == 502
    await assert_discloses_no_upstream(response, upstreams)
    assert upstreams.npm.upstream.count(MAVEN_METADATA) == 0
    assert authorizations(upstreams.maven.requests) == {MAVEN_AUTH}


async def test_a_cached_document_is_never_served_to_another_ecosystem(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    """The metadata cache checks the asking ecosystem's hosts before its copies: a document
    cached for Maven is a HostNotAllowed for npm, not a cache hit."""
    upstream = Upstream(
        UpstreamConfig(retries=0),
        scopes=[
            UpstreamScope.of("npm", upstreams.npm.url),
            UpstreamScope.of("maven", upstreams.maven.url("/")),
        ],
    )
    cache = MetaCache(
        upstream,
        directory=tmp_path / "metadata",
        ttl=timedelta(minutes=5),
        stale_max=timedelta(days=1),
        clock=FixedClock(NOW),
    )
    await upstream.start()
    try:
        url = upstreams.maven.url(MAVEN_METADATA)
        assert (await cache.get(url, bytes, ecosystem="maven")).raw.startswith(b"<?xml")
        with pytest.raises(HostNotAllowed):
            await cache.get(url, bytes, ecosystem="npm")
    finally:
        await cache.close()
        await upstream.close()
    assert upstreams.maven.count(MAVEN_METADATA) == 1


# credentials ---------------------------------------------------------------------------------


async def test_each_upstream_gets_its_own_credentials_only(
    client: Client, upstreams: Upstreams
) -> None:
    """Three upstreams on one address, differing only by port, plus a PyPI file host: each
    sees its own ecosystem's token and nobody else's; the file host sees none."""
    wheel = upstreams.pypi.file("demo-1.0-py3-none-any.whl")
    files_path = "/files" + wheel.path
    upstreams.pypi_files.add(files_path, wheel.data)
    page = upstreams.pypi.page_json("demo")
    page["files"][0]["url"] = upstreams.pypi_files.url(files_path)
    upstreams.pypi.upstream.add(
        FakePypiIndex.page_path("demo"),
        json.dumps(page).encode(),
        content_type="application/vnd.pypi.simple.v1+json",
    )

    answers = [
        await client.get("/npm/left-pad"),
        await client.get(f"/npm{TARBALL}"),
        await client.get("/pypi/simple/demo/"),
        await client.get(f"/pypi/files/demo/{wheel.filename}"),
        await client.get(f"/maven{MAVEN_METADATA}"),
    ]

    assert [answer.status for answer in answers] == [200] * 5
    assert await answers[3].read() == wheel.data
    assert authorizations(upstreams.npm.requests) == {NPM_AUTH}
    assert authorizations(upstreams.pypi.requests) == {PYPI_AUTH}
    assert authorizations(upstreams.pypi_files.requests) == {None}
    assert authorizations(upstreams.maven.requests) == {MAVEN_AUTH}


async def test_credentials_belong_to_an_ecosystem_not_to_a_host(
    make_mirror: MakeClient, upstreams: Upstreams
) -> None:
    """PyPI files served from the npm upstream's own host (listed as a PyPI file host): the
    PyPI file request goes there without npm's token, while npm's own requests to that very
    host keep it."""
    client = await make_mirror(MIRROR_PYPI_FILE_HOSTS=upstreams.npm.upstream.host)
    wheel = upstreams.pypi.file("demo-1.0-py3-none-any.whl")
    upstreams.npm.upstream.add(wheel.path, wheel.data)
    page = upstreams.pypi.page_json("demo")
    page["files"][0]["url"] = upstreams.npm.upstream.url(wheel.path)
    upstreams.pypi.upstream.add(
        FakePypiIndex.page_path("demo"),
        json.dumps(page).encode(),
        content_type="application/vnd.pypi.simple.v1+json",
    )

    npm = await client.get(f"/npm{TARBALL}")
    pypi = await client.get(f"/pypi/files/demo/{wheel.filename}")

    assert (npm.status, pypi.status) == (200, 200)
    assert await pypi.read() == wheel.data
    assert upstreams.npm.upstream.last(wheel.path).headers.get("Authorization") is None
    assert upstreams.npm.upstream.last(TARBALL).headers.get("Authorization") == NPM_AUTH
    assert authorizations(upstreams.pypi.requests) == {PYPI_AUTH}


# disclosure ----------------------------------------------------------------------------------


async def test_upstream_failures_and_metrics_name_no_upstream_host(
    client: Client, upstreams: Upstreams
) -> None:
    upstreams.npm.upstream.fail(FakeNpmRegistry.packument_path("is-odd"), 503)
    upstreams.pypi.upstream.fail(FakePypiIndex.page_path("demo"), 500)
    upstreams.maven.fail(MAVEN_METADATA, 502)

    npm = await client.get("/npm/is-odd")
    pypi = await client.get("/pypi/simple/demo/")
    maven = await client.get(f"/maven{MAVEN_METADATA}")

    # Transient upstream failures are a 503 with Retry-After, whichever 5xx upstream sent.
    assert (npm.status, pypi.status, maven.status) == (503, 503, 503)
    assert {response.headers.get("Retry-After") for response in (npm, pypi, maven)} == {"2"}
    assert (await npm.json())["error"] == "the npm upstream answered HTTP 503 for is-odd"
    assert npm.reason == "the npm upstream answered HTTP 503 for is-odd"
    for response in (npm, pypi, maven):
        await assert_discloses_no_upstream(response, upstreams)

    metrics = await client.get("/metrics")
    exposition = await metrics.text()
    assert 'mirror_upstream_requests_total{ecosystem="npm",outcome="http-error"}' in exposition
    assert 'mirror_upstream_requests_total{ecosystem="maven",outcome="http-error"}' in exposition
    assert 'mirror_upstream_errors_total{ecosystem="pypi",kind="http-5xx"}' in exposition
    for secret in ("127.0.0.1", *upstreams.ports()):
        assert secret not in exposition, secret
