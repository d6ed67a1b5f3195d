"""npm package names and request paths: validation per npm's naming rules and parsing of the
raw (still percent-encoded) request path into what is asked for. Pure: no I/O, no aiohttp."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode

from mirror.budget import small_input_cache
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


def parse_request_path(raw_path: str, prefix: str = "/npm") -> NpmRequest:
    """Parse a raw request path (`request.raw_path`, query allowed) below `prefix`.

    Accepts `/{name}`, `/@scope%2fname` (`%2F` too), `/@scope/name`, `/{name}/-/{file}`,
    `/@scope/name/-/{file}`, `/{name}/{version-or-tag}` and `/-/...`. Raises BadRequest for
    anything that is not a valid npm name or a known shape, before any upstream request."""
    # The query never matters here, and without it a made-up query creates no cache entry.
    return _parse_path(raw_path.split("?", 1)[0], prefix)


@small_input_cache(4096)  # pure; CI asks for the same paths over and over
def _parse_path(path: str, prefix: str) -> NpmRequest:
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


@functools.lru_cache(maxsize=4096)  # pure; built for every tarball and packument request
def packument_url(upstream: str, package: PackageName) -> str:
    """Upstream URL of a packument: `<upstream><name>` with the scope slash as `%2f`."""
    return upstream.rstrip("/") + "/" + quote(package.name, safe="@~!*'()").replace("%2F", "%2f")


# relayed endpoints ---------------------------------------------------------------------------

# `npm search` (libnpmsearch) sends these; each value is checked and re-encoded by the mirror.
MAX_SEARCH_TEXT = 512
_SEARCH_NUMBERS: dict[str, tuple[re.Pattern[str], float, float]] = {
    "size": (re.compile(r"[0-9]{1,4}"), 0, 250),
    "from": (re.compile(r"[0-9]{1,6}"), 0, 100_000),
    "quality": (re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,6})?"), 0, 1),
    "popularity": (re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,6})?"), 0, 1),
    "maintenance": (re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,6})?"), 0, 1),
}
SEARCH_PARAMETERS = ("text", *_SEARCH_NUMBERS)
# A version as npm publishes it (semver: numbers, prerelease and build identifiers).
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+\-]{0,255}")


def search_query(raw_query: str) -> str:
    """The query string the mirror sends upstream for `GET /-/v1/search?{raw_query}`: only
    the parameters `npm search` uses, each once and checked, re-encoded by the mirror.
    Raises BadRequest naming the parameter that is unknown, repeated or out of range."""
    try:
        pairs = parse_qsl(
            raw_query,
            keep_blank_values=True,
            errors="strict",
            max_num_fields=len(SEARCH_PARAMETERS),
        )
    except UnicodeDecodeError:
        raise BadRequest("the search query is not UTF-8 once decoded") from None
    except ValueError:
        raise BadRequest(
            f"the search query has more than {len(SEARCH_PARAMETERS)} parameters"
        ) from None
    seen: set[str] = set()
    for key, value in pairs:
        if key not in SEARCH_PARAMETERS:
            raise BadRequest(
                f"unknown search parameter {key[:40]!r} (known: {', '.join(SEARCH_PARAMETERS)})"
            )
        if key in seen:
            raise BadRequest(f"search parameter {key!r} is given more than once")
        seen.add(key)
        if key == "text":
            if len(value) > MAX_SEARCH_TEXT:
                raise BadRequest(f"search text is longer than {MAX_SEARCH_TEXT} characters")
            if any(not char.isprintable() for char in value):
                raise BadRequest("search text contains control characters")
            continue
        pattern, lowest, highest = _SEARCH_NUMBERS[key]
        if not pattern.fullmatch(value) or not lowest <= float(value) <= highest:
            raise BadRequest(
                f"search parameter {key!r} must be a number from {lowest:g} to {highest:g}"
            )
    return urlencode(pairs, quote_via=quote)


def parse_attestation_spec(raw: str) -> tuple[PackageName, str]:
    """(package, version) of the raw path tail of `/-/npm/v1/attestations/{name}@{version}`:
    `left-pad@1.3.0`, `@scope%2fname@1.0.0` (`%2F`, or a literal slash). Raises BadRequest."""
    tail = raw
    if tail.startswith(("@", "%40")):
        tail = _SCOPE_SEPARATOR.sub("/", tail, count=1)
    segments = tail.split("/")
    if len(segments) > (2 if segments[0].startswith(("@", "%40")) else 1):
        raise BadRequest("attestations are asked for as {name}@{version}")
    spec = "/".join(_decode_segment(segment) for segment in segments)
    name, at, version = spec.rpartition("@")
    if not at or not name or name == "@":
        raise BadRequest("attestations are asked for as {name}@{version}")
    if not _VERSION.fullmatch(version):
        raise BadRequest(f"{version[:80]!r} is not an npm version")
    return parse_name(name), version


def attestations_path(package: PackageName, version: str) -> str:
    """The path below the registry's `/-/` of a version's attestations."""
    return f"npm/v1/attestations/{package.escaped}@{quote(version, safe='+')}"
