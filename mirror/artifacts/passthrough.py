"""Sending artifact bytes that are not verified yet, as they arrive: the last `HOLD_BACK`
bytes go out only once every digest verified, so a client never holds a complete file with
wrong bytes.

Choices, stated plainly:
- `stream_download`: a client of a shared download (`download.Download`) streams from its
  growing temp file (or another process's). A file smaller than `HOLD_BACK` is checked before
  any header goes out (a mismatch is a clean 502 JSON); a larger one is cut off before its end
  on a mismatch. These bytes are being stored, so they go out with the stored copy's caching.
- `relay_uncached`: with no room to store (a full disk), one client gets the upstream's bytes
  relayed while they are hashed, with the same hold-back, `Cache-Control: no-store`.
- `relay_range`: a Range request on a miss is answered with the upstream's own 206 for that
  range, relayed chunk by chunk (nothing held in memory), while the full download runs once in
  the background and is verified before it is stored. What a relayed range is: UNVERIFIED
  bytes, as upstream sent them (the file's digest covers the whole file; a client such as uv
  reads a wheel's central directory and METADATA through them, so what it resolves with may
  be bytes the mirror later refuses). What it is not: cached (`no-store`, no ETag: the mirror
  cannot vouch for it), long (`RANGE_RELAY_MAX` bytes, within `deadline` seconds; how many at
  once is the caller's bound), or served for a file known bad (the caller cuts relays still
  open when the download fails verification and relays nothing more of that file until a
  download of it verifies; nor before the first-seen pin was checked against shared state).
  The upstream's answer must be exactly the range asked for, of a file of the declared size;
  any other answer, or a failure before the headers, leaves the request to the download
  (`None`).
- The download ledger is noted as the headers go out, as for hits: an impact report had better
  name a client that hung up mid-body than miss one that did not.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable

from aiohttp import web

from mirror import errors
from mirror.artifacts.download import HOLD_BACK, Download
from mirror.artifacts.pinning import Pins
from mirror.blobs.store import ALGORITHMS, BlobEntry, check_digests
from mirror.model import ArtifactRef
from mirror.upstream import Upstream, UpstreamStream, identity_encoded

log = logging.getLogger(__name__)

# How much of a growing file is read (and sent) at a time.
READ_SIZE = 256 * 1024
# The longest range relayed from upstream on a miss (unverified bytes; a resolver reading a
# wheel's central directory and METADATA asks for some KiB). Longer ones wait for the download.
RANGE_RELAY_MAX = 8 * 1024 * 1024
# `Content-Range: bytes first-last/complete` as a 206 states it (RFC 9110 §14.4).
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})")


async def stream_download(
    request: web.Request,
    download: Download,
    *,
    cache_control: str,
    record: Callable[[], None],
) -> web.StreamResponse | BlobEntry:
    """Send the download's bytes as they are stored, holding back the unverified tail; or,
    when another worker process stored it before any byte went out, its entry, for the caller
    to serve as a hit. Raises the download's error while no header has been sent."""
    ref = download.ref
    download.readers += 1
    response: web.StreamResponse | None = None
    sent = 0
    try:
        while True:
            progress = download.progress
            if download.entry is not None and download.source is None and response is None:
                return download.entry  # another worker process stored it: a hit now
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
                    response = await _start_stream(request, download, cache_control, record)
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
                    response = await _start_stream(request, download, cache_control, record)
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


async def _start_stream(
    request: web.Request, download: Download, cache_control: str, record: Callable[[], None]
) -> web.StreamResponse:
    ref = download.ref
    headers = {"Content-Type": ref.content_type, "Cache-Control": cache_control}
    entry = download.entry
    if entry is not None:
        headers["ETag"] = f'"{entry.etag}"'
    elif (etag := declared_etag(ref)) is not None:
        headers["ETag"] = etag
    response = web.StreamResponse(headers=headers)
    size = entry.size if entry is not None else download.expected_size
    if size is not None:
        response.content_length = size
    record()
    await response.prepare(request)
    return response


async def relay_uncached(
    request: web.Request,
    ref: ArtifactRef,
    *,
    upstream: Upstream,
    pins: Pins,
    record: Callable[[], None],
) -> web.StreamResponse:
    """Relay the upstream bytes to this one client while hashing them, holding the last
    `HOLD_BACK` bytes in memory until every declared digest verifies (the same promise
    as a stored download: never a complete file with the wrong bytes)."""
    if request.method == "HEAD":
        return await _head_uncached(request, ref, upstream)
    pinned = await pins.pin_declared(ref)
    expected = (*ref.digests, *pinned)
    hashes = {
        name: hashlib.new(name)
        for name in {"sha256", *(d.algorithm for d in expected if d.algorithm in ALGORITHMS)}
    }
    response: web.StreamResponse | None = None
    tail = bytearray()
    received = 0
    try:
        async with upstream.stream(ref.upstream_url, ecosystem=ref.ecosystem) as answer:
            size = ref.size if ref.size is not None else answer.content_length
            async for chunk in answer.iter_chunks():
                received += len(chunk)
                for hasher in hashes.values():
                    hasher.update(chunk)
                tail += chunk
                if len(tail) > HOLD_BACK:
                    if response is None:
                        response = await _start_uncached(request, ref, size, record)
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
        pins.refused("mismatch", ref)
        if response is None:
            raise
        if request.transport is not None:
            request.transport.abort()  # headers are out: cut it short of the end
        return response
    if response is None:
        headers = {"Content-Type": ref.content_type, "Cache-Control": "no-store"}
        record()
        return web.Response(body=bytes(tail), headers=headers)
    await response.write(bytes(tail))
    await response.write_eof()
    return response


async def _head_uncached(
    request: web.Request, ref: ArtifactRef, upstream: Upstream
) -> web.StreamResponse:
    """HEAD with no room to store: the upstream's answer to HEAD, no body fetched."""
    try:
        answer = await upstream.head(ref.upstream_url, ecosystem=ref.ecosystem)
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


async def _start_uncached(
    request: web.Request, ref: ArtifactRef, size: int | None, record: Callable[[], None]
) -> web.StreamResponse:
    # no-store: these bytes were not kept, so nobody should treat them as the cached copy.
    response = web.StreamResponse(
        headers={"Content-Type": ref.content_type, "Cache-Control": "no-store"}
    )
    if size is not None:
        response.content_length = size
    record()
    await response.prepare(request)
    return response


def declared_etag(ref: ArtifactRef) -> str | None:
    """The ETag the stored blob will have (its sha256), when the metadata declares it: a
    stored copy is only ever served with this digest verified."""
    declared = next((d for d in ref.digests if d.algorithm == "sha256"), None)
    return None if declared is None else f'"{declared.hexdigest.strip().lower()}"'


def byte_span(wanted: slice, size: int) -> tuple[int, int] | None:
    """(offset, count) of the one byte range `wanted` (as aiohttp's `http_range` gives it:
    `slice(a, b + 1)`, `slice(a, None)`, `slice(-n, None)`) of a file of `size` bytes; None
    when it starts past the end (416). A range past the end stops at the end."""
    start, stop = wanted.start, wanted.stop
    if start is None:
        return 0, size
    if start < 0 and stop is None:  # the last -start bytes
        start = max(size + start, 0)
        stop = size
    if start >= size:  # (a suffix of an empty file too)
        return None
    return start, min(stop if stop is not None else size, size) - start


async def relay_range(
    request: web.Request,
    ref: ArtifactRef,
    *,
    upstream: Upstream,
    record: Callable[[], None],
    deadline: float,
    size_agrees: Callable[[ArtifactRef, int], bool],
) -> web.StreamResponse | None:
    """Answer a GET of one byte range of `ref` (not stored) with the upstream's 206 for it,
    relayed as it arrives (see the module docstring). None, with nothing sent, when it cannot
    be: several or malformed ranges, a range longer than `RANGE_RELAY_MAX`, an upstream that
    ignores ranges, answers another range, a size `size_agrees` refuses, or fails. The whole
    relay takes at most `deadline` seconds: a client that stops reading (or an upstream that
    stalls) is cut off then, so it cannot hold a relay slot."""
    try:
        wanted = request.http_range
    except ValueError:
        return None  # several ranges, or a malformed one: answered as hits answer them
    asked = _range_header(wanted, ref.size)
    if asked is None:
        return None
    response: web.StreamResponse | None = None
    sent = count = 0
    try:
        async with (
            asyncio.timeout(deadline),
            upstream.stream(ref.upstream_url, ecosystem=ref.ecosystem, byte_range=asked) as answer,
        ):
            span = _relayable(answer, wanted, ref, size_agrees)
            if span is None:
                return None  # leaving the block drops the upstream connection unread
            offset, count, size = span
            response = web.StreamResponse(
                status=206,
                headers={
                    "Content-Type": ref.content_type,
                    "Cache-Control": "no-store",
                    "Accept-Ranges": "bytes",
                    "Content-Range": f"bytes {offset}-{offset + count - 1}/{size}",
                },
            )
            response.content_length = count
            record()
            await response.prepare(request)
            async for chunk in answer.iter_chunks():
                chunk = chunk[: count - sent]
                await response.write(chunk)
                sent += len(chunk)
                if sent == count:
                    break
    except TimeoutError:
        if response is None:
            return None  # nothing sent: the download answers
        # Past the deadline (a client that stopped reading, a stalled upstream): cut below.
    except errors.UpstreamError:
        if response is None:
            return None  # the download will say what is wrong
        # The upstream failed mid-body: cut the answer short below.
    except ConnectionError:
        if response is None:
            raise
        return response  # the client left (or the relay was cut: see the caller)
    if response is None:  # unreachable: every way here prepared it
        raise RuntimeError(f"{ref.cache_key}: a relayed range without a response")
    if sent != count:
        if request.transport is not None:
            request.transport.abort()  # never a short body that looks complete
        return response
    await response.write_eof()
    return response


def _range_header(wanted: slice, size: int | None) -> str | None:
    """The `Range` to ask upstream for, or None when the range is not to be relayed (longer
    than `RANGE_RELAY_MAX`, open-ended on a file of unknown size, or past the declared end:
    the stored copy answers 416 without asking upstream)."""
    start, stop = wanted.start, wanted.stop
    if start is None:
        return None
    if start < 0 and stop is None:
        return f"bytes={start}" if -start <= RANGE_RELAY_MAX else None
    if size is not None and start >= size:
        return None
    if stop is not None:
        return f"bytes={start}-{stop - 1}" if stop - start <= RANGE_RELAY_MAX else None
    if size is None or size - start > RANGE_RELAY_MAX:
        return None
    return f"bytes={start}-"


def _relayable(
    answer: UpstreamStream,
    wanted: slice,
    ref: ArtifactRef,
    size_agrees: Callable[[ArtifactRef, int], bool],
) -> tuple[int, int, int] | None:
    """(offset, count, file size) of the upstream's answer when it is exactly the range asked
    for, of a file of a size `size_agrees` accepts, unencoded; else None."""
    if answer.status != 206:
        return None  # the whole file: the download fetches it already
    match = _CONTENT_RANGE.fullmatch(answer.headers.get("Content-Range", "").strip())
    if match is None:
        return None
    first, last, size = (int(group) for group in match.groups())
    if not size_agrees(ref, size):
        return None
    span = byte_span(wanted, size)
    if span is None or not identity_encoded(answer.headers) or span != (first, last - first + 1):
        return None
    if answer.content_length is not None and answer.content_length != span[1]:
        return None
    return span[0], span[1], size
