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
- Across hosts sharing one cache volume, one fetch per key too: the process holding its host's
  file lock also claims the fetch in shared state (`StateStore.claim_fetch`: Redis; the
  embedded state is one host's and always grants). File lock first, so one process per host
  asks the shared state and a host's other workers wait on the lock as before. The claim
  expires `CLUSTER_CLAIM_TTL` after its last renewal (renewed while the fetch runs), so a
  holder that dies holds the others up that long at most; it names the holder's temp file, which
  a waiting host follows as above (and announces in its own file claim, so its workers follow
  it too). Shared state is asked within `state.timeout` (`ServingState`): without an answer,
  the host fetches under its file lock alone (at worst one more upstream fetch per host;
  correctness never rests on a claim: the bytes are verified before they are stored).
- Before fetching, the first-seen digest is pinned (`pinning`); the bytes are verified against
  every declared and pinned digest and against the declared size before the blob is committed:
  a mismatch, a short or an overlong body stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from mirror import errors
from mirror.artifacts.pinning import Pins
from mirror.blobs.claims import FetchClaim, PeerFetch
from mirror.blobs.store import ALGORITHMS, BlobEntry, BlobStore, BlobWriter, DigestMismatch
from mirror.metrics import Metrics
from mirror.model import ArtifactRef
from mirror.servingstate import ServingState
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
# A fetch claim across hosts lasts this long past its last renewal, renewed every
# CLUSTER_RENEW seconds while the fetch runs; a host waiting on another asks every CLUSTER_POLL.
CLUSTER_CLAIM_TTL = timedelta(seconds=5)
CLUSTER_RENEW = 1.5
CLUSTER_POLL = 0.25


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
    # Bytes fetched at most (None: the declared size bounds it), for a reader that refuses
    # more anyway: counted as they arrive, and past it nothing is stored.
    max_size: int | None = None
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


class ClusterClaim:
    """This host's claim on one key's fetch across hosts (`StateStore.claim_fetch`), granted:
    renewed in the background until `release()`, and saying where the bytes are written once
    `announce`d. A renewal that finds the claim lost changes nothing here: another host then
    fetches too, which costs one more upstream fetch, never correctness."""

    def __init__(self, shared: ServingState, key: str, owner: str) -> None:
        self._shared = shared
        self.key = key
        self.owner = owner
        self._announced = ""
        self._released = False
        self._wake = asyncio.Event()
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew(), name=f"fetch claim {key}"
        )

    def announce(self, name: str) -> None:
        """Say where the bytes are written (a temp file's name in the store), at once."""
        self._announced = name
        self._wake.set()

    async def _renew(self) -> None:
        # Stopped by a flag, not cancelled: Python 3.11's wait_for may swallow a cancellation
        # that arrives as the event is set (an announcement just before the release).
        while not self._released:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CLUSTER_RENEW)
            self._wake.clear()
            if self._released:
                return
            await self._shared.renew_fetch(self.key, self.owner, CLUSTER_CLAIM_TTL, self._announced)

    async def release(self) -> None:
        """Stop renewing and drop the claim if still this host's (each step bounded by
        state.timeout)."""
        self._released = True
        self._wake.set()
        await self._renewer
        await self._shared.release_fetch(self.key, self.owner)


class _Holder(Protocol):
    """Whoever holds the claim this process waits on: another worker of this host (file lock)
    or another host (shared state)."""

    # Seconds between two asks whether the claim came free.
    poll: float

    async def open_peer(self) -> PeerFetch | None:
        """The holder's growing file, or None until it says where it writes."""
        ...

    async def free(self, download: Download) -> bool | None:
        """Whether the holder finished or gave up (so this process fetches); None when that
        cannot be told (shared state does not answer)."""
        ...


class _HostHolder:
    """Another worker process of this host holds the file lock."""

    poll = CLAIM_POLL

    def __init__(self, blobs: BlobStore, key: str) -> None:
        self._blobs = blobs
        self._key = key

    async def open_peer(self) -> PeerFetch | None:
        return await self._blobs.peer_fetch(self._key)

    async def free(self, download: Download) -> bool | None:
        probe = await self._blobs.claim(self._key)
        if probe is None:
            return False
        await asyncio.to_thread(probe.release)  # taken again by the caller to fetch
        return True


class _OtherHost:
    """Another host holds the claim in shared state; this process holds its host's file lock
    (`claim`) and announces the followed file in it for this host's other workers. When the
    claim comes free, this process holds it (`granted`)."""

    poll = CLUSTER_POLL

    def __init__(
        self, shared: ServingState, blobs: BlobStore, claim: FetchClaim, owner: str
    ) -> None:
        self._shared = shared
        self._blobs = blobs
        self._claim = claim
        self.owner = owner
        self.holder = ""
        self.announced = ""
        self.granted = False

    async def open_peer(self) -> PeerFetch | None:
        if not self.announced:
            return None
        peer = await self._blobs.peer_file(self.announced)
        if peer is not None:
            try:
                await asyncio.to_thread(self._claim.announce, self.announced)
            except OSError as exc:
                log.warning("could not announce a followed fetch: %s", exc)
        return peer

    async def free(self, download: Download) -> bool | None:
        holder = await self._shared.claim_fetch(
            download.ref.cache_key, self.owner, CLUSTER_CLAIM_TTL
        )
        if holder is None:
            return None
        if holder.owner == self.owner:
            self.granted = True
            return True
        if holder.owner != self.holder or holder.announced != self.announced:
            if download.peer is not None:
                # The followed host gave up or died and another took over.
                if download.peer_written > HOLD_BACK:
                    raise _followed_failed(download)
                download.peer.close()
                download.peer, download.peer_written = None, 0
            self.holder, self.announced = holder.owner, holder.announced
        return False


def _followed_failed(download: Download) -> errors.UpstreamUnavailable:
    return errors.UpstreamUnavailable(
        f"the fetch of {download.ref.filename} by another worker failed; retry"
    )


class Downloads:
    """The downloads in progress in this worker process, one per cache key. Construct without
    I/O; `close()` ends them. `shared` is asked for fetch claims across hosts."""

    def __init__(
        self,
        *,
        blobs: BlobStore,
        upstream: Upstream,
        pins: Pins,
        metrics: Metrics,
        shared: ServingState,
    ) -> None:
        self._blobs = blobs
        self._upstream = upstream
        self._pins = pins
        self._metrics = metrics
        self._shared = shared
        self._inflight: dict[str, Download] = {}
        self._releases: set[asyncio.Task[None]] = set()
        # Names this process in the claims it holds across hosts (seen with `redis-cli`).
        self._owner_prefix = f"{socket.gethostname()}/{os.getpid()}"

    async def close(self) -> None:
        """Let downloads in progress finish for a moment, then cancel them (their temp files
        are removed)."""
        tasks = [d.task for d in self._inflight.values() if d.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    def join(self, ref: ArtifactRef, *, max_size: int | None = None) -> Download:
        """The download of `ref` in progress in this process, or a new one, started now
        (refusing more than `max_size` bytes: see `Download.max_size`)."""
        download = self._inflight.get(ref.cache_key)
        if download is not None:
            self._metrics.singleflight_joins.labels("artifact").inc()
            return download
        download = Download(ref=ref, max_size=max_size)
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
                f"the download of {ref.filename} was stopped: the mirror is shutting down"
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
        """Fetch, verify and store `download.ref` once across worker processes and hosts:
        while another process or host holds the fetch claim, wait for its outcome instead."""
        ref = download.ref
        claim = await self._blobs.claim(ref.cache_key)
        if claim is None:
            entry = await self._follow_peer(download, _HostHolder(self._blobs, ref.cache_key))
            if entry is not None:
                return entry
            claim = await self._blobs.claim(ref.cache_key)
        cluster: ClusterClaim | None = None
        try:
            if claim is not None:
                cluster, entry = await self._claim_cluster(download, claim)
                if entry is not None:
                    return entry
            return await self._fetch_claimed(download, claim, cluster)
        finally:
            if cluster is not None:
                # In the background: the outcome is known, clients need not wait on state.
                release = asyncio.get_running_loop().create_task(cluster.release())
                self._releases.add(release)
                release.add_done_callback(self._releases.discard)
            if claim is not None:
                await asyncio.to_thread(claim.release)

    async def _claim_cluster(
        self, download: Download, claim: FetchClaim
    ) -> tuple[ClusterClaim | None, BlobEntry | None]:
        """This process holds its host's file lock: claim the fetch across hosts too, or follow
        the host that holds it until its blob is stored (the entry). (None, None) when shared
        state does not answer: the caller fetches under the file lock alone."""
        key = download.ref.cache_key
        owner = f"{self._owner_prefix}/{secrets.token_hex(6)}"
        other = _OtherHost(self._shared, self._blobs, claim, owner)
        if await other.free(download) is None:
            return None, None
        if not other.granted:
            try:
                entry = await self._follow_peer(download, other)
            except BaseException:
                # The claim may have come to this host just before the followed fetch was
                # found failed: drop it, or other hosts would wait out its TTL for nothing.
                if other.granted:
                    with contextlib.suppress(Exception):
                        await self._shared.release_fetch(key, owner)
                raise
            if entry is not None:
                return None, entry
            if not other.granted:
                return None, None  # no answer from shared state, or a wait past its bound
        return ClusterClaim(self._shared, key, owner), None

    async def _follow_peer(self, download: Download, holder: _Holder) -> BlobEntry | None:
        """Another worker process or host holds the fetch claim: stream its growing file to
        our clients (holding back the tail as for our own fetches) until its verified blob is
        stored. None if it gave up before any byte could have reached a client: then this
        process fetches itself."""
        ref = download.ref
        self._metrics.singleflight_joins.labels("artifact").inc()
        download.expected_size = ref.size
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OTHER_PROCESS_WAIT
        ask_at = loop.time()
        while loop.time() < deadline:
            if download.peer is None:
                download.peer = await holder.open_peer()
            if download.peer is not None:
                size = await download.peer.size()
                if size != download.peer_written:
                    download.peer_written = size
                    download.notify()
            entry = await self._blobs.lookup(ref.cache_key)
            if entry is not None:
                return await self._peer_stored(download, entry)
            if loop.time() >= ask_at:
                free = await holder.free(download)
                ask_at = loop.time() + holder.poll
                if free is None:
                    # Shared state does not answer. Before a byte went out, fetch; after,
                    # follow the file on until it is stored, or removed (its fetch failed).
                    followed = download.peer_written > HOLD_BACK
                    free = not followed or (
                        download.peer is not None and await download.peer.unlinked()
                    )
                if free:
                    if download.peer_written > HOLD_BACK:
                        raise _followed_failed(download)
                    break
            await asyncio.sleep(CLAIM_POLL)
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
                raise _followed_failed(download)
            peer.close()
            download.peer, download.peer_written = None, 0
            return entry  # clients are served from the stored blob
        download.peer_written = entry.size
        return entry

    async def _fetch_claimed(
        self, download: Download, claim: FetchClaim | None, cluster: ClusterClaim | None
    ) -> BlobEntry:
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
                limit = download.max_size
                if limit is not None and expected is not None and expected > limit:
                    raise _too_large(ref, limit)
                writer = download.writer = await self._blobs.begin(ref.cache_key, algorithms)
                if cluster is not None:
                    cluster.announce(writer.temp.name)
                if claim is not None:
                    try:
                        await asyncio.to_thread(claim.announce, writer.temp.name)
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
                        if limit is not None and writer.written + len(chunk) > limit:
                            raise _too_large(ref, limit)
                        await writer.write(chunk)
                        download.notify()
                except errors.UpstreamUnavailable:
                    self._pins.refused("truncated", ref, logged=False)
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


def _too_large(ref: ArtifactRef, limit: int) -> errors.UpstreamError:
    return errors.UpstreamError(
        f"{ref.filename} is over the {limit} bytes this download may fetch: not cached"
    )


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Waiters may all have left: mark the outcome as seen so asyncio does not log it.
    if not task.cancelled():
        task.exception()
