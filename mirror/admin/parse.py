"""The admin API's request parsing and validation, pure (no aiohttp, no state backend, no
I/O): times in range, limits in ASCII digits, text without control or formatting characters,
JSON bodies bounded in size and depth, rule bodies, and the cursors of impact pages. Every bad
input is a BadRequest (4xx) naming its field."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from mirror import policy, safetext, versions
from mirror.config import parse_duration
from mirror.errors import BadRequest, ConfigError
from mirror.jsondepth import nesting_depth
from mirror.model import ECOSYSTEMS, RuleKind, RuleRecord
from mirror.policy import iso_seconds as iso

# The API's names: its path prefix, and the URL collection and id prefix of each rule kind.
PREFIX: Final = "/api/v1"
COLLECTIONS: Final[Mapping[RuleKind, str]] = {
    "block": "blocks",
    "exemption": "exemptions",
    "freeze": "freezes",
}

MAX_CURSOR_LENGTH: Final = 4096
MAX_REASON_LENGTH: Final = 2000
MAX_QUERY_LENGTH: Final = 512  # any one query parameter or text field but the reason
MAX_BODY_BYTES: Final = 64 * 1024
MAX_JSON_DEPTH: Final = 8  # a rule body is one flat object
MAX_TIME_TEXT: Final = 64
# Times an admin may give: far enough for any expiry, near enough for every store and format.
EARLIEST_TIME: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME: Final = datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)

_RULE_FIELDS: Final = frozenset({"ecosystem", "package", "versions", "reason", "expires"})
_FREEZE_FIELDS: Final = frozenset({"ecosystem", "package", "published_after", "until", "reason"})
_RELATIVE = re.compile(r"^\d+(?:\.\d+)?(?:ms|s|m|h|d|w)(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))*$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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


def text_field(body: Mapping[str, Any], field: str, *, default: str | None = None) -> str:
    value = body.get(field, default)
    if value is None:
        raise BadRequest(f"{field}: required", field=field)
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string", field=field)
    return safe_text(value.strip(), field, max_length=_max_length(field))


def optional_text(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string", field=field)
    return safe_text(value.strip(), field, max_length=_max_length(field))


def check_fields(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        name = safetext.escape(unknown[0])[:80]
        raise BadRequest(
            f"{name}: unknown field (expected {', '.join(sorted(allowed))})", field=name
        )


def validate_rule(kind: RuleKind, ecosystem: str, package: str, spec: str, reason: str) -> None:
    try:
        policy.validate_rule(kind, ecosystem, package, spec, reason)
    except policy.InvalidRule as exc:
        raise BadRequest(f"{exc.field}: {exc}", field=exc.field) from None
    if len(reason) > MAX_REASON_LENGTH:
        raise BadRequest(f"reason: at most {MAX_REASON_LENGTH} characters, please", field="reason")


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


def query_text(params: Mapping[str, str], field: str) -> str:
    """A query parameter, stripped ("" if absent), refused if it holds a control or
    formatting character or is too long."""
    return safe_text(params.get(field, "").strip(), field)


def required_query(params: Mapping[str, str], field: str) -> str:
    value = query_text(params, field)
    if not value:
        raise BadRequest(f"{field}: required", field=field)
    return value


@dataclass(frozen=True, slots=True)
class ImpactRequest:
    """An impact page asked for: the query (its `since` resolved, from the cursor on a later
    page), where the page starts and how many rows it holds at most."""

    query: ImpactQuery
    cursor: ImpactCursor | None
    limit: int


def impact_request(
    params: Mapping[str, str], *, now: datetime, default_limit: int, max_limit: int
) -> ImpactRequest:
    """The impact page `params` ask for (`ecosystem`, `package`, `versions`, `since`,
    `limit`, `cursor`): the admin API's and the dashboard's one reading of them."""
    ecosystem = ecosystem_param(query_text(params, "ecosystem"))
    package = required_query(params, "package")
    spec = query_text(params, "versions") or versions.ANY_VERSION
    try:
        versions.parse_spec(ecosystem, spec)
    except versions.InvalidSpec as exc:
        raise BadRequest(f"versions: {exc}", field="versions") from None
    since_text = query_text(params, "since")
    limit = parse_limit(params.get("limit"), default=default_limit, maximum=max_limit)
    cursor_text = query_text(params, "cursor")
    query = ImpactQuery(ecosystem, package, spec, None, since_text)
    cursor: ImpactCursor | None = None
    if cursor_text:
        query, cursor = decode_cursor(cursor_text, query)
    elif since_text:
        since = parse_time(since_text, field="since", now=now, future=False)
        query = ImpactQuery(ecosystem, package, spec, since, since_text)
    return ImpactRequest(query, cursor, limit)


# The audit log's filters, in the order its links write them.
AUDIT_FILTERS: Final = ("target", "actor", "since", "until")


@dataclass(frozen=True, slots=True)
class AuditRequest:
    """An audit page asked for: the filters as given (`texts`, for the next page's link),
    the time window resolved (`since` inclusive, `until` exclusive), the position to go on
    from and the page size."""

    texts: Mapping[str, str]
    target: str | None
    actor: str | None
    since: datetime | None
    until: datetime | None
    cursor: str | None
    limit: int


def audit_request(
    params: Mapping[str, str], *, now: datetime, default_limit: int, max_limit: int
) -> AuditRequest:
    """The audit page `params` ask for (`target`, `actor`, `since`, `until`, `limit`,
    `cursor`): the admin API's and the dashboard's one reading of them."""
    limit = parse_limit(params.get("limit"), default=default_limit, maximum=max_limit)
    texts = {field: value for field in AUDIT_FILTERS if (value := query_text(params, field))}
    since = (
        None
        if "since" not in texts
        else parse_time(texts["since"], field="since", now=now, future=False)
    )
    until = (
        None
        if "until" not in texts
        else parse_time(texts["until"], field="until", now=now, future=False)
    )
    if since is not None and until is not None and until <= since:
        raise BadRequest("until: must be later than since", field="until")
    return AuditRequest(
        texts=texts,
        target=texts.get("target"),
        actor=texts.get("actor"),
        since=since,
        until=until,
        cursor=query_text(params, "cursor") or None,
        limit=limit,
    )


_NAMES_OR = ", ".join(ECOSYSTEMS[:-1]) + " or " + ECOSYSTEMS[-1]  # "npm, pypi or maven"


def ecosystem_param(value: str | None, field: str = "ecosystem") -> str:
    """An ecosystem name this mirror knows; 400 naming `field` otherwise."""
    if not value:
        raise BadRequest(f"{field}: required ({_NAMES_OR})", field=field)
    if value not in ECOSYSTEMS:
        raise BadRequest(
            f"{field}: unknown ecosystem {value!r} (expected one of {', '.join(ECOSYSTEMS)})",
            field=field,
        )
    return value


def freeze_record(body: Mapping[str, Any], actor: str, now: datetime) -> RuleRecord:
    """A freeze from a request body, validated: everything published after
    `published_after` is held until `until`."""
    check_fields(body, _FREEZE_FIELDS)
    ecosystem = ecosystem_param(text_field(body, "ecosystem"))
    package = text_field(body, "package", default="*") or "*"
    reason = text_field(body, "reason", default="")
    validate_rule("freeze", ecosystem, package, versions.ANY_VERSION, reason)
    cutoff = parse_time(
        text_field(body, "published_after"), field="published_after", now=now, future=False
    )
    until = parse_time(text_field(body, "until"), field="until", now=now, future=True)
    if until <= now:
        raise BadRequest(f"until: {iso(until)} is already past", field="until")
    if cutoff >= until:
        raise BadRequest("until: must be later than published_after", field="until")
    return RuleRecord(
        id=policy.new_rule_id("freeze"),
        kind="freeze",
        ecosystem=ecosystem,
        package=package,
        versions=versions.ANY_VERSION,
        reason=reason,
        created_at=now,
        created_by=actor,
        expires_at=until,
        data={"published_after": iso(cutoff)},
    )


@dataclass(frozen=True, slots=True)
class RuleFields:
    """A block or exemption as a request body gives it, validated; `expires` None when the
    body names none (an exemption then gets a default, found by asking the upstream)."""

    ecosystem: str
    package: str
    spec: str
    reason: str
    expires: datetime | None


def rule_fields(body: Mapping[str, Any], kind: RuleKind, now: datetime) -> RuleFields:
    """The fields of a block or exemption from a request body, in the order they are
    checked (the first bad one is the one named)."""
    check_fields(body, _RULE_FIELDS)
    ecosystem = ecosystem_param(text_field(body, "ecosystem"))
    package = text_field(body, "package")
    spec = text_field(body, "versions")
    reason = text_field(body, "reason", default="")
    validate_rule(kind, ecosystem, package, spec, reason)
    expires_text = optional_text(body, "expires")
    expires: datetime | None = None
    if expires_text is not None:
        expires = parse_time(expires_text, field="expires", now=now, future=True)
        if expires <= now:
            raise BadRequest(f"expires: {iso(expires)} is already past", field="expires")
    return RuleFields(ecosystem, package, spec, reason, expires)


# What `?dry_run=` accepts (a create that stores nothing: shadow mode).
DRY_RUN_WORDS: Final = {
    "true": True,
    "1": True,
    "yes": True,
    "false": False,
    "0": False,
    "no": False,
}


def split_subject(ecosystem: str, text: str) -> tuple[str, str]:
    """The package and version of one ecosystem's usual spelling of a pinned version:
    `axios@1.14.1`, `@scope/name@1.0.0`, `requests==2.31.0`, `org.example:lib:1.0`."""
    if ecosystem == "npm":
        package, at, version = text.rpartition("@")
        if not at or not package:
            raise BadRequest(f"write the npm version as name@version, got {text!r}")
    elif ecosystem == "pypi":
        package, sep, version = text.partition("==")
        if not sep:
            raise BadRequest(f"write the PyPI version as project==version, got {text!r}")
    elif ecosystem == "maven":
        package, sep, version = text.rpartition(":")
        if not sep or ":" not in package:
            raise BadRequest(f"write the Maven version as group:artifact:version, got {text!r}")
    else:
        raise BadRequest(f"unknown ecosystem {ecosystem!r} (expected npm, pypi or maven)")
    if not package.strip() or not version.strip():
        raise BadRequest(f"both a package and a version are needed, got {text!r}")
    return package.strip(), version.strip()


# The takedown events' filters, in the order their links write them.
EVENT_FILTERS: Final = ("ecosystem", "package", "since")


@dataclass(frozen=True, slots=True)
class EventsRequest:
    """A page of takedown events asked for: the filters as given (`texts`, for the next
    page's link), the ecosystem and package (its canonical name) resolved, `since` resolved
    once (on the first page; it travels in the cursor so every page counts from the same
    moment), where the page starts ((detected_at, id) of the previous page's last event) and
    how many events it holds at most."""

    texts: Mapping[str, str]
    ecosystem: str | None
    package: str | None
    since: datetime | None
    after: tuple[datetime, str] | None
    limit: int

    @property
    def fingerprint(self) -> str:
        """Ties a cursor to its filters: a cursor from another query is refused, not misread."""
        text = "\n".join(self.texts.get(field, "") for field in EVENT_FILTERS)
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def encode_event_cursor(asked: EventsRequest, detected_at: datetime, event_id: str) -> str:
    """The opaque cursor of the page after the event (`detected_at`, `event_id`)."""
    since = None if asked.since is None else asked.since.isoformat()
    document = {"q": asked.fingerprint, "s": since, "t": detected_at.isoformat(), "i": event_id}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_event_cursor(text: str, fingerprint: str) -> tuple[datetime | None, datetime, str]:
    """The `since` and position a cursor stands for; 400 naming `after` for anything this
    mirror did not issue for these filters."""
    refused = BadRequest(
        "after: not a cursor of this query; pass `next` from the previous answer unchanged, "
        "with the same ecosystem, package and since",
        field="after",
    )
    if len(text) > MAX_CURSOR_LENGTH or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise refused
    try:
        document = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        since_text, at_text, event_id = document["s"], document["t"], document["i"]
        since = None if since_text is None else datetime.fromisoformat(since_text)
        at = datetime.fromisoformat(at_text)
        valid = document["q"] == fingerprint and isinstance(event_id, str)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise refused from None
    for moment in (since, at):
        if moment is not None and (
            moment.tzinfo is None or not EARLIEST_TIME <= moment <= LATEST_TIME
        ):
            valid = False
    if not valid:
        raise refused
    return since, at, event_id


def events_request(
    params: Mapping[str, str], *, now: datetime, default_limit: int, max_limit: int
) -> EventsRequest:
    """The page of takedown events `params` ask for (`ecosystem`, `package`, `since`,
    `limit`, `after`): the admin API's and the dashboard's one reading of them. A package
    is named in its ecosystem's canonical form (PEP 503 on PyPI), so it needs the ecosystem."""
    limit = parse_limit(params.get("limit"), default=default_limit, maximum=max_limit)
    texts = {field: value for field in EVENT_FILTERS if (value := query_text(params, field))}
    ecosystem = ecosystem_param(texts["ecosystem"]) if "ecosystem" in texts else None
    package = None
    if "package" in texts:
        if ecosystem is None:
            raise BadRequest(
                "ecosystem: required with package (names are compared the ecosystem's way)",
                field="ecosystem",
            )
        package = versions.normalize_package(ecosystem, texts["package"])
    asked = EventsRequest(texts, ecosystem, package, None, None, limit)
    cursor_text = query_text(params, "after")
    if cursor_text:
        since, at, event_id = _decode_event_cursor(cursor_text, asked.fingerprint)
        return EventsRequest(texts, ecosystem, package, since, (at, event_id), limit)
    if "since" in texts:
        since = parse_time(texts["since"], field="since", now=now, future=False)
        return EventsRequest(texts, ecosystem, package, since, None, limit)
    return asked
