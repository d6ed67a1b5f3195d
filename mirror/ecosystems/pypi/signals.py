"""PyPI risk signals, pure: computed file by file, once per parsed upstream document, against
the project's own earlier files (`mirror.risk`). PyPI decides per file, so a signal is of a
file (its `filename`), named with its release and the established one compared with:

- `provenance-dropped`: the baseline release (the one whose first upload is the latest at
  least `risk.BASELINE_AGE` before this file's release's first upload; the project's first
  release when none is that old) had PEP 740 provenance on at least one of its files, and this
  file has none.
- `new-file-type`: the file's kind (sdist or wheel) did not exist among its release's earlier
  files, and that kind first appeared more than LATE_FILE_AFTER after the release's first
  upload (the late-added wheel of an old release).

Upstream metadata is untrusted: a file without an upload time, or whose name says no kind
or version, is no basis for either signal (it is skipped, never raised on); a provenance the
document does not state (`None`, the legacy JSON API) neither gives nor drops provenance."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from mirror import policy, versions
from mirror.ecosystems.pypi import names
from mirror.risk import BASELINE_AGE, Signal

# A file of a new kind uploaded this long after its release's first file is a late addition;
# the wheels of a release built by CI usually follow its sdist within minutes or hours.
LATE_FILE_AFTER: Final = timedelta(days=1)

FileKind = Literal["sdist", "wheel"]
NO_SIGNALS: Final[tuple[Signal, ...]] = ()
# The signals of one document: file name -> its signals (only files that show one).
FileSignals = Mapping[str, tuple[Signal, ...]]


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What the signals read of one file: its name, its (canonical) version, its upload time
    and whether it has PEP 740 provenance (None: the document does not say)."""

    filename: str
    version: str | None
    upload_time: datetime | None
    provenance: bool | None


def lookup(signals: FileSignals) -> Callable[[policy.Subject], Sequence[Signal]]:
    """`signals` as `policy.partition` asks for them: by the file a subject names."""

    def of(subject: policy.Subject) -> Sequence[Signal]:
        filename = subject.filename
        return signals.get(filename, NO_SIGNALS) if filename is not None else NO_SIGNALS

    return of


def file_kind(filename: str) -> FileKind | None:
    """`wheel`, `sdist` (a `.tar.gz` or `.zip`), or None for other (legacy) formats."""
    if names.is_wheel(filename):
        return "wheel"
    if filename.lower().endswith((".tar.gz", ".zip")):
        return "sdist"
    return None


@dataclass(slots=True)
class _Release:
    version: str
    first: datetime
    provenance: bool = False


def file_signals(files: Iterable[FileFacts]) -> dict[str, tuple[Signal, ...]]:
    """The signals of every file of one project document that shows any. Never raises on
    what the document says (see the module)."""
    listed = [item for item in files if isinstance(item.version, str) and item.version]
    releases = _releases(listed)
    found: dict[str, list[Signal]] = {}
    for signal_of in (_provenance_dropped(listed, releases), _new_file_types(listed)):
        for filename, signal in signal_of:
            found.setdefault(filename, []).append(signal)
    return {filename: tuple(signals) for filename, signals in found.items()}


def _releases(files: Sequence[FileFacts]) -> dict[str, _Release]:
    """Each release with a timed file: its first upload and whether any timed file of it has
    provenance."""
    releases: dict[str, _Release] = {}
    for item in files:
        if item.upload_time is None or item.version is None:
            continue
        release = releases.get(item.version)
        if release is None:
            release = releases[item.version] = _Release(item.version, item.upload_time)
        elif item.upload_time < release.first:
            release.first = item.upload_time
        if item.provenance:
            release.provenance = True
    return releases


def _baselines(releases: Mapping[str, _Release]) -> dict[str, _Release]:
    """Each release's baseline: the release first uploaded latest at least BASELINE_AGE before
    it (among equal first uploads, the higher version), else the project's first release when
    it was uploaded earlier. Not the release just before it: that may be the attacker's decoy."""
    ordered = sorted(
        releases.values(),
        key=lambda release: (release.first, versions.sort_key("pypi", release.version)),
    )
    baselines: dict[str, _Release] = {}
    established = 0  # how many of `ordered` are at least BASELINE_AGE older than this one
    for release in ordered:
        cutoff = release.first - BASELINE_AGE
        while established < len(ordered) and ordered[established].first <= cutoff:
            established += 1
        if established:
            baselines[release.version] = ordered[established - 1]
        elif ordered[0].first < release.first:
            baselines[release.version] = ordered[0]
    return baselines


def _provenance_dropped(
    files: Sequence[FileFacts], releases: Mapping[str, _Release]
) -> Iterable[tuple[str, Signal]]:
    baselines = _baselines(releases)
    for item in files:
        if item.provenance is not False or item.version is None:
            continue
        earlier = baselines.get(item.version)
        if earlier is None or not earlier.provenance:
            continue
        yield (
            item.filename,
            Signal.of(
                "provenance-dropped",
                f"{item.filename} has no provenance (PEP 740); {earlier.version} had it",
            ),
        )


def _new_file_types(files: Sequence[FileFacts]) -> Iterable[tuple[str, Signal]]:
    by_release: dict[str, list[tuple[datetime, FileKind, FileFacts]]] = {}
    for item in files:
        kind = file_kind(item.filename)
        if item.upload_time is None or item.version is None or kind is None:
            continue
        by_release.setdefault(item.version, []).append((item.upload_time, kind, item))
    for version, timed in by_release.items():
        first = min(moment for moment, _kind, _item in timed)
        appeared: dict[FileKind, datetime] = {}
        for moment, kind, _item in timed:
            if kind not in appeared or moment < appeared[kind]:
                appeared[kind] = moment
        for moment, kind, item in timed:
            since = appeared[kind] - first
            if since <= LATE_FILE_AFTER:
                continue
            before = sorted(other for other, at in appeared.items() if at < appeared[kind])
            yield (
                item.filename,
                Signal.of(
                    "new-file-type",
                    f"{kind} added to {version} on {moment.date().isoformat()}, "
                    f"{(moment - first).days} days after its first file "
                    f"({' and '.join(before)} only before)",
                ),
            )
