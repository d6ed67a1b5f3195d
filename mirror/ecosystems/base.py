"""The small interface every ecosystem adapter implements, and the value types they share.
Nothing here does I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from mirror.errors import BadRequest

if TYPE_CHECKING:
    from aiohttp import web

    from mirror import policy


def parse_iso_time(value: object) -> datetime | None:
    """An ISO 8601 time from upstream metadata (`2011-03-26T19:49:50.232Z`; a time without a
    zone means UTC, as PyPI's JSON API writes it) as an aware UTC datetime, or None when it is
    not a time or lies outside the calendar in UTC (`9999-12-31T23:59:59-23:59`): an unknown
    publish time, which holds the version, never an exception."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Digest:
    """A declared digest from upstream metadata: algorithm in {sha512, sha256, sha1}, hex value."""

    algorithm: str
    hexdigest: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactRef:
    """What a local artifact path stands for, found in metadata the mirror fetched itself."""

    ecosystem: str
    package: str
    version: str
    filename: str
    upstream_url: str
    digests: tuple[Digest, ...]
    content_type: str = "application/octet-stream"
    size: int | None = None
    published_at: datetime | None = None

    @property
    def cache_key(self) -> str:
        return f"{self.ecosystem}/{self.package}/{self.version}/{self.filename}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """A pre-rendered, filtered view: served as bytes with no per-request work.

    `valid_until` is the next quarantine boundary (when the view would change by the clock
    alone); None means it changes only with upstream or policy."""

    body: bytes
    content_type: str
    etag: str
    gzipped: bytes | None = None
    valid_until: datetime | None = None
    last_modified: datetime | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """Why a version (or file) is visible or not, for `/api/v1/explain`."""

    ecosystem: str
    package: str
    version: str
    verdict: str
    detail: str
    published_at: datetime | None = None
    until: datetime | None = None
    rule: Mapping[str, Any] | None = None
    files: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of(
        cls,
        decision: policy.Decision,
        *,
        published_at: datetime | None,
        detail: str | None = None,
        files: tuple[Mapping[str, Any], ...] = (),
    ) -> Explanation:
        """What explain answers for `decision`: its subject, verdict, `until` and deciding
        rule, with `detail` (default: the decision's sentence) and the publish time the
        adapter shows. The one place a decision becomes an Explanation."""
        subject = decision.subject
        rule = decision.rule
        return cls(
            ecosystem=subject.ecosystem,
            package=subject.package,
            version=subject.version,
            verdict=str(decision.verdict),
            detail=decision.detail if detail is None else detail,
            published_at=published_at,
            until=decision.until,
            rule=rule.describe() if rule is not None else None,
            files=files,
        )


class Ecosystem(Protocol):
    name: str

    def routes(self) -> Iterable[web.RouteDef]:
        """The aiohttp routes this adapter serves, under its own URL prefix."""
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
