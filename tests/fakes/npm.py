"""A fake npm registry for tests: builds real `.tgz` tarballs (`package/package.json`) with
their true sha512 `integrity` and sha1 `shasum`, full packuments with chosen publish times,
scoped names and dist-tags, and serves them through the recording `FakeUpstream`."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pytest_aiohttp import AiohttpServer

from tests.fakes.upstream import FakeUpstream, RecordedRequest


def make_tarball(
    name: str,
    version: str,
    *,
    extra: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> bytes:
    """A deterministic npm tarball: `package/package.json` and `package/index.js`, and
    `files` (paths below `package/`)."""
    manifest = {"name": name, "version": version, "main": "index.js", **(extra or {})}
    members = {
        "package/package.json": json.dumps(manifest, indent=2).encode(),
        "package/index.js": f"module.exports = {json.dumps(name + '@' + version)};\n".encode(),
        **{f"package/{path}": data for path, data in (files or {}).items()},
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 499162500  # npm pins tarball mtimes to 1985-10-26; so do we
            archive.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as stream:
        stream.write(raw.getvalue())
    return compressed.getvalue()


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def iso(moment: datetime) -> str:
    """npm's time format: `2026-11-25T10:00:00.000Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


@dataclass(slots=True)
class FakeVersion:
    name: str
    version: str
    published: datetime | None
    tarball: bytes
    dependencies: dict[str, str] = field(default_factory=dict)
    deprecated: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Risk signals' fields: lifecycle `scripts` (also in the tarball's package.json),
    # `dist.attestations` (provenance) and the publisher (`_npmUser.name`).
    scripts: dict[str, str] = field(default_factory=dict)
    attestations: dict[str, Any] | None = None
    publisher: str | None = None

    @property
    def integrity(self) -> str:
        return integrity_of(self.tarball)

    @property
    def shasum(self) -> str:
        return hashlib.sha1(self.tarball).hexdigest()  # noqa: S324 -- npm's own shasum


@dataclass(slots=True)
class FakePackage:
    name: str
    versions: dict[str, FakeVersion] = field(default_factory=dict)
    dist_tags: dict[str, str] = field(default_factory=dict)
    created: datetime | None = None
    modified: datetime | None = None


# Top-level packument fields the registry copies from the `latest` version's manifest.
PACKAGE_TEXT_KEYS = (
    "description", "readme", "readmeFilename", "homepage", "keywords", "repository", "bugs",
    "license", "author", "contributors", "maintainers",
)  # fmt: skip


def escaped(name: str) -> str:
    """npm's path form of a name: the scope slash as `%2f`."""
    return name.replace("/", "%2f")


def unscoped(name: str) -> str:
    return name.rsplit("/", 1)[-1]


class FakeNpmRegistry:
    """Build packages with `add_version`/`set_dist_tag`/`set_time`; every change is served
    at once. `packument_path(name)` and `tarball_path(name, version)` are the raw upstream
    paths to count requests with (`registry.upstream.count(path)`). With `validators=False`
    packuments are served without an ETag (as some registries and proxies do), so every
    conditional GET gets the whole body again."""

    def __init__(self, *, validators: bool = True) -> None:
        self.upstream = FakeUpstream()
        self.packages: dict[str, FakePackage] = {}
        self.validators = validators

    async def start(self, aiohttp_server: AiohttpServer) -> str:
        base = await self.upstream.start(aiohttp_server)
        for name in self.packages:
            self._sync(name)
        return base

    @property
    def url(self) -> str:
        """The upstream registry URL (ends with `/`): the value of MIRROR_NPM_UPSTREAM."""
        return self.upstream.url("/")

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.upstream.requests

    # building ---------------------------------------------------------------------------

    def add_version(
        self,
        name: str,
        version: str,
        *,
        published: datetime | None,
        dependencies: Mapping[str, str] | None = None,
        deprecated: str | None = None,
        tag: str | None = "latest",
        extra: Mapping[str, Any] | None = None,
        scripts: Mapping[str, str] | None = None,
        provenance: bool = False,
        publisher: str | None = None,
    ) -> FakeVersion:
        """Publish `name@version` at `published` (None: no `time` entry). `tag` (default
        `latest`) is moved to it; pass None to leave the tags alone. `scripts` go into the
        manifest and the tarball's package.json; `provenance` adds `dist.attestations`;
        `publisher` is `_npmUser.name`."""
        package = self.packages.setdefault(name, FakePackage(name=name))
        in_tarball: dict[str, Any] = {"dependencies": dict(dependencies or {})}
        if scripts:
            in_tarball["scripts"] = dict(scripts)
        entry = FakeVersion(
            name=name,
            version=version,
            published=published,
            tarball=make_tarball(name, version, extra=in_tarball),
            dependencies=dict(dependencies or {}),
            deprecated=deprecated,
            extra=dict(extra or {}),
            scripts=dict(scripts or {}),
            attestations=(
                {
                    "url": f"/-/npm/v1/attestations/{name}@{version}",
                    "provenance": {"predicateType": "https://slsa.dev/provenance/v1"},
                }
                if provenance
                else None
            ),
            publisher=publisher,
        )
        package.versions[version] = entry
        if published is not None:
            if package.created is None or published < package.created:
                package.created = published
            if package.modified is None or published > package.modified:
                package.modified = published
        if tag is not None:
            package.dist_tags[tag] = version
        self._sync(name)
        return entry

    def replace_tarball(self, name: str, version: str, data: bytes) -> None:
        """Serve `data` as the tarball of `name@version`, with integrity declared to match
        (e.g. a huge artifact for the benchmark)."""
        self.packages[name].versions[version].tarball = data
        self._sync(name)

    def set_dist_tag(self, name: str, tag: str, version: str) -> None:
        self.packages[name].dist_tags[tag] = version
        self._sync(name)

    def set_time(self, name: str, version: str, published: datetime | None) -> None:
        self.packages[name].versions[version].published = published
        self._sync(name)

    def remove_package(self, name: str) -> None:
        """Unpublish everything: the packument and tarballs answer 404."""
        package = self.packages.pop(name)
        self.upstream.remove(self.packument_path(name))
        self.upstream.remove(self.packument_path(name).replace("%2f", "%2F"))
        for version in package.versions:
            self.upstream.remove(self.tarball_path(name, version))

    def remove_version(self, name: str, version: str) -> None:
        """Unpublish one version: gone from the packument (tags that named it move to the
        newest left), its tarball answers 404."""
        package = self.packages[name]
        del package.versions[version]
        for tag, tagged in list(package.dist_tags.items()):
            if tagged == version:
                if package.versions:
                    package.dist_tags[tag] = list(package.versions)[-1]
                else:
                    del package.dist_tags[tag]
        self.upstream.remove(self.tarball_path(name, version))
        self._sync(name)

    # paths and documents ----------------------------------------------------------------

    @staticmethod
    def packument_path(name: str) -> str:
        """The raw path npm uses; count requests by the decoded `/@scope/name` form, which
        matches every spelling of the scope slash."""
        return "/" + escaped(name)

    @staticmethod
    def tarball_path(name: str, version: str) -> str:
        return f"/{name}/-/{unscoped(name)}-{version}.tgz"

    def version(self, name: str, version: str) -> FakeVersion:
        return self.packages[name].versions[version]

    def packument(self, name: str) -> dict[str, Any]:
        """The full packument as the upstream serves it."""
        package = self.packages[name]
        versions: dict[str, Any] = {}
        time: dict[str, str] = {}
        if package.created is not None:
            time["created"] = iso(package.created)
        if package.modified is not None:
            time["modified"] = iso(package.modified)
        for version, entry in package.versions.items():
            manifest: dict[str, Any] = {
                "name": name,
                "version": version,
                "description": f"{name} for tests",
                "main": "index.js",
                "license": "MIT",
                "dependencies": entry.dependencies,
                "_id": f"{name}@{version}",
                "_npmVersion": "10.8.2",
                "dist": {
                    "tarball": self.upstream.url(self.tarball_path(name, version)),
                    "shasum": entry.shasum,
                    "integrity": entry.integrity,
                    "fileCount": 2,
                    "unpackedSize": 120,
                    "signatures": [{"keyid": "SHA256:fake", "sig": "MEUCIQDfake"}],
                    **({"attestations": entry.attestations} if entry.attestations else {}),
                },
                **({"scripts": entry.scripts} if entry.scripts else {}),
                **(
                    {
                        "_npmUser": {
                            "name": entry.publisher,
                            "email": f"{entry.publisher}@example.com",
                        }
                    }
                    if entry.publisher is not None
                    else {}
                ),
                **entry.extra,
            }
            if entry.deprecated is not None:
                manifest["deprecated"] = entry.deprecated
            versions[version] = manifest
            if entry.published is not None:
                time[version] = iso(entry.published)
        top: dict[str, Any] = {
            "_id": name,
            "_rev": f"{len(versions)}-0123456789abcdef",
            "name": name,
            "description": f"{name} for tests",
            "dist-tags": dict(package.dist_tags),
            "versions": versions,
            "time": time,
            "maintainers": [{"name": "tester", "email": "tester@example.com"}],
            "readme": f"# {name}\n",
            "readmeFilename": "README.md",
            "license": "MIT",
        }
        # As the registry does: the package-level text is the `latest` version's.
        latest = package.versions.get(package.dist_tags.get("latest", ""))
        if latest is not None:
            top.update({key: latest.extra[key] for key in PACKAGE_TEXT_KEYS if key in latest.extra})
        return top

    def _sync(self, name: str) -> None:
        if self.upstream.base_url is None:
            return
        body = json.dumps(self.packument(name)).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"' if self.validators else None
        # Clients send the scope slash as %2f or %2F (yarl normalises to %2F): serve both.
        for path in {self.packument_path(name), self.packument_path(name).replace("%2f", "%2F")}:
            self.upstream.add(path, body, content_type="application/json", etag=etag, compress=True)
        for version, entry in self.packages[name].versions.items():
            self.upstream.add(
                self.tarball_path(name, version),
                entry.tarball,
                content_type="application/octet-stream",
            )
