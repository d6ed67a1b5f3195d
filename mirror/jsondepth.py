"""How deeply an untrusted JSON document nests, measured before any parser sees it.

A JSON parser goes one level deeper per `[` or `{`; orjson 3.8 crashed the whole process
(a segfault, not an exception) on 200,000 of them, a 400 KB document. Every orjson/json parse
of an upstream JSON document calls `check_depth` first, so a hostile or broken upstream costs
one 502, never a worker. (npm packuments are parsed with msgspec, which stops by itself at
the interpreter's recursion limit and needs no scan.) Pure: no I/O, no parsing."""

from __future__ import annotations

import re
from itertools import accumulate

from mirror.errors import BadUpstreamDocument

# Real documents nest a few levels (a packument about 6); 512 leaves room for any honest
# one and stays far below what a recursive parser can take.
MAX_DEPTH = 512

# A string once escaped quotes are gone: a quote, anything but a quote, a quote.
_STRING = re.compile(rb'"[^"]*"')
_NOT_QUOTE_OR_BRACKET = bytes(byte for byte in range(256) if byte not in b'"[]{}')
_STEP = [0] * 256
for _opening in b"[{":
    _STEP[_opening] = 1
for _closing in b"]}":
    _STEP[_closing] = -1


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in `raw` (`[]` is 1, `[[1]]` is 2), brackets
    inside strings not counted. For a document that is not valid JSON the answer may be too
    high, never too low for the part a parser would accept before it fails."""
    # Escapes go first, backslash pairs before escaped quotes (left to right, as a parser
    # reads them), so every quote left opens or closes a string.
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Only quotes and brackets matter. Two adjacent quotes delimit nothing (an empty string,
    # or two strings with no bracket between them), so removing them keeps every other
    # bracket inside or outside as it was, and leaves few strings for the slower regex.
    marks = text.translate(None, _NOT_QUOTE_OR_BRACKET).replace(b'""', b"")
    brackets = _STRING.sub(b"", marks)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def check_depth(raw: bytes, what: str, limit: int = MAX_DEPTH) -> None:
    """Raise BadUpstreamDocument naming `what` ("the upstream packument of left-pad") when
    `raw` nests deeper than `limit` levels; return at once when it cannot."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return  # fewer openings than the limit, strings included: cannot be deeper
    depth = nesting_depth(raw)
    if depth > limit:
        raise BadUpstreamDocument(
            f"{what} nests {depth} levels deep (more than {limit}); not parsed"
        )
