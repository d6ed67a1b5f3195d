"""A fake Python package index for tests: builds real wheels (a zip with a valid
`{name}-{version}.dist-info/` METADATA, WHEEL, RECORD and a tiny module) and sdists (PKG-INFO,
pyproject.toml, the module), with chosen upload times and PEP 658 `.metadata` files, and
serves them through the recording `FakeUpstream`: the simple index as PEP 691 JSON (or, in
HTML-only mode, PEP 503 HTML without upload times) and the legacy JSON API. A file may carry
PEP 740 provenance (`provenance=True`: a `provenance` URL in JSON, `data-provenance` in HTML;
the legacy JSON API states none, as PyPI's), and any file may be added to an old release
later (its own `uploaded`): the late-added wheel."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pytest_aiohttp import AiohttpServer

from tests.fakes.upstream import FakeUpstream, RecordedRequest

ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _escaped(name: str) -> str:
    """The file-name form of a project name (wheel and sdist names use `_`)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def core_metadata(
    name: str,
    version: str,
    requires_python: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    description: str = "",
) -> bytes:
    """METADATA: `headers` (in order, repeated ones kept) after the required ones, and
    `description` as the body. `Summary: test` unless `headers` has a Summary."""
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if not any(key.lower() == "summary" for key, _value in headers):
        lines.append("Summary: test")
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"{key}: {value}" for key, value in headers]
    return ("\n".join(lines) + "\n\n" + description).encode()


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(
    name: str,
    version: str,
    *,
    tag: str = "py3-none-any",
    requires_python: str | None = None,
    padding: int = 0,
    headers: Sequence[tuple[str, str]] = (),
    description: str = "",
) -> tuple[str, bytes, bytes]:
    """A deterministic, installable wheel: (file name, bytes, its METADATA bytes). `padding`
    bytes of data (stored uncompressed) make it that much bigger."""
    stem = _escaped(name)
    dist_info = f"{stem}-{version}.dist-info"
    metadata = core_metadata(name, version, requires_python, headers, description)
    members = {
        f"{stem}/__init__.py": f"VERSION = {version!r}\nTAG = {tag!r}\n".encode(),
        **({f"{stem}/padding.bin": bytes(range(256)) * (padding // 256)} if padding else {}),
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: fake\nRoot-Is-Purelib: true\nTag: {tag}\n\n"
        ).encode(),
    }
    record = [_record_line(path, data) for path, data in members.items()]
    record.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            stored = zipfile.ZIP_STORED if path.endswith("/padding.bin") else None
            archive.writestr(zipfile.ZipInfo(path, date_time=ZIP_TIME), data, stored)
    return f"{stem}-{version}-{tag}.whl", raw.getvalue(), metadata


def make_sdist(
    name: str, version: str, headers: Sequence[tuple[str, str]] = ()
) -> tuple[str, bytes]:
    """A deterministic sdist (`.tar.gz`) with PKG-INFO, a setuptools pyproject and a module."""
    stem = _escaped(name)
    root = f"{stem}-{version}"
    members = {
        f"{root}/PKG-INFO": core_metadata(name, version, headers=headers),
        f"{root}/pyproject.toml": (
            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\n'
        ).encode(),
        f"{root}/{stem}/__init__.py": f"VERSION = {version!r}\n".encode(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1577836800
            archive.addfile(info, io.BytesIO(data))
    return f"{root}.tar.gz", raw.getvalue()


def upload_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class FakeFile:
    project: str
    version: str
    filename: str
    data: bytes
    uploaded: datetime | None
    metadata: bytes | None = None
    requires_python: str | None = None
    yanked: bool | str = False
    provenance: bool = False  # PEP 740: the index lists a provenance file for it

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def path(self) -> str:
        return f"/packages/{self.sha256[:2]}/{self.sha256[2:4]}/{self.filename}"


class FakePypiIndex:
    """Build projects with `add_wheel` / `add_sdist` / `add_file`; every change is served at
    once. `mode="html"` serves PEP 503 HTML only (no upload times, no sizes)."""

    def __init__(
        self,
        *,
        mode: Literal["json", "html"] = "json",
        json_api: bool = True,
        version_api: bool = True,
        metadata_files: bool = True,
    ) -> None:
        """`json_api=False`: no legacy JSON API at all; `version_api=False`: the project
        document only, no `/pypi/{project}/{version}/json` (as some private indexes);
        `metadata_files=False`: no PEP 658 `.metadata` files, declared or served."""
        self.upstream = FakeUpstream()
        self.mode = mode
        self.json_api = json_api
        self.version_api = version_api
        self.metadata_files = metadata_files
        self.files: dict[str, list[FakeFile]] = {}
        # Extra `info` fields per (project, version), and raw links the page (and the JSON
        # API's release) carries as they are: hostile or broken URLs for tests.
        self.release_info: dict[tuple[str, str], dict[str, Any]] = {}
        self.raw_links: dict[str, list[tuple[str, str, str]]] = {}

    async def start(self, aiohttp_server: AiohttpServer) -> str:
        base = await self.upstream.start(aiohttp_server)
        self._sync_all()
        return base

    @property
    def url(self) -> str:
        """The upstream simple index URL: the value of MIRROR_PYPI_UPSTREAM."""
        return self.upstream.url("/simple/")

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.upstream.requests

    # building ---------------------------------------------------------------------------

    def add_file(self, file: FakeFile) -> FakeFile:
        self.files.setdefault(normalize(file.project), []).append(file)
        self._sync_all()
        return file

    def add_wheel(
        self,
        project: str,
        version: str,
        *,
        uploaded: datetime | None,
        tag: str = "py3-none-any",
        requires_python: str | None = None,
        yanked: bool | str = False,
        metadata: bool = True,
        padding: int = 0,
        headers: Sequence[tuple[str, str]] = (),
        description: str = "",
        provenance: bool = False,
    ) -> FakeFile:
        """`headers` and `description` go into its METADATA (after Name and Version);
        `provenance`: the page lists a PEP 740 provenance file for it."""
        filename, data, meta = make_wheel(
            project,
            version,
            tag=tag,
            requires_python=requires_python,
            padding=padding,
            headers=headers,
            description=description,
        )
        return self.add_file(
            FakeFile(
                project=project,
                version=version,
                filename=filename,
                data=data,
                uploaded=uploaded,
                metadata=meta if metadata else None,
                requires_python=requires_python,
                yanked=yanked,
                provenance=provenance,
            )
        )

    def add_sdist(
        self,
        project: str,
        version: str,
        *,
        uploaded: datetime | None,
        metadata: bool = False,
        headers: Sequence[tuple[str, str]] = (),
        provenance: bool = False,
    ) -> FakeFile:
        """`metadata=True`: its PKG-INFO is declared and served as its PEP 658 file;
        `provenance`: the page lists a PEP 740 provenance file for it."""
        filename, data = make_sdist(project, version, headers)
        return self.add_file(
            FakeFile(
                project=project,
                version=version,
                filename=filename,
                data=data,
                uploaded=uploaded,
                metadata=core_metadata(project, version, headers=headers) if metadata else None,
                provenance=provenance,
            )
        )

    def set_release_info(self, project: str, version: str, **fields: Any) -> None:
        """Fields the JSON API's `info` carries for `version` (summary, requires_dist…)."""
        self.release_info[(normalize(project), version)] = fields
        self._sync_all()

    def add_raw_link(self, project: str, href: str, filename: str, version: str) -> None:
        """A link with `href` exactly as given (any scheme, relative, broken) on the page of
        `project`, and a file of `version` with that URL in the JSON API."""
        self.raw_links.setdefault(normalize(project), []).append((href, filename, version))
        self._sync_all()

    def remove_file(self, filename: str) -> None:
        """Delete one file: gone from the page and the JSON API, its URL answers 404."""
        item = self.file(filename)
        self.files[normalize(item.project)].remove(item)
        self.upstream.remove(item.path)
        self._sync_all()

    def yank(self, filename: str, reason: str = "") -> None:
        """Yank one file (PEP 592), with `reason` when given."""
        self.file(filename).yanked = reason or True
        self._sync_all()

    def file(self, filename: str) -> FakeFile:
        for files in self.files.values():
            for item in files:
                if item.filename == filename:
                    return item
        raise KeyError(filename)

    # documents --------------------------------------------------------------------------

    @staticmethod
    def page_path(project: str) -> str:
        return f"/simple/{normalize(project)}/"

    def page_json(self, project: str) -> dict[str, Any]:
        files = []
        for item in self.files[normalize(project)]:
            entry: dict[str, Any] = {
                "filename": item.filename,
                "url": self.upstream.url(item.path),
                "hashes": {"sha256": item.sha256},
                "requires-python": item.requires_python,
                "yanked": item.yanked,
                "size": len(item.data),
            }
            if item.metadata is not None and self.metadata_files:
                digest = {"sha256": hashlib.sha256(item.metadata).hexdigest()}
                entry["core-metadata"] = digest
                entry["data-dist-info-metadata"] = digest
            if item.uploaded is not None:
                entry["upload-time"] = upload_text(item.uploaded)
            entry["provenance"] = self.provenance_url(item) if item.provenance else None
            files.append(entry)
        for href, filename, _version in self.raw_links.get(normalize(project), []):
            files.append({"filename": filename, "url": href, "hashes": {"sha256": "0" * 64}})
        versions = sorted({item.version for item in self.files[normalize(project)]})
        return {
            "meta": {"api-version": "1.1", "_last-serial": len(files)},
            "name": normalize(project),
            "versions": versions,
            "files": files,
        }

    def page_html(self, project: str) -> str:
        links = []
        for item in self.files[normalize(project)]:
            attrs = [f'href="{self.upstream.url(item.path)}#sha256={item.sha256}"']
            if item.requires_python:
                attrs.append(f'data-requires-python="{html.escape(item.requires_python)}"')
            if item.yanked is not False:
                reason = item.yanked if isinstance(item.yanked, str) else ""
                attrs.append(f'data-yanked="{html.escape(reason)}"')
            if item.metadata is not None and self.metadata_files:
                digest = hashlib.sha256(item.metadata).hexdigest()
                attrs.append(f'data-core-metadata="sha256={digest}"')
            if item.provenance:
                attrs.append(f'data-provenance="{html.escape(self.provenance_url(item))}"')
            links.append(f"<a {' '.join(attrs)}>{item.filename}</a><br />")
        for href, filename, _version in self.raw_links.get(normalize(project), []):
            links.append(f'<a href="{html.escape(href)}">{html.escape(filename)}</a><br />')
        return (
            '<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.0">'
            f"<title>Links for {project}</title></head><body>{''.join(links)}</body></html>"
        )

    def provenance_url(self, item: FakeFile) -> str:
        """Where the index says `item`'s PEP 740 provenance is (not served: the mirror never
        asks for it)."""
        return self.upstream.url(f"/integrity/{item.project}/{item.version}/{item.filename}")

    def _api_file(self, item: FakeFile) -> dict[str, Any]:
        uploaded = item.uploaded
        return {
            "filename": item.filename,
            "url": self.upstream.url(item.path),
            "packagetype": "bdist_wheel" if item.filename.endswith(".whl") else "sdist",
            "digests": {"sha256": item.sha256},
            "size": len(item.data),
            "upload_time": uploaded.strftime("%Y-%m-%dT%H:%M:%S") if uploaded else None,
            "upload_time_iso_8601": upload_text(uploaded) if uploaded else None,
            "requires_python": item.requires_python,
            "yanked": item.yanked is not False,
            "yanked_reason": item.yanked if isinstance(item.yanked, str) else None,
        }

    def api_json(self, project: str, version: str | None = None) -> dict[str, Any]:
        files = self.files[normalize(project)]
        releases: dict[str, list[dict[str, Any]]] = {}
        for item in files:
            releases.setdefault(item.version, []).append(self._api_file(item))
        for href, filename, release in self.raw_links.get(normalize(project), []):
            releases.setdefault(release, []).append(
                {"filename": filename, "url": href, "digests": {"sha256": "0" * 64}}
            )
        latest = version or max(releases, key=lambda v: [int(p) for p in re.findall(r"\d+", v)])
        info = {"name": project, "version": latest, "summary": f"{project} {latest}"}
        info.update(self.release_info.get((normalize(project), latest), {}))
        body: dict[str, Any] = {
            "info": info,
            "last_serial": len(files),
            "urls": releases.get(latest, []),
            "vulnerabilities": [],
        }
        if version is None:
            body["releases"] = releases
        return body

    def _sync_all(self) -> None:
        if self.upstream.base_url is None:
            return
        root_names = sorted(self.files)
        if self.mode == "json":
            root = {"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in root_names]}
            self.upstream.add(
                "/simple/",
                json.dumps(root).encode(),
                content_type="application/vnd.pypi.simple.v1+json",
            )
        else:
            links = "".join(f'<a href="/simple/{n}/">{n}</a>' for n in root_names)
            self.upstream.add(
                "/simple/", f"<html><body>{links}</body></html>".encode(), content_type="text/html"
            )
        for project, files in self.files.items():
            if self.mode == "json":
                body = json.dumps(self.page_json(project)).encode()
                content_type = "application/vnd.pypi.simple.v1+json"
            else:
                body = self.page_html(project).encode()
                content_type = "text/html"
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            self.upstream.add(
                self.page_path(project), body, content_type=content_type, etag=etag, compress=True
            )
            if self.json_api:
                self.upstream.add(
                    f"/pypi/{project}/json",
                    json.dumps(self.api_json(project)).encode(),
                    content_type="application/json",
                )
                for version in {item.version for item in files} if self.version_api else ():
                    self.upstream.add(
                        f"/pypi/{project}/{version}/json",
                        json.dumps(self.api_json(project, version)).encode(),
                        content_type="application/json",
                    )
            for item in files:
                self.upstream.add(item.path, item.data)
                if item.metadata is not None and self.metadata_files:
                    self.upstream.add(item.path + ".metadata", item.metadata)
