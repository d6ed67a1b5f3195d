"""PyPI project names, file names and request paths: PEP 508/503 validation and
normalization, the version a distribution file belongs to, the raw request path parsed into
what is asked for, and the upstream URLs derived from the simple index URL. Pure: no I/O, no
aiohttp.

Which version a file belongs to (`file_version`), stated plainly because blocks and the PEP
700 `versions` list depend on it:

1. wheels (`.whl`) by `packaging.utils.parse_wheel_filename`, sdists (`.tar.gz`, `.zip`) by
   `parse_sdist_filename`: the PEP 440 version, normalized (`1.0-beta` → `1.0b0`);
2. legacy formats (`.egg`, `.exe`, `.msi`, `.tar.bz2`, `.tar.xz`, `.tgz`, `.tar`, `.rpm`,
   `.dmg`, and `.tar.gz`/`.zip` that packaging refuses): only when the name is
   `<project>-<version>[<platform or python tag>].<ext>`, the project part normalizes to the
   project's own name and the version is valid PEP 440;
3. anything else (a non-PEP 440 version like `2004d`, another project's name, an unknown
   extension) has no version: the mirror never lists or serves it, because a file it cannot
   attribute to a version could slip past a block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from mirror.budget import small_input_cache
from mirror.ecosystems.base import decode_path_segment
from mirror.errors import BadRequest
from mirror.pathgate import require_under

MAX_NAME_LENGTH = 200
MAX_FILENAME_LENGTH = 255
METADATA_SUFFIX = ".metadata"
_PROJECT = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[-_.]+")
_LEGACY_EXTENSIONS = (
    ".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tgz", ".tbz", ".tar", ".zip", ".egg",
    ".exe", ".msi", ".rpm", ".dmg", ".deb",
)  # fmt: skip
# What may follow the version in a legacy name: a python tag (`-py2.7`), a build tag, or a
# distutils platform (`.win32`, `.win-amd64`, `.linux-x86_64`, `.macosx-10.6-intel`).
_LEGACY_TAIL = re.compile(
    r"^(?:$|-.*|\.(?:win32|win-|linux|macosx|cygwin|freebsd|openbsd|netbsd|solaris|sunos|aix)"
    r".*)$",
    re.IGNORECASE,
)


def normalize(name: str) -> str:
    """PEP 503 normalization: lower case, runs of `-`, `_`, `.` become one `-`."""
    return _SEPARATORS.sub("-", name).lower()


@dataclass(frozen=True, slots=True)
class Project:
    """A validated project name as requested and its PEP 503 normalized form."""

    name: str

    @property
    def normalized(self) -> str:
        return normalize(self.name)

    @property
    def is_normalized(self) -> bool:
        return self.name == self.normalized


def parse_project(text: str) -> Project:
    """Validate a decoded project name (PEP 508 names). Raises BadRequest with a reason."""
    if not text:
        raise BadRequest("empty project name")
    if len(text) > MAX_NAME_LENGTH:
        raise BadRequest(f"project name is longer than {MAX_NAME_LENGTH} characters")
    if not _PROJECT.fullmatch(text):
        raise BadRequest(
            f"{text[:80]!r} is not a valid Python project name (letters, digits, '.', '_' and "
            "'-', starting and ending with a letter or digit)"
        )
    return Project(text)


def parse_filename(text: str) -> str:
    """Validate a decoded distribution file name: one path segment, printable, no `..`."""
    if not text:
        raise BadRequest("empty file name")
    if len(text) > MAX_FILENAME_LENGTH:
        raise BadRequest(f"file name is longer than {MAX_FILENAME_LENGTH} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise BadRequest("file name contains control characters")
    if "/" in text or "\\" in text:
        raise BadRequest("file name contains a slash")
    if ".." in text or text.startswith("."):
        raise BadRequest(f"file name {text[:80]!r} contains '..' or starts with '.'")
    return text


# versions of files ---------------------------------------------------------------------------

WHEEL_SUFFIX = ".whl"


def is_wheel(filename: str) -> bool:
    """Whether `filename` names a wheel (by its suffix, in any case)."""
    return filename.lower().endswith(WHEEL_SUFFIX)


def file_version(filename: str, project: str) -> str | None:
    """The normalized PEP 440 version `filename` belongs to, or None (see the module doc)."""
    lowered = filename.lower()
    try:
        if lowered.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        if lowered.endswith((".tar.gz", ".zip")):
            return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        if lowered.endswith(".whl"):
            return None
    return legacy_file_version(filename, project)


def legacy_file_version(filename: str, project: str) -> str | None:
    """Best effort for pre-wheel formats: `<project>-<version>[tail].<ext>` where the project
    part normalizes to `project` and the version is valid PEP 440 (longest match wins)."""
    lowered = filename.lower()
    extension = next((ext for ext in _LEGACY_EXTENSIONS if lowered.endswith(ext)), None)
    if extension is None:
        return None
    stem = filename[: -len(extension)]
    parts = stem.split("-")
    wanted = normalize(project)
    for cut in range(1, len(parts)):
        if normalize("-".join(parts[:cut])) != wanted:
            continue
        version = _leading_version("-".join(parts[cut:]))
        if version is not None:
            return version
    return None


def _leading_version(rest: str) -> str | None:
    cuts = [index for index, char in enumerate(rest) if char in "-."] + [len(rest)]
    for cut in sorted(cuts, reverse=True):
        candidate, tail = rest[:cut], rest[cut:]
        if not candidate or not _LEGACY_TAIL.match(tail):
            continue
        try:
            return str(Version(candidate))
        except InvalidVersion:
            continue
    return None


# request paths -------------------------------------------------------------------------------

RequestKind = Literal["root", "project", "file", "metadata", "json", "json-version", "redirect"]


@dataclass(frozen=True, slots=True)
class PypiRequest:
    """What a path below `/pypi/` asks for. `redirect` carries the canonical path (below the
    mirror's base URL) a non-normalized request is sent to."""

    kind: RequestKind
    project: Project | None = None
    filename: str | None = None
    version: str | None = None
    location: str | None = None


def _decode_segment(segment: str) -> str:
    return decode_path_segment(segment, encoded_slash="encoded slashes are not allowed in the path")


def parse_request_path(raw_path: str, prefix: str = "/pypi") -> PypiRequest:
    """Parse a raw request path (`request.raw_path`) below `prefix`:

    `/simple/` (root), `/simple/{project}/`, `/files/{project}/{filename}[.metadata]`,
    `/pypi/{project}/json`, `/pypi/{project}/{version}/json`. A non-normalized project name
    or a missing trailing slash on a simple page becomes a `redirect`. Anything else, or an
    invalid name, raises BadRequest (shape unknown) before any upstream request."""
    # The query never matters here, and without it a made-up query creates no cache entry.
    return _parse_path(raw_path.split("?", 1)[0], prefix)


@small_input_cache(4096)  # pure; CI asks for the same paths over and over
def _parse_path(path: str, prefix: str) -> PypiRequest:
    if path in (prefix, prefix + "/", prefix + "/simple"):
        return PypiRequest(kind="redirect", location=f"{prefix}/simple/")
    if not path.startswith(prefix + "/"):
        raise BadRequest(f"not a PyPI path: {path[:120]!r}")
    segments = path[len(prefix) + 1 :].split("/")
    head, rest = segments[0], segments[1:]
    if head == "simple":
        if rest == [""]:
            return PypiRequest(kind="root")
        if len(rest) in (1, 2) and (len(rest) == 1 or rest[1] == ""):
            project = parse_project(_decode_segment(rest[0]))
            if not project.is_normalized or len(rest) == 1:
                return PypiRequest(
                    kind="redirect",
                    project=project,
                    location=f"{prefix}/simple/{quote(project.normalized)}/",
                )
            return PypiRequest(kind="project", project=project)
    elif head == "files" and len(rest) == 2:
        project = parse_project(_decode_segment(rest[0]))
        filename = parse_filename(_decode_segment(rest[1]))
        return PypiRequest(kind="file", project=project, filename=filename)
    elif head == "pypi" and len(rest) in (2, 3) and rest[-1] == "json":
        project = parse_project(_decode_segment(rest[0]))
        version = _decode_segment(rest[1]) if len(rest) == 3 else None
        if version is not None and (
            not version
            or version in {".", ".."}
            or any(ord(char) < 0x21 or char in "/\\" for char in version)
        ):
            raise BadRequest("bad version in the path")
        if not project.is_normalized:
            tail = f"{quote(version, safe='')}/json" if version is not None else "json"
            return PypiRequest(
                kind="redirect",
                project=project,
                location=f"{prefix}/pypi/{quote(project.normalized)}/{tail}",
            )
        if version is None:
            return PypiRequest(kind="json", project=project)
        return PypiRequest(kind="json-version", project=project, version=version)
    raise BadRequest(
        f"no PyPI resource has the shape {path[:120]!r} (this mirror serves /pypi/simple/, "
        "/pypi/files/ and /pypi/pypi/{project}/json)"
    )


# URLs ----------------------------------------------------------------------------------------


def simple_page_url(upstream: str, project: str) -> str:
    """The upstream simple page of a normalized project: `<upstream>{project}/`."""
    return upstream.rstrip("/") + "/" + quote(project) + "/"


def json_api_base(upstream: str) -> str | None:
    """The upstream JSON API root derived from the simple index URL (`…/simple/` →
    `…/pypi/`), or None when the simple URL does not end in `/simple/`."""
    parts = urlsplit(upstream)
    path = parts.path.rstrip("/")
    if not path.endswith("/simple") and path != "simple":
        return None
    root = path[: -len("simple")] + "pypi/"
    return urlunsplit((parts.scheme, parts.netloc, root, "", ""))


def json_api_url(api_base: str, project: str, version: str | None = None) -> str:
    """`<api>{project}/json` or `<api>{project}/{version}/json`, checked to stay under
    `api_base` (a version from upstream metadata is not validated: `..` would climb)."""
    if version is None:
        url = f"{api_base}{quote(project)}/json"
    else:
        url = f"{api_base}{quote(project)}/{quote(version, safe='')}/json"
    return require_under(url, api_base)


def file_url(base: str, project: str, filename: str) -> str:
    """The mirror's URL of a file; `base` is the mirror's `/pypi` root without a slash."""
    return f"{base}/files/{quote(project)}/{quote(filename, safe='+!~*()')}"
