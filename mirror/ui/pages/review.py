"""`/ui/review?ecosystem=npm&package=left-pad&version=1.4.0`: a held version against the
newest allowed version of the same package (the baseline): the files added, removed and
changed in its artifact, the manifest and install-script diffs, the signals to look at
first, when it was published and who asked for it; for admins, forms to exempt or block it.

Choices, stated plainly:
- The artifacts come through the mirror's verified cache (`ArtifactServer.store`: the shared
  download, integrity checked, stored as any artifact), found by the adapter from the upstream
  document as for a client (`Ecosystem.review_refs`), never from a URL in the request. A held
  or blocked version is read (that is the point) but nothing read here is served: only the
  diff. The cache never lets a held version out to clients: they are refused before the cache
  is looked at. Nothing is written to the download ledger: the mirror is not "who pulled it".
- Bounded: artifacts over MAX_ARTIFACT_BYTES are not read (one declaring more is not even
  fetched; a download this page starts stops past it, nothing stored). Archives are read and
  diffed off the event loop with `mirror.archives`' and `mirror.versiondiff`' bounds, on
  REVIEWS_AT_ONCE threads of the dashboard's own (`ReviewWorkers`: never the default executor
  the serving path uses). A review holds one of REVIEWS_AT_ONCE slots from its start until
  its last thread work has ended, even when the page stopped waiting for it; that work asks
  for its deadline (REVIEW_SECONDS after the page was asked for) between entries, chunks and
  files and stops there, so a page past it says "review cut short" and reloads cannot stack
  up work."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO, Final, TypeVar

from aiohttp import web

from mirror import archives, versions
from mirror.admin.parse import ecosystem_param, safe_text
from mirror.archives import Limits
from mirror.blobs.store import BlobVanished
from mirror.ecosystems.base import Ecosystem
from mirror.errors import BadRequest, MirrorError, NotFound
from mirror.holds import HeldVersion
from mirror.lockfiles.report import ACCEPTED_VERDICTS
from mirror.model import ArtifactRef, DownloadEvent
from mirror.services import ECOSYSTEM_ADAPTERS, Services
from mirror.ui import guard
from mirror.ui.render import render, services
from mirror.versiondiff import Side, VersionDiff, compare

MAX_ARTIFACT_BYTES: Final = 64 * 1024 * 1024
REVIEW_SECONDS: Final = 60.0
REVIEWS_AT_ONCE: Final = 2
# Versions explained at most while looking for the baseline (newest first).
MAX_BASELINE_LOOKUPS: Final = 30
# Download-ledger rows shown.
MAX_DOWNLOAD_ROWS: Final = 20
MAX_FIELD_CHARS: Final = 300
LIMITS: Final = Limits()
T = TypeVar("T")


def routes() -> list[web.RouteDef]:
    return [web.get("/review", review_page, allow_head=False)]


class ReviewSlot:
    """One review's hold on the workers: its deadline, and its thread work in progress."""

    def __init__(self, executor: ThreadPoolExecutor, deadline: float) -> None:
        self._executor = executor
        self.deadline = deadline
        self._running: asyncio.Future[Any] | None = None

    def expired(self) -> bool:
        """Past the deadline (asked by the reading and diffing threads)."""
        return time.monotonic() > self.deadline

    async def run(self, work: Callable[[], T]) -> T:
        """`work` on a review thread. Shielded: a page that stops waiting leaves the thread
        running (it cannot be stopped from outside) and the slot held until it ends."""
        self._running = asyncio.get_running_loop().run_in_executor(self._executor, work)
        return await asyncio.shield(self._running)

    def release_when_done(self, release: Callable[[], None]) -> None:
        running = self._running
        if running is None or running.done():
            release()
        else:
            running.add_done_callback(lambda _done: release())


class ReviewWorkers:
    """The threads reviews read and diff on, REVIEWS_AT_ONCE of them, and as many slots (see
    the module). One per dashboard app, shut down with it (`close`)."""

    def __init__(self, at_once: int = REVIEWS_AT_ONCE) -> None:
        self._slots = asyncio.Semaphore(at_once)
        self._executor = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="ui-review")

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[ReviewSlot]:
        """A slot until the review's last thread work has ended (`deadline`: monotonic)."""
        await self._slots.acquire()
        held = ReviewSlot(self._executor, deadline)
        try:
            yield held
        finally:
            held.release_when_done(self._slots.release)

    def close(self) -> None:
        """Work not started is dropped; work running stops at its deadline."""
        self._executor.shutdown(wait=False, cancel_futures=True)


REVIEW_WORKERS: Final = web.AppKey("ui-review-workers", ReviewWorkers)


async def close_workers(app: web.Application) -> None:
    app[REVIEW_WORKERS].close()


@dataclass(slots=True)
class Review:
    """What the page shows beyond the version's explanation."""

    baseline: str | None = None
    baseline_note: str = ""
    compared: list[tuple[str, str]] = field(default_factory=list)
    diff: VersionDiff | None = None
    problems: list[str] = field(default_factory=list)


async def review_page(request: web.Request) -> web.StreamResponse:
    session = guard.reader(request)
    query = request.query
    ecosystem = ecosystem_param(query.get("ecosystem", "").strip().lower() or None)
    package = _field(query.get("package", ""), "package")
    version = _field(query.get("version", ""), "version")
    adapter = request.config_dict[ECOSYSTEM_ADAPTERS].get(ecosystem)
    if adapter is None:
        raise BadRequest(f"{ecosystem} is not enabled on this mirror")
    mirror = services(request)
    explanation = await adapter.explain(package, version)
    review = Review()
    deadline = time.monotonic() + REVIEW_SECONDS
    try:
        async with (
            asyncio.timeout(REVIEW_SECONDS),
            request.config_dict[REVIEW_WORKERS].slot(deadline) as slot,
        ):
            await _review(mirror, adapter, ecosystem, package, version, review, slot)
    except TimeoutError:
        review.problems.append(
            f"review cut short: it took more than {REVIEW_SECONDS:.0f} seconds; reload the "
            "page (downloads go on in the background and are cached)"
        )
    held = await _held(mirror, ecosystem, package, version)
    downloads = await _downloads(mirror, ecosystem, package, version)
    return render(
        request,
        "review.html",
        ecosystem=ecosystem,
        package=package,
        version=version,
        answer=explanation,
        review=review,
        held=held,
        downloads=downloads,
        can_write=session.can_write,
        max_downloads=MAX_DOWNLOAD_ROWS,
    )


def _field(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        raise BadRequest(f"{name}: required")
    return safe_text(value, name, max_length=MAX_FIELD_CHARS)


async def _review(
    mirror: Services,
    adapter: Ecosystem,
    ecosystem: str,
    package: str,
    version: str,
    review: Review,
    slot: ReviewSlot,
) -> None:
    review.baseline, review.baseline_note = await baseline(adapter, ecosystem, package, version)
    try:
        new_refs = await adapter.review_refs(package, version)
        old_refs = await adapter.review_refs(package, review.baseline) if review.baseline else []
    except MirrorError as exc:
        review.problems.append(f"the files could not be found upstream: {exc.message}")
        return
    pairs = comparable(ecosystem, old_refs, new_refs)
    if isinstance(pairs, str):
        review.problems.append(pairs)
        return
    old_ref, new_ref, old_pom, new_pom = pairs
    new_side = await _side(mirror, new_ref, new_pom, review, slot)
    old_side = await _side(mirror, old_ref, old_pom, review, slot) if old_ref is not None else None
    if new_side is None or (old_ref is not None and old_side is None):
        return
    review.compared = [
        (label, ref.filename)
        for label, ref in (("baseline", old_ref), ("reviewed", new_ref))
        if ref is not None
    ]
    review.diff = await slot.run(
        partial(compare, ecosystem, old_side, new_side, expired=slot.expired)
    )


async def baseline(
    adapter: Ecosystem, ecosystem: str, package: str, version: str
) -> tuple[str | None, str]:
    """The newest version below `version` (in the ecosystem's own order) that the policy
    lets through, else the newest other one that it does; (None, why) when there is none."""
    try:
        known = await adapter.known_versions(package, fetch=False)
    except MirrorError as exc:
        return None, f"the versions of {package} could not be listed: {exc.message}"
    if not known:
        return None, f"the upstream lists no versions of {package}: there is no baseline"
    key: Callable[[str], Any] = partial(versions.sort_key, ecosystem)
    reviewed = key(version)
    others = sorted((v for v in set(known) if v != version), key=key, reverse=True)
    below = [v for v in others if key(v) < reviewed]
    candidates = below + [v for v in others if v not in below]
    for candidate in candidates[:MAX_BASELINE_LOOKUPS]:
        try:
            verdict = (await adapter.explain(package, candidate)).verdict
        except MirrorError:
            continue
        if verdict in ACCEPTED_VERDICTS:
            return candidate, ""
    looked = min(len(candidates), MAX_BASELINE_LOOKUPS)
    return None, (
        f"no allowed version of {package} to compare with (looked at the newest {looked} "
        "other versions): there is no baseline, so every file is shown as added"
    )


Pair = tuple[ArtifactRef | None, ArtifactRef, ArtifactRef | None, ArtifactRef | None]


def comparable(
    ecosystem: str, old: Sequence[ArtifactRef], new: Sequence[ArtifactRef]
) -> Pair | str:
    """The artifacts to compare (baseline or None, reviewed) and the Maven poms (baseline,
    reviewed), or why there are none."""
    if ecosystem == "maven":
        new_pom = new[0]
        new_jar = next((ref for ref in new if ref.filename.endswith(".jar")), None)
        old_pom = old[0] if old else None
        old_jar = next((ref for ref in old if ref.filename.endswith(".jar")), None)
        if new_jar is None:
            return "the reviewed version has no jar upstream (a pom-packaging artifact?)"
        return old_jar, new_jar, old_pom, new_pom
    if ecosystem == "pypi":
        return _pypi_pair(old, new)
    if not new:
        return "the upstream names no artifact of this version"
    return (old[0] if old else None), new[0], None, None


def _pypi_pair(old: Sequence[ArtifactRef], new: Sequence[ArtifactRef]) -> Pair | str:
    """The same kind of file on both sides: a py3-none-any wheel if both have one, else the
    sdist; without a baseline, the reviewed version's first of those."""

    def universal(refs: Sequence[ArtifactRef]) -> ArtifactRef | None:
        return next((r for r in refs if r.filename.endswith("-py3-none-any.whl")), None)

    def sdist(refs: Sequence[ArtifactRef]) -> ArtifactRef | None:
        return next(
            (r for r in refs if archives.format_of(r.filename) and not r.filename.endswith(".whl")),
            None,
        )

    for pick in (universal, sdist):
        new_ref, old_ref = pick(new), pick(old)
        if new_ref is not None and (old_ref is not None or not old):
            return old_ref, new_ref, None, None
    return (
        "the two versions have no file of the same kind to compare (a py3-none-any wheel in "
        "both, or an sdist in both)"
    )


async def _side(
    mirror: Services, ref: ArtifactRef, pom: ArtifactRef | None, review: Review, slot: ReviewSlot
) -> Side | None:
    """One version's artifact read through the verified cache (and its pom's text), or None
    with why in `review.problems`."""
    archive_format = archives.format_of(ref.filename)
    if archive_format is None:
        review.problems.append(f"{ref.filename} is not an archive this page reads")
        return None
    try:
        listing = await _read(
            mirror,
            slot,
            ref,
            partial(
                archives.read_archive,
                archive_format=archive_format,
                limits=LIMITS,
                expired=slot.expired,
            ),
        )
        manifest = None
        if pom is not None:
            raw = await _read(mirror, slot, pom, _read_bounded)
            manifest = raw.decode("utf-8", "replace")
    except MirrorError as exc:
        review.problems.append(f"{ref.filename}: {exc.message}")
        return None
    if archive_format == "tar":
        listing = listing.without_top_directory()
    return Side(
        filename=ref.filename,
        listing=listing,
        manifest=manifest,
        manifest_name=pom.filename if pom is not None else "",
    )


def _read_bounded(file: BinaryIO) -> bytes:
    data: bytes = file.read(LIMITS.max_text_bytes + 1)
    if len(data) > LIMITS.max_text_bytes:
        raise BadRequest(f"over the {LIMITS.max_text_bytes} bytes a manifest may have")
    return data


async def _read(
    mirror: Services, slot: ReviewSlot, ref: ArtifactRef, parse: Callable[[BinaryIO], T]
) -> T:
    """`parse` of `ref`'s verified blob (fetched into the cache when missing, at most
    MAX_ARTIFACT_BYTES), on a review thread; MirrorError when it is too large, gone or
    cannot be fetched."""
    if ref.size is not None and ref.size > MAX_ARTIFACT_BYTES:
        raise BadRequest(
            f"{ref.size} bytes upstream, over the {MAX_ARTIFACT_BYTES} bytes a review reads"
        )
    entry, _cached = await mirror.artifacts.store(
        ref, for_client=False, max_size=MAX_ARTIFACT_BYTES
    )
    if entry.size > MAX_ARTIFACT_BYTES:
        raise BadRequest(f"{entry.size} bytes, over the {MAX_ARTIFACT_BYTES} bytes a review reads")
    try:
        return await slot.run(mirror.blobs.verified_parse(entry, parse))
    except BlobVanished:
        raise NotFound("its cached copy vanished or was damaged; reload the page") from None


async def _held(
    mirror: Services, ecosystem: str, package: str, version: str
) -> HeldVersion | str | None:
    """Who asked for this version and was held back (the quarantine queue), None when
    nobody was lately, or why that cannot be told. The queue names a package as its
    decision did: the name given, else its normalized spelling."""
    try:
        found = await mirror.state.held_version(ecosystem, package, version)
        normalized = versions.normalize_package(ecosystem, package)
        if found is None and normalized != package:
            found = await mirror.state.held_version(ecosystem, normalized, version)
    except MirrorError as exc:
        return exc.message
    return found


async def _downloads(
    mirror: Services, ecosystem: str, package: str, version: str
) -> list[DownloadEvent] | str:
    """Who pulled this very version (the download ledger: empty while it is held, a
    refused request is not a download), or why that cannot be told."""
    try:
        page = await mirror.state.downloads_page(
            ecosystem,
            versions.normalize_package(ecosystem, package),
            limit=MAX_DOWNLOAD_ROWS,
            versions=lambda candidate: candidate == version,
        )
    except MirrorError as exc:
        return exc.message
    return page.events
