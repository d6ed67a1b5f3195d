"""Blocks, exemptions and freezes as the admin API and the dashboard take them: a new rule's
record (with an exemption's default expiry), what a rule covers now, and the steps of a
create (dry run or real), a removal and a listing that both the JSON API
(`mirror.admin.routes`) and the dashboard (`mirror.ui.pages.rules`) call. Storing, finding and
auditing a change is `mirror.rulechanges` (the feed sync makes changes too)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from mirror import policy, versions
from mirror.admin.impact import DEFAULT_IMPACT_LIMIT, impact_page
from mirror.admin.parse import COLLECTIONS, LATEST_TIME, ImpactQuery, freeze_record, rule_fields
from mirror.ecosystems.base import Ecosystem
from mirror.errors import BadRequest, MirrorError, StateUnavailable, UpstreamNotFound
from mirror.model import Explanation, RuleKind, RuleRecord
from mirror.policy import iso_seconds as iso
from mirror.risk import RiskRules, Signal
from mirror.rulechanges import add_rule, describe_rule, remove_rule
from mirror.services import Services

# Coverage ("which versions does this rule cover now"): how many versions an answer lists,
# how long a new rule's answer waits for the upstream document, how many rules a listing
# computes it for.
MAX_COVERED_SHOWN: Final = 200
COVERAGE_TIMEOUT: Final = timedelta(seconds=10)
MAX_COVERAGE_RULES: Final = 500
LISTING_COVERAGE_TIMEOUT: Final = timedelta(seconds=3)
LISTING_COVERAGE_PARALLEL: Final = 8
NO_VERSION_WARNING: Final = "covers no version the upstream lists"
# What brings the rules back when the state is degraded (a listing says so).
RESTORE_COMMAND: Final = "mirror state restore"


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


async def with_coverage(
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


async def rule_record(
    kind: RuleKind,
    body: Mapping[str, Any],
    actor: str,
    now: datetime,
    services: Services,
    adapters: Mapping[str, Ecosystem],
) -> RuleRecord:
    """A block or exemption from a request body, validated; an exemption's default expiry
    is the moment its version would have left quarantine anyway (a risk rule's extension
    included), none for a version a risk rule holds until exempted."""
    fields = rule_fields(body, kind, now)
    expires = fields.expires
    if expires is None and kind == "exemption":
        expires = await _default_exemption_expiry(
            services, adapters, fields.ecosystem, fields.package, fields.spec, now
        )
    return RuleRecord(
        id=policy.new_rule_id(kind),
        kind=kind,
        ecosystem=fields.ecosystem,
        package=fields.package,
        versions=fields.spec,
        reason=fields.reason,
        created_at=now,
        created_by=actor,
        expires_at=expires,
    )


async def _default_exemption_expiry(
    services: Services,
    adapters: Mapping[str, Ecosystem],
    ecosystem: str,
    package: str,
    spec: str,
    now: datetime,
) -> datetime | None:
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
    risk_until: datetime | None = None
    if adapter is not None:
        try:
            explanation = await adapter.explain(package, version)
            why = "the upstream does not say when it was published"
        except MirrorError as exc:
            why = exc.message
        else:
            published_at = explanation.published_at
            rules = services.policy.rules()
            canonical = versions.normalize_package(ecosystem, package)
            for_good, risk_until = _risk_hold(rules.risk, ecosystem, canonical, explanation)
            if for_good:
                # Held until a person lets it through: the exemption is that decision, for
                # good.
                return None
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
    if risk_until is not None:
        # A risk rule's extension holds it past its quarantine: until then.
        matured = max(matured, risk_until)
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


def _risk_hold(
    risk: RiskRules, ecosystem: str, package: str, explanation: Explanation
) -> tuple[bool, datetime | None]:
    """How long the risk signals `explanation` shows hold the version, whatever rule names
    its decision now (a freeze, an exemption being renewed): (True, None) when a `hold`
    rule acts on one, else (False, the end of the longest `extend`: publish time + its
    age, None when none acts). On PyPI the held (or exempted) files' own signals and upload times
    count: the version's decision names one file only."""
    shown: list[tuple[datetime | None, Mapping[str, Any]]] = [
        (explanation.published_at, entry) for entry in explanation.signals
    ]
    for item in explanation.files:
        if item.get("verdict") == "allowed":
            continue
        published = _moment(item.get("published_at")) or explanation.published_at
        shown.extend((published, entry) for entry in item.get("signals") or ())
    until: datetime | None = None
    for published, entry in shown:
        try:
            signal = Signal.of(str(entry.get("signal")), str(entry.get("detail") or ""))
        except ValueError:
            continue
        verdict = risk.verdict(ecosystem, package, signal)
        if verdict.action == "hold":
            return True, None
        if verdict.action == "extend" and published is not None:
            try:
                ends = published + verdict.age
            except OverflowError:  # an upstream publish time near the end of the calendar
                ends = LATEST_TIME + timedelta(seconds=1)
            until = ends if until is None else max(until, ends)
    return False, until


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


async def stored_rule(services: Services, rule: Mapping[str, Any]) -> RuleRecord | None:
    kind = rule.get("kind")
    if kind not in COLLECTIONS:
        return None
    for record in await services.state.list_rules(kind):
        if record.id == rule.get("id"):
            return record
    return None


# The steps of a change, shared by the JSON API and the dashboard ------------------------------


async def new_rule(
    kind: RuleKind,
    body: Mapping[str, Any],
    actor: str,
    now: datetime,
    services: Services,
    adapters: Mapping[str, Ecosystem],
) -> RuleRecord:
    """A new rule of `kind` from a request body (JSON, or a form's fields), validated as a
    create validates it: the same BadRequest, naming the same field."""
    if kind == "freeze":
        return freeze_record(body, actor, now)
    return await rule_record(kind, body, actor, now, services, adapters)


async def rule_effect(
    services: Services,
    adapters: Mapping[str, Ecosystem],
    record: RuleRecord,
    shown: Mapping[str, Any],
) -> dict[str, Any]:
    """A new rule as a create answers it: `shown` with what it covers now (fetching the
    package's document if needed), a warning if it covers nothing, and for a block the first
    impact page of who already downloaded what it covers."""
    kind = record.kind
    answer: dict[str, Any] = {kind: dict(shown)}
    coverage = await rule_coverage(adapters, record, fetch=True)
    if coverage is not None:
        answer[kind] = {**shown, "covers": coverage}
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
    return answer


async def preview_rule(
    services: Services, adapters: Mapping[str, Ecosystem], record: RuleRecord
) -> dict[str, Any]:
    """Shadow mode: what creating the validated `record` would report, without its id;
    nothing is stored, audited or reloaded."""
    after = describe_rule(record, services.clock.now())
    shown = {key: value for key, value in after.items() if key != "id"}
    return {"dry_run": True, **await rule_effect(services, adapters, record, shown)}


async def create_rule(
    services: Services,
    adapters: Mapping[str, Ecosystem],
    record: RuleRecord,
    *,
    actor: str,
    client: str,
) -> dict[str, Any]:
    """Store the validated `record` (audited, logged), apply it on this worker and every
    other, then report what it covers and who already pulled it, as a create answers."""
    after = await add_rule(services, record, actor=actor, client=client)
    await services.policy.reload()
    # Stored and applied first: what it covers and who pulled it are reported after.
    return await rule_effect(services, adapters, record, after)


async def delete_rule(
    services: Services, kind: RuleKind, rule_id: str, *, actor: str, client: str
) -> dict[str, Any]:
    """Remove a stored rule (audited, logged; NotFound if there is none) and apply the
    change; the rule as it was."""
    before = await remove_rule(services, kind, rule_id, actor=actor, client=client)
    await services.policy.reload()
    return before


@dataclass(frozen=True, slots=True)
class RuleListing:
    """The rules of one kind as a listing shows them (each with what it covers now), and
    why they are the last-known ones when the state is degraded (None otherwise), or why
    they are the ones this worker enforces because the state did not answer (None
    otherwise)."""

    rules: list[dict[str, Any]]
    degraded: str | None
    unavailable: str | None = None


async def list_rules(
    services: Services,
    adapters: Mapping[str, Ecosystem],
    kind: RuleKind,
    ecosystem: str | None = None,
    *,
    enforced_if_unavailable: bool = False,
) -> RuleListing:
    """The rules of `kind` (of `ecosystem` only, if given). Degraded (the state was emptied
    or replaced): the rules this worker enforces, the last-known ones, marked as such; never
    the state's shorter list. A state that does not answer raises StateUnavailable, or with
    `enforced_if_unavailable` gives the rules this worker enforces, marked as such."""
    degraded = services.policy.degraded
    unavailable: str | None = None
    if degraded is not None:
        stored = services.policy.enforced_records(kind)
    else:
        try:
            stored = await services.state.list_rules(kind)
        except StateUnavailable as exc:
            if not enforced_if_unavailable:
                raise
            stored, unavailable = services.policy.enforced_records(kind), exc.message
    records = [record for record in stored if ecosystem is None or record.ecosystem == ecosystem]
    shown = await with_coverage(adapters, records, services.clock.now())
    return RuleListing(rules=shown, degraded=degraded, unavailable=unavailable)
