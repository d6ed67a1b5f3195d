"""npm package names and request paths: validation per npm's naming rules and parsing of the
raw (still percent-encoded) request path into what is asked for. Pure: no I/O, no aiohttp."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from mirror.ecosystems.base import decode_path_segment
from mirror.errors import BadRequest

MAX_NAME_LENGTH = 214
# What encodeURIComponent leaves alone: npm's test for a valid name part. Old packages may
# carry upper case and ~'!()* (npm only warns about those), so they are accepted here.
_PART = re.compile(r"[A-Za-z0-9._~!*'()\-]+")
_RESERVED = frozenset({"node_modules", "favicon.ico"})
_SCOPE_SEPARATOR = re.compile("%2f", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PackageName:
    """A validated npm name: `left-pad` or `@scope/name`."""

    name: str

    @property
    def scope(self) -> str | None:
        return self.name.split("/", 1)[0] if self.name.startswith("@") else None

    @property
    def unscoped(self) -> str:
        """The part after the scope: the tarball file name starts with it."""
        return self.name.rsplit("/", 1)[-1]

    @property
    def escaped(self) -> str:
        """The upstream path form: `@scope%2fname` (npm's own escaping)."""
        return self.name.replace("/", "%2f")

    def tarball_filename(self, version: str) -> str:
        return f"{self.unscoped}-{version}.tgz"

    def tarball_path(self, version: str) -> str:
        """The canonical tarball path below the registry base (literal scope slash)."""
        return f"/{self.name}/-/{self.tarball_filename(version)}"


def parse_name(text: str) -> PackageName:
    """Validate a decoded package name (`@scope/name` with a literal slash).

    Raises BadRequest with a message a person can act on for anything npm would not accept
    as the name of an existing package."""
    if not text:
        raise BadRequest("empty package name")
    if len(text) > MAX_NAME_LENGTH:
        raise BadRequest(f"package name is longer than {MAX_NAME_LENGTH} characters")
    if text != text.strip():
        raise BadRequest("package name has leading or trailing spaces")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise BadRequest("package name contains control characters")
    if "\\" in text:
        raise BadRequest("package name contains a backslash")
    if text.startswith((".", "_")):
        raise BadRequest(f"package name {text!r} starts with '.' or '_'")
    if text.lower() in _RESERVED:
        raise BadRequest(f"{text!r} is not a valid package name")
    if text.startswith("@"):
        scope, slash, rest = text[1:].partition("/")
        if not slash or not scope or not rest:
            raise BadRequest(f"scoped package name {text!r} must look like @scope/name")
        parts = [scope, rest]
    else:
        parts = [text]
    for part in parts:
        if part in {".", ".."} or ".." in part.split("/"):
            raise BadRequest(f"package name {text!r} contains a '..' segment")
        if "/" in part:
            raise BadRequest(f"package name {text!r} has a slash outside the scope")
        if not _PART.fullmatch(part):
            raise BadRequest(f"package name {text!r} contains characters npm does not allow")
    if parts[-1].startswith("."):
        raise BadRequest(f"package name {text!r} starts with '.'")
    return PackageName(text)


RequestKind = Literal["packument", "tarball", "version", "special"]


@dataclass(frozen=True, slots=True)
class NpmRequest:
    """What a path below `/npm/` asks for. `special` is the tail after `/-/` (e.g. `ping`)."""

    kind: RequestKind
    package: PackageName | None = None
    file: str | None = None
    version: str | None = None
    special: str | None = None


def _decode_segment(segment: str) -> str:
    # The only encoded slash npm clients send is the scope separator, handled before this.
    return decode_path_segment(
        segment, encoded_slash="encoded slashes are only allowed between a scope and a name"
    )


@functools.lru_cache(maxsize=4096)  # pure; CI asks for the same paths over and over
def parse_request_path(raw_path: str, prefix: str = "/npm") -> NpmRequest:
    """Parse a raw request path (`request.raw_path`, query allowed) below `prefix`.

    Accepts `/{name}`, `/@scope%2fname` (`%2F` too), `/@scope/name`, `/{name}/-/{file}`,
    `/@scope/name/-/{file}`, `/{name}/{version-or-tag}` and `/-/...`. Raises BadRequest for
    anything that is not a valid npm name or a known shape, before any upstream request."""
    path = raw_path.split("?", 1)[0]
    if not path.startswith(prefix + "/"):
        raise BadRequest(f"not an npm registry path: {path!r}")
    tail = path[len(prefix) + 1 :]
    if tail.startswith("-/") or tail == "-":
        return NpmRequest(kind="special", special=tail[2:])
    # The scope separator may arrive encoded (%2f npm/yarn, %2F pnpm) or literal.
    if tail.startswith(("@", "%40")):
        tail = _SCOPE_SEPARATOR.sub("/", tail, count=1)
    segments = tail.split("/")
    name_length = 2 if segments[0].startswith(("@", "%40")) else 1
    if len(segments) < name_length:
        raise BadRequest(f"scoped package name {tail!r} must look like @scope/name")
    name_segments = segments[:name_length]
    rest = segments[name_length:]
    package = parse_name("/".join(_decode_segment(part) for part in name_segments))
    if not rest or rest == [""]:
        return NpmRequest(kind="packument", package=package)
    if len(rest) == 2 and rest[0] == "-" and rest[1]:
        file = _decode_segment(rest[1])
        if "/" in file or "\\" in file or file in {".", ".."}:
            raise BadRequest("bad tarball file name")
        return NpmRequest(kind="tarball", package=package, file=file)
    if len(rest) == 1 and rest[0]:
        version = _decode_segment(rest[0])
        if any(ord(char) < 0x21 for char in version) or version in {".", ".."}:
            raise BadRequest("bad version or dist-tag in the path")
        return NpmRequest(kind="version", package=package, version=version)
    raise BadRequest(f"no npm registry resource has the shape {path!r}")


def packument_url(upstream: str, package: PackageName) -> str:
    """Upstream URL of a packument: `<upstream><name>` with the scope slash as `%2f`."""
    return upstream.rstrip("/") + "/" + quote(package.name, safe="@~!*'()").replace("%2F", "%2f")
