"""Serves artifacts (tarballs, wheels, jars…) after the adapter's policy check: from disk with
sendfile on a hit, or fetched once from upstream, verified and stored on a miss.

Choices, stated plainly:
- Hit: the blob, opened once and sent from that open file (sendfile where the event loop has
  it), with a strong ETag (the sha256), cacheable for `ARTIFACT_MAX_AGE` then revalidated (so
  a block wins at a cache in front within that bound), one byte range and conditional requests
  (always after the adapter's policy check: a blocked file never answers 304); never
  compressed. aiohttp's `FileResponse` is not used: its ETag is mtime-size and cannot be
  replaced through its public API, and it opens the path itself.
  If the digest the adapter now declares differs from the verified one, the request is refused.
- Miss: one download per cache key per process (single-flight), in its own task, so a client
  leaving never stops it. Every client streams from the growing temp file, but the last
  `HOLD_BACK` bytes are only sent once the digest verified: a file smaller than that is checked
  before any header goes out (a mismatch is a clean 502 JSON), a larger one is cut off before
  its end on a mismatch (the client never holds a complete file with wrong bytes).
- HEAD and Range requests on a miss wait for the download to be stored, then are answered from
  disk like a hit.
- Before fetching, the strongest declared digest is remembered in shared state; if another one
  was remembered first, upstream changed published bytes and the mirror refuses them. With no
  declared digest, the sha256 of the first bytes fetched is remembered instead. Pins go through
  `ServingState`: never a wait on shared state past `state.timeout`; when it cannot answer, the
  declared digest is used (the bytes are verified against it all the same) and remembering it
  is retried in the background. A hit is also checked against the pin this process knows.
- Every GET that sends the file (200/206) is written to the download ledger in the background;
  the ledger never delays or fails a download.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import ETag, web

from mirror import errors
from mirror.blobs.claims import FetchClaim, PeerFetch
from mirror.blobs.store import (
    ALGORITHMS,
    BlobEntry,
    BlobStore,
    BlobVanished,
    BlobWriter,
    DigestMismatch,
    OpenBlob,
    check_digests,
    strongest,
)
from mirror.budget import BudgetedLRU, ByteBudget
from mirror.clock import Clock
from mirror.config import IPNetwork
from mirror.ecosystems.base import ArtifactRef, Digest
from mirror.forwarded import client_of
from mirror.ledger import DownloadLedger
from mirror.metrics import Metrics
from mirror.servingstate import ServingState
from mirror.state.base import DownloadEvent, StateStore
from mirror.upstream import Upstream

log = logging.getLogger(__name__)

# The tail of a download kept from clients until its digest verified.
HOLD_BACK = 1024 * 1024
READ_SIZE = 256 * 1024
# How long close() lets downloads in progress finish before cancelling them.
CLOSE_GRACE = 2.0
# Stored artifacts may be kept by a cache in front for at most 5 minutes, then revalidated
# with their strong ETag: a cheap 304 while still allowed, a 403 once blocked. So a block wins
# at such a cache within this bound (must-revalidate: not even a disconnected cache may serve
# the file past it). Bytes relayed without being stored go out `no-store`.
ARTIFACT_MAX_AGE = 300  # seconds
ARTIFACT_CACHE_CONTROL = f"public, max-age={ARTIFACT_MAX_AGE}, must-revalidate"
# Small artifacts (most npm tarballs, poms, checksums) are answered from memory: a thread hop
# to open the file and a sendfile call cost more than the bytes themselves.
HOT_FILE_MAX = 256 * 1024
# While another worker process fetches the same artifact, look for its result this often,
# for at most this long (then fetch anyway: a stuck peer must not stall clients forever).
CLAIM_POLL = 0.05
OTHER_PROCESS_WAIT = 600.0
# Held from the worker's shared memory budget; this one only when none is given (tests).
HOT_BUDGET = 64 * 1024 * 1024


@dataclass(eq=False, slots=True)
class _Download:
    """One upstream fetch shared by every client asking for the same cache key."""

    ref: ArtifactRef
    task: asyncio.Task[BlobEntry] | None = None
    writer: BlobWriter | None = None
    # Another worker process is fetching: its file, and how much of it is there.
    peer: PeerFetch | None = None
    peer_written: int = 0
    expected_size: int | None = None
    entry: BlobEntry | None = None
    error: BaseException | None = None
    finished: bool = False
    readers: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def written(self) -> int:
        return self.writer.written if self.writer is not None else self.peer_written

    @property
    def source(self) -> BlobWriter | PeerFetch | None:
        """Where the bytes written so far can be read."""
        return self.writer if self.writer is not None else self.peer

    def notify(self) -> None:
        """Wake every client waiting for more bytes or the outcome."""
        woken, self.progress = self.progress, asyncio.Event()
        woken.set()

    def release_if_unused(self) -> None:
        if self.finished and self.readers == 0:
            if self.writer is not None:
                self.writer.close()
            if self.peer is not None:
                self.peer.close()


class ArtifactServer:
    """See the module docstring. Construct without I/O; `close()` ends downloads in progress."""

    def __init__(
        self,
        *,
        blobs: BlobStore,
        upstream: Upstream,
        state: StateStore,
        metrics: Metrics,
        clock: Clock,
        trusted_proxies: tuple[IPNetwork, ...] = (),
        state_timeout: timedelta = timedelta(milliseconds=500),
        budget: ByteBudget | None = None,
    ) -> None:
        self._blobs = blobs
        self._proxies = trusted_proxies
        self._upstream = upstream
        self._state = state
        self._metrics = metrics
        self._clock = clock
        # Downloads in progress, one per cache key. Not a `flight.SingleFlight`: waiters
        # share the download's progress (they stream its bytes as they arrive, or follow
        # another process's), not only its outcome, and `close()` gives downloads
        # CLOSE_GRACE before cancelling them.
        self._inflight: dict[str, _Download] = {}
        self._hot: BudgetedLRU[str, bytes] = BudgetedLRU(
            budget or ByteBudget(HOT_BUDGET), "small artifacts", len
        )
        backend = type(state).__name__.removesuffix("State").lower() or "unknown"
        self.ledger = DownloadLedger(state, metrics, backend=backend)
        # Shared state as the serving path uses it (bounded, remembered, retried): the Maven
        # adapter's publish times go through it too.
        self.shared = ServingState(
            state,
            metrics,
            backend=backend,
            timeout=state_timeout,
            on_conflict=self._pin_conflict,
            budget=budget,
        )

    # public API ---------------------------------------------------------------------------

    async def serve(self, request: web.Request, ref: ArtifactRef) -> web.StreamResponse:
        """Answer GET/HEAD for `ref` (the policy check has passed). Raises IntegrityError,
        NotFound, upstream errors or StorageFull while no header has been sent."""
        entry = await self._blobs.lookup(ref.cache_key)
        if entry is not None:
            self._check_declared(ref, entry)
            response = await self._send_blob(request, ref, entry)
            if response is not None:
                return response
            self._blobs.forget(ref.cache_key)
        self._metrics.cache_misses.labels(ref.ecosystem, "artifact").inc()
        download = self._inflight.get(ref.cache_key)
        if download is None:
            download = self._start(ref)
        else:
            self._metrics.singleflight_joins.labels("artifact").inc()
        try:
            if request.method == "HEAD" or "Range" in request.headers:
                return await self._serve_stored(request, ref, await self._stored(download))
            return await self._stream(request, download)
        except errors.StorageFull as exc:
            # Nothing was sent (the store failed before the first byte): a full disk must
            # not stop installs, so this client gets the verified bytes without caching.
            log.error("%s; serving %s without caching it", exc, ref.cache_key)
            self._metrics.child(self._metrics.uncached_serves, ref.ecosystem).inc()
            return await self._pass_through(request, ref)

    async def close(self) -> None:
        """Let downloads in progress finish for a moment, then cancel them (their temp files
        are removed); then the same for pending ledger writes."""
        tasks = [d.task for d in self._inflight.values() if d.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.ledger.close()
        await self.shared.close()

    # hits ---------------------------------------------------------------------------------

    def _check_declared(self, ref: ArtifactRef, entry: BlobEntry) -> None:
        for declared in ref.digests:
            stored = entry.digests.get(declared.algorithm)
            if stored is not None and stored != declared.hexdigest.strip().lower():
                self._refuse_changed(ref)
        # The first-seen digest, when this process knows it (no state round trip): bytes
        # stored while shared state was down are refused once a different pin turns up.
        pin = self.shared.pinned(ref.ecosystem, ref.cache_key)
        if pin is not None:
            algorithm, _, hexdigest = pin.partition(":")
            stored = entry.digests.get(algorithm)
            if stored is not None and stored != hexdigest:
                self._refuse_changed(ref)

    async def _send_blob(
        self, request: web.Request, ref: ArtifactRef, entry: BlobEntry
    ) -> web.StreamResponse | None:
        """Send the stored blob (prepared here, so a vanished blob can still become a miss);
        None if the blob vanished before any byte went out."""

        def on_send(status: int) -> None:
            # Called just before the headers go out, once the blob is open.
            self._metrics.child(self._metrics.cache_hits, ref.ecosystem, "artifact").inc()
            if request.method == "GET" and status in (200, 206):
                self._record_download(request, ref)

        if entry.size <= HOT_FILE_MAX and "Range" not in request.headers and not request.if_match:
            return await self._send_small(request, ref, entry, on_send)
        try:
            blob = await self._blobs.open_blob(entry)
        except BlobVanished:
            log.info("blob of %s vanished (evicted elsewhere); fetching again", ref.cache_key)
            return None
        headers = {"Content-Type": ref.content_type, "Cache-Control": ARTIFACT_CACHE_CONTROL}
        return await _send_open_blob(
            request, blob, etag=entry.etag, headers=headers, on_send=on_send
        )

    async def _send_small(
        self,
        request: web.Request,
        ref: ArtifactRef,
        entry: BlobEntry,
        on_send: Callable[[int], None],
    ) -> web.StreamResponse | None:
        """A small blob from memory (read and re-verified once per process); None if the
        blob vanished or no longer matches its sha256 (then it is fetched again)."""
        data = self._hot.get(entry.sha256)
        if data is None:
            try:
                data = await self._blobs.read_verified(entry)
            except BlobVanished:
                log.info("blob of %s vanished or changed on disk; fetching again", ref.cache_key)
                return None
            self._hot.put(entry.sha256, data)
        else:
            await self._blobs.note_use(entry)
        headers = {
            "Content-Type": ref.content_type,
            "Cache-Control": ARTIFACT_CACHE_CONTROL,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
        }
        if_none_match = request.if_none_match
        if if_none_match and any(tag.value in (entry.etag, "*") for tag in if_none_match):
            on_send(304)
            return web.Response(status=304, headers=headers)
        on_send(200)
        return web.Response(body=data, headers=headers)

    # misses -------------------------------------------------------------------------------

    def _start(self, ref: ArtifactRef) -> _Download:
        download = _Download(ref=ref)
        task = asyncio.get_running_loop().create_task(
            self._run(download), name=f"artifact {ref.cache_key}"
        )
        download.task = task
        self._inflight[ref.cache_key] = download
        task.add_done_callback(_retrieve)
        return download

    async def _run(self, download: _Download) -> BlobEntry:
        ref = download.ref
        try:
            download.entry = await self._fetch(download)
            return download.entry
        except asyncio.CancelledError:
            download.error = errors.UpstreamUnavailable(
                f"the download of {ref.filename} was stopped: the mirror is shutting down",
                status=503,
            )
            raise
        except errors.MirrorError as exc:
            download.error = exc
            raise
        except Exception as exc:
            log.exception("downloading %s failed", ref.cache_key)
            download.error = errors.MirrorError(
                f"storing {ref.filename} failed; the mirror logged the details"
            )
            raise download.error from exc
        finally:
            if self._inflight.get(ref.cache_key) is download:
                del self._inflight[ref.cache_key]
            if download.writer is not None and download.entry is None:
                await download.writer.abort()
            download.finished = True
            download.release_if_unused()
            download.notify()

    async def _fetch(self, download: _Download) -> BlobEntry:
        """Fetch, verify and store `download.ref` once across worker processes: while
        another process holds the fetch claim, wait for its outcome instead."""
        ref = download.ref
        claim = await self._blobs.claim(ref.cache_key)
        if claim is None:
            entry = await self._follow_peer(download)
            if entry is not None:
                return entry
            claim = await self._blobs.claim(ref.cache_key)
        try:
            return await self._fetch_claimed(download, claim)
        finally:
            if claim is not None:
                await asyncio.to_thread(claim.release)

    async def _follow_peer(self, download: _Download) -> BlobEntry | None:
        """Another worker process holds the fetch claim: stream its growing file to our
        clients (holding back the tail as for our own fetches) until its verified blob is
        stored. None if it gave up before any byte could have reached a client: then this
        process fetches itself."""
        ref = download.ref
        self._metrics.singleflight_joins.labels("artifact").inc()
        download.expected_size = ref.size
        waited = 0.0
        while waited < OTHER_PROCESS_WAIT:
            if download.peer is None:
                download.peer = await self._blobs.peer_fetch(ref.cache_key)
            if download.peer is not None:
                size = await download.peer.size()
                if size != download.peer_written:
                    download.peer_written = size
                    download.notify()
            entry = await self._blobs.lookup(ref.cache_key)
            if entry is not None:
                return await self._peer_stored(download, entry)
            probe = await self._blobs.claim(ref.cache_key)
            if probe is not None:
                # The other process finished without storing a blob (or died).
                await asyncio.to_thread(probe.release)
                if download.peer_written > HOLD_BACK:
                    raise errors.UpstreamUnavailable(
                        f"the fetch of {ref.filename} by another worker failed; retry",
                        status=503,
                    )
                break
            await asyncio.sleep(CLAIM_POLL)
            waited += CLAIM_POLL
        if download.peer is not None:
            download.peer.close()
        download.peer, download.peer_written = None, 0
        return None

    async def _peer_stored(self, download: _Download, entry: BlobEntry) -> BlobEntry:
        """A verified blob is stored. Go on streaming from the followed file only if it *is*
        that blob (a failed peer's file, replaced by a third process's fetch, is not)."""
        peer = download.peer
        if peer is not None and not await peer.is_file(entry.path):
            if download.peer_written > HOLD_BACK:
                raise errors.UpstreamUnavailable(
                    f"the fetch of {download.ref.filename} by another worker failed; retry",
                    status=503,
                )
            peer.close()
            download.peer, download.peer_written = None, 0
            return entry  # clients are served from the stored blob
        download.peer_written = entry.size
        return entry

    async def _fetch_claimed(self, download: _Download, claim: FetchClaim | None) -> BlobEntry:
        ref = download.ref
        entry = await self._blobs.lookup(ref.cache_key)
        if entry is not None:
            return entry  # stored by another process between our miss and our claim
        pinned = await self._pin_first_digest(ref)
        algorithms = {d.algorithm for d in (*ref.digests, *pinned) if d.algorithm in ALGORITHMS}
        try:
            async with self._upstream.stream(ref.upstream_url, ecosystem=ref.ecosystem) as upstream:
                expected = ref.size if ref.size is not None else upstream.content_length
                download.expected_size = expected
                writer = download.writer = await self._blobs.begin(ref.cache_key, algorithms)
                if claim is not None:
                    try:
                        await asyncio.to_thread(claim.announce, writer.temp)
                    except OSError as exc:
                        # Only lets other workers follow this fetch (a full disk, say):
                        # they wait for the stored blob instead.
                        log.warning("could not announce the fetch of %s: %s", ref.cache_key, exc)
                try:
                    async for chunk in upstream.iter_chunks():
                        if expected is not None and writer.written + len(chunk) > expected:
                            self._count("mismatch", ref)
                            raise errors.IntegrityError(
                                f"upstream sent more than the {expected} bytes declared for "
                                f"{ref.filename}: not cached"
                            )
                        await writer.write(chunk)
                        download.notify()
                except errors.UpstreamUnavailable:
                    self._count("truncated", ref)
                    raise
        except errors.UpstreamNotFound:
            raise errors.NotFound(
                f"{ref.filename} ({ref.package} {ref.version}) is not on the upstream"
            ) from None
        if expected is not None and writer.written < expected:
            self._count("truncated", ref)
            raise errors.IntegrityError(
                f"upstream sent {writer.written} of the {expected} bytes of {ref.filename}: "
                "not cached"
            )
        if not ref.digests:
            pinned = await self._pin_fetched_digest(ref, writer)
        try:
            return await writer.commit((*ref.digests, *pinned), what=ref.filename)
        except DigestMismatch as exc:
            if _pin_as_declared(exc) in pinned:
                self._refuse_changed(ref)
            self._count("mismatch", ref)
            raise

    async def _pin_first_digest(self, ref: ArtifactRef) -> tuple[Digest, ...]:
        """Remember the strongest declared digest; refuse if another was remembered first.
        Returns a remembered digest of an algorithm not declared now (checked on the bytes)."""
        declared = strongest(ref.digests)
        if declared is None:
            return ()
        mine = f"{declared.algorithm}:{declared.hexdigest.strip().lower()}"
        first = await self.shared.remember_digest(ref.ecosystem, ref.cache_key, mine)
        if first == mine:
            return ()
        algorithm, _, hexdigest = first.partition(":")
        same = [d for d in ref.digests if d.algorithm == algorithm]
        if same:
            if all(d.hexdigest.strip().lower() == hexdigest for d in same):
                return ()
            self._refuse_changed(ref)
        if algorithm not in ALGORITHMS:
            return ()
        return (Digest(algorithm=algorithm, hexdigest=hexdigest),)

    async def _pin_fetched_digest(self, ref: ArtifactRef, writer: BlobWriter) -> tuple[Digest, ...]:
        """No digest is declared: trust on first use, remembering the sha256 of these bytes."""
        mine = f"sha256:{writer.hexdigests()['sha256']}"
        first = await self.shared.remember_digest(ref.ecosystem, ref.cache_key, mine)
        algorithm, _, hexdigest = first.partition(":")
        if algorithm not in ALGORITHMS:
            return ()
        return (Digest(algorithm=algorithm, hexdigest=hexdigest),)

    def _pin_conflict(self, ecosystem: str, key: str, mine: str, first: str) -> None:
        # A pin written late (shared state was down) found another digest remembered first.
        self._metrics.integrity_failures.labels(ecosystem, "changed").inc()

    def _refuse_changed(self, ref: ArtifactRef) -> None:
        self._count("changed", ref)
        raise self._changed_error(ref)

    def _changed_error(self, ref: ArtifactRef) -> errors.IntegrityError:
        log.warning("upstream changed the bytes of %s since it was first mirrored", ref.cache_key)
        return errors.IntegrityError(
            f"upstream changed the bytes of {ref.package} {ref.version} ({ref.filename}) since "
            "it was first mirrored: an attack signal; the mirror refuses the new bytes"
        )

    def _count(self, cause: str, ref: ArtifactRef) -> None:
        self._metrics.integrity_failures.labels(ref.ecosystem, cause).inc()
        if cause != "changed":
            log.warning("refused %s from upstream: %s", ref.cache_key, cause)

    async def _stored(self, download: _Download) -> BlobEntry:
        """Wait until the download is stored (without cancelling it if this client leaves)."""
        if download.task is not None:
            await asyncio.wait({download.task})
        if download.entry is not None:
            return download.entry
        raise download.error or RuntimeError(f"{download.ref.cache_key}: no outcome")

    async def _stream(self, request: web.Request, download: _Download) -> web.StreamResponse:
        """Send the bytes as they are stored, holding back the unverified tail."""
        ref = download.ref
        download.readers += 1
        response: web.StreamResponse | None = None
        sent = 0
        try:
            while True:
                progress = download.progress
                if download.entry is not None and download.source is None and response is None:
                    # Another worker process stored it: serve the blob from disk.
                    return await self._serve_stored(request, ref, download.entry)
                if download.error is not None:
                    if response is None:
                        raise download.error
                    # Headers are out: cutting the connection is the only honest answer.
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                done = download.entry is not None
                available = download.written if done else download.written - HOLD_BACK
                if available > sent:
                    if response is None:
                        response = await self._start_stream(request, download)
                    source = download.source
                    if source is None:  # unreachable: bytes were written somewhere
                        raise RuntimeError(f"{ref.cache_key}: bytes without a source")
                    data = await source.read_at(sent, min(READ_SIZE, available - sent))
                    if not data:
                        raise RuntimeError(f"{ref.cache_key}: the stored file is shorter")
                    await response.write(data)
                    sent += len(data)
                    continue
                if done:
                    if response is None:
                        response = await self._start_stream(request, download)
                    await response.write_eof()
                    return response
                if download.finished:
                    raise RuntimeError(f"{ref.cache_key}: download ended without an outcome")
                await progress.wait()
        except ConnectionError:
            if response is None:
                raise
            return response  # the client left; the download goes on for the others
        finally:
            download.readers -= 1
            download.release_if_unused()

    async def _serve_stored(
        self, request: web.Request, ref: ArtifactRef, entry: BlobEntry
    ) -> web.StreamResponse:
        response = await self._send_blob(request, ref, entry)
        if response is None:
            raise errors.UpstreamUnavailable(
                f"{ref.filename} was evicted right after it was stored; retry", status=503
            )
        return response

    async def _start_stream(self, request: web.Request, download: _Download) -> web.StreamResponse:
        ref = download.ref
        headers = {"Content-Type": ref.content_type, "Cache-Control": ARTIFACT_CACHE_CONTROL}
        entry = download.entry
        declared_sha256 = next((d for d in ref.digests if d.algorithm == "sha256"), None)
        if entry is not None:
            headers["ETag"] = f'"{entry.etag}"'
        elif declared_sha256 is not None:
            headers["ETag"] = f'"{declared_sha256.hexdigest.strip().lower()}"'
        response = web.StreamResponse(headers=headers)
        size = entry.size if entry is not None else download.expected_size
        if size is not None:
            response.content_length = size
        # Noted as the headers go out, as hits are: an impact report had better name a
        # client that hung up mid-body than miss one that did not.
        self._record_download(request, ref)
        await response.prepare(request)
        return response

    # degraded: no room to store ---------------------------------------------------------------

    async def _pass_through(self, request: web.Request, ref: ArtifactRef) -> web.StreamResponse:
        """Relay the upstream bytes to this one client while hashing them, holding the last
        `HOLD_BACK` bytes in memory until every declared digest verifies (the same promise
        as a stored download: never a complete file with the wrong bytes)."""
        if request.method == "HEAD":
            return await self._head_pass_through(request, ref)
        pinned = await self._pin_first_digest(ref)
        expected = (*ref.digests, *pinned)
        hashes = {
            name: hashlib.new(name)
            for name in {"sha256", *(d.algorithm for d in expected if d.algorithm in ALGORITHMS)}
        }
        response: web.StreamResponse | None = None
        tail = bytearray()
        received = 0
        try:
            async with self._upstream.stream(ref.upstream_url, ecosystem=ref.ecosystem) as upstream:
                size = ref.size if ref.size is not None else upstream.content_length
                async for chunk in upstream.iter_chunks():
                    received += len(chunk)
                    for hasher in hashes.values():
                        hasher.update(chunk)
                    tail += chunk
                    if len(tail) > HOLD_BACK:
                        if response is None:
                            response = await self._start_pass_through(request, ref, size)
                        out = bytes(tail[:-HOLD_BACK])
                        del tail[:-HOLD_BACK]
                        await response.write(out)
        except errors.UpstreamNotFound:
            raise errors.NotFound(f"{ref.filename} is not on the upstream") from None
        try:
            if size is not None and received != size:
                raise errors.IntegrityError(
                    f"upstream sent {received} of the {size} bytes of {ref.filename}"
                )
            check_digests(
                {name: hasher.hexdigest() for name, hasher in hashes.items()},
                expected,
                what=ref.filename,
            )
        except errors.IntegrityError:
            self._count("mismatch", ref)
            if response is None:
                raise
            if request.transport is not None:
                request.transport.abort()  # headers are out: cut it short of the end
            return response
        if response is None:
            headers = {"Content-Type": ref.content_type, "Cache-Control": "no-store"}
            self._record_download(request, ref)
            return web.Response(body=bytes(tail), headers=headers)
        await response.write(bytes(tail))
        await response.write_eof()
        return response

    async def _head_pass_through(
        self, request: web.Request, ref: ArtifactRef
    ) -> web.StreamResponse:
        """HEAD with no room to store: the upstream's answer to HEAD, no body fetched."""
        try:
            answer = await self._upstream.head(ref.upstream_url, ecosystem=ref.ecosystem)
        except errors.UpstreamNotFound:
            raise errors.NotFound(f"{ref.filename} is not on the upstream") from None
        response = web.StreamResponse(
            headers={"Content-Type": ref.content_type, "Cache-Control": "no-store"}
        )
        del answer  # it exists upstream; its length is known only when metadata said so
        if ref.size is not None:
            response.content_length = ref.size
        await response.prepare(request)
        await response.write_eof()
        return response

    async def _start_pass_through(
        self, request: web.Request, ref: ArtifactRef, size: int | None
    ) -> web.StreamResponse:
        # no-store: these bytes were not kept, so nobody should treat them as the cached copy.
        response = web.StreamResponse(
            headers={"Content-Type": ref.content_type, "Cache-Control": "no-store"}
        )
        if size is not None:
            response.content_length = size
        self._record_download(request, ref)
        await response.prepare(request)
        return response

    # ledger -------------------------------------------------------------------------------

    def _record_download(self, request: web.Request, ref: ArtifactRef) -> None:
        self.ledger.note(
            DownloadEvent(
                ecosystem=ref.ecosystem,
                package=ref.package,
                version=ref.version,
                filename=ref.filename,
                client=client_of(
                    request.remote, request.headers.get("X-Forwarded-For"), self._proxies
                ),
                at=self._clock.now(),
            )
        )


def _pin_as_declared(exc: DigestMismatch) -> Digest:
    return Digest(algorithm=exc.algorithm, hexdigest=exc.expected)


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Waiters may all have left: mark the outcome as seen so asyncio does not log it.
    if not task.cancelled():
        task.exception()


async def _send_open_blob(
    request: web.Request,
    blob: OpenBlob,
    *,
    etag: str,
    headers: Mapping[str, str],
    on_send: Callable[[int], None],
) -> web.StreamResponse:
    """Answer `request` from the opened `blob` (then closed) and return the finished response.
    Conditional requests are judged on the strong `etag`, ranges and dates as aiohttp's
    `FileResponse` judges them: If-Match (412), If-None-Match or else If-Modified-Since (304),
    one byte range (206, or 416 with `bytes */size`), If-Range as a date (an older copy gets
    the whole file). `on_send(status)` runs just before the headers go out."""
    try:
        status, offset, count = _judge(request, etag, blob.size, blob.modified)
        response = web.StreamResponse(status=status, headers=headers)
        if status == 412:
            response.content_length = 0
        elif status == 416:
            response.headers["Content-Range"] = f"bytes */{blob.size}"
        else:
            response.etag = etag
            response.last_modified = blob.modified
        if status in (200, 206):
            response.content_length = count
            response.headers["Accept-Ranges"] = "bytes"
        if status == 206:
            response.headers["Content-Range"] = f"bytes {offset}-{offset + count - 1}/{blob.size}"
        on_send(status)
        try:
            await response.prepare(request)
            if status in (200, 206) and count and request.method != "HEAD":
                await _send_body(request, response, blob, offset, count)
            await response.write_eof()
        except ConnectionError:
            pass  # the client left; aiohttp notices on its own
        return response
    finally:
        blob.file.close()


def _judge(request: web.Request, etag: str, size: int, modified: float) -> tuple[int, int, int]:
    """(status, offset, count) of the answer to `request` on a file of `size` bytes last
    modified at `modified` (POSIX time) whose strong ETag is `etag`."""
    if (if_match := request.if_match) is not None and not _etag_matches(etag, if_match, weak=False):
        return 412, 0, 0
    if_none_match = request.if_none_match
    if if_none_match is not None:
        if _etag_matches(etag, if_none_match, weak=True):
            return 304, 0, 0
    elif (since := request.if_modified_since) is not None and modified <= since.timestamp():
        return 304, 0, 0
    if (if_range := request.if_range) is not None and modified > if_range.timestamp():
        return 200, 0, size  # the client's copy is older: all of it
    try:
        wanted = request.http_range  # one range; several, or a malformed one, raise
    except ValueError:
        return 416, 0, 0
    start, stop = wanted.start, wanted.stop
    if start is None:
        return 200, 0, size
    if start < 0 and stop is None:  # the last -start bytes
        start = max(size + start, 0)
        count = size - start
    else:  # a stop past the end means up to the end
        count = min(stop if stop is not None else size, size) - start
    if start >= size:
        return 416, 0, 0
    return 206, start, count


def _etag_matches(etag: str, tags: tuple[ETag, ...], *, weak: bool) -> bool:
    """Whether `etag` is among `tags` (`*` matches any); weak tags count only with `weak`."""
    if len(tags) == 1 and tags[0].value == "*":
        return True
    return any(tag.value == etag for tag in tags if weak or not tag.is_weak)


async def _send_body(
    request: web.Request, response: web.StreamResponse, blob: OpenBlob, offset: int, count: int
) -> None:
    """`count` bytes of `blob` from `offset`, after the headers: by sendfile where the event
    loop has it, else (uvloop) read in chunks off the loop."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client left")
    try:
        await asyncio.get_running_loop().sendfile(transport, blob.file, offset, count)
        return
    except NotImplementedError:
        pass
    fd = blob.file.fileno()
    while count > 0:
        chunk = await asyncio.to_thread(os.pread, fd, min(READ_SIZE, count), offset)
        if not chunk:  # not expected: a blob is replaced, never truncated
            transport.abort()  # never a short body that looks complete
            raise ConnectionResetError(f"{blob.file.name} is shorter than its size")
        await response.write(chunk)
        offset += len(chunk)
        count -= len(chunk)
