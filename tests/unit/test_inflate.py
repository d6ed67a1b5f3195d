"""Stepwise inflation: never past the cap, the whole document without one, resumable."""

from __future__ import annotations

import gzip
import zlib

from mirror.inflate import STEP_BYTES, inflate_steps

DOCUMENT = b'{"name": "left-pad"}, ' * 300_000  # ~6.6 MB, highly compressible


def decoder() -> zlib._Decompress:
    return zlib.decompressobj(47)


def test_without_a_cap_the_whole_document_comes_back() -> None:
    assert inflate_steps(decoder(), gzip.compress(DOCUMENT), room=None) == DOCUMENT


def test_a_cap_stops_just_past_it_even_at_zero() -> None:
    for room in (0, 10, STEP_BYTES + 5):
        out = inflate_steps(decoder(), gzip.compress(DOCUMENT), room=room)
        assert len(out) == room + 1


def test_one_step_leaves_the_rest_for_the_next_call() -> None:
    inflating = decoder()
    first = inflate_steps(inflating, gzip.compress(DOCUMENT), room=None, steps=1)
    assert len(first) == STEP_BYTES
    assert inflating.unconsumed_tail
    assert first + inflate_steps(inflating, b"", room=None) == DOCUMENT
