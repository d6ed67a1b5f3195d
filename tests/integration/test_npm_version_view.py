"""`/npm/{name}/{version}` on a huge packument filters it once per document and policy
version, not once per request. The whole app against a fake npm registry on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.ecosystems.npm import document as npm_document
from mirror.model import RuleRecord
from mirror.services import SERVICES
from tests.conftest import wait_until
from tests.fakes.npm import FakeNpmRegistry, iso
from tests.integration.conftest import NOW, OLD, MakeClient

# npm: one version of a huge packument --------------------------------------------------------

BIG = 20_000


def big_packument(registry: FakeNpmRegistry) -> bytes:
    """`big` with 20,000 old versions and one young one (held for 3 days)."""
    versions = {}
    times = {}
    for index in range(BIG + 1):
        version = f"1.0.{index}"
        versions[version] = {
            "name": "big",
            "version": version,
            "dist": {
                "tarball": f"{registry.url}big/-/big-{version}.tgz",
                "shasum": f"{index:040x}",
            },
        }
        published = NOW - timedelta(hours=1) if index == BIG else OLD + timedelta(minutes=index)
        times[version] = iso(published)
    document = {
        "name": "big",
        "dist-tags": {"latest": f"1.0.{BIG}"},
        "versions": versions,
        "time": {"created": iso(OLD), "modified": iso(NOW), **times},
    }
    return json.dumps(document).encode()


async def test_one_version_of_a_huge_packument_is_not_filtered_per_request(
    make_mirror: MakeClient,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    clock: FixedClock,
) -> None:
    registry = FakeNpmRegistry()
    await registry.start(aiohttp_server)
    registry.upstream.add("/big", big_packument(registry), content_type="application/json")
    filtered = 0
    real_filter = npm_document.filter_packument

    def counting_filter(*args: object, **kwargs: object) -> npm_document.PackumentView:
        nonlocal filtered
        filtered += 1
        return real_filter(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(npm_document, "filter_packument", counting_filter)
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)

    async def manifest(spec: str) -> tuple[int, dict[str, object]]:
        response = await client.get(f"/npm/big/{spec}")
        return response.status, await response.json(content_type=None)

    for index in range(0, BIG, BIG // 50):
        status, body = await manifest(f"1.0.{index}")
        assert (status, body["version"]) == (200, f"1.0.{index}")
    status, body = await manifest("latest")
    assert (status, body["version"]) == (200, f"1.0.{BIG - 1}")  # the young one is held
    assert (await manifest(f"1.0.{BIG}"))[0] == 404
    assert filtered == 1
    # The packument's own forms come from the same filtered view: still one filter.
    for accept in ("application/json", "application/vnd.npm.install-v1+json"):
        whole = await client.get("/npm/big", headers={"Accept": accept})
        assert whole.status == 200
        assert f"1.0.{BIG}" not in (await whole.json(content_type=None))["versions"]
    tags = await client.get("/npm/-/package/big/dist-tags")
    assert (await tags.json())["latest"] == f"1.0.{BIG - 1}"
    assert filtered == 1
    # The filtered view is paid for from the worker's byte budget like every cache: about
    # 170 bytes per visible version here.
    assert BIG * 100 < client.app[SERVICES].memory.usage()["npm version views"] < BIG * 400

    # The clock lets the young version out: filtered again, once.
    clock.advance(timedelta(days=3, hours=1))
    status, body = await manifest("latest")
    assert (status, body["version"]) == (200, f"1.0.{BIG}")
    assert (await manifest(f"1.0.{BIG}"))[0] == 200
    assert filtered == 2

    # A new rule: filtered again under it.
    services = client.app[SERVICES]
    before = services.policy.version
    await services.state.add_rule(
        RuleRecord(
            id="block-big", kind="block", ecosystem="npm", package="big", versions="1.0.7",
            reason="test", created_at=NOW, created_by="test",
        )
    )  # fmt: skip
    assert await wait_until(lambda: services.policy.version != before, 10)
    assert (await manifest("1.0.7"))[0] == 404
    assert (await manifest("1.0.8"))[0] == 200
    assert filtered == 3
