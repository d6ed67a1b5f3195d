"""Blocks, exemptions and freezes as the admin API takes them: a new rule's record (with an
exemption's default expiry) and what a rule covers now. Storing, finding and auditing a
change is `mirror.rulechanges` (the feed sync makes changes too)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from mirror import policy, versions
from mirror.admin.parse import COLLECTIONS, LATEST_TIME, rule_fields
from mirror.ecosystems.base import Ecosystem
from mirror.errors import BadRequest, MirrorError, UpstreamNotFound
from mirror.model import RuleKind, RuleRecord
from mirror.policy import iso_seconds as iso
from mirror.rulechanges import describe_rule
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
    is the moment its version would have left quarantine anyway."""
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


async def stored_rule(services: Services, rule: Mapping[str, Any]) -> RuleRecord | None:
    kind = rule.get("kind")
    if kind not in COLLECTIONS:
        return None
    for record in await services.state.list_rules(kind):
        if record.id == rule.get("id"):
            return record
    return None
