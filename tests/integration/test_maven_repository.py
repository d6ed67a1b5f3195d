"""The Maven adapter through the whole app, against a fake Maven repository on 127.0.0.1:
403 for hidden versions' files, 404 for what does not exist, filtered metadata with matching
checksums and X-Checksum headers, lazy publish-time look-ups, blocks, HEAD."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.ecosystems.maven import document
from mirror.model import RuleRecord
from mirror.services import ECOSYSTEM_ADAPTERS, SERVICES, Services
from tests.fakes.maven import FakeMavenRepository, digest
from tests.integration.conftest import NOW, Client, MakeClient

OLD = NOW - timedelta(days=40)
LIB = "org/example/lib"
YOUNG_UNTIL = "2026-11-25T09:00:00Z"  # 1.9.0 was published an hour ago, quarantine 3 days


@dataclass
class Mirror:
    client: Client
    repo: FakeMavenRepository
    clock: FixedClock

    @property
    def services(self) -> Services:
        return self.client.app[SERVICES]


@pytest.fixture
async def repo(aiohttp_server: AiohttpServer) -> FakeMavenRepository:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    repo.add_version("org.example", "lib", "1.4.0", published=NOW - timedelta(days=20))
    repo.add_version("org.example", "lib", "1.5.0", published=NOW - timedelta(days=10))
    repo.add_version("org.example", "lib", "1.9.0", published=NOW - timedelta(hours=1))
    await repo.start(aiohttp_server)
    return repo


@pytest.fixture
async def mirror(repo: FakeMavenRepository, make_mirror: MakeClient, clock: FixedClock) -> Mirror:
    client = await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url, MIRROR_UPSTREAM_RETRIES="0")
    return Mirror(client=client, repo=repo, clock=clock)


def file_path(version: str, suffix: str) -> str:
    return f"{LIB}/{version}/lib-{version}{suffix}"


# refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pom", ".jar", ".jar.sha1", ".pom.asc", ".jar.asc.md5"])
async def test_files_of_a_young_version_are_403_naming_the_quarantine(
    mirror: Mirror, suffix: str
) -> None:
    response = await mirror.client.get("/maven/" + file_path("1.9.0", suffix))
    assert response.status == 403
    assert f"org.example:lib:1.9.0 is in quarantine until {YOUNG_UNTIL}" in response.reason
    body = await response.json()
    assert body["reason"] == "quarantined"
    assert body["until"].startswith("2026-11-25T09:00:00")
    assert "org.example:lib:1.9.0" in body["error"]
    # Only the .pom's HEAD reached upstream, and what the signature signals read (the
    # metadata, the .pom.asc of 1.9.0 and of the version before it); no byte of the refused
    # file was fetched unless it is that .pom.asc.
    assert mirror.repo.count(file_path("1.9.0", ".pom"), method="HEAD") == 1
    fetched = {seen.path for seen in mirror.repo.requests if seen.method == "GET"}
    assert fetched <= {
        "org/example/lib/maven-metadata.xml",
        file_path("1.9.0", ".pom.asc"),
        file_path("1.5.0", ".pom.asc"),
    }


async def test_publish_time_is_looked_up_once_and_kept(mirror: Mirror) -> None:
    for _ in range(3):
        response = await mirror.client.head("/maven/" + file_path("1.9.0", ".jar"))
        assert response.status == 403
    assert mirror.repo.count(file_path("1.9.0", ".pom"), method="HEAD") == 1
    stored = await mirror.services.state.get_publish_time("maven", "org.example:lib:1.9.0")
    assert stored == NOW - timedelta(hours=1)
    # The worker's copy is paid for from its memory budget, like every in-memory cache.
    assert mirror.services.memory.usage()["maven publish times"] > 0
    assert mirror.services.memory.usage()["digest pins"] >= 0


async def test_version_leaves_quarantine_by_the_clock(mirror: Mirror) -> None:
    path = "/maven/" + file_path("1.9.0", ".jar")
    assert (await mirror.client.get(path)).status == 403
    mirror.clock.advance(timedelta(days=3))
    response = await mirror.client.get(path)
    assert response.status == 200
    assert await response.read() == mirror.repo.body(file_path("1.9.0", ".jar"))


async def test_block_refuses_files_and_drops_the_version_from_metadata(mirror: Mirror) -> None:
    services = mirror.services
    await services.state.add_rule(
        RuleRecord(
            id="block-1", kind="block", ecosystem="maven", package="org.example:lib",
            versions="[1.5.0]", reason="compromised build", created_at=NOW,
            created_by="test",
        )
    )  # fmt: skip
    await services.policy.reload()
    response = await mirror.client.get("/maven/" + file_path("1.5.0", ".jar"))
    assert response.status == 403
    assert "org.example:lib:1.5.0 is blocked" in response.reason
    body = await response.json()
    assert body["reason"] == "blocked"
    assert body["block"] is not None
    metadata = await mirror.client.get(f"/maven/{LIB}/maven-metadata.xml")
    xml = await metadata.read()
    assert document.parse_metadata(xml).versions == ("1.0.0", "1.4.0")
    assert b"<release>1.4.0</release>" in xml


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param(file_path("3.0.0", ".pom"), "does not exist upstream", id="unknown-gav"),
        pytest.param(file_path("1.4.0", ".module"), "does not exist upstream", id="no-module"),
        pytest.param(f"{LIB}/2.0-SNAPSHOT/lib-2.0-SNAPSHOT.pom", "releases only", id="snapshot"),
        pytest.param(f"{LIB}/2.0-SNAPSHOT/maven-metadata.xml", "releases only",
                     id="snapshot-metadata"),
        pytest.param("org/example/nothing/maven-metadata.xml", "", id="unknown-metadata"),
        pytest.param(f"{LIB}/", "listings", id="listing"),
    ],
)  # fmt: skip
async def test_what_does_not_exist_is_404(mirror: Mirror, path: str, message: str) -> None:
    response = await mirror.client.get("/maven/" + path)
    assert response.status == 404
    assert message in (await response.json())["error"]


async def test_an_absent_gav_is_asked_upstream_once_per_ttl(mirror: Mirror) -> None:
    path = file_path("3.0.0", ".pom")
    for _ in range(3):
        assert (await mirror.client.get("/maven/" + path)).status == 404
    assert mirror.repo.count(path) == 1
    mirror.clock.advance(timedelta(minutes=6))
    assert (await mirror.client.get("/maven/" + path)).status == 404
    assert mirror.repo.count(path) == 2


@pytest.mark.parametrize(
    "raw_path",
    [
        "/maven/org/example/lib/..%2f..%2fsecret/lib-1.0.jar",
        "/maven/org/example/lib/1.0.0/lib-1.0.0.jar%00.pom",
        "/maven/org/example/lib/1.0.0/lib-1.0.0.jar\\x",
        "/maven/org//example/lib/1.0.0/lib-1.0.0.jar",
    ],
)
async def test_invalid_paths_are_400_before_any_upstream_request(
    mirror: Mirror, raw_path: str
) -> None:
    response = await mirror.client.get(raw_path)
    assert response.status == 400
    assert mirror.repo.count() == 0


async def test_only_get_and_head(mirror: Mirror) -> None:
    response = await mirror.client.put("/maven/" + file_path("1.0.0", ".jar"), data=b"x")
    assert response.status == 405


# visible files ----------------------------------------------------------------------------------


async def test_visible_artifacts_are_byte_identical_and_cached(mirror: Mirror) -> None:
    for suffix in (".pom", ".jar"):
        path = file_path("1.4.0", suffix)
        for _ in range(2):
            response = await mirror.client.get("/maven/" + path)
            assert response.status == 200
            assert await response.read() == mirror.repo.body(path)
        assert mirror.repo.count(path, method="GET") == 1
    head = await mirror.client.head("/maven/" + file_path("1.4.0", ".jar"))
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(mirror.repo.body(file_path("1.4.0", ".jar"))))


@pytest.mark.parametrize("suffix", [".jar.sha1", ".jar.md5", ".pom.sha256", ".jar.asc"])
async def test_companions_of_visible_versions_are_relayed(mirror: Mirror, suffix: str) -> None:
    path = file_path("1.4.0", suffix)
    response = await mirror.client.get("/maven/" + path)
    assert response.status == 200
    assert await response.read() == mirror.repo.body(path)


async def test_absent_companions_are_404_and_remembered(mirror: Mirror) -> None:
    mirror.repo.add_version("org.example", "lib", "1.1.0", published=OLD, checksums=("sha1", "md5"))
    path = file_path("1.1.0", ".jar.sha512")
    for _ in range(2):
        assert (await mirror.client.get("/maven/" + path)).status == 404
    assert mirror.repo.count(path) == 1
    # No upstream .sha256: the jar is verified against its .sha1 alone.
    jar = await mirror.client.get("/maven/" + file_path("1.1.0", ".jar"))
    assert jar.status == 200
    assert await jar.read() == mirror.repo.body(file_path("1.1.0", ".jar"))


async def test_artifact_not_matching_its_sha1_is_refused_and_not_stored(mirror: Mirror) -> None:
    path = file_path("1.5.0", ".jar")
    mirror.repo.add_file(path + ".sha1", b"0" * 40, last_modified=OLD)
    mirror.repo.add_file(path + ".sha256", b"0" * 64, last_modified=OLD)
    response = await mirror.client.get("/maven/" + path)
    assert response.status == 502
    assert (await response.json())["reason"] == "integrity"


async def test_a_kept_checksum_the_file_did_not_match_is_asked_for_again(mirror: Mirror) -> None:
    path = file_path("1.5.0", ".jar")
    body = mirror.repo.body(path)
    mirror.repo.add_file(path + ".sha1", b"0" * 40, last_modified=OLD)
    assert (await mirror.client.get("/maven/" + path)).status == 502
    # Upstream's checksum fixed: the wrong one was not kept for good.
    mirror.repo.add_file(path + ".sha1", digest(body, "sha1").encode(), last_modified=OLD)
    response = await mirror.client.get("/maven/" + path)
    assert response.status == 200
    assert await response.read() == body
    assert mirror.repo.count(path + ".sha1", method="GET") == 2


async def test_an_error_page_holding_a_digest_is_not_taken_for_a_checksum(mirror: Mirror) -> None:
    path = file_path("1.5.0", ".jar")
    body = mirror.repo.body(path)
    request_id = digest(b"request 42", "sha1")
    page = f"<html><body>Please try again. Request id: {request_id} </body></html>".encode()
    mirror.repo.add_file(path + ".sha1", page, last_modified=OLD)
    assert (await mirror.client.get("/maven/" + path + ".sha1")).status == 502
    assert (await mirror.client.get("/maven/" + path)).status == 502
    # Not kept: once upstream answers with the checksum, both are served.
    mirror.repo.add_file(path + ".sha1", digest(body, "sha1").encode(), last_modified=OLD)
    sha1 = await mirror.client.get("/maven/" + path + ".sha1")
    assert (sha1.status, await sha1.text()) == (200, digest(body, "sha1"))
    assert (await mirror.client.get("/maven/" + path)).status == 200


async def test_a_sha1_uploaded_after_its_file_is_found_after_negative_ttl(mirror: Mirror) -> None:
    mirror.repo.add_version("org.example", "lib", "1.1.0", published=OLD, checksums=("md5",))
    path = file_path("1.1.0", ".jar")
    assert (await mirror.client.get("/maven/" + path)).status == 404
    # Some repositories upload the checksums after the file: a minute later, not a day.
    body = mirror.repo.body(path)
    mirror.repo.add_file(path, body, last_modified=OLD)
    mirror.clock.advance(mirror.services.config.cache.negative_ttl)
    response = await mirror.client.get("/maven/" + path)
    assert response.status == 200
    assert await response.read() == body


# metadata ---------------------------------------------------------------------------------------


async def test_metadata_is_filtered_with_matching_checksums(mirror: Mirror) -> None:
    response = await mirror.client.get(f"/maven/{LIB}/maven-metadata.xml")
    assert response.status == 200
    body = await response.read()
    meta = document.parse_metadata(body)
    assert meta.versions == ("1.0.0", "1.4.0", "1.5.0")
    assert b"<latest>1.5.0</latest>" in body
    assert b"<release>1.5.0</release>" in body
    upstream = mirror.repo.body(f"{LIB}/maven-metadata.xml")
    assert response.headers["X-Checksum-Sha1"] == digest(body, "sha1")
    assert response.headers["X-Checksum-Md5"] == digest(body, "md5")
    assert response.headers["X-Checksum-Sha1"] != digest(upstream, "sha1")
    assert "x-checksum-sha256" not in {name.lower() for name in response.headers}
    assert "max-age=" in response.headers["Cache-Control"]
    for algorithm in ("sha1", "md5", "sha256", "sha512"):
        companion = await mirror.client.get(f"/maven/{LIB}/maven-metadata.xml.{algorithm}")
        assert companion.status == 200
        assert (await companion.text()) == hashlib.new(algorithm, body).hexdigest()
    # Lazy look-ups: 1.9.0 is young, 1.5.0 is old: nothing older was asked for.
    heads = {seen.path for seen in mirror.repo.requests if seen.method == "HEAD"}
    assert heads == {file_path("1.9.0", ".pom"), file_path("1.5.0", ".pom")}


async def test_head_of_metadata_has_the_get_headers(mirror: Mirror) -> None:
    url = f"/maven/{LIB}/maven-metadata.xml"
    got = await mirror.client.get(url, headers={"Accept-Encoding": "identity"})
    head = await mirror.client.head(url, headers={"Accept-Encoding": "identity"})
    assert head.status == 200
    for name in ("Content-Length", "ETag", "X-Checksum-Sha1", "X-Checksum-Md5", "Content-Type"):
        assert head.headers[name] == got.headers[name], name
    assert await head.read() == b""


async def test_old_metadata_needs_one_publish_time_lookup(
    repo: FakeMavenRepository, mirror: Mirror
) -> None:
    repo.add_version("org.example", "old", "1.0.0", published=OLD)
    repo.add_version("org.example", "old", "1.1.0", published=OLD + timedelta(days=1))
    response = await mirror.client.get("/maven/org/example/old/maven-metadata.xml")
    assert response.status == 200
    # lastUpdated says nothing was deployed in the window: the newest alone is checked.
    assert mirror.repo.count(method="HEAD") == 1
    assert document.parse_metadata(await response.read()).versions == ("1.0.0", "1.1.0")
    mirror.clock.advance(timedelta(minutes=10))  # past the metadata TTL
    again = await mirror.client.get("/maven/org/example/old/maven-metadata.xml")
    assert again.status == 200
    assert mirror.repo.count(method="HEAD") == 1  # the publish time is remembered


async def test_a_stale_last_updated_never_offers_a_held_version(mirror: Mirror) -> None:
    # lastUpdated claims nothing happened for 40 days, but 1.9.0's .pom is an hour old.
    mirror.repo.set_metadata("org.example", "lib", last_updated=OLD)
    response = await mirror.client.get(f"/maven/{LIB}/maven-metadata.xml")
    assert response.status == 200
    body = await response.read()
    assert b"1.9.0" not in body
    assert b"<latest>1.5.0</latest>" in body
    assert b"<release>1.5.0</release>" in body
    assert response.headers["X-Checksum-Sha1"] == digest(body, "sha1")
    sha1 = await mirror.client.get(f"/maven/{LIB}/maven-metadata.xml.sha1")
    assert await sha1.text() == digest(body, "sha1")
    jar = await mirror.client.get("/maven/" + file_path("1.9.0", ".jar"))
    assert jar.status == 403


@pytest.mark.parametrize("last_updated", [True, False], ids=["old-stamp", "no-stamp"])
async def test_metadata_without_versions_is_filtered(mirror: Mirror, last_updated: bool) -> None:
    stamp = f"<lastUpdated>{OLD:%Y%m%d%H%M%S}</lastUpdated>" if last_updated else ""
    raw = (
        "<metadata><groupId>org.example</groupId><artifactId>lib</artifactId><versioning>"
        f"<latest>1.9.0</latest><release>1.9.0</release>{stamp}</versioning></metadata>"
    ).encode()
    mirror.repo.set_metadata("org.example", "lib", raw=raw)
    response = await mirror.client.get(f"/maven/{LIB}/maven-metadata.xml")
    assert response.status == 404
    body = await response.json()
    assert body["error"].startswith("no version of org.example:lib is available from this mirror")
    assert "1.9.0" in body["error"]
    for algorithm in ("sha1", "md5"):
        companion = await mirror.client.get(f"/maven/{LIB}/maven-metadata.xml.{algorithm}")
        assert companion.status == 404


async def test_metadata_with_nothing_visible_is_404_saying_why(
    repo: FakeMavenRepository, mirror: Mirror
) -> None:
    repo.add_version("org.example", "fresh", "0.1.0", published=NOW - timedelta(hours=2))
    response = await mirror.client.get("/maven/org/example/fresh/maven-metadata.xml")
    assert response.status == 404
    body = await response.json()
    assert "0.1.0" in body["error"]
    assert "1 version held in quarantine (newest 0.1.0, available " in body["error"]


async def test_metadata_view_changes_when_a_version_leaves_quarantine(mirror: Mirror) -> None:
    url = f"/maven/{LIB}/maven-metadata.xml"
    first = await (await mirror.client.get(url)).read()
    mirror.clock.advance(timedelta(days=3))
    second = await mirror.client.get(url)
    body = await second.read()
    assert body != first
    assert document.parse_metadata(body).versions[-1] == "1.9.0"
    sha1 = await mirror.client.get(url + ".sha1")
    assert await sha1.text() == digest(body, "sha1")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<metadata><groupId>&b;</groupId></metadata>",
            "DTD",
            id="entities",
        ),
        pytest.param(b"<metadata><versioning>", "not well-formed", id="broken"),
    ],
)
async def test_hostile_metadata_is_502_with_a_message(
    mirror: Mirror, raw: bytes, message: str
) -> None:
    mirror.repo.set_metadata("org.example", "lib", raw=raw)
    response = await mirror.client.get(f"/maven/{LIB}/maven-metadata.xml")
    assert response.status == 502
    body = await response.json()
    assert body["reason"] == "bad-upstream-document"
    assert message in body["error"]


async def test_group_metadata_is_passed_through(mirror: Mirror) -> None:
    raw = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<metadata><plugins><plugin><name>Lib</name>'
        b"<prefix>lib</prefix><artifactId>lib-maven-plugin</artifactId></plugin></plugins>"
        b"</metadata>\n"
    )
    mirror.repo.add_file("org/example/maven-metadata.xml", raw, last_modified=OLD)
    response = await mirror.client.get("/maven/org/example/maven-metadata.xml")
    assert response.status == 200
    assert await response.read() == raw
    assert response.headers["X-Checksum-Sha1"] == digest(raw, "sha1")
    sha1 = await mirror.client.get("/maven/org/example/maven-metadata.xml.sha1")
    assert await sha1.text() == digest(raw, "sha1")


# explain ----------------------------------------------------------------------------------------


async def test_explain(mirror: Mirror) -> None:
    maven = mirror.client.app[ECOSYSTEM_ADAPTERS]["maven"]
    young = await maven.explain("org.example:lib", "1.9.0")
    assert young.verdict == "quarantined"
    assert young.published_at == NOW - timedelta(hours=1)
    assert young.until == NOW - timedelta(hours=1) + timedelta(days=3)
    assert "quarantine" in young.detail
    old = await maven.explain("org.example:lib", "1.4.0")
    assert old.verdict == "allowed"
