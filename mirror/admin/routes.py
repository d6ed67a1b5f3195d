"""The aiohttp handlers of the admin API under `/api/v1/` and its route table: each handler
authorizes, parses (`mirror.admin.parse`), does the I/O through the app's services and answers
JSON."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Final

from aiohttp import web

from mirror.admin import auth
from mirror.admin.auth import Caller
from mirror.admin.events import DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT, events_answer
from mirror.admin.impact import DEFAULT_IMPACT_LIMIT, MAX_IMPACT_LIMIT, impact_page
from mirror.admin.openapi import openapi_document
from mirror.admin.parse import (
    COLLECTIONS,
    DRY_RUN_WORDS,
    PREFIX,
    AuditRequest,
    audit_request,
    ecosystem_param,
    events_request,
    impact_request,
    parse_body,
    query_text,
    required_query,
    safe_text,
)
from mirror.admin.rules import (
    RESTORE_COMMAND,
    create_rule,
    delete_rule,
    list_rules,
    new_rule,
    preview_rule,
    rule_coverage,
    stored_rule,
    with_coverage,
)
from mirror.admin.warm import JOBS_DIRECTORY, WarmJobs, audited_status
from mirror.ecosystems.base import Ecosystem
from mirror.errors import BadRequest, EcosystemDisabled, MirrorError, NotFound
from mirror.forwarded import client_address
from mirror.lockfiles.formats import read_lockfile
from mirror.lockfiles.pins import Lockfile, LockfileError, Pin
from mirror.lockfiles.report import MAX_PINS, PINS_AT_ONCE, all_pins, pin_result, preflight_answer
from mirror.lockfiles.warming import MAX_KEPT_WARM_JOBS, MAX_WARM_PINS, MAX_WARM_WAIT
from mirror.model import Explanation, RuleKind
from mirror.policy import iso_seconds as iso
from mirror.requestbody import read_body
from mirror.rulechanges import find_rule
from mirror.services import ECOSYSTEM_ADAPTERS, SERVICES, Services
from mirror.state.base import InvalidPosition

MAX_AUDIT_LIMIT: Final = 1000
DEFAULT_AUDIT_LIMIT: Final = 100
# A preflight explains every pin (an upstream lookup each when not cached): a bound per
# request, and a few at a time as the CLI does.
MAX_PREFLIGHT_PINS: Final = MAX_PINS
WARM_JOBS: Final = web.AppKey("warm-jobs", WarmJobs)


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
        web.get(f"{PREFIX}/events", events_view, allow_head=False),
        web.post(f"{PREFIX}/preflight", preflight_view),
        web.post(f"{PREFIX}/warm", warm_view),
        web.get(f"{PREFIX}/warm/{{id}}", warm_status_view, allow_head=False),
        web.get(f"{PREFIX}/openapi.json", openapi_view, allow_head=False),
    ]
    app.router.add_routes(routes)
    jobs = WarmJobs(_services_of(app).config.state_directory / JOBS_DIRECTORY)
    app[WARM_JOBS] = jobs

    async def stop_jobs(_app: web.Application) -> None:
        await jobs.close()

    # Before the services close (cleanup): a stopped job's status and audit entry need them.
    app.on_shutdown.append(stop_jobs)


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
        "signals": [_jsonable(signal) for signal in explanation.signals],
        "risk": _jsonable(explanation.risk),
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
    return _services_of(request.app)


def _services_of(app: web.Application) -> Services:
    return app[SERVICES]


def _adapters(request: web.Request) -> Mapping[str, Ecosystem]:
    return request.app[ECOSYSTEM_ADAPTERS]


def _authorize(request: web.Request, *, required: bool = True, write: bool = True) -> Caller:
    """The caller, by its token: an admin token for a `write`, else a read-only one too."""
    config = _services(request).config
    return auth.authenticate(
        request.headers.get("Authorization"),
        client_address(request, config),
        config.admin,
        required=required,
        write=write,
    )


def _read_guard(request: web.Request) -> Caller:
    required = auth.reads_need_token(_services(request).config.admin)
    return _authorize(request, required=required, write=False)


def _impact_guard(request: web.Request) -> Caller:
    required = auth.impact_needs_token(_services(request).config.admin)
    return _authorize(request, required=required, write=False)


def _optional_query(request: web.Request, field: str) -> str:
    """A query parameter, stripped ("" if absent), refused if it holds a control or
    formatting character or is too long."""
    return query_text(request.query, field)


def _query(request: web.Request, field: str) -> str:
    return required_query(request.query, field)


def _rule_id(request: web.Request) -> str:
    return safe_text(request.match_info["id"], "id")


async def _read_json(request: web.Request) -> dict[str, Any]:
    # Bounded on the wire (413) and once inflated (413), inflated off the event loop.
    return parse_body(await read_body(request))


# handlers: rules --------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dry_run(request: web.Request, body: dict[str, Any]) -> bool:
    """Whether a create is a dry run: `?dry_run=true` or `"dry_run": true` in the body
    (removed from `body`, so the rule's own fields are checked as for a real create)."""
    text = request.query.get("dry_run")
    in_query = False
    if text is not None:
        if text.strip().lower() not in DRY_RUN_WORDS:
            raise BadRequest("dry_run: expected true or false", field="dry_run")
        in_query = DRY_RUN_WORDS[text.strip().lower()]
    in_body = body.pop("dry_run", False)
    if not isinstance(in_body, bool):
        raise BadRequest("dry_run: expected true or false (a JSON boolean)", field="dry_run")
    return in_query or in_body


def _create_handler(kind: RuleKind) -> Handler:
    async def create(request: web.Request) -> web.StreamResponse:
        caller = _authorize(request)
        body = await _read_json(request)
        dry_run = _dry_run(request, body)
        services = _services(request)
        adapters = _adapters(request)
        record = await new_rule(kind, body, caller.actor, services.clock.now(), services, adapters)
        if dry_run:
            # Shadow mode: validated as a real create, then nothing is stored, audited or
            # reloaded; the answer is what a real create would report, without an id.
            return web.json_response(await preview_rule(services, adapters, record))
        created = await create_rule(
            services, adapters, record, actor=caller.actor, client=caller.client
        )
        return web.json_response(created, status=201)

    return create


def _list_handler(kind: RuleKind) -> Handler:
    async def list_rules_view(request: web.Request) -> web.StreamResponse:
        _read_guard(request)
        ecosystem = request.query.get("ecosystem")
        if ecosystem is not None:
            ecosystem_param(safe_text(ecosystem, "ecosystem"))
        listing = await list_rules(_services(request), _adapters(request), kind, ecosystem)
        answer: dict[str, Any] = {COLLECTIONS[kind]: listing.rules}
        if listing.degraded is not None:
            answer["last_known"] = {"reason": listing.degraded, "restore": RESTORE_COMMAND}
        return web.json_response(answer)

    return list_rules_view


def _show_handler(kind: RuleKind) -> Handler:
    async def show(request: web.Request) -> web.StreamResponse:
        _read_guard(request)
        services = _services(request)
        record = await find_rule(services, kind, _rule_id(request))
        (shown,) = await with_coverage(_adapters(request), [record], services.clock.now())
        return web.json_response({kind: shown})

    return show


def _delete_handler(kind: RuleKind) -> Handler:
    async def delete(request: web.Request) -> web.StreamResponse:
        caller = _authorize(request)
        services = _services(request)
        rule_id = _rule_id(request)
        before = await delete_rule(
            services, kind, rule_id, actor=caller.actor, client=caller.client
        )
        return web.json_response({"deleted": before})

    return delete


# handlers: queries ----------------------------------------------------------------------------


async def explain_view(request: web.Request) -> web.StreamResponse:
    _read_guard(request)
    adapters = _adapters(request)
    ecosystem = ecosystem_param(_optional_query(request, "ecosystem"))
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
        record = await stored_rule(_services(request), rule)
        coverage = None if record is None else await rule_coverage(adapters, record, fetch=False)
        if coverage is not None:
            answer["rule"] = {**rule, "covers": coverage}
    return web.json_response(answer)


async def _read_pins(
    request: web.Request, limit: int, instead: str
) -> tuple[str, Lockfile, list[tuple[str, Lockfile]], list[Pin]]:
    """The lockfile, dependency list or SBOM in the body (`?format=` forces its format,
    `?name=` is its file name): its name, what was read, and its pins (at most `limit`;
    `instead` says what to do with more)."""
    name = _optional_query(request, "name") or "the request body"
    format_name = _optional_query(request, "format") or None
    try:
        text = (await read_body(request)).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{name}: not UTF-8 text, so not a lockfile") from None
    try:
        lockfile = await asyncio.to_thread(read_lockfile, text, name=name, format_name=format_name)
    except LockfileError as exc:
        raise BadRequest(str(exc)) from None
    files = [(name, lockfile)]
    pins = all_pins(files)
    if len(pins) > limit:
        raise BadRequest(
            f"{name} pins {len(pins)} versions, more than {limit} in one request: {instead}"
        )
    return name, lockfile, files, pins


async def preflight_view(request: web.Request) -> web.StreamResponse:
    """`POST /api/v1/preflight` with a lockfile, dependency list or SBOM as the body
    (`?format=` forces its format, `?name=` is its file name): the report `mirror preflight
    --json` prints, each pin explained by its ecosystem's adapter."""
    _read_guard(request)
    _, _, files, pins = await _read_pins(
        request, MAX_PREFLIGHT_PINS, "split it, or run `mirror preflight`"
    )
    adapters = _adapters(request)
    parallel = asyncio.Semaphore(PINS_AT_ONCE)

    async def check(pin: Pin) -> dict[str, Any]:
        adapter = adapters.get(pin.ecosystem)
        if adapter is None:
            return pin_result(pin, "error", None, f"{pin.ecosystem} is not enabled on this mirror")
        async with parallel:
            try:
                explanation = await adapter.explain(pin.package, pin.version)
            except MirrorError as exc:  # a bad name, an upstream that cannot answer
                return pin_result(pin, "error", None, exc.message)
        return pin_result(pin, explanation.verdict, iso(explanation.until), explanation.detail)

    results = await asyncio.gather(*(check(pin) for pin in pins))
    return web.json_response(preflight_answer(files, results))


async def warm_view(request: web.Request) -> web.StreamResponse:
    """`POST /api/v1/warm` with a lockfile, dependency list or SBOM as the body (as for a
    preflight): a job fetching every allowed pinned version into the cache
    (`mirror.admin.warm`). Needs an admin token (it makes the mirror fetch upstream); audited.
    `?wait=SECONDS` waits that long for the job: finished, the answer is 200 with its
    summary; otherwise 202 with its progress and `Location: /api/v1/warm/{id}`."""
    caller = _authorize(request)
    wait = _wait_seconds(request)
    name, lockfile, _, pins = await _read_pins(
        request, MAX_WARM_PINS, "split it, or run `mirror warm`"
    )
    if not pins:
        raise BadRequest(
            f"{name} ({lockfile.format}) pins no exact version the mirror serves "
            f"({len(lockfile.unpinned)} unpinned, {len(lockfile.skipped)} skipped), so there "
            "is nothing to warm; send a lockfile (?format= names its format)"
        )
    services = _services(request)
    asked = {
        "file": name,
        "format": lockfile.format,
        "pins": len(pins),
        "unpinned": len(lockfile.unpinned),
        "skipped": len(lockfile.skipped),
        "wait": wait,
    }
    jobs = request.app[WARM_JOBS]
    job = await jobs.start(services, _adapters(request), caller, name, lockfile, pins, asked)
    if wait and job.task is not None:
        await asyncio.wait({job.task}, timeout=wait)  # never cancels the job
    status = job.status(services.clock.now())
    location = f"{PREFIX}/warm/{job.id}"
    if job.summary is not None:
        return web.json_response({"warm": status}, headers={"Location": location})
    return web.json_response({"warm": status}, status=202, headers={"Location": location})


def _wait_seconds(request: web.Request) -> float:
    text = _optional_query(request, "wait")
    if not text:
        return 0.0
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WARM_WAIT:
        raise BadRequest(f"wait: seconds from 0 to {MAX_WARM_WAIT}", field="wait")
    return wait


async def warm_status_view(request: web.Request) -> web.StreamResponse:
    """`GET /api/v1/warm/{id}`: a warm job's progress and, once finished, its summary; from
    the state directory (any worker of this server), else from the audit log (any replica)."""
    _authorize(request, write=False)
    services = _services(request)
    job_id = safe_text(request.match_info["id"], "id")
    status = await request.app[WARM_JOBS].status(job_id, services.clock.now())
    if status is None:
        status = await audited_status(services, job_id)
    if status is None:
        raise NotFound(
            f"there is no warm job {job_id!r} (statuses are kept for a day, the newest "
            f"{MAX_KEPT_WARM_JOBS})"
        )
    return web.json_response({"warm": status})


async def openapi_view(request: web.Request) -> web.StreamResponse:
    """The OpenAPI document of this API (`mirror.admin.openapi`), open to everyone; revalidated
    (`no-cache`) since it changes with the mirror's version."""
    document = openapi_document(
        max_impact_limit=MAX_IMPACT_LIMIT,
        max_audit_limit=MAX_AUDIT_LIMIT,
        max_events_limit=MAX_EVENTS_LIMIT,
        max_preflight_pins=MAX_PREFLIGHT_PINS,
    )
    return web.json_response(document, headers={"Cache-Control": "no-cache"})


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
                "signals": entry.get("signals") or [],
                "risk": entry.get("risk"),
                "files": [entry],
            }
    raise NotFound(
        f"{answer.get('package')} {answer.get('version')} has no file {filename!r} upstream"
    )


async def impact_view(request: web.Request) -> web.StreamResponse:
    _impact_guard(request)
    services = _services(request)
    asked = impact_request(
        request.query,
        now=services.clock.now(),
        default_limit=DEFAULT_IMPACT_LIMIT,
        max_limit=MAX_IMPACT_LIMIT,
    )
    answer = await impact_page(services, asked.query, limit=asked.limit, cursor=asked.cursor)
    return web.json_response(answer)


async def events_view(request: web.Request) -> web.StreamResponse:
    """Takedown events, newest first, filtered by `ecosystem`, `package` and `since`, paged
    by `after` (the previous answer's `next`). They name client addresses: guarded as impact
    reports are."""
    _impact_guard(request)
    services = _services(request)
    asked = events_request(
        request.query,
        now=services.clock.now(),
        default_limit=DEFAULT_EVENTS_LIMIT,
        max_limit=MAX_EVENTS_LIMIT,
    )
    return web.json_response(await events_answer(services, asked))


async def audit_view(request: web.Request) -> web.StreamResponse:
    """The audit log, newest first, filtered by `target` (a rule id), `actor` and a time
    window (`since` inclusive, `until` exclusive), paged by `cursor`. `pruned_before` says
    up to when entries may have been pruned (older than `admin.audit_retention`; the entry
    that created a stored rule is kept as long as the rule)."""
    _authorize(request, write=False)
    services = _services(request)
    asked = audit_request(
        request.query,
        now=services.clock.now(),
        default_limit=DEFAULT_AUDIT_LIMIT,
        max_limit=MAX_AUDIT_LIMIT,
    )
    return web.json_response(await audit_answer(services, asked))


async def audit_answer(services: Services, asked: AuditRequest) -> dict[str, Any]:
    """One page of the audit log as the API answers it (the dashboard shows the same)."""
    try:
        page = await services.state.audit_page(
            limit=asked.limit,
            target=asked.target,
            actor=asked.actor,
            since=asked.since,
            until=asked.until,
            after=asked.cursor,
        )
    except InvalidPosition:
        raise BadRequest(
            "cursor: not a cursor of this mirror's audit log; pass next_cursor from the "
            "previous answer unchanged",
            field="cursor",
        ) from None
    following = None
    if page.next_after is not None:
        query = {**asked.texts, "limit": str(asked.limit), "cursor": page.next_after}
        following = f"{PREFIX}/audit?{urllib.parse.urlencode(query)}"
    return {
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
