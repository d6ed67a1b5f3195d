"""Maven signature signals through the real app and a fake repository serving real gpg
signatures: `signature-missing` and `signature-key-changed`, noted by default, holding a
version (absent from maven-metadata.xml, its files 403 naming the signal) under an `extend`
rule, and never let through because upstream could not give an `.asc`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from defusedxml import ElementTree as SafeET
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.ecosystems.maven import routes
from mirror.services import ECOSYSTEM_ADAPTERS
from tests.fakes import signatures
from tests.fakes.maven import FakeMavenRepository
from tests.integration.conftest import NOW, OLD, Client, MakeClient

LIB = "org/example/lib"
KEYS = "org/example/keys"
EXTEND_BOTH = """
[[risk.rules]]
signal = "signature-missing"
action = "extend"
age = "30d"

[[risk.rules]]
signal = "signature-key-changed"
ecosystem = "maven"
action = "extend"
age = "30d"
"""


@pytest.fixture
async def repo(aiohttp_server: AiohttpServer) -> FakeMavenRepository:
    repo = FakeMavenRepository()
    # lib: signed by alpha, then 2.0.1 without any .asc.
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    repo.add_version("org.example", "lib", "2.0.0", published=NOW - timedelta(days=20))
    repo.add_version(
        "org.example", "lib", "2.0.1", published=NOW - timedelta(days=10), signature=False
    )
    # keys: signed by alpha, then 1.1.0 signed by beta.
    repo.add_version("org.example", "keys", "1.0.0", published=NOW - timedelta(days=20))
    repo.add_version(
        "org.example", "keys", "1.1.0", published=NOW - timedelta(days=10), signature="beta"
    )
    await repo.start(aiohttp_server)
    return repo


async def start(
    make_mirror: MakeClient, repo: FakeMavenRepository, tmp_path: Path, rules: str = ""
) -> Client:
    settings = tmp_path / "mirror.toml"
    settings.write_text(rules, encoding="utf-8")
    return await make_mirror(
        MIRROR_MAVEN_UPSTREAM=repo.url, MIRROR_UPSTREAM_RETRIES="0", MIRROR_CONFIG=str(settings)
    )


async def listed(client: Client, artifact: str) -> list[str]:
    response = await client.get(f"/maven/{artifact}/maven-metadata.xml")
    assert response.status == 200
    root = SafeET.fromstring(await response.read())
    return [element.text or "" for element in root.iter("version")]


def file_path(artifact: str, version: str, suffix: str) -> str:
    name = artifact.rsplit("/", 1)[1]
    return f"/maven/{artifact}/{version}/{name}-{version}{suffix}"


MISSING = "2.0.1 has no .asc signature; 2.0.0 was signed by key " + signatures.key_id("alpha")
CHANGED = (
    f"1.1.0 is signed by key {signatures.key_id('beta')}; 1.0.0 by key {signatures.key_id('alpha')}"
)


async def test_by_default_the_signals_are_noted_served_and_explained(
    make_mirror: MakeClient, repo: FakeMavenRepository, tmp_path: Path
) -> None:
    client = await start(make_mirror, repo, tmp_path)
    assert await listed(client, LIB) == ["1.0.0", "2.0.0", "2.0.1"]
    assert await listed(client, KEYS) == ["1.0.0", "1.1.0"]
    for path in (file_path(LIB, "2.0.1", ".jar"), file_path(KEYS, "1.1.0", ".pom")):
        assert (await client.get(path)).status == 200
    maven = client.app[ECOSYSTEM_ADAPTERS]["maven"]
    signals = list((await maven.explain("org.example:lib", "2.0.1")).signals)
    assert signals == [
        {
            "signal": "signature-missing",
            "detail": MISSING,
            "action": "note",
            "age": None,
            "rule": "default",
        }
    ]
    changed = await maven.explain("org.example:keys", "1.1.0")
    assert changed.verdict == "allowed"
    assert [(s["signal"], s["detail"]) for s in changed.signals] == [
        ("signature-key-changed", CHANGED)
    ]
    unchanged = await maven.explain("org.example:lib", "2.0.0")
    assert unchanged.signals == ()


async def test_an_extend_rule_holds_the_unsigned_version_out_of_metadata_and_files(
    make_mirror: MakeClient, repo: FakeMavenRepository, tmp_path: Path
) -> None:
    client = await start(make_mirror, repo, tmp_path, EXTEND_BOTH)
    assert await listed(client, LIB) == ["1.0.0", "2.0.0"]
    for suffix in (".jar", ".pom"):
        response = await client.get(file_path(LIB, "2.0.1", suffix))
        assert response.status == 403
        assert "signature-missing" in response.reason
        body = await response.json()
        assert body["signals"][0]["signal"] == "signature-missing"
        assert body["signals"][0]["detail"] == MISSING
        assert body["signals"][0]["action"] == "extend"
        assert body["until"].startswith((NOW + timedelta(days=20)).strftime("%Y-%m-%d"))
    # The signed versions are served as before.
    assert (await client.get(file_path(LIB, "2.0.0", ".jar"))).status == 200


async def test_an_extend_rule_holds_the_version_signed_by_another_key(
    make_mirror: MakeClient, repo: FakeMavenRepository, tmp_path: Path
) -> None:
    client = await start(make_mirror, repo, tmp_path, EXTEND_BOTH)
    assert await listed(client, KEYS) == ["1.0.0"]
    response = await client.get(file_path(KEYS, "1.1.0", ".jar"))
    assert response.status == 403
    assert "signature-key-changed" in response.reason
    body = await response.json()
    assert [(s["signal"], s["detail"]) for s in body["signals"]] == [
        ("signature-key-changed", CHANGED)
    ]
    maven = client.app[ECOSYSTEM_ADAPTERS]["maven"]
    explained = await maven.explain("org.example:keys", "1.1.0")
    assert explained.verdict == "quarantined"
    assert explained.signals[0]["action"] == "extend"


async def test_an_asc_upstream_cannot_give_holds_under_extend_until_it_can(
    make_mirror: MakeClient, repo: FakeMavenRepository, tmp_path: Path, clock: FixedClock
) -> None:
    repo.add_version("org.example", "same", "1.0.0", published=NOW - timedelta(days=20))
    repo.add_version("org.example", "same", "1.1.0", published=NOW - timedelta(days=10))
    asc = "org/example/same/1.1.0/same-1.1.0.pom.asc"
    repo.fail(asc, 503)
    client = await start(make_mirror, repo, tmp_path, EXTEND_BOTH)
    jar = file_path("org/example/same", "1.1.0", ".jar")
    refused = await client.get(jar)
    assert refused.status == 403
    body = await refused.json()
    assert "could not be checked" in body["signals"][0]["detail"]
    # Upstream failing is remembered briefly: the next request does not ask again.
    assert (await client.get(jar)).status == 403
    assert repo.count(asc, method="GET") == 1
    # Nothing unchecked is kept past that: once upstream answers, the same signer lets it
    # through.
    repo.heal(asc)
    clock.advance(routes.SIGNATURE_FAILURE_BACKOFF + timedelta(seconds=1))
    assert (await client.get(jar)).status == 200
    assert await listed(client, "org/example/same") == ["1.0.0", "1.1.0"]


async def test_signatures_are_fetched_once_per_version(
    make_mirror: MakeClient, repo: FakeMavenRepository, tmp_path: Path
) -> None:
    client = await start(make_mirror, repo, tmp_path, EXTEND_BOTH)
    for _ in range(3):
        await listed(client, LIB)
        assert (await client.get(file_path(LIB, "2.0.1", ".jar"))).status == 403
        assert (await client.get(file_path(LIB, "2.0.0", ".jar"))).status == 200
    # 1.0.0's as the signature 2.0.0 is compared with.
    for version in ("1.0.0", "2.0.0", "2.0.1"):
        assert repo.count(f"{LIB}/{version}/lib-{version}.pom.asc", method="GET") == 1
    # A version past every rule's reach asks upstream for nothing more than before.
    metadata_gets = repo.count(f"{LIB}/maven-metadata.xml")
    assert (await client.get(file_path(LIB, "1.0.0", ".jar"))).status == 200
    assert repo.count(f"{LIB}/maven-metadata.xml") == metadata_gets
    assert repo.count(f"{LIB}/1.0.0/lib-1.0.0.pom.asc") == 1


def young_versions(repo: FakeMavenRepository) -> list[str]:
    """20 versions of `many` published an hour ago (in quarantine), after a signed one."""
    repo.add_version("org.example", "many", "0.9.0", published=NOW - timedelta(days=20))
    versions = [f"1.0.{index}" for index in range(20)]
    for version in versions:
        repo.add_version("org.example", "many", version, published=NOW - timedelta(hours=1))
    return versions


MANY = "org/example/many"


async def test_young_files_ask_for_no_signature_when_no_rule_acts_on_it(
    make_mirror: MakeClient, repo: FakeMavenRepository, tmp_path: Path
) -> None:
    versions = young_versions(repo)
    client = await start(make_mirror, repo, tmp_path)
    for version in versions:
        response = await client.get(file_path(MANY, version, ".jar"))
        assert response.status == 403
        assert (await response.json())["reason"] == "quarantined"
    # Held by quarantine whatever their signatures show: nothing asked about them.
    assert sum(repo.count(f"{MANY}/{v}/many-{v}.pom.asc") for v in versions) == 0
    assert repo.count(f"{MANY}/maven-metadata.xml") == 0


async def test_young_files_ask_for_each_signature_once_under_an_extend_rule(
    make_mirror: MakeClient, repo: FakeMavenRepository, tmp_path: Path
) -> None:
    versions = young_versions(repo)
    client = await start(make_mirror, repo, tmp_path, EXTEND_BOTH)
    for _ in range(2):
        for version in versions:
            assert (await client.get(file_path(MANY, version, ".jar"))).status == 403
    for version in ["0.9.0", *versions]:
        assert repo.count(f"{MANY}/{version}/many-{version}.pom.asc", method="GET") == 1


async def test_a_signature_uploaded_after_its_pom_is_seen_later(
    make_mirror: MakeClient, repo: FakeMavenRepository, tmp_path: Path, clock: FixedClock
) -> None:
    """A young version's missing `.asc` is asked again an hour later (some repositories
    upload it after the `.pom`); an older version's is not."""
    repo.add_version("org.example", "late", "1.0.0", published=NOW - timedelta(days=20))
    directory = repo.add_version(
        "org.example", "late", "1.1.0", published=NOW - timedelta(hours=1), signature=False
    )
    client = await start(make_mirror, repo, tmp_path, EXTEND_BOTH)
    jar = file_path("org/example/late", "1.1.0", ".jar")
    maven = client.app[ECOSYSTEM_ADAPTERS]["maven"]
    early = await maven.explain("org.example:late", "1.1.0")
    assert [s["signal"] for s in early.signals] == ["signature-missing"]
    # Its signature is uploaded now; past the quarantine it is served once seen.
    asc = f"{directory}/late-1.1.0.pom.asc"
    repo.add_file(asc, signatures.armored("alpha"), last_modified=NOW)
    clock.advance(timedelta(days=4))
    assert (await client.get(jar)).status == 200
    later = await maven.explain("org.example:late", "1.1.0")
    assert later.signals == ()
    # lib 2.0.1 (10 days old) has no signature: that is kept, not asked again.
    unsigned = f"{LIB}/2.0.1/lib-2.0.1.pom.asc"
    assert (await client.get(file_path(LIB, "2.0.1", ".jar"))).status == 403
    clock.advance(timedelta(hours=2))
    assert (await client.get(file_path(LIB, "2.0.1", ".jar"))).status == 403
    assert repo.count(unsigned, method="GET") == 1
