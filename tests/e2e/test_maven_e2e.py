"""The real `mvn` (dependency:get through a `<mirror>` in settings.xml) against `mirror
serve` and a fake Maven repository (real jars and poms, chosen Last-Modified times; Maven's
own plugins come from this machine's `~/.m2/repository`): a fixed young version fails with
the quarantine named, a range resolves to the newest allowed version with strict checksums,
and a second resolve into a fresh local repository reaches upstream zero times."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import ClientResult, RunningMirror, StartMirror, run_client
from tests.fakes.maven import FakeMavenRepository

pytestmark = pytest.mark.e2e

MVN_TIMEOUT = 300  # seconds per mvn run (a 2-core machine; the JVM starts slowly)
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.9.0"
LOCAL_M2 = Path.home() / ".m2" / "repository"


# The project the runs happen in: it pins the dependency plugin and lifts its commons-beanutils
# to 1.11.0, the version this machine's ~/.m2 holds (3.9.0 asks for 1.9.4 on its own).
def project_pom(artifact: str, dependencies: str = "") -> str:
    """A pom-packaging project `test:<artifact>:1` with `dependencies` (XML) and the
    dependency plugin pinned, its commons-beanutils lifted as above."""
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>test</groupId><artifactId>{artifact}</artifactId><version>1</version>
  <packaging>pom</packaging>{dependencies}
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId>
    <version>3.9.0</version>
    <dependencies><dependency>
      <groupId>commons-beanutils</groupId><artifactId>commons-beanutils</artifactId>
      <version>1.11.0</version>
    </dependency></dependencies>
  </plugin></plugins></build>
</project>
"""


PROJECT_POM = project_pom("resolve")


def _mvn() -> str:
    path = shutil.which("mvn")
    if path is None:
        pytest.fail("mvn is not installed: .ci/run installs it (apt-get install maven)")
    plugin = LOCAL_M2 / "org/apache/maven/plugins/maven-dependency-plugin/3.9.0"
    if not plugin.is_dir():
        pytest.fail(
            f"{plugin} is missing: .ci/run pre-fetches Maven's plugins "
            f"(mvn -B dependency:get -Dartifact={DEPENDENCY_PLUGIN})"
        )
    return path


@dataclass
class Env:
    mirror: RunningMirror
    repo: FakeMavenRepository
    root: Path
    # <server> username and password for the mirror's id (a read token as the password)
    credentials: tuple[str, str] | None = None

    def settings(self) -> Path:
        path = self.root / "settings.xml"
        servers = ""
        if self.credentials is not None:
            username, password = self.credentials
            servers = (
                "<servers><server><id>quarantine</id>"
                f"<username>{username}</username><password>{password}</password>"
                "</server></servers>"
            )
        path.write_text(
            f"<settings>{servers}<mirrors><mirror><id>quarantine</id><mirrorOf>*</mirrorOf>"
            f"<url>{self.mirror.url}/maven/</url></mirror></mirrors></settings>\n",
            encoding="utf-8",
        )
        return path

    async def get(self, artifact: str, *, local: str) -> ClientResult:
        """`mvn dependency:get` of `artifact` into the local repository `root/local`."""
        (self.root / "pom.xml").write_text(PROJECT_POM, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAVEN_", "MIRROR_"))}
        env["MAVEN_OPTS"] = "-Xshare:auto -XX:TieredStopAtLevel=1"
        args = [
            "-B", "-q", "-C", "-s", str(self.settings()),
            f"-Dmaven.repo.local={self.root / local}",
            f"{DEPENDENCY_PLUGIN}:get", f"-Dartifact={artifact}",
        ]  # fmt: skip
        return await run_client(_mvn(), *args, cwd=self.root, env=env, seconds=MVN_TIMEOUT)


async def test_mvn_through_the_mirror(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    _mvn()
    now = datetime.now(UTC)
    repo = FakeMavenRepository(local_repository=LOCAL_M2)
    old = now - timedelta(days=60)
    repo.add_version("org.example", "lib", "1.0.0", published=old)
    repo.add_version("org.example", "lib", "1.5.0", published=now - timedelta(days=10))
    repo.add_version("org.example", "lib", "1.9.0", published=now - timedelta(hours=2))
    repo.add_version("org.example", "lib", "2.0.0", published=now - timedelta(hours=1))
    repo.add_version(
        "org.example", "app", "1.0.0", published=old,
        dependencies=[("org.example", "lib", "[1.0,2.0)")],
    )  # fmt: skip
    await repo.start(aiohttp_server)
    mirror = await start_mirror(
        {"MIRROR_MAVEN_UPSTREAM": repo.url, "MIRROR_QUARANTINE": "3d", "MIRROR_WORKERS": "1"}
    )
    env = Env(mirror=mirror, repo=repo, root=tmp_path)

    # A fixed young version: Maven fails and prints the quarantine sentence.
    young = await env.get("org.example:lib:1.9.0", local="repo-1")
    assert young.code != 0, str(young)
    assert "org.example:lib:1.9.0 is in quarantine until" in young.out, str(young)
    assert "403" in young.out, str(young)
    assert not (tmp_path / "repo-1/org/example/lib/1.9.0/lib-1.9.0.jar").exists()

    # A range [1.0,2.0): the newest allowed version (1.5.0), strict checksums (-C).
    ranged = await env.get("org.example:app:1.0.0", local="repo-1")
    assert ranged.code == 0, f"{ranged}\n--- mirror log ---\n{mirror.log()[-4000:]}"
    lib = tmp_path / "repo-1/org/example/lib"
    assert (lib / "1.5.0/lib-1.5.0.jar").read_bytes() == repo.body(
        "org/example/lib/1.5.0/lib-1.5.0.jar"
    )
    assert not (lib / "1.9.0/lib-1.9.0.jar").exists()
    assert not (lib / "2.0.0").exists()

    # The same resolve into a fresh local repository: everything comes from the mirror.
    before = len(repo.requests)
    again = await env.get("org.example:app:1.0.0", local="repo-2")
    assert again.code == 0, str(again)
    assert (tmp_path / "repo-2/org/example/lib/1.5.0/lib-1.5.0.jar").is_file()
    assert repo.requests[before:] == [], repo.requests[before:]


async def test_a_second_mvn_run_after_every_document_expired_fetches_no_release_file(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    """Documents expire within a second here: the second run (a fresh local repository, so
    `mvn` asks the mirror for every plugin and dependency file again) finds `maven-metadata.xml`
    revalidated, and no artifact, checksum, signature or publish-time look-up asked again."""
    _mvn()
    now = datetime.now(UTC)
    repo = FakeMavenRepository(local_repository=LOCAL_M2)
    old = now - timedelta(days=60)
    repo.add_version("org.example", "lib", "1.0.0", published=old)
    repo.add_version("org.example", "lib", "1.5.0", published=now - timedelta(days=10))
    repo.add_version(
        "org.example", "app", "1.0.0", published=old,
        dependencies=[("org.example", "lib", "[1.0,2.0)")],
    )  # fmt: skip
    await repo.start(aiohttp_server)
    mirror = await start_mirror(
        {
            "MIRROR_MAVEN_UPSTREAM": repo.url,
            "MIRROR_QUARANTINE": "3d",
            "MIRROR_WORKERS": "1",
            "MIRROR_CACHE_METADATA_TTL": "1s",
            "MIRROR_CACHE_NEGATIVE_TTL": "1s",
            "MIRROR_CACHE_REFRESH_INTERVAL": "1s",
        }
    )
    env = Env(mirror=mirror, repo=repo, root=tmp_path)
    first = await env.get("org.example:app:1.0.0", local="repo-1")
    assert first.code == 0, f"{first}\n--- mirror log ---\n{mirror.log()[-4000:]}"
    assert repo.count("org/example/lib/1.5.0/lib-1.5.0.jar.sha1") == 1

    before = len(repo.requests)
    await asyncio.sleep(2)  # past every TTL the mirror was given
    again = await env.get("org.example:app:1.0.0", local="repo-2")
    assert again.code == 0, f"{again}\n--- mirror log ---\n{mirror.log()[-4000:]}"
    assert (tmp_path / "repo-2/org/example/lib/1.5.0/lib-1.5.0.jar").is_file()
    second = repo.requests[before:]
    # Documents (the range's maven-metadata.xml) are revalidated. So is a version that does
    # not exist upstream (here commons-beanutils 1.9.4, which the plugin names and this
    # machine's ~/.m2 lacks): its publish-time look-up (a HEAD of its .pom) answered 404 is
    # remembered for cache.negative_ttl only, as that version may be published any time.
    # Nothing else is asked: no artifact, checksum, signature or known publish time.
    assert any(seen.path.endswith("/maven-metadata.xml") for seen in second), second
    others = [
        seen
        for seen in second
        if not seen.path.endswith("/maven-metadata.xml")
        and not (seen.method == "HEAD" and not exists(repo, seen.path))
    ]
    assert others == [], others
    assert repo.count("org/example/lib/1.5.0/lib-1.5.0.jar.sha1") == 1


def exists(repo: FakeMavenRepository, path: str) -> bool:
    try:
        repo.body(path)
    except KeyError:
        return False
    return True
