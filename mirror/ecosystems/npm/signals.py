"""npm risk signals, pure: what each version of a packument does differently from the
package's own previous release (README "Risk signals and takedowns").

The previous release of a version is the one published most recently before it, by the
packument's `time`; a version without a publish time has none and is no basis for another
(the clock cannot place it). The first release shows no signal. Computed once per parsed
packument (`document.parse_packument`), never per request; only versions that show a
signal are kept.

Upstream manifests are untrusted: a field of the wrong type counts as absent, nothing here
raises on it, and upstream text (versions, publisher names) is escaped and cut before it goes
into a signal's sentence."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from mirror import safetext, versions
from mirror.risk import Signal

# The scripts npm runs when it installs a package (npm docs, "scripts": life cycle).
INSTALL_SCRIPTS: Final = ("preinstall", "install", "postinstall")
DORMANT: Final = timedelta(days=365)
# Upstream text in a sentence: long enough to recognise, short enough that the sentence
# (cut at risk.DETAIL_CHARS) still names both releases.
SHOWN_CHARS: Final = 60
_CUT: Final = "..."


@dataclass(frozen=True, slots=True)
class Release:
    """What the signals need of one version's manifest; built at parse time, not kept."""

    version: str
    published_at: datetime | None
    install_scripts: tuple[str, ...]  # of INSTALL_SCRIPTS, or ("install",) by hasInstallScript
    provenance: bool
    publisher: str | None

    @staticmethod
    def of(
        version: str,
        published_at: datetime | None,
        *,
        scripts: object = None,
        has_install_script: object = None,
        npm_user: object = None,
        dist: object = None,
    ) -> Release:
        """A release from a manifest's raw fields (`scripts`, `hasInstallScript`, `_npmUser`,
        `dist`), whatever their types."""
        found: tuple[str, ...] = ()
        if isinstance(scripts, dict):
            found = tuple(
                name
                for name in INSTALL_SCRIPTS
                if isinstance(scripts.get(name), str) and scripts[name].strip()
            )
        if not found and has_install_script is True:
            found = ("install",)
        publisher = npm_user.get("name") if isinstance(npm_user, dict) else None
        return Release(
            version=version,
            published_at=published_at,
            install_scripts=found,
            provenance=isinstance(dist, dict) and isinstance(dist.get("attestations"), dict),
            publisher=publisher if isinstance(publisher, str) and publisher else None,
        )


def compute(package: str, releases: Iterable[Release]) -> dict[str, tuple[Signal, ...]]:
    """The signals of every release of `package` that shows one, by version, each against
    the release published just before it (and, for a publisher or a major, every earlier
    one)."""
    timed = sorted(
        (release for release in releases if release.published_at is not None),
        key=lambda release: (release.published_at, versions.sort_key("npm", release.version)),
    )
    found: dict[str, tuple[Signal, ...]] = {}
    publishers: set[str] = set()
    last_publisher: Release | None = None  # the latest earlier release that names one
    highest: Release | None = None  # the highest earlier version with a semver major
    highest_major: int | None = None
    previous: Release | None = None
    for release in timed:
        if previous is not None:
            signals = (
                *_install_script_added(release, previous),
                *_provenance_dropped(release, previous),
                *_new_publisher(package, release, publishers, last_publisher),
                *_major_jump(release, highest, highest_major),
                *_dormant_revived(release, previous),
            )
            if signals:
                found[release.version] = signals
        previous = release
        if release.publisher is not None:
            publishers.add(release.publisher)
            last_publisher = release
        major = versions.npm_major(release.version)
        if major is not None and (
            highest is None
            or versions.sort_key("npm", release.version) > versions.sort_key("npm", highest.version)
        ):
            highest, highest_major = release, major
    return found


def _install_script_added(release: Release, previous: Release) -> tuple[Signal, ...]:
    if not release.install_scripts or previous.install_scripts:
        return ()
    names = " and ".join(release.install_scripts)
    plural = "s" if len(release.install_scripts) > 1 else ""
    return (
        Signal.of(
            "install-script-added",
            f"{names} script{plural} added in {_shown(release.version)}; "
            f"{_shown(previous.version)} had none",
        ),
    )


def _provenance_dropped(release: Release, previous: Release) -> tuple[Signal, ...]:
    if release.provenance or not previous.provenance:
        return ()
    return (
        Signal.of(
            "provenance-dropped",
            f"{_shown(release.version)} has no provenance (dist.attestations); "
            f"{_shown(previous.version)} had it",
        ),
    )


def _new_publisher(
    package: str, release: Release, publishers: set[str], last: Release | None
) -> tuple[Signal, ...]:
    if release.publisher is None or last is None or release.publisher in publishers:
        return ()
    return (
        Signal.of(
            "new-publisher",
            f"{_shown(release.version)} was published by {_shown(release.publisher)}, who never "
            f"published {_shown(package)} before ({_shown(last.version)} by "
            f"{_shown(last.publisher or '')})",
        ),
    )


def _major_jump(
    release: Release, highest: Release | None, highest_major: int | None
) -> tuple[Signal, ...]:
    major = versions.npm_major(release.version)
    if major is None or highest is None or highest_major is None or major <= highest_major + 1:
        return ()
    return (
        Signal.of(
            "major-jump",
            f"{_shown(release.version)} skips from major {highest_major} "
            f"(highest before: {_shown(highest.version)})",
        ),
    )


def _dormant_revived(release: Release, previous: Release) -> tuple[Signal, ...]:
    if release.published_at is None or previous.published_at is None:
        return ()
    quiet = release.published_at - previous.published_at
    if quiet < DORMANT:
        return ()
    years = quiet.days // 365
    span = "a year" if years == 1 else f"{years} years"
    return (
        Signal.of(
            "dormant-revived",
            f"{_shown(release.version)} is the first release in {span} "
            f"({_shown(previous.version)} was published {previous.published_at.date()})",
        ),
    )


def _shown(text: str) -> str:
    """Upstream text in a sentence: on one line (control characters escaped), cut."""
    escaped = safetext.escape(text)
    if len(escaped) <= SHOWN_CHARS:
        return escaped
    return escaped[: SHOWN_CHARS - len(_CUT)] + _CUT
