"""`POST /api/v1/warm` and `GET /api/v1/warm/{id}` through the whole app (fake npm, PyPI and
Maven upstreams on 127.0.0.1, FixedClock, SQLite state): an admin token is needed, a body that
is not a lockfile is a 400, only the allowed pins are fetched (the upstreams' request logs say
so), and what was fetched is then served with the upstreams down."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.lockfiles.warming import MAX_WARM_WAIT
from tests.fakes.maven import FakeMavenRepository, build_pom
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, Client, MakeClient

TOKEN = "ops-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WARM = "/api/v1/warm"

LOCK = {
    "name": "app",
    "lockfileVersion": 3,
    "packages": {
        "": {"name": "app", "version": "1.0.0"},
        "node_modules/left-pad": {"version": "1.3.0"},  # allowed
        "node_modules/@qm/widget": {"version": "2.0.0"},  # allowed (scoped)
        "node_modules/a/node_modules/left-pad": {"version": "1.4.0"},  # held (5 h old)
        "node_modules/qm-evil": {"version": "6.6.6"},  # blocked
        "node_modules/qm-gone": {"version": "9.9.9"},  # the upstream has no such version
        "node_modules/local": {"version": "file:../local"},  # not served by the mirror
    },
}


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.3.0", published=OLD)
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    registry.add_version("@qm/widget", "2.0.0", published=OLD)
    registry.add_version("qm-evil", "6.6.6", published=OLD)
    registry.add_version("qm-gone", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(
        make_mirror,
        MIRROR_NPM_UPSTREAM=registry.url,
        MIRROR_PYPI_UPSTREAM="off",
        MIRROR_ADMIN_TOKENS=f"ops:{TOKEN}",
    )


async def block(client: Client, ecosystem: str, package: str, versions: str) -> None:
    body = {"ecosystem": ecosystem, "package": package, "versions": versions, "reason": "worm"}
    response = await client.post("/api/v1/blocks", json=body, headers=AUTH)
    assert response.status == 201, await response.text()


async def warm(client: Client, body: Any, status: int = 200, **query: str) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(WARM, data=data, params=query, headers=AUTH)
    assert response.status == status, await response.text()
    answer = await response.json()
    assert response.headers["Location"] == f"{WARM}/{answer['warm']['id']}"
    job: dict[str, Any] = answer["warm"]
    return job


def named(listed: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(entry["package"], entry["version"]) for entry in listed}


async def test_warm_needs_an_admin_token(make_mirror: MakeClient) -> None:
    client = await make_mirror()
    body = json.dumps(LOCK).encode()
    response = await client.post(WARM, data=body)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = await client.post(WARM, data=body, headers={"Authorization": "Bearer nope"})
    assert response.status == 403
    assert (await client.get(f"{WARM}/{'0' * 24}")).status == 401
    closed = await make_mirror(MIRROR_ADMIN_TOKENS="")
    response = await closed.post(WARM, data=body, headers=AUTH)
    assert response.status == 403
    assert "admin API is disabled" in (await response.json())["error"]


async def test_a_body_that_is_not_a_lockfile_is_a_400(
    make_mirror: MakeClient, registry: FakeNpmRegistry
) -> None:
    client = await make_mirror()
    response = await client.post(WARM, data=b"hello, world", headers=AUTH)
    assert response.status == 400
    answer = await response.json()
    assert "pins no exact version" in answer["error"]
    assert "nothing to warm" in answer["error"]
    response = await client.post(WARM, data=b"{not json", headers=AUTH, params={"name": "x.json"})
    assert response.status == 400
    assert "x.json" in (await response.json())["error"]
    for wait in ("soon", "-1", str(MAX_WARM_WAIT + 1)):
        response = await client.post(
            WARM, data=json.dumps(LOCK).encode(), headers=AUTH, params={"wait": wait}
        )
        assert response.status == 400, wait
        assert (await response.json())["field"] == "wait"
    assert registry.requests == []  # nothing was fetched for a refused request
    audit = await (await client.get("/api/v1/audit", headers=AUTH)).json()
    assert audit["entries"] == []  # and nothing started, so nothing audited


async def test_only_allowed_pins_are_fetched_and_then_served_with_the_upstream_down(
    make_mirror: MakeClient, registry: FakeNpmRegistry
) -> None:
    client = await make_mirror()
    await block(client, "npm", "qm-evil", "6.6.6")
    job = await warm(client, LOCK, wait="30", name="package-lock.json")
    assert job["state"] == "finished"
    assert job["requested_by"] == "ops"
    assert (job["file"], job["format"], job["pins"], job["done"]) == (
        "package-lock.json", "package-lock.json", 5, 5,
    )  # fmt: skip
    summary = job["summary"]
    assert named(summary["fetched"]) == {("left-pad", "1.3.0"), ("@qm/widget", "2.0.0")}
    assert named(summary["held"]) == {("left-pad", "1.4.0")}
    assert named(summary["blocked"]) == {("qm-evil", "6.6.6")}
    assert named(summary["failed"]) == {("qm-gone", "9.9.9")}
    assert summary["cached"] == []
    assert job["counts"] == {"fetched": 2, "cached": 0, "held": 1, "blocked": 1, "failed": 1}
    (held,) = summary["held"]
    assert held["until"] == (NOW + timedelta(days=3) - timedelta(hours=5)).isoformat().replace(
        "+00:00", "Z"
    )
    (blocked,) = summary["blocked"]
    assert "worm" in blocked["detail"]
    assert summary["failed"][0]["detail"]
    sizes = {entry["package"]: (entry["files"], entry["bytes"]) for entry in summary["fetched"]}
    left_pad = registry.version("left-pad", "1.3.0").tarball
    assert sizes["left-pad"] == (1, len(left_pad))
    assert summary["bytes"] == len(left_pad) + len(registry.version("@qm/widget", "2.0.0").tarball)
    assert summary["skipped"]  # the file: dependency
    # Only the allowed tarballs reached the upstream, once each.
    for name, version in (("left-pad", "1.3.0"), ("@qm/widget", "2.0.0")):
        assert registry.upstream.count(registry.tarball_path(name, version)) == 1
    for name, version in (("left-pad", "1.4.0"), ("qm-evil", "6.6.6"), ("qm-gone", "1.0.0")):
        assert registry.upstream.count(registry.tarball_path(name, version)) == 0

    # Again: already cached, nothing fetched.
    again = await warm(client, LOCK, wait="30")
    assert named(again["summary"]["cached"]) == {("left-pad", "1.3.0"), ("@qm/widget", "2.0.0")}
    assert again["summary"]["fetched"] == []
    assert again["summary"]["bytes"] == 0
    assert registry.upstream.count(registry.tarball_path("left-pad", "1.3.0")) == 1

    # The upstream down: the warmed tarballs come from the cache, byte for byte.
    registry.upstream.down()
    response = await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")
    assert response.status == 200
    assert await response.read() == left_pad
    assert (await client.get("/npm/@qm/widget/-/widget-2.0.0.tgz")).status == 200

    # Audited: who asked for what, and how it ended.
    audit = await client.get("/api/v1/audit", params={"target": job["id"]}, headers=AUTH)
    entries = (await audit.json())["entries"]
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("warm.finish", "ops"), ("warm.start", "ops"),
    ]  # fmt: skip
    assert entries[1]["after"]["pins"] == 5
    assert entries[1]["after"]["file"] == "package-lock.json"
    assert entries[0]["after"]["counts"]["fetched"] == 2


async def test_a_job_answers_202_then_its_status_from_any_worker(
    make_mirror: MakeClient, registry: FakeNpmRegistry
) -> None:
    """Without `wait`: 202 and a Location; the status is in the state directory, so a sibling
    worker (another app over the same data) answers it too."""
    slow = registry.tarball_path("left-pad", "1.3.0")
    registry.upstream.slow(slow, 0.5)
    client = await make_mirror()
    sibling = await make_mirror()
    job = await warm(client, LOCK, status=202)
    assert job["state"] == "running"
    assert job["summary"] is None
    location = f"{WARM}/{job['id']}"
    status: dict[str, Any] = {}
    for _ in range(600):  # bounded: about 30 s
        response = await sibling.get(location, headers=AUTH)
        assert response.status == 200, await response.text()
        status = (await response.json())["warm"]
        assert "note" not in status  # from the status file, not the audit log
        if status["state"] != "running":
            break
        assert status["done"] <= status["pins"]
        await asyncio.sleep(0.05)
    assert status["state"] == "finished", status
    assert named(status["summary"]["fetched"]) == {
        ("left-pad", "1.3.0"), ("@qm/widget", "2.0.0"), ("qm-evil", "6.6.6"),
    }  # fmt: skip
    assert (await client.get(location, headers=AUTH)).status == 200
    missing = await client.get(f"{WARM}/{'f' * 24}", headers=AUTH)
    assert missing.status == 404
    assert "no warm job" in (await missing.json())["error"]
    for hostile in ("..%2f..%2fstate", "..", "state.sqlite3"):
        response = await client.get(f"{WARM}/{hostile}", headers=AUTH)
        assert response.status in (400, 404), hostile  # never a file of the state directory


async def test_a_job_on_another_replica_is_answered_from_the_audit_log(
    make_mirror: MakeClient, tmp_path: Path, stoppable_redis: tuple[object, str]
) -> None:
    """Replicas share the state (Redis), never a state directory: a replica that did not run
    the job answers with what the audit log knows (its state and counts)."""
    _, redis = stoppable_redis
    client = await make_mirror(data_dir=tmp_path / "a", MIRROR_REDIS_URL=redis)
    replica = await make_mirror(data_dir=tmp_path / "b", MIRROR_REDIS_URL=redis)
    job = await warm(client, LOCK, wait="30")
    response = await replica.get(f"{WARM}/{job['id']}", headers=AUTH)
    assert response.status == 200, await response.text()
    status = (await response.json())["warm"]
    assert status["state"] == "finished"
    assert status["counts"] == job["counts"]
    assert status["requested_by"] == "ops"
    assert status["summary"] is None
    assert "another replica" in status["note"]


async def test_a_warmed_wheel_without_upstream_metadata_gets_its_metadata_declared(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    """PEP 658 for pre-warmed wheels: the page declares the METADATA read from the warmed
    wheel (no client GET needed), and the wheel was fetched once."""
    index = FakePypiIndex()
    wheel = index.add_wheel("qm-lib", "1.0", uploaded=OLD, metadata=False)
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    python = await warm(client, b"qm-lib==1.0\n", wait="30", name="requirements.txt")
    (fetched,) = python["summary"]["fetched"]
    assert fetched["files"] == 1
    page = ""
    for _ in range(100):  # the extraction runs in the background: bounded wait
        response = await client.get("/pypi/simple/qm-lib/")
        page = await response.text()
        if "data-core-metadata" in page:
            break
        await asyncio.sleep(0.05)
    assert "data-core-metadata" in page
    response = await client.get(f"/pypi/files/qm-lib/{wheel.filename}.metadata")
    assert response.status == 200
    assert b"Name: qm-lib" in await response.read()
    assert index.upstream.count(index.file(wheel.filename).path) == 1


async def test_pypi_files_and_maven_poms_and_jars(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    """PyPI: every file of the version with its PEP 658 metadata, not the held file added
    later; Maven: pom and jar, a pom-packaging one without a jar, a held one not at all."""
    index = FakePypiIndex()
    wheel = index.add_wheel("qm-lib", "1.0", uploaded=OLD)
    sdist = index.add_sdist("qm-lib", "1.0", uploaded=OLD)
    late = index.add_wheel("qm-lib", "1.0", uploaded=NOW - timedelta(hours=1), tag="py3-none-win32")
    await index.start(aiohttp_server)
    repo = FakeMavenRepository()
    lib = repo.add_version("org.example", "lib", "1.5.0", published=OLD)
    bom = repo.add_version("org.example", "bom", "2.0.0", published=OLD, jar=False)
    repo.add_file(
        f"{bom}/bom-2.0.0.pom",
        build_pom("org.example", "bom", "2.0.0").replace(b">jar<", b">pom<"),
        last_modified=OLD,
    )
    nojar = repo.add_version("org.example", "nojar", "1.0.0", published=OLD, jar=False)
    fresh = repo.add_version("org.example", "fresh", "3.0.0", published=NOW - timedelta(hours=1))
    await repo.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url, MIRROR_MAVEN_UPSTREAM=repo.url)

    python = await warm(client, b"qm-lib==1.0\n", wait="30", name="requirements.txt")
    (fetched,) = python["summary"]["fetched"]
    assert fetched["files"] == 3  # the wheel, its metadata, the sdist (no metadata declared)
    assert fetched["bytes"] == len(wheel.data) + len(wheel.metadata or b"") + len(sdist.data)
    asked = {request.path.rsplit("/", 1)[-1] for request in index.upstream.requests}
    assert {wheel.filename, sdist.filename} <= asked
    assert late.filename not in asked

    listing = (
        "The following files have been resolved:\n"
        "   org.example:lib:jar:1.5.0:compile\n"
        "   org.example:bom:pom:2.0.0:import\n"
        "   org.example:nojar:jar:1.0.0:compile\n"
        "   org.example:fresh:jar:3.0.0:compile\n"
    )
    maven = (await warm(client, listing.encode(), wait="30"))["summary"]
    files = {entry["package"]: entry["files"] for entry in maven["fetched"]}
    assert files == {"org.example:lib": 2, "org.example:bom": 1}
    assert named(maven["held"]) == {("org.example:fresh", "3.0.0")}
    (failed,) = maven["failed"]
    assert failed["package"] == "org.example:nojar"
    assert "no jar" in failed["detail"]
    assert repo.count(f"{fresh}/fresh-3.0.0.jar") == 0
    for path in (f"{lib}/lib-1.5.0.pom", f"{lib}/lib-1.5.0.jar", f"{bom}/bom-2.0.0.pom"):
        assert repo.count(path, method="GET") == 1, path
        repo.fail(path, 503)
        response = await client.get(f"/maven/{path}")
        assert response.status == 200, path
        assert await response.read() == repo.body(path)
    assert nojar


async def test_a_worker_runs_two_jobs_and_a_stopped_one_says_interrupted(
    make_mirror: MakeClient, registry: FakeNpmRegistry
) -> None:
    """Bounded: a third job on a worker running two is a 429 `busy` (and not audited as
    started). A worker that stops mid-job leaves its status `interrupted`, the pins it did not
    finish listed as failed with why; a sibling worker answers it."""
    held = registry.tarball_path("left-pad", "1.3.0")
    registry.upstream.hold(held)
    client = await make_mirror()
    sibling = await make_mirror()
    try:
        first = await warm(client, LOCK, status=202)
        await warm(client, LOCK, status=202)
        response = await client.post(WARM, data=json.dumps(LOCK).encode(), headers=AUTH)
        assert response.status == 429
        assert (await response.json())["reason"] == "busy"
        assert response.headers["Retry-After"] == "30"
        audit = await (await client.get("/api/v1/audit", headers=AUTH)).json()
        assert [entry["action"] for entry in audit["entries"]] == ["warm.start", "warm.start"]
        await registry.upstream.wait_for(held)
        await client.close()  # the worker shuts down with both jobs waiting on the upstream
    finally:
        registry.upstream.release(held)
    response = await sibling.get(f"{WARM}/{first['id']}", headers=AUTH)
    status = (await response.json())["warm"]
    assert status["state"] == "interrupted", status
    failed = {entry["package"]: entry["detail"] for entry in status["summary"]["failed"]}
    assert "the mirror stopped" in failed["left-pad"]
