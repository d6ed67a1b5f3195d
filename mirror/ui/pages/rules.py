"""`/ui/rules?kind=block|exemption|freeze`: the blocks, exemptions and freezes, each with what
it covers now, and (admins only) the forms that add one, after a dry run showing what it would
cover and who already downloaded it, and remove one. Every step is the admin API's own
(`mirror.admin.rules`: `new_rule`, `preview_rule`, `create_rule`, `delete_rule`,
`list_rules`), fed with the form's fields as the JSON API is fed with a body, so validation,
messages, audit entries and log lines are the same."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from mirror.admin.parse import safe_text
from mirror.admin.rules import (
    RESTORE_COMMAND,
    create_rule,
    delete_rule,
    list_rules,
    new_rule,
    preview_rule,
)
from mirror.ecosystems.base import Ecosystem
from mirror.errors import BadRequest, NotFound, StateUnavailable
from mirror.forwarded import client_address
from mirror.model import ECOSYSTEMS, RuleKind, RuleRecord
from mirror.services import ECOSYSTEM_ADAPTERS
from mirror.ui import guard
from mirror.ui.render import render, services
from mirror.ui.session import UiSession

# The tabs, in order: each kind's singular and plural name.
KINDS: Final[Mapping[RuleKind, tuple[str, str]]] = {
    "block": ("Block", "Blocks"),
    "exemption": ("Exemption", "Exemptions"),
    "freeze": ("Freeze", "Freezes"),
}
# The add form's fields, in the order they are shown: the JSON API's body fields of the kind
# (`mirror.admin.parse.rule_fields`, `freeze_record`).
RULE_FORM: Final = ("ecosystem", "package", "versions", "reason", "expires")
FREEZE_FORM: Final = ("ecosystem", "package", "published_after", "until", "reason")
# After a change, which rule the list's notice is about: `created:block:b-9c8d2f…`, read once.
NOTICE_COOKIE: Final = "mirror_ui_rule_notice"
NOTICE_SECONDS: Final = 120
_NOTICE: Final = re.compile(r"^(created|removed):(block|exemption|freeze):([a-z]-[0-9a-f]{1,32})$")
LIST_PATH: Final = "/ui/rules"


def routes() -> list[web.RouteDef]:
    return [
        web.get("/rules", rules_page, allow_head=False),
        web.post("/rules/{kind}/preview", preview),
        web.post("/rules/{kind}/{id}/remove", remove),
        web.post("/rules/{kind}", create),
    ]


def form_fields(kind: RuleKind) -> tuple[str, ...]:
    return FREEZE_FORM if kind == "freeze" else RULE_FORM


def form_body(kind: RuleKind, form: Mapping[str, str]) -> dict[str, str]:
    """The JSON API's body of a create from the add form's fields (absent ones empty, as an
    empty input posts them; the record builders treat empty optional fields as absent)."""
    return {field: form.get(field, "") for field in form_fields(kind)}


def _kind(text: str | None) -> RuleKind:
    for kind in KINDS:
        if text == kind:
            return kind
    raise BadRequest("kind: expected block, exemption or freeze", field="kind")


def _path_kind(request: web.Request) -> RuleKind:
    text = request.match_info["kind"]
    for kind in KINDS:
        if text == kind:
            return kind
    raise NotFound(f"there is no dashboard page at {request.path}")


def _adapters(request: web.Request) -> Mapping[str, Ecosystem]:
    return request.config_dict[ECOSYSTEM_ADAPTERS]


def _list_location(kind: RuleKind) -> str:
    return f"{LIST_PATH}?kind={kind}"


async def rules_page(request: web.Request) -> web.StreamResponse:
    guard.reader(request)
    kind = _kind(request.query.get("kind", "block"))
    response = await _list_page(
        request, kind, status=200, problem=None, values={}, notice=_notice_cookie(request, kind)
    )
    if NOTICE_COOKIE in request.cookies:
        response.del_cookie(NOTICE_COOKIE, path=LIST_PATH, samesite="Strict")
    return response


async def _list_page(
    request: web.Request,
    kind: RuleKind,
    *,
    status: int,
    problem: str | None,
    values: Mapping[str, str],
    notice: tuple[str, str] | None = None,
) -> web.Response:
    # The page a security team opens during an outage: a state that does not answer still
    # shows what this worker enforces.
    listing = await list_rules(
        services(request), _adapters(request), kind, enforced_if_unavailable=True
    )
    return render(
        request,
        "rules.html",
        status=status,
        title=KINDS[kind][1],
        kind=kind,
        kinds=KINDS,
        rules=listing.rules,
        degraded=listing.degraded,
        unavailable=listing.unavailable,
        restore=RESTORE_COMMAND,
        notice=None if notice is None else await _notice(request, kind, notice, listing.rules),
        problem=problem,
        values=values,
        fields=form_fields(kind),
        ecosystems=ECOSYSTEMS,
        enabled=sorted(_adapters(request)),
    )


def _notice_cookie(request: web.Request, kind: RuleKind) -> tuple[str, str] | None:
    """The (action, rule id) the last change on this list left in the notice cookie."""
    match = _NOTICE.fullmatch(request.cookies.get(NOTICE_COOKIE, ""))
    if match is None or match.group(2) != kind:
        return None
    return match.group(1), match.group(3)


async def _notice(
    request: web.Request,
    kind: RuleKind,
    notice: tuple[str, str],
    listed: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """What the last change on this list did: the created rule as listed (with what it
    covers), or the removed one as the audit log kept it. Only a lookup: the cookie names a
    rule, it never carries the text shown."""
    action, rule_id = notice
    if action == "created":
        for rule in listed:
            if rule.get("id") == rule_id:
                return {"action": action, "rule": rule}
        return None
    try:
        page = await services(request).state.audit_page(limit=1, target=rule_id)
    except StateUnavailable:
        return {"action": action, "rule": {"id": rule_id}}
    for entry in page.entries:
        if entry.action == f"{kind}.delete" and entry.before is not None:
            return {"action": action, "rule": dict(entry.before)}
    return None


def _set_notice(request: web.Request, response: web.StreamResponse, text: str) -> None:
    response.set_cookie(
        NOTICE_COOKIE,
        text,
        max_age=NOTICE_SECONDS,
        path=LIST_PATH,
        httponly=True,
        samesite="Strict",
        secure=guard.served_securely(request),
    )


async def _new_rule(
    request: web.Request, kind: RuleKind, body: Mapping[str, str], actor: str
) -> RuleRecord:
    """The form's rule, validated as the JSON API validates a create's body (BadRequest)."""
    state_services = services(request)
    return await new_rule(
        kind, body, actor, state_services.clock.now(), state_services, _adapters(request)
    )


async def _submitted(
    request: web.Request,
) -> tuple[UiSession, RuleKind, dict[str, str], RuleRecord | web.Response]:
    """An add or confirm form's rule, validated as a create (an admin login, CSRF checked),
    or the list page again with the message and the typed values (400)."""
    found, form = await guard.writer(request)
    kind = _path_kind(request)
    body = form_body(kind, form)
    try:
        return found, kind, body, await _new_rule(request, kind, body, found.name)
    except BadRequest as exc:
        page = await _list_page(request, kind, status=400, problem=exc.message, values=body)
        return found, kind, body, page


async def preview(request: web.Request) -> web.StreamResponse:
    """The add form's dry run: validated as a create, answered with what it would cover and
    (a block) who already downloaded that; a confirm form carries the same fields."""
    _, kind, body, record = await _submitted(request)
    if isinstance(record, web.Response):
        return record
    state_services = services(request)
    adapters = _adapters(request)
    answer = await preview_rule(state_services, adapters, record)
    return render(
        request,
        "rule_preview.html",
        title=f"{KINDS[kind][0]} preview",
        kind=kind,
        kinds=KINDS,
        rule=answer[kind],
        warning=answer.get("warning"),
        impact=answer.get("impact"),
        values=body,
    )


async def create(request: web.Request) -> web.StreamResponse:
    """The confirm form: the rule created as the JSON API creates it (audited, logged,
    applied), then back to the list, whose notice says what it covers."""
    found, kind, _, record = await _submitted(request)
    if isinstance(record, web.Response):
        return record
    state_services = services(request)
    adapters = _adapters(request)
    client = client_address(request, state_services.config)
    await create_rule(state_services, adapters, record, actor=found.name, client=client)
    response = web.Response(status=303, headers={"Location": _list_location(kind)})
    _set_notice(request, response, f"created:{kind}:{record.id}")
    return response


async def remove(request: web.Request) -> web.StreamResponse:
    found, _ = await guard.writer(request)
    kind = _path_kind(request)
    rule_id = safe_text(request.match_info["id"], "id")
    state_services = services(request)
    client = client_address(request, state_services.config)
    # NotFound (removed meanwhile, or never there) is the error page, saying so.
    await delete_rule(state_services, kind, rule_id, actor=found.name, client=client)
    response = web.Response(status=303, headers={"Location": _list_location(kind)})
    if _NOTICE.fullmatch(f"removed:{kind}:{rule_id}"):
        _set_notice(request, response, f"removed:{kind}:{rule_id}")
    return response
