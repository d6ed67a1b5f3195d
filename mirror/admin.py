"""The admin API under `/api/v1/`: blocks, exemptions and freezes (create, list, show,
delete), explain, impact and the audit log. JSON in and out; errors are the app's JSON error
body. Writes need a bearer token from `admin.tokens`; reads are open unless
`admin.protect_reads`; the audit log is always protected.

Impact reports name client addresses: they need a token unless `admin.open_impact` (and
not `admin.protect_reads`). They come in pages (`limit`, `cursor`), bounded in size whatever
the ledger holds.

Every write is stored in the shared state (which tells every worker and replica), applied
to this worker at once (`policy.reload()`), appended to the audit log and logged at WARNING
on `mirror.admin` as one line (untrusted fields escaped). Every bad input is a 4xx naming
the field: control and formatting characters (`safetext`) in any text field are refused,
times are range-checked, JSON bodies are bounded in size and depth. Parsing and validation
are pure functions; handlers do the I/O."""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import hmac
import json
import logging
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from aiohttp import web

from mirror import policy, safetext, versions
from mirror.config import parse_duration
from mirror.ecosystems.base import Ecosystem, Explanation
from mirror.errors import (
    BadRequest,
    ConfigError,
    EcosystemDisabled,
    Forbidden,
    MirrorError,
    NotFound,
    StateUnavailable,
    Unauthorized,
    UpstreamNotFound,
)
from mirror.forwarded import client_address
from mirror.jsondepth import nesting_depth
from mirror.policy import iso_seconds as iso
from mirror.requestbody import read_body
from mirror.services import ECOSYSTEM_ADAPTERS, SERVICES, Services
from mirror.state.base import AuditEntry, DownloadEvent, InvalidPosition, RuleKind, RuleRecord

log = logging.getLogger("mirror.admin")

PREFIX: Final = "/api/v1"
ID_PREFIXES: Final[Mapping[RuleKind, str]] = {"block": "b-", "exemption": "e-", "freeze": "f-"}
# URL collection name of each kind, and back.
COLLECTIONS: Final[Mapping[RuleKind, str]] = {
    "block": "blocks",
    "exemption": "exemptions",
    "freeze": "freezes",
}
MAX_AUDIT_LIMIT: Final = 1000
DEFAULT_IMPACT_LIMIT: Final = 100
MAX_IMPACT_LIMIT: Final = 1000  # download events in one impact page
MAX_IMPACT_PACKAGES: Final = 1000  # package names an impact page lists
# Packages one impact page reads from the ledger, at most: a glob over many packages with
# few matches answers a short page and a cursor rather than reading the whole ledger.
MAX_PACKAGES_PER_PAGE: Final = 100
MAX_CURSOR_LENGTH: Final = 4096
MAX_REASON_LENGTH: Final = 2000
MAX_QUERY_LENGTH: Final = 512  # any one query parameter or text field but the reason
MAX_BODY_BYTES: Final = 64 * 1024
MAX_JSON_DEPTH: Final = 8  # a rule body is one flat object
MAX_TIME_TEXT: Final = 64
# Times an admin may give: far enough for any expiry, near enough for every store and format.
EARLIEST_TIME: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME: Final = datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)
# Coverage ("which versions does this rule cover now"): how many versions an answer lists,
# how long a new rule's answer waits for the upstream document, how many rules a listing
# computes it for.
MAX_COVERED_SHOWN: Final = 200
COVERAGE_TIMEOUT: Final = timedelta(seconds=10)
MAX_COVERAGE_RULES: Final = 500
LISTING_COVERAGE_TIMEOUT: Final = timedelta(seconds=3)
LISTING_COVERAGE_PARALLEL: Final = 8
NO_VERSION_WARNING: Final = "covers no version the upstream lists"
TOKENS_SETTING: Final = "MIRROR_ADMIN_TOKENS"  # the env name, not a secret

_RULE_FIELDS: Final = frozenset({"ecosystem", "package", "versions", "reason", "expires"})
_FREEZE_FIELDS: Final = frozenset({"ecosystem", "package", "published_after", "until", "reason"})
_RELATIVE = re.compile(r"^\d+(?:\.\d+)?(?:ms|s|m|h|d|w)(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))*$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: the token's name (or "anonymous" for an open read) and address."""

    actor: str
    client: str


def add_routes(app: web.Application) -> None:
    """Register every `/api/v1/` route on `app`. The handlers use the app's services
    (`SERVICES`) and its enabled adapters (`ECOSYSTEM_ADAPTERS`)."""
    routes: list[web.RouteDef] = []
    for kind, collection in COLLECTIONS.items():
        base = f"{PREFIX}/{collection}"
        routes += [
            web.post(base, _create_handler(kind)),
            web.get(base, _list_handler(kind), allow_head=False),
            web.get(f"{base}/{{id}}", _show_handler(kind), allow_head=False),
            web.delete(f"{base}/{{id}}", _delete_handler(kind)),
        ]
    routes += [
        web.get(f"{PREFIX}/explain", explain_view, allow_head=False),
        web.get(f"{PREFIX}/impact", impact_view, allow_head=False),
        web.get(f"{PREFIX}/audit", audit_view, allow_head=False),
    ]
    app.router.add_routes(routes)


# pure: authentication ---------------------------------------------------------------------


def identify(authorization: str | None, tokens: Mapping[str, str]) -> str:
    """The name of the token in an `Authorization: Bearer …` header. Raises Forbidden when no
    token is configured or the token is wrong, Unauthorized when none was presented. Every
    configured token is compared (constant time, no early exit), so timing says nothing about
    which or how many tokens exist."""
    if not tokens:
        raise Forbidden(
            f"the admin API is disabled on this mirror: set {TOKENS_SETTING} (name:token,…) or "
            "admin.tokens in config/mirror.toml and restart"
        )
    scheme, _, presented = (authorization or "").strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("this needs an admin token: send Authorization: Bearer <token>")
    presented_bytes = presented.encode("utf-8", "surrogateescape")
    matched: str | None = None
    for name, token in tokens.items():
        if hmac.compare_digest(presented_bytes, token.encode()) and matched is None:
            matched = name
    if matched is None:
        raise Forbidden("the admin token is not valid on this mirror")
    return matched


# pure: parsing and validation ------------------------------------------------------------


def parse_time(text: object, *, field: str, now: datetime, future: bool) -> datetime:
    """ISO 8601 (`2026-11-22T00:00Z`, offsets allowed, no zone = UTC), a date alone
    (`2026-11-29`, midnight UTC) or a duration (`7d`, `12h`) counted from `now`: forwards
    when `future` (expiry), backwards otherwise (cut-offs, since)."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(
            f"{field}: expected a time like 2026-11-29, 2026-11-22T00:00Z or 7d", field=field
        )
    value = safe_text(text.strip(), field, max_length=MAX_TIME_TEXT)
    if _RELATIVE.fullmatch(value.lower()):
        try:
            delta = parse_duration(value, key=field)
            moment = now + delta if future else now - delta
        except ConfigError as exc:
            raise BadRequest(str(exc), field=field) from None
        except (OverflowError, ValueError):
            raise _out_of_range(field, value) from None
        return _in_range(moment, field, value)
    try:
        if _DATE_ONLY.fullmatch(value):
            moment = datetime.fromisoformat(value + "T00:00:00+00:00")
        else:
            moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise BadRequest(
            f"{field}: {value!r} is not a time; use ISO 8601 (2026-11-22T00:00Z), a date "
            "(2026-11-29) or a duration (7d)",
            field=field,
        ) from None
    try:
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:  # 9999-12-31T23:59:59-23:59 is past the end of datetime in UTC
        raise _out_of_range(field, value) from None
    return _in_range(moment, field, value)


def _out_of_range(field: str, value: str) -> BadRequest:
    return BadRequest(
        f"{field}: {value!r} is out of range: times lie between {iso(EARLIEST_TIME)} and "
        f"{iso(LATEST_TIME)}",
        field=field,
    )


def _in_range(moment: datetime, field: str, value: str) -> datetime:
    if not EARLIEST_TIME <= moment <= LATEST_TIME:
        raise _out_of_range(field, value)
    return moment


def safe_text(value: str, field: str, *, max_length: int = MAX_QUERY_LENGTH) -> str:
    """`value` unchanged, or BadRequest if it holds a control or formatting character (the
    README's rule: refused, never stored or echoed) or is longer than `max_length`."""
    index = safetext.first_unsafe(value)
    if index is not None:
        raise BadRequest(
            f"{field}: control and formatting characters are not allowed "
            f"({safetext.describe_character(value[index])} at position {index + 1})",
            field=field,
        )
    if len(value) > max_length:
        raise BadRequest(f"{field}: at most {max_length} characters, please", field=field)
    return value


def parse_limit(text: str | None, *, default: int, maximum: int, field: str = "limit") -> int:
    """A count from 1 to `maximum` in ASCII digits (`str.isdigit` would take '²' or Arabic
    digits, and int() some of them)."""
    if text is None:
        return default
    value = text.strip()
    if not re.fullmatch(r"[0-9]{1,7}", value) or not 1 <= int(value) <= maximum:
        raise BadRequest(f"{field}: expected a number from 1 to {maximum}", field=field)
    return int(value)


def json_depth(raw: bytes, *, stop_above: int) -> int:
    """How deeply arrays and objects nest in the JSON text `raw` (strings skipped), counted
    up to `stop_above` + 1: the parser recurses, so depth is checked before parsing. The one
    nesting scan (`mirror.jsondepth`) that upstream documents pass too."""
    return min(nesting_depth(raw), stop_above + 1)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object of at most MAX_BODY_BYTES, nested at most
    MAX_JSON_DEPTH deep; 400 (413 for size) naming `body` otherwise."""
    # Depth first: the scan stops at the first level too deep, so a deeply nested body is
    # refused as such (400) whatever its size.
    if json_depth(raw, stop_above=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadRequest(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels", field="body")
    if len(raw) > MAX_BODY_BYTES:
        raise _body_too_large()
    try:
        value = json.loads(raw or b"null", parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, and integers past Python's digit limit.
        raise BadRequest(f"body: not valid JSON ({exc})", field="body") from None
    if not isinstance(value, dict):
        raise BadRequest("body: expected a JSON object", field="body")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _body_too_large() -> BadRequest:
    return BadRequest(f"body: at most {MAX_BODY_BYTES} bytes", field="body", status=413)


def _max_length(field: str) -> int:
    return MAX_REASON_LENGTH if field == "reason" else MAX_QUERY_LENGTH


def _text(body: Mapping[str, Any], field: str, *, default: str | None = None) -> str:
    value = body.get(field, default)
    if value is None:
        raise BadRequest(f"{field}: required", field=field)
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string", field=field)
    return safe_text(value.strip(), field, max_length=_max_length(field))


def _optional_text(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string", field=field)
    return safe_text(value.strip(), field, max_length=_max_length(field))


def _check_fields(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        name = safetext.escape(unknown[0])[:80]
        raise BadRequest(
            f"{name}: unknown field (expected {', '.join(sorted(allowed))})", field=name
        )


def _validate(kind: RuleKind, ecosystem: str, package: str, spec: str, reason: str) -> None:
    try:
        policy.validate_rule(kind, ecosystem, package, spec, reason)
    except policy.InvalidRule as exc:
        raise BadRequest(f"{exc.field}: {exc}", field=exc.field) from None
    if len(reason) > MAX_REASON_LENGTH:
        raise BadRequest(f"reason: at most {MAX_REASON_LENGTH} characters, please", field="reason")


def new_rule_id(kind: RuleKind) -> str:
    return ID_PREFIXES[kind] + secrets.token_hex(6)


def describe_rule(record: RuleRecord, now: datetime) -> dict[str, Any]:
    """A stored rule as the API shows it; `expired` says whether it still applies."""
    return {
        **policy.describe_record(record),
        "expired": record.expires_at is not None and record.expires_at <= now,
    }


@dataclass(frozen=True, slots=True)
class ImpactQuery:
    """What an impact report is about; `since` is resolved once, on the first page, and
    travels in the cursor so every page counts from the same moment."""

    ecosystem: str
    package: str
    spec: str
    since: datetime | None
    since_text: str

    @property
    def fingerprint(self) -> str:
        """Ties a cursor to its query: a cursor from another query is refused, not misread."""
        text = "\n".join((self.ecosystem, self.package, self.spec, self.since_text))
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ImpactCursor:
    """Where the next impact page starts: a package (names are read in sorted order) and
    the state's position within it (None = its first event)."""

    package: str
    after: str | None


def encode_cursor(query: ImpactQuery, cursor: ImpactCursor) -> str:
    since = None if query.since is None else query.since.isoformat()
    document = {"q": query.fingerprint, "s": since, "p": cursor.package, "a": cursor.after}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, query: ImpactQuery) -> tuple[ImpactQuery, ImpactCursor]:
    """The query (with the first page's `since`) and position a cursor stands for; 400
    naming `cursor` for anything this mirror did not issue for this query."""
    refused = BadRequest(
        "cursor: not a cursor of this query; pass next_cursor from the previous answer "
        "unchanged, with the same ecosystem, package, versions and since",
        field="cursor",
    )
    if len(text) > MAX_CURSOR_LENGTH or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise refused
    try:
        document = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        fingerprint, since_text = document["q"], document["s"]
        package, after = document["p"], document["a"]
        since = None if since_text is None else datetime.fromisoformat(since_text)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise refused from None
    valid = (
        fingerprint == query.fingerprint
        and isinstance(package, str)
        and (after is None or isinstance(after, str))
        and (since is None or (since.tzinfo is not None and EARLIEST_TIME <= since <= LATEST_TIME))
    )
    if not valid:
        raise refused
    resolved = ImpactQuery(query.ecosystem, query.package, query.spec, since, query.since_text)
    return resolved, ImpactCursor(package=package, after=after)


def impact_link(query: ImpactQuery, cursor: str | None, limit: int) -> str | None:
    """The API path of the page a cursor points to (None: there is none)."""
    if cursor is None:
        return None
    params = {
        "ecosystem": query.ecosystem,
        "package": query.package,
        "versions": query.spec,
        "limit": str(limit),
        "cursor": cursor,
    }
    if query.since_text:
        params["since"] = query.since_text
    return f"{PREFIX}/impact?{urllib.parse.urlencode(params)}"


def describe_impact(
    query: ImpactQuery,
    events: Sequence[DownloadEvent],
    packages: Sequence[str],
    *,
    limit: int,
    next_cursor: str | None,
) -> dict[str, Any]:
    """One impact page as the API shows it: its downloads (one row per client and file with
    first seen, last seen and count; package by package in name order, first seen oldest
    first within one), the clients on this page, the package names the query
    covers (at most MAX_IMPACT_PACKAGES listed, all counted) and where the rest is."""
    return {
        "ecosystem": query.ecosystem,
        "package": query.package,
        "versions": query.spec,
        "since": iso(query.since),
        "limit": limit,
        "packages": list(packages[:MAX_IMPACT_PACKAGES]),
        "packages_total": len(packages),
        "clients": sorted({event.client for event in events}),
        # One row per client and file: when it first and last pulled it, and how often.
        "downloads": [
            {
                "client": event.client,
                "package": event.package,
                "version": event.version,
                "filename": event.filename,
                "first_seen": iso(event.at),
                "last_seen": iso(event.last_seen),
                "count": event.count,
            }
            for event in events
        ],
        "next_cursor": next_cursor,
        "next": impact_link(query, next_cursor, limit),
    }


def describe_coverage(
    ecosystem: str, package: str, spec: str, known: Sequence[str] | None, why: str = ""
) -> dict[str, Any]:
    """Which of the versions the upstream lists (`known`; None = unknown to the mirror) a
    rule's spec covers, as the API shows it. Covering none is a `warning`."""
    if known is None:
        note = f"the mirror does not know which versions {package} has"
        return {"versions": None, "count": None, "listed": None, "note": note + why}
    try:
        parsed = versions.parse_spec(ecosystem, spec)
    except versions.InvalidSpec as exc:
        return {"versions": None, "count": None, "listed": len(known), "note": str(exc)}
    covered = sorted(
        (version for version in known if parsed.contains(version)),
        key=lambda version: versions.sort_key(ecosystem, version),
    )
    coverage: dict[str, Any] = {
        "versions": covered[:MAX_COVERED_SHOWN],
        "count": len(covered),
        "listed": len(known),
    }
    if len(covered) > MAX_COVERED_SHOWN:
        coverage["note"] = f"the first {MAX_COVERED_SHOWN} of {len(covered)} are listed"
    if not covered:
        coverage["warning"] = (
            f"{package} {spec} {NO_VERSION_WARNING} ({len(known)} version(s) listed)"
        )
    return coverage


def explanation_json(explanation: Explanation) -> dict[str, Any]:
    return {
        "ecosystem": explanation.ecosystem,
        "package": explanation.package,
        "version": explanation.version,
        "verdict": explanation.verdict,
        "detail": explanation.detail,
        "published_at": iso(explanation.published_at),
        "until": iso(explanation.until),
        "rule": _jsonable(explanation.rule),
        "files": [_jsonable(file) for file in explanation.files],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


# request plumbing ----------------------------------------------------------------------------


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _adapters(request: web.Request) -> Mapping[str, Ecosystem]:
    return request.app[ECOSYSTEM_ADAPTERS]


def _authorize(request: web.Request, *, required: bool) -> Caller:
    services = _services(request)
    client = client_address(request, services.config)
    if not required:
        return Caller(actor="anonymous", client=client)
    # Unauthorized (401) carries its WWW-Authenticate header through the error middleware.
    name = identify(request.headers.get("Authorization"), services.config.admin.tokens)
    return Caller(actor=name, client=client)


def _read_guard(request: web.Request) -> Caller:
    protect = _services(request).config.admin.protect_reads
    return _authorize(request, required=protect)


def _impact_guard(request: web.Request) -> Caller:
    """Impact reports name client addresses: a token unless `admin.open_impact` opens them
    (`admin.protect_reads` closes every read, impact included)."""
    admin_config = _services(request).config.admin
    return _authorize(request, required=admin_config.protect_reads or not admin_config.open_impact)


def _ecosystem_param(value: str | None, field: str = "ecosystem") -> str:
    if not value:
        raise BadRequest(f"{field}: required (npm, pypi or maven)", field=field)
    if value not in versions.ECOSYSTEM_NAMES:
        raise BadRequest(
            f"{field}: unknown ecosystem {value!r} (expected one of npm, pypi, maven)",
            field=field,
        )
    return value


def _optional_query(request: web.Request, field: str) -> str:
    """A query parameter, stripped ("" if absent), refused if it holds a control or
    formatting character or is too long."""
    return safe_text(request.query.get(field, "").strip(), field)


def _query(request: web.Request, field: str) -> str:
    value = _optional_query(request, field)
    if not value:
        raise BadRequest(f"{field}: required", field=field)
    return value


def _rule_id(request: web.Request) -> str:
    return safe_text(request.match_info["id"], "id")


async def _read_json(request: web.Request) -> dict[str, Any]:
    # Bounded on the wire (413) and once inflated (413), inflated off the event loop.
    return parse_body(await read_body(request))


async def _find_rule(services: Services, kind: RuleKind, rule_id: str) -> RuleRecord:
    for record in await services.state.list_rules(kind):
        if record.id == rule_id:
            return record
    raise NotFound(f"there is no {kind} with id {rule_id!r}")


def _audit_entry(
    services: Services,
    caller: Caller,
    action: str,
    target: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> AuditEntry:
    """The audit entry of a change; state stores it in the change's own transaction."""
    return AuditEntry(
        at=services.clock.now(),
        actor=caller.actor,
        client=caller.client,
        action=action,
        target=target,
        before=before,
        after=after,
    )


def change_line(entry: AuditEntry) -> str:
    """The log line of an admin change: one line whatever its fields hold (a reason with a
    newline must not forge a second line attributed to another admin)."""
    change = entry.after if entry.after is not None else entry.before or {}
    fields = (
        entry.action,
        entry.target,
        entry.actor,
        entry.client,
        change.get("ecosystem", ""),
        change.get("package", ""),
        change.get("versions", ""),
        change.get("reason", ""),
    )
    action, target, actor, client, ecosystem, package, spec, reason = map(safetext.escape, fields)
    return f"{action} {target} by {actor} from {client}: {ecosystem} {package} {spec} ({reason})"


def _log_change(entry: AuditEntry) -> None:
    log.warning("%s", change_line(entry))


async def impact_page(
    services: Services, query: ImpactQuery, *, limit: int, cursor: ImpactCursor | None
) -> dict[str, Any]:
    """One page of the downloads `query` covers: at most `limit` events, reading at most
    MAX_PACKAGES_PER_PAGE packages, so its size and cost are bounded whatever the ledger
    holds."""
    pattern = policy.PackagePattern(query.ecosystem, query.package)
    if pattern.exact:
        names = [pattern.pattern]
    else:
        # A glob (`@evilscope/*`): every package the ledger knows that it covers.
        known = await services.state.downloaded_packages(query.ecosystem)
        names = sorted(name for name in known if pattern.matches(name))
    spec = versions.parse_spec(query.ecosystem, query.spec)
    start, after = 0, None
    if cursor is not None:
        start = bisect.bisect_left(names, cursor.package)
        if start < len(names) and names[start] == cursor.package:
            after = cursor.after
    events: list[DownloadEvent] = []
    following: ImpactCursor | None = None
    for index in range(start, len(names)):
        name = names[index]
        if index - start == MAX_PACKAGES_PER_PAGE:
            following = ImpactCursor(package=name, after=None)
            break
        try:
            page = await services.state.downloads_page(
                query.ecosystem,
                name,
                limit=limit - len(events),
                since=query.since,
                versions=spec.contains,
                after=after,
            )
        except InvalidPosition:
            raise BadRequest("cursor: not a cursor of this mirror", field="cursor") from None
        after = None
        events.extend(page.events)
        if page.next_after is not None:
            following = ImpactCursor(package=name, after=page.next_after)
            break
        if len(events) >= limit:
            if index + 1 < len(names):
                following = ImpactCursor(package=names[index + 1], after=None)
            break
    next_cursor = None if following is None else encode_cursor(query, following)
    return describe_impact(query, events, names, limit=limit, next_cursor=next_cursor)


async def rule_coverage(
    adapters: Mapping[str, Ecosystem], record: RuleRecord, *, fetch: bool
) -> dict[str, Any] | None:
    """Which versions a block or exemption covers now (None for a freeze, which covers by
    publish time). `fetch`: fetch the package's document through the adapter if the mirror
    has none (a new rule); otherwise only what is cached is used (listings)."""
    if record.kind == "freeze":
        return None
    if policy.GLOB_CHARACTERS & set(record.package):
        return {
            "versions": None,
            "count": None,
            "listed": None,
            "note": "a package glob: it covers the matching versions of every package it names",
        }
    adapter = adapters.get(record.ecosystem)
    if adapter is None:
        why = f" ({record.ecosystem} is not enabled on this mirror)"
        return describe_coverage(record.ecosystem, record.package, record.versions, None, why)
    known: Sequence[str] | None = None
    why = ""
    try:
        async with asyncio.timeout(COVERAGE_TIMEOUT.total_seconds()):
            known = await adapter.known_versions(record.package, fetch=fetch)
    except TimeoutError:
        why = " (the upstream did not answer in time)"
    except UpstreamNotFound:
        known = ()  # the upstream has no such package: the rule covers nothing it lists
    except MirrorError as exc:
        why = f" ({exc.message})"
    return describe_coverage(record.ecosystem, record.package, record.versions, known, why)


async def _with_coverage(
    adapters: Mapping[str, Ecosystem], records: Sequence[RuleRecord], now: datetime
) -> list[dict[str, Any]]:
    """Rules as the API lists them, each with what it covers now, from cached documents.
    A listing waits at most LISTING_COVERAGE_TIMEOUT for them, reading at most
    LISTING_COVERAGE_PARALLEL at once: a rule whose document is not at hand by then says
    so instead of holding the answer."""
    shown = [describe_rule(record, now) for record in records]
    gate = asyncio.Semaphore(LISTING_COVERAGE_PARALLEL)

    async def coverage_of(record: RuleRecord) -> dict[str, Any] | None:
        async with gate:
            return await rule_coverage(adapters, record, fetch=False)

    tasks = [asyncio.ensure_future(coverage_of(record)) for record in records[:MAX_COVERAGE_RULES]]
    if tasks:
        await asyncio.wait(tasks, timeout=LISTING_COVERAGE_TIMEOUT.total_seconds())
    for rule, record, task in zip(shown, records, tasks, strict=False):
        if not task.done():
            task.cancel()
            note = " (its upstream document was not at hand in time)"
            rule["covers"] = describe_coverage(
                record.ecosystem, record.package, record.versions, None, note
            )
        elif (coverage := task.result()) is not None:
            rule["covers"] = coverage
    return shown


# handlers: rules --------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _create_handler(kind: RuleKind) -> Handler:
    async def create(request: web.Request) -> web.StreamResponse:
        caller = _authorize(request, required=True)
        body = await _read_json(request)
        services = _services(request)
        now = services.clock.now()
        if kind == "freeze":
            record = _freeze_record(body, caller, now)
        else:
            record = await _rule_record(kind, body, caller, now, services, _adapters(request))
        after = describe_rule(record, now)
        entry = _audit_entry(services, caller, f"{kind}.create", record.id, None, after)
        await services.state.add_rule(record, audit=entry)
        _log_change(entry)
        await services.policy.reload()
        # Stored and applied first: what it covers and who pulled it are reported after.
        answer: dict[str, Any] = {kind: after}
        coverage = await rule_coverage(_adapters(request), record, fetch=True)
        if coverage is not None:
            answer[kind] = {**after, "covers": coverage}
            if coverage.get("warning"):
                answer["warning"] = coverage["warning"]
        if kind == "block":
            query = ImpactQuery(record.ecosystem, record.package, record.versions, None, "")
            try:
                answer["impact"] = await impact_page(
                    services, query, limit=DEFAULT_IMPACT_LIMIT, cursor=None
                )
            except StateUnavailable as exc:
                answer["impact"] = {"error": f"the download ledger is unavailable: {exc}"}
        return web.json_response(answer, status=201)

    return create


def _list_handler(kind: RuleKind) -> Handler:
    async def list_rules(request: web.Request) -> web.StreamResponse:
        _read_guard(request)
        services = _services(request)
        ecosystem = request.query.get("ecosystem")
        if ecosystem is not None:
            _ecosystem_param(safe_text(ecosystem, "ecosystem"))
        now = services.clock.now()
        # Degraded (the state was emptied or replaced): the rules this worker enforces, the
        # last-known ones, marked as such; never the state's shorter list.
        degraded = services.policy.degraded
        stored = (
            services.policy.enforced_records(kind)
            if degraded is not None
            else await services.state.list_rules(kind)
        )
        records = [
            record for record in stored if ecosystem is None or record.ecosystem == ecosystem
        ]
        shown = await _with_coverage(_adapters(request), records, now)
        answer: dict[str, Any] = {COLLECTIONS[kind]: shown}
        if degraded is not None:
            answer["last_known"] = {"reason": degraded, "restore": "mirror state restore"}
        return web.json_response(answer)

    return list_rules


def _show_handler(kind: RuleKind) -> Handler:
    async def show(request: web.Request) -> web.StreamResponse:
        _read_guard(request)
        services = _services(request)
        record = await _find_rule(services, kind, _rule_id(request))
        (shown,) = await _with_coverage(_adapters(request), [record], services.clock.now())
        return web.json_response({kind: shown})

    return show


def _delete_handler(kind: RuleKind) -> Handler:
    async def delete(request: web.Request) -> web.StreamResponse:
        caller = _authorize(request, required=True)
        services = _services(request)
        rule_id = _rule_id(request)
        found = await _find_rule(services, kind, rule_id)
        before = describe_rule(found, services.clock.now())
        entry = _audit_entry(services, caller, f"{kind}.delete", rule_id, before, None)
        if await services.state.remove_rule(kind, rule_id, audit=entry) is None:
            raise NotFound(f"there is no {kind} with id {rule_id!r}")  # removed meanwhile
        _log_change(entry)
        await services.policy.reload()
        return web.json_response({"deleted": before})

    return delete


async def _rule_record(
    kind: RuleKind,
    body: Mapping[str, Any],
    caller: Caller,
    now: datetime,
    services: Services,
    adapters: Mapping[str, Ecosystem],
) -> RuleRecord:
    """A block or exemption from a request body, validated; an exemption's default expiry
    is the moment its version would have left quarantine anyway."""
    _check_fields(body, _RULE_FIELDS)
    ecosystem = _ecosystem_param(_text(body, "ecosystem"))
    package = _text(body, "package")
    spec = _text(body, "versions")
    reason = _text(body, "reason", default="")
    _validate(kind, ecosystem, package, spec, reason)
    expires_text = _optional_text(body, "expires")
    expires: datetime | None = None
    if expires_text is not None:
        expires = parse_time(expires_text, field="expires", now=now, future=True)
        if expires <= now:
            raise BadRequest(f"expires: {iso(expires)} is already past", field="expires")
    elif kind == "exemption":
        expires = await _default_exemption_expiry(services, adapters, ecosystem, package, spec, now)
    return RuleRecord(
        id=new_rule_id(kind),
        kind=kind,
        ecosystem=ecosystem,
        package=package,
        versions=spec,
        reason=reason,
        created_at=now,
        created_by=caller.actor,
        expires_at=expires,
    )


async def _default_exemption_expiry(
    services: Services,
    adapters: Mapping[str, Ecosystem],
    ecosystem: str,
    package: str,
    spec: str,
    now: datetime,
) -> datetime:
    version = versions.exact_version(ecosystem, spec)
    if version is None:
        raise BadRequest(
            f"expires: required for an exemption of a version range ({spec!r}); only an exact "
            "version gets the default (the moment it would have left quarantine)",
            field="expires",
        )
    if policy.GLOB_CHARACTERS & set(package):
        raise BadRequest("expires: required for an exemption of a package glob", field="expires")
    adapter = adapters.get(ecosystem)
    why = f"{ecosystem} is not enabled on this mirror"
    published_at: datetime | None = None
    if adapter is not None:
        try:
            published_at = (await adapter.explain(package, version)).published_at
            why = "the upstream does not say when it was published"
        except MirrorError as exc:
            why = exc.message
    if published_at is None:
        raise BadRequest(
            f"expires: required, because the publish time of {package} {version} could not be "
            f"found ({why})",
            field="expires",
        )
    age = services.policy.rules().quarantine_age(
        ecosystem, versions.normalize_package(ecosystem, package)
    )
    try:
        matured = published_at + age
    except OverflowError:  # an upstream publish time near the end of the calendar
        matured = LATEST_TIME + timedelta(seconds=1)
    if matured > LATEST_TIME:
        raise BadRequest(
            f"expires: required, because {package} {version} would leave quarantine past "
            f"{iso(LATEST_TIME)} (the upstream's publish time is {iso(published_at)})",
            field="expires",
        )
    if matured <= now:
        raise BadRequest(
            f"expires: {package} {version} already left quarantine at {iso(matured)}; give an "
            "explicit expiry if it must pass a freeze",
            field="expires",
        )
    return matured


def _freeze_record(body: Mapping[str, Any], caller: Caller, now: datetime) -> RuleRecord:
    _check_fields(body, _FREEZE_FIELDS)
    ecosystem = _ecosystem_param(_text(body, "ecosystem"))
    package = _text(body, "package", default="*") or "*"
    reason = _text(body, "reason", default="")
    _validate("freeze", ecosystem, package, versions.ANY_VERSION, reason)
    cutoff = parse_time(
        _text(body, "published_after"), field="published_after", now=now, future=False
    )
    until = parse_time(_text(body, "until"), field="until", now=now, future=True)
    if until <= now:
        raise BadRequest(f"until: {iso(until)} is already past", field="until")
    if cutoff >= until:
        raise BadRequest("until: must be later than published_after", field="until")
    return RuleRecord(
        id=new_rule_id("freeze"),
        kind="freeze",
        ecosystem=ecosystem,
        package=package,
        versions=versions.ANY_VERSION,
        reason=reason,
        created_at=now,
        created_by=caller.actor,
        expires_at=until,
        data={"published_after": iso(cutoff)},
    )


# handlers: queries ----------------------------------------------------------------------------


async def explain_view(request: web.Request) -> web.StreamResponse:
    _read_guard(request)
    adapters = _adapters(request)
    ecosystem = _ecosystem_param(_optional_query(request, "ecosystem"))
    package = _query(request, "package")
    version = _query(request, "version")
    adapter = adapters.get(ecosystem)
    if adapter is None:
        raise EcosystemDisabled(
            f"{ecosystem} is not enabled on this mirror, so there is nothing to explain: set "
            f"MIRROR_{ecosystem.upper()}_UPSTREAM to serve it"
        )
    filename = _optional_query(request, "file")
    explanation = await adapter.explain(package, version)
    answer = explanation_json(explanation)
    if filename:
        answer = one_file(answer, filename)
    rule = answer.get("rule")
    if isinstance(rule, dict) and rule.get("id"):
        record = await _stored_rule(_services(request), rule)
        coverage = None if record is None else await rule_coverage(adapters, record, fetch=False)
        if coverage is not None:
            answer["rule"] = {**rule, "covers": coverage}
    return web.json_response(answer)


async def _stored_rule(services: Services, rule: Mapping[str, Any]) -> RuleRecord | None:
    kind = rule.get("kind")
    if kind not in COLLECTIONS:
        return None
    for record in await services.state.list_rules(kind):
        if record.id == rule.get("id"):
            return record
    return None


def one_file(answer: Mapping[str, Any], filename: str) -> dict[str, Any]:
    """The explanation of one file of a version (PyPI decides file by file)."""
    for entry in answer.get("files") or ():
        if entry.get("filename") == filename:
            return {
                **answer,
                "verdict": entry.get("verdict"),
                "detail": entry.get("detail"),
                "published_at": entry.get("published_at"),
                "until": entry.get("until"),
                "rule": entry.get("rule"),
                "files": [entry],
            }
    raise NotFound(
        f"{answer.get('package')} {answer.get('version')} has no file {filename!r} upstream"
    )


async def impact_view(request: web.Request) -> web.StreamResponse:
    _impact_guard(request)
    services = _services(request)
    ecosystem = _ecosystem_param(_optional_query(request, "ecosystem"))
    package = _query(request, "package")
    spec = _optional_query(request, "versions") or versions.ANY_VERSION
    try:
        versions.parse_spec(ecosystem, spec)
    except versions.InvalidSpec as exc:
        raise BadRequest(f"versions: {exc}", field="versions") from None
    since_text = _optional_query(request, "since")
    limit = parse_limit(
        request.query.get("limit"), default=DEFAULT_IMPACT_LIMIT, maximum=MAX_IMPACT_LIMIT
    )
    cursor_text = _optional_query(request, "cursor")
    query = ImpactQuery(ecosystem, package, spec, None, since_text)
    cursor: ImpactCursor | None = None
    if cursor_text:
        query, cursor = decode_cursor(cursor_text, query)
    elif since_text:
        since = parse_time(since_text, field="since", now=services.clock.now(), future=False)
        query = ImpactQuery(ecosystem, package, spec, since, since_text)
    return web.json_response(await impact_page(services, query, limit=limit, cursor=cursor))


async def audit_view(request: web.Request) -> web.StreamResponse:
    """The audit log, newest first, filtered by `target` (a rule id), `actor` and a time
    window (`since` inclusive, `until` exclusive), paged by `cursor`. `pruned_before` says
    up to when entries may have been pruned (older than `admin.audit_retention`; the entry
    that created a stored rule is kept as long as the rule)."""
    _authorize(request, required=True)
    services = _services(request)
    limit = parse_limit(request.query.get("limit"), default=100, maximum=MAX_AUDIT_LIMIT)
    now = services.clock.now()
    filters: dict[str, str] = {}
    for field in ("target", "actor", "since", "until"):
        if value := _optional_query(request, field):
            filters[field] = value
    since = (
        None
        if "since" not in filters
        else parse_time(filters["since"], field="since", now=now, future=False)
    )
    until = (
        None
        if "until" not in filters
        else parse_time(filters["until"], field="until", now=now, future=False)
    )
    if since is not None and until is not None and until <= since:
        raise BadRequest("until: must be later than since", field="until")
    cursor = _optional_query(request, "cursor") or None
    try:
        page = await services.state.audit_page(
            limit=limit,
            target=filters.get("target"),
            actor=filters.get("actor"),
            since=since,
            until=until,
            after=cursor,
        )
    except InvalidPosition:
        raise BadRequest(
            "cursor: not a cursor of this mirror's audit log; pass next_cursor from the "
            "previous answer unchanged",
            field="cursor",
        ) from None
    following = None
    if page.next_after is not None:
        query = {**filters, "limit": str(limit), "cursor": page.next_after}
        following = f"{PREFIX}/audit?{urllib.parse.urlencode(query)}"
    return web.json_response(
        {
            "entries": [
                {
                    "at": iso(entry.at),
                    "actor": entry.actor,
                    "client": entry.client,
                    "action": entry.action,
                    "target": entry.target,
                    "before": _jsonable(entry.before),
                    "after": _jsonable(entry.after),
                }
                for entry in page.entries
            ],
            "pruned_before": iso(page.pruned_before),
            "next_cursor": page.next_after,
            "next": following,
        }
    )
