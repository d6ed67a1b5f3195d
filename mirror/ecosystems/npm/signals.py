"""npm risk signals, pure: what each version of a packument does differently from the
package's own established releases (README "Risk signals and takedowns").

A version's established releases are those published at least `risk.BASELINE_AGE` before it
by the packument's `time`, and its baseline is the newest of them (the package's first
release when none is that old): never simply the release just before it, which an attacker
publishes as a decoy. A version without a publish time is neither judged nor a basis for
another (the clock cannot place it). The first release shows no signal. Computed once per parsed
packument (`document.parse_packument`), never per request; only versions that show a
signal are kept.

Upstream manifests are untrusted: a field of the wrong type counts as absent, nothing here
raises on it, and upstream text (versions, publisher names) is escaped and cut before it goes
into a signal's sentence."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from mirror import safetext, versions
from mirror.risk import BASELINE_AGE, Signal

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
    the package's established releases (`risk.BASELINE_AGE`): scripts and provenance against
    its baseline (the newest of them), a publisher against all of them, a major against the
    highest of them, and a dormant gap ending after the baseline."""
    timed = sorted(
        (release for release in releases if release.published_at is not None),
        key=lambda release: (release.published_at, versions.sort_key("npm", release.version)),
    )
    found: dict[str, tuple[Signal, ...]] = {}
    established = _Established()
    for index, release in enumerate(timed):
        if index == 0 or release.published_at is None:
            continue
        if established.count == 0:
            # The first release is the baseline until one is old enough.
            established.add(timed[0])
        cutoff = release.published_at - BASELINE_AGE
        while established.count < index:
            candidate = timed[established.count]
            if candidate.published_at is None or candidate.published_at > cutoff:
                break
            established.add(candidate)
        baseline = timed[established.count - 1]
        # The first release after the baseline ends the gap a dormant package shows (every
        # later one is younger than BASELINE_AGE before this one: no gap of a year among them).
        revival = timed[established.count]
        signals = (
            *_install_script_added(release, baseline),
            *_provenance_dropped(release, baseline),
            *_new_publisher(package, release, established),
            *_major_jump(release, established.highest, established.highest_major),
            *_dormant_revived(release, baseline, revival),
        )
        if signals:
            found[release.version] = signals
    return found


@dataclass(slots=True)
class _Established:
    """What the established releases of one version (a prefix of the timed ones) add up to;
    grows as later versions' cut-off moves on."""

    count: int = 0
    publishers: set[str] = field(default_factory=set)
    last_publisher: Release | None = None  # the latest of them that names one
    highest: Release | None = None  # the highest of them with a semver major
    highest_major: int | None = None

    def add(self, release: Release) -> None:
        self.count += 1
        if release.publisher is not None:
            self.publishers.add(release.publisher)
            self.last_publisher = release
        major = versions.npm_major(release.version)
        if major is not None and (
            self.highest is None
            or versions.sort_key("npm", release.version)
            > versions.sort_key("npm", self.highest.version)
        ):
            self.highest, self.highest_major = release, major


def _install_script_added(release: Release, baseline: Release) -> tuple[Signal, ...]:
    if not release.install_scripts or baseline.install_scripts:
        return ()
    names = " and ".join(release.install_scripts)
    plural = "s" if len(release.install_scripts) > 1 else ""
    return (
        Signal.of(
            "install-script-added",
            f"{names} script{plural} added in {_shown(release.version)}; "
            f"{_shown(baseline.version)} had none",
        ),
    )


def _provenance_dropped(release: Release, baseline: Release) -> tuple[Signal, ...]:
    if release.provenance or not baseline.provenance:
        return ()
    return (
        Signal.of(
            "provenance-dropped",
            f"{_shown(release.version)} has no provenance (dist.attestations); "
            f"{_shown(baseline.version)} had it",
        ),
    )


def _new_publisher(package: str, release: Release, established: _Established) -> tuple[Signal, ...]:
    last = established.last_publisher
    if release.publisher is None or last is None or release.publisher in established.publishers:
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


def _dormant_revived(release: Release, baseline: Release, revival: Release) -> tuple[Signal, ...]:
    """`revival` (the first release after the baseline; `release` itself or one younger than
    BASELINE_AGE before it) came a year or more after the baseline: every release of that
    month is signalled, so a decoy published first does not clear the payload after it."""
    if revival.published_at is None or baseline.published_at is None:
        return ()
    quiet = revival.published_at - baseline.published_at
    if quiet < DORMANT:
        return ()
    years = quiet.days // 365
    span = "a year" if years == 1 else f"{years} years"
    since = f"({_shown(baseline.version)} was published {baseline.published_at.date()})"
    if revival is release:
        detail = f"{_shown(release.version)} is the first release in {span} {since}"
    else:
        detail = (
            f"{_shown(release.version)} follows the first release in {span}, "
            f"{_shown(revival.version)} {since}"
        )
    return (Signal.of("dormant-revived", detail),)


def _shown(text: str) -> str:
    """Upstream text in a sentence: on one line (control characters escaped), cut."""
    escaped = safetext.escape(text)
    if len(escaped) <= SHOWN_CHARS:
        return escaped
    return escaped[: SHOWN_CHARS - len(_CUT)] + _CUT
