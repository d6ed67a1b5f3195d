"""The admin API under `/api/v1/`: blocks, exemptions and freezes (create, list, show,
delete), explain, impact and the audit log. JSON in and out; errors are the app's JSON error
body. Writes need a bearer token from `admin.tokens`; reads are open unless
`admin.protect_reads`; the audit log is always protected.

Every write is stored in the shared state (which tells every worker and replica), applied
to this worker at once (`policy.reload()`), appended to the audit log and logged at WARNING
on `mirror.admin`. Parsing and validation are pure functions; handlers do the I/O."""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from mirror import policy, versions
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
)
from mirror.forwarded import client_address
from mirror.policy import iso_seconds as iso
from mirror.state.base import AuditEntry, DownloadEvent, RuleKind, RuleRecord

if TYPE_CHECKING:
    from mirror.app import Services

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
MAX_IMPACT_PACKAGES: Final = 1000  # packages a glob's impact report reads, at most
MAX_REASON_LENGTH: Final = 2000
TOKENS_SETTING: Final = "MIRROR_ADMIN_TOKENS"  # the env name, not a secret

_RULE_FIELDS: Final = frozenset({"ecosystem", "package", "versions", "reason", "expires"})
_FREEZE_FIELDS: Final = frozenset({"ecosystem", "package", "published_after", "until", "reason"})
_RELATIVE = re.compile(r"^\d+(?:\.\d+)?(?:ms|s|m|h|d|w)(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))*$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NPM_EXACT = re.compile(r"^=?v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_RANGE_CHARACTERS: Final = frozenset("<>=!~^*|,[]() ")


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What the admin handlers use: the app's services and its enabled adapters (the same
    dict the app fills, so adapters loaded later are seen)."""

    services: Services
    adapters: Mapping[str, Ecosystem]


ADMIN = web.AppKey("admin", AdminContext)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: the token's name (or "anonymous" for an open read) and address."""

    actor: str
    client: str


def add_routes(app: web.Application, services: Services, adapters: Mapping[str, Ecosystem]) -> None:
    """Register every `/api/v1/` route on `app`."""
    app[ADMIN] = AdminContext(services=services, adapters=adapters)
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
    value = text.strip()
    if _RELATIVE.fullmatch(value.lower()):
        try:
            delta = parse_duration(value, key=field)
        except ConfigError as exc:
            raise BadRequest(str(exc), field=field) from None
        return now + delta if future else now - delta
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
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; 400 naming `body` otherwise."""
    try:
        value = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body: not valid JSON ({exc})", field="body") from None
    if not isinstance(value, dict):
        raise BadRequest("body: expected a JSON object", field="body")
    return value


def _text(body: Mapping[str, Any], field: str, *, default: str | None = None) -> str:
    value = body.get(field, default)
    if value is None:
        raise BadRequest(f"{field}: required", field=field)
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string", field=field)
    return value.strip()


def _optional_text(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string", field=field)
    return value.strip()


def _check_fields(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(
            f"{unknown[0]}: unknown field (expected {', '.join(sorted(allowed))})",
            field=unknown[0],
        )


def _validate(kind: RuleKind, ecosystem: str, package: str, spec: str, reason: str) -> None:
    try:
        policy.validate_rule(kind, ecosystem, package, spec, reason)
    except policy.InvalidRule as exc:
        raise BadRequest(f"{exc.field}: {exc}", field=exc.field) from None
    if len(reason) > MAX_REASON_LENGTH:
        raise BadRequest(f"reason: at most {MAX_REASON_LENGTH} characters, please", field="reason")


def exact_version(ecosystem: str, spec: str) -> str | None:
    """The single version a spec names (`1.14.1`, `==2.31.0`, `1.0`), or None for a range."""
    text = spec.strip()
    if ecosystem == "npm":
        if not _NPM_EXACT.fullmatch(text):
            return None
        return text.lstrip("=").removeprefix("v")
    if ecosystem == "pypi":
        text = text.removeprefix("===").removeprefix("==").strip()
    if not text or _RANGE_CHARACTERS & set(text):
        return None
    return text


def new_rule_id(kind: RuleKind) -> str:
    return ID_PREFIXES[kind] + secrets.token_hex(6)


def describe_rule(record: RuleRecord, now: datetime) -> dict[str, Any]:
    """A stored rule as the API shows it; `expired` says whether it still applies."""
    return {
        **policy.describe_record(record),
        "expired": record.expires_at is not None and record.expires_at <= now,
    }


def matching_downloads(
    events: Iterable[DownloadEvent], ecosystem: str, spec: str
) -> list[DownloadEvent]:
    """The download events whose version the spec covers."""
    parsed = versions.parse_spec(ecosystem, spec)
    return [event for event in events if parsed.contains(event.version)]


def describe_impact(
    ecosystem: str,
    package: str,
    spec: str,
    events: list[DownloadEvent],
    since: datetime | None,
    *,
    complete: bool = True,
) -> dict[str, Any]:
    matched = matching_downloads(events, ecosystem, spec)
    impact: dict[str, Any] = {
        "ecosystem": ecosystem,
        "package": package,
        "versions": spec,
        "since": iso(since),
        "packages": sorted({event.package for event in matched}),
        "complete": complete,
        "clients": sorted({event.client for event in matched}),
        "downloads": [
            {
                "client": event.client,
                "package": event.package,
                "version": event.version,
                "filename": event.filename,
                "at": iso(event.at),
            }
            for event in matched
        ],
    }
    if not complete:
        impact["note"] = (
            f"the glob covers more than {MAX_IMPACT_PACKAGES} downloaded packages; only the "
            "first are listed: narrow it"
        )
    return impact


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


def _context(request: web.Request) -> AdminContext:
    return request.app[ADMIN]


def _authorize(request: web.Request, *, required: bool) -> Caller:
    services = _context(request).services
    client = client_address(request, services.config)
    if not required:
        return Caller(actor="anonymous", client=client)
    # Unauthorized (401) carries its WWW-Authenticate header through the error middleware.
    name = identify(request.headers.get("Authorization"), services.config.admin.tokens)
    return Caller(actor=name, client=client)


def _read_guard(request: web.Request) -> Caller:
    protect = _context(request).services.config.admin.protect_reads
    return _authorize(request, required=protect)


def _ecosystem_param(value: str | None, field: str = "ecosystem") -> str:
    if not value:
        raise BadRequest(f"{field}: required (npm, pypi or maven)", field=field)
    if value not in versions.ECOSYSTEM_NAMES:
        raise BadRequest(
            f"{field}: unknown ecosystem {value!r} (expected one of npm, pypi, maven)",
            field=field,
        )
    return value


def _query(request: web.Request, field: str) -> str:
    value = request.query.get(field, "").strip()
    if not value:
        raise BadRequest(f"{field}: required", field=field)
    return value


async def _read_json(request: web.Request) -> dict[str, Any]:
    return parse_body(await request.read())


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


def _log_change(entry: AuditEntry) -> None:
    change = entry.after if entry.after is not None else entry.before or {}
    log.warning(
        "%s %s by %s from %s: %s %s %s (%s)",
        entry.action,
        entry.target,
        entry.actor,
        entry.client,
        change.get("ecosystem", ""),
        change.get("package", ""),
        change.get("versions", ""),
        change.get("reason", ""),
    )


async def _impact(
    services: Services, ecosystem: str, package: str, spec: str, since: datetime | None
) -> dict[str, Any]:
    pattern = policy.PackagePattern(ecosystem, package)
    if pattern.exact:
        names = [pattern.pattern]
    else:
        # A glob (`@evilscope/*`): every package the ledger knows that it covers.
        known = await services.state.downloaded_packages(ecosystem)
        names = [name for name in known if pattern.matches(name)]
    events: list[DownloadEvent] = []
    for name in names[:MAX_IMPACT_PACKAGES]:
        events.extend(await services.state.downloads(ecosystem, name, since=since))
    events.sort(key=lambda event: event.at)
    return describe_impact(
        ecosystem, package, spec, events, since, complete=len(names) <= MAX_IMPACT_PACKAGES
    )


# handlers: rules --------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _create_handler(kind: RuleKind) -> Handler:
    async def create(request: web.Request) -> web.StreamResponse:
        caller = _authorize(request, required=True)
        body = await _read_json(request)
        services = _context(request).services
        now = services.clock.now()
        if kind == "freeze":
            record = _freeze_record(body, caller, now)
        else:
            record = await _rule_record(kind, body, caller, now, _context(request))
        after = describe_rule(record, now)
        entry = _audit_entry(services, caller, f"{kind}.create", record.id, None, after)
        await services.state.add_rule(record, audit=entry)
        _log_change(entry)
        await services.policy.reload()
        answer: dict[str, Any] = {kind: after}
        if kind == "block":
            try:
                answer["impact"] = await _impact(
                    services, record.ecosystem, record.package, record.versions, None
                )
            except StateUnavailable as exc:
                answer["impact"] = {"error": f"the download ledger is unavailable: {exc}"}
        return web.json_response(answer, status=201)

    return create


def _list_handler(kind: RuleKind) -> Handler:
    async def list_rules(request: web.Request) -> web.StreamResponse:
        _read_guard(request)
        services = _context(request).services
        ecosystem = request.query.get("ecosystem")
        if ecosystem is not None:
            _ecosystem_param(ecosystem)
        now = services.clock.now()
        records = await services.state.list_rules(kind)
        shown = [
            describe_rule(record, now)
            for record in records
            if ecosystem is None or record.ecosystem == ecosystem
        ]
        return web.json_response({COLLECTIONS[kind]: shown})

    return list_rules


def _show_handler(kind: RuleKind) -> Handler:
    async def show(request: web.Request) -> web.StreamResponse:
        _read_guard(request)
        services = _context(request).services
        record = await _find_rule(services, kind, request.match_info["id"])
        return web.json_response({kind: describe_rule(record, services.clock.now())})

    return show


def _delete_handler(kind: RuleKind) -> Handler:
    async def delete(request: web.Request) -> web.StreamResponse:
        caller = _authorize(request, required=True)
        services = _context(request).services
        rule_id = request.match_info["id"]
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
    context: AdminContext,
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
        expires = await _default_exemption_expiry(context, ecosystem, package, spec, now)
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
    context: AdminContext, ecosystem: str, package: str, spec: str, now: datetime
) -> datetime:
    version = exact_version(ecosystem, spec)
    if version is None:
        raise BadRequest(
            f"expires: required for an exemption of a version range ({spec!r}); only an exact "
            "version gets the default (the moment it would have left quarantine)",
            field="expires",
        )
    if policy.GLOB_CHARACTERS & set(package):
        raise BadRequest("expires: required for an exemption of a package glob", field="expires")
    adapter = context.adapters.get(ecosystem)
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
    age = context.services.policy.rules().quarantine_age(
        ecosystem, versions.normalize_package(ecosystem, package)
    )
    matured = published_at + age
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
    context = _context(request)
    ecosystem = _ecosystem_param(request.query.get("ecosystem", "").strip())
    package = _query(request, "package")
    version = _query(request, "version")
    adapter = context.adapters.get(ecosystem)
    if adapter is None:
        raise EcosystemDisabled(
            f"{ecosystem} is not enabled on this mirror, so there is nothing to explain: set "
            f"MIRROR_{ecosystem.upper()}_UPSTREAM to serve it"
        )
    explanation = await adapter.explain(package, version)
    answer = explanation_json(explanation)
    filename = request.query.get("file", "").strip()
    if filename:
        answer = one_file(answer, filename)
    return web.json_response(answer)


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
    _read_guard(request)
    services = _context(request).services
    ecosystem = _ecosystem_param(request.query.get("ecosystem", "").strip())
    package = _query(request, "package")
    spec = request.query.get("versions", "").strip() or versions.ANY_VERSION
    try:
        versions.parse_spec(ecosystem, spec)
    except versions.InvalidSpec as exc:
        raise BadRequest(f"versions: {exc}", field="versions") from None
    since_text = request.query.get("since", "").strip()
    since = (
        parse_time(since_text, field="since", now=services.clock.now(), future=False)
        if since_text
        else None
    )
    return web.json_response(await _impact(services, ecosystem, package, spec, since))


async def audit_view(request: web.Request) -> web.StreamResponse:
    _authorize(request, required=True)
    services = _context(request).services
    text = request.query.get("limit", "100").strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_AUDIT_LIMIT:
        raise BadRequest(f"limit: expected a number from 1 to {MAX_AUDIT_LIMIT}", field="limit")
    entries = await services.state.audit_log(limit=int(text))
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
                for entry in entries
            ]
        }
    )
