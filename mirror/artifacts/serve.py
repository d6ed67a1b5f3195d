"""Serves artifacts (tarballs, wheels, jars…) after the adapter's policy check: from disk on a
hit, or through the shared download (`download`) on a miss, streamed while it is stored
(`passthrough`).

Choices, stated plainly:
- Hit: the blob, opened once and sent from that open file (sendfile where the event loop has
  it), with a strong ETag (the sha256), cacheable for `ARTIFACT_MAX_AGE` then revalidated (so
  a block wins at a cache in front within that bound), one byte range and conditional requests
  (always after the adapter's policy check: a blocked file never answers 304); never
  compressed. aiohttp's `FileResponse` is not used: its ETag is mtime-size and cannot be
  replaced through its public API, and it opens the path itself.
  If the digest the adapter now declares differs from the verified one, the request is refused
  (`pinning`). Small blobs are answered from memory, re-verified once per process.
- Miss: the shared download starts (or is joined) first, whatever the request: the file is
  fetched once, verified and stored as always. GET streams it as it is stored
  (`passthrough.stream_download`). HEAD is answered from an upstream HEAD (its size, checked
  against the declared one) without waiting for the download; a Range request with the
  upstream's 206 for that range, relayed (`passthrough.relay_range`: unverified bytes,
  `no-store`, bounded in length and `RANGE_RELAYS_AT_ONCE` per process) — what a resolver
  reading a wheel's metadata by ranges needs before a first byte; neither carries an ETag.
  Neither is answered when the declared digest differs from the first-seen one or shared state
  could not confirm it (`pinning`), nor for a file whose last download failed verification;
  relays still open when a download fails verification are cut. Each relay has a deadline
  (`RANGE_RELAY_DEADLINE`): a client that stops reading does not keep its slot. Whatever
  cannot be answered so (conditional requests, several ranges, an upstream that ignores
  ranges or disagrees on the size, no free relay) waits for the download, then is answered
  from disk like a hit.
  A full disk does not stop installs: the client gets the verified bytes uncached
  (`passthrough.relay_uncached`).
- Every GET that sends the file (200/206) is written to the download ledger in the background;
  the ledger never delays or fails a download.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import partial

from aiohttp import ETag, web

from mirror import errors
from mirror.artifacts.download import Download, Downloads
from mirror.artifacts.passthrough import (
    byte_span,
    relay_range,
    relay_uncached,
    stream_download,
)
from mirror.artifacts.pinning import Pins, count_late_conflict
from mirror.blobs.store import BlobEntry, BlobStore, BlobVanished, OpenBlob
from mirror.budget import BudgetedLRU, ByteBudget
from mirror.clock import Clock
from mirror.config import IPNetwork
from mirror.forwarded import READ_TOKEN
from mirror.ledger import DownloadLedger
from mirror.metrics import Metrics
from mirror.model import ArtifactRef
from mirror.replay import REPLAY_BODY, ArtifactBody
from mirror.servingstate import ServingState
from mirror.state import backend_name
from mirror.state.base import StateStore
from mirror.upstream import Upstream

log = logging.getLogger(__name__)

# Stored artifacts may be kept by a cache in front for at most 5 minutes, then revalidated
# with their strong ETag: a cheap 304 while still allowed, a 403 once blocked. So a block wins
# at such a cache within this bound (must-revalidate: not even a disconnected cache may serve
# the file past it). Bytes relayed without being stored go out `no-store`.
ARTIFACT_MAX_AGE = 300  # seconds
ARTIFACT_CACHE_CONTROL = f"public, max-age={ARTIFACT_MAX_AGE}, must-revalidate"
# Small artifacts (most npm tarballs, poms, checksums) are answered from memory: a thread hop
# to open the file and a sendfile call cost more than the bytes themselves.
HOT_FILE_MAX = 256 * 1024
# Held from the worker's shared memory budget; this one only when none is given (tests).
HOT_BUDGET = 64 * 1024 * 1024
# Without sendfile (uvloop), a blob is sent in chunks of this size read off the event loop
# (what aiohttp's FileResponse falls back to).
SEND_CHUNK = 256 * 1024
# Ranged answers relayed from upstream on a miss at once, per worker process: a client asking
# for many ranges of an uncached file gets the rest answered once the download is stored.
RANGE_RELAYS_AT_ONCE = 8
# How long one relayed range may take, headers to last byte (its bytes are at most
# `RANGE_RELAY_MAX`): a client that stops reading is cut off then and its relay slot freed.
RANGE_RELAY_DEADLINE = timedelta(seconds=60)
# Keys whose last download failed verification (no early answer for them; see `_refused`)
# and keys whose size disagreement was logged: this many each, the oldest forgotten first.
MAX_NOTED_KEYS = 4096
# Headers that make a request conditional: judged only on a stored, verified copy.
_CONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range")


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
        range_relays: int = RANGE_RELAYS_AT_ONCE,
        range_relay_deadline: timedelta = RANGE_RELAY_DEADLINE,
    ) -> None:
        self._blobs = blobs
        self._upstream = upstream
        self._metrics = metrics
        self._clock = clock
        self._hot: BudgetedLRU[str, bytes] = BudgetedLRU(
            budget or ByteBudget(HOT_BUDGET), "small artifacts", len
        )
        backend = backend_name(state)
        self.ledger = DownloadLedger(
            state, metrics, backend=backend, trusted_proxies=trusted_proxies
        )
        # Shared state as the serving path uses it (bounded, remembered, retried): the Maven
        # adapter's publish times go through it too.
        self.shared = ServingState(
            state,
            metrics,
            backend=backend,
            timeout=state_timeout,
            on_conflict=partial(count_late_conflict, metrics),
            budget=budget,
        )
        self._pins = Pins(self.shared, metrics)
        self._downloads = Downloads(
            blobs=blobs, upstream=upstream, pins=self._pins, metrics=metrics, shared=self.shared
        )
        self._range_relays = asyncio.Semaphore(range_relays)
        self._range_relay_deadline = range_relay_deadline.total_seconds()
        # Keys whose last download failed verification: nothing of them is answered early.
        self._refused: OrderedDict[str, None] = OrderedDict()
        # Keys whose size upstream disagrees on, logged once each.
        self._size_disagreements: OrderedDict[str, None] = OrderedDict()

    # public API ---------------------------------------------------------------------------

    async def serve(self, request: web.Request, ref: ArtifactRef) -> web.StreamResponse:
        """Answer GET/HEAD for `ref` (the policy check has passed). Raises IntegrityError,
        NotFound, upstream errors or StorageFull while no header has been sent."""
        entry = await self._blobs.lookup(ref.cache_key)
        if entry is not None:
            self._pins.check_stored(ref, entry)
            response = await self._send_blob(request, ref, entry)
            if response is not None:
                return response
            self._blobs.forget(ref.cache_key)
        self._metrics.cache_misses.labels(ref.ecosystem, "artifact").inc()
        self._metrics.traffic.miss(ref.ecosystem)
        download = self._joined(ref)  # runs on its own: nobody need wait for it
        record = partial(self.record_download, request, ref)
        try:
            if request.method == "HEAD" or "Range" in request.headers:
                early = await self._answer_before_stored(request, ref, download, record)
                if early is not None:
                    return early
                return await self._serve_stored(request, ref, await download.stored())
            streamed = await stream_download(
                request, download, cache_control=ARTIFACT_CACHE_CONTROL, record=record
            )
            if isinstance(streamed, BlobEntry):  # stored by another worker process first
                return await self._serve_stored(request, ref, streamed)
            return streamed
        except errors.StorageFull as exc:
            # Nothing was sent (the store failed before the first byte): a full disk must
            # not stop installs, so this client gets the verified bytes without caching.
            log.error("%s; serving %s without caching it", exc, ref.cache_key)
            self._metrics.child(self._metrics.uncached_serves, ref.ecosystem).inc()
            return await relay_uncached(
                request, ref, upstream=self._upstream, pins=self._pins, record=record
            )

    def still_agrees(self, ref: ArtifactRef, entry: BlobEntry) -> bool:
        """Whether the stored `entry` of `ref` would still be served as it is (its digests
        agree with the declared ones and the first-seen pin): for an answer kept beyond this
        server (the hot path); memory only."""
        return self._pins.agrees(ref, entry)

    async def store(
        self, ref: ArtifactRef, *, for_client: bool = True, max_size: int | None = None
    ) -> tuple[BlobEntry, bool]:
        """Make sure `ref` is in the cache (the policy check has passed) without sending it to
        anyone, as a pre-warm does: its blob, and whether it was there already. A miss joins
        the shared download (one upstream fetch however many clients, workers and hosts ask,
        verified before it is stored). Nobody receives the bytes, so nothing is written to the
        download ledger. `for_client=False` (the dashboard's review reading a file): no cache
        lookup of a client, so no miss is counted (the upstream bytes still are: upstream sent
        them). `max_size`: a download this call starts fetches at most that many bytes
        (stopped as they arrive, nothing stored: UpstreamError); a stored blob or a download
        already running is returned whatever its size. Raises what a download raises
        (IntegrityError, StorageFull, …)."""
        entry = await self._blobs.lookup(ref.cache_key)
        if entry is not None:
            self._pins.check_stored(ref, entry)
            return entry, True
        if for_client:
            self._metrics.cache_misses.labels(ref.ecosystem, "artifact").inc()
            self._metrics.traffic.miss(ref.ecosystem)
        return await self._joined(ref, max_size=max_size).stored(), False

    async def close(self) -> None:
        """Let downloads in progress finish for a moment, then cancel them (their temp files
        are removed); then the same for pending ledger writes."""
        await self._downloads.close()
        await self.ledger.close()
        await self.shared.close()

    # misses answered before the download is stored ---------------------------------------

    def _joined(self, ref: ArtifactRef, *, max_size: int | None = None) -> Download:
        """The shared download of `ref`; its outcome is noted for early answers (`_refused`)."""
        download = self._downloads.join(ref, max_size=max_size)
        if download.task is not None:
            download.task.add_done_callback(partial(self._note_outcome, download))
        return download

    def _note_outcome(self, download: Download, _task: object) -> None:
        key = download.ref.cache_key
        if isinstance(download.error, errors.IntegrityError):
            _note(self._refused, key)
        elif download.entry is not None:
            self._refused.pop(key, None)

    async def _answer_before_stored(
        self,
        request: web.Request,
        ref: ArtifactRef,
        download: Download,
        record: Callable[[], None],
    ) -> web.StreamResponse | None:
        """A HEAD or a Range request on a miss, answered from upstream while the download runs
        (see the module docstring); None (nothing sent) to wait for the download instead:
        also for a file whose last download failed verification (known bad), and when the
        first-seen pin could not be checked against shared state (`Pins.unchanged`)."""
        if any(name in request.headers for name in _CONDITIONS):
            return None
        if ref.cache_key in self._refused:
            return None  # known bad: the download says so
        if request.method == "HEAD":
            if not await self._pins.unchanged(ref):
                return None  # the download refuses these bytes and says so
            size = await self._upstream_size(ref)
            return None if size is None else await self._head_unstored(request, ref, size)
        if self._range_relays.locked():
            return None
        async with self._range_relays:
            if not await self._pins.unchanged(ref):
                return None  # the download refuses these bytes: none is relayed first
            # Relayed bytes are unverified: once the download proves them bad, the relay is
            # cut (never a clean end), whatever it has sent.
            guard = asyncio.get_running_loop().create_task(
                _cut_when_refused(request, download), name=f"relay guard {ref.cache_key}"
            )
            try:
                return await relay_range(
                    request,
                    ref,
                    upstream=self._upstream,
                    record=record,
                    deadline=self._range_relay_deadline,
                    size_agrees=self._size_agrees,
                )
            finally:
                guard.cancel()

    def _size_agrees(self, ref: ArtifactRef, size: int) -> bool:
        """Whether upstream's `size` for `ref` agrees with the declared one (when declared);
        a disagreement is logged once per key (the download judges the bytes)."""
        if ref.size is None or size == ref.size:
            return True
        if ref.cache_key not in self._size_disagreements:
            _note(self._size_disagreements, ref.cache_key)
            log.warning(
                "upstream says %s has %d bytes, its metadata %d: answering it only once "
                "downloaded and verified",
                ref.cache_key,
                size,
                ref.size,
            )
        return False

    async def _upstream_size(self, ref: ArtifactRef) -> int | None:
        """The file's size as upstream answers a HEAD, when it agrees with the declared one;
        None when upstream fails, does not say, or disagrees (the download judges it)."""
        try:
            size = await self._upstream.artifact_size(ref.upstream_url, ecosystem=ref.ecosystem)
        except errors.UpstreamError:
            return None  # logged by `upstream`; the download answers for it
        if size is None:
            return ref.size  # it is there; its metadata says how big
        return size if self._size_agrees(ref, size) else None

    async def _head_unstored(
        self, request: web.Request, ref: ArtifactRef, size: int
    ) -> web.StreamResponse:
        # no-store and no ETag: the mirror has not verified these bytes yet (as for a relayed
        # range), so neither a cache in front nor the client may take them for the stored copy.
        headers = {
            "Content-Type": ref.content_type,
            "Cache-Control": "no-store",
            "Accept-Ranges": "bytes",
        }
        response = web.StreamResponse(headers=headers)
        response.content_length = size
        await response.prepare(request)
        await response.write_eof()
        return response

    # hits ---------------------------------------------------------------------------------

    async def _send_blob(
        self, request: web.Request, ref: ArtifactRef, entry: BlobEntry
    ) -> web.StreamResponse | None:
        """Send the stored blob (prepared here, so a vanished blob can still become a miss);
        None if the blob vanished before any byte went out."""

        def on_send(status: int, sent: int) -> None:
            # Called just before the headers go out, once the blob is open. `sent`: the body
            # bytes this answer carries (0 for a HEAD or a 304, the range's for a 206): what
            # the cache saved upstream for this request.
            self._metrics.hit(ref.ecosystem, "artifact")
            self._metrics.traffic.hit(ref.ecosystem, sent)
            if request.method == "GET" and status in (200, 206):
                self.record_download(request, ref)

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
        on_send: Callable[[int, int], None],
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
        if not_modified(request, entry.etag):
            on_send(304, 0)
            return web.Response(status=304, headers=headers)
        on_send(200, len(data) if request.method == "GET" else 0)
        # Verified bytes from memory, a plain 200: the hot path may answer it again.
        request[REPLAY_BODY] = ArtifactBody(ref=ref, blob=entry)
        return web.Response(body=data, headers=headers)

    async def _serve_stored(
        self, request: web.Request, ref: ArtifactRef, entry: BlobEntry
    ) -> web.StreamResponse:
        response = await self._send_blob(request, ref, entry)
        if response is None:
            raise errors.UpstreamUnavailable(
                f"{ref.filename} was evicted right after it was stored; retry"
            )
        return response

    # ledger -------------------------------------------------------------------------------

    def record_download(self, request: web.Request, ref: ArtifactRef) -> None:
        """Note in the download ledger that `request` received `ref` (never blocks or fails)."""
        # Who: the address, the read token the access check accepted, what the client says;
        # noted as sent (one append), read when the ledger gathers its rows.
        headers = request.headers
        self.ledger.note_served(
            ref,
            peer=request.remote,
            forwarded_for=headers.get("X-Forwarded-For"),
            user_agent=headers.get("User-Agent"),
            command=headers.get("npm-command"),
            session=headers.get("npm-session"),
            token=request.get(READ_TOKEN, ""),
            at=self._clock.now(),
        )


async def _cut_when_refused(request: web.Request, download: Download) -> None:
    """Abort `request`'s connection if `download` fails verification."""
    try:
        await download.stored()
    except errors.IntegrityError:
        if request.transport is not None:
            request.transport.abort()
    except Exception:  # any other outcome: the relay ends on its own
        return


def _note(keys: OrderedDict[str, None], key: str) -> None:
    keys[key] = None
    keys.move_to_end(key)
    while len(keys) > MAX_NOTED_KEYS:
        keys.popitem(last=False)


async def _send_open_blob(
    request: web.Request,
    blob: OpenBlob,
    *,
    etag: str,
    headers: Mapping[str, str],
    on_send: Callable[[int, int], None],
) -> web.StreamResponse:
    """Answer `request` from the opened `blob` (then closed) and return the finished response.
    Conditional requests are judged on the strong `etag`, ranges and dates as aiohttp's
    `FileResponse` judges them: If-Match (412), If-None-Match or else If-Modified-Since (304),
    one byte range (206, or 416 with `bytes */size`), If-Range as a date (an older copy gets
    the whole file). `on_send(status, body bytes)` runs just before the headers go out."""
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
        sends_body = status in (200, 206) and request.method != "HEAD"
        on_send(status, count if sends_body else 0)
        try:
            await response.prepare(request)
            if sends_body and count:
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
    if wanted.start is None:
        return 200, 0, size
    span = byte_span(wanted, size)
    if span is None:
        return 416, 0, 0
    return 206, *span


def _etag_matches(etag: str, tags: tuple[ETag, ...], *, weak: bool) -> bool:
    """Whether `etag` is among `tags` (`*` matches any); weak tags count only with `weak`."""
    if len(tags) == 1 and tags[0].value == "*":
        return True
    return any(tag.value == etag for tag in tags if weak or not tag.is_weak)


def not_modified(request: web.Request, etag: str) -> bool:
    """Whether `request`'s If-None-Match names the strong ETag `etag` (unquoted) or is `*`:
    then the answer is a 304 (weak tags count, RFC 9110 §13.1.2)."""
    tags = request.if_none_match
    return bool(tags) and _etag_matches(etag, tags or (), weak=True)


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
        chunk = await asyncio.to_thread(os.pread, fd, min(SEND_CHUNK, count), offset)
        if not chunk:  # not expected: a blob is replaced, never truncated
            transport.abort()  # never a short body that looks complete
            raise ConnectionResetError(f"{blob.file.name} is shorter than its size")
        await response.write(chunk)
        offset += len(chunk)
        count -= len(chunk)
