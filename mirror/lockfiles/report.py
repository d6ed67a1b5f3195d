"""The preflight report, one shape for `mirror preflight --json` and `POST /api/v1/preflight`:
which pins were checked, which would be refused, what could not be checked. Pure: the
verdicts come from whoever explained each pin (the CLI through the API, the route through
the ecosystem adapters)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from mirror.lockfiles.pins import Lockfile, Pin

# What installs; every other verdict (quarantined, blocked, unknown, error) is a refusal.
ACCEPTED_VERDICTS: Final = frozenset({"allowed", "exempted"})
# One preflight or pre-warm request: the most pins it may ask about, and how many at once.
MAX_PINS: Final = 5000
PINS_AT_ONCE: Final = 8


def all_pins(files: Sequence[tuple[str, Lockfile]]) -> list[Pin]:
    """Every pin of `files`, each once, sorted."""
    return sorted({pin for _, lockfile in files for pin in lockfile.pins})


def pin_result(
    pin: Pin, verdict: str | None, until: str | None, detail: str | None
) -> dict[str, Any]:
    """One checked pin, as the report lists it."""
    return {
        "ecosystem": pin.ecosystem,
        "package": pin.package,
        "version": pin.version,
        "verdict": verdict,
        "until": until,
        "detail": detail,
    }


def preflight_answer(
    files: Sequence[tuple[str, Lockfile]], results: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The report of `results` (one explained pin each) for `files` (name, what was read).
    Each refused pin says which files pin it (`in`): which build has the bad version."""
    sources: dict[Pin, list[str]] = {}
    for name, lockfile in files:
        for pin in lockfile.pins:
            sources.setdefault(pin, []).append(name)
    return {
        "checked": len(results),
        "refused": [
            {**result, "in": sources.get(_pin_of(result), [])}
            for result in results
            if result["verdict"] not in ACCEPTED_VERDICTS
        ],
        "unpinned": [entry for _, lockfile in files for entry in lockfile.unpinned],
        "skipped": [entry for _, lockfile in files for entry in lockfile.skipped],
        "files": [
            {"file": name, "format": lockfile.format, "pins": len(lockfile.pins)}
            for name, lockfile in files
        ],
    }


def _pin_of(result: Mapping[str, Any]) -> Pin:
    return Pin(str(result["ecosystem"]), str(result["package"]), str(result["version"]))
