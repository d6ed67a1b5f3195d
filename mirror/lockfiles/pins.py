"""The pins a lockfile names and the limits every reader keeps. Pure."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from mirror.ecosystems.pypi.names import normalize
from mirror.jsondepth import nesting_depth

# Real lockfiles and SBOMs are at most a few tens of MB; anything larger is refused before a
# reader looks at it, so a hostile file costs one clear error.
MAX_LOCKFILE_CHARS: Final = 64 * 1024**2
# Real documents nest fewer than ten levels (CycloneDX components inside components a few
# more); a recursive parser must never see thousands.
MAX_NESTING: Final = 64


class LockfileError(ValueError):
    """A file that is not a lockfile this reader knows, or not a well-formed one."""


@dataclass(frozen=True, slots=True, order=True)
class Pin:
    ecosystem: str
    package: str
    version: str


@dataclass(frozen=True, slots=True)
class Lockfile:
    format: str
    pins: tuple[Pin, ...]
    # Entries that name a package without an exact version (not checkable).
    unpinned: tuple[str, ...] = ()
    # Entries the mirror does not serve (git, path, URL sources; other purl types).
    skipped: tuple[str, ...] = ()


def collect(
    format_name: str,
    pins: Iterable[Pin],
    unpinned: Iterable[str] = (),
    skipped: Iterable[str] = (),
) -> Lockfile:
    """A Lockfile with its pins sorted and each named once."""
    return Lockfile(format_name, tuple(sorted(set(pins))), tuple(unpinned), tuple(skipped))


def npm_pin(name: str, version: str) -> Pin:
    return Pin("npm", name.strip(), version.strip())


def pypi_pin(name: str, version: str) -> Pin:
    """PyPI names compare PEP 503-normalised (`Foo_Bar` is `foo-bar`)."""
    return Pin("pypi", normalize(name.strip()), version.strip())


def maven_pin(group: str, artifact: str, version: str) -> Pin:
    return Pin("maven", f"{group.strip()}:{artifact.strip()}", version.strip())


def parse_json(text: str, what: str) -> Any:
    """The JSON document `text`, its depth checked before the parser recurses into it."""
    depth = nesting_depth(text.encode("utf-8", "surrogatepass"))
    if depth > MAX_NESTING:
        raise LockfileError(f"{what} nests {depth} levels deep (more than {MAX_NESTING})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockfileError(f"{what} is not JSON: {exc}") from None


def parse_toml(text: str, what: str) -> dict[str, Any]:
    """The TOML document `text`. tomllib is pure Python and recurses per nested array or
    inline table: a hostile nesting ends in RecursionError, which is turned into the same
    clear error as any other malformed file."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockfileError(f"{what} is not TOML: {exc}") from None
    except RecursionError:
        raise LockfileError(f"{what} nests too deeply to be a lockfile") from None
