"""The path gate: one check, for every request path, that refuses the spellings a client uses
to climb out of the resource it names; and one check that an upstream URL the mirror built
stays under the ecosystem's upstream base. Pure: no I/O, no aiohttp.

Refused in a request path, in any spelling (plain, percent-encoded in either case, encoded
more than once, mixed, NFKC look-alikes): a `.` or `..` segment (also `..;param`), a slash
inside a segment, a backslash, a control character, and text that is not UTF-8 once
decoded. The one encoded slash that is allowed is npm's scope separator, `@scope%2fname`
(`%2F` from pnpm), where a package name stands: `/npm/{name}…`,
`/npm/-/package/{name}/dist-tags` and `/npm/-/npm/v1/attestations/{name}@{version}`."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote_to_bytes, urlsplit

from mirror.budget import small_input_cache
from mirror.errors import BadRequest

# A legitimate path decodes to its final form in one round; the extra rounds are where
# double (and triple) encodings are unwrapped to be judged, and beyond them a path is refused.
MAX_DECODE_ROUNDS = 4
MAX_PATH_CHARS = 4096
# `@scope%2f` (or `%40scope%2F`) at the start of a segment where an npm package name stands.
_NPM_SCOPE = re.compile(r"(?:@|%40)([A-Za-z0-9._~!*'()\-]+)%2f(.*)", re.IGNORECASE | re.DOTALL)
_DOT_SEGMENTS = frozenset({".", ".."})


def check_request_path(raw_path: str) -> None:
    """Raise BadRequest naming the problem when `raw_path` (the raw request target, query
    allowed) has a hostile spelling; return None for an acceptable path."""
    problem = path_problem(raw_path.split("?", 1)[0])
    if problem is not None:
        raise BadRequest(f"the request path is refused: {problem}")


@small_input_cache(4096)  # pure; clients ask for the same paths over and over
def path_problem(path: str) -> str | None:
    """What is wrong with `path` (raw, without the query), or None when nothing is."""
    if len(path) > MAX_PATH_CHARS:
        return f"it is longer than {MAX_PATH_CHARS} characters"
    if _plainly_safe(path):
        return None
    segments = path.split("/")
    scope_positions = _npm_name_positions(segments)
    for index, segment in enumerate(segments):
        parts = [segment]
        if index in scope_positions and (match := _NPM_SCOPE.fullmatch(segment)):
            parts = [match.group(1), match.group(2)]  # the scope and the name, each judged
        for part in parts:
            problem = segment_problem(part)
            if problem is not None:
                return problem
    return None


def segment_problem(segment: str, *, encoded_slash_allowed: bool = False) -> str | None:
    """What is wrong with one raw path segment, judged at every round of percent-decoding."""
    text = segment
    for rounds in range(MAX_DECODE_ROUNDS + 1):
        problem = _decoded_problem(text, encoded=rounds > 0, slash_ok=encoded_slash_allowed)
        if problem is not None:
            return problem
        if "%" not in text:
            return None
        try:
            decoded = unquote_to_bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            return "a segment is not UTF-8 once percent-decoded"
        if decoded == text:
            return None
        text = decoded
    return f"a segment is percent-encoded more than {MAX_DECODE_ROUNDS} times"


def _decoded_problem(text: str, *, encoded: bool, slash_ok: bool) -> str | None:
    if any(unicodedata.category(char) == "Cc" for char in text):
        return "it contains a control character"
    folded = unicodedata.normalize("NFKC", text) if not text.isascii() else text
    if "\\" in folded:
        return "it contains a backslash"
    if "/" in folded and not slash_ok:
        # A literal `/` cannot be in a raw segment: it arrived encoded (or as a look-alike).
        return "it contains an encoded slash" if encoded else "it contains a slash look-alike"
    for candidate in {*text.split("/"), *folded.split("/")}:
        # `..;x` is `..` to servlet containers (path parameters are cut before resolving).
        if candidate.split(";", 1)[0] in _DOT_SEGMENTS:
            return "it contains a '.' or '..' segment"
    return None


def _plainly_safe(path: str) -> bool:
    # The common case, decided without decoding: nothing encoded, no dot segment, no
    # backslash, printable ASCII.
    return (
        "%" not in path
        and "\\" not in path
        and "/." not in path
        and not path.startswith(".")
        and path.isascii()
        and path.isprintable()
    )


def _npm_name_positions(segments: list[str]) -> frozenset[int]:
    """Indexes of the segments where an npm package name (and so a `%2f` scope) stands."""
    if len(segments) < 2 or segments[0] != "" or segments[1] != "npm":
        return frozenset()
    tail = segments[2:]
    if not tail:
        return frozenset()
    if tail[0] != "-":
        return frozenset({2})
    if tail[1:2] == ["package"]:
        return frozenset({4})
    if tail[1:4] == ["npm", "v1", "attestations"]:
        return frozenset({6})
    return frozenset()


# upstream URLs -------------------------------------------------------------------------------


def require_under(url: str, base: str) -> str:
    """`url` when it lies under the upstream `base` (same scheme, host and port; its path
    starts with `base`'s path at a segment boundary; no dot segment in any spelling, so
    nothing on the way can resolve it upward). Raises BadRequest otherwise: the URL was
    built from client input, and the mirror never sends it."""
    target, root = urlsplit(url), urlsplit(base)
    root_path = root.path if root.path.endswith("/") else root.path + "/"
    if (
        target.scheme.lower() != root.scheme.lower()
        or target.netloc.lower() != root.netloc.lower()
        or not target.path.startswith(root_path)
        or target.fragment
    ):
        raise BadRequest("the request does not name a resource under the upstream registry")
    for segment in target.path[len(root_path) :].split("/"):
        if segment_problem(segment, encoded_slash_allowed=True) is not None:
            raise BadRequest("the request does not name a resource under the upstream registry")
    return url
