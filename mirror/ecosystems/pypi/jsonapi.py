"""The legacy PyPI JSON API (`/pypi/{project}/json`, `/pypi/{project}/{version}/json`), pure:
parse an upstream document (or compose one from a simple-index page when the upstream has no
JSON API), decide each file of each release at a moment, render the filtered document
(`info`, `urls` and `vulnerabilities` only of a release that is shown; an `info` the upstream
does not have for that release is composed from its files and its core metadata), say what
is held back (`render_notice`), and fill an upstream project page's missing upload times and
sizes from it. Never does I/O and never mutates a parsed document."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
from packaging.version import InvalidVersion, Version

from mirror import holds, notices, policy, versions
from mirror.clock import iso_microseconds, iso_seconds
from mirror.clock import parse_iso_time as parse_time
from mirror.ecosystems.pypi import names
from mirror.ecosystems.pypi.coremetadata import CoreMetadata
from mirror.ecosystems.pypi.links import link_problem, log_skipped_links, resolve
from mirror.ecosystems.pypi.signals import FileFacts, FileSignals, file_signals, lookup
from mirror.ecosystems.pypi.simple import DistFile, ProjectPage, listed_file, page_signals
from mirror.errors import BadUpstreamDocument
from mirror.holds import HeldSubject
from mirror.jsondepth import check_depth
from mirror.risk import Signal
from mirror.takedowns import Listing

API_JSON_TYPE = "application/json"


# parsed documents ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiFile:
    """One file of the legacy JSON API (`releases[version][]`)."""

    filename: str
    url: str
    upload_time: datetime | None
    size: int | None
    sha256: str | None
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiDocument:
    """A parsed JSON API document (`/pypi/{project}/json` or `/{version}/json`)."""

    project: str
    document: Mapping[str, Any]
    releases: Mapping[str, tuple[ApiFile, ...]]  # release key -> files (project document)
    urls: tuple[ApiFile, ...]  # `urls` (files of `info.version`)
    # The risk signals the document itself shows (`pypi.signals`), computed once when it is
    # parsed: the JSON API states no provenance, so only `new-file-type` (see `api_signals`).
    signals: FileSignals = field(default_factory=dict)

    def files_by_name(self) -> dict[str, ApiFile]:
        found = {item.filename: item for files in self.releases.values() for item in files}
        for item in self.urls:
            found.setdefault(item.filename, item)
        return found


@dataclass(frozen=True, slots=True)
class ApiParser:
    """`parse` for the metadata cache. Files whose URL is not on one of `file_hosts` are
    dropped (None: no host check, for documents read only for their upload times)."""

    project: str
    url: str
    file_hosts: frozenset[str] | None = None

    def __call__(self, raw: bytes) -> ApiDocument:
        return parse_api_document(raw, self.project, self.url, self.file_hosts)

    def listing(self, parsed: ApiDocument) -> Listing:
        """The files the document offers, with their yank (`takedowns.Lists`)."""
        return api_listing(parsed)

    def listed_package(self, parsed: ApiDocument) -> str:
        """The project a listing is of: the one asked for."""
        return self.project


def _api_file(
    entry: object,
    base_url: str,
    allowed: frozenset[str] | None,
    skipped: list[tuple[str, str]],
) -> ApiFile | None:
    if not isinstance(entry, dict):
        return None
    filename, url = entry.get("filename"), entry.get("url")
    if not isinstance(filename, str) or not isinstance(url, str) or not filename:
        return None
    absolute = resolve(base_url, url)
    if absolute is None:
        skipped.append((filename, "its URL cannot be resolved"))
        return None
    problem = link_problem(absolute, allowed) if allowed is not None else None
    if problem is not None:
        skipped.append((filename, problem))
        return None
    digests = entry.get("digests")
    sha256 = digests.get("sha256") if isinstance(digests, dict) else None
    size = entry.get("size")
    upload = parse_time(entry.get("upload_time_iso_8601")) or parse_time(entry.get("upload_time"))
    return ApiFile(
        filename=filename,
        url=absolute,
        upload_time=upload,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        sha256=sha256.lower() if isinstance(sha256, str) and sha256 else None,
        raw=entry,
    )


def parse_api_document(
    raw: bytes, project: str, url: str, file_hosts: Iterable[str] | None = None
) -> ApiDocument:
    """Parse a JSON API document. With `file_hosts`, files whose URL is elsewhere (or not
    http(s), or unparseable) are left out of `releases` and `urls`, logged once."""
    check_depth(raw, f"the upstream JSON API of {project}")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadUpstreamDocument(
            f"the upstream JSON API of {project} is not JSON: {exc}"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("info", {}), dict):
        raise BadUpstreamDocument(f"the upstream JSON API of {project} is not an object")
    allowed = frozenset(host.lower() for host in file_hosts) if file_hosts is not None else None
    skipped: list[tuple[str, str]] = []
    releases: dict[str, tuple[ApiFile, ...]] = {}
    raw_releases = document.get("releases") or {}
    if isinstance(raw_releases, dict):
        for release, entries in raw_releases.items():
            if not isinstance(entries, list):
                continue
            found = (_api_file(entry, url, allowed, skipped) for entry in entries)
            releases[str(release)] = tuple(item for item in found if item is not None)
    raw_urls = document.get("urls") or []
    urls: tuple[ApiFile, ...] = ()
    if isinstance(raw_urls, list):
        skipped_urls: list[tuple[str, str]] = []
        found_urls = (_api_file(entry, url, allowed, skipped_urls) for entry in raw_urls)
        urls = tuple(item for item in found_urls if item is not None)
        # `urls` repeats the files of one release: log each skipped link once.
        skipped += [text for text in skipped_urls if text not in skipped]
    log_skipped_links(project, "JSON API", skipped)
    return ApiDocument(
        project=project,
        document=document,
        releases=releases,
        urls=urls,
        signals=_own_signals(project, document, releases, urls),
    )


def _own_signals(
    project: str,
    document: Mapping[str, Any],
    releases: Mapping[str, Sequence[ApiFile]],
    urls: Sequence[ApiFile],
) -> FileSignals:
    """The signals of a JSON API document's files from its own data: each file of
    `releases` as of its release, each other file of `urls` as of the version its name says
    (else `info.version`); provenance unknown (the legacy JSON API does not state it)."""
    facts = [
        FileFacts(item.filename, _canonical(release), item.upload_time, None)
        for release, files in releases.items()
        for item in files
    ]
    listed = {fact.filename for fact in facts}
    default = info_version(document)
    facts += [
        FileFacts(
            item.filename,
            names.file_version(item.filename, project) or default,
            item.upload_time,
            None,
        )
        for item in urls
        if item.filename not in listed
    ]
    return file_signals(facts)


def api_signals(api: ApiDocument, page: ProjectPage | None) -> FileSignals:
    """The signals the JSON API decides `api`'s files with: a file the simple page lists has
    the page's signals (its provenance is only there), so both answers decide it alike;
    another file (or every file, with no page) its own document's."""
    if page is None:
        return api.signals
    found: dict[str, tuple[Signal, ...]] = {}
    for filename in api.files_by_name():
        source = page.signals if filename in page.by_filename else api.signals
        shown = source.get(filename)
        if shown:
            found[filename] = shown
    return found


def with_api_details(page: ProjectPage, api: ApiDocument) -> ProjectPage:
    """`page` with each file's missing upload time and size taken from the JSON API, when the
    API names the same file with the same sha256 (or either has none)."""
    known = api.files_by_name()
    changed: list[DistFile] = []
    for item in page.files:
        extra = known.get(item.filename)
        if extra is None or (item.sha256 and extra.sha256 and item.sha256 != extra.sha256):
            changed.append(item)
            continue
        upload = item.upload_time or extra.upload_time
        hashes = item.hashes
        if item.sha256 is None and extra.sha256 is not None:
            hashes = {**item.hashes, "sha256": extra.sha256}
        changed.append(
            replace(
                item,
                hashes=hashes,
                upload_time=upload,
                upload_time_text=item.upload_time_text
                or (iso_microseconds(upload) if upload else None),
                size=item.size if item.size is not None else extra.size,
            )
        )
    return replace(
        page,
        files=tuple(changed),
        by_filename={item.filename: item for item in changed},
        signals=page_signals(changed),
    )


def _page_file(item: DistFile) -> ApiFile:
    """A file of a simple-index page as the JSON API lists it (the keys the index sends that
    the page says anything about)."""
    upload = item.upload_time
    raw: dict[str, Any] = {
        "filename": item.filename,
        "packagetype": "bdist_wheel" if names.is_wheel(item.filename) else "sdist",
        "digests": {"sha256": item.sha256} if item.sha256 else {},
        "size": item.size,
        # The index's own `upload_time`: UTC to the second, without a zone.
        "upload_time": (iso_seconds(upload) or "").removesuffix("Z") if upload else None,
        "upload_time_iso_8601": item.upload_time_text
        or (iso_microseconds(upload) if upload else None),
        "url": item.url,
        "requires_python": item.requires_python,
        "yanked": item.yanked is not False,
        "yanked_reason": item.yanked if isinstance(item.yanked, str) else None,
    }
    return ApiFile(
        filename=item.filename,
        url=item.url,
        upload_time=upload,
        size=item.size,
        sha256=item.sha256,
        raw=raw,
    )


def document_from_page(page: ProjectPage) -> ApiDocument:
    """A project document composed from a simple-index page, for an upstream with no JSON
    API: every attributed file under its release, no `info` (composed per release later)."""
    releases: dict[str, list[ApiFile]] = {}
    for item in page.files:
        if item.version is not None:
            releases.setdefault(item.version, []).append(_page_file(item))
    document: dict[str, Any] = {"info": {}}
    if page.last_serial is not None:
        document["last_serial"] = page.last_serial
    return ApiDocument(
        project=page.project,
        document=document,
        releases={release: tuple(files) for release, files in releases.items()},
        urls=(),
        signals=page.signals,
    )


def release_document(api: ApiDocument, release: str) -> ApiDocument | None:
    """A per-version document cut from a project document: `release`'s files (matched by
    canonical version) and the project document's `info` (which `info_for` shows only when it
    is of `release`); None when the project document has no file of `release`."""
    wanted = _canonical(release)
    files = tuple(
        item for key, items in api.releases.items() if _canonical(key) == wanted for item in items
    )
    if not files:
        return None
    return ApiDocument(
        project=api.project,
        document=api.document,
        releases={},
        urls=files,
        signals={
            item.filename: api.signals[item.filename]
            for item in files
            if item.filename in api.signals
        },
    )


# filter and render ---------------------------------------------------------------------------


def _canonical(release: str) -> str:
    """A release key as the policy sees versions: normalized PEP 440 when valid."""
    try:
        return str(Version(release))
    except InvalidVersion:
        return release


def _api_subject(project: str, release: str, item: ApiFile) -> policy.Subject:
    return policy.Subject("pypi", project, _canonical(release), filename=item.filename)


def _rewrite_api_file(item: ApiFile, project: str, pypi_base: str) -> dict[str, Any]:
    return {**item.raw, "url": names.file_url(pypi_base, project, item.filename)}


@dataclass(frozen=True, slots=True)
class ApiView:
    """The JSON API filtered: visible files per release key (releases with none dropped)."""

    releases: Mapping[str, tuple[ApiFile, ...]]
    held: Mapping[str, tuple[policy.Decision, ...]]  # release key -> its hidden files
    latest: str | None  # the release `info.version` should name
    valid_until: datetime | None


def filter_api(
    api: ApiDocument, rules: policy.Rules, now: datetime, signals: FileSignals | None = None
) -> ApiView:
    """Decide each file of each release with its risk `signals` (`api_signals`; None: the
    document's own). `latest` is the newest release with a visible file by PyPI's order:
    not fully yanked first, then final before pre-release, then version."""
    shown: dict[str, tuple[ApiFile, ...]] = {}
    held: dict[str, tuple[policy.Decision, ...]] = {}
    signals_of = lookup(api.signals if signals is None else signals)
    for release, files in api.releases.items():
        split = policy.partition(
            ((item, _api_subject(api.project, release, item), item.upload_time) for item in files),
            now,
            rules,
            signals_of,
        )
        if split.visible:
            shown[release] = split.visible
        if split.withheld:
            held[release] = split.withheld
    every_held = (decision for decisions in held.values() for decision in decisions)
    return ApiView(
        releases=shown,
        held=held,
        latest=_newest_release(shown),
        valid_until=policy.earliest_until(every_held),
    )


def _newest_release(releases: Mapping[str, Sequence[ApiFile]]) -> str | None:
    def order(release: str) -> tuple[Any, ...]:
        files = releases[release]
        all_yanked = all(bool(item.raw.get("yanked")) for item in files)
        prerelease = versions.is_prerelease("pypi", release)
        return (not all_yanked, not prerelease, versions.sort_key("pypi", release))

    if not releases:
        return None
    return max(releases, key=order)


# The top-level keys of a JSON API answer; anything else the upstream adds is dropped.
API_PROJECT_KEYS = ("info", "last_serial", "releases", "urls", "vulnerabilities")
API_VERSION_KEYS = ("info", "last_serial", "urls", "vulnerabilities")
# `info` keys PyPI always sends; a built `info` sets the ones it cannot know to null, so
# clients that index them (`info["requires_dist"]`) read "unknown", not a KeyError.
INFO_KEYS: tuple[str, ...] = (
    "author", "author_email", "bugtrack_url", "classifiers", "description",
    "description_content_type", "docs_url", "download_url", "dynamic", "home_page", "keywords",
    "license", "license_expression", "license_files", "maintainer", "maintainer_email", "name",
    "package_url", "platform", "project_url", "project_urls", "provides_extra", "release_url",
    "requires_dist", "requires_python", "summary", "version", "yanked", "yanked_reason",
)  # fmt: skip


def info_version(document: Mapping[str, Any]) -> str | None:
    """`info.version` of a JSON API document, canonical (None when absent)."""
    info = document.get("info")
    version = info.get("version") if isinstance(info, dict) else None
    return _canonical(str(version)) if isinstance(version, str | int | float) else None


def info_for(api: ApiDocument, release: str) -> Mapping[str, Any] | None:
    """The upstream's `info` when it describes `release`, else None (it describes another
    release, which may be held back: never shown for `release`)."""
    info = api.document.get("info")
    if isinstance(info, dict) and info_version(api.document) == _canonical(release):
        return info
    return None


def metadata_describes(metadata: CoreMetadata, project: str, release: str) -> bool:
    """Whether core metadata is of `project` (normalized) `release`: a file that names
    another project or version says nothing about this release."""
    name, version = metadata.name, metadata.version
    return (
        name is not None
        and version is not None
        and names.normalize(name) == project
        and _canonical(version) == _canonical(release)
    )


def built_info(
    project: str,
    release: str,
    files: Sequence[ApiFile],
    metadata: CoreMetadata | None = None,
) -> dict[str, Any]:
    """An `info` for `release` from what the mirror knows (its files, and its core metadata
    when given and of this release): the name, the version, `requires_python` when every
    file agrees (the metadata's own first), `yanked` when every file is; the metadata's
    fields mapped as the index maps them; everything else unknown (null). Used when the
    upstream's `info` is of another release and no per-version document of `release` can
    be had."""
    info: dict[str, Any] = dict.fromkeys(INFO_KEYS)
    info["name"] = project
    info["version"] = release
    pythons = {item.raw.get("requires_python") for item in files}
    if len(pythons) == 1:
        (python,) = pythons
        info["requires_python"] = python if isinstance(python, str) else None
    yanked = bool(files) and all(bool(item.raw.get("yanked")) for item in files)
    info["yanked"] = yanked
    reasons = {item.raw.get("yanked_reason") for item in files} if yanked else set()
    info["yanked_reason"] = next(iter(reasons)) if len(reasons) == 1 else None
    if metadata is not None and metadata_describes(metadata, project, release):
        described = {key: value for key, value in metadata.fields.items() if key != "version"}
        if described.get("requires_python") is None:
            described.pop("requires_python", None)
        info.update(described)
    return info


def render_api_project(
    api: ApiDocument,
    view: ApiView,
    pypi_base: str,
    release_document: Mapping[str, Any] | None = None,
    metadata: CoreMetadata | None = None,
) -> bytes:
    """`/pypi/{project}/json` filtered: `releases` per file, `urls` = the files of
    `view.latest`, and `info`/`vulnerabilities` of `view.latest` only: the upstream's when
    they describe it, else those of `release_document` (the upstream's per-version document
    of `view.latest`) when it describes it, else an `info` built from its files and its core
    `metadata` (`built_info`) and no `vulnerabilities`. Raises ValueError when nothing is
    visible (the caller answers 404)."""
    if view.latest is None:
        raise ValueError("render_api_project needs a view with a visible release")
    latest = view.latest
    releases = {
        release: [_rewrite_api_file(item, api.project, pypi_base) for item in files]
        for release, files in view.releases.items()
    }
    source: Mapping[str, Any] | None = None
    info = info_for(api, latest)
    if info is not None:
        source = api.document
    elif release_document is not None:
        candidate = release_document.get("info")
        if isinstance(candidate, dict) and info_version(release_document) == _canonical(latest):
            info, source = candidate, release_document
    if info is None:
        info = built_info(api.project, latest, view.releases[latest], metadata)
    body: dict[str, Any] = {
        "info": {**info, "version": latest},
        "releases": releases,
        "urls": releases[latest],
    }
    serial = api.document.get("last_serial")
    if isinstance(serial, int):
        body["last_serial"] = serial
    vulnerabilities = source.get("vulnerabilities") if source is not None else None
    if isinstance(vulnerabilities, list):
        body["vulnerabilities"] = vulnerabilities
    return orjson.dumps({key: body[key] for key in API_PROJECT_KEYS if key in body})


def render_api_version(
    api: ApiDocument,
    release: str,
    visible: Sequence[ApiFile],
    pypi_base: str,
    metadata: CoreMetadata | None = None,
) -> bytes:
    """`/pypi/{project}/{version}/json` with only `visible` files in `urls` (and `releases`,
    which PyPI no longer sends there, dropped). The upstream's `info` only when it is of
    `release` (else one built from `visible` and the core `metadata`), and no top-level key
    beyond API_VERSION_KEYS."""
    info = info_for(api, release)
    built = built_info(api.project, release, visible, metadata) if info is None else None
    body: dict[str, Any] = {
        "info": dict(info) if info is not None else built,
        "urls": [_rewrite_api_file(item, api.project, pypi_base) for item in visible],
    }
    serial = api.document.get("last_serial")
    if isinstance(serial, int):
        body["last_serial"] = serial
    vulnerabilities = api.document.get("vulnerabilities")
    if info is not None and isinstance(vulnerabilities, list):
        body["vulnerabilities"] = vulnerabilities
    return orjson.dumps({key: body[key] for key in API_VERSION_KEYS if key in body})


def _held_summary(decisions: Iterable[policy.Decision]) -> str:
    """What holds the files of `decisions`, cause by cause (`notices.summary`): `2 files held
    in quarantine (newest …, available …); 1 file held by freeze f-…: reason (until …; …)`."""
    return notices.summary(decisions, "file")


def version_view(
    release: str, visible: Sequence[ApiFile], hidden: Sequence[policy.Decision]
) -> ApiView:
    """The view of one release's `/{version}/json` (`decide_api_version`'s answer)."""
    return ApiView(
        releases={release: tuple(visible)} if visible else {},
        held={release: tuple(hidden)} if hidden else {},
        latest=release if visible else None,
        valid_until=policy.earliest_until(hidden),
    )


def render_notice(project: str, view: ApiView) -> str | None:
    """The `X-Mirror-Notice` of a filtered JSON API answer when files are held back, else
    None: what holds them (`notices.notice`), ASCII and bounded like the simple pages'
    (`simple.render_notice`)."""
    held = [decision for decisions in view.held.values() for decision in decisions]
    return notices.notice(project, held, "file")


def held_versions(view: ApiView) -> tuple[HeldSubject, ...]:
    """The versions whose files `view` withholds by quarantine (the quarantine queue)."""
    return holds.quarantined(decision for decisions in view.held.values() for decision in decisions)


def api_nothing_visible_message(project: str, view: ApiView) -> str:
    """The 404 message of `/pypi/{project}/json` when no release has a visible file."""
    held = [decision for decisions in view.held.values() for decision in decisions]
    if not held:
        return f"the upstream index lists no files for {project}"
    return f"no release of {project} is available from this mirror yet: {_held_summary(held)}"


def decide_api_version(
    api: ApiDocument,
    rules: policy.Rules,
    now: datetime,
    release: str,
    signals: FileSignals | None = None,
) -> tuple[list[ApiFile], list[policy.Decision]]:
    """The visible files of a `/{version}/json` document and the decisions of hidden ones,
    each file decided as `release` (the version the client asked for) with its risk
    `signals` (as `filter_api`). A file whose name says it belongs to another version is
    left out: it is not this release's."""
    wanted = _canonical(release)
    split = policy.partition(
        (
            (item, _api_subject(api.project, release, item), item.upload_time)
            for item in api.urls
            if (named := names.file_version(item.filename, api.project)) is None or named == wanted
        ),
        now,
        rules,
        lookup(api.signals if signals is None else signals),
    )
    return list(split.visible), list(split.withheld)


# takedowns -----------------------------------------------------------------------------------


def api_listing(api: ApiDocument) -> Listing:
    """Each file, keyed `version/filename` with the version its name says (as the simple
    page keys it, so both documents name one takedown alike); a version document lists its
    `urls`. Files whose name says no version are left out, as on the page."""
    files = [item for release in api.releases.values() for item in release] or list(api.urls)
    found = {}
    for item in files:
        version = names.file_version(item.filename, api.project)
        if version is not None:
            found[f"{version}/{item.filename}"] = listed_file(
                version, item.filename, item.raw.get("yanked"), item.raw.get("yanked_reason")
            )
    return found
