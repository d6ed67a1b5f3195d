"""Pinned versions read from lockfiles, for `mirror preflight` (will this lockfile install
through the mirror today?). Pure: text in, pins out; the formats are recognised by file name.

- npm: `package-lock.json` / `npm-shrinkwrap.json` (lockfile versions 1, 2 and 3);
- yarn classic: `yarn.lock` (v1);
- pip: `requirements*.txt` / `constraints*.txt` with `name==version` pins (hashes, options,
  comments and environment markers are skipped; unpinned lines are reported as such).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class LockfileError(ValueError):
    """A file that is not a lockfile this reader knows, or not a well-formed one."""


@dataclass(frozen=True, slots=True, order=True)
class Pin:
    ecosystem: str
    package: str
    version: str


@dataclass(frozen=True, slots=True)
class Lockfile:
    pins: tuple[Pin, ...]
    # Lines or entries that name a package without an exact version (not checkable).
    unpinned: tuple[str, ...] = ()


def read_lockfile(name: str, text: str) -> Lockfile:
    """The pins of the lockfile called `name` (its base name decides the format)."""
    base = name.rsplit("/", 1)[-1].lower()
    if base in ("package-lock.json", "npm-shrinkwrap.json"):
        return _npm_lock(text)
    if base == "yarn.lock":
        return _yarn_lock(text)
    if base.endswith(".txt") and base.startswith(("requirements", "constraints")):
        return _requirements(text)
    raise LockfileError(
        f"{name}: not a lockfile this command reads (package-lock.json, npm-shrinkwrap.json, "
        "yarn.lock, requirements*.txt)"
    )


# npm ------------------------------------------------------------------------------------------


def _npm_lock(text: str) -> Lockfile:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockfileError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise LockfileError("a package-lock is a JSON object")
    pins: set[Pin] = set()
    packages = document.get("packages")
    if isinstance(packages, dict):  # lockfile versions 2 and 3
        for path, entry in packages.items():
            if not path or not isinstance(entry, dict) or entry.get("link"):
                continue
            name = entry.get("name") or _name_from_path(path)
            version = entry.get("version")
            if isinstance(name, str) and isinstance(version, str) and _npm_registry_entry(entry):
                pins.add(Pin("npm", name, version))
    else:  # lockfile version 1: nested "dependencies"
        pins.update(_npm_v1(document.get("dependencies")))
    return Lockfile(pins=tuple(sorted(pins)))


def _name_from_path(path: str) -> str | None:
    # "node_modules/a/node_modules/@scope/b" -> "@scope/b"
    _, marker, name = path.rpartition("node_modules/")
    return name if marker else None


def _npm_registry_entry(entry: Mapping[str, Any]) -> bool:
    """Registry packages only: not git, file or tarball-URL dependencies of other hosts."""
    resolved = entry.get("resolved")
    version = entry.get("version", "")
    if isinstance(version, str) and ":" in version:  # "file:..", "git+https://.."
        return False
    return resolved is None or (isinstance(resolved, str) and resolved.startswith("http"))


def _npm_v1(dependencies: Any) -> Iterable[Pin]:
    if not isinstance(dependencies, dict):
        return
    for name, entry in dependencies.items():
        if not isinstance(entry, dict):
            continue
        version = entry.get("version")
        if isinstance(version, str) and _npm_registry_entry(entry):
            yield Pin("npm", name, version)
        yield from _npm_v1(entry.get("dependencies"))


# yarn classic -----------------------------------------------------------------------------------

_YARN_VERSION = re.compile(r'^\s+version\s+"?([^"\s]+)"?\s*$')


def _yarn_lock(text: str) -> Lockfile:
    pins: set[Pin] = set()
    names: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            # `"@scope/a@^1.0.0", "@scope/a@^1.2.0":` -> the name before the last "@"
            names = []
            for selector in line.rstrip(":").split(","):
                selector = selector.strip().strip('"')
                name, at, _range = selector.rpartition("@")
                # An alias (`alias@npm:real@^1`) installs the real package.
                name = name.split("@npm:", 1)[1] if "@npm:" in name else name
                if at and name:
                    names.append(name)
            continue
        match = _YARN_VERSION.match(line)
        if match and names:
            pins.update(Pin("npm", name, match.group(1)) for name in names)
            names = []
    return Lockfile(pins=tuple(sorted(pins)))


# pip requirements -------------------------------------------------------------------------------

_PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?"  # name[extras]
    r"\s*===?\s*([^\s;#\\,]+)\s*(?:[;#\\].*)?$"  # == version, then markers or comment
)
_NAME_ONLY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def _requirements(text: str) -> Lockfile:
    pins: set[Pin] = set()
    unpinned: list[str] = []
    for raw_line in _logical_lines(text):
        line = raw_line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue  # comments and options (-r, --hash on its own line, -e, --index-url)
        line = re.sub(r"\s--hash=\S+", "", line).strip()
        match = _PIN.match(line)
        if match:
            pins.add(Pin("pypi", match.group(1), match.group(2)))
        elif _NAME_ONLY.match(line) and "://" not in line and " @ " not in line:
            unpinned.append(line)
    return Lockfile(pins=tuple(sorted(pins)), unpinned=tuple(unpinned))


def _logical_lines(text: str) -> Iterable[str]:
    """Lines with backslash continuations joined, as pip reads them."""
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending
