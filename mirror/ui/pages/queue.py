"""`/ui/queue`: the quarantine queue, the versions clients asked for and were held back by
quarantine (`StateStore.held_versions`, noted by `mirror.holdrecorder`), most recently held
first, with who asked and when each becomes available; what each version's decision is now
(the adapter's explain, for the rows shown only); and for admins, an exemption of exactly
that version (`POST /ui/queue/exempt`, the admin API's own path: `admin.rules.rule_record`,
`rulechanges.add_rule` with its audit entry, then the policy reloaded)."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from aiohttp import web

from mirror import policy, versions
from mirror.admin.parse import ecosystem_param, safe_text
from mirror.admin.rules import rule_record
from mirror.ecosystems.base import Ecosystem
from mirror.errors import BadRequest, MirrorError, StateUnavailable
from mirror.forwarded import client_address
from mirror.holds import HeldVersion
from mirror.model import ECOSYSTEMS
from mirror.rulechanges import add_rule
from mirror.services import ECOSYSTEM_ADAPTERS
from mirror.ui import guard
from mirror.ui.render import render, services

QUEUE_PATH: Final = "/ui/queue"
# Versions one page reads from the queue (and explains, at most).
QUEUE_ROWS: Final = 100
# Explains running at once, and how long the page waits for them: a version whose document
# is not at hand by then says "unknown" rather than holding the page.
EXPLAIN_PARALLEL: Final = 8
EXPLAIN_TIMEOUT: Final = timedelta(seconds=5)
MAX_REASON_CHARS: Final = 1000

# The current decision as the queue names it (`Verdict` -> state shown).
_STATES: Final[Mapping[str, str]] = {
    "quarantined": "held",
    "exempted": "exempted",
    "blocked": "blocked",
    "allowed": "released",
}


def routes() -> list[web.RouteDef]:
    return [
        web.get("/queue", queue_page, allow_head=False),
        web.post("/queue/exempt", exempt),
    ]


@dataclass(frozen=True, slots=True)
class QueueRow:
    """A held version as the page shows it."""

    held: HeldVersion
    state: str  # held, exempted, blocked, released, unknown
    # The risk signal whose rule holds it now (explain's `risk`), else None.
    risk: Mapping[str, Any] | None
    review_query: str
    explain_query: str


def spelled(ecosystem: str, package: str, version: str) -> str:
    """The version as its tools write it (what the explain page reads): `left-pad@1.4.0`,
    `requests==2.32.0`, `org.example:lib:1.0`."""
    if ecosystem == "npm":
        return f"{package}@{version}"
    if ecosystem == "pypi":
        return f"{package}=={version}"
    return f"{package}:{version}"


async def queue_page(request: web.Request) -> web.StreamResponse:
    guard.reader(request)
    chosen = request.query.get("ecosystem", "")
    if chosen:
        ecosystem_param(chosen)
    found = services(request)
    try:
        held = await found.state.held_versions(limit=QUEUE_ROWS, ecosystem=chosen or None)
    except StateUnavailable as exc:
        # The queue lives in shared state only: say so on the page (503, as the state is),
        # with the filter kept, rather than a bare error.
        return render(
            request,
            "queue.html",
            status=503,
            headers=dict(exc.headers),
            title="Quarantine queue",
            rows=[],
            released=0,
            ecosystems=ECOSYSTEMS,
            chosen=chosen,
            limit=QUEUE_ROWS,
            state_problem=exc.message,
        )
    now = found.clock.now()
    # Versions whose quarantine has ended by the clock are not the queue any more.
    waiting = [version for version in held if version.until is None or version.until > now]
    states = await current_states(request.config_dict[ECOSYSTEM_ADAPTERS], waiting)
    rows = [
        QueueRow(
            held=version,
            state=state,
            risk=risk,
            review_query=urllib.parse.urlencode(
                {
                    "ecosystem": version.ecosystem,
                    "package": version.package,
                    "version": version.version,
                }
            ),
            explain_query=urllib.parse.urlencode(
                {
                    "q": f"{version.ecosystem} "
                    + spelled(version.ecosystem, version.package, version.version)
                }
            ),
        )
        for version, (state, risk) in zip(waiting, states, strict=True)
    ]
    return render(
        request,
        "queue.html",
        title="Quarantine queue",
        rows=rows,
        released=len(held) - len(waiting),
        ecosystems=ECOSYSTEMS,
        chosen=chosen,
        limit=QUEUE_ROWS,
        state_problem=None,
    )


State = tuple[str, Mapping[str, Any] | None]
_UNKNOWN: Final[State] = ("unknown", None)


async def current_states(
    adapters: Mapping[str, Ecosystem], versions: Sequence[HeldVersion]
) -> list[State]:
    """Each version's decision now (`_STATES`) with the risk signal that holds it (the same
    explain: no look-up of its own), or "unknown" when its adapter is off, its explain fails
    or does not answer within EXPLAIN_TIMEOUT."""
    gate = asyncio.Semaphore(EXPLAIN_PARALLEL)

    async def state_of(version: HeldVersion) -> State:
        adapter = adapters.get(version.ecosystem)
        if adapter is None:
            return _UNKNOWN
        async with gate:
            try:
                explanation = await adapter.explain(version.package, version.version)
            except MirrorError:
                return _UNKNOWN
        return _STATES.get(explanation.verdict, "unknown"), explanation.risk

    tasks = [asyncio.ensure_future(state_of(version)) for version in versions]
    if tasks:
        await asyncio.wait(tasks, timeout=EXPLAIN_TIMEOUT.total_seconds())
    states: list[State] = []
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is None:
            states.append(task.result())
        else:
            task.cancel()
            states.append(_UNKNOWN)
    return states


async def exempt(request: web.Request) -> web.StreamResponse:
    """Exempt exactly one held version, as `POST /api/v1/exemptions` would (validated by the
    same code, stored with its audit entry, the policy reloaded), then back to the queue.
    The rule's spec is `===version`: that spelling only."""
    session, form = await guard.writer(request)
    found = services(request)
    reason = safe_text(form.get("reason", ""), "reason", max_length=MAX_REASON_CHARS).strip()
    if not reason:
        raise BadRequest("reason: required (why this version may be served before its time)")
    ecosystem = ecosystem_param(form.get("ecosystem", ""))
    package, version = form.get("package", ""), form.get("version", "")
    # Exactly the version listed: never a glob of packages or a range of versions.
    if policy.GLOB_CHARACTERS & set(package):
        raise BadRequest("package: one package, not a pattern")
    if not version or versions.exact_version(ecosystem, version) != version:
        raise BadRequest("version: one exact version, not a range")
    # `===`: this spelling only, never what the ecosystem counts as equal (Maven 1.0.0 is
    # 1.0; PyPI 1.0+local is 1.0), which nobody has reviewed.
    body = {
        "ecosystem": ecosystem,
        "package": package,
        "versions": versions.exact_spec(version),
        "reason": reason,
    }
    now: datetime = found.clock.now()
    adapters = request.config_dict[ECOSYSTEM_ADAPTERS]
    record = await rule_record("exemption", body, session.name, now, found, adapters)
    client = client_address(request, found.config)
    await add_rule(found, record, actor=session.name, client=client)
    await found.policy.reload()
    raise web.HTTPSeeOther(QUEUE_PATH)
