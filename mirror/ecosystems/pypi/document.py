"""PyPI index documents, pure: parse an upstream project page (PEP 691 JSON or PEP 503 HTML)
once, filter its files by policy at a moment (each file by its own upload time), render the
filtered page as PEP 691 JSON or PEP 503 HTML with file URLs pointing at the mirror; the
same for the project list and the legacy JSON API. Never does I/O and never mutates a
parsed document."""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import unquote, urldefrag, urljoin

import orjson
from packaging.version import InvalidVersion, Version
from yarl import URL

from mirror import policy, versions
from mirror.clock import iso_microseconds, iso_minutes
from mirror.ecosystems.base import Digest
from mirror.ecosystems.base import parse_iso_time as parse_time
from mirror.ecosystems.pypi import names
from mirror.errors import BadRequest, BadUpstreamDocument
from mirror.jsondepth import check_depth
from mirror.upstream import host_key

log = logging.getLogger(__name__)

Form = Literal["json", "v1-html", "text-html"]
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
TEXT_HTML_TYPE = "text/html"
CONTENT_TYPES: Mapping[Form, str] = {
    "json": JSON_TYPE,
    "v1-html": HTML_TYPE,
    "text-html": "text/html; charset=utf-8",
}
# What the mirror asks the upstream for: PEP 691 JSON (it alone carries upload-time), HTML
# from index servers that have nothing else.
UPSTREAM_ACCEPT = f"{JSON_TYPE}, {HTML_TYPE};q=0.2, {TEXT_HTML_TYPE};q=0.01"
API_JSON_TYPE = "application/json"
# The API version the mirror emits: size, upload-time and versions are PEP 700 (1.1); 1.0
# when some listed file has no known size (the field is mandatory from 1.1 on).
API_VERSION = "1.1"
_JSON_OFFERS: frozenset[str] = frozenset({JSON_TYPE, "application/vnd.pypi.simple.latest+json"})
_HTML_OFFERS: frozenset[str] = frozenset({HTML_TYPE, "application/vnd.pypi.simple.latest+html"})


# negotiation ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)  # clients send a handful of distinct Accept headers
def choose_form(accept: str | None) -> Form | None:
    """The representation for an `Accept` header, or None (406) when the client refuses
    every one with q=0. No header, `*/*`, or nothing we offer named → `text/html` (what PyPI
    does; pip discards a page whose type it does not know). JSON wins only with a strictly
    higher q or an equal q when named explicitly (pip, uv and Poetry put it first, q=1)."""
    if not accept or not accept.strip():
        return "text-html"
    json_q: float | None = None
    v1_q: float | None = None
    text_q: float | None = None
    wildcard_q: float | None = None
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value.strip())))
                except ValueError:
                    q = 0.0
        if media in _JSON_OFFERS:
            json_q = max(json_q or 0.0, q)
        elif media in _HTML_OFFERS:
            v1_q = max(v1_q or 0.0, q)
        elif media == TEXT_HTML_TYPE:
            text_q = max(text_q or 0.0, q)
        elif media in ("*/*", "text/*"):
            wildcard_q = max(wildcard_q or 0.0, q)
    html_named = max(v1_q or 0.0, text_q or 0.0) if (v1_q, text_q) != (None, None) else None
    html_q = html_named if html_named is not None else wildcard_q
    if json_q is None and html_q is None:
        return "text-html"
    best_json = json_q or 0.0
    best_html = html_q or 0.0
    if best_json <= 0 and best_html <= 0:
        return None
    if best_json > best_html or (best_json == best_html and json_q is not None):
        return "json"
    if v1_q is not None and v1_q >= (text_q or 0.0):
        return "v1-html"
    return "text-html"


# parsed documents ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DistFile:
    """One file of a project page, as the upstream declared it (URL absolute, no fragment)."""

    filename: str
    url: str
    version: str | None  # None: the file cannot be attributed to a version (never served)
    hashes: Mapping[str, str]
    requires_python: str | None = None
    yanked: bool | str = False
    core_metadata: bool | Mapping[str, str] = False
    size: int | None = None
    upload_time: datetime | None = None
    upload_time_text: str | None = None  # as the upstream wrote it, re-emitted byte for byte

    @property
    def sha256(self) -> str | None:
        value = self.hashes.get("sha256")
        return value.lower() if isinstance(value, str) else None

    def digests(self) -> tuple[Digest, ...]:
        return _digests(self.hashes)

    def metadata_digests(self) -> tuple[Digest, ...]:
        """The digests of the PEP 658 `.metadata` file (empty when only `true` was given)."""
        if isinstance(self.core_metadata, Mapping):
            return _digests(self.core_metadata)
        return ()

    @property
    def has_metadata(self) -> bool:
        return bool(self.core_metadata)


def _digests(hashes: Mapping[str, str]) -> tuple[Digest, ...]:
    found = []
    for algorithm in ("sha512", "sha256"):
        value = hashes.get(algorithm)
        if isinstance(value, str) and value:
            found.append(Digest(algorithm=algorithm, hexdigest=value.lower()))
    return tuple(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectPage:
    """A parsed upstream project page. `files` keep the upstream order; `dropped` names files
    whose URL points at a host the mirror may not fetch from."""

    project: str  # normalized
    files: tuple[DistFile, ...]
    by_filename: Mapping[str, DistFile]
    last_serial: int | None = None
    dropped: tuple[str, ...] = ()  # file names (or hrefs) skipped as hostile or broken

    def file(self, filename: str) -> DistFile | None:
        return self.by_filename.get(filename)

    @property
    def missing_upload_times(self) -> bool:
        return any(item.upload_time is None for item in self.files)


@dataclass(frozen=True, slots=True)
class PageParser:
    """`parse` for the metadata cache: the page of `project` fetched from `page_url`, files
    on hosts outside `file_hosts` dropped. Equal parsers reuse one parsed value."""

    project: str
    page_url: str
    file_hosts: frozenset[str]

    def __call__(self, raw: bytes) -> ProjectPage:
        return parse_project_page(raw, self.project, self.page_url, self.file_hosts)


def parse_project_page(
    raw: bytes, project: str, page_url: str, file_hosts: Iterable[str]
) -> ProjectPage:
    """Parse PEP 691 JSON (a body starting with `{`) or PEP 503 HTML."""
    if raw.lstrip()[:1] == b"{":
        return parse_project_json(raw, project, page_url, file_hosts)
    return parse_project_html(raw, project, page_url, file_hosts)


def parse_project_json(
    raw: bytes, project: str, page_url: str, file_hosts: Iterable[str]
) -> ProjectPage:
    """Parse a PEP 691 project page. Files that are not objects or lack a filename/url are
    skipped; raises BadUpstreamDocument when the body is not a JSON object with a list of
    files."""
    check_depth(raw, f"the upstream page of {project}")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadUpstreamDocument(f"the upstream page of {project} is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("files", []), list):
        raise BadUpstreamDocument(f"the upstream page of {project} has no list of files")
    files: list[DistFile] = []
    skipped: list[tuple[str, str]] = []
    for entry in document.get("files", []):
        if not isinstance(entry, dict):
            continue
        filename, url = entry.get("filename"), entry.get("url")
        if not isinstance(filename, str) or not isinstance(url, str) or not filename:
            continue
        absolute = _resolve(page_url, url)
        if absolute is None:
            skipped.append((filename, "its URL cannot be resolved"))
            continue
        hashes = entry.get("hashes")
        size = entry.get("size")
        upload_text = entry.get("upload-time")
        core = entry.get("core-metadata", entry.get("dist-info-metadata", False))
        files.append(
            DistFile(
                filename=filename,
                url=absolute,
                version=names.file_version(filename, project),
                hashes=_clean_hashes(hashes),
                requires_python=_text_or_none(entry.get("requires-python")),
                yanked=_yanked(entry.get("yanked", False)),
                core_metadata=_core_metadata(core),
                size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                upload_time=parse_time(upload_text),
                upload_time_text=upload_text if parse_time(upload_text) else None,
            )
        )
    meta = document.get("meta")
    serial = meta.get("_last-serial") if isinstance(meta, dict) else None
    return _page(project, files, file_hosts, serial if isinstance(serial, int) else None, skipped)


def _clean_hashes(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {
        str(key).lower(): item.lower()
        for key, item in value.items()
        if isinstance(item, str) and item and all(char in "0123456789abcdefABCDEF" for char in item)
    }


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _yanked(value: object) -> bool | str:
    if isinstance(value, str):
        return value if value else True
    return bool(value)


def _core_metadata(value: object) -> bool | Mapping[str, str]:
    if isinstance(value, dict):
        hashes = _clean_hashes(value)
        return hashes or True
    return bool(value) if isinstance(value, bool) else False


def _page(
    project: str,
    files: Sequence[DistFile],
    file_hosts: Iterable[str],
    serial: int | None,
    skipped: Sequence[tuple[str, str]] = (),
) -> ProjectPage:
    allowed = frozenset(host.lower() for host in file_hosts)
    kept: list[DistFile] = []
    dropped: list[tuple[str, str]] = [*skipped]
    by_filename: dict[str, DistFile] = {}
    for item in files:
        problem = link_problem(item.url, allowed)
        if problem is not None:
            dropped.append((item.filename, problem))
            continue
        if item.filename in by_filename:
            continue  # file names are unique on an index; the first one wins
        kept.append(item)
        by_filename[item.filename] = item
    log_skipped_links(project, "page", dropped)
    return ProjectPage(
        project=project,
        files=tuple(kept),
        by_filename=by_filename,
        last_serial=serial,
        dropped=tuple(name for name, _problem in dropped),
    )


_MAX_LOGGED_LINKS = 5
_MAX_LOGGED_TEXT = 120


def _describe(filename: str, problem: str) -> str:
    """`filename: problem` for a log line: the upstream's text cut short and escaped
    (`ascii` escapes control characters, so a skipped link never forges a log line)."""
    shown = filename if len(filename) <= _MAX_LOGGED_TEXT else filename[:_MAX_LOGGED_TEXT] + "..."
    return f"{shown!a}: {problem}"


def log_skipped_links(project: str, where: str, skipped: Sequence[tuple[str, str]]) -> None:
    """One warning per parsed upstream document that had links the mirror will not follow
    (parsing happens once per upstream change, so this is not repeated per request)."""
    if not skipped:
        return
    shown = "; ".join(_describe(name, problem) for name, problem in skipped[:_MAX_LOGGED_LINKS])
    extra = len(skipped) - _MAX_LOGGED_LINKS
    more = f"; and {extra} more" if extra > 0 else ""
    log.warning(
        "skipped %d file link(s) on the upstream %s of %s: %s%s",
        len(skipped),
        where,
        ascii(project),
        shown,
        more,
    )


def _resolve(base: str, href: str) -> str | None:
    """`href` made absolute against `base`; None when the standard library cannot parse it
    (e.g. a broken IPv6 literal)."""
    try:
        return urljoin(base, href)
    except ValueError:
        return None


def link_problem(url: str, allowed: frozenset[str]) -> str | None:
    """Why the mirror will not fetch a file from `url`, or None when it may: only http(s)
    URLs on one of the `allowed` file hosts (`file:`, `data:`, `javascript:`, relative
    leftovers and any other host are refused)."""
    try:
        parsed = URL(url)
        scheme = parsed.scheme.lower()
        if scheme not in ("http", "https"):
            return f"scheme {scheme or '(none)'!a} is not http(s)"
        key = host_key(parsed)
    except (ValueError, TypeError):
        return "its URL is not valid"
    if key is None:
        return "its URL names no host"
    if key not in allowed:
        return f"host {key!a} is not an allowed file host"
    return None


class _LinkCollector(HTMLParser):
    """Anchors (with their attributes and text) and `<base href>` of a PEP 503 page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._current: dict[str, str | None] | None = None
        self._text: list[str] = []
        self.serial: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            href = dict(attrs).get("href")
            if href:
                self.base = href
        elif tag == "a":
            self._current = dict(attrs)
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.anchors.append((self._current, "".join(self._text).strip()))
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def handle_comment(self, data: str) -> None:
        text = data.strip()
        if text.startswith("SERIAL ") and text[7:].isdigit():
            self.serial = int(text[7:])


def parse_project_html(
    raw: bytes, project: str, page_url: str, file_hosts: Iterable[str]
) -> ProjectPage:
    """Parse a PEP 503 page with `html.parser` (no scripts, no entities beyond HTML's own):
    `#sha256=` fragments, `data-requires-python`, `data-yanked`, `data-core-metadata` /
    `data-dist-info-metadata`, and a non-standard `data-upload-time` when present."""
    collector = _LinkCollector()
    try:
        collector.feed(raw.decode("utf-8", "replace"))
        collector.close()
    except (AssertionError, ValueError) as exc:  # html.parser's own failures
        raise BadUpstreamDocument(f"the upstream page of {project} is not HTML: {exc}") from None
    base = (_resolve(page_url, collector.base) if collector.base else None) or page_url
    files: list[DistFile] = []
    skipped: list[tuple[str, str]] = []
    for attrs, _text in collector.anchors:
        href = attrs.get("href")
        if not href:
            continue
        absolute = _resolve(base, href)
        if absolute is None:
            skipped.append((href, "its URL cannot be resolved"))
            continue
        url, fragment = urldefrag(absolute)
        filename = url.rsplit("/", 1)[-1]
        if not filename:
            continue
        filename = unquote(filename)
        hashes: dict[str, str] = {}
        algorithm, _, value = fragment.partition("=")
        if algorithm and value:
            hashes = _clean_hashes({algorithm: value})
        core = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        upload_text = attrs.get("data-upload-time")
        yanked_attr = attrs.get("data-yanked", False) if "data-yanked" in attrs else False
        files.append(
            DistFile(
                filename=filename,
                url=url,
                version=names.file_version(filename, project),
                hashes=hashes,
                requires_python=_text_or_none(attrs.get("data-requires-python")),
                yanked=_yanked("" if yanked_attr is None else yanked_attr),
                core_metadata=_html_core_metadata(
                    core, "data-core-metadata" in attrs or "data-dist-info-metadata" in attrs
                ),
                upload_time=parse_time(upload_text),
                upload_time_text=upload_text if parse_time(upload_text) else None,
            )
        )
    return _page(project, files, file_hosts, collector.serial, skipped)


def _html_core_metadata(value: str | None, present: bool) -> bool | Mapping[str, str]:
    if not present:
        return False
    if value is None or value in ("", "true"):
        return True
    algorithm, _, digest = value.partition("=")
    hashes = _clean_hashes({algorithm: digest})
    return hashes or True


# upload times from the JSON API ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiFile:
    """One file of the legacy JSON API (`releases[version][]`)."""

    release: str  # the release key as the upstream wrote it
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


def _api_file(
    release: str,
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
    absolute = _resolve(base_url, url)
    problem = "its URL cannot be resolved" if absolute is None else None
    if absolute is not None and allowed is not None:
        problem = link_problem(absolute, allowed)
    if problem is not None or absolute is None:
        skipped.append((filename, problem or "its URL cannot be resolved"))
        return None
    digests = entry.get("digests")
    sha256 = digests.get("sha256") if isinstance(digests, dict) else None
    size = entry.get("size")
    upload = parse_time(entry.get("upload_time_iso_8601")) or parse_time(entry.get("upload_time"))
    return ApiFile(
        release=release,
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
            found = (_api_file(str(release), entry, url, allowed, skipped) for entry in entries)
            releases[str(release)] = tuple(item for item in found if item is not None)
    info = document.get("info") or {}
    current = str(info.get("version", "")) if isinstance(info, dict) else ""
    raw_urls = document.get("urls") or []
    urls: tuple[ApiFile, ...] = ()
    if isinstance(raw_urls, list):
        skipped_urls: list[tuple[str, str]] = []
        found_urls = (_api_file(current, entry, url, allowed, skipped_urls) for entry in raw_urls)
        urls = tuple(item for item in found_urls if item is not None)
        # `urls` repeats the files of one release: log each skipped link once.
        skipped += [text for text in skipped_urls if text not in skipped]
    log_skipped_links(project, "JSON API", skipped)
    return ApiDocument(project=project, document=document, releases=releases, urls=urls)


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
    )


# filter --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageView:
    """The filtered view of a project page at one moment under one set of rules."""

    visible: tuple[DistFile, ...]  # upstream order
    versions: tuple[str, ...]  # ascending, each with at least one visible file
    quarantined: tuple[policy.Decision, ...]  # upstream order
    blocked: tuple[policy.Decision, ...]  # upstream order
    unattributed: tuple[str, ...]  # file names with no version
    valid_until: datetime | None  # the earliest moment a held file leaves quarantine


def unattributed_detail(project: str, filename: str) -> str:
    return (
        f"{filename} of {project} is not served: the mirror cannot tell which version it "
        "belongs to from its name, so a block could not apply to it"
    )


def _file_subject(project: str, version: str, item: DistFile) -> policy.Subject:
    return policy.Subject("pypi", project, version, filename=item.filename)


def filter_page(page: ProjectPage, rules: policy.Rules, now: datetime) -> PageView:
    """Decide every file at `now` under `rules`, each by its own upload time. A file with no
    version is never served (`unattributed`)."""
    project = page.project
    split = policy.partition(
        (
            (item, _file_subject(project, item.version, item), item.upload_time)
            for item in page.files
            if item.version is not None
        ),
        now,
        rules,
    )
    shown_versions = {item.version for item in split.visible if item.version is not None}
    return PageView(
        visible=split.visible,
        versions=tuple(
            sorted(shown_versions, key=lambda version: versions.sort_key("pypi", version))
        ),
        quarantined=split.quarantined,
        blocked=split.blocked,
        unattributed=tuple(item.filename for item in page.files if item.version is None),
        valid_until=split.until,
    )


# render --------------------------------------------------------------------------------------


def _api_version(view: PageView) -> str:
    return API_VERSION if all(item.size is not None for item in view.visible) else "1.0"


def _core_json(value: bool | Mapping[str, str]) -> bool | dict[str, str]:
    return dict(value) if isinstance(value, Mapping) else value


def render_json(page: ProjectPage, view: PageView, pypi_base: str) -> bytes:
    """The PEP 691 page of the visible files; `pypi_base` is the mirror's `/pypi` root URL
    without a trailing slash. Both `core-metadata` and `dist-info-metadata` are emitted."""
    files: list[dict[str, Any]] = []
    for item in view.visible:
        entry: dict[str, Any] = {
            "filename": item.filename,
            "url": names.file_url(pypi_base, page.project, item.filename),
            "hashes": dict(item.hashes),
        }
        if item.requires_python is not None:
            entry["requires-python"] = item.requires_python
        entry["yanked"] = item.yanked
        if item.core_metadata:
            entry["core-metadata"] = _core_json(item.core_metadata)
            entry["dist-info-metadata"] = _core_json(item.core_metadata)
        if item.size is not None:
            entry["size"] = item.size
        if item.upload_time_text is not None:
            entry["upload-time"] = item.upload_time_text
        files.append(entry)
    body = {
        "meta": {"api-version": _api_version(view)},
        "name": page.project,
        "files": files,
        "versions": list(view.versions),
    }
    return orjson.dumps(body)


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def _html_core(value: bool | Mapping[str, str]) -> str:
    if isinstance(value, Mapping):
        for algorithm in ("sha256", "sha512"):
            if algorithm in value:
                return f"{algorithm}={value[algorithm]}"
    return "true"


def render_html(page: ProjectPage, view: PageView, pypi_base: str) -> bytes:
    """The PEP 503 page of the visible files, attributes HTML-escaped."""
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        f'    <meta name="pypi:repository-version" content="{_api_version(view)}">',
        f"    <title>Links for {html.escape(page.project)}</title>",
        "  </head>",
        "  <body>",
        f"    <h1>Links for {html.escape(page.project)}</h1>",
    ]
    for item in view.visible:
        href = names.file_url(pypi_base, page.project, item.filename)
        if item.sha256:
            href += f"#sha256={item.sha256}"
        attrs = [f'href="{_attr(href)}"']
        if item.requires_python is not None:
            attrs.append(f'data-requires-python="{_attr(item.requires_python)}"')
        if item.yanked is not False:
            reason = item.yanked if isinstance(item.yanked, str) else ""
            attrs.append(f'data-yanked="{_attr(reason)}"')
        if item.core_metadata:
            value = _attr(_html_core(item.core_metadata))
            attrs.append(f'data-dist-info-metadata="{value}"')
            attrs.append(f'data-core-metadata="{value}"')
        lines.append(f"    <a {' '.join(attrs)}>{html.escape(item.filename)}</a><br />")
    lines += ["  </body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")


def render_page(page: ProjectPage, view: PageView, form: Form, pypi_base: str) -> bytes:
    if form == "json":
        return render_json(page, view, pypi_base)
    return render_html(page, view, pypi_base)


def _count(count: int, noun: str = "file") -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def _file(held: policy.Decision) -> str:
    return held.filename or held.version  # PyPI decides files: there is always a filename


def render_notice(project: str, view: PageView) -> str | None:
    """The `X-Mirror-Notice` text when files are held back, else None. ASCII only.

    e.g. `demo: 2 files held in quarantine (newest demo-1.2-py3-none-any.whl, available
    2026-11-25T10:00Z); 1 file blocked (demo-1.1.tar.gz)`."""
    parts: list[str] = []
    if view.quarantined:
        newest: policy.Decision | None = None
        for held in view.quarantined:
            if held.until is not None and (
                newest is None or held.until > (newest.until or held.until)
            ):
                newest = held
        text = f"{_count(len(view.quarantined))} held in quarantine"
        if newest is not None and newest.until is not None:
            text += f" (newest {_file(newest)}, available {iso_minutes(newest.until)})"
        parts.append(text)
    if view.blocked:
        shown = ", ".join(_file(held) for held in view.blocked[-3:])
        more = ", ..." if len(view.blocked) > 3 else ""
        parts.append(f"{_count(len(view.blocked))} blocked ({shown}{more})")
    if view.unattributed:
        parts.append(f"{_count(len(view.unattributed))} with no recognisable version not served")
    if not parts:
        return None
    text = f"{project}: " + "; ".join(parts)
    return text.encode("ascii", "replace").decode("ascii")


# the project list ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootParser:
    def __call__(self, raw: bytes) -> tuple[str, ...]:
        return parse_root(raw)


def parse_root(raw: bytes) -> tuple[str, ...]:
    """The project names of an upstream `/simple/` (PEP 691 JSON or PEP 503 HTML), in the
    upstream order, names that are not valid project names skipped."""
    names_found: list[str] = []
    if raw.lstrip()[:1] == b"{":
        check_depth(raw, "the upstream project list")
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadUpstreamDocument(f"the upstream project list is not JSON: {exc}") from None
        projects = document.get("projects") if isinstance(document, dict) else None
        if not isinstance(projects, list):
            raise BadUpstreamDocument("the upstream project list has no `projects` list")
        for entry in projects:
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str):
                names_found.append(name)
    else:
        collector = _LinkCollector()
        collector.feed(raw.decode("utf-8", "replace"))
        collector.close()
        names_found = [text for _attrs, text in collector.anchors if text]
    seen: set[str] = set()
    kept: list[str] = []
    for name in names_found:
        try:
            names.parse_project(name)
        except BadRequest:
            log.debug("skipping %r in the upstream project list: not a project name", name)
            continue
        normalized = names.normalize(name)
        if normalized not in seen:
            seen.add(normalized)
            kept.append(name)
    return tuple(kept)


def render_root(projects: Sequence[str], form: Form, pypi_base: str) -> bytes:
    """The project list: names link to the mirror's normalized project pages."""
    if form == "json":
        body = {
            "meta": {"api-version": API_VERSION},
            "projects": [{"name": name} for name in projects],
        }
        return orjson.dumps(body)
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">',
        "    <title>Simple index</title>",
        "  </head>",
        "  <body>",
    ]
    for name in projects:
        href = f"{pypi_base}/simple/{names.normalize(name)}/"
        lines.append(f'    <a href="{_attr(href)}">{html.escape(name)}</a>')
    lines += ["  </body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")


# the legacy JSON API -------------------------------------------------------------------------


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


def filter_api(api: ApiDocument, rules: policy.Rules, now: datetime) -> ApiView:
    """Decide each file of each release. `latest` is the newest release with a visible file
    by PyPI's order: not fully yanked first, then final before pre-release, then version."""
    shown: dict[str, tuple[ApiFile, ...]] = {}
    held: dict[str, tuple[policy.Decision, ...]] = {}
    for release, files in api.releases.items():
        split = policy.partition(
            ((item, _api_subject(api.project, release, item), item.upload_time) for item in files),
            now,
            rules,
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
    "description_content_type", "docs_url", "download_url", "home_page", "keywords",
    "license", "maintainer", "maintainer_email", "name", "package_url", "platform",
    "project_url", "project_urls", "release_url", "requires_dist", "requires_python",
    "summary", "version", "yanked", "yanked_reason",
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


def built_info(project: str, release: str, files: Sequence[ApiFile]) -> dict[str, Any]:
    """An `info` for `release` from what the mirror knows without asking (its files): the
    name, the version, `requires_python` when every file agrees, `yanked` when every file
    is; everything else unknown (null). Used when the upstream's `info` is of another
    release and no per-version document of `release` can be had."""
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
    return info


def render_api_project(
    api: ApiDocument,
    view: ApiView,
    pypi_base: str,
    release_document: Mapping[str, Any] | None = None,
) -> bytes:
    """`/pypi/{project}/json` filtered: `releases` per file, `urls` = the files of
    `view.latest`, and `info`/`vulnerabilities` of `view.latest` only: the upstream's when
    they describe it, else those of `release_document` (the upstream's per-version document
    of `view.latest`) when it describes it, else a built `info` (`built_info`) and no
    `vulnerabilities`. Raises ValueError when nothing is visible (the caller answers 404)."""
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
        info = built_info(api.project, latest, view.releases[latest])
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
    api: ApiDocument, release: str, visible: Sequence[ApiFile], pypi_base: str
) -> bytes:
    """`/pypi/{project}/{version}/json` with only `visible` files in `urls` (and `releases`,
    which PyPI no longer sends there, dropped). The upstream's `info` only when it is of
    `release` (else a built one), and no top-level key beyond API_VERSION_KEYS."""
    info = info_for(api, release)
    body: dict[str, Any] = {
        "info": dict(info) if info is not None else built_info(api.project, release, visible),
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
    """`N files held in quarantine (the first available …); M files blocked`."""
    quarantined = [decision for decision in decisions if decision.block is None]
    blocked = [decision for decision in decisions if decision.block is not None]
    parts: list[str] = []
    if quarantined:
        text = f"{_count(len(quarantined))} held in quarantine"
        first = policy.earliest_until(quarantined)
        if first is not None:
            text += f" (the first available {iso_minutes(first)})"
        parts.append(text)
    if blocked:
        parts.append(f"{_count(len(blocked))} blocked")
    return "; ".join(parts)


def api_nothing_visible_message(project: str, view: ApiView) -> str:
    """The 404 message of `/pypi/{project}/json` when no release has a visible file."""
    held = [decision for decisions in view.held.values() for decision in decisions]
    if not held:
        return f"the upstream index lists no files for {project}"
    return f"no release of {project} is available from this mirror yet: {_held_summary(held)}"


def no_visible_file_message(project: str, view: PageView) -> str:
    """The 404 message of a project page with no visible file."""
    notice = render_notice(project, view)
    if notice is None:
        return f"the upstream index lists no files for {project}"
    return f"no file of {project} is available from this mirror yet: {notice}"


def decide_api_version(
    api: ApiDocument, rules: policy.Rules, now: datetime, release: str | None = None
) -> tuple[list[ApiFile], list[policy.Decision]]:
    """The visible files of a `/{version}/json` document and the decisions of hidden ones,
    each file decided as `release` (default: the document's `info.version`). A file whose
    name says it belongs to another version is left out: it is not this release's."""
    info = api.document.get("info")
    if release is None:
        release = str(info.get("version", "")) if isinstance(info, dict) else ""
    wanted = _canonical(release)
    split = policy.partition(
        (
            (item, _api_subject(api.project, release, item), item.upload_time)
            for item in api.urls
            if (named := names.file_version(item.filename, api.project)) is None or named == wanted
        ),
        now,
        rules,
    )
    return list(split.visible), list(split.withheld)
