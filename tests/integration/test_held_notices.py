"""Notices and refusals name what holds a version, through the whole app (npm and PyPI
routes, the explain API): quarantine (until when), a block (id, reason), a freeze (id,
reason, until) and an exemption that expired (id, when)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.model import RuleKind, RuleRecord
from mirror.services import SERVICES
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, Client, MakeClient

CORGI = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
FROZEN = NOW - timedelta(days=4)  # after the freeze cutoff, older than the quarantine age
LAPSED = NOW - timedelta(days=1)  # young; an exemption let it through until an hour ago
YOUNG = NOW - timedelta(hours=2)


def rule(
    kind: RuleKind,
    rule_id: str,
    ecosystem: str,
    package: str,
    versions: str,
    reason: str,
    expires_at: datetime | None = None,
) -> RuleRecord:
    cutoff = (NOW - timedelta(days=5)).isoformat()
    data = {"published_after": cutoff} if kind == "freeze" else {}
    return RuleRecord(
        id=rule_id,
        kind=kind,
        ecosystem=ecosystem,
        package=package,
        versions=versions,
        reason=reason,
        created_at=NOW - timedelta(days=10),
        created_by="security",
        expires_at=expires_at,
        data=data,
    )


def rules_for(
    ecosystem: str, package: str, frozen: str, blocked: str, lapsed: str
) -> list[RuleRecord]:
    return [
        rule("freeze", "f-1a2b", ecosystem, package, frozen, "release week",
             NOW + timedelta(days=18)),
        rule("block", "b-9c8d", ecosystem, package, blocked, "hijacked maintainer account"),
        rule("exemption", "e-5e6f", ecosystem, package, lapsed, "hotfix for INC-42",
             NOW - timedelta(hours=1)),
        rule("freeze", "f-open", ecosystem, "*-frozen", "*", "migration"),
    ]  # fmt: skip


async def add_rules(client: Client, records: Sequence[RuleRecord]) -> None:
    services = client.app[SERVICES]
    for record in records:
        await services.state.add_rule(record)
    await services.policy.reload()


# npm -------------------------------------------------------------------------------------------


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("qm", "1.0.0", published=OLD)
    registry.add_version("qm", "1.1.0", published=FROZEN)
    registry.add_version("qm", "1.2.0", published=OLD)
    registry.add_version("qm", "1.3.0", published=LAPSED)
    registry.add_version("qm", "1.4.0", published=YOUNG)
    registry.add_version("qm-frozen", "1.0.0", published=FROZEN)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
async def npm(make_mirror: MakeClient, registry: FakeNpmRegistry) -> Client:
    client = await partial(make_mirror, MIRROR_NPM_UPSTREAM=registry.url)()
    await add_rules(client, rules_for("npm", "qm", "1.1.x", "1.2.0", "1.3.0"))
    return client


async def test_an_exemption_expiring_leaves_the_live_rules_and_is_named_by_the_refusal(
    npm: Client, clock: FixedClock
) -> None:
    await add_rules(
        npm,
        [rule("exemption", "e-soon", "npm", "qm", "1.4.0", "demo", NOW + timedelta(hours=1))],
    )
    assert (await npm.get("/npm/qm/-/qm-1.4.0.tgz")).status == 200
    clock.advance(timedelta(hours=2))
    refused = await npm.get("/npm/qm/-/qm-1.4.0.tgz")
    assert refused.status == 403
    assert "exemption e-soon (demo) let it through" in (await refused.json())["error"]
    # Re-indexed when it expired (no reload): decisions no longer scan it as a live rule.
    index = npm.app[SERVICES].policy.rules().exemptions["npm"]
    assert "e-soon" not in {rule.record.id for rule in index.exact.get("qm", ())}
    assert "e-soon" in {rule.record.id for rule in index.expired_exact["qm"]}


async def test_the_npm_notice_names_each_cause(npm: Client) -> None:
    response = await npm.get("/npm/qm", headers={"Accept": CORGI})
    assert response.status == 200
    assert response.headers["npm-notice"] == (
        "qm: 1 version held in quarantine (newest 1.4.0, available 2026-11-25T08:00Z); "
        "1 version blocked by block b-9c8d: hijacked maintainer account (1.2.0); "
        "1 version held by freeze f-1a2b: release week (until 2026-12-10T10:00Z; 1.1.0); "
        "1 version back in quarantine since exemption e-5e6f expired 2026-11-22T09:00Z "
        "(newest 1.3.0, available 2026-11-24T10:00Z)"
    )
    assert list((await response.json(content_type=None))["versions"]) == ["1.0.0"]


@pytest.mark.parametrize(
    ("version", "reason", "says"),
    [
        ("1.1.0", "quarantined", "qm@1.1.0 is held by freeze f-1a2b until 2026-12-10T10:00Z: "
         "release week (published 2026-11-18T10:00Z, after the freeze cutoff 2026-11-17T10:00Z)"),
        ("1.2.0", "blocked", "qm@1.2.0 is blocked by this mirror: hijacked maintainer account "
         "(block b-9c8d, added by security at 2026-11-12T10:00Z)"),
        ("1.3.0", "quarantined", "qm@1.3.0 was published 2026-11-21T10:00Z and is in quarantine "
         "until 2026-11-24T10:00Z (quarantine age 3d); exemption e-5e6f (hotfix for INC-42) let "
         "it through until it expired at 2026-11-22T09:00Z; ask your security team for an "
         "exemption if you need it sooner"),
        ("1.4.0", "quarantined", "qm@1.4.0 was published 2026-11-22T08:00Z and is in quarantine "
         "until 2026-11-25T08:00Z (quarantine age 3d); ask your security team for an exemption "
         "if you need it sooner"),
    ],
)  # fmt: skip
async def test_npm_refusals_and_explain_name_the_cause(
    npm: Client, version: str, reason: str, says: str
) -> None:
    await npm.get("/npm/qm", headers={"Accept": CORGI})
    refused = await npm.get(f"/npm/qm/-/qm-{version}.tgz")
    assert refused.status == 403
    body = await refused.json()
    assert (body["reason"], body["error"]) == (reason, says)
    explained = await npm.get(f"/api/v1/explain?ecosystem=npm&package=qm&version={version}")
    assert explained.status == 200
    assert (await explained.json())["detail"] == says


async def test_an_npm_package_with_nothing_visible_says_which_freeze_holds_it(npm: Client) -> None:
    for path in ("/npm/qm-frozen", "/npm/qm-frozen/1.0.0", "/npm/-/package/qm-frozen/dist-tags"):
        response = await npm.get(path, headers={"Accept": CORGI})
        assert response.status == 404, path
        assert (await response.json())["error"] == (
            "no version of qm-frozen is available from this mirror yet: qm-frozen: 1 version "
            "held by freeze f-open: migration (until lifted; 1.0.0)"
        ), path


# PyPI ------------------------------------------------------------------------------------------


@pytest.fixture
async def index(aiohttp_server: AiohttpServer) -> FakePypiIndex:
    index = FakePypiIndex()
    index.add_sdist("demo", "1.0", uploaded=OLD)
    index.add_sdist("demo", "1.1", uploaded=FROZEN)
    index.add_sdist("demo", "1.2", uploaded=OLD)
    index.add_sdist("demo", "1.3", uploaded=LAPSED)
    index.add_wheel("demo", "1.4", uploaded=YOUNG)
    index.add_sdist("demo-frozen", "1.0", uploaded=FROZEN)
    await index.start(aiohttp_server)
    return index


@pytest.fixture
async def pypi(make_mirror: MakeClient, index: FakePypiIndex) -> Client:
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    await add_rules(client, rules_for("pypi", "demo", "==1.1", "==1.2", "==1.3"))
    return client


async def test_the_pypi_notice_names_each_cause(pypi: Client) -> None:
    response = await pypi.get("/pypi/simple/demo/")
    assert response.status == 200
    assert response.headers["X-Mirror-Notice"] == (
        "demo: 1 file held in quarantine (newest demo-1.4-py3-none-any.whl, available "
        "2026-11-25T08:00Z); 1 file blocked by block b-9c8d: hijacked maintainer account "
        "(demo-1.2.tar.gz); 1 file held by freeze f-1a2b: release week (until "
        "2026-12-10T10:00Z; demo-1.1.tar.gz); 1 file back in quarantine since exemption "
        "e-5e6f expired 2026-11-22T09:00Z (newest demo-1.3.tar.gz, available 2026-11-24T10:00Z)"
    )


async def test_pypi_refusals_name_the_cause(pypi: Client) -> None:
    await pypi.get("/pypi/simple/demo/")
    expected = {
        "demo-1.1.tar.gz": "held by freeze f-1a2b until 2026-12-10T10:00Z: release week",
        "demo-1.2.tar.gz": "is blocked by this mirror: hijacked maintainer account (block b-9c8d",
        "demo-1.3.tar.gz": "exemption e-5e6f (hotfix for INC-42) let it through until it expired",
    }
    for filename, says in expected.items():
        refused = await pypi.get(f"/pypi/files/demo/{filename}")
        assert refused.status == 403, filename
        assert says in (await refused.json())["error"], filename


async def test_a_pypi_project_with_nothing_visible_says_which_freeze_holds_it(
    pypi: Client,
) -> None:
    page = await pypi.get("/pypi/simple/demo-frozen/")
    assert page.status == 404
    assert (await page.json())["error"] == (
        "no file of demo-frozen is available from this mirror yet: demo-frozen: 1 file held by "
        "freeze f-open: migration (until lifted; demo_frozen-1.0.tar.gz)"
    )
    api = await pypi.get("/pypi/pypi/demo-frozen/json")
    assert api.status == 404
    assert (await api.json())["error"] == (
        "no release of demo-frozen is available from this mirror yet: 1 file held by freeze "
        "f-open: migration (until lifted; demo_frozen-1.0.tar.gz)"
    )
