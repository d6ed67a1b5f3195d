"""Which format a file is, told by its content (any file name: `freeze.txt`,
`requirements/base.txt`), or forced by name; then its pins. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from mirror.lockfiles import maven, npm, python, sbom
from mirror.lockfiles.pins import (
    MAX_LOCKFILE_CHARS,
    Lockfile,
    LockfileError,
    parse_json,
    parse_toml,
)

# A TOML lockfile's tables of packages (`[[package]]`, PEP 751's `[[packages]]`).
_TOML_LOCK: Final = re.compile(r"^\[\[packages?\]\]\s*$", re.MULTILINE)


def _json_reader(reader: Callable[[Any], Lockfile], what: str) -> Callable[[str], Lockfile]:
    return lambda text: reader(parse_json(text, what))


# The names `--format` takes, each with its reader.
FORMATS: Final[Mapping[str, Callable[[str], Lockfile]]] = {
    "package-lock.json": npm.package_lock,  # npm-shrinkwrap.json is the same format
    "yarn.lock": npm.yarn_lock,  # classic (v1) and berry, told apart by `__metadata:`
    "pnpm-lock.yaml": npm.pnpm_lock,
    "requirements": python.requirements,
    "poetry.lock": python.poetry_lock,
    "uv.lock": python.uv_lock,
    "pylock.toml": python.pylock,
    "mvn-dependency-list": maven.dependency_list,
    "cyclonedx": _json_reader(sbom.cyclonedx, "the CycloneDX document"),
    "spdx": _json_reader(sbom.spdx, "the SPDX document"),
}
ALIASES: Final[Mapping[str, str]] = {"npm-shrinkwrap.json": "package-lock.json"}
FORMAT_NAMES: Final = ", ".join(FORMATS)
# File names that say their format, a hint when the content alone does not.
_NAMED_FILES: Final[Mapping[str, str]] = {
    **{name: name for name in FORMATS if "." in name},
    "npm-shrinkwrap.json": "package-lock.json",
}


def format_for_name(name: str) -> str | None:
    """The format a file called `name` is in by convention (`app/yarn.lock`: yarn.lock)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    if base.endswith(".txt") and base.startswith(("requirements", "constraints")):
        return "requirements"  # a line pip reads and this reader does not is listed unpinned
    return _NAMED_FILES.get(base)


def read_lockfile(text: str, *, name: str = "the file", format_name: str | None = None) -> Lockfile:
    """The pins of `text` (called `name` in messages), in `format_name` if given, otherwise
    in the format its content shows, otherwise in the one its file name says (a yarn.lock
    without its header comment). Raises LockfileError saying why it cannot."""
    if len(text) > MAX_LOCKFILE_CHARS:
        raise LockfileError(f"{name}: larger than {MAX_LOCKFILE_CHARS} characters; not read")
    text = text.removeprefix("\ufeff")
    try:
        if format_name is not None:
            reader = FORMATS.get(ALIASES.get(format_name, format_name))
            if reader is None:
                raise LockfileError(f"unknown format {format_name!r} (one of: {FORMAT_NAMES})")
            return reader(text)
        detected = _detect(text)
        if detected is not None:
            return detected
        hinted = format_for_name(name)
        if hinted is None:
            raise LockfileError(
                f"not a lockfile, dependency list or SBOM this command reads; formats: "
                f"{FORMAT_NAMES} (--format NAME reads a file as one of them)"
            )
        return FORMATS[hinted](text)
    except LockfileError as exc:
        raise LockfileError(f"{name}: {exc}") from None


def _detect(text: str) -> Lockfile | None:
    """The file read in the format its content shows; None if it shows none."""
    # Every JSON format is an object; `[` may open TOML (`[[package]]`) or Maven's `[INFO]`.
    if text.lstrip().startswith("{"):
        return _detect_json(parse_json(text, "the JSON document"))
    if npm.is_yarn_berry(text) or "# yarn lockfile v1" in text[:4096]:
        return npm.yarn_lock(text)
    if npm.is_pnpm_lock(text):
        return npm.pnpm_lock(text)
    if _TOML_LOCK.search(text):
        return _detect_toml(text)
    if any(True for _ in maven.dependency_lines(text)):
        return maven.dependency_list(text)
    if python.looks_like_requirements(text):
        return python.requirements(text)
    return None


def _detect_json(document: Any) -> Lockfile:
    if isinstance(document, dict):
        if sbom.is_cyclonedx(document):
            return sbom.cyclonedx(document)
        if sbom.is_spdx(document):
            return sbom.spdx(document)
        if "lockfileVersion" in document:
            return npm.package_lock_document(document)
    raise LockfileError(
        "a JSON document that is not a package-lock.json, npm-shrinkwrap.json, CycloneDX or "
        "SPDX document (--format NAME reads it as one of them)"
    )


def _detect_toml(text: str) -> Lockfile:
    kind = python.toml_kind(parse_toml(text, "the TOML document"))
    if kind is None:
        raise LockfileError(
            "a TOML document that is not a poetry.lock, uv.lock or pylock.toml "
            "(--format NAME reads it as one of them)"
        )
    return FORMATS[kind](text)
