"""The PyPI adapter's HTTP side: the simple index (root and project pages, PEP 503 HTML and
PEP 691 JSON by `Accept`), distribution files and their PEP 658 `.metadata`, and the legacy
JSON API, all under `/pypi/`. Decisions and bytes come from the pure modules `negotiation`,
`simple` and `jsonapi` and the core services; this module only routes, caches rendered views
and raises `mirror.errors`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from packaging.version import InvalidVersion, Version
from yarl import URL

from mirror import holds, policy, responses
from mirror.artifacts.serve import ARTIFACT_CACHE_CONTROL, not_modified
from mirror.blobs.store import BlobVanished
from mirror.budget import BudgetedLRU
from mirror.ecosystems.pypi import coremetadata, jsonapi, names, negotiation, simple
from mirror.ecosystems.pypi.coremetadata import CoreMetadata
from mirror.ecosystems.pypi.derivedmeta import DIRECTORY_NAME, DerivedMetadata, MetadataFile
from mirror.ecosystems.pypi.jsonapi import ApiDocument, ApiParser
from mirror.ecosystems.pypi.negotiation import Form
from mirror.ecosystems.pypi.simple import DistFile, PageParser, ProjectPage, RootParser
from mirror.errors import (
    BadRequest,
    BadUpstreamDocument,
    Forbidden,
    Held,
    MirrorError,
    NotFound,
    UpstreamError,
    UpstreamNotFound,
)
from mirror.holds import HeldSubject
from mirror.hosts import host_key
from mirror.metacache import PARSED_BYTES_PER_RAW_BYTE
from mirror.model import ArtifactRef, Explanation, Rendered
from mirror.replay import REPLAY_SOURCE, Decided, DocumentStamp, ReplaySource
from mirror.services import REQUEST_KIND
from mirror.upstream import redact

if TYPE_CHECKING:
    from mirror.metacache import CachedDocument, Refresh
    from mirror.services import Services

log = logging.getLogger(__name__)

PREFIX = "/pypi"
FILE_TYPE = "application/octet-stream"
VARY = "Accept, Accept-Encoding"
# PyPI's own JSON API lets clients keep a document 15 minutes; ours changes with the clock.
API_MAX_AGE = timedelta(minutes=5)
# Rendering a page with this many files takes milliseconds of CPU: do it off the event loop.
RENDER_IN_THREAD_FILES = 500
RENDER_IN_THREAD_PROJECTS = 5000
# A JSON API answer whose `info` an upstream failure left incomplete is kept this long only.
INCOMPLETE_INFO_LIFETIME = timedelta(seconds=30)
# Files whose core metadata is read for one `info` at most (each may be an upstream fetch).
METADATA_FILES_TRIED = 3
_READ_METHODS = ("GET", "HEAD")
_MERGED_PAGES = 256


class PypiIndex:
    """The `pypi` Ecosystem: a simple index at `/pypi/simple/` that pip, uv and Poetry use
    unchanged."""

    name = "pypi"

    def __init__(self, services: Services) -> None:
        upstream = services.config.pypi.upstream
        if upstream is None:
            raise ValueError("the PyPI adapter needs pypi.upstream")
        self._services = services
        self._index = upstream if upstream.endswith("/") else upstream + "/"
        self._api = names.json_api_base(self._index)
        index_host = host_key(URL(self._index))
        hosts = {host.lower() for host in services.config.pypi.file_hosts}
        if index_host is not None:
            hosts.add(index_host)
        self._file_hosts = frozenset(hosts)
        # Renders in progress, so concurrent cold requests for one view render it once.
        # HTML pages with upload times from the JSON API, by (page version, API version).
        self._merged: BudgetedLRU[tuple[str, str, str], tuple[ProjectPage, int]] = BudgetedLRU(
            services.memory, "pypi merged pages", _estimated_size, max_entries=_MERGED_PAGES
        )
        # PEP 658 metadata read from cached wheels the upstream declares none for.
        self._derived = DerivedMetadata(
            blobs=services.blobs,
            artifacts=services.artifacts,
            directory=services.config.data_dir / DIRECTORY_NAME,
            budget=services.memory,
        )
        # Whether a page (by its version) has wheels without upstream metadata: only then
        # does a page request read the derived declarations' generation.
        self._lacking: BudgetedLRU[tuple[str, str], bool] = BudgetedLRU(
            services.memory, "pypi pages lacking metadata", lambda _: 64, max_entries=4096
        )

    async def close(self) -> None:
        """Stop the METADATA derivations under way (they write to the artifact store)."""
        await self._derived.close()

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            web.route("*", PREFIX, self._dispatch),
            web.route("*", PREFIX + "/{tail:.*}", self._dispatch),
        ]

    # Ecosystem --------------------------------------------------------------------------

    async def explain(self, package: str, version: str) -> Explanation:
        """Why `package version` is shown or held right now, file by file."""
        project = names.parse_project(package).normalized
        page, files = await self._version_files(project, version)
        entries: list[dict[str, Any]] = []
        decisions: list[policy.Decision] = []
        for item in files:
            decision = self._decide(page, item)
            decisions.append(decision)
            entries.append(
                {
                    "filename": item.filename,
                    "verdict": str(decision.verdict),
                    "published_at": item.upload_time.isoformat() if item.upload_time else None,
                    "until": decision.until.isoformat() if decision.until else None,
                    "detail": decision.detail,
                    "rule": rule.describe() if (rule := decision.rule) is not None else None,
                    "signals": list(decision.describe_signals()),
                    "risk": decision.risk.describe() if decision.risk is not None else None,
                }
            )
        shown = [decision for decision in decisions if decision.visible]
        times = [item.upload_time for item in files if item.upload_time is not None]
        published_at = min(times) if times else None
        if not shown:
            # Nothing served: the decision a refusal of the release names, as in
            # `_serve_api_version`.
            refused = policy.refusal(decisions) or decisions[0]
            return Explanation.of(refused, published_at=published_at, files=tuple(entries))
        detail = f"{len(shown)} of {len(files)} files of {project} {version} are served"
        if len(shown) < len(files):
            held = [decision.detail for decision in decisions if not decision.visible]
            detail += "; held back: " + "; ".join(held)
        return Explanation.of(
            shown[0], published_at=published_at, detail=detail, files=tuple(entries)
        )

    async def _version_files(
        self, project: str, version: str
    ) -> tuple[ProjectPage, list[DistFile]]:
        """The files of `project` `version` the upstream index lists, with the page listing
        them (asked again once when our copy lists none: a lockfile may name a release newer
        than it); NotFound if none."""
        page = (await self._page(project)).page
        files = self._files_of(page, version)
        if not files:
            page = (await self._page(project, refresh=True)).page
            files = self._files_of(page, version)
        if not files:
            raise NotFound(f"the upstream index has no files of {project} {version}")
        return page, files

    @staticmethod
    def _files_of(page: ProjectPage, version: str) -> list[DistFile]:
        wanted = _canonical(version)
        return [item for item in page.files if item.version is not None and item.version == wanted]

    def _decide(self, page: ProjectPage, item: DistFile) -> policy.Decision:
        """The decision for `item` of `page` right now, with the risk signals the page
        computed for it when it was parsed."""
        project = page.project
        if item.version is None:
            raise Forbidden(simple.unattributed_detail(project, item.filename))
        subject = policy.Subject("pypi", project, item.version, filename=item.filename)
        signals = page.signals.get(item.filename, ())
        return self._services.policy.decide(subject, item.upload_time, signals)

    # routing ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method not in _READ_METHODS:
            raise web.HTTPMethodNotAllowed(request.method, _READ_METHODS)
        parsed = names.parse_request_path(request.raw_path, PREFIX)
        if parsed.kind == "redirect":
            request[REQUEST_KIND] = "metadata"
            location = responses.base_url(request, self._services.config) + (
                parsed.location or f"{PREFIX}/simple/"
            )
            raise web.HTTPMovedPermanently(location=location)
        if parsed.kind == "root":
            return await self._serve_root(request)
        project = parsed.project
        if project is None:
            raise BadRequest(f"no project name in {request.path!r}")
        if parsed.kind == "project":
            return await self._serve_page(request, project.normalized)
        if parsed.kind == "file":
            return await self._serve_file(request, project.normalized, parsed.filename or "")
        if parsed.kind == "json":
            return await self._serve_api(request, project.normalized)
        return await self._serve_api_version(request, project.normalized, parsed.version or "")

    def _pypi_base(self, request: web.Request) -> str:
        return responses.base_url(request, self._services.config) + PREFIX

    def _form(self, request: web.Request) -> Form:
        form = negotiation.choose_form(request.headers.get("Accept"))
        if form is None:
            raise web.HTTPNotAcceptable(
                text=(
                    "this index serves application/vnd.pypi.simple.v1+json, "
                    "application/vnd.pypi.simple.v1+html and text/html\n"
                ),
                headers={"Vary": "Accept"},
            )
        return form

    # upstream documents -----------------------------------------------------------------

    async def _page(self, project: str, *, refresh: Refresh = False) -> _PageCopy:
        """The upstream page of `project`, a version naming its bytes and until when it is
        fresh. Pages without upload times (HTML-only upstreams) get them from the upstream
        JSON API when there is one; otherwise those files count as of unknown age."""
        services = self._services
        url = names.simple_page_url(self._index, project)
        doc = await services.metacache.get(
            url,
            PageParser(project, url, self._file_hosts),
            ecosystem="pypi",
            accept=negotiation.UPSTREAM_ACCEPT,
            refresh=refresh,
        )
        page: ProjectPage = doc.parsed
        copy = _PageCopy(
            page,
            doc.version,
            services.metacache.fresh_until(doc),
            len(doc.raw),
            services.metacache.stamp(doc),
        )
        if self._api is None or not page.missing_upload_times:
            return copy
        try:
            api = await self._optional_api(
                self._api_url(project),
                project,
                refresh=refresh,
                missing=(
                    f"the upstream index has no JSON API document of {project}, so the files "
                    "its page lists without upload times count as of unknown age"
                ),
            )
        except BadUpstreamDocument as exc:
            log.warning("no upload times for %s from the upstream JSON API: %s", project, exc)
            return copy
        except UpstreamError as exc:
            # The upstream client logs the failure itself, once per request it makes.
            log.debug("no upload times for %s from the upstream JSON API: %s", project, exc)
            return copy
        if api is None:
            return copy
        key = (project, doc.version, api.version)
        held = self._merged.get(key)
        if held is None:
            merged = jsonapi.with_api_details(page, api.parsed)
            # About the size of the parsed page it was built from.
            self._merged.put(key, (merged, len(doc.raw) * PARSED_BYTES_PER_RAW_BYTE))
        else:
            merged, _ = held
        fresh_until = min(copy.fresh_until, services.metacache.fresh_until(api))
        version = f"{doc.version}+{api.version}"
        return _PageCopy(merged, version, fresh_until, copy.size, copy.stamp)

    # views --------------------------------------------------------------------------------

    async def _cached_view(
        self, key: Hashable, render: Callable[..., Awaitable[Rendered]], *args: Any, base: str
    ) -> Rendered:
        """The view under `key` (which names `base`): kept only for the few bases the rendered
        cache admits, so made-up Host values cannot multiply views."""
        services = self._services
        return await services.rendered.get_or_render(
            key,
            services.clock.now(),
            lambda: render(key, *args, base),
            cache=services.rendered.caches_base(base),
        )

    def _valid_until(self, view_until: datetime | None) -> datetime | None:
        """The earlier of the next quarantine boundary and the next rule expiry."""
        expiry = self._services.policy.rules().next_expiry(self._services.clock.now())
        candidates = [moment for moment in (view_until, expiry) if moment is not None]
        return min(candidates) if candidates else None

    async def _serve_root(self, request: web.Request) -> web.StreamResponse:
        request[REQUEST_KIND] = "metadata"
        form = self._form(request)
        # The version names the view: a warm view needs no parsed list of every project.
        doc = await self._services.metacache.current(
            self._index, RootParser(), ecosystem="pypi", accept=negotiation.UPSTREAM_ACCEPT
        )
        base = self._pypi_base(request)
        key = ("pypi-root", doc.version, form, base)
        view = await self._cached_view(key, self._render_root, doc, form, base=base)
        return responses.respond(request, view, now=self._services.clock.now(), vary=VARY)

    async def _render_root(
        self, key: Hashable, doc: CachedDocument[None], form: Form, base: str
    ) -> Rendered:
        projects: tuple[str, ...] = await self._services.metacache.parsed(doc, RootParser())
        now = self._services.clock.now()

        def finish() -> Rendered:
            return responses.render(
                simple.render_root(projects, form, base),
                content_type=negotiation.CONTENT_TYPES[form],
                form=form,
                last_modified=now,
            )

        # Rendering and compressing (gzip and brotli) a big index takes CPU: off the loop.
        if len(projects) >= RENDER_IN_THREAD_PROJECTS:
            return await asyncio.to_thread(finish)
        return finish()

    async def _serve_page(self, request: web.Request, project: str) -> web.StreamResponse:
        request[REQUEST_KIND] = "metadata"
        form = self._form(request)
        copy = await self._page(project)
        page, version = copy.page, copy.version
        base = self._pypi_base(request)
        lacking = self._lacks_metadata(page, version)
        # A wheel cached since the view was rendered changes it, in every worker process.
        derived = await self._derived.generation(project) if lacking else None
        policy_version = self._services.policy.version
        key = ("pypi", project, version, policy_version, form, base, derived)
        if not lacking and self._services.rendered.caches_base(base):
            # A page waiting for derived metadata changes when another worker derives it:
            # only a page that waits for nothing (for a base whose views are kept at all) may
            # be answered again by the hot path.
            request[REPLAY_SOURCE] = ReplaySource(
                ecosystem="pypi",
                policy_version=policy_version,
                fresh_until=copy.fresh_until,
                document=copy.stamp,
                upstream_size=copy.size,
            )
        view = await self._cached_view(key, self._render_page, page, form, lacking, base=base)
        return responses.respond(request, view, now=self._services.clock.now(), vary=VARY)

    def _lacks_metadata(self, page: ProjectPage, version: str) -> bool:
        lacking = self._lacking.get((page.project, version))
        if lacking is None:
            lacking = simple.lacks_metadata(page)
            self._lacking.put((page.project, version), lacking)
        return lacking

    async def _render_page(
        self, key: Hashable, page: ProjectPage, form: Form, lacking: bool, base: str
    ) -> Rendered:
        services = self._services
        now = services.clock.now()
        view = simple.filter_page(page, services.policy.rules(), now)
        if not view.visible:
            # Not cached (small to filter); says why rather than an empty page.
            raise NotFound(simple.no_visible_file_message(page.project, view)).holding(
                view.quarantined
            )
        derived = await self._derived.declared(page.project) if lacking else None
        headers: dict[str, str] = {}
        notice = simple.render_notice(page.project, view)
        if notice is not None:
            headers["X-Mirror-Notice"] = notice
        valid_until = self._valid_until(view.valid_until)

        def finish() -> Rendered:
            return responses.render(
                simple.render_page(page, view, form, base, derived),
                content_type=negotiation.CONTENT_TYPES[form],
                form=form,
                valid_until=valid_until,
                last_modified=now,
                headers=headers,
                held=holds.quarantined(view.quarantined),
            )

        # Rendering and compressing (gzip and brotli) a big page takes CPU: off the loop.
        if len(page.files) >= RENDER_IN_THREAD_FILES:
            return await asyncio.to_thread(finish)
        return finish()

    # files --------------------------------------------------------------------------------

    @staticmethod
    def _lookup(page: ProjectPage, filename: str) -> tuple[DistFile | None, bool]:
        """The file `filename` names, and whether its `.metadata` is asked for."""
        item = page.file(filename)
        if item is not None:
            return item, False
        if filename.endswith(names.METADATA_SUFFIX):
            return page.file(filename[: -len(names.METADATA_SUFFIX)]), True
        return None, False

    async def _serve_file(
        self, request: web.Request, project: str, filename: str
    ) -> web.StreamResponse:
        request[REQUEST_KIND] = "artifact"
        services = self._services
        policy_version = services.policy.version  # before deciding: a change means again
        copy = await self._page(project)
        page = copy.page
        item, metadata = self._lookup(page, filename)
        if item is None:
            # A lockfile may name a file newer than our copy of the page.
            copy = await self._page(project, refresh=True)
            page = copy.page
            item, metadata = self._lookup(page, filename)
        if item is None:
            raise NotFound(f"the upstream index lists no file {filename} for {project}")
        if item.version is None:
            raise Forbidden(simple.unattributed_detail(project, item.filename))
        decided = Decided(
            policy.Subject("pypi", project, item.version, filename=item.filename),
            item.upload_time,
            tuple(page.signals.get(item.filename, ())),
        )
        services.policy.enforce(decided.subject, decided.published_at, decided.signals)
        request[REPLAY_SOURCE] = ReplaySource(
            ecosystem="pypi",
            policy_version=policy_version,
            fresh_until=copy.fresh_until,
            decided=decided,
            document=copy.stamp,
        )
        if metadata and not item.has_metadata:
            return await self._serve_wheel_metadata(request, project, item)
        ref = self._file_ref(project, item, item.version, metadata=metadata)
        response = await services.artifacts.serve(request, ref)
        if not metadata and not item.has_metadata and request.method == "GET":
            # Its METADATA, for the next resolver that reads this project's page. A GET of
            # the whole file may still be storing it; a range only if it is cached.
            self._derived.derive_soon(ref, wait_for_download="Range" not in request.headers)
        return response

    async def _wheel_metadata(self, project: str, item: DistFile) -> bytes | None:
        """The METADATA of the wheel `item` of `project` (the policy check has passed) read
        from the mirror's verified copy, extracted once; None when the mirror has not cached
        the wheel (or `item` is no wheel, or it has no readable METADATA). Raises what
        serving the wheel would (a cached copy that no longer matches the declared digest)."""
        found = await self._wheel_metadata_file(project, item)
        return found.data if found is not None else None

    async def _wheel_metadata_file(
        self, project: str, item: DistFile, *, fetch: bool = False
    ) -> MetadataFile | None:
        """`_wheel_metadata` with its sha256; `fetch`: download the wheel first when it is
        not cached."""
        if item.version is None or not item.digests():
            return None
        ref = self._file_ref(project, item, item.version, metadata=False)
        return await self._derived.metadata(ref, fetch=fetch)

    async def _serve_wheel_metadata(
        self, request: web.Request, project: str, item: DistFile
    ) -> web.StreamResponse:
        """`.metadata` of a wheel whose upstream declares none: the METADATA of the cached
        wheel, as the page declares it; never a wheel download for metadata the page does
        not declare (the client then reads the wheel itself)."""
        found = await self._wheel_metadata_file(project, item)
        if found is None and item.sha256 in await self._derived.declared(project):
            # Declared, but the wheel and its METADATA were evicted since: fetch the wheel.
            found = await self._wheel_metadata_file(project, item, fetch=True)
        if found is None:
            raise NotFound(
                f"the upstream index declares no metadata file for {item.filename}, and the "
                "mirror has not cached the wheel to read it from"
            )
        headers = {
            "Content-Type": FILE_TYPE,
            "Cache-Control": ARTIFACT_CACHE_CONTROL,
            "ETag": f'"{found.sha256}"',
        }
        if not_modified(request, found.sha256):
            return web.Response(status=304, headers=headers)
        return web.Response(body=found.data, headers=headers)

    @staticmethod
    def _file_ref(project: str, item: DistFile, version: str, *, metadata: bool) -> ArtifactRef:
        """What a file of the index of `version` (or, `metadata`, its PEP 658 metadata)
        stands for."""
        if metadata:
            if not item.has_metadata:
                raise NotFound(f"the upstream index declares no metadata file for {item.filename}")
            return ArtifactRef(
                ecosystem="pypi",
                package=project,
                version=version,
                filename=item.filename + names.METADATA_SUFFIX,
                upstream_url=item.url + names.METADATA_SUFFIX,
                digests=item.metadata_digests(),
                content_type=FILE_TYPE,
                published_at=item.upload_time,
            )
        digests = item.digests()
        if not digests:
            raise BadUpstreamDocument(
                f"the upstream index declares no sha256 for {item.filename}, so the mirror "
                "cannot verify it and does not serve it"
            )
        return ArtifactRef(
            ecosystem="pypi",
            package=project,
            version=version,
            filename=item.filename,
            upstream_url=item.url,
            digests=digests,
            content_type=FILE_TYPE,
            size=item.size,
            published_at=item.upload_time,
        )

    async def warm_refs(self, package: str, version: str) -> list[ArtifactRef]:
        """Every file of `package version` the policy lets through, each with its PEP 658
        metadata when the index declares it (`Ecosystem.warm_refs`): what pip or uv may ask
        for, whatever the platform. A file the policy holds is left out (PyPI decides file
        by file); none left is refused as a request for one of them would be."""
        project = names.parse_project(package).normalized
        page, files = await self._version_files(project, version)
        decisions = [(item, self._decide(page, item)) for item in files]
        shown = [item for item, decision in decisions if decision.visible]
        if not shown:
            refused = policy.refusal([decision for _, decision in decisions])
            raise Held.from_decision(refused or decisions[0][1])
        refs: list[ArtifactRef] = []
        for item in shown:
            item_version = item.version or version  # attributed: _files_of keeps no other
            ref = self._file_ref(project, item, item_version, metadata=False)
            refs.append(ref)
            if item.has_metadata:
                refs.append(self._file_ref(project, item, item_version, metadata=True))
            else:
                # A warmed wheel gets its METADATA declared as a client's download would
                # (the extraction joins the warm's own download: one fetch).
                self._derived.derive_soon(ref, wait_for_download=True)
        return refs

    async def review_refs(self, package: str, version: str) -> list[ArtifactRef]:
        """Every wheel and sdist of `package version` the upstream index lists, whatever the
        policy says of them (`Ecosystem.review_refs`); no metadata files."""
        project = names.parse_project(package).normalized
        _page, files = await self._version_files(project, version)
        # A file without a declared sha256 cannot be verified: left out, as it is never served.
        return [
            self._file_ref(project, item, item.version or version, metadata=False)
            for item in files
            if item.digests()
        ]

    # JSON API ---------------------------------------------------------------------------

    def _api_url(self, project: str, version: str | None = None) -> str | None:
        """The upstream JSON API URL of a project (or one release); None when the upstream
        has no JSON API (its simple URL does not end in /simple/)."""
        if self._api is None:
            return None
        return names.json_api_url(self._api, project, version)

    async def _optional_api(
        self,
        url: str | None,
        project: str,
        *,
        parsed: bool = True,
        refresh: Refresh = False,
        missing: str | None = None,
    ) -> CachedDocument[Any] | None:
        """The upstream JSON API document at `url` (`parsed`: an ApiDocument; else only its
        bytes and version, as `MetaCache.current`), or None when the upstream has none: no
        JSON API, or a 404. A 404 is remembered for cache.negative_ttl, so the upstream is
        asked once per that period, not per request; it is logged then (a WARNING saying
        `missing` when given: what the answer lacks without it; else at DEBUG: an index
        without this document is normal). Other upstream errors propagate."""
        if url is None:
            return None
        metacache = self._services.metacache
        accept = jsonapi.API_JSON_TYPE
        if refresh != "urgent":
            try:
                metacache.raise_if_absent(url, ecosystem="pypi", accept=accept)
            except UpstreamNotFound:
                return None  # asked, and logged, less than negative_ttl ago
        parser = ApiParser(project, url, self._file_hosts)
        try:
            if parsed:
                return await metacache.get(
                    url, parser, ecosystem="pypi", accept=accept, refresh=refresh
                )
            return await metacache.current(
                url, parser, ecosystem="pypi", accept=accept, refresh=refresh
            )
        except UpstreamNotFound as exc:
            if missing is not None:
                log.warning("%s: %s", missing, exc)
            else:
                log.debug("the upstream has no JSON API document %s: %s", redact(url), exc)
            return None

    async def _serve_api(self, request: web.Request, project: str) -> web.StreamResponse:
        request[REQUEST_KIND] = "metadata"
        url = self._api_url(project)
        # The version names the view: a warm view needs no parsed API document.
        doc = await self._optional_api(url, project, parsed=False)
        base = self._pypi_base(request)
        page: ProjectPage | None
        source: tuple[str | None, str]
        if doc is not None:
            try:
                copy = await self._page(project)
                page, page_version = copy.page, copy.version
            except MirrorError as exc:
                # The page's signals (provenance) decide the files too: a view made without
                # them is served this once and not kept, so the next request tries again.
                log.info("the JSON API of %s decided without its page's signals: %s", project, exc)
                unkept: Hashable = ("pypi-api", project, doc.version, None, base)
                view = await self._render_api_of(unkept, doc, None, project, url, base)
                return responses.respond(
                    request, view, now=self._services.clock.now(), vary=VARY, ceiling=API_MAX_AGE
                )
            source = (doc.version, "page " + page_version)
        else:
            # No JSON API upstream: the document is composed from the simple index.
            copy = await self._page(project)
            page, page_version = copy.page, copy.version
            source = (None, "page " + page_version)
        # The page's version names the view too: its signals decide the files.
        key = ("pypi-api", project, source, self._services.policy.version, base)
        view = await self._cached_view(key, self._render_api_of, doc, page, project, url, base=base)
        return responses.respond(
            request, view, now=self._services.clock.now(), vary=VARY, ceiling=API_MAX_AGE
        )

    async def _render_api_of(
        self,
        key: Hashable,
        doc: CachedDocument[None] | None,
        page: ProjectPage | None,
        project: str,
        url: str | None,
        base: str,
    ) -> Rendered:
        """`page`: the simple page whose signals decide the files (None: it cannot be had
        now, and the document's own signals decide)."""
        if doc is None or url is None:
            if page is None:
                page = (await self._page(project)).page
            api = jsonapi.document_from_page(page)
        else:
            api = await self._services.metacache.parsed(
                doc, ApiParser(project, url, self._file_hosts)
            )
        return await self._render_api(key, api, page, base)

    async def _page_or_none(self, project: str) -> ProjectPage | None:
        """The simple page of `project`, or None (logged) when it cannot be had now."""
        try:
            page = (await self._page(project)).page
        except MirrorError as exc:
            log.info("the JSON API of %s decided without its page's signals: %s", project, exc)
            return None
        return page

    async def _render_api(
        self, key: Hashable, api: ApiDocument, page: ProjectPage | None, base: str
    ) -> Rendered:
        services = self._services
        # The page's signals for the files it lists (provenance is only there), so a file is
        # decided alike by both answers; the document's own when the page cannot be had.
        signals = jsonapi.api_signals(api, page)
        now = services.clock.now()
        view = jsonapi.filter_api(api, services.policy.rules(), now, signals)
        if view.latest is None:
            raise NotFound(jsonapi.api_nothing_visible_message(api.project, view)).holding(
                decision for decisions in view.held.values() for decision in decisions
            )
        release_document: ApiDocument | None = None
        metadata: CoreMetadata | None = None
        complete = True
        if jsonapi.info_for(api, view.latest) is None:
            # The upstream's `info` is of another (held) release: this release's own
            # per-version document when the upstream has one, else composed.
            try:
                release = await self._optional_api(
                    self._api_url(api.project, view.latest), api.project
                )
            except MirrorError as exc:
                log.info("no per-version document of %s %s: %s", api.project, view.latest, exc)
                release, complete = None, False
            if release is not None and jsonapi.info_for(release.parsed, view.latest):
                release_document = release.parsed
            else:
                metadata, found = await self._release_metadata(api.project, view.latest)
                complete = complete and found
        body = jsonapi.render_api_project(
            api,
            view,
            base,
            release_document.document if release_document is not None else None,
            metadata,
        )
        return await self._api_view(
            body,
            "api",
            jsonapi.render_notice(api.project, view),
            view.valid_until,
            complete,
            jsonapi.held_versions(view),
        )

    async def _api_view(
        self,
        body: bytes,
        form: str,
        notice: str | None,
        valid_until: datetime | None,
        complete: bool,
        held: Sequence[HeldSubject] = (),
    ) -> Rendered:
        """A JSON API answer with its notice. One whose `info` lacks what an upstream failure
        kept from it (not what the upstream does not have) is kept INCOMPLETE_INFO_LIFETIME
        at most, so the next request after that tries again."""
        now = self._services.clock.now()
        until = self._valid_until(valid_until)
        if not complete:
            retry = now + INCOMPLETE_INFO_LIFETIME
            until = retry if until is None else min(until, retry)
        return await responses.render_soon(
            body,
            content_type=jsonapi.API_JSON_TYPE,
            form=form,
            valid_until=until,
            last_modified=now,
            headers={"X-Mirror-Notice": notice} if notice is not None else {},
            held=held,
        )

    async def _release_metadata(
        self, project: str, release: str
    ) -> tuple[CoreMetadata | None, bool]:
        """The core metadata of `project` `release` from one of its files the policy lets
        through (a wheel's before an sdist's: installers read the wheel's), and whether the
        answer is final (False: an upstream failure kept the metadata from us this time).
        None when no allowed file has any (or none that parses and names this release)."""
        page = (await self._page(project)).page
        files = [item for item in self._files_of(page, release) if self._decide(page, item).visible]
        files.sort(key=lambda item: not names.is_wheel(item.filename))
        final = True
        tried = 0
        for item in files:
            if tried >= METADATA_FILES_TRIED:
                break
            try:
                raw = await self._core_metadata(project, item)
            except MirrorError as exc:
                log.info("no core metadata of %s from the upstream: %s", item.filename, exc)
                final, tried = False, tried + 1
                continue
            if raw is None:
                if names.is_wheel(item.filename) and not item.has_metadata:
                    final = False  # its METADATA can be read once a client fetched the wheel
                continue
            tried += 1
            try:
                metadata = coremetadata.parse_core_metadata(raw, item.filename)
            except BadUpstreamDocument as exc:
                log.warning("%s", exc)
                continue
            if jsonapi.metadata_describes(metadata, project, release):
                return metadata, True
            log.warning(
                "the core metadata of %s names %s %s, not %s %s: not used",
                item.filename,
                metadata.name,
                metadata.version,
                project,
                release,
            )
        return None, final

    async def _core_metadata(self, project: str, item: DistFile) -> bytes | None:
        """The core metadata bytes of `item` (a file the policy lets through), verified; None
        when none can be had. Sources, in order:
        1. the `.metadata` file the upstream declares (PEP 658/714), fetched, verified and
           cached like any file of the index (`artifacts.store`);
        2. for a wheel the upstream declares none for, METADATA read from the mirror's
           verified copy of the wheel (`_wheel_metadata`; None until the wheel is cached:
           a JSON API request never downloads a whole wheel).
        Raises MirrorError when a declared file cannot be had now (upstream down,
        integrity): that is not "none"."""
        if item.version is None:
            return None
        if not item.has_metadata:
            return await self._wheel_metadata(project, item)
        services = self._services
        ref = self._file_ref(project, item, item.version, metadata=True)
        for _attempt in range(2):
            entry, _cached = await services.artifacts.store(ref)
            if entry.size > coremetadata.MAX_BYTES:
                raise BadUpstreamDocument(
                    f"the core metadata of {item.filename} is {entry.size} bytes, more than "
                    f"the {coremetadata.MAX_BYTES} the mirror reads"
                )
            try:
                return await services.blobs.read_verified(entry)
            except BlobVanished:
                # Evicted or damaged since: the store forgets it, and the next try fetches.
                services.blobs.forget(entry.key)
        return None

    async def _version_document(
        self, project: str, version: str
    ) -> tuple[ApiDocument, ProjectPage | None]:
        """The files of `project` `version` as a per-version document: the upstream's own;
        else cut from its project document; else composed from the simple index (an index
        with no JSON API). NotFound when none lists a file of that release. With it the
        simple page whose signals decide the files (None: it cannot be had now)."""
        own = await self._optional_api(self._api_url(project, version), project)
        if own is not None:
            return own.parsed, await self._page_or_none(project)
        whole = await self._optional_api(self._api_url(project), project)
        page: ProjectPage | None
        if whole is not None:
            api: ApiDocument = whole.parsed
            page = await self._page_or_none(project)
        else:
            page = (await self._page(project)).page
            api = jsonapi.document_from_page(page)
        cut = jsonapi.release_document(api, version)
        if cut is None:
            raise NotFound(f"the upstream index has no release {version} of {project}")
        return cut, page

    async def _serve_api_version(
        self, request: web.Request, project: str, version: str
    ) -> web.StreamResponse:
        request[REQUEST_KIND] = "metadata"
        services = self._services
        api, page = await self._version_document(project, version)
        signals = jsonapi.api_signals(api, page)
        now = services.clock.now()
        visible, hidden = jsonapi.decide_api_version(
            api, services.policy.rules(), now, version, signals
        )
        if not visible:
            refused = policy.refusal(hidden)
            if refused is not None:
                raise Held.from_decision(refused)
            raise NotFound(f"{project} {version} has no files upstream")
        metadata: CoreMetadata | None = None
        complete = True
        if jsonapi.info_for(api, version) is None:
            metadata, complete = await self._release_metadata(project, version)
        view = jsonapi.version_view(version, visible, hidden)
        rendered = await self._api_view(
            jsonapi.render_api_version(api, version, visible, self._pypi_base(request), metadata),
            "api-version",
            jsonapi.render_notice(project, view),
            view.valid_until,
            complete,
            jsonapi.held_versions(view),
        )
        return responses.respond(request, rendered, now=now, vary=VARY, ceiling=API_MAX_AGE)

    # Ecosystem: coverage ------------------------------------------------------------------

    async def known_versions(self, package: str, *, fetch: bool) -> tuple[str, ...] | None:
        """The versions of the files on the upstream project page, held and blocked ones
        included (`Ecosystem.known_versions`). `fetch` asks the upstream for the current
        page; otherwise through the cache."""
        page = (
            await self._page(
                names.parse_project(package).normalized, refresh="urgent" if fetch else False
            )
        ).page
        return tuple(dict.fromkeys(item.version for item in page.files if item.version))


@dataclass(frozen=True, slots=True)
class _PageCopy:
    """The upstream page of a project as served now: `version` names its bytes (and those
    of the JSON API document that gave it upload times), `fresh_until` when it is due for
    revalidation, `size` its bytes (what a hit saved upstream), `stamp` which copy it is."""

    page: ProjectPage
    version: str
    fresh_until: datetime
    size: int
    stamp: DocumentStamp


def _canonical(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def _estimated_size(held: tuple[object, int]) -> int:
    return held[1]
