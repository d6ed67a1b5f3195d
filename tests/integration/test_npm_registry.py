"""The npm adapter through the whole app: `create_app` with a FixedClock against a fake npm
upstream (a real aiohttp server on 127.0.0.1 with real tarballs)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.model import RuleRecord
from mirror.services import ECOSYSTEM_ADAPTERS, SERVICES
from tests.conftest import start_redis, wait_until
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import NOW, OLD, Client, MakeClient

CORGI = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD, deprecated="use 1.3.0")
    registry.add_version("left-pad", "1.3.0", published=NOW - timedelta(days=30))
    registry.add_version("left-pad", "1.3.1", published=NOW - timedelta(days=10))
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    registry.add_version("left-pad", "2.0.0-beta.1", published=NOW - timedelta(hours=1), tag="next")
    registry.add_version("@acme/widget", "0.9.0", published=OLD)
    registry.add_version("@acme/widget", "1.0.0", published=NOW - timedelta(days=1))
    registry.add_version("brand-new", "0.0.1", published=NOW - timedelta(minutes=10))
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(make_mirror, MIRROR_NPM_UPSTREAM=registry.url)


def count(registry: FakeNpmRegistry, path: str) -> int:
    return registry.upstream.count(path)


# packuments ----------------------------------------------------------------------------------


async def test_corgi_packument_is_filtered_rewritten_and_announced(
    client: Client, registry: FakeNpmRegistry
) -> None:
    response = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/vnd.npm.install-v1+json"
    assert "Accept" in response.headers["Vary"]
    assert response.headers["npm-notice"] == (
        "left-pad: 2 versions held in quarantine (newest 2.0.0-beta.1, available 2026-11-25T09:00Z)"
    )
    body = await response.json(content_type=None)
    assert list(body["versions"]) == ["1.0.0", "1.3.0", "1.3.1"]
    assert body["dist-tags"] == {"latest": "1.3.1"}
    assert set(body["time"]) == {"created", "modified", "1.0.0", "1.3.0", "1.3.1"}
    # Versions are held: `modified` is the newest visible publish, not the upstream's.
    assert (
        body["modified"] == body["time"]["1.3.1"] == registry.packument("left-pad")["time"]["1.3.1"]
    )
    base = str(client.make_url("/npm")).rstrip("/")
    dist = body["versions"]["1.3.0"]["dist"]
    assert dist["tarball"] == f"{base}/left-pad/-/left-pad-1.3.0.tgz"
    assert dist["integrity"] == registry.version("left-pad", "1.3.0").integrity
    assert body["versions"]["1.0.0"]["deprecated"] == "use 1.3.0"
    # The mirror asked upstream for the full document, never the abbreviated one.
    assert registry.upstream.last("/left-pad").headers["Accept"] == "application/json"


async def test_full_and_corgi_have_distinct_etags(
    client: Client, registry: FakeNpmRegistry
) -> None:
    full = await client.get("/npm/left-pad", headers={"Accept": "application/json"})
    corgi = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    assert full.status == corgi.status == 200
    assert full.headers["Content-Type"] == "application/json"
    assert full.headers["ETag"] != corgi.headers["ETag"]
    body = await full.json()
    # 1.4.0 (upstream `latest`) is held: the package text is 1.3.1's, which has no readme.
    assert "readme" not in body
    assert body["description"] == registry.packument("left-pad")["versions"]["1.3.1"]["description"]
    assert "1.4.0" not in body["time"]
    assert "1.4.0" not in body["versions"]


async def test_if_none_match_answers_304_per_form(client: Client) -> None:
    first = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    etag = first.headers["ETag"]
    again = await client.get("/npm/left-pad", headers={"Accept": CORGI, "If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag
    other_form = await client.get(
        "/npm/left-pad", headers={"Accept": "application/json", "If-None-Match": etag}
    )
    assert other_form.status == 200


async def test_gzip_when_accepted(client: Client) -> None:
    response = await client.get(
        "/npm/left-pad",
        headers={"Accept": "application/json", "Accept-Encoding": "gzip"},
        auto_decompress=False,
    )
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    body = json.loads(gzip.decompress(await response.read()))
    assert body["name"] == "left-pad"


@pytest.mark.parametrize(
    "path", ["/npm/@acme%2fwidget", "/npm/@acme%2Fwidget", "/npm/@acme/widget"]
)
async def test_scoped_packument_in_every_form(
    client: Client, registry: FakeNpmRegistry, path: str
) -> None:
    response = await client.get(path, headers={"Accept": CORGI})
    assert response.status == 200
    body = await response.json(content_type=None)
    assert list(body["versions"]) == ["0.9.0"]
    base = str(client.make_url("/npm")).rstrip("/")
    assert body["versions"]["0.9.0"]["dist"]["tarball"] == (
        f"{base}/@acme/widget/-/widget-0.9.0.tgz"
    )
    assert count(registry, "/@acme/widget") == 1


async def test_public_url_is_used_for_tarball_urls(make_mirror: MakeClient) -> None:
    client = await make_mirror(MIRROR_PUBLIC_URL="https://mirror.example.test/base")
    body = await (await client.get("/npm/left-pad")).json()
    assert body["versions"]["1.3.0"]["dist"]["tarball"] == (
        "https://mirror.example.test/base/npm/left-pad/-/left-pad-1.3.0.tgz"
    )


async def test_nothing_visible_is_404_with_a_reason(client: Client) -> None:
    response = await client.get("/npm/brand-new", headers={"Accept": CORGI})
    assert response.status == 404
    body = await response.json()
    assert "brand-new: 1 version held in quarantine" in body["error"]


async def test_unknown_package_is_404(client: Client) -> None:
    response = await client.get("/npm/no-such-package")
    assert response.status == 404
    assert (await response.json())["reason"] == "not-found"


async def test_the_view_changes_by_the_clock_alone(
    client: Client, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    before = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    assert "1.4.0" not in (await before.json(content_type=None))["versions"]
    # npm prints the notice only for responses it does not store.
    assert before.headers["Cache-Control"] == "no-store"
    clock.advance(timedelta(days=3))  # 1.4.0 and 2.0.0-beta.1 come of age; metadata TTL passes
    after = await client.get(
        "/npm/left-pad", headers={"Accept": CORGI, "If-None-Match": before.headers["ETag"]}
    )
    assert after.status == 200
    body = await after.json(content_type=None)
    assert body["dist-tags"] == {"latest": "1.4.0", "next": "2.0.0-beta.1"}
    assert "npm-notice" not in after.headers
    assert after.headers["Cache-Control"] == "public, max-age=300"


async def test_second_request_makes_no_upstream_request_and_no_parse(
    client: Client, registry: FakeNpmRegistry
) -> None:
    await client.get("/npm/left-pad", headers={"Accept": CORGI})
    upstream_before = len(registry.requests)
    for _ in range(3):
        response = await client.get("/npm/left-pad", headers={"Accept": CORGI})
        assert response.status == 200
    assert len(registry.requests) == upstream_before


async def test_concurrent_misses_make_one_upstream_request(
    client: Client, registry: FakeNpmRegistry
) -> None:
    registry.upstream.hold("/left-pad")
    requests = [
        asyncio.create_task(client.get("/npm/left-pad", headers={"Accept": accept}))
        for accept in [CORGI, "application/json"] * 5
    ]
    for _ in range(200):  # bounded: until the first request reached the fake
        if count(registry, "/left-pad"):
            break
        await asyncio.sleep(0.01)
    registry.upstream.release("/left-pad")
    responses = await asyncio.gather(*requests)
    assert [response.status for response in responses] == [200] * 10
    assert count(registry, "/left-pad") == 1


async def test_dist_tags_endpoint_is_recomputed(client: Client) -> None:
    response = await client.get("/npm/-/package/left-pad/dist-tags")
    assert response.status == 200
    assert await response.json() == {"latest": "1.3.1"}
    scoped = await client.get("/npm/-/package/@acme%2fwidget/dist-tags")
    assert await scoped.json() == {"latest": "0.9.0"}


async def test_version_endpoint_serves_only_visible_versions(client: Client) -> None:
    latest = await client.get("/npm/left-pad/latest")
    assert latest.status == 200
    assert (await latest.json())["version"] == "1.3.1"
    assert (await client.get("/npm/left-pad/1.4.0")).status == 404


# tarballs ------------------------------------------------------------------------------------


async def test_tarball_is_served_verified_and_cached(
    client: Client, registry: FakeNpmRegistry
) -> None:
    path = "/left-pad/-/left-pad-1.3.0.tgz"
    expected = registry.version("left-pad", "1.3.0").tarball
    for _ in range(2):
        response = await client.get("/npm" + path)
        assert response.status == 200
        assert await response.read() == expected
    assert hashlib.sha512(expected).digest()
    assert count(registry, path) == 1


async def test_scoped_tarball_in_both_path_forms(client: Client, registry: FakeNpmRegistry) -> None:
    expected = registry.version("@acme/widget", "0.9.0").tarball
    for path in ("/npm/@acme/widget/-/widget-0.9.0.tgz", "/npm/@acme%2fwidget/-/widget-0.9.0.tgz"):
        response = await client.get(path)
        assert response.status == 200
        assert await response.read() == expected


async def test_quarantined_tarball_is_403_with_the_json_body(
    client: Client, registry: FakeNpmRegistry
) -> None:
    response = await client.get("/npm/left-pad/-/left-pad-1.4.0.tgz")
    assert response.status == 403
    body = await response.json()
    assert body["reason"] == "quarantined"
    assert body["until"].startswith("2026-11-25T05:00")
    assert body["block"] is None
    assert body["error"]
    assert count(registry, "/left-pad/-/left-pad-1.4.0.tgz") == 0


async def test_blocked_tarball_is_403_and_the_packument_says_so(
    client: Client, registry: FakeNpmRegistry
) -> None:
    services = client.app[SERVICES]
    await services.state.add_rule(
        RuleRecord(
            id="block-1",
            kind="block",
            ecosystem="npm",
            package="left-pad",
            versions="1.3.0",
            reason="compromised release",
            created_at=NOW,
            created_by="security",
        )
    )
    await services.policy.reload()
    response = await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")
    assert response.status == 403
    body = await response.json()
    assert body["reason"] == "blocked"
    assert body["block"] is not None
    packument = await client.get("/npm/left-pad", headers={"Accept": CORGI})
    assert (
        "1 version blocked by block block-1: compromised release (1.3.0)"
        in (packument.headers["npm-notice"])
    )
    assert "1.3.0" not in (await packument.json(content_type=None))["versions"]
    assert count(registry, "/left-pad/-/left-pad-1.3.0.tgz") == 0


async def test_unknown_tarball_refreshes_the_packument_once_then_404(
    client: Client, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    await client.get("/npm/left-pad")
    assert count(registry, "/left-pad") == 1
    clock.advance(timedelta(seconds=30))  # cache.refresh_interval since the packument came
    response = await client.get("/npm/left-pad/-/left-pad-9.9.9.tgz")
    assert response.status == 404
    assert count(registry, "/left-pad") == 2
    assert count(registry, "/left-pad/-/left-pad-9.9.9.tgz") == 0


async def test_tarball_of_a_version_newer_than_the_cached_packument(
    client: Client, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    await client.get("/npm/left-pad")
    registry.add_version("left-pad", "1.3.2", published=NOW - timedelta(days=4), tag=None)
    clock.advance(timedelta(seconds=30))  # cache.refresh_interval since the packument came
    response = await client.get("/npm/left-pad/-/left-pad-1.3.2.tgz")
    assert response.status == 200
    assert await response.read() == registry.version("left-pad", "1.3.2").tarball


async def test_tampered_upstream_tarball_is_refused(
    client: Client, registry: FakeNpmRegistry
) -> None:
    path = "/left-pad/-/left-pad-1.3.1.tgz"
    registry.upstream.add(path, b"not the published bytes")
    response = await client.get("/npm" + path)
    assert response.status == 502
    assert (await response.json())["reason"] == "integrity"


# names, methods and the /-/ endpoints --------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/npm/..%2f..%2fetc%2fpasswd",
        "/npm/left%2fpad",
        "/npm/.hidden",
        "/npm/_private",
        "/npm/" + "a" * 215,
        "/npm/bad%01name",
        "/npm/back%5cslash",
        "/npm/@scope%2fname%2fextra",
        "/npm/left-pad/-/..%2f..%2fx.tgz",
    ],
)
async def test_bad_names_are_400_without_upstream_requests(
    client: Client, registry: FakeNpmRegistry, path: str
) -> None:
    response = await client.get(path)
    assert response.status == 400
    assert (await response.json())["reason"] == "bad-request"
    assert registry.requests == []


async def test_ping(client: Client, registry: FakeNpmRegistry) -> None:
    response = await client.get("/npm/-/ping?write=true")
    assert response.status == 200
    assert await response.json() == {}
    assert registry.requests == []


async def test_unknown_special_endpoint_is_404_with_a_message(client: Client) -> None:
    response = await client.get("/npm/-/whoami")
    assert response.status == 404
    assert "not served by this mirror" in (await response.json())["error"]


async def test_publishing_is_not_allowed(client: Client, registry: FakeNpmRegistry) -> None:
    response = await client.put("/npm/left-pad", json={"name": "left-pad"})
    assert response.status == 405
    login = await client.put("/npm/-/user/org.couchdb.user:me", json={})
    assert login.status == 404
    assert registry.requests == []


async def test_audit_is_passed_through_with_a_gzip_body(
    client: Client, registry: FakeNpmRegistry
) -> None:
    path = "/-/npm/v1/security/advisories/bulk"
    registry.upstream.add(path, b'{"left-pad":[]}', content_type="application/json")
    payload = json.dumps({"left-pad": ["1.3.0"]}).encode()
    response = await client.post(
        "/npm" + path,
        data=gzip.compress(payload),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status == 200
    assert await response.json() == {"left-pad": []}
    forwarded = registry.upstream.last(path)
    assert forwarded.method == "POST"
    # The mirror decoded the client's gzip body (bounded); it is relayed plain, without the header.
    assert "Content-Encoding" not in forwarded.headers
    assert json.loads(forwarded.body) == {"left-pad": ["1.3.0"]}


async def test_search_is_passed_through_with_its_query(
    client: Client, registry: FakeNpmRegistry
) -> None:
    registry.upstream.add(
        "/-/v1/search", b'{"objects":[],"total":0}', content_type="application/json"
    )
    response = await client.get("/npm/-/v1/search?text=left&size=5")
    assert response.status == 200
    assert await response.json() == {"objects": [], "total": 0}
    assert registry.upstream.last("/-/v1/search").query == "text=left&size=5"


async def test_explain(client: Client) -> None:
    adapter = client.app[ECOSYSTEM_ADAPTERS]["npm"]
    held = await adapter.explain("left-pad", "1.4.0")
    assert held.verdict == "quarantined"
    assert held.published_at == NOW - timedelta(hours=5)
    assert held.until == NOW - timedelta(hours=5) + timedelta(days=3)
    allowed = await adapter.explain("left-pad", "1.3.0")
    assert allowed.verdict == "allowed"


async def test_metrics_show_cache_hits_misses_and_bytes_served(
    client: Client, registry: FakeNpmRegistry
) -> None:
    def sample(text: str, name: str, **labels: str) -> float:
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(f"{name}{{{wanted}}} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    for _ in range(3):
        assert (await client.get("/npm/left-pad")).status == 200
    tarball = await client.get("/npm/left-pad/-/left-pad-1.3.1.tgz")
    body = await tarball.read()
    text = await (await client.get("/metrics")).text()
    assert sample(text, "mirror_cache_misses_total", ecosystem="npm", kind="metadata") >= 1
    assert sample(text, "mirror_cache_hits_total", ecosystem="npm", kind="metadata") >= 2
    assert sample(text, "mirror_cache_misses_total", ecosystem="npm", kind="artifact") == 1
    served = sample(text, "mirror_bytes_served_total", ecosystem="npm", kind="artifact")
    assert served == len(body)


async def test_redis_dying_keeps_cached_artifacts_and_metadata_flowing(
    make_mirror: MakeClient, registry: FakeNpmRegistry, tmp_path: Path
) -> None:
    """Shared state going away must not take installs down: cached files flow, and a first
    fetch (whose digest pin cannot reach state) is verified against the declared digest and
    served, its pin queued for later; readiness says state is gone."""
    redis, url = start_redis(tmp_path)
    try:
        client = await make_mirror(MIRROR_REDIS_URL=url)
        # A copy-less worker on a brand-new Redis waits for it to settle (LivePolicy).
        assert await wait_until(lambda: client.app[SERVICES].policy.settling is None, 10)
        assert (await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")).status == 200
        redis.kill()
        await asyncio.to_thread(redis.wait, 10)
        cached = await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")
        assert cached.status == 200
        assert await cached.read() == registry.version("left-pad", "1.3.0").tarball
        assert (await client.get("/npm/left-pad")).status == 200
        uncached = await client.get("/npm/left-pad/-/left-pad-1.3.1.tgz")
        assert uncached.status == 200
        assert await uncached.read() == registry.version("left-pad", "1.3.1").tarball
        assert (await client.get("/readyz")).status == 503
    finally:
        if redis.poll() is None:
            redis.kill()
            redis.wait(10)


async def test_a_broken_upstream_document_never_replaces_a_good_copy(
    client: Client, registry: FakeNpmRegistry, clock: FixedClock
) -> None:
    assert (await client.get("/npm/left-pad")).status == 200
    registry.upstream.add("/left-pad", b"<html>upstream error page</html>")
    clock.advance(timedelta(minutes=10))  # past the metadata TTL: revalidation is due
    response = await client.get("/npm/left-pad")
    assert response.status == 200  # the last good copy, served stale
    assert "1.3.1" in (await response.json(content_type=None))["versions"]
    # A package the mirror has never seen whole answers 502 with a reason, not a crash.
    registry.upstream.add("/never-seen", b'{"versions": "not an object"}')
    broken = await client.get("/npm/never-seen")
    assert broken.status == 502
    body = await broken.json()
    assert body["reason"] == "bad-upstream-document"
    assert "the upstream packument of never-seen" in body["error"]


async def test_tarball_urls_on_other_hosts_are_never_fetched(
    client: Client, registry: FakeNpmRegistry
) -> None:
    """A hostile packument pointing a tarball at another host: clients get the mirror's URL,
    and the mirror fetches the canonical path on the configured upstream instead."""
    packument = registry.packument("left-pad")
    packument["versions"]["1.3.1"]["dist"]["tarball"] = "http://evil.test/steal.tgz"
    hostile = json.dumps(packument).encode()
    registry.upstream.add("/left-pad", hostile, content_type="application/json")
    view = await (await client.get("/npm/left-pad")).json(content_type=None)
    assert view["versions"]["1.3.1"]["dist"]["tarball"].startswith(str(client.make_url("/npm/")))
    response = await client.get("/npm/left-pad/-/left-pad-1.3.1.tgz")
    assert response.status == 200
    assert await response.read() == registry.version("left-pad", "1.3.1").tarball
    assert count(registry, "/left-pad/-/left-pad-1.3.1.tgz") == 1


async def test_a_private_upstream_gets_its_credentials(
    make_mirror: MakeClient, registry: FakeNpmRegistry
) -> None:
    private = registry.url.replace("http://", "http://ci:s3cret@")
    client = await make_mirror(MIRROR_NPM_UPSTREAM=private)
    assert (await client.get("/npm/left-pad")).status == 200
    tarball = await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")
    assert tarball.status == 200
    packument = await (await client.get("/npm/left-pad")).json(content_type=None)
    # Clients never see the credentials: every URL they get points at the mirror.
    assert "s3cret" not in json.dumps(packument)
    expected = "Basic " + base64.b64encode(b"ci:s3cret").decode()
    assert {request.headers.get("Authorization") for request in registry.requests} == {expected}
