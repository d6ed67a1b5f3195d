"""The npm adapter's HTTP side: packuments, dist-tags, tarballs and the pass-through `/-/`
endpoints under `/npm/`. Decisions and bytes come from `document` (pure) and the core
services; this module only routes, caches rendered views and raises `mirror.errors`."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web
from yarl import URL

from mirror import holds, policy, responses
from mirror.budget import BudgetedLRU
from mirror.ecosystems.npm import document
from mirror.ecosystems.npm.document import Form, Packument, PackumentParser
from mirror.ecosystems.npm.names import (
    NpmRequest,
    PackageName,
    attestations_path,
    packument_url,
    parse_attestation_spec,
    parse_name,
    parse_request_path,
    search_query,
)
from mirror.errors import (
    BadRequest,
    BadUpstreamDocument,
    NotFound,
    UpstreamError,
)
from mirror.flight import SingleFlight
from mirror.jsondepth import check_depth
from mirror.model import ArtifactRef, Explanation, Rendered
from mirror.pathgate import require_under
from mirror.replay import REPLAY_SOURCE, Decided, ReplaySource
from mirror.requestbody import read_body
from mirror.risk import Signal
from mirror.services import REQUEST_KIND

if TYPE_CHECKING:
    from mirror.metacache import CachedDocument, Refresh
    from mirror.services import Services

PREFIX = "/npm"
TARBALL_TYPE = "application/octet-stream"
# Rendering a big packument takes milliseconds of CPU: do it off the event loop.
RENDER_IN_THREAD_VERSIONS = 200
_READ_METHODS = ("GET", "HEAD")
# The only endpoints under `/-/` relayed to the upstream, by exact path (below `/npm/-/`):
# the mirror builds each upstream URL itself (`_relay_url`); nothing else under `/-/` is relayed.
SEARCH_PATH = "v1/search"
KEYS_PATH = "npm/v1/keys"
ATTESTATIONS_PREFIX = "npm/v1/attestations/"
AUDIT_PATHS = frozenset({"npm/v1/security/advisories/bulk", "npm/v1/security/audits/quick"})
_RELAY_REQUEST_HEADERS = ("npm-command", "npm-session", "User-Agent")
_MAX_RELAY_BYTES = 32 * 1024**2
_PARSE_IN_THREAD_BYTES = 1024**2  # an audit answer can be megabytes: parse it off the loop
# A relayed Cache-Control is kept only when it is this plain (directives, numbers, commas).
_PLAIN_CACHE_CONTROL = re.compile(r"[A-Za-z0-9=,\- ]{1,120}")
MAX_REMEMBERED_REFS = 16_384

ViewForm = Form | str


class NpmRegistry:
    """The `npm` Ecosystem: a registry root at `/npm/` that npm, pnpm and yarn use unchanged."""

    name = "npm"

    def __init__(self, services: Services) -> None:
        upstream = services.config.npm.upstream
        if upstream is None:
            raise ValueError("the npm adapter needs npm.upstream")
        self._services = services
        self._upstream = upstream if upstream.endswith("/") else upstream + "/"
        # What each tarball stands for, per packument version: CI pulls the same few
        # thousand times, and the digests and upstream URL do not change between pulls.
        # Its risk signals are remembered with it (computed when the packument was parsed):
        # deciding a tarball request stays a dict look-up.
        self._refs: BudgetedLRU[tuple[str, str, str], _Tarball] = BudgetedLRU(
            services.memory, "npm tarball refs", _tarball_bytes, max_entries=MAX_REMEMBERED_REFS
        )
        # `/npm/{name}/{version}`: the packument filtered once per document and policy
        # version (and until the clock lets a held version out), never once per request.
        self._version_views: BudgetedLRU[tuple[str, str, int], _VersionView] = BudgetedLRU(
            services.memory, "npm version views", _version_view_bytes
        )
        self._filtering: SingleFlight[tuple[str, str, int], _VersionView] = SingleFlight(
            "npm version view"
        )

    async def close(self) -> None:
        """Nothing of its own runs in the background."""

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            web.route("*", PREFIX, self._root),
            web.route("*", PREFIX + "/", self._root),
            web.route("*", PREFIX + "/{tail:.+}", self._dispatch),
        ]

    # Ecosystem --------------------------------------------------------------------------

    async def explain(self, package: str, version: str) -> Explanation:
        """Why `package@version` is shown or held right now, from the upstream packument."""
        name = parse_name(package)
        doc = await self._packument(name)
        info = doc.parsed.versions.get(version)
        if info is None:
            doc = await self._packument(name, refresh=True)
            info = doc.parsed.versions.get(version)
        if info is None:
            raise NotFound(f"the npm registry has no version {version} of {name.name}")
        decision = self._services.policy.decide(
            policy.Subject("npm", name.name, version),
            info.published_at,
            doc.parsed.signals_of(version),
        )
        return Explanation.of(decision, published_at=info.published_at)

    # routing ----------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.StreamResponse:
        if request.method not in _READ_METHODS:
            raise web.HTTPMethodNotAllowed(request.method, _READ_METHODS)
        return web.json_response({"db_name": "registry", "mirror": "quarantine-mirror"})

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parsed = parse_request_path(request.raw_path, PREFIX)
        if parsed.kind == "special":
            return await self._special(request, parsed.special or "")
        if request.method not in _READ_METHODS:
            raise web.HTTPMethodNotAllowed(request.method, _READ_METHODS)
        package = parsed.package
        if package is None:
            raise BadRequest(f"no package name in {request.path!r}")
        if parsed.kind == "packument":
            return await self._serve_packument(request, package)
        if parsed.kind == "tarball":
            return await self._serve_tarball(request, package, parsed)
        return await self._serve_version(request, package, parsed.version or "")

    async def _special(self, request: web.Request, special: str) -> web.StreamResponse:
        request[REQUEST_KIND] = "metadata"
        path = special.split("?", 1)[0]
        if path == "ping":
            self._allow(request, _READ_METHODS)
            return web.json_response({}, headers={"Cache-Control": "no-store"})
        if path.startswith("package/") and path.endswith("/dist-tags"):
            self._allow(request, _READ_METHODS)
            escaped = path[len("package/") : -len("/dist-tags")]
            tail = parse_request_path(f"{PREFIX}/{escaped}", PREFIX)
            if tail.kind != "packument" or tail.package is None:
                raise BadRequest(f"not a package name: {escaped!r}")
            view = await self._view(request, tail.package, "dist-tags")
            return responses.respond(request, view, now=self._services.clock.now())
        if path in AUDIT_PATHS:
            self._allow(request, ("POST",))
            body = await read_body(request, max_bytes=_MAX_RELAY_BYTES)
            return await self._relay(request, path, body=body)
        if path == SEARCH_PATH:
            self._allow(request, _READ_METHODS)
            query = search_query(request.rel_url.raw_query_string)
            return await self._relay(request, path, query=query)
        if path == KEYS_PATH:
            self._allow(request, _READ_METHODS)
            return await self._relay(request, path)
        if path.startswith(ATTESTATIONS_PREFIX):
            self._allow(request, _READ_METHODS)
            return await self._attestations(request, path[len(ATTESTATIONS_PREFIX) :])
        raise NotFound(
            f"/npm/-/{path[:120]} is not served by this mirror (it serves packages, tarballs, "
            "dist-tags, ping, search, keys, attestations and the audit endpoints; publishing "
            "and login are not supported)"
        )

    @staticmethod
    def _allow(request: web.Request, methods: tuple[str, ...]) -> None:
        if request.method not in methods:
            raise web.HTTPMethodNotAllowed(request.method, methods)

    # packuments -------------------------------------------------------------------------

    async def _packument(
        self, package: PackageName, *, refresh: Refresh = False
    ) -> CachedDocument[Packument]:
        # Always the full document: the abbreviated one has no per-version `time`.
        return await self._services.metacache.get(
            packument_url(self._upstream, package),
            PackumentParser(package),
            ecosystem="npm",
            accept=document.JSON_TYPE,
            refresh=refresh,
        )

    async def _packument_bytes(self, package: PackageName) -> CachedDocument[None]:
        """The packument's bytes and version, parsed only when new from upstream."""
        return await self._services.metacache.current(
            packument_url(self._upstream, package),
            PackumentParser(package),
            ecosystem="npm",
            accept=document.JSON_TYPE,
        )

    def _registry_base(self, request: web.Request) -> str:
        return responses.base_url(request, self._services.config) + PREFIX

    async def _serve_packument(
        self, request: web.Request, package: PackageName
    ) -> web.StreamResponse:
        request[REQUEST_KIND] = "metadata"
        form = document.choose_form(request.headers.get("Accept"))
        view = await self._view(request, package, form)
        return responses.respond(request, view, now=self._services.clock.now())

    async def _view(self, request: web.Request, package: PackageName, form: ViewForm) -> Rendered:
        """The rendered view of `package` in `form` (`full`, `corgi` or `dist-tags`): from
        the rendered cache when warm (no parsing, no filtering), else filtered and rendered
        once for every concurrent request."""
        services = self._services
        # The version alone names the view: a warm view needs no parsed packument (its
        # parsed form may have been dropped to stay within the memory budget).
        doc = await self._packument_bytes(package)
        base = self._registry_base(request)
        policy_version = services.policy.version
        key = ("npm", package.name, doc.version, policy_version, form, base)
        self._replayable(request, doc, policy_version, base)
        return await services.rendered.get_or_render(
            key,
            services.clock.now(),
            lambda: self._render(key, package, doc, form, base),
            cache=services.rendered.caches_base(base),
        )

    async def _render(
        self,
        key: Hashable,
        package: PackageName,
        doc: CachedDocument[None],
        form: ViewForm,
        base: str,
    ) -> Rendered:
        services = self._services
        packument = await services.metacache.parsed(doc, PackumentParser(package))
        now = services.clock.now()
        # The same filtered view `/npm/{name}/{version}` uses: filtered once per document and
        # policy version for every form, off the event loop for big packuments.
        view = (await self._version_view(package, doc.version, packument)).view
        if not view.visible:
            # A 404 (not a cached view) is what makes npm retry with the full Accept.
            raise NotFound(document.no_visible_version_message(packument.package, view)).holding(
                view.quarantined
            )
        chosen: Form | None = None
        if form == "dist-tags":
            content_type = document.JSON_TYPE
        elif form in ("full", "corgi"):
            chosen = "corgi" if form == "corgi" else "full"
            content_type = document.CORGI_TYPE if chosen == "corgi" else document.JSON_TYPE
        else:
            raise ValueError(f"unknown packument form {form!r}")
        headers: dict[str, str] = {}
        notice = document.render_notice(packument.package, view)
        held = holds.quarantined(view.quarantined)
        if notice is not None:
            headers["npm-notice"] = notice
            # npm prints `npm-notice` only for responses it does not store in its HTTP cache
            # (npm-registry-fetch check-response.js skips `x-local-cache` hits and stores);
            # such a view also changes by the clock, so clients should not keep it anyway.
            headers["Cache-Control"] = "no-store"

        def finish() -> Rendered:
            if chosen is None:
                body = document.render_dist_tags(view)
            else:
                body = document.render_packument(packument, view, chosen, base)
            return responses.render(
                body,
                content_type=content_type,
                form=str(form),
                valid_until=view.valid_until,
                last_modified=now,
                headers=headers,
                held=held,
            )

        # Rendering and compressing a big packument takes tens of milliseconds of CPU.
        if chosen is not None and len(packument.versions) >= RENDER_IN_THREAD_VERSIONS:
            return await asyncio.to_thread(finish)
        return finish()

    async def _serve_version(
        self, request: web.Request, package: PackageName, spec: str
    ) -> web.StreamResponse:
        """`GET /npm/{name}/{version|tag}`: one visible manifest (some tools ask for `latest`),
        rendered once per packument version, policy and spec. Only specs that name a visible
        version are kept (at most the packument's versions and tags, within the budget)."""
        request[REQUEST_KIND] = "metadata"
        services = self._services
        doc = await self._packument_bytes(package)
        base = self._registry_base(request)
        policy_version = services.policy.version
        key = ("npm-version", package.name, doc.version, policy_version, spec, base)
        self._replayable(request, doc, policy_version, base)
        view = await services.rendered.get_or_render(
            key,
            services.clock.now(),
            lambda: self._render_version(package, doc, spec, base),
            cache=services.rendered.caches_base(base),
        )
        return responses.respond(request, view, now=services.clock.now())

    async def _render_version(
        self, package: PackageName, doc: CachedDocument[None], spec: str, base: str
    ) -> Rendered:
        services = self._services
        packument = await services.metacache.parsed(doc, PackumentParser(package))
        filtered = await self._version_view(package, doc.version, packument)
        view = filtered.view
        if not view.visible:
            raise NotFound(document.no_visible_version_message(package, view)).holding(
                decision for decision in view.quarantined if decision.version == spec
            )
        version = view.dist_tags.get(spec, spec)
        if version not in filtered.visible:
            raise NotFound(document.version_unavailable_message(package, spec, view)).holding(
                decision for decision in view.quarantined if decision.version == version
            )
        manifest = document.render_manifest(packument, version, base)
        return responses.render(
            manifest, content_type=document.JSON_TYPE, form="version", valid_until=view.valid_until
        )

    async def _version_view(
        self, package: PackageName, doc_version: str, packument: Packument
    ) -> _VersionView:
        """The packument filtered under the current rules: once per (document, policy
        version) for every concurrent request, again only once a held version's quarantine
        ends; off the event loop for big packuments."""
        services = self._services
        key = (package.name, doc_version, services.policy.version)
        now = services.clock.now()
        kept = self._version_views.get(key)
        if kept is not None:
            until = kept.view.valid_until
            if until is None or now < until:
                return kept
            self._version_views.pop(key)  # a held version may have left quarantine by now
        # A new flight takes the rules of this policy version now (`make` is called at
        # once), not when the filter runs.
        return await self._filtering.run(
            key, lambda: self._filter_and_keep(key, packument, services.policy.rules(), now)
        )

    async def _filter_and_keep(
        self, key: tuple[str, str, int], packument: Packument, rules: policy.Rules, now: datetime
    ) -> _VersionView:
        """Filter, and keep the view within the byte budget (even when every waiter left)."""
        filtered = await _filter_versions(packument, rules, now)
        self._version_views.put(key, filtered)
        return filtered

    # tarballs ---------------------------------------------------------------------------

    async def _serve_tarball(
        self, request: web.Request, package: PackageName, parsed: NpmRequest
    ) -> web.StreamResponse:
        request[REQUEST_KIND] = "artifact"
        services = self._services
        file = parsed.file or ""
        # What each tarball stands for is remembered per packument version: CI pulls the
        # same files over and over, and the packument need not be parsed (or even kept
        # parsed in memory) to serve them.
        policy_version = services.policy.version  # before deciding: a change means again
        doc, tarball = await self._tarball_ref(package, file)
        ref = tarball.ref
        self._enforce(package, tarball)
        request[REPLAY_SOURCE] = ReplaySource(
            ecosystem="npm",
            policy_version=policy_version,
            fresh_until=services.metacache.fresh_until(doc),
            document=services.metacache.stamp(doc),
            decided=Decided(
                policy.Subject("npm", package.name, ref.version), ref.published_at, tarball.signals
            ),
        )
        return await services.artifacts.serve(request, ref)

    def _replayable(
        self, request: web.Request, doc: CachedDocument[None], policy_version: int, base: str
    ) -> None:
        """A view of `doc` under `policy_version` for `base` may be answered again by the hot
        path: only for a base whose views the rendered cache keeps (made-up Host values are
        rendered per request and kept nowhere)."""
        services = self._services
        if not services.rendered.caches_base(base):
            return
        request[REPLAY_SOURCE] = services.metacache.view_source(
            doc, ecosystem="npm", policy_version=policy_version
        )

    async def _allowed_tarball(self, package: PackageName, file: str) -> ArtifactRef:
        """What the tarball `file` of `package` stands for, once the policy allows its
        version (Held otherwise): the one way to a tarball, for a client or a pre-warm."""
        tarball = (await self._tarball_ref(package, file))[1]
        self._enforce(package, tarball)
        return tarball.ref

    def _enforce(self, package: PackageName, tarball: _Tarball) -> None:
        ref = tarball.ref
        subject = policy.Subject("npm", package.name, ref.version)
        self._services.policy.enforce(subject, ref.published_at, tarball.signals)

    async def _tarball_ref(
        self, package: PackageName, file: str
    ) -> tuple[CachedDocument[None], _Tarball]:
        """What the tarball `file` of `package` stands for, as the packument (`doc`, also
        returned) names it, and its version's risk signals (no policy applied:
        `_allowed_tarball` applies it)."""
        doc = await self._packument_bytes(package)
        tarball = self._refs.get((package.name, doc.version, file))
        if tarball is None:
            tarball = await self._find_tarball(package, doc, file)
        return doc, tarball

    async def _find_tarball(
        self, package: PackageName, doc: CachedDocument[None], file: str
    ) -> _Tarball:
        packument = await self._services.metacache.parsed(doc, PackumentParser(package))
        doc_version = doc.version
        version = packument.version_of_file(file)
        if version is None:
            # A lockfile may name a version newer than our copy of the packument.
            fresh = await self._packument(package, refresh=True)
            packument, doc_version = fresh.parsed, fresh.version
            version = packument.version_of_file(file)
        if version is None:
            raise NotFound(f"{package.name} has no tarball {file} upstream")
        manifest = packument.manifest(version)
        ref = ArtifactRef(
            ecosystem="npm",
            package=package.name,
            version=version,
            filename=package.tarball_filename(version),
            upstream_url=self._upstream_tarball(package, version, manifest),
            digests=document.tarball_digests(manifest),
            content_type=TARBALL_TYPE,
            published_at=packument.versions[version].published_at,
        )
        tarball = _Tarball(ref=ref, signals=packument.signals_of(version))
        self._refs.put((package.name, doc_version, file), tarball)
        return tarball

    def _upstream_tarball(self, package: PackageName, version: str, manifest: object) -> str:
        """The upstream's declared tarball URL when its host is allowed, else the canonical
        one on the configured upstream (never a URL the client chose)."""
        declared = None
        if isinstance(manifest, dict) and isinstance(manifest.get("dist"), dict):
            declared = manifest["dist"].get("tarball")
        if isinstance(declared, str) and self._services.upstream.allows(declared, ecosystem="npm"):
            return declared
        return self._upstream.rstrip("/") + package.tarball_path(version)

    # relayed endpoints -----------------------------------------------------------------

    async def _attestations(self, request: web.Request, spec: str) -> web.StreamResponse:
        """A version's attestations, only for a version the policy lets through: a held or
        blocked version gets the tarball's 403, an unknown one a 404."""
        package, version = parse_attestation_spec(spec)
        doc = await self._packument(package)
        info = doc.parsed.versions.get(version)
        if info is None:
            raise NotFound(f"{package.name}@{version} is not available from this mirror")
        self._services.policy.enforce(
            policy.Subject("npm", package.name, version),
            info.published_at,
            doc.parsed.signals_of(version),
        )
        return await self._relay(request, attestations_path(package, version))

    def _relay_url(self, path: str, query: str = "") -> str:
        """The upstream URL of a relayed endpoint (`path` below `/-/`): the configured base
        and a path the mirror built, checked to stay under the base (a base with a path
        prefix is never left)."""
        url = f"{self._upstream}-/{path}" + (f"?{query}" if query else "")
        return require_under(url, self._upstream)

    async def _relay(
        self, request: web.Request, path: str, *, query: str = "", body: bytes = b""
    ) -> web.StreamResponse:
        """Relay one of the fixed endpoints: search, keys, attestations (GET) or an audit
        (POST; `body` already decoded from its Content-Encoding, bounded). The answer must be
        JSON from that very path and is never a package document; it goes out as
        `application/json`."""
        url = self._relay_url(path, query)
        method = "POST" if request.method == "POST" else "GET"  # a HEAD is answered from a GET
        headers = _pick_headers(request.headers, _RELAY_REQUEST_HEADERS)
        headers["Accept"] = document.JSON_TYPE
        if method == "POST":
            headers["Content-Type"] = document.JSON_TYPE
        answer = await self._services.upstream.forward(
            method, url, ecosystem="npm", body=body, headers=headers, max_bytes=_MAX_RELAY_BYTES
        )
        what = f"/npm/-/{path}"
        if answer.status == 404:
            raise NotFound(f"the upstream registry has nothing at {what}")
        # Transient (429, 500, 502-504): a 503 with the upstream's Retry-After, counted and
        # logged as an upstream failure; clients retry it.
        failure = self._services.upstream.relayed_failure(url, answer, ecosystem="npm")
        if failure is not None:
            raise failure
        if not (200 <= answer.status < 300 or 400 <= answer.status < 500):
            raise UpstreamError(f"the upstream registry answered {what} with {answer.status}")
        if not _same_path(answer.url, url):
            raise BadUpstreamDocument(
                f"the upstream registry redirected {what} elsewhere; such answers are not relayed"
            )
        try:
            if len(answer.body) > _PARSE_IN_THREAD_BYTES:
                parsed = await asyncio.to_thread(_parse_relayed, answer.body, what)
            else:
                parsed = _parse_relayed(answer.body, what)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadUpstreamDocument(
                f"the upstream registry answered {what} with something that is not JSON"
            ) from None
        if method == "GET" and _looks_like_package_document(parsed):
            raise BadUpstreamDocument(
                f"the upstream registry answered {what} with a package document; not relayed"
            )
        relayed = {"Content-Type": document.JSON_TYPE}
        cache_control = answer.headers.get("Cache-Control")
        if cache_control and _PLAIN_CACHE_CONTROL.fullmatch(cache_control):
            relayed["Cache-Control"] = cache_control
        return web.Response(status=answer.status, body=answer.body, headers=relayed)

    # Ecosystem: pre-warming ---------------------------------------------------------------

    async def warm_refs(self, package: str, version: str) -> list[ArtifactRef]:
        """The tarball of `package@version` (`Ecosystem.warm_refs`): the file a client asks
        for, found as for its request, the policy applied as for its request."""
        name = parse_name(package)
        ref = await self._allowed_tarball(name, name.tarball_filename(version))
        if ref.version != version:
            raise NotFound(f"{name.name} has no tarball of {version} upstream")
        return [ref]

    async def review_refs(self, package: str, version: str) -> list[ArtifactRef]:
        """The tarball of `package@version` as the packument names it, whatever the policy
        says of it (`Ecosystem.review_refs`)."""
        name = parse_name(package)
        ref = (await self._tarball_ref(name, name.tarball_filename(version)))[1].ref
        if ref.version != version:
            raise NotFound(f"{name.name} has no tarball of {version} upstream")
        return [ref]

    # Ecosystem: coverage ------------------------------------------------------------------

    async def known_versions(self, package: str, *, fetch: bool) -> tuple[str, ...] | None:
        """The versions of the upstream packument, held and blocked ones included
        (`Ecosystem.known_versions`). `fetch` asks the upstream for the current packument
        (a new rule must see a version published a minute ago); otherwise through the cache."""
        doc = await self._packument(parse_name(package), refresh="urgent" if fetch else False)
        return tuple(doc.parsed.versions)


@dataclass(frozen=True, slots=True)
class _Tarball:
    """A tarball as the packument names it, with its version's risk signals."""

    ref: ArtifactRef
    signals: tuple[Signal, ...]


@dataclass(frozen=True, slots=True)
class _VersionView:
    view: document.PackumentView
    visible: frozenset[str]


async def _filter_versions(
    packument: Packument, rules: policy.Rules, now: datetime
) -> _VersionView:
    if len(packument.versions) >= RENDER_IN_THREAD_VERSIONS:
        view = await asyncio.to_thread(document.filter_packument, packument, rules, now)
    else:
        view = document.filter_packument(packument, rules, now)
    return _VersionView(view=view, visible=frozenset(view.visible))


def _version_view_bytes(filtered: _VersionView) -> int:
    """What a kept filter costs: each visible version twice (tuple and set), each held one
    with its decision (about 225 bytes, measured with tracemalloc; its sentence is not kept),
    by estimate."""
    view = filtered.view
    visible = sum(len(version) + 160 for version in view.visible)
    held = sum(len(held.version) + 256 for held in (*view.quarantined, *view.blocked))
    return visible + held + 64 * len(view.dist_tags)


def _tarball_bytes(tarball: _Tarball) -> int:
    """What a remembered tarball ref costs: its strings (its signals' sentences included) and
    a fixed share for the objects."""
    ref = tarball.ref
    strings = len(ref.package) + len(ref.version) + len(ref.filename) + len(ref.upstream_url)
    signals = sum(len(signal.detail) + 128 for signal in tarball.signals)
    return strings + sum(len(digest.hexdigest) for digest in ref.digests) + signals + 576


def _same_path(answered: str, asked: str) -> bool:
    """Whether the upstream's final URL is the one asked for (no redirect to another path)."""
    final, wanted = URL(answered), URL(asked)
    return (final.host, final.port, final.raw_path.lower()) == (
        wanted.host,
        wanted.port,
        wanted.raw_path.lower(),
    )


def _looks_like_package_document(value: object) -> bool:
    """A packument or a version manifest: what the relay must never hand out unfiltered."""
    if not isinstance(value, dict):
        return False
    return "dist-tags" in value or "versions" in value or isinstance(value.get("dist"), dict)


def _pick_headers(headers: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    return {name: headers[name] for name in names if name in headers}


def _parse_relayed(body: bytes, what: str) -> object:
    """A relayed answer, parsed only to see what it is (it goes out as it came)."""
    check_depth(body, f"the upstream registry's answer to {what}")
    return json.loads(body)
