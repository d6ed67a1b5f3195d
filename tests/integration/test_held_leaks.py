"""A hostile upstream per ecosystem whose held versions (young, blocked, or both) carry a
marker string in every field they have: readme, description, homepage, keywords,
requires_dist, summary, pom fields, file URLs. No answer the mirror gives for those packages
may contain the marker, in any document form, Accept variant or encoding; and a package with
nothing visible answers 404 saying why."""

from __future__ import annotations

import gzip
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from mirror.model import RuleRecord
from mirror.services import SERVICES
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, Client, MakeClient

YOUNG = NOW - timedelta(hours=2)
SECRET = f"HELD-SECRET-{secrets.token_hex(6)}"
CORGI = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
PIP = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
ACCEPTS = {
    "npm": [None, "*/*", "application/json", CORGI, "application/vnd.npm.install-v1+json"],
    "pypi": [
        None,
        "*/*",
        PIP,
        "text/html",
        "application/vnd.pypi.simple.v1+html",
        "application/vnd.pypi.simple.latest+json",
    ],
    "maven": [None, "*/*", "application/xml"],
}
ENCODINGS = ["gzip", "identity", "br, gzip, deflate"]


def text_fields(tag: str) -> dict[str, object]:
    """Every npm package-level text field, each carrying the marker."""
    return {
        "description": f"{tag} {SECRET}",
        "readme": f"# {SECRET}",
        "readmeFilename": f"{SECRET}.md",
        "homepage": f"https://example.com/{SECRET}",
        "keywords": [SECRET],
        "repository": {"type": "git", "url": f"git+https://example.com/{SECRET}.git"},
        "bugs": {"url": f"https://example.com/{SECRET}"},
        "license": SECRET,
        "author": {"name": SECRET},
        "contributors": [{"name": SECRET}],
        "maintainers": [{"name": SECRET, "email": f"{SECRET}@example.com"}],
        "x-unknown": SECRET,
    }


async def block(client: Client, ecosystem: str, package: str, versions: str) -> None:
    services = client.app[SERVICES]
    await services.state.add_rule(
        RuleRecord(
            id=f"block-{ecosystem}-{package}",
            kind="block",
            ecosystem=ecosystem,
            package=package,
            versions=versions,
            reason="compromised release",
            created_at=NOW,
            created_by="security",
        )
    )
    await services.policy.reload()


@pytest.fixture
async def raw_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A session that hands back the bytes as sent (gzip included): every encoding is
    checked, not only what a client library decodes."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def answers(
    session: aiohttp.ClientSession,
    client: Client,
    paths: list[str],
    accepts: list[str | None],
) -> list[tuple[str, int, bytes, str]]:
    """(what was asked, status, decoded body, all header text) for every path, Accept,
    Accept-Encoding, GET and HEAD."""
    found: list[tuple[str, int, bytes, str]] = []
    for path in paths:
        for accept in accepts:
            for encoding in ENCODINGS:
                headers = {"Accept-Encoding": encoding}
                if accept is not None:
                    headers["Accept"] = accept
                for method in ("GET", "HEAD"):
                    url = client.make_url(path)
                    async with session.request(method, url, headers=headers) as response:
                        body = await response.read()
                        if response.headers.get("Content-Encoding") == "gzip" and body:
                            body = gzip.decompress(body)
                        header_text = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
                        label = f"{method} {path} Accept={accept!r} Accept-Encoding={encoding!r}"
                        found.append((label, response.status, body, header_text))
    return found


def assert_no_secret(found: list[tuple[str, int, bytes, str]]) -> None:
    for label, status, body, headers in found:
        for marker in (SECRET, SECRET.lower()):
            assert marker.encode() not in body, f"{label} ({status}) leaks it in the body"
            assert marker not in headers, f"{label} ({status}) leaks it in a header"
        assert status < 500, f"{label} answered {status}"


# npm ---------------------------------------------------------------------------------------


@pytest.fixture
async def npm_client(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> tuple[Client, FakeNpmRegistry]:
    registry = FakeNpmRegistry()
    registry.add_version("sly", "1.0.0", published=OLD)
    held_deps = {SECRET.lower(): "1.0.0"}
    # Old but blocked: its text must go as well as the young ones'.
    registry.add_version(
        "sly", "1.5.0", published=OLD + timedelta(days=1), extra=text_fields("blocked")
    )
    registry.add_version("sly", "2.0.0", published=YOUNG, dependencies=held_deps,
                         extra=text_fields("young"))  # fmt: skip
    registry.add_version("sly", "3.0.0-beta.1", published=YOUNG, tag="next",
                         extra=text_fields("next"))  # fmt: skip
    registry.add_version("ghost", "0.1.0", published=YOUNG, extra=text_fields("ghost"))
    await registry.start(aiohttp_server)
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)
    await block(client, "npm", "sly", "1.5.0")
    return client, registry


async def test_npm_answers_carry_nothing_of_held_versions(
    npm_client: tuple[Client, FakeNpmRegistry], raw_session: aiohttp.ClientSession
) -> None:
    client, registry = npm_client
    # The upstream does carry it, at the top level too (copied from `latest`, 2.0.0).
    assert registry.packument("sly")["readme"] == f"# {SECRET}"
    paths = [
        "/npm/sly",
        "/npm/sly/latest",
        "/npm/sly/next",
        "/npm/sly/1.0.0",
        "/npm/sly/1.5.0",
        "/npm/sly/2.0.0",
        "/npm/sly/3.0.0-beta.1",
        "/npm/-/package/sly/dist-tags",
        "/npm/sly/-/sly-2.0.0.tgz",
        "/npm/sly/-/sly-1.5.0.tgz",
        "/npm/ghost",
        "/npm/ghost/latest",
        "/npm/ghost/0.1.0",
        "/npm/-/package/ghost/dist-tags",
    ]
    found = await answers(raw_session, client, paths, ACCEPTS["npm"])
    assert_no_secret(found)
    statuses = {label.split(" Accept=")[0]: status for label, status, _b, _h in found}
    assert statuses["GET /npm/sly"] == 200
    assert statuses["GET /npm/sly/2.0.0"] == 404
    assert statuses["GET /npm/sly/-/sly-2.0.0.tgz"] == 403
    for path in ("/npm/ghost", "/npm/ghost/latest", "/npm/-/package/ghost/dist-tags"):
        assert statuses[f"GET {path}"] == 404
    ghost = await client.get("/npm/ghost/latest")
    assert "held in quarantine" in (await ghost.json())["error"]


# PyPI --------------------------------------------------------------------------------------


def pypi_info() -> dict[str, object]:
    return {
        "summary": SECRET,
        "description": f"# {SECRET}",
        "requires_dist": [f"{SECRET.lower()}>=1"],
        "home_page": f"https://example.com/{SECRET}",
        "project_urls": {"Source": f"https://example.com/{SECRET}"},
        "author": SECRET,
        "keywords": SECRET,
    }


@pytest.fixture(params=["json", "html"])
async def pypi_client(
    make_mirror: MakeClient, request: pytest.FixtureRequest, aiohttp_server: AiohttpServer
) -> tuple[Client, FakePypiIndex]:
    index = FakePypiIndex(mode=request.param)
    index.add_wheel("sly", "1.0", uploaded=OLD)
    index.add_wheel("sly", "1.5", uploaded=OLD + timedelta(days=1))  # blocked below
    index.add_wheel("sly", "2.0", uploaded=YOUNG)
    index.add_sdist("sly", "2.0", uploaded=YOUNG)
    index.set_release_info("sly", "2.0", **pypi_info())
    index.set_release_info("sly", "1.5", **pypi_info())
    index.add_raw_link("sly", f"file:///{SECRET}/sly-0.5.tar.gz", "sly-0.5.tar.gz", "0.5")
    index.add_raw_link("sly", f"javascript:{SECRET}", "sly-0.6.tar.gz", "0.6")
    index.add_raw_link("sly", f"https://evil.test/{SECRET}/sly-0.7.tar.gz", "sly-0.7.tar.gz", "0.7")
    index.add_wheel("ghost", "0.1", uploaded=YOUNG)
    index.set_release_info("ghost", "0.1", **pypi_info())
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    await block(client, "pypi", "sly", "==1.5")
    return client, index


async def test_pypi_answers_carry_nothing_of_held_releases(
    pypi_client: tuple[Client, FakePypiIndex], raw_session: aiohttp.ClientSession
) -> None:
    client, index = pypi_client
    assert index.api_json("sly")["info"]["summary"] == SECRET  # the upstream does carry it
    wheel = index.file("sly-2.0-py3-none-any.whl").filename
    paths = [
        "/pypi/simple/sly/",
        "/pypi/pypi/sly/json",
        "/pypi/pypi/sly/1.0/json",
        "/pypi/pypi/sly/1.5/json",
        "/pypi/pypi/sly/2.0/json",
        f"/pypi/files/sly/{wheel}",
        f"/pypi/files/sly/{wheel}.metadata",
        "/pypi/files/sly/sly-0.5.tar.gz",
        "/pypi/files/sly/sly-0.7.tar.gz",
        "/pypi/simple/ghost/",
        "/pypi/pypi/ghost/json",
        "/pypi/pypi/ghost/0.1/json",
    ]
    found = await answers(raw_session, client, paths, ACCEPTS["pypi"])
    assert_no_secret(found)
    statuses = {label.split(" Accept=")[0]: status for label, status, _b, _h in found}
    assert statuses["GET /pypi/simple/sly/"] == 200
    assert statuses["GET /pypi/pypi/sly/json"] == 200
    assert statuses["GET /pypi/pypi/sly/2.0/json"] == 403
    assert statuses["GET /pypi/simple/ghost/"] == 404
    assert statuses["GET /pypi/pypi/ghost/json"] == 404
    # No request ever reached a hostile link's target.
    assert not [seen for seen in index.requests if SECRET in seen.path]


# Maven -------------------------------------------------------------------------------------


def pom_extra() -> str:
    return (
        f"<name>{SECRET}</name><description>{SECRET}</description>"
        f"<url>https://example.com/{SECRET}</url>"
        f"<licenses><license><name>{SECRET}</name></license></licenses>"
    )


@pytest.fixture
async def maven_client(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> tuple[Client, FakeMavenRepository]:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "sly", "1.0.0", published=OLD)
    repo.add_version("org.example", "sly", "1.5.0", published=OLD + timedelta(days=1),
                     pom_extra=pom_extra())  # fmt: skip
    repo.add_version("org.example", "sly", "2.0.0", published=YOUNG, pom_extra=pom_extra())
    # A stamp that lies: nothing deployed for 200 days.
    repo.set_metadata("org.example", "sly", last_updated=OLD)
    repo.add_version("org.example", "bare", "1.0.0", published=OLD)
    repo.add_version("org.example", "bare", "2.0.0", published=YOUNG, pom_extra=pom_extra())
    # No <versions>: 2.0.0 is named only by <latest>, 1.0.0 only by <release>.
    repo.set_metadata(
        "org.example",
        "bare",
        raw=(
            "<metadata><groupId>org.example</groupId><artifactId>bare</artifactId>"
            f"<description>{SECRET}</description><versioning><latest>2.0.0</latest>"
            f"<release>1.0.0</release><snapshot><timestamp>{SECRET}</timestamp></snapshot>"
            f"<lastUpdated>{OLD:%Y%m%d%H%M%S}</lastUpdated></versioning></metadata>"
        ).encode(),
    )
    repo.add_version("org.example", "ghost", "0.1.0", published=YOUNG, pom_extra=pom_extra())
    await repo.start(aiohttp_server)
    client = await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url)
    await block(client, "maven", "org.example:sly", "[1.5.0]")
    return client, repo


async def test_maven_answers_carry_nothing_of_held_versions(
    maven_client: tuple[Client, FakeMavenRepository], raw_session: aiohttp.ClientSession
) -> None:
    client, repo = maven_client
    assert SECRET.encode() in repo.body("org/example/sly/2.0.0/sly-2.0.0.pom")
    paths: list[str] = []
    for artifact in ("sly", "bare", "ghost"):
        base = f"/maven/org/example/{artifact}/maven-metadata.xml"
        paths += [base] + [f"{base}.{algorithm}" for algorithm in ("sha1", "md5", "sha256")]
    for artifact, version in (("sly", "1.5.0"), ("sly", "2.0.0"), ("bare", "2.0.0"),
                              ("ghost", "0.1.0")):  # fmt: skip
        stem = f"/maven/org/example/{artifact}/{version}/{artifact}-{version}"
        paths += [f"{stem}.pom", f"{stem}.jar", f"{stem}.pom.sha1"]
    found = await answers(raw_session, client, paths, ACCEPTS["maven"])
    assert_no_secret(found)
    statuses = {label.split(" Accept=")[0]: status for label, status, _b, _h in found}
    for artifact in ("sly", "bare"):
        assert statuses[f"GET /maven/org/example/{artifact}/maven-metadata.xml"] == 200
    assert statuses["GET /maven/org/example/ghost/maven-metadata.xml"] == 404
    bodies = {label: body for label, _s, body, _h in found}
    sly = bodies[
        "GET /maven/org/example/sly/maven-metadata.xml Accept=None Accept-Encoding='identity'"
    ]
    assert b"2.0.0" not in sly
    assert b"1.5.0" not in sly
    assert b"<latest>1.0.0</latest>" in sly
    bare = bodies[
        "GET /maven/org/example/bare/maven-metadata.xml Accept=None Accept-Encoding='identity'"
    ]
    assert b"2.0.0" not in bare
    assert b"<version>1.0.0</version>" in bare
