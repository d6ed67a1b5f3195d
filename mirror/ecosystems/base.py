"""The small interface every ecosystem adapter implements, and the request-path decoding
they share (their value types are in `mirror.model`). Nothing here does I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from mirror.errors import BadRequest
from mirror.model import ArtifactRef, Explanation

if TYPE_CHECKING:
    from aiohttp import web


def decode_path_segment(segment: str, *, encoded_slash: str) -> str:
    """Percent-decode one raw path segment. An encoded slash or backslash is refused with
    `encoded_slash` as the message (it would let a segment smuggle in a path separator);
    malformed escapes and invalid UTF-8 are refused too. Raises BadRequest."""
    if "%" not in segment:
        return segment
    if re.search("%(2f|5c)", segment, re.IGNORECASE):
        raise BadRequest(encoded_slash)
    raw = segment.encode("utf-8", "surrogateescape")
    decoded = bytearray()
    index = 0
    while index < len(raw):
        if raw[index] == 0x25:  # '%'
            pair = raw[index + 1 : index + 3]
            if len(pair) != 2 or not re.fullmatch(rb"[0-9A-Fa-f]{2}", pair):
                raise BadRequest("malformed percent-encoding in the path")
            decoded.append(int(pair, 16))
            index += 3
        else:
            decoded.append(raw[index])
            index += 1
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the path is not valid UTF-8 after decoding") from None


class Ecosystem(Protocol):
    name: str

    def routes(self) -> Iterable[web.RouteDef]:
        """The aiohttp routes this adapter serves, under its own URL prefix."""
        ...

    async def close(self) -> None:
        """Stop what the adapter runs in the background; called at shutdown before the
        shared services (the artifact and blob stores) close."""
        ...

    async def explain(self, package: str, version: str) -> Explanation:
        """Why `package@version` is allowed, held, blocked or exempted right now."""
        ...

    async def known_versions(self, package: str, *, fetch: bool) -> Sequence[str] | None:
        """Every version the upstream lists for `package` (held and blocked ones included),
        from the document the mirror keeps for it; None when that document lists none
        (Maven group metadata). Raises what fetching the document raises (UpstreamNotFound:
        the upstream has no such package). `fetch`: ask the upstream for the current document
        (a new rule must see a version published a minute ago); otherwise the document comes
        through the metadata cache as for a client request (the cached copy while fresh; the
        upstream is asked only when the mirror has none or it is stale)."""
        ...

    async def warm_refs(self, package: str, version: str) -> Sequence[ArtifactRef]:
        """Every file a build installing `package` `version` asks for (a pre-warm fetches them
        into the cache), found and policy-checked as for the build's requests: Held when the
        policy refuses the version (or, on PyPI, every file of it), NotFound when the upstream
        has no such version, BadRequest for a name or version that is not valid."""
        ...

    async def review_refs(self, package: str, version: str) -> Sequence[ArtifactRef]:
        """Every artifact file of `package` `version` the upstream document names (npm the
        tarball; PyPI each wheel and sdist, no metadata files; Maven the `.pom`, then the
        `.jar` when there is one), whatever the policy says of the version: what a reviewer
        compares (`mirror.ui.pages.review`), never served to a client from there. NotFound
        when the upstream has no such version, BadRequest for a name or version that is not
        valid."""
        ...
