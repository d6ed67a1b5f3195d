"""npm-family lockfiles: `package-lock.json` / `npm-shrinkwrap.json` (lockfile versions 1-3,
with or without `resolved`), `yarn.lock` classic (v1) and berry (v2+), `pnpm-lock.yaml`
(v5, v6 and v9 layouts). Pure. Only registry packages become pins: git, file, link, tarball-URL
and workspace entries are skipped. The YAML files are read line by line for the few keys
they need (no YAML library, no recursion): time is linear in the file, nesting costs nothing."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from mirror.lockfiles.pins import Lockfile, LockfileError, Pin, collect, npm_pin, parse_json

# A registry version is semver: a tarball URL, a git commit or a path is not.
_SEMVER: Final = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?$")


# package-lock.json / npm-shrinkwrap.json -------------------------------------------------------


def package_lock(text: str) -> Lockfile:
    return package_lock_document(parse_json(text, "the package-lock"))


def package_lock_document(document: Any) -> Lockfile:
    if not isinstance(document, dict):
        raise LockfileError("a package-lock is a JSON object")
    pins: set[Pin] = set()
    skipped: list[str] = []
    packages = document.get("packages")
    if isinstance(packages, dict):  # lockfile versions 2 and 3
        for path, entry in packages.items():
            if not path or not isinstance(entry, dict) or entry.get("link"):
                continue  # the project itself; workspace links
            name = entry.get("name") or _name_from_path(path)
            version = entry.get("version")
            if not isinstance(name, str) or not isinstance(version, str):
                continue
            if _npm_registry_entry(entry):
                pins.add(npm_pin(name, version))
            else:
                skipped.append(f"{name}@{version}")
    else:  # lockfile version 1: nested "dependencies"
        _npm_v1(document.get("dependencies"), pins, skipped)
    return collect("package-lock.json", pins, skipped=skipped)


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


def _npm_v1(dependencies: Any, pins: set[Pin], skipped: list[str]) -> None:
    # Iterative: a hostile document's depth is bounded by parse_json, but no recursion needed.
    pending = [dependencies]
    while pending:
        level = pending.pop()
        if not isinstance(level, dict):
            continue
        for name, entry in level.items():
            if not isinstance(entry, dict):
                continue
            version = entry.get("version")
            if isinstance(version, str):
                if _npm_registry_entry(entry):
                    pins.add(npm_pin(name, version))
                else:
                    skipped.append(f"{name}@{version}")
            pending.append(entry.get("dependencies"))


# yarn.lock ------------------------------------------------------------------------------------

_YARN_V1_VERSION: Final = re.compile(r'^\s+version\s+"?([^"\s]+)"?\s*$')
_YARN_BERRY_RESOLUTION: Final = re.compile(
    r"""^  resolution:\s*(?:"([^"]*)"|'([^']*)'|(\S+))\s*$"""
)


def is_yarn_berry(text: str) -> bool:
    return any(line.rstrip() == "__metadata:" for line in _head(text))


def yarn_lock(text: str) -> Lockfile:
    """yarn.lock of either generation (berry has a `__metadata:` entry; classic does not)."""
    return _yarn_berry(text) if is_yarn_berry(text) else _yarn_v1(text)


def _yarn_v1(text: str) -> Lockfile:
    pins: set[Pin] = set()
    skipped: list[str] = []
    names: list[str] = []
    others: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            # `"@scope/a@^1.0.0", "@scope/a@^1.2.0":` names one package, perhaps many times
            selectors = [part.strip().strip('"') for part in line.rstrip(":").split(",")]
            selectors = [selector for selector in selectors if selector]
            read = [_yarn_v1_selector(selector) for selector in selectors]
            names = [name for name in read if name]
            pairs = zip(selectors, read, strict=True)
            others = [selector for selector, name in pairs if name is None]
            continue
        match = _YARN_V1_VERSION.match(line)
        if match and (names or others):
            version = match.group(1)
            if _SEMVER.match(version):
                pins.update(npm_pin(name, version) for name in names)
                skipped.extend(others)
            else:
                skipped.extend(f"{name}@{version}" for name in names)
            names, others = [], []
    return collect("yarn.lock", pins, skipped=skipped)


def _yarn_v1_selector(selector: str) -> str | None:
    """The package `name@range` installs from the registry, None if the range is another
    source (`file:`, `link:`, git and tarball URLs, `user/repo` shorthands). An alias
    (`pad@npm:left-pad@^1`) installs the real package."""
    at = selector.find("@", 1)  # the "@" after a scope's leading one
    if at < 0:
        return None
    name, version_range = selector[:at], selector[at + 1 :]
    if version_range.startswith("npm:"):
        real = version_range.removeprefix("npm:")
        real_at = real.find("@", 1)
        return real[:real_at] if real_at > 0 else name
    if ":" in version_range or "/" in version_range:
        return None
    return name


def _yarn_berry(text: str) -> Lockfile:
    """Each entry's `resolution: "name@npm:1.2.3"` names what is installed (an alias resolves
    to the real package); other protocols (workspace:, patch:, git, file) are skipped."""
    pins: set[Pin] = set()
    skipped: list[str] = []
    for line in text.splitlines():
        match = _YARN_BERRY_RESOLUTION.match(line)
        if not match:
            continue
        resolution = next(group for group in match.groups() if group is not None)
        name, marker, version = resolution.rpartition("@npm:")
        if marker and name and ":" not in name and _SEMVER.match(version):
            pins.add(npm_pin(name, version))
        else:
            skipped.append(resolution)
    return collect("yarn.lock", pins, skipped=skipped)


# pnpm-lock.yaml -------------------------------------------------------------------------------


def pnpm_lock(text: str) -> Lockfile:
    """The keys of the top-level `packages:` mapping: `/name@1.0.0` (v6), `name@1.0.0` (v9),
    `/name/1.0.0` (v5), each perhaps with a peer suffix `(react@18.2.0)` or `_react@18.2.0`."""
    pins: set[Pin] = set()
    skipped: list[str] = []
    for key in _section_keys(text, "packages"):
        pin = _pnpm_key(key)
        if pin is None:
            skipped.append(key)
        else:
            pins.add(pin)
    return collect("pnpm-lock.yaml", pins, skipped=skipped)


def _pnpm_key(key: str) -> Pin | None:
    key = key.split("(", 1)[0]  # v6/v9 peer suffix
    if key.startswith("/"):
        key = key[1:]
        unscoped = key.split("/", 1)[1] if key.startswith("@") else key
        if "/" in unscoped:  # v5: `/name/1.0.0`, `/@scope/name/1.0.0_peer@1.0.0`
            name, _, version = key.rpartition("/")
            version = version.split("_", 1)[0]
            return npm_pin(name, version) if _SEMVER.match(version) else None
    at = key.find("@", 1)  # the "@" after a scope's leading one
    name, version = key[:at], key[at + 1 :]
    if at < 0 or not name or not _SEMVER.match(version):
        return None  # git, tarball URL, file: and link: packages
    return npm_pin(name, version)


def _section_keys(text: str, section: str) -> Iterator[str]:
    """The keys one level inside the top-level mapping `section:` of a block-style YAML
    document, unquoted (`'@scope/a@1.0.0':` -> `@scope/a@1.0.0`)."""
    inside = False
    indent: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            inside = line.rstrip() == f"{section}:"
            indent = None
            continue
        if not inside:
            continue
        width = len(line) - len(line.lstrip(" "))
        if indent is None:
            indent = width
        if width != indent or not stripped.endswith((":", ": {}")):
            continue
        yield _unquote(stripped.removesuffix(" {}").removesuffix(":"))


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1].replace("''", "'") if text[0] == "'" else text[1:-1]
    return text


def is_pnpm_lock(text: str) -> bool:
    return any(line.startswith("lockfileVersion:") for line in _head(text))


def _head(text: str, lines: int = 20) -> Iterable[str]:
    """The first lines, where the YAML lockfiles say what they are."""
    return text[:4096].splitlines()[:lines]
