"""A fake Maven repository (as Central lays it out): a real aiohttp app on 127.0.0.1 that
serves real jars (built with zipfile) and poms, `maven-metadata.xml` generated from the
versions added, `.sha1`/`.md5`/`.sha256`/`.sha512` computed from the bytes, a chosen
`Last-Modified` per file, HEAD, conditional GET and Central's `x-checksum-*` headers. It records
every request. Optionally it falls back to a local repository on disk (`~/.m2/repository`,
files far in the past) so a real `mvn` finds its plugins."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tests.fakes import signatures

ALGORITHMS = ("sha1", "md5", "sha256", "sha512")
LOCAL_LAST_MODIFIED = datetime(2015, 1, 1, tzinfo=UTC)
_TYPES = {
    ".pom": "text/xml",
    ".xml": "text/xml",
    ".jar": "application/java-archive",
    ".module": "application/json",
    ".asc": "text/plain",
}


@dataclass(frozen=True, slots=True)
class SeenRequest:
    method: str
    path: str  # raw path without the leading "/"


@dataclass(slots=True)
class _File:
    body: bytes
    last_modified: datetime
    checksums: tuple[str, ...]  # companions served for this file


@dataclass(slots=True)
class _Artifact:
    versions: list[str] = field(default_factory=list)  # in deploy order
    published: dict[str, datetime] = field(default_factory=dict)
    last_updated: datetime | None = None
    raw_metadata: bytes | None = None


def digest(body: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, body).hexdigest()


def build_jar(group: str, artifact: str, version: str) -> bytes:
    """A real, deterministic jar: a manifest and one class-less resource."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as jar:
        resource = f"groupId={group}\nartifactId={artifact}\nversion={version}\n"
        for name, text in (
            ("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nCreated-By: fake-maven\r\n\r\n"),
            (f"{artifact}.properties", resource),
        ):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            jar.writestr(info, text)
    return buffer.getvalue()


def build_pom(
    group: str,
    artifact: str,
    version: str,
    dependencies: Iterable[tuple[str, str, str]] = (),
    extra: str = "",
) -> bytes:
    """A minimal pom; `extra` is XML inserted as it is (e.g. `<description>…`)."""
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in dependencies
    )
    deps_xml = f"\n  <dependencies>{deps}</dependencies>" if deps else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        f"  <groupId>{group}</groupId>\n  <artifactId>{artifact}</artifactId>\n"
        f"  <version>{version}</version>\n  <packaging>jar</packaging>{extra}{deps_xml}\n"
        "</project>\n"
    ).encode()


def build_metadata(
    group: str, artifact: str, versions: list[str], last_updated: datetime | None
) -> bytes:
    """maven-metadata.xml as Central writes it (latest/release = last deployed)."""
    listed = "".join(f"\n      <version>{version}</version>" for version in versions)
    releases = [version for version in versions if not version.endswith("-SNAPSHOT")]
    latest = f"\n    <latest>{versions[-1]}</latest>" if versions else ""
    release = f"\n    <release>{releases[-1]}</release>" if releases else ""
    stamp = f"\n    <lastUpdated>{last_updated:%Y%m%d%H%M%S}</lastUpdated>" if last_updated else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<metadata>\n'
        f"  <groupId>{group}</groupId>\n  <artifactId>{artifact}</artifactId>\n"
        f"  <versioning>{latest}{release}\n    <versions>{listed}\n    </versions>{stamp}\n"
        "  </versioning>\n</metadata>\n"
    ).encode()


class FakeMavenRepository:
    """Build with `add_version`/`add_file`, start with `await repo.start(aiohttp_server)`;
    `repo.url` is the repository root (ends with `/`), `repo.requests` the request log."""

    def __init__(
        self,
        *,
        local_repository: Path | None = None,
        local_last_modified: datetime = LOCAL_LAST_MODIFIED,
    ) -> None:
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.requests: list[SeenRequest] = []
        self.url = ""
        self._files: dict[str, _File] = {}
        self._artifacts: dict[tuple[str, str], _Artifact] = {}
        self._failures: dict[str, int] = {}
        self._local = local_repository.resolve() if local_repository else None
        self._local_last_modified = local_last_modified

    async def start(self, aiohttp_server: AiohttpServer) -> str:
        server = await aiohttp_server(self.app, host="127.0.0.1")
        self.url = str(server.make_url("/"))
        return self.url

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/")

    # building ---------------------------------------------------------------------------

    def add_file(
        self,
        path: str,
        body: bytes,
        *,
        last_modified: datetime,
        checksums: tuple[str, ...] = ("sha1", "md5", "sha256", "sha512"),
    ) -> None:
        """Serve `body` at `path` (relative, no leading `/`) with its checksum companions."""
        self._files[path] = _File(body=body, last_modified=last_modified, checksums=checksums)

    def add_version(
        self,
        group: str,
        artifact: str,
        version: str,
        *,
        published: datetime,
        jar: bool = True,
        sources: bool = False,
        signature: bool | str = True,
        checksums: tuple[str, ...] = ("sha1", "md5", "sha256", "sha512"),
        dependencies: Iterable[tuple[str, str, str]] = (),
        pom_extra: str = "",
    ) -> str:
        """Deploy a GAV at `published` (its files' Last-Modified); returns its directory.
        `pom_extra` is XML added to the pom as it is. `signature`: `.asc` files signed by the
        key named (`signatures.KEYS`; True: "alpha"), False for none."""
        directory = f"{group.replace('.', '/')}/{artifact}/{version}"
        stem = f"{directory}/{artifact}-{version}"
        files = {f"{stem}.pom": build_pom(group, artifact, version, dependencies, pom_extra)}
        if jar:
            files[f"{stem}.jar"] = build_jar(group, artifact, version)
        if sources:
            files[f"{stem}-sources.jar"] = build_jar(group, artifact + "-sources", version)
        for path, body in list(files.items()):
            self.add_file(path, body, last_modified=published, checksums=checksums)
            if signature:
                signed = signatures.armored("alpha" if signature is True else signature)
                self.add_file(path + ".asc", signed, last_modified=published, checksums=checksums)
        entry = self._artifacts.setdefault((group, artifact), _Artifact())
        if version not in entry.versions:
            entry.versions.append(version)
        entry.published[version] = published
        return directory

    def set_metadata(
        self,
        group: str,
        artifact: str,
        *,
        last_updated: datetime | None = None,
        raw: bytes | None = None,
    ) -> None:
        """Override the generated metadata's `<lastUpdated>`, or serve `raw` bytes instead."""
        entry = self._artifacts.setdefault((group, artifact), _Artifact())
        entry.last_updated = last_updated
        entry.raw_metadata = raw

    def remove_version(self, group: str, artifact: str, version: str, *, at: datetime) -> None:
        """Take a version out of the metadata (its `<lastUpdated>` and Last-Modified become
        `at`, so a conditional GET sees the change); its files stay, as on a repository that
        dropped it from the listing only."""
        entry = self._artifacts[(group, artifact)]
        entry.versions.remove(version)
        entry.published.pop(version, None)
        entry.last_updated = at

    def body(self, path: str) -> bytes:
        found = self._lookup(path)
        if found is None:
            raise KeyError(path)
        return found.body

    def fail(self, path: str, status: int) -> None:
        """Answer `path` with `status` until `heal(path)`."""
        self._failures[path] = status

    def heal(self, path: str) -> None:
        self._failures.pop(path, None)

    # inspection -------------------------------------------------------------------------

    def count(self, path: str | None = None, *, method: str | None = None) -> int:
        return sum(
            1
            for seen in self.requests
            if (path is None or seen.path == path) and (method is None or seen.method == method)
        )

    # serving ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path.lstrip("/")
        self.requests.append(SeenRequest(method=request.method, path=path))
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405)
        if path in self._failures:
            return web.Response(status=self._failures[path], text="fault")
        found = self._lookup(path)
        if found is None:
            return web.Response(status=404, text="Not Found")
        headers = {
            "Last-Modified": format_datetime(found.last_modified, usegmt=True),
            "ETag": f'W/"{digest(found.body, "sha1")[:16]}"',
            "x-checksum-sha1": digest(found.body, "sha1"),
            "x-checksum-md5": digest(found.body, "md5"),
            "Content-Type": _TYPES.get(Path(path).suffix, "text/plain"),
        }
        since = request.headers.get("If-Modified-Since")
        if since:
            try:
                if found.last_modified.replace(microsecond=0) <= parsedate_to_datetime(since):
                    return web.Response(status=304, headers=headers)
            except (TypeError, ValueError):
                pass
        return web.Response(body=found.body, headers=headers)

    def _lookup(self, path: str) -> _File | None:
        if path in self._files:
            return self._files[path]
        for algorithm in ALGORITHMS:
            if path.endswith("." + algorithm):
                base = self._lookup(path[: -len(algorithm) - 1])
                if base is None or algorithm not in base.checksums:
                    return None
                return _File(
                    body=digest(base.body, algorithm).encode(),
                    last_modified=base.last_modified,
                    checksums=(),
                )
        if path.endswith("/maven-metadata.xml"):
            generated = self._metadata(path)
            if generated is not None:
                return generated
        return self._local_file(path)

    def _metadata(self, path: str) -> _File | None:
        *group_parts, artifact, _ = path.split("/")
        entry = self._artifacts.get((".".join(group_parts), artifact))
        if entry is None:
            return None
        stamp = entry.last_updated or max(entry.published.values(), default=None)
        body = entry.raw_metadata or build_metadata(
            ".".join(group_parts), artifact, entry.versions, stamp
        )
        return _File(body=body, last_modified=stamp or LOCAL_LAST_MODIFIED, checksums=ALGORITHMS)

    def _local_file(self, path: str) -> _File | None:
        if self._local is None:
            return None
        target = (self._local / path).resolve()
        if not target.is_relative_to(self._local):
            return None
        if target.is_file():
            return _File(
                body=target.read_bytes(),
                last_modified=self._local_last_modified,
                checksums=ALGORITHMS,
            )
        if target.name == "maven-metadata.xml" and target.parent.is_dir():
            artifact_dir = target.parent
            versions = sorted(
                child.name
                for child in artifact_dir.iterdir()
                if (child / f"{artifact_dir.name}-{child.name}.pom").is_file()
            )
            if versions:
                group = ".".join(artifact_dir.relative_to(self._local).parts[:-1])
                body = build_metadata(group, artifact_dir.name, versions, self._local_last_modified)
                return _File(
                    body=body, last_modified=self._local_last_modified, checksums=ALGORITHMS
                )
        return None
