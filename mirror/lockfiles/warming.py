"""Pre-warming, the part `mirror warm` (a client of the public URLs) and `POST /api/v1/warm`
(in the server, through the adapters) share. Pure: which files a pinned version installs, what
a verdict means for a pin, and the summary both report.

Which files a pin installs: npm the version's tarball (named by the packument); PyPI every
file of the version the index lists (pins as read carry no file hashes, so the wheels of every
platform and the sdist, each with its PEP 658 metadata); Maven the `.pom` and the `.jar`, where
no jar is fine only for a pom-packaging artifact (a parent or a BOM)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from mirror.ecosystems.maven.paths import parse_coordinates, pom_path
from mirror.lockfiles.pins import Pin
from mirror.lockfiles.report import ACCEPTED_VERDICTS, MAX_PINS, PINS_AT_ONCE

# Bounds of one `POST /api/v1/warm` (the same pin bound as a preflight, which explains each).
MAX_WARM_PINS: Final = MAX_PINS
WARM_PARALLEL: Final = PINS_AT_ONCE
# How long the POST may wait for its job to finish before it answers 202 (`?wait=` seconds).
MAX_WARM_WAIT: Final = 600
# Jobs one worker process runs at once, and jobs whose status is kept (the newest), and for
# how long (seconds).
MAX_RUNNING_WARM_JOBS: Final = 2
MAX_KEPT_WARM_JOBS: Final = 100
WARM_KEEP_SECONDS: Final = 24 * 3600

# Every outcome a pin may have, in the order the summary lists them. `cached`: every file was
# in the cache already (only the server can tell; `mirror warm` counts those as fetched).
OUTCOMES: Final = ("fetched", "cached", "held", "blocked", "failed")


def refusal(verdict: str | None) -> str | None:
    """The outcome of a pin whose verdict is `verdict` when it is not fetched (held, blocked,
    failed), None when it installs and is fetched."""
    if verdict in ACCEPTED_VERDICTS:
        return None
    if verdict == "blocked":
        return "blocked"
    if verdict in (None, "error", "unknown"):
        return "failed"
    return "held"


def maven_paths(pin: Pin) -> tuple[str, str]:
    """The repository paths (below the repository root, unquoted) of a Maven pin's `.pom`
    and `.jar`. Raises BadRequest for coordinates or a version that are not valid path
    segments."""
    group, artifact = parse_coordinates(pin.package)
    pom = pom_path(group, artifact, pin.version)
    return pom, pom.removesuffix(".pom") + ".jar"


def is_pom_packaging(pom: bytes) -> bool:
    """Whether a pom declares `pom` packaging (a parent or a BOM: it has no jar)."""
    return b"<packaging>pom</packaging>" in b"".join(pom.split())


def failed(pin: Pin, why: str) -> dict[str, Any]:
    """A pin that could not be warmed, as the summary lists it."""
    return {
        "ecosystem": pin.ecosystem,
        "package": pin.package,
        "version": pin.version,
        "verdict": None,
        "until": None,
        "outcome": "failed",
        "detail": why,
    }


def warm_summary(
    results: Iterable[Mapping[str, Any]], unfinished: Sequence[Pin] = (), *, why: str = ""
) -> dict[str, Any]:
    """The summary of `results` (each with its `outcome`), `unfinished` pins listed as failed
    with `why`: how many pins, the bytes fetched, and each pin under its outcome."""
    by_outcome: dict[str, list[dict[str, Any]]] = {outcome: [] for outcome in OUTCOMES}
    for result in results:
        by_outcome[result["outcome"]].append(dict(result))
    by_outcome["failed"].extend(failed(pin, why) for pin in unfinished)
    for listed in by_outcome.values():
        listed.sort(key=lambda result: (result["ecosystem"], result["package"], result["version"]))
    return {
        "pins": sum(len(listed) for listed in by_outcome.values()),
        "bytes": sum(result.get("bytes", 0) for result in by_outcome["fetched"]),
        **by_outcome,
    }
