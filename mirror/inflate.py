"""Inflating untrusted compressed bytes a step at a time, never past a cap: written once, for
upstream documents (`mirror.upstream`) and request bodies (`mirror.requestbody`). Pure."""

from __future__ import annotations

import zlib

# Bytes of output one step produces at most.
STEP_BYTES = 1024 * 1024


def inflate_steps(
    decoder: zlib._Decompress, data: bytes, *, room: int | None, steps: int | None = None
) -> bytes:
    """Decompress `data` (after what `decoder` kept of earlier input) STEP_BYTES at a time,
    at most `steps` steps (None: until the input is used up); unless `room` is None, stop just
    past `room` bytes of output, so a bomb never expands fully in memory (the caller compares the
    length with `room`). Input not taken stays in `decoder.unconsumed_tail`; zlib.error
    propagates."""
    parts: list[bytes] = []
    produced = taken = 0
    data = decoder.unconsumed_tail + data if decoder.unconsumed_tail else data
    while steps is None or taken < steps:
        step = STEP_BYTES if room is None else min(STEP_BYTES, room - produced + 1)
        piece = decoder.decompress(data, step)
        taken += 1
        parts.append(piece)
        produced += len(piece)
        data = decoder.unconsumed_tail
        if not data or decoder.eof or (room is not None and produced > room):
            break
    return b"".join(parts)
