"""Apache Ivy (Debian's `ivy`), a second real Maven-repository client, through the mirror:
a range resolves to the newest allowed version, a fixed young version fails."""

from __future__ import annotations

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

IVY_JAR = Path("/usr/share/java/ivy.jar")
IVY_TIMEOUT = 180  # seconds per run; the JVM starts slowly on a small machine


def _java() -> str:
    java = shutil.which("java")
    if java is None or not IVY_JAR.is_file():
        pytest.fail("java and ivy are needed: .ci/run installs them (apt-get install ivy)")
    return java


@dataclass
class Ivy:
    mirror: RunningMirror
    root: Path

    def settings(self) -> Path:
        path = self.root / "ivysettings.xml"
        path.write_text(
            f"""<ivysettings>
  <settings defaultResolver="mirror"/>
  <caches defaultCacheDir="{self.root / "cache"}" useOrigin="false"/>
  <resolvers>
    <ibiblio name="mirror" m2compatible="true" root="{self.mirror.url}/maven/"/>
  </resolvers>
</ivysettings>
""",
            encoding="utf-8",
        )
        return path

    async def resolve(self, group: str, artifact: str, revision: str) -> ClientResult:
        pattern = str(self.root / "out" / "[artifact]-[revision].[ext]")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
        return await run_client(
            _java(), "-jar", str(IVY_JAR), "-settings", str(self.settings()),
            "-dependency", group, artifact, revision, "-retrieve", pattern, "-confs", "default",
            cwd=self.root, env=env, seconds=IVY_TIMEOUT,
        )  # fmt: skip


async def test_ivy_resolves_ranges_to_the_newest_allowed_version(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path
) -> None:
    _java()
    now = datetime.now(UTC)
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.0.0", published=now - timedelta(days=60))
    repo.add_version("org.example", "lib", "1.5.0", published=now - timedelta(days=10))
    repo.add_version("org.example", "lib", "1.9.0", published=now - timedelta(hours=2))
    await repo.start(aiohttp_server)
    mirror = await start_mirror({"MIRROR_MAVEN_UPSTREAM": repo.url, "MIRROR_QUARANTINE": "3d"})
    ivy = Ivy(mirror=mirror, root=tmp_path)

    ranged = await ivy.resolve("org.example", "lib", "[1.0,2.0)")
    assert ranged.code == 0, str(ranged)
    jar = tmp_path / "out" / "lib-1.5.0.jar"
    assert jar.read_bytes() == repo.body("org/example/lib/1.5.0/lib-1.5.0.jar")
    assert not (tmp_path / "out" / "lib-1.9.0.jar").exists()

    young = await ivy.resolve("org.example", "lib", "1.9.0")
    assert young.code != 0, str(young)
    assert "org.example#lib;1.9.0: not found" in young.out, str(young)
    assert not (tmp_path / "out" / "lib-1.9.0.jar").exists()
