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
- The download ledger is noted as the headers go out, as for hits: an impact report had better
  name a client that hung up mid-body than miss one that did not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from aiohttp import web

from mirror import errors
from mirror.artifacts.download import HOLD_BACK, Download
from mirror.artifacts.pinning import Pins
from mirror.blobs.store import ALGORITHMS, BlobEntry, check_digests
from mirror.model import ArtifactRef
from mirror.upstream import Upstream

# How much of a growing file is read (and sent) at a time.
READ_SIZE = 256 * 1024


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
    declared_sha256 = next((d for d in ref.digests if d.algorithm == "sha256"), None)
    if entry is not None:
        headers["ETag"] = f'"{entry.etag}"'
    elif declared_sha256 is not None:
        headers["ETag"] = f'"{declared_sha256.hexdigest.strip().lower()}"'
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
