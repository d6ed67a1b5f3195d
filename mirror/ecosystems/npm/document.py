"""npm packuments, pure: parse the upstream's full document once, filter it by policy at a
moment, render the full or abbreviated ("corgi") form with tarball URLs pointing at the
mirror. Never does I/O.

Packuments reach tens of megabytes, most of it per-version text (readmes, scripts, people)
that filtering never looks at. So a packument is not decoded into Python objects: each
version's manifest and each top-level field stay undecoded slices of the upstream's bytes
(`msgspec.Raw`, views without copies) and only what deciding needs (version, publish time,
tarball file) is decoded. Rendering decodes one manifest's top-level keys at a time and
writes the kept slices out verbatim, so a parsed 10 MiB packument costs a few hundred
bytes per version above its raw bytes, not five times them."""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec import Raw

from mirror import notices, policy, versions
from mirror.clock import parse_iso_time as parse_time
from mirror.ecosystems.npm import signals as npm_signals
from mirror.ecosystems.npm.names import PackageName
from mirror.errors import BadUpstreamDocument
from mirror.model import Digest
from mirror.risk import Signal
from mirror.takedowns import Listed, Listing

Form = Literal["full", "corgi"]
CORGI_TYPE = "application/vnd.npm.install-v1+json"
JSON_TYPE = "application/json"

# Per-version keys of the abbreviated form (npm/registry package-metadata.md), plus `libc`
# which pnpm needs to pick optional native packages.
CORGI_VERSION_KEYS: tuple[str, ...] = (
    "name", "version", "deprecated", "dependencies", "optionalDependencies",
    "devDependencies", "peerDependencies", "peerDependenciesMeta", "bundleDependencies",
    "bundledDependencies", "acceptDependencies", "bin", "directories", "dist", "engines",
    "_hasShrinkwrap", "hasInstallScript", "funding", "cpu", "os", "libc",
)  # fmt: skip
# `time` keys that are not versions.
_TIME_META_KEYS = ("created", "modified")
# Package-level fields the registry copies from one version's manifest (the latest, or the
# last published): when versions are held back, they come from a visible version or not at
# all. Any other top-level key of the upstream is dropped then.
PACKAGE_TEXT_KEYS: tuple[str, ...] = (
    "description", "readme", "readmeFilename", "homepage", "keywords", "repository", "bugs",
    "license", "author", "contributors", "maintainers",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """What the filter needs of one version, computed once at parse time."""

    version: str
    published_at: datetime | None
    prerelease: bool
    order: int  # position in ascending version order


@dataclass(frozen=True, slots=True)
class Packument:
    """A parsed upstream full packument. `fields` (its top-level keys) and `manifests`
    (version -> manifest object) are undecoded slices of the upstream's bytes;
    `time` is decoded. `versions` is in ascending version order. Immutable."""

    package: PackageName
    fields: Mapping[str, Raw]
    manifests: Mapping[str, Raw]
    time: Mapping[str, Any]
    versions: Mapping[str, VersionInfo]
    dist_tags: Mapping[str, str]
    files: Mapping[str, str]  # tarball file name -> version
    modified: str | None
    # The risk signals of the versions that show any (`npm.signals`), computed once here.
    signals: Mapping[str, tuple[Signal, ...]]

    def signals_of(self, version: str) -> tuple[Signal, ...]:
        """The risk signals `version` shows against the package's established releases."""
        return self.signals.get(version, ())

    def version_of_file(self, file: str) -> str | None:
        """The version a tarball file name stands for, or None if this document has none."""
        return self.files.get(file)

    def manifest(self, version: str) -> Mapping[str, Any]:
        """One version's manifest, decoded now (nothing keeps it)."""
        manifest: Mapping[str, Any] = _ANY.decode(self.manifests[version])
        return manifest

    def memory_bytes(self) -> int:
        """What this parsed form holds beyond the raw bytes it views (which the cache charges
        already): per version its info, file names, slice and key objects, by estimate."""
        signals = sum(
            SIGNAL_BYTES + len(signal.detail) for shown in self.signals.values() for signal in shown
        )
        return PARSED_BYTES_PER_VERSION * (len(self.versions) + len(self.time)) + signals + 4096


@dataclass(frozen=True, slots=True)
class PackumentView:
    """The filtered view of a packument at one moment under one set of rules."""

    visible: tuple[str, ...]  # ascending
    dist_tags: Mapping[str, str]
    quarantined: tuple[policy.Decision, ...]  # ascending
    blocked: tuple[policy.Decision, ...]  # ascending
    valid_until: datetime | None  # the earliest moment a held version leaves quarantine


# parse ---------------------------------------------------------------------------------------

# Measured with tracemalloc on generated packuments of 1,000-5,000 versions: about 600 bytes
# per version (a VersionInfo, a datetime, two file-name entries, a Raw and its key, a time
# entry); charged a little above that.
PARSED_BYTES_PER_VERSION = 800
SIGNAL_BYTES = 200  # a Signal, its entry and tuple slot, by estimate; plus its sentence
_FIELDS = msgspec.json.Decoder(dict[str, Raw])  # an object's keys; its values undecoded
_ANY = msgspec.json.Decoder()
_UTF8_CHUNK = 1024 * 1024


class _ManifestHead(msgspec.Struct):
    """What parsing needs of a version's manifest (the tarball file, the risk signals'
    fields); every other key is skipped undecoded. Any types: hostile values are judged
    where they are read."""

    dist: Any = None
    scripts: Any = None
    has_install_script: Any = msgspec.field(name="hasInstallScript", default=None)
    npm_user: Any = msgspec.field(name="_npmUser", default=None)


_HEAD = msgspec.json.Decoder(_ManifestHead)
# Writes Raw slices as they came; strings, numbers and containers as JSON.
_ENCODE = msgspec.json.encode


def parse_packument(raw: bytes, package: PackageName) -> Packument:
    """Parse the upstream's full packument of `package` (JSON bytes).

    Versions whose manifest is not an object are ignored. Raises BadUpstreamDocument when the
    body is not a JSON object (nor UTF-8) or `versions`/`dist-tags`/`time` have the wrong
    type. The whole body is checked as JSON here, so the slices rendering writes out verbatim
    are JSON."""
    what = f"the upstream packument of {package.name}"
    _check_utf8(raw, what)
    try:
        fields = _FIELDS.decode(raw)
    except RecursionError:
        # msgspec stops at the interpreter's recursion limit (about 1,000 levels), skipped
        # values included: no separate depth scan (it copied the body three times).
        raise BadUpstreamDocument(
            f"{what} nests more than {sys.getrecursionlimit()} levels deep; not parsed"
        ) from None
    except msgspec.ValidationError:
        raise BadUpstreamDocument(f"{what} is not an object") from None
    except msgspec.DecodeError as exc:
        raise BadUpstreamDocument(f"{what} is not JSON: {exc}") from None
    raw_versions = _object_fields(fields.get("versions"), what, "versions")
    raw_tags = _decoded_object(fields.get("dist-tags"), what, "dist-tags")
    raw_time = _decoded_object(fields.get("time"), what, "time")
    manifests = {
        version: manifest for version, manifest in raw_versions.items() if _starts_object(manifest)
    }
    ordered = sorted(manifests, key=lambda version: versions.sort_key("npm", version))
    infos: dict[str, VersionInfo] = {}
    files: dict[str, str] = {}
    releases: list[npm_signals.Release] = []
    for order, version in enumerate(ordered):
        published_at = parse_time(raw_time.get(version))
        infos[version] = VersionInfo(
            version=version,
            published_at=published_at,
            prerelease=versions.is_prerelease("npm", version),
            order=order,
        )
        files[package.tarball_filename(version)] = version
        head = _HEAD.decode(manifests[version])
        # Also accept the upstream's own file name (it may differ, e.g. in case).
        tarball = _dist(head.dist).get("tarball")
        if isinstance(tarball, str) and tarball.endswith(".tgz"):
            files.setdefault(tarball.rsplit("/", 1)[-1], version)
        releases.append(
            npm_signals.Release.of(
                version,
                published_at,
                scripts=head.scripts,
                has_install_script=head.has_install_script,
                npm_user=head.npm_user,
                dist=head.dist,
            )
        )
    modified = raw_time.get("modified")
    if modified is None and "modified" in fields:
        modified = _ANY.decode(fields["modified"])
    return Packument(
        package=package,
        fields=fields,
        manifests=manifests,
        time=raw_time,
        versions=infos,
        dist_tags={tag: target for tag, target in raw_tags.items() if isinstance(target, str)},
        files=files,
        modified=modified if isinstance(modified, str) else None,
        signals=npm_signals.compute(package.name, releases),
    )


def _check_utf8(raw: bytes, what: str) -> None:
    """Raise BadUpstreamDocument unless `raw` is UTF-8 (JSON's encoding): slices of it go to
    clients verbatim. A megabyte at a time, so no decoded copy of the whole body exists."""
    if raw.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(raw)
    try:
        for start in range(0, len(view), _UTF8_CHUNK):
            decoder.decode(view[start : start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise BadUpstreamDocument(f"{what} is not UTF-8") from None


def _starts_object(value: Raw) -> bool:
    # A Raw slice starts at its value's first byte (no whitespace before it).
    return memoryview(value)[:1].tobytes() == b"{"


def _is_null(value: Raw) -> bool:
    view = memoryview(value)
    return len(view) == 4 and view.tobytes() == b"null"


def _object_fields(value: Raw | None, what: str, key: str) -> dict[str, Raw]:
    """The keys of the object `value` with their values undecoded; {} for a missing or null
    one."""
    if value is None or _is_null(value):
        return {}
    if not _starts_object(value):
        raise BadUpstreamDocument(f"{what} has a {key} that is not an object")
    return _FIELDS.decode(value)


def _decoded_object(value: Raw | None, what: str, key: str) -> dict[str, Any]:
    decoded = {} if value is None else _ANY.decode(value)
    decoded = {} if decoded is None else decoded
    if not isinstance(decoded, dict):
        raise BadUpstreamDocument(f"{what} has a {key} that is not an object")
    return decoded


def _dist(dist: object) -> Mapping[str, Any]:
    return dist if isinstance(dist, dict) else {}


def tarball_digests(manifest: Mapping[str, Any]) -> tuple[Digest, ...]:
    """The digests a version's `dist` declares: every sha512/sha256 of the SRI `integrity`
    (base64 → hex) and the sha1 `shasum`. Unparseable entries are skipped."""
    dist = _dist(manifest.get("dist"))
    digests: list[Digest] = []
    integrity = dist.get("integrity")
    if isinstance(integrity, str):
        for item in integrity.split():
            algorithm, _, value = item.partition("-")
            algorithm = algorithm.lower()
            if algorithm not in {"sha512", "sha256"} or not value:
                continue
            try:
                raw = base64.b64decode(value.split("?", 1)[0], validate=True)
            except (binascii.Error, ValueError):
                continue
            digests.append(Digest(algorithm=algorithm, hexdigest=raw.hex()))
    shasum = dist.get("shasum")
    if isinstance(shasum, str) and len(shasum) == 40:
        try:
            bytes.fromhex(shasum)
        except ValueError:
            pass
        else:
            digests.append(Digest(algorithm="sha1", hexdigest=shasum.lower()))
    return tuple(digests)


# filter --------------------------------------------------------------------------------------


def filter_packument(packument: Packument, rules: policy.Rules, now: datetime) -> PackumentView:
    """Decide every version at `now` under `rules` and recompute the dist-tags.

    A tag whose target is hidden moves to the highest visible version not above the target
    with the same prerelease-ness, or is dropped when there is none (pnpm refuses a stable
    tag that moves to a prerelease). Tags naming a version the document lacks are dropped."""
    name = packument.package.name
    split = policy.partition(
        (
            (version, policy.Subject("npm", name, version), info.published_at)
            for version, info in packument.versions.items()
        ),
        now,
        rules,
        signals=lambda subject: packument.signals_of(subject.version),
    )
    return PackumentView(
        visible=split.visible,
        dist_tags=recompute_dist_tags(packument, split.visible),
        quarantined=split.quarantined,
        blocked=split.blocked,
        valid_until=split.until,
    )


def recompute_dist_tags(packument: Packument, visible: Sequence[str]) -> dict[str, str]:
    """The dist-tags with every hidden target re-pointed or dropped (see filter_packument)."""
    shown = set(visible)
    tags: dict[str, str] = {}
    for tag, target in packument.dist_tags.items():
        if target in shown:
            tags[tag] = target
            continue
        info = packument.versions.get(target)
        if info is None:
            continue
        for candidate in reversed(visible):
            candidate_info = packument.versions[candidate]
            if candidate_info.order < info.order and candidate_info.prerelease == info.prerelease:
                tags[tag] = candidate
                break
    return tags


# render --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)  # clients send a handful of distinct Accept headers
def choose_form(accept: str | None) -> Form:
    """`corgi` iff the abbreviated media type has the highest q-value in `accept` (ties
    win: npm sends `…install-v1+json; q=1.0, application/json; q=0.8, */*`)."""
    if not accept:
        return "full"
    corgi_q = 0.0
    other_q = 0.0
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if media.lower() == CORGI_TYPE:
            corgi_q = max(corgi_q, q)
        elif media:
            other_q = max(other_q, q)
    return "corgi" if corgi_q > 0 and corgi_q >= other_q else "full"


def tarball_url(base: str, package: PackageName, version: str) -> str:
    """The canonical mirror URL of a tarball; `base` ends with the registry prefix (`…/npm`)."""
    return base + package.tarball_path(version)


def _rewritten(manifest: Mapping[str, Raw], url: str) -> dict[str, Raw | dict[str, Raw | str]]:
    """A manifest's top-level keys (undecoded) with `dist.tarball` set to `url`; a `dist`
    that is not an object stays as it came."""
    dist = manifest.get("dist")
    if dist is None or not _starts_object(dist):
        return dict(manifest)
    return {**manifest, "dist": {**_FIELDS.decode(dist), "tarball": url}}


def holds_back(view: PackumentView) -> bool:
    """Whether `view` hides any version (then nothing of the upstream's package-level text
    may be trusted to describe a visible one)."""
    return bool(view.quarantined or view.blocked)


def summary_version(packument: Packument, view: PackumentView) -> str | None:
    """The version the package-level fields describe: the one `latest` now points at, else
    the highest visible non-prerelease, else the highest visible version."""
    latest = view.dist_tags.get("latest")
    if latest is not None and latest in view.visible:
        return latest
    stable = [version for version in view.visible if not packument.versions[version].prerelease]
    if stable:
        return stable[-1]
    return view.visible[-1] if view.visible else None


def _upstream_describes(packument: Packument, view: PackumentView, summary: str) -> bool:
    """True when the upstream's package-level text can only come from visible versions: its
    `latest` is `summary` and no held version was published after `summary` (the registry
    copies them from the latest or the last published version). A held version with an
    unknown publish time could be either, so it counts as newer."""
    if packument.dist_tags.get("latest") != summary:
        return False
    published = packument.versions[summary].published_at
    if published is None:
        return False
    for held in (*view.quarantined, *view.blocked):
        moment = packument.versions[held.version].published_at
        if moment is None or moment >= published:
            return False
    return True


def _time_map(packument: Packument, view: PackumentView) -> dict[str, Any]:
    """`time` with only visible versions. `created`/`modified` are the upstream's when
    nothing is held, else the oldest/newest visible publish time (or absent)."""
    raw_time = packument.time
    time: dict[str, Any] = {}
    if not holds_back(view):
        time.update({key: raw_time[key] for key in _TIME_META_KEYS if key in raw_time})
    else:
        timed = [
            version
            for version in view.visible
            if packument.versions[version].published_at is not None
            and isinstance(raw_time.get(version), str)
        ]
        if timed:
            by_time = sorted(timed, key=lambda version: _published(packument, version))
            time["created"] = raw_time[by_time[0]]
            time["modified"] = raw_time[by_time[-1]]
    for version in view.visible:
        if version in raw_time:
            time[version] = raw_time[version]
    return time


def _published(packument: Packument, version: str) -> datetime:
    published = packument.versions[version].published_at
    if published is None:  # callers pass only versions with a publish time
        raise ValueError(f"{version} has no publish time")
    return published


def _package_fields(packument: Packument, view: PackumentView) -> dict[str, Any]:
    """The package-level text of a view that holds versions back: taken from the manifest
    of `summary_version`, or from the upstream's top level when that can only describe
    visible versions (see `_upstream_describes`)."""
    summary = summary_version(packument, view)
    if summary is None:
        return {}
    if _upstream_describes(packument, view, summary):
        return _pick(packument.fields, PACKAGE_TEXT_KEYS)
    return _pick(_FIELDS.decode(packument.manifests[summary]), PACKAGE_TEXT_KEYS)


def render_packument(
    packument: Packument, view: PackumentView, form: Form, registry_base: str
) -> bytes:
    """The JSON bytes of the filtered packument in `form`. `registry_base` is the URL of the
    mirror's npm root without a trailing slash (`http://host:port/npm`).

    Both forms list only visible versions, carry the recomputed dist-tags and rewrite every
    `dist.tarball`; integrity fields, signatures and `deprecated` stay byte-identical. The
    corgi form carries `modified` and a `time` map when it covers every listed version (pnpm
    discards a partial one and then fails on missing times).

    When a version is held back, nothing package-level comes from the upstream unchecked:
    the full form carries `_id`, `name`, the text fields of `PACKAGE_TEXT_KEYS` (see
    `_package_fields`), `dist-tags`, `versions` and `time` only, and `modified`/`created` are
    recomputed from visible versions. When nothing is held the upstream's top level is kept
    (less `_attachments`)."""
    package = packument.package
    manifests = packument.manifests
    time = _time_map(packument, view)
    modified = time.get("modified") if holds_back(view) else packument.modified
    if form == "corgi":
        corgi_versions = {}
        for version in view.visible:
            fields = _FIELDS.decode(manifests[version])
            corgi = {key: fields[key] for key in CORGI_VERSION_KEYS if key in fields}
            corgi_versions[version] = _rewritten(
                corgi, tarball_url(registry_base, package, version)
            )
        name: Any = package.name
        if not holds_back(view):
            name = packument.fields.get("name", package.name)
        body: dict[str, Any] = {"name": name}
        if isinstance(modified, str):
            body["modified"] = modified
        body["dist-tags"] = dict(view.dist_tags)
        body["versions"] = corgi_versions
        if all(version in time for version in view.visible):
            body["time"] = time
        return _ENCODE(body)
    full_versions = {
        version: _rewritten(
            _FIELDS.decode(manifests[version]), tarball_url(registry_base, package, version)
        )
        for version in view.visible
    }
    if holds_back(view):
        body = {
            "_id": package.name,
            "name": package.name,
            **_package_fields(packument, view),
            "dist-tags": dict(view.dist_tags),
            "versions": full_versions,
            "time": time,
        }
        return _ENCODE(body)
    body = {}
    for key, value in packument.fields.items():
        if key == "versions":
            body[key] = full_versions
        elif key == "dist-tags":
            body[key] = dict(view.dist_tags)
        elif key == "time":
            body[key] = time
        elif key != "_attachments":
            body[key] = value
    body.setdefault("dist-tags", dict(view.dist_tags))
    body.setdefault("versions", full_versions)
    return _ENCODE(body)


def _pick(manifest: Mapping[str, Raw], keys: Sequence[str]) -> dict[str, Raw]:
    return {key: manifest[key] for key in keys if key in manifest}


def render_dist_tags(view: PackumentView) -> bytes:
    return _ENCODE(dict(view.dist_tags))


def render_notice(package: PackageName, view: PackumentView) -> str | None:
    """The `npm-notice` header text when versions are held back, else None: what holds them
    (`notices.notice`), ASCII and bounded.

    e.g. `left-pad: 2 versions held in quarantine (newest 1.4.0, available
    2026-11-25T10:00Z); 1 version blocked by block b-9c8d: hijacked (1.3.1)`."""
    return notices.notice(package.name, (*view.quarantined, *view.blocked), "version")


def no_visible_version_message(package: PackageName, view: PackumentView) -> str:
    """The 404 message when nothing of `package` may be shown."""
    notice = render_notice(package, view)
    if notice is None:
        return f"{package.name} has no published versions"
    return f"no version of {package.name} is available from this mirror yet: {notice}"


def version_unavailable_message(package: PackageName, spec: str, view: PackumentView) -> str:
    """The 404 message for `GET /{name}/{spec}` when `spec` names no visible version: why,
    when the version is held back."""
    for held in (*view.quarantined, *view.blocked):
        if held.version == spec:
            return f"{package.name}@{spec} is not available from this mirror: {held.detail}"
    return f"{package.name}@{spec} is not available from this mirror"


@dataclass(frozen=True, slots=True)
class PackumentParser:
    """`parse` for the metadata cache: equal parsers (same package) reuse the parsed value."""

    package: PackageName

    def __call__(self, raw: bytes) -> Packument:
        return parse_packument(raw, self.package)

    def listing(self, parsed: Packument) -> Listing:
        """The versions the packument offers (`takedowns.Lists`): one unpublished is gone."""
        return packument_listing(parsed)

    def listed_package(self, parsed: Packument) -> str:
        """The package a listing is of: the name asked for, never one the document claims."""
        return self.package.name


def render_manifest(packument: Packument, version: str, registry_base: str) -> bytes:
    """One version's manifest with its tarball URL rewritten (`GET /{name}/{version}`)."""
    url = tarball_url(registry_base, packument.package, version)
    return _ENCODE(_rewritten(_FIELDS.decode(packument.manifests[version]), url))


# takedowns -----------------------------------------------------------------------------------


def packument_listing(packument: Packument) -> Listing:
    """Each version the packument lists, keyed by itself (npm has no yank: a deprecation
    still serves the version)."""
    return {version: Listed(version) for version in packument.versions}
