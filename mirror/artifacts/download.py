"""Downloads of artifacts from upstream: each fetched once, verified and stored, however many
clients and worker processes ask for it at the same time.

Choices, stated plainly:
- One download per cache key per process (`Downloads.join`), in its own task, so a client
  leaving never stops it. Not a `flight.SingleFlight`: waiters share the download's progress
  (they stream its bytes as they arrive, or follow another process's), not only its outcome,
  and `close()` gives downloads `CLOSE_GRACE` before cancelling them.
- Across worker processes, one fetch per key too (`mirror.blobs.claims`): while another process
  holds the fetch claim, this one follows that process's growing file instead, until the
  verified blob is stored. If that process gives up before more than `HOLD_BACK` bytes could
  have reached a client, this process fetches itself; after that, its clients get a 503 (cut
  off if their headers are out).
- Before fetching, the first-seen digest is pinned (`pinning`); the bytes are verified against
  every declared and pinned digest and against the declared size before the blob is committed:
  a mismatch, a short or an overlong body stores nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from mirror import errors
from mirror.artifacts.pinning import Pins
from mirror.blobs.claims import FetchClaim, PeerFetch
from mirror.blobs.store import ALGORITHMS, BlobEntry, BlobStore, BlobWriter, DigestMismatch
from mirror.metrics import Metrics
from mirror.model import ArtifactRef
from mirror.upstream import Upstream

log = logging.getLogger(__name__)

# The tail of a download kept from clients until its digest verified (`passthrough`).
HOLD_BACK = 1024 * 1024
# How long close() lets downloads in progress finish before cancelling them.
CLOSE_GRACE = 2.0
# While another worker process fetches the same artifact, look for its result this often,
# for at most this long (then fetch anyway: a stuck peer must not stall clients forever).
CLAIM_POLL = 0.05
OTHER_PROCESS_WAIT = 600.0


@dataclass(eq=False, slots=True)
class Download:
    """One upstream fetch shared by every client asking for the same cache key: its outcome,
    and its bytes as they arrive (`source`, `written`; `progress` is set on every change)."""

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

    async def stored(self) -> BlobEntry:
        """Wait until the download is stored (without cancelling it if this client leaves)."""
        if self.task is not None:
            await asyncio.wait({self.task})
        if self.entry is not None:
            return self.entry
        raise self.error or RuntimeError(f"{self.ref.cache_key}: no outcome")


class Downloads:
    """The downloads in progress in this worker process, one per cache key. Construct without
    I/O; `close()` ends them."""

    def __init__(
        self, *, blobs: BlobStore, upstream: Upstream, pins: Pins, metrics: Metrics
    ) -> None:
        self._blobs = blobs
        self._upstream = upstream
        self._pins = pins
        self._metrics = metrics
        self._inflight: dict[str, Download] = {}

    async def close(self) -> None:
        """Let downloads in progress finish for a moment, then cancel them (their temp files
        are removed)."""
        tasks = [d.task for d in self._inflight.values() if d.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def join(self, ref: ArtifactRef) -> Download:
        """The download of `ref` in progress in this process, or a new one, started now."""
        download = self._inflight.get(ref.cache_key)
        if download is not None:
            self._metrics.singleflight_joins.labels("artifact").inc()
            return download
        download = Download(ref=ref)
        task = asyncio.get_running_loop().create_task(
            self._run(download), name=f"artifact {ref.cache_key}"
        )
        download.task = task
        self._inflight[ref.cache_key] = download
        task.add_done_callback(_retrieve)
        return download

    async def _run(self, download: Download) -> BlobEntry:
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

    async def _fetch(self, download: Download) -> BlobEntry:
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

    async def _follow_peer(self, download: Download) -> BlobEntry | None:
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

    async def _peer_stored(self, download: Download, entry: BlobEntry) -> BlobEntry:
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

    async def _fetch_claimed(self, download: Download, claim: FetchClaim | None) -> BlobEntry:
        ref = download.ref
        entry = await self._blobs.lookup(ref.cache_key)
        if entry is not None:
            return entry  # stored by another process between our miss and our claim
        pinned = await self._pins.pin_declared(ref)
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
                            self._pins.refused("mismatch", ref)
                            raise errors.IntegrityError(
                                f"upstream sent more than the {expected} bytes declared for "
                                f"{ref.filename}: not cached"
                            )
                        await writer.write(chunk)
                        download.notify()
                except errors.UpstreamUnavailable:
                    self._pins.refused("truncated", ref)
                    raise
        except errors.UpstreamNotFound:
            raise errors.NotFound(
                f"{ref.filename} ({ref.package} {ref.version}) is not on the upstream"
            ) from None
        if expected is not None and writer.written < expected:
            self._pins.refused("truncated", ref)
            raise errors.IntegrityError(
                f"upstream sent {writer.written} of the {expected} bytes of {ref.filename}: "
                "not cached"
            )
        if not ref.digests:
            pinned = await self._pins.pin_fetched(ref, writer.hexdigests()["sha256"])
        try:
            return await writer.commit((*ref.digests, *pinned), what=ref.filename)
        except DigestMismatch as exc:
            self._pins.judge_mismatch(ref, exc, pinned)
            raise


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Waiters may all have left: mark the outcome as seen so asyncio does not log it.
    if not task.cancelled():
        task.exception()
