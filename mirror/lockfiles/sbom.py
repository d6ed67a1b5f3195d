"""SBOMs: CycloneDX JSON (`components`, nested ones included) and SPDX JSON (`packages`),
read by each entry's package URL (purl). Pure. `pkg:npm`, `pkg:pypi` and `pkg:maven` become
pins; other purl types (and entries without one) are counted as skipped."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from mirror.lockfiles.pins import (
    Lockfile,
    LockfileError,
    Pin,
    collect,
    maven_pin,
    npm_pin,
    pypi_pin,
)


def is_cyclonedx(document: Mapping[str, Any]) -> bool:
    return document.get("bomFormat") == "CycloneDX"


def is_spdx(document: Mapping[str, Any]) -> bool:
    return isinstance(document.get("spdxVersion"), str)


def cyclonedx(document: Any) -> Lockfile:
    if not isinstance(document, dict) or not is_cyclonedx(document):
        raise LockfileError('a CycloneDX document is a JSON object with "bomFormat": "CycloneDX"')
    return _from_purls("cyclonedx", _cyclonedx_purls(document.get("components")))


def spdx(document: Any) -> Lockfile:
    if not isinstance(document, dict) or not is_spdx(document):
        raise LockfileError('an SPDX document is a JSON object with "spdxVersion"')
    return _from_purls("spdx", _spdx_purls(document.get("packages")))


def _cyclonedx_purls(components: Any) -> Iterator[str | None]:
    # Iterative walk: components nest (an assembly's parts), depth bounded by parse_json.
    pending = [components]
    while pending:
        level = pending.pop()
        if not isinstance(level, list):
            continue
        for component in level:
            if not isinstance(component, dict):
                continue
            purl = component.get("purl")
            yield purl if isinstance(purl, str) else _describe(component, "version")
            pending.append(component.get("components"))


def _spdx_purls(packages: Any) -> Iterator[str | None]:
    if not isinstance(packages, list):
        return
    for package in packages:
        if not isinstance(package, dict):
            continue
        references = package.get("externalRefs")
        found = [
            reference["referenceLocator"]
            for reference in (references if isinstance(references, list) else [])
            if isinstance(reference, dict)
            and reference.get("referenceType") == "purl"
            and isinstance(reference.get("referenceLocator"), str)
        ]
        yield from found or [_describe(package, "versionInfo")]


def _describe(entry: Mapping[str, Any], version_key: str) -> str | None:
    """An entry without a purl, named for the skipped list (the document itself in SPDX)."""
    name = entry.get("name")
    return f"{name} {entry.get(version_key) or ''} (no purl)".strip() if name else None


def _from_purls(format_name: str, purls: Iterator[str | None]) -> Lockfile:
    pins: set[Pin] = set()
    unpinned: list[str] = []
    skipped: list[str] = []
    for purl in purls:
        if purl is None:
            continue
        if not purl.startswith("pkg:"):
            skipped.append(purl)
            continue
        pin = purl_pin(purl)
        if pin is None:
            skipped.append(purl)
        elif not pin.version:
            unpinned.append(purl)
        else:
            pins.add(pin)
    return collect(format_name, pins, unpinned=unpinned, skipped=skipped)


def purl_pin(purl: str) -> Pin | None:
    """The pin of `pkg:type/namespace/name@version?qualifiers#subpath` for npm, pypi and
    maven (version empty when the purl has none); None for any other type or a malformed one.
    Each part is percent-decoded after splitting, as the purl specification says."""
    rest = purl.removeprefix("pkg:").lstrip("/").split("#", 1)[0].split("?", 1)[0]
    head, _, last = rest.rpartition("/")
    name, _, version = last.partition("@")
    kind, _, names = f"{head}/{name}".partition("/")
    parts = [unquote(part) for part in names.strip("/").split("/") if part]
    version = unquote(version)
    if not parts:
        return None
    kind = kind.lower()
    if kind == "npm" and len(parts) in (1, 2):
        if len(parts) == 2 and not parts[0].startswith("@"):
            parts[0] = f"@{parts[0]}"
        return npm_pin("/".join(parts), version)
    if kind == "pypi" and len(parts) == 1:
        return pypi_pin(parts[0], version)
    if kind == "maven" and len(parts) == 2:
        return maven_pin(parts[0], parts[1], version)
    return None
