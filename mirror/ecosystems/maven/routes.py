"""The Maven adapter's HTTP side: a repository root at `/maven/` for Maven and Gradle.
Decisions and bytes come from `paths`/`document` (pure) and the core services; this module
only routes, looks publish times up lazily, caches rendered views and raises `mirror.errors`.

Publish-time look-ups (a HEAD of a version's `.pom`) are bounded: one per GAV at a time, at
most LOOKUP_CONCURRENCY in flight per worker, at most LOOKUPS_PER_REQUEST waited for by one
metadata request (the rest of the walk goes on in the background; those versions are held
meanwhile), each answer kept in shared state for every worker (through `ServingState`, so a
slow state never holds a request up past `state.timeout`).

Signature signals (`signals`): the `.pom.asc` of each version whose publish time a metadata
render knows (at most SIGNATURE_CHECKS) and of the version before it, fetched as immutable
companions (LOOKUP_CONCURRENCY at a time), read by `mirror.openpgp`, the result kept per GAV;
an `.asc` upstream could not give counts as `signature-missing` and is asked again.

What is served, deliberately:
- release files `{g}/{a}/{v}/{a}-{v}[-classifier].{ext}` from the blob store, verified against
  the upstream `.sha1` (and `.sha256` when upstream has one) before they are stored; their
  `.sha1/.md5/.sha256/.sha512` and `.asc` companions are relayed as small documents (at most
  `document.MAX_COMPANION_BYTES`), kept for good once they parse (release files never
  change: never revalidated, and an absent optional one remembered for a day,
  `metacache.IMMUTABLE_NEGATIVE_TTL`; an absent `.sha1`, which a file needs, only for
  `cache.negative_ttl`: some repositories upload a file before its checksums). A file that
  does not match the checksums kept for it is refused (502) and those checksums forgotten, so
  the next request asks upstream for them again (the first-seen digest pins still refuse a
  file whose bytes changed); every
  file of a hidden version is 403 with the sentence in the reason phrase (Maven prints it and
  does not cache it, so builds recover without `-U` when the quarantine ends);
- `{g}/{a}/maven-metadata.xml` always filtered, whatever its `<lastUpdated>` says or lacks
  (hidden versions removed, `<latest>`/`<release>`/`<lastUpdated>` recomputed from visible
  versions, nothing else kept), 404 saying why when no version is visible, its checksum
  files and `X-Checksum-Sha1/-Md5` headers computed from the filtered bytes; group metadata
  (plugin prefixes, no versions) passed through byte for byte;
- SNAPSHOT versions, `{g}/{a}/{v}/maven-metadata.xml` of SNAPSHOTs, directory listings and
  files outside the layout are 404 with a message: this mirror serves releases only (Maven
  Central hosts no SNAPSHOTs), and 404 is what makes Maven and Gradle try the next repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import Hashable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from aiohttp import web

from mirror import holds, notices, openpgp, policy, responses, versions
from mirror.budget import BudgetedLRU
from mirror.clock import add_saturating
from mirror.ecosystems.maven import document, paths, signals
from mirror.ecosystems.maven.paths import MavenPath
from mirror.errors import (
    BadUpstreamDocument,
    Held,
    IntegrityError,
    NotFound,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from mirror.flight import SingleFlight
from mirror.lockfiles.pins import Pin
from mirror.lockfiles.warming import maven_paths
from mirror.model import ArtifactRef, Digest, Explanation, Rendered
from mirror.replay import REPLAY_SOURCE, ReplaySource
from mirror.risk import Signal
from mirror.services import REQUEST_KIND

if TYPE_CHECKING:
    from mirror.services import Services

log = logging.getLogger(__name__)

PREFIX = "/maven"
_READ_METHODS = ("GET", "HEAD")
_VARY = "Accept-Encoding"
# A view built while upstream could not tell a publish time is retried this soon.
RETRY_LOOKUPS_AFTER = timedelta(seconds=30)
# Publish times kept in memory.
_MAX_REMEMBERED = 8192
# Publish-time look-ups (HEADs of `.pom`s) sent upstream at once by one worker.
LOOKUP_CONCURRENCY = 8
# Look-ups one metadata request waits for (in batches of _BATCH_SIZES, then LOOKUP_CONCURRENCY
# at a time); the walk goes on in the background past them, and the versions not looked up
# yet count as unknown (held) until it has.
LOOKUPS_PER_REQUEST = 32
_BATCH_SIZES = (1, 1, 2, 4)
# Artifacts whose walk goes on in the background at once, per worker (more wait for a render).
BACKGROUND_WALKS = 4
# Versions a metadata render checks the signatures of (newest first, among those whose publish
# time was looked up), each against the version before it.
SIGNATURE_CHECKS = LOOKUPS_PER_REQUEST
# A `.pom` the upstream answered without Last-Modified is asked again after this long.
UNKNOWN_RECHECK = timedelta(days=1)
# A `.pom.asc` that could not be fetched is asked again after this long (not per request
# while upstream is failing); one the upstream did not have (404) after UNSIGNED_RECHECK
# while its version is younger than UNKNOWN_RECHECK: some repositories upload the signature
# after the `.pom`, and "not signed" must not stick to a version looked at in between.
SIGNATURE_FAILURE_BACKOFF = timedelta(seconds=30)
UNSIGNED_RECHECK = timedelta(hours=1)
# The state key noting when a GAV's `.pom` had no Last-Modified (a space: never in a GAV).
_NO_TIME_SUFFIX = " (no Last-Modified)"
_CONTENT_TYPES = {
    ".pom": "text/xml",
    ".xml": "text/xml",
    ".jar": "application/java-archive",
    ".war": "application/java-archive",
    ".module": "application/json",
    ".asc": "text/plain",
}


def _content_type(filename: str) -> str:
    suffix = filename[filename.rfind(".") :] if "." in filename else ""
    return _CONTENT_TYPES.get(suffix, "application/octet-stream")


def _http_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
        # An upstream's time is untrusted: one that leaves the calendar in UTC
        # (`Fri, 31 Dec 9999 23:59:59 -2359`) is unknown, which holds the version.
        return moment.astimezone(UTC) if moment.tzinfo is not None else None
    except (TypeError, ValueError, OverflowError):
        return None


class MavenRepository:
    """The `maven` Ecosystem: `<mirror><url>http://HOST:PORT/maven/</url></mirror>`."""

    name = "maven"

    def __init__(self, services: Services) -> None:
        upstream = services.config.maven.upstream
        if upstream is None:
            raise ValueError("the Maven adapter needs maven.upstream")
        self._services = services
        self._upstream = upstream if upstream.endswith("/") else upstream + "/"
        # Publish times never change once known: the hot path skips the state round trip.
        self._published: BudgetedLRU[str, datetime] = BudgetedLRU(
            services.memory, "maven publish times", _moment_bytes, max_entries=_MAX_REMEMBERED
        )
        # GAVs whose `.pom` had no Last-Modified, and when that was found.
        self._timeless: BudgetedLRU[str, datetime] = BudgetedLRU(
            services.memory,
            "maven poms without Last-Modified",
            _moment_bytes,
            max_entries=_MAX_REMEMBERED,
        )
        # What each GAV's `.pom.asc` showed (`signals.Seen`) and until when that holds (None:
        # for good), and each GAV's signature signals with the version they compare with,
        # once both are known for good: a file request of a GAV seen once is a dict look-up.
        self._signatures: BudgetedLRU[str, tuple[signals.Seen, datetime | None]] = BudgetedLRU(
            services.memory, "maven signatures", _seen_bytes, max_entries=_MAX_REMEMBERED
        )
        # `signals.reach` per package under the rules it was worked out with.
        self._reaches: dict[str, timedelta | None] = {}
        self._reaches_of: policy.Rules | None = None
        self._signals: BudgetedLRU[str, tuple[str | None, tuple[Signal, ...]]] = BudgetedLRU(
            services.memory, "maven signature signals", _signals_bytes, max_entries=_MAX_REMEMBERED
        )
        self._signature_lookups: SingleFlight[str, signals.Seen] = SingleFlight("maven signature")
        self._signature_slots = asyncio.Semaphore(LOOKUP_CONCURRENCY)
        # One look-up per GAV at a time, at most LOOKUP_CONCURRENCY upstream.
        self._lookups: SingleFlight[str, datetime | None] = SingleFlight("maven publish time")
        self._head_slots = asyncio.Semaphore(LOOKUP_CONCURRENCY)
        # One background walk per artifact, at most BACKGROUND_WALKS at once.
        self._walks: SingleFlight[str, None] = SingleFlight("maven publish-time walk")

    async def close(self) -> None:
        """Nothing of its own runs in the background."""

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            web.route("*", PREFIX, self._root),
            web.route("*", PREFIX + "/", self._root),
            web.route("*", PREFIX + "/{tail:.*}", self._dispatch),
        ]

    # Ecosystem --------------------------------------------------------------------------

    async def explain(self, package: str, version: str) -> Explanation:
        """Why `g:a` `version` is served or refused right now (publish time = the upstream
        Last-Modified of its `.pom`)."""
        group, artifact = paths.parse_coordinates(package)
        paths.validate_segments(version)
        pom = paths.pom_path(group, artifact, version)
        try:
            published = await self._publish_time(f"{package}:{version}", pom)
        except UpstreamNotFound:
            raise NotFound(f"{package}:{version} does not exist upstream") from None
        shown = await self._file_signals(group, artifact, version)
        decision = self._services.policy.decide(
            policy.Subject("maven", package, version), published, shown
        )
        return Explanation.of(
            decision, published_at=published, detail=_sentence(f"{package}:{version}", decision)
        )

    # routing ----------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.StreamResponse:
        self._allow(request)
        return web.Response(
            text="quarantine-mirror Maven repository: use this URL as a <mirror> in settings.xml\n",
            content_type="text/plain",
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self._allow(request)
        tail = request.raw_path[len(PREFIX) + 1 :].split("?", 1)[0]
        parsed = paths.parse_path(tail)
        if parsed.kind == "metadata":
            return await self._serve_metadata(request, parsed)
        return await self._serve_file(request, parsed)

    @staticmethod
    def _allow(request: web.Request) -> None:
        if request.method not in _READ_METHODS:
            raise web.HTTPMethodNotAllowed(request.method, _READ_METHODS)

    # maven-metadata.xml -----------------------------------------------------------------

    async def _serve_metadata(self, request: web.Request, parsed: MavenPath) -> web.StreamResponse:
        request[REQUEST_KIND] = "metadata"
        now = self._services.clock.now()
        view = await self._metadata_view(request, parsed)
        if parsed.checksum is None:
            return responses.respond(request, view, now=now, vary=_VARY)
        # The same rendered bytes the metadata response carries: never a second view.
        body = document.checksums(view.body)[parsed.checksum].encode()
        companion = responses.render(
            body,
            content_type=document.CHECKSUM_TYPE,
            form=parsed.checksum,
            valid_until=view.valid_until,
            last_modified=view.last_modified,
        )
        return responses.respond(request, companion, now=now, vary=_VARY)

    async def _metadata_view(self, request: web.Request, parsed: MavenPath) -> Rendered:
        services = self._services
        url = self._upstream + parsed.metadata_path
        doc = await services.metacache.get(
            url, document.MetadataParser(parsed.coordinates), ecosystem="maven"
        )
        policy_version = services.policy.version
        key = ("maven", parsed.metadata_path, doc.version, policy_version)
        request[REPLAY_SOURCE] = services.metacache.view_source(
            doc, ecosystem="maven", policy_version=policy_version
        )
        return await services.rendered.get_or_render(
            key,
            services.clock.now(),
            lambda: self._render_metadata(key, parsed, doc.parsed, doc.raw, doc.last_modified),
        )

    async def _render_metadata(
        self,
        key: Hashable,
        parsed: MavenPath,
        metadata: document.MavenMetadata,
        raw: bytes,
        upstream_modified: str | None,
    ) -> Rendered:
        services = self._services
        if not metadata.is_artifact:
            # Group metadata (plugin prefixes) names no versions: relayed byte for byte.
            return await responses.render_soon(
                raw,
                content_type=document.METADATA_TYPE,
                form="metadata",
                last_modified=_http_time(upstream_modified),
                headers=document.checksum_headers(raw),
            )
        coordinates = parsed.coordinates
        rules = services.policy.rules()
        published, complete = await self._publish_times(parsed, metadata, rules)
        shown, checked = await self._metadata_signals(parsed, metadata)
        complete = complete and checked
        now = services.clock.now()
        view = document.filter_metadata(metadata, coordinates, published, rules, now, shown)
        if not view.visible:
            # Not cached (small to filter): a 404 that says why, never a list of nothing or
            # the upstream's own <latest>/<release>.
            raise NotFound(document.nothing_visible_message(coordinates, view)).holding(view.held)
        body = document.render_metadata(metadata, view)
        valid_until = view.valid_until
        if not complete:
            retry = now + RETRY_LOOKUPS_AFTER
            valid_until = retry if valid_until is None else min(valid_until, retry)
        return await responses.render_soon(
            body,
            content_type=document.METADATA_TYPE,
            form="metadata",
            valid_until=valid_until,
            last_modified=now,
            headers=document.checksum_headers(body),
            held=holds.quarantined(view.held),
        )

    async def _publish_times(
        self, parsed: MavenPath, metadata: document.MavenMetadata, rules: policy.Rules
    ) -> tuple[dict[str, datetime | None], bool]:
        """Publish times for the filter, looked up lazily (`document.plan_publish_times`).
        Returns (times, complete); not complete when upstream could not answer a look-up or
        more than LOOKUPS_PER_REQUEST were needed: the versions not looked up count as unknown
        (held), and the walk goes on in the background (`_walk_on`), bounded."""
        coordinates = parsed.coordinates
        ordered = metadata.versions
        now = self._services.clock.now()
        window_start = document.quarantine_window_start(coordinates, ordered, rules, now)
        known = self._known_times(coordinates, ordered)
        position = {version: index for index, version in enumerate(ordered)}
        budget = LOOKUPS_PER_REQUEST
        # One at a time first (the first usually ends the walk, the second nearly always),
        # then more at once: a walk that goes on this far is likely to go on further.
        sizes = iter(_BATCH_SIZES)
        for _ in range(len(ordered) + 1):
            plan = document.plan_publish_times(ordered, metadata.last_updated, window_start, known)
            if plan.lookup is None:
                return dict(plan.published), True
            if budget <= 0:
                self._walk_on(parsed, metadata, window_start)
                break
            size = min(next(sizes, LOOKUP_CONCURRENCY), LOOKUP_CONCURRENCY, budget)
            batch = _next_batch(ordered, position, known, plan.lookup, size)
            budget -= len(batch)
            if not await self._look_up_batch(parsed, batch, known):
                break  # upstream is failing: do not hammer it
        # Incomplete: every version not looked up is unknown (held); unknown times never end
        # the walk, so one more plan gives the final answer.
        for version in ordered:
            known.setdefault(version, None)
        plan = document.plan_publish_times(ordered, metadata.last_updated, window_start, known)
        return dict(plan.published), False

    async def _look_up_batch(
        self, parsed: MavenPath, batch: list[str], known: dict[str, datetime | None]
    ) -> bool:
        """Look `batch` up at once into `known`; False when upstream is failing."""
        coordinates = parsed.coordinates
        answers = await asyncio.gather(
            *(self._publish_time(f"{coordinates}:{v}", self._pom_path(parsed, v)) for v in batch),
            return_exceptions=True,
        )
        failing = False
        for version, answer in zip(batch, answers, strict=True):
            if isinstance(answer, UpstreamUnavailable):
                failing = True
            elif isinstance(answer, BaseException) and not isinstance(answer, UpstreamNotFound):
                raise answer
            else:  # a time, None (no Last-Modified) or absent (listed without a .pom)
                known[version] = answer if isinstance(answer, datetime) else None
        return not failing

    def _known_times(self, coordinates: str, versions: Iterable[str]) -> dict[str, datetime | None]:
        """The publish times this worker already knows (no state round trip, no await)."""
        known: dict[str, datetime | None] = {}
        recheck_after = self._services.clock.now() - UNKNOWN_RECHECK
        for version in versions:
            gav = f"{coordinates}:{version}"
            moment = self._published.get(gav)
            if moment is not None:
                known[version] = moment
                continue
            checked = self._timeless.get(gav)
            if checked is not None and checked > recheck_after:
                known[version] = None
        return known

    @staticmethod
    def _pom_path(parsed: MavenPath, version: str) -> str:
        artifact = parsed.directories[-1]
        return "/".join((*parsed.directories, version, f"{artifact}-{version}.pom"))

    def _walk_on(
        self, parsed: MavenPath, metadata: document.MavenMetadata, window_start: datetime
    ) -> None:
        """Go on with the publish-time walk of one artifact in the background (at most
        BACKGROUND_WALKS artifacts at once, one walk per artifact), LOOKUP_CONCURRENCY
        look-ups at a time; what it finds is stored in shared state like any look-up."""
        coordinates = parsed.coordinates
        if coordinates in self._walks or len(self._walks) >= BACKGROUND_WALKS:
            return
        task = self._walks.start(coordinates, lambda: self._walk(parsed, metadata, window_start))

        def done(finished: asyncio.Task[None]) -> None:
            if not finished.cancelled() and finished.exception() is not None:
                log.error("publish-time walk of %s failed: %r", coordinates, finished.exception())

        task.add_done_callback(done)

    async def _walk(
        self, parsed: MavenPath, metadata: document.MavenMetadata, window_start: datetime
    ) -> None:
        ordered = metadata.versions
        position = {version: index for index, version in enumerate(ordered)}
        known = self._known_times(parsed.coordinates, ordered)
        for _ in range(len(ordered) + 1):
            plan = document.plan_publish_times(ordered, metadata.last_updated, window_start, known)
            if plan.lookup is None:
                return
            batch = _next_batch(ordered, position, known, plan.lookup, LOOKUP_CONCURRENCY)
            if not await self._look_up_batch(parsed, batch, known):
                return  # upstream is failing: a later render starts the walk again

    async def _publish_time(self, gav: str, pom_path: str) -> datetime | None:
        """The upstream Last-Modified of a GAV's `.pom`, cached in shared state forever (a
        `.pom` without one is asked again after UNKNOWN_RECHECK). None when upstream sends
        none. Raises UpstreamNotFound when the `.pom` is absent. One look-up per GAV at a
        time per worker; shared state is never waited on past `state.timeout`."""
        remembered = self._published.get(gav)
        if remembered is not None:
            return remembered
        checked = self._timeless.get(gav)
        if checked is not None and checked > self._services.clock.now() - UNKNOWN_RECHECK:
            return None
        return await self._lookups.run(gav, lambda: self._look_up(gav, pom_path))

    async def _look_up(self, gav: str, pom_path: str) -> datetime | None:
        shared = self._services.artifacts.shared
        cached, timeless = await asyncio.gather(
            shared.get_publish_time("maven", gav),
            shared.get_publish_time("maven", gav + _NO_TIME_SUFFIX),
        )
        if cached is not None:
            self._remember_published(gav, cached)
            return cached
        now = self._services.clock.now()
        if timeless is not None and timeless > now - UNKNOWN_RECHECK:
            self._remember_timeless(gav, timeless)
            return None
        url = self._upstream + pom_path
        # Upstream 404s are remembered by the metadata cache for cache.negative_ttl, whether
        # they answered its GETs or this HEAD: an absent `.pom` probed by every build (or
        # every file of an unknown version) costs one upstream request per negative_ttl.
        metacache = self._services.metacache
        metacache.raise_if_absent(url, ecosystem="maven")
        async with self._head_slots:
            try:
                answer = await self._services.upstream.head(url, ecosystem="maven")
            except UpstreamNotFound as exc:
                metacache.note_absent(url, exc)
                raise
        moment = _http_time(answer.last_modified or answer.headers.get("Last-Modified"))
        if moment is None:
            shared.set_publish_time("maven", gav + _NO_TIME_SUFFIX, now)
            self._remember_timeless(gav, now)
            return None
        shared.set_publish_time("maven", gav, moment)
        self._remember_published(gav, moment)
        return moment

    def _remember_published(self, gav: str, moment: datetime) -> None:
        self._published.put(gav, moment)

    def _remember_timeless(self, gav: str, checked: datetime) -> None:
        self._timeless.put(gav, checked)

    # signatures -------------------------------------------------------------------------

    async def _metadata_signals(
        self, parsed: MavenPath, metadata: document.MavenMetadata
    ) -> tuple[dict[str, tuple[Signal, ...]], bool]:
        """The signature signals of the versions whose publish time was looked up and is
        known (at most SIGNATURE_CHECKS, newest first), each against the version before it in
        Maven order.
        Returns (signals by version, checked); not checked when an `.asc` could not be
        fetched: the view is rendered again soon (RETRY_LOOKUPS_AFTER)."""
        group, artifact = parsed.coordinates.split(":", 1)
        ordered = metadata.versions
        looked_up = self._known_times(parsed.coordinates, ordered)
        # A version without a known publish time is held as unknown whatever it is signed by.
        targets = [
            index
            for index in range(len(ordered) - 1, -1, -1)
            if looked_up.get(ordered[index]) is not None
        ]
        targets = targets[:SIGNATURE_CHECKS]
        found = await asyncio.gather(
            *(
                self._version_signals(
                    group, artifact, ordered[index], ordered[index - 1] if index else None
                )
                for index in targets
            )
        )
        shown: dict[str, tuple[Signal, ...]] = {}
        checked = True
        for index, (version_signals, version_checked) in zip(targets, found, strict=True):
            checked = checked and version_checked
            if version_signals:
                shown[ordered[index]] = version_signals
        return shown, checked

    def _signals_may_matter(self, coordinates: str, published: datetime | None) -> bool:
        """Whether a file of a GAV published at `published` needs its signatures checked
        for its decision: when a `hold` rule names a signature signal, or the version is
        within the reach of an `extend` rule of one (`signals.reach`) and not held longer
        by quarantine anyway. Under rules that only note them (the default), or for older
        files (most of a build's), a file request asks upstream nothing more."""
        rules = self._services.policy.rules()
        package = versions.normalize_package("maven", coordinates)
        reach = self._reach(rules, package)
        if reach is None:
            return True
        if not reach:
            return False
        if published is None:
            return True
        now = self._services.clock.now()
        quarantine = rules.quarantine_age("maven", package)
        # An age of millennia clamps instead of leaving the calendar.
        if quarantine >= reach and published > add_saturating(now, -quarantine):
            return False  # held by quarantine at least as long as a signal could hold it
        return published > add_saturating(now, -reach)

    def _reach(self, rules: policy.Rules, package: str) -> timedelta | None:
        """`signals.reach` of `package`, worked out once per package and rules."""
        if rules is not self._reaches_of or len(self._reaches) >= _MAX_REMEMBERED:
            self._reaches, self._reaches_of = {}, rules
        if package not in self._reaches:
            self._reaches[package] = signals.reach(rules.risk, package)
        return self._reaches[package]

    async def _file_signals(self, group: str, artifact: str, version: str) -> tuple[Signal, ...]:
        """The signature signals of one GAV for its files and explain: what a metadata render
        (or an earlier file) found, else found now against the version before it in the
        upstream metadata. Upstream failing counts as the signal (`signals.unchecked`)."""
        remembered = self._signals.get(f"{group}:{artifact}:{version}")
        if remembered is not None:
            return remembered[1]
        path = "/".join((*group.split("."), artifact, paths.METADATA_FILE))
        try:
            # The parser every metadata fetch uses: a refresh made here is compared with the
            # copy it replaces (takedowns) like one made by a metadata request.
            doc = await self._services.metacache.get(
                self._upstream + path,
                document.MetadataParser(f"{group}:{artifact}"),
                ecosystem="maven",
            )
        except UpstreamNotFound:
            # No metadata: no version to compare with (and nothing kept: it may appear).
            return ()
        except (UpstreamUnavailable, BadUpstreamDocument):
            return (signals.unchecked(version),)
        ordered: tuple[str, ...] = doc.parsed.versions
        earlier = [listed for listed in ordered if listed != version]
        previous = None
        if version in ordered:
            index = ordered.index(version)
            previous = ordered[index - 1] if index else None
        elif earlier:
            # Not listed (yet): compared with the newest version below it.
            below = document.maven_order([*earlier, version])
            index = below.index(version)
            previous = below[index - 1] if index else None
        found, _checked = await self._version_signals(group, artifact, version, previous)
        return found

    async def _version_signals(
        self, group: str, artifact: str, version: str, previous: str | None
    ) -> tuple[tuple[Signal, ...], bool]:
        """(signals, checked) of `version` against `previous`; kept per GAV once both
        signatures were checked."""
        gav = f"{group}:{artifact}:{version}"
        remembered = self._signals.get(gav)
        if remembered is not None and remembered[0] == previous:
            return remembered[1], True
        if previous is None:
            self._signals.put(gav, (None, ()))
            return (), True
        seen, previous_seen = await asyncio.gather(
            self._signature(group, artifact, version), self._signature(group, artifact, previous)
        )
        found = signals.signature_signals(version, seen, previous, previous_seen)
        checked = seen.checked and previous_seen.checked
        if checked and self._for_good(gav) and self._for_good(f"{group}:{artifact}:{previous}"):
            self._signals.put(gav, (previous, found))
        return found, checked

    def _for_good(self, gav: str) -> bool:
        """Whether what the `.pom.asc` of `gav` showed is known for good."""
        remembered = self._signatures.get(gav)
        return remembered is not None and remembered[1] is None

    async def _signature(self, group: str, artifact: str, version: str) -> signals.Seen:
        """What the `.pom.asc` of a GAV shows, kept for good once signed; a 404 (not signed)
        kept for good once the version is older than UNKNOWN_RECHECK, else UNSIGNED_RECHECK;
        `signals.UNCHECKED` while upstream fails, kept SIGNATURE_FAILURE_BACKOFF.
        One look-up per GAV at a time, at most LOOKUP_CONCURRENCY at once."""
        gav = f"{group}:{artifact}:{version}"
        remembered = self._signatures.get(gav)
        if remembered is not None:
            seen, until = remembered
            if until is None or self._services.clock.now() < until:
                return seen
        pom = paths.pom_path(group, artifact, version)
        return await self._signature_lookups.run(
            gav, lambda: self._look_up_signature(gav, self._upstream + pom + ".asc")
        )

    async def _look_up_signature(self, gav: str, url: str) -> signals.Seen:
        now = self._services.clock.now()
        published = self._published.get(gav)
        settled = published is not None and published <= now - UNKNOWN_RECHECK
        until: datetime | None = None
        async with self._signature_slots:
            try:
                # The parser `_serve_companion` relays it with: one copy, parsed once. A
                # young version's 404 is remembered by the metacache for `negative_ttl` only
                # (`required`): its signature may be uploaded after it.
                doc = await self._services.metacache.get(
                    url,
                    document.parse_signature,
                    ecosystem="maven",
                    immutable=True,
                    required=not settled,
                    max_bytes=document.MAX_COMPANION_BYTES,
                )
            except UpstreamNotFound:
                seen = signals.UNSIGNED
                until = None if settled else now + UNSIGNED_RECHECK
            except (UpstreamUnavailable, BadUpstreamDocument):
                seen, until = signals.UNCHECKED, now + SIGNATURE_FAILURE_BACKOFF
            else:
                issuer = openpgp.signature_issuer(doc.raw)
                seen = signals.seen_of(issuer.key_id if issuer is not None else None)
        self._signatures.put(gav, (seen, until))
        return seen

    # files ------------------------------------------------------------------------------

    async def _serve_file(self, request: web.Request, parsed: MavenPath) -> web.StreamResponse:
        request[REQUEST_KIND] = "artifact"
        if parsed.checksum is not None or parsed.signature:
            await self._allowed(parsed)
            return await self._serve_companion(request, parsed, self._upstream + parsed.path)
        services = self._services
        policy_version = services.policy.version  # before deciding
        ref = await self._file_ref(parsed)
        # Not decided again on a replay: whether its signals must be looked up depends on the
        # rules, so under new rules the slow path decides (`decided` None drops the entry).
        # Its publish time and digests are immutable; kept as long as fresh metadata is.
        request[REPLAY_SOURCE] = ReplaySource(
            ecosystem="maven",
            policy_version=policy_version,
            fresh_until=services.metacache.fresh_from(services.clock.now()),
        )
        try:
            return await services.artifacts.serve(request, ref)
        except IntegrityError:
            # The checksums are kept for good: a wrong one (a broken upload fixed since, a
            # copy kept by an earlier release) would refuse the file for good too.
            await self._forget_digests(ref.upstream_url)
            raise

    async def _gav_published(self, parsed: MavenPath) -> datetime | None:
        """The publish time of the GAV of `parsed`; NotFound when it does not exist
        upstream."""
        artifact, version = parsed.artifact or "", parsed.version or ""
        pom = "/".join((*parsed.directories, f"{artifact}-{version}.pom"))
        try:
            return await self._publish_time(parsed.gav, pom)
        except UpstreamNotFound:
            raise NotFound(f"{parsed.gav} does not exist upstream") from None

    async def _allowed(self, parsed: MavenPath) -> datetime | None:
        """The publish time of the GAV of `parsed`, once the policy lets its file through;
        raises Held otherwise, NotFound when the GAV does not exist upstream."""
        group, artifact, version = parsed.group or "", parsed.artifact or "", parsed.version or ""
        published = await self._gav_published(parsed)
        coordinates = f"{group}:{artifact}"
        shown: tuple[Signal, ...] = ()
        if self._signals_may_matter(coordinates, published):
            shown = await self._file_signals(group, artifact, version)
        else:
            # Nothing looked up for a signal that cannot change the decision; one known
            # already is still reported.
            remembered = self._signals.get(f"{coordinates}:{version}")
            shown = remembered[1] if remembered is not None else ()
        decision = self._services.policy.decide(
            policy.Subject("maven", coordinates, version, filename=parsed.base), published, shown
        )
        if not decision.visible:
            raise Held.from_decision(decision, _sentence(parsed.gav, decision))
        return published

    async def _file_ref(self, parsed: MavenPath, *, checked: bool = True) -> ArtifactRef:
        """What the artifact file `parsed` (not a companion) stands for, once the policy lets
        it through (`_allowed`'s errors otherwise); `checked` False: whatever the policy
        says (a review)."""
        published = await (self._allowed(parsed) if checked else self._gav_published(parsed))
        url = self._upstream + parsed.path
        return ArtifactRef(
            ecosystem="maven",
            package=f"{parsed.group or ''}:{parsed.artifact or ''}",
            version=parsed.version or "",
            filename=parsed.filename,
            upstream_url=url,
            digests=await self._digests(url, parsed),
            content_type=_content_type(parsed.filename),
            published_at=published,
        )

    async def _serve_companion(
        self, request: web.Request, parsed: MavenPath, url: str
    ) -> web.StreamResponse:
        """`.sha1`, `.md5`, `.asc`…: small immutable documents, relayed byte for byte once
        they parse as what they claim to be (a digest, an armored signature)."""
        parse = (
            document.ChecksumParser(parsed.checksum)
            if parsed.checksum is not None
            else document.parse_signature
        )
        try:
            doc = await self._services.metacache.current(
                url,
                parse,
                ecosystem="maven",
                immutable=True,
                required=parsed.checksum == "sha1",
                max_bytes=document.MAX_COMPANION_BYTES,
            )
        except UpstreamNotFound:
            raise NotFound(f"{parsed.filename} does not exist upstream") from None
        content_type = document.CHECKSUM_TYPE if parsed.checksum else "text/plain"
        view = responses.render(
            doc.raw,
            content_type=content_type,
            form="companion",
            last_modified=_http_time(doc.last_modified),
        )
        return responses.respond(request, view, now=self._services.clock.now(), vary=_VARY)

    async def _digests(self, url: str, parsed: MavenPath) -> tuple[Digest, ...]:
        """The upstream's declared digests of an artifact file: `.sha1` (required: without it
        the file is treated as absent) and `.sha256` when upstream publishes one."""
        metacache = self._services.metacache
        # Release files: fetched once, never revalidated (`immutable`), so a warm build asks
        # upstream nothing for them.
        try:
            sha1 = await metacache.get(
                url + ".sha1",
                document.ChecksumParser("sha1"),
                ecosystem="maven",
                immutable=True,
                required=True,
                max_bytes=document.MAX_COMPANION_BYTES,
            )
        except UpstreamNotFound:
            raise NotFound(f"{parsed.filename} of {parsed.gav} does not exist upstream") from None
        digests = [Digest(algorithm="sha1", hexdigest=sha1.parsed)]
        try:
            sha256 = await metacache.get(
                url + ".sha256",
                document.ChecksumParser("sha256"),
                ecosystem="maven",
                immutable=True,
                max_bytes=document.MAX_COMPANION_BYTES,
            )
        except UpstreamNotFound:
            # Optional; the 404 is remembered by the metadata cache (for a day: immutable).
            return tuple(digests)
        return (Digest(algorithm="sha256", hexdigest=sha256.parsed), *digests)

    async def _forget_digests(self, url: str) -> None:
        """Drop the kept `.sha1`/`.sha256` of the file at `url` (`_digests`)."""
        metacache = self._services.metacache
        await asyncio.gather(metacache.forget(url + ".sha1"), metacache.forget(url + ".sha256"))

    # Ecosystem: pre-warming ---------------------------------------------------------------

    async def warm_refs(self, package: str, version: str) -> list[ArtifactRef]:
        """The `.pom` and the `.jar` of `package` `version` (`Ecosystem.warm_refs`), found and
        checked as for a build's requests. No jar upstream leaves the pom alone: fine for a
        pom-packaging artifact (a parent, a BOM), which the caller tells from the pom."""
        pom, jar = maven_paths(Pin("maven", package, version))
        refs = [await self._file_ref(paths.parse_path(urllib.parse.quote(pom)))]
        with contextlib.suppress(NotFound):
            refs.append(await self._file_ref(paths.parse_path(urllib.parse.quote(jar))))
        return refs

    async def review_refs(self, package: str, version: str) -> list[ArtifactRef]:
        """The `.pom` and, when there is one, the `.jar` of `package` `version`, whatever the
        policy says of them (`Ecosystem.review_refs`)."""
        pom, jar = maven_paths(Pin("maven", package, version))
        refs = [await self._file_ref(paths.parse_path(urllib.parse.quote(pom)), checked=False)]
        with contextlib.suppress(NotFound):
            jar_path = paths.parse_path(urllib.parse.quote(jar))
            refs.append(await self._file_ref(jar_path, checked=False))
        return refs

    # Ecosystem: coverage ------------------------------------------------------------------

    async def known_versions(self, package: str, *, fetch: bool) -> tuple[str, ...] | None:
        """The `<versions>` of the upstream artifact metadata, held and blocked ones
        included (`Ecosystem.known_versions`); None when the document there is not artifact
        metadata. `fetch` asks the upstream for the current document; otherwise through the
        cache."""
        group, artifact = paths.parse_coordinates(package)
        path = "/".join((*group.split("."), artifact, paths.METADATA_FILE))
        doc = await self._services.metacache.get(
            self._upstream + path,
            document.MetadataParser(f"{group}:{artifact}"),
            ecosystem="maven",
            refresh="urgent" if fetch else False,
        )
        metadata: document.MavenMetadata = doc.parsed
        return metadata.versions if metadata.is_artifact else None


def _next_batch(
    ordered: Sequence[str],
    position: dict[str, int],
    known: dict[str, datetime | None],
    first: str,
    size: int,
) -> list[str]:
    """`first` (the look-up the walk needs) and the next versions below it not known yet, up
    to `size`: the walk goes newest first, and when it did not end at `first` it usually
    needs those too."""
    batch = [first]
    for version in reversed(ordered[: position[first]]):
        if len(batch) >= size:
            break
        if version not in known:
            batch.append(version)
    return batch


def _sentence(gav: str, decision: policy.Decision) -> str:
    """One sentence naming the GAV and what holds it (`notices.hold_clause`): Maven prints
    its first clause from the reason phrase."""
    if decision.visible:
        return f"{gav}: {decision.detail}"
    return f"{gav} is {notices.hold_clause(decision)}: {decision.detail}"


def _seen_bytes(_seen: tuple[signals.Seen, datetime | None]) -> int:
    return 96  # a small frozen dataclass (a key id of 16 characters at most)


def _signals_bytes(entry: tuple[str | None, tuple[Signal, ...]]) -> int:
    return 96 + sum(64 + len(signal.detail) for signal in entry[1])


def _moment_bytes(_moment: datetime) -> int:
    return 64  # a datetime; the key (a GAV) is within the entry overhead
