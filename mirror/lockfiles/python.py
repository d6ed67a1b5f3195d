"""Python lockfiles: requirements files under any name (`pip freeze` output, pip-compile,
constraints), `poetry.lock`, `uv.lock` and `pylock.toml` (PEP 751). Pure. Names are
PEP 503-normalised; only packages from an index become pins (git, path, URL and editable
sources are skipped)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from mirror.lockfiles.pins import Lockfile, LockfileError, Pin, collect, parse_toml, pypi_pin

# requirements files -----------------------------------------------------------------------------

_NAME: Final = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_PIN: Final = re.compile(
    rf"^({_NAME})\s*(?:\[[^\]]*\])?"  # name[extras]
    r"\s*===?\s*([^\s;#\\,]+)\s*(?:[;#\\].*)?$"  # == version, then markers or comment
)
# A requirement line of any kind: a name, then extras, a specifier, markers or ` @ url`.
_REQUIREMENT: Final = re.compile(rf"^{_NAME}\s*(?:\[[^\]]*\])?\s*(?:$|[<>=!~;@(,])")
_INCLUDE: Final = re.compile(r"^(?:-[rc]|--requirement|--constraint)(?:[\s=]|$)")
_URL: Final = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|\.{0,2}/)\S*$")


def requirements(text: str) -> Lockfile:
    pins: set[Pin] = set()
    unpinned: list[str] = []
    skipped: list[str] = []
    for line in _requirement_lines(text):
        if line.startswith("-"):
            if line.startswith(("-e", "--editable")):
                skipped.append(line)
            elif _INCLUDE.match(line):  # not followed: the file is the caller's to pass
                skipped.append(f"{line} (not read: pass that file too)")
            continue  # other options: --index-url, --hash on its own line
        match = _PIN.match(line)
        if match and "*" not in match.group(2):  # `==1.*` is a range, not a pin
            pins.add(pypi_pin(match.group(1), match.group(2)))
        elif " @ " in line or "@ " in line or _URL.match(line):
            skipped.append(line)  # `pkg @ https://…`, `./local.whl`: not from an index
        else:
            unpinned.append(line)
    return collect("requirements", pins, unpinned=unpinned, skipped=skipped)


def looks_like_requirements(text: str) -> bool:
    """Every meaningful line is a requirement, an option or a URL: so a file that is not one
    (a README, a Gemfile.lock) is not read as an empty or half-read requirements file."""
    return all(
        line.startswith("-") or _REQUIREMENT.match(line) or _URL.match(line)
        for line in _requirement_lines(text)
    )


def _requirement_lines(text: str) -> Iterator[str]:
    """Meaningful lines, continuations joined, comments and `--hash` options removed."""
    for raw_line in _logical_lines(text):
        line = raw_line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"\s--hash[=\s]\S+", "", line).strip()
        if line:
            yield line


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


# TOML lockfiles ---------------------------------------------------------------------------------


def toml_kind(document: Mapping[str, Any]) -> str | None:
    """Which TOML lockfile this is: pylock.toml has `lock-version` and `[[packages]]`;
    poetry.lock a `[metadata]` table with `content-hash`; uv.lock `requires-python` or
    table-valued `source`s (Cargo.lock, also `[[package]]` name/version, has string ones)."""
    if "lock-version" in document and isinstance(document.get("packages"), list):
        return "pylock.toml"
    packages = document.get("package")
    if not isinstance(packages, list):
        return None
    metadata = document.get("metadata")
    if isinstance(metadata, dict) and ("content-hash" in metadata or "lock-version" in metadata):
        return "poetry.lock"
    if "requires-python" in document or any(
        isinstance(entry, dict) and isinstance(entry.get("source"), dict) for entry in packages
    ):
        return "uv.lock"
    return None


def poetry_lock(text: str) -> Lockfile:
    """`[[package]]` name/version; `[package.source]` of type git, directory, file or url is
    not an index (`legacy` is a private index, read through the mirror like any other)."""
    return _toml_packages(text, "poetry.lock", "package", _poetry_source)


def uv_lock(text: str) -> Lockfile:
    """`[[package]]` name/version/source: `source = { registry = … }` is an index; editable,
    virtual (the project itself), path, directory, git and url sources are not."""
    return _toml_packages(text, "uv.lock", "package", _uv_source)


def pylock(text: str) -> Lockfile:
    """PEP 751 `[[packages]]`: a package from an index has `index`, `wheels` or `sdist`;
    `vcs`, `directory` and `archive` ones are not from an index. `version` is optional."""
    return _toml_packages(text, "pylock.toml", "packages", _pylock_source)


def _poetry_source(entry: Mapping[str, Any]) -> bool:
    source = entry.get("source")
    return not isinstance(source, dict) or source.get("type") in (None, "legacy")


def _uv_source(entry: Mapping[str, Any]) -> bool:
    source = entry.get("source")
    return not isinstance(source, dict) or "registry" in source


def _pylock_source(entry: Mapping[str, Any]) -> bool:
    return not any(key in entry for key in ("vcs", "directory", "archive"))


def _toml_packages(
    text: str, format_name: str, table: str, from_index: Callable[[Mapping[str, Any]], bool]
) -> Lockfile:
    document = parse_toml(text, f"the {format_name}")
    packages = document.get(table)
    if not isinstance(packages, list):
        raise LockfileError(f"a {format_name} has a [[{table}]] list")
    pins: set[Pin] = set()
    unpinned: list[str] = []
    skipped: list[str] = []
    for entry in packages:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        name, version = entry["name"], entry.get("version")
        if not from_index(entry):
            skipped.append(f"{name} {version or ''}".strip())
        elif isinstance(version, str) and version:
            pins.add(pypi_pin(name, version))
        else:
            unpinned.append(name)
    return collect(format_name, pins, unpinned=unpinned, skipped=skipped)
