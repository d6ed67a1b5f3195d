"""What a cache in front of the mirror may do with its answers, over real HTTP: artifacts are
kept at most `ARTIFACT_MAX_AGE` and then revalidated with their strong ETag, and a block added
after a cached fetch turns that revalidation into a 403 (never a 304); every answer carries
HSTS when the mirror serves TLS itself (and none over plain HTTP); views whose URLs come from
X-Forwarded-* headers list those headers in Vary."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from mirror.app import create_app
from mirror.artifacts.serve import ARTIFACT_MAX_AGE, HOT_FILE_MAX
from mirror.clock import FixedClock
from mirror.config import load_config
from mirror.server import ssl_context
from tests.conftest import mirror_settings
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import Client, MakeClient

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=200)
TOKEN = "alice-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACT_CACHING = f"public, max-age={ARTIFACT_MAX_AGE}, must-revalidate"
FORWARDED = ("X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Prefix")
BIG = bytes(range(256)) * (2 * HOT_FILE_MAX // 256)  # served by sendfile, not from memory


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    registry.add_version("left-pad", "2.0.0", published=OLD)
    registry.replace_tarball("left-pad", "2.0.0", BIG)
    await registry.start(aiohttp_server)
    return registry


def defaults(registry: FakeNpmRegistry) -> dict[str, str]:
    return {
        "MIRROR_NPM_UPSTREAM": registry.url,
        "MIRROR_PYPI_UPSTREAM": "off",
        "MIRROR_ADMIN_TOKENS": f"alice:{TOKEN}",
    }


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(make_mirror, **defaults(registry))


def tarball(version: str) -> str:
    return f"/npm/left-pad/-/left-pad-{version}.tgz"


# artifacts ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
async def test_artifacts_may_be_kept_only_for_a_bounded_time(
    make_mirror: MakeClient, version: str
) -> None:
    client = await make_mirror()
    miss = await client.get(tarball(version))  # streamed while it is stored
    hit = await client.get(tarball(version))  # from disk
    for response in (miss, hit):
        assert response.status == 200
        await response.read()
        assert response.headers["Cache-Control"] == ARTIFACT_CACHING
        assert "immutable" not in response.headers["Cache-Control"]
    assert hit.headers["ETag"].startswith('"')  # strong, so revalidation is exact
    assert hit.headers["ETag"] == miss.headers["ETag"]
    again = await client.get(tarball(version), headers={"If-None-Match": hit.headers["ETag"]})
    assert again.status == 304
    assert again.headers["Cache-Control"] == ARTIFACT_CACHING
    assert await again.read() == b""


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
async def test_a_block_turns_the_revalidation_of_a_cached_file_into_a_403(
    make_mirror: MakeClient, version: str
) -> None:
    client = await make_mirror()
    first = await client.get(tarball(version))
    assert first.status == 200
    await first.read()
    etag = first.headers["ETag"]
    block = {"ecosystem": "npm", "package": "left-pad", "versions": version, "reason": "worm"}
    created = await client.post("/api/v1/blocks", json=block, headers=AUTH)
    assert created.status == 201, await created.text()
    for conditional in (
        {"If-None-Match": etag},
        {"If-None-Match": "*"},
        {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
    ):
        response = await client.get(tarball(version), headers=conditional)
        assert response.status == 403, conditional
        assert (await response.json())["reason"] == "blocked"
        head = await client.head(tarball(version), headers=conditional)
        assert head.status == 403, conditional


@pytest.fixture
async def three_ecosystems(aiohttp_server: AiohttpServer, make_mirror: MakeClient) -> Client:
    index = FakePypiIndex()
    index.add_wheel("demo", "1.0", uploaded=OLD)
    await index.start(aiohttp_server)
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    await repo.start(aiohttp_server)
    return await make_mirror(MIRROR_PYPI_UPSTREAM=index.url, MIRROR_MAVEN_UPSTREAM=repo.url)


ARTIFACTS = {
    "npm": ("left-pad", "1.0.0", tarball("1.0.0")),
    "pypi": ("demo", "1.0", "/pypi/files/demo/demo-1.0-py3-none-any.whl"),
    "maven": ("org.example:lib", "1.0.0", "/maven/org/example/lib/1.0.0/lib-1.0.0.jar"),
}


@pytest.mark.parametrize("ecosystem", sorted(ARTIFACTS))
async def test_in_every_ecosystem_a_cached_file_revalidates_into_a_403_once_blocked(
    three_ecosystems: Client, ecosystem: str
) -> None:
    client = three_ecosystems
    package, version, path = ARTIFACTS[ecosystem]
    if ecosystem == "pypi":  # the mirror learns its files from the project page
        assert (await client.get("/pypi/simple/demo/")).status == 200
    first = await client.get(path)
    assert first.status == 200, await first.text()
    await first.read()
    assert first.headers["Cache-Control"] == ARTIFACT_CACHING
    etag = first.headers["ETag"]
    still_allowed = await client.get(path, headers={"If-None-Match": etag})
    assert still_allowed.status == 304
    block = {"ecosystem": ecosystem, "package": package, "versions": version, "reason": "worm"}
    created = await client.post("/api/v1/blocks", json=block, headers=AUTH)
    assert created.status == 201, await created.text()
    for method in ("GET", "HEAD"):
        response = await client.request(method, path, headers={"If-None-Match": etag})
        assert response.status == 403, (method, path)


# HSTS -----------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


EVERY_KIND = [
    ("GET", "/healthz", {}),
    ("GET", "/npm/left-pad", {}),
    ("GET", tarball("1.0.0"), {}),
    ("GET", tarball("2.0.0"), {}),
    ("HEAD", tarball("2.0.0"), {}),
    ("GET", "/npm/left-pad/-/left-pad-9.9.9.tgz", {}),  # an error
    ("GET", "/nothing-here", {}),  # aiohttp's own 404, through the error middleware
    ("POST", "/npm/left-pad", {}),  # 405
    ("GET", "/api/v1/audit", {}),  # 401
]


async def test_every_answer_over_tls_carries_hsts(
    aiohttp_server: AiohttpServer,
    registry: FakeNpmRegistry,
    tmp_path: Path,
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    config = load_config(
        None,
        mirror_settings(
            tmp_path / "data",
            **defaults(registry),
            MIRROR_TLS_CERT=str(cert),
            MIRROR_TLS_KEY=str(key),
        ),
    )
    server = await aiohttp_server(
        create_app(config, clock=FixedClock(NOW)), ssl=ssl_context(config)
    )
    assert str(server.make_url("/")).startswith("https://")
    trust = ssl.create_default_context(cafile=str(cert))
    statuses = []
    async with aiohttp.ClientSession() as session:
        for method, path, headers in EVERY_KIND:
            async with session.request(
                method, server.make_url(path), headers=headers, ssl=trust
            ) as response:
                await response.read()
                statuses.append(response.status)
                assert response.headers.get("Strict-Transport-Security") == "max-age=31536000"
        async with session.get(server.make_url(tarball("1.0.0")), ssl=trust) as first:
            await first.read()
        revalidate = {"If-None-Match": first.headers["ETag"]}
        async with session.get(
            server.make_url(tarball("1.0.0")), headers=revalidate, ssl=trust
        ) as response:
            assert response.status == 304
            assert response.headers.get("Strict-Transport-Security") == "max-age=31536000"
    assert statuses == [200, 200, 200, 200, 200, 404, 404, 405, 401]


async def test_no_hsts_over_plain_http(make_mirror: MakeClient) -> None:
    client = await make_mirror()
    for method, path, headers in EVERY_KIND:
        response = await client.request(method, path, headers=headers)
        await response.read()
        assert "Strict-Transport-Security" not in response.headers, path


# Vary -----------------------------------------------------------------------------------


def vary_of(response: aiohttp.ClientResponse) -> list[str]:
    return [name.strip().lower() for name in response.headers.get("Vary", "").split(",")]


async def test_views_built_from_forwarded_headers_list_them_in_vary(
    make_mirror: MakeClient,
) -> None:
    client = await make_mirror(MIRROR_TRUSTED_PROXIES="127.0.0.1")
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "mirror.example",
        "X-Forwarded-Prefix": "/registry",
    }
    direct = await client.get("/npm/left-pad")
    proxied = await client.get("/npm/left-pad", headers=forwarded)
    direct_url = (await direct.json())["versions"]["1.0.0"]["dist"]["tarball"]
    proxied_url = (await proxied.json())["versions"]["1.0.0"]["dist"]["tarball"]
    assert proxied_url.startswith("https://mirror.example/registry/npm/")
    assert direct_url != proxied_url  # the headers do change the body ...
    for response in (direct, proxied):  # ... so both answers say so, whoever asked
        assert {name.lower() for name in FORWARDED} <= set(vary_of(response))
        assert {"accept", "accept-encoding"} <= set(vary_of(response))
    etag = proxied.headers["ETag"]
    not_modified = await client.get("/npm/left-pad", headers={**forwarded, "If-None-Match": etag})
    assert not_modified.status == 304
    assert {name.lower() for name in FORWARDED} <= set(vary_of(not_modified))
    # Artifacts hold no URLs: they do not vary on the forwarded headers.
    artifact = await client.get(tarball("1.0.0"), headers=forwarded)
    assert artifact.status == 200
    assert not {name.lower() for name in FORWARDED} & set(vary_of(artifact))


@pytest.mark.parametrize(
    "overrides",
    [{}, {"MIRROR_TRUSTED_PROXIES": "127.0.0.1", "MIRROR_PUBLIC_URL": "https://m.example"}],
    ids=["no trusted proxies", "public_url fixes the URLs"],
)
async def test_no_forwarded_vary_when_the_headers_cannot_change_the_body(
    make_mirror: MakeClient, overrides: dict[str, str]
) -> None:
    client = await make_mirror(**overrides)
    response = await client.get("/npm/left-pad", headers={"X-Forwarded-Host": "elsewhere.example"})
    assert response.status == 200
    assert "elsewhere.example" not in await response.text()
    assert not {name.lower() for name in FORWARDED} & set(vary_of(response))


async def test_pypi_pages_and_redirects_list_forwarded_headers_in_vary(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    index = FakePypiIndex()
    index.add_wheel("demo", "1.0", uploaded=OLD)
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url, MIRROR_TRUSTED_PROXIES="127.0.0.1")
    forwarded = {"X-Forwarded-Host": "mirror.example"}
    page = await client.get("/pypi/simple/demo/", headers=forwarded)
    assert page.status == 200
    assert "mirror.example" in await page.text()
    redirect = await client.get("/pypi/simple/demo", headers=forwarded, allow_redirects=False)
    assert redirect.status == 301
    assert redirect.headers["Location"].startswith("http://mirror.example/")
    for response in (page, redirect):
        assert {name.lower() for name in FORWARDED} <= set(vary_of(response))
