"""Request bodies, read bounded and inflated bounded, off the event loop (web layer).

aiohttp would inflate a `Content-Encoding: gzip` request body itself (`auto_decompress`),
on the event loop, as the bytes arrive; the app turns that off (`HANDLER_ARGS`) so that
`client_max_size` counts the bytes on the wire, and every handler that reads a body reads it
with `read_body`: the compressed body (at most `client_max_size`, else aiohttp's 413), then
inflated step by step in a thread, stopped just past `max_bytes` (413): a 250 KB gzip bomb
costs `max_bytes` of memory at most, never its 250 MB.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from aiohttp import web

from mirror.errors import BadRequest
from mirror.inflate import inflate_steps

# Bytes on the wire a request body may have (aiohttp answers 413 above it).
MAX_WIRE_BYTES = 16 * 1024**2
# Inflated bytes a request body may have unless a route says otherwise.
MAX_INFLATED_BYTES = 16 * 1024**2
# Keyword arguments for aiohttp's request handler (`web.Application(handler_args=...)`).
HANDLER_ARGS: dict[str, Any] = {"auto_decompress": False}
# Compressed bodies above this are inflated in a thread: one zlib call on the event loop
# would hold up every other client for as long as it runs.
INFLATE_IN_THREAD_BYTES = 64 * 1024
# Concatenated gzip members accepted in one body (a body of empty members spins otherwise).
_MAX_MEMBERS = 16
_GZIP = frozenset({"gzip", "x-gzip"})


class BodyTooLarge(BadRequest):
    status = 413
    reason = "too-large"


async def read_body(request: web.Request, *, max_bytes: int = MAX_INFLATED_BYTES) -> bytes:
    """The request body, decoded per its Content-Encoding (identity, gzip or deflate) and at
    most `max_bytes` long once decoded. Raises BodyTooLarge (413) past the cap and
    BadRequest (415/400) for another encoding or a broken compressed body."""
    raw = await request.read()
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding in ("", "identity"):
        if len(raw) > max_bytes:
            raise _too_large(max_bytes)
        return raw
    if coding not in _GZIP and coding != "deflate":
        raise BadRequest(
            f"a request body with Content-Encoding {coding[:40]!r} is not accepted "
            "(send it as is, gzip or deflate)",
            status=415,
        )
    if len(raw) > INFLATE_IN_THREAD_BYTES:
        return await asyncio.to_thread(inflate, raw, coding, max_bytes)
    return inflate(raw, coding, max_bytes)


def inflate(raw: bytes, coding: str, max_bytes: int) -> bytes:
    """`raw` inflated, never holding more than `max_bytes` + one step of output."""
    out = bytearray()
    data = raw
    members = 0
    while True:
        members += 1
        if members > _MAX_MEMBERS:
            raise BadRequest(f"the {coding} request body has more than {_MAX_MEMBERS} members")
        decoder = zlib.decompressobj(_wbits(coding, data))
        try:
            out += inflate_steps(decoder, data, room=max_bytes - len(out))
            if len(out) > max_bytes:
                raise _too_large(max_bytes)
        except zlib.error as exc:
            raise BadRequest(f"the {coding} request body is not valid {coding}: {exc}") from None
        if not decoder.eof:
            raise BadRequest(f"the {coding} request body ended early")
        data = decoder.unused_data
        if coding not in _GZIP or not data:
            return bytes(out)


def _wbits(coding: str, data: bytes) -> int:
    if coding in _GZIP:
        return 16 + zlib.MAX_WBITS
    # deflate should be zlib-wrapped (RFC 9110); some clients send raw deflate.
    if data and data[0] & 0x0F == 8:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS


def _too_large(max_bytes: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body is larger than {max_bytes} bytes once decoded")
