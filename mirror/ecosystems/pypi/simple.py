"""PyPI simple-index documents (PEP 503 HTML, PEP 691 JSON), pure: parse an upstream project
page once, filter its files by policy at a moment (each file by its own upload time), render
the filtered page in the form the client asked for with file URLs pointing at the mirror, and
the same for the project list (`/simple/`). Never does I/O and never mutates a parsed
document."""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urldefrag

import orjson

from mirror import notices, policy, versions
from mirror.clock import parse_iso_time as parse_time
from mirror.ecosystems.pypi import names
from mirror.ecosystems.pypi.links import link_problem, log_skipped_links, resolve
from mirror.ecosystems.pypi.negotiation import Form
from mirror.ecosystems.pypi.signals import FileFacts, FileSignals, file_signals, lookup
from mirror.errors import BadRequest, BadUpstreamDocument
from mirror.jsondepth import check_depth
from mirror.model import Digest
from mirror.takedowns import Listed, Listing

log = logging.getLogger(__name__)

# The API version the mirror emits: size, upload-time and versions are PEP 700 (1.1); 1.0
# when some listed file has no known size (the field is mandatory from 1.1 on).
API_VERSION = "1.1"


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
    # Whether the upstream declares PEP 740 provenance for it (a `provenance` URL, a
    # `data-provenance` attribute): read for the `provenance-dropped` signal only; the URL is
    # never relayed (the mirror does not serve provenance files).
    provenance: bool = False

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
    # The risk signals of its files (`pypi.signals`), computed once when the page is built.
    signals: FileSignals = field(default_factory=dict)

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

    def listing(self, parsed: ProjectPage) -> Listing:
        """The files the page offers, with their yank (`takedowns.Lists`)."""
        return page_listing(parsed)

    def listed_package(self, parsed: ProjectPage) -> str:
        """The project a listing is of: the one asked for."""
        return self.project


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
        absolute = resolve(page_url, url)
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
                provenance=_provenance(entry.get("provenance")),
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


def _provenance(value: object) -> bool:
    """PEP 740: a file's provenance is declared by a URL (JSON `provenance`, HTML
    `data-provenance`; a digest in the PEP's first form), absent or null when it has none."""
    return isinstance(value, str) and bool(value.strip())


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
        signals=page_signals(kept),
    )


def page_signals(files: Iterable[DistFile]) -> FileSignals:
    """The risk signals of a page's files (`pypi.signals`): computed whenever a page is
    built, never per request."""
    return file_signals(
        FileFacts(item.filename, item.version, item.upload_time, item.provenance) for item in files
    )


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
    `data-dist-info-metadata`, `data-provenance` (PEP 740), and a non-standard
    `data-upload-time` when present."""
    collector = _LinkCollector()
    try:
        collector.feed(raw.decode("utf-8", "replace"))
        collector.close()
    except (AssertionError, ValueError) as exc:  # html.parser's own failures
        raise BadUpstreamDocument(f"the upstream page of {project} is not HTML: {exc}") from None
    base = (resolve(page_url, collector.base) if collector.base else None) or page_url
    files: list[DistFile] = []
    skipped: list[tuple[str, str]] = []
    for attrs, _text in collector.anchors:
        href = attrs.get("href")
        if not href:
            continue
        absolute = resolve(base, href)
        if absolute is None:
            skipped.append((href, "its URL cannot be resolved"))
            continue
        url, fragment = urldefrag(absolute)
        filename = url.rpartition("/")[2]
        if not filename:
            continue
        filename = unquote(filename)
        hashes: dict[str, str] = {}
        algorithm, _, value = fragment.partition("=")
        if algorithm and value:
            hashes = _clean_hashes({algorithm: value})
        core = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        upload_text = attrs.get("data-upload-time")
        yanked_attr = attrs.get("data-yanked", False)
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
                provenance=_provenance(attrs.get("data-provenance")),
            )
        )
    return _page(project, files, file_hosts, collector.serial, skipped)


def _html_core_metadata(value: str | None, present: bool) -> bool | Mapping[str, str]:
    """`data-core-metadata` (or `data-dist-info-metadata`): absent → False; present as
    `sha256=…` → its digest; present otherwise (empty, `true`, no usable digest) → True."""
    if not present:
        return False
    algorithm, _, digest = (value or "").partition("=")
    return _clean_hashes({algorithm: digest}) or True


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
        lookup(page.signals),
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


def declared_metadata(
    item: DistFile, derived: Mapping[str, str] | None
) -> bool | Mapping[str, str]:
    """The core metadata a page declares for `item`: the upstream's declaration, else the
    sha256 of the METADATA the mirror derived from the wheel with `item`'s sha256
    (`derived`: wheel sha256 → METADATA sha256), else none."""
    if item.core_metadata or not derived:
        return item.core_metadata
    sha256 = item.sha256
    derived_sha256 = derived.get(sha256) if sha256 is not None else None
    if derived_sha256 is None or not names.is_wheel(item.filename):
        return False
    return {"sha256": derived_sha256}


def render_json(
    page: ProjectPage,
    view: PageView,
    pypi_base: str,
    derived: Mapping[str, str] | None = None,
) -> bytes:
    """The PEP 691 page of the visible files; `pypi_base` is the mirror's `/pypi` root URL
    without a trailing slash. Both `core-metadata` and `dist-info-metadata` are emitted
    (`declared_metadata`)."""
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
        core = declared_metadata(item, derived)
        if core:
            entry["core-metadata"] = _core_json(core)
            entry["dist-info-metadata"] = _core_json(core)
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


def render_html(
    page: ProjectPage,
    view: PageView,
    pypi_base: str,
    derived: Mapping[str, str] | None = None,
) -> bytes:
    """The PEP 503 page of the visible files, attributes HTML-escaped; metadata as
    `declared_metadata`."""
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
        core = declared_metadata(item, derived)
        if core:
            value = _attr(_html_core(core))
            attrs.append(f'data-dist-info-metadata="{value}"')
            attrs.append(f'data-core-metadata="{value}"')
        lines.append(f"    <a {' '.join(attrs)}>{html.escape(item.filename)}</a><br />")
    lines += ["  </body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")


def render_page(
    page: ProjectPage,
    view: PageView,
    form: Form,
    pypi_base: str,
    derived: Mapping[str, str] | None = None,
) -> bytes:
    if form == "json":
        return render_json(page, view, pypi_base, derived)
    return render_html(page, view, pypi_base, derived)


def lacks_metadata(page: ProjectPage) -> bool:
    """Whether some wheel of `page` has no upstream metadata declared (only then can the
    mirror's derived metadata change the page)."""
    return any(not item.core_metadata and names.is_wheel(item.filename) for item in page.files)


def count_files(count: int) -> str:
    """`1 file`, `2 files`: every count of files in a notice or message."""
    return notices.count(count, "file")


def render_notice(project: str, view: PageView) -> str | None:
    """The `X-Mirror-Notice` text when files are held back, else None: what holds them
    (`notices.notice`), ASCII and bounded.

    e.g. `demo: 2 files held in quarantine (newest demo-1.2-py3-none-any.whl, available
    2026-11-25T10:00Z); 1 file blocked by block b-9c8d: hijacked (demo-1.1.tar.gz)`."""
    extra: tuple[str, ...] = ()
    if view.unattributed:
        extra = (f"{count_files(len(view.unattributed))} with no recognisable version not served",)
    return notices.notice(project, (*view.quarantined, *view.blocked), "file", extra)


def no_visible_file_message(project: str, view: PageView) -> str:
    """The 404 message of a project page with no visible file."""
    notice = render_notice(project, view)
    if notice is None:
        return f"the upstream index lists no files for {project}"
    return f"no file of {project} is available from this mirror yet: {notice}"


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


# takedowns -----------------------------------------------------------------------------------

# A yank's reason is upstream text kept in events, logs and the webhook: this long at most.
YANK_REASON_CHARS = 200


def listed_file(version: str, filename: str, yanked: object, reason: object = "") -> Listed:
    """One file as a listing keeps it: PEP 592's `yanked` (True, or the reason as a string)
    or the JSON API's `yanked` with its `yanked_reason`; the reason cleaned and bounded."""
    if isinstance(yanked, str):
        reason, yanked = yanked, True
    text = reason if isinstance(reason, str) else ""
    return Listed(
        version,
        filename,
        yanked=yanked is True,
        reason=notices.clean(text, YANK_REASON_CHARS) if yanked is True else "",
    )


def page_listing(page: ProjectPage) -> Listing:
    """Each file of a version, keyed `version/filename` (files no version owns are never
    served, so never taken down)."""
    return {
        f"{item.version}/{item.filename}": listed_file(item.version, item.filename, item.yanked)
        for item in page.files
        if item.version is not None
    }
