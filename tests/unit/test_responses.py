"""Pre-compressed views (`responses.render`) and the coding each client gets (`encoded_body`):
br when accepted, else gzip, else the body as is, by Accept-Encoding's q-values."""

from __future__ import annotations

import gzip
import json

import brotli
import pytest

from mirror import responses
from mirror.model import Rendered
from mirror.responses import encoded_body, render

BIG = json.dumps({"versions": {f"1.0.{n}": {"dist": f"t-{n}.tgz"} for n in range(200)}}).encode()


def view_of(body: bytes) -> Rendered:
    return render(body, content_type="application/json", form="full")


def test_a_big_view_has_both_compressed_bodies_of_its_bytes() -> None:
    view = view_of(BIG)
    assert view.brotli is not None
    assert view.gzipped is not None
    assert brotli.decompress(view.brotli) == BIG
    assert gzip.decompress(view.gzipped) == BIG
    assert len(view.brotli) < len(view.gzipped) < len(BIG)


def test_a_small_view_is_not_compressed() -> None:
    view = view_of(b'{"name": "tiny"}')
    assert view.brotli is None
    assert view.gzipped is None
    assert encoded_body("br, gzip", view) == (None, b'{"name": "tiny"}')


@pytest.mark.parametrize(
    ("accept_encoding", "coding"),
    [
        ("gzip, deflate, br", "br"),
        ("br", "br"),
        ("BR;q=0.1, gzip", "br"),  # accepted at all: br, whatever the weights
        ("br;q=0, gzip", "gzip"),
        ("br; q=0.000, gzip", "gzip"),
        ("gzip, deflate", "gzip"),
        ("gzip;q=0.5", "gzip"),
        ("*", "br"),
        ("*;q=0.2", "br"),
        ("br;q=0, *", "gzip"),  # a coding's own entry wins over "*"
        ("*;q=0, gzip", "gzip"),
        ("gzip;q=0, *;q=0.5", "br"),
        ("", None),
        ("identity", None),
        ("deflate", None),
        ("gzip;q=0", None),
        ("gzip;q=0.0, br;q=0", None),
        ("*;q=0", None),
        ("br;q=nan, gzip;q=2", None),  # not weights: refused
        ("br;q=high", None),
    ],
)
def test_the_coding_follows_accept_encoding(accept_encoding: str, coding: str | None) -> None:
    view = view_of(BIG)
    bodies = {"br": view.brotli, "gzip": view.gzipped, None: view.body}
    assert encoded_body(accept_encoding, view) == (coding, bodies[coding])


def test_gzip_is_the_fallback_for_a_view_without_a_brotli_body() -> None:
    # A view rendered before brotli bodies existed (or built by hand) still goes out gzipped.
    view = Rendered(
        body=BIG, content_type="application/json", etag='"e"', gzipped=gzip.compress(BIG)
    )
    assert encoded_body("br, gzip", view) == ("gzip", view.gzipped)
    assert encoded_body("br", view) == (None, BIG)


async def test_a_big_view_is_rendered_the_same_off_the_event_loop() -> None:
    body = b'{"versions": [' + b",".join(b'"1.%d.0"' % n for n in range(40_000)) + b"]}"
    assert len(body) >= responses.RENDER_IN_THREAD_BYTES
    soon = await responses.render_soon(body, content_type="application/json", form="full")
    now = responses.render(body, content_type="application/json", form="full")
    assert soon == now
    assert soon.brotli is not None
    assert brotli.decompress(soon.brotli) == body
