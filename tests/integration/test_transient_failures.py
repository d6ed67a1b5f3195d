"""Transient upstream failures through the whole app, against npm, PyPI and Maven upstreams on
127.0.0.1: a reset, a timeout or a 5xx on anything not cached yet is a 503 with `Retry-After`
(pip retries only 500 and 503; npm, uv and Maven retry a 503 too) and the client's retry
gets the file; a definite answer keeps its status (404, integrity). An outage logs a bounded
number of lines, however many requests fail, and is counted in the metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from tests.conftest import wait_until
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.fakes.upstream import FakeUpstream
from tests.integration.conftest import OLD, Client, MakeClient

JAR = "org/example/lib/1.0.0/lib-1.0.0.jar"
WHEEL = "demo-1.0-py3-none-any.whl"
OUTAGE_REQUESTS = 200


@dataclass(slots=True)
class Upstreams:
    npm: FakeNpmRegistry
    pypi: FakePypiIndex
    maven: FakeMavenRepository


@pytest.fixture
async def upstreams(aiohttp_server: AiohttpServer) -> Upstreams:
    npm = FakeNpmRegistry()
    npm.add_version("left-pad", "1.0.0", published=OLD)
    npm.add_version("is-odd", "3.0.1", published=OLD)
    await npm.start(aiohttp_server)
    pypi = FakePypiIndex()
    pypi.add_wheel("demo", "1.0", uploaded=OLD)
    await pypi.start(aiohttp_server)
    maven = FakeMavenRepository()
    maven.add_version("org.example", "lib", "1.0.0", published=OLD)
    await maven.start(aiohttp_server)
    return Upstreams(npm=npm, pypi=pypi, maven=maven)


@pytest.fixture
def make_mirror(make_mirror: MakeClient, upstreams: Upstreams) -> MakeClient:
    # No retries in the mirror: the first fault reaches the client, as after the retries.
    return partial(
        make_mirror,
        MIRROR_NPM_UPSTREAM=upstreams.npm.url,
        MIRROR_PYPI_UPSTREAM=upstreams.pypi.url,
        MIRROR_MAVEN_UPSTREAM=upstreams.maven.url,
        MIRROR_UPSTREAM_RETRIES="0",
        MIRROR_UPSTREAM_READ_TIMEOUT="300ms",
    )


def wheel_path(upstreams: Upstreams) -> str:
    return upstreams.pypi.file(WHEEL).path


Fault = Callable[[FakeUpstream, str], None]
FAULTS: dict[str, Fault] = {
    "reset": lambda fake, path: fake.reset(path),
    "timeout": lambda fake, path: fake.slow(path, 2),
    "500": lambda fake, path: fake.fail(path, 500),
    "502": lambda fake, path: fake.fail(path, 502),
    "504": lambda fake, path: fake.fail(path, 504),
}


# (what the client asks the mirror, which fake serves it, the upstream path the fault is on)
CASES = {
    "npm tarball": ("/npm/left-pad/-/left-pad-1.0.0.tgz", "npm", "/left-pad/-/left-pad-1.0.0.tgz"),
    "npm packument": ("/npm/is-odd", "npm", "/is-odd"),
    "pypi wheel": (f"/pypi/files/demo/{WHEEL}", "pypi", "wheel"),
    "pypi metadata": (f"/pypi/files/demo/{WHEEL}.metadata", "pypi", "wheel.metadata"),
    "pypi page": ("/pypi/simple/demo/", "pypi", "/simple/demo/"),
}


def fake_of(upstreams: Upstreams, name: str) -> FakeUpstream:
    return upstreams.npm.upstream if name == "npm" else upstreams.pypi.upstream


def upstream_path(upstreams: Upstreams, spec: str) -> str:
    if spec.startswith("wheel"):
        return wheel_path(upstreams) + spec.removeprefix("wheel")
    return spec


async def warm_documents(client: Client, case: str) -> None:
    """A file is served after its document (packument, project page) was read: fetch that
    first, as a client does, so the fault hits the file itself."""
    if case.startswith("npm tarball"):
        assert (await client.get("/npm/left-pad")).status == 200
    elif case.startswith("pypi") and case != "pypi page":
        assert (await client.get("/pypi/simple/demo/")).status == 200


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("case", list(CASES))
async def test_a_transient_failure_on_a_miss_is_a_503_with_retry_after_and_the_retry_works(
    make_mirror: MakeClient, upstreams: Upstreams, case: str, fault: str
) -> None:
    client = await make_mirror()
    path, fake_name, spec = CASES[case]
    fake, target = fake_of(upstreams, fake_name), upstream_path(upstreams, spec)
    await warm_documents(client, case)
    FAULTS[fault](fake, target)

    failed = await client.get(path)
    assert failed.status == 503, await failed.text()
    assert failed.headers["Retry-After"] == "2"
    assert (await failed.json())["reason"] == "upstream-unavailable"

    fake.heal(target)
    retried = await client.get(path)  # what the client's retry gets
    assert retried.status == 200, await retried.text()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_maven_jar_miss_on_an_upstream_5xx_is_a_503(
    make_mirror: MakeClient, upstreams: Upstreams, status: int
) -> None:
    client = await make_mirror()
    upstreams.maven.fail(JAR, status)
    failed = await client.get(f"/maven/{JAR}")
    assert failed.status == 503, await failed.text()
    assert failed.headers["Retry-After"] == "2"
    upstreams.maven.heal(JAR)
    retried = await client.get(f"/maven/{JAR}")
    assert retried.status == 200
    assert await retried.read() == upstreams.maven.body(JAR)


async def test_an_upstream_429_passes_its_retry_after_on(
    make_mirror: MakeClient, upstreams: Upstreams
) -> None:
    client = await make_mirror()
    upstreams.npm.upstream.fail("/is-odd", 429, headers={"Retry-After": "5"})
    failed = await client.get("/npm/is-odd")
    assert (failed.status, failed.headers["Retry-After"]) == (503, "5")


async def test_a_definite_answer_keeps_its_status(
    make_mirror: MakeClient, upstreams: Upstreams
) -> None:
    client = await make_mirror()
    # Upstream says there is no such file, package or project: 404, nothing to retry.
    assert (await client.get("/npm/left-pad")).status == 200
    upstreams.npm.upstream.remove("/left-pad/-/left-pad-1.0.0.tgz")
    for path in ("/npm/left-pad/-/left-pad-1.0.0.tgz", "/npm/no-such-package"):
        missing = await client.get(path)
        assert missing.status == 404, path
        assert "Retry-After" not in missing.headers
    # Bytes that do not match the declared digest: 502 integrity, never a 503 to retry.
    upstreams.npm.upstream.add("/left-pad/-/left-pad-1.0.0.tgz", b"not the declared bytes")
    mismatch = await client.get("/npm/left-pad/-/left-pad-1.0.0.tgz")
    assert mismatch.status == 502
    assert (await mismatch.json())["reason"] == "integrity"
    assert "Retry-After" not in mismatch.headers
    # An upstream that refuses the mirror's credentials will refuse them again: 502.
    upstreams.npm.upstream.fail("/is-odd", 403)
    refused = await client.get("/npm/is-odd")
    assert refused.status == 502
    assert "Retry-After" not in refused.headers


# the outage log ----------------------------------------------------------------------------


def warnings_of_the_mirror(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("mirror") and record.levelno >= logging.WARNING
    ]


async def test_an_outage_logs_a_bounded_number_of_lines_and_counts_every_failure(
    make_mirror: MakeClient,
    upstreams: Upstreams,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mirror")
    client = await make_mirror()
    npm = upstreams.npm.upstream
    npm.down()
    for n in range(OUTAGE_REQUESTS):
        failed = await client.get(f"/npm/pkg-{n}")
        assert failed.status == 503
        assert failed.headers["Retry-After"] == "2"
    assert warnings_of_the_mirror(caplog) == [
        f"upstream {npm.host} is failing: the npm upstream answered HTTP 503 for pkg-0 "
        f"({npm.url('/pkg-0')}); further failures of {npm.host} are summarised every 30 s"
    ]

    clock.advance(timedelta(seconds=31))
    assert (await client.get("/npm/pkg-0")).status == 503
    npm.up()
    assert (await client.get("/npm/is-odd")).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "mirror.upstream"]
    assert lines[1:] == [
        f"upstream {npm.host} still failing: {OUTAGE_REQUESTS} failures "
        f"({OUTAGE_REQUESTS} http-5xx) in the last 31 s, failing for 31 s; the last: the npm "
        f"upstream answered HTTP 503 for pkg-0 ({npm.url('/pkg-0')})",
        f"upstream {npm.host} answers again after 31 s of failures ({OUTAGE_REQUESTS + 1} in all)",
    ]

    exposition = await (await client.get("/metrics")).text()
    assert (
        f'mirror_upstream_errors_total{{ecosystem="npm",kind="http-5xx"}} '
        f"{OUTAGE_REQUESTS + 1}.0" in exposition
    )


async def test_stale_documents_served_through_an_outage_log_no_line_per_request(
    make_mirror: MakeClient,
    upstreams: Upstreams,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mirror")
    names = [f"pkg-{n}" for n in range(40)]
    for name in names:
        upstreams.npm.add_version(name, "1.0.0", published=OLD)
    client = await make_mirror()
    for name in names:
        assert (await client.get(f"/npm/{name}")).status == 200
    clock.advance(timedelta(hours=1))  # past the metadata TTL: each is revalidated
    upstreams.npm.upstream.down()
    before = len(upstreams.npm.requests)
    caplog.clear()
    for _round in range(3):
        for name in names:
            served = await client.get(f"/npm/{name}")
            assert served.status == 200  # stale, while the upstream is down
    # One background revalidation per document, each failing (then not retried for 30 s).
    assert await wait_until(lambda: len(upstreams.npm.requests) >= before + len(names), 10)
    assert len(warnings_of_the_mirror(caplog)) == 1, warnings_of_the_mirror(caplog)
    exposition = await (await client.get("/metrics")).text()
    assert 'mirror_stale_serves_total{cause="revalidating"} 120.0' in exposition


async def test_a_relayed_npm_endpoint_failing_upstream_is_a_503(
    make_mirror: MakeClient, upstreams: Upstreams
) -> None:
    client = await make_mirror()
    upstreams.npm.upstream.fail("/-/v1/search", 502)
    failed = await client.get("/npm/-/v1/search?text=left-pad")
    assert failed.status == 503, await failed.text()
    assert failed.headers["Retry-After"] == "2"


async def test_a_relayed_npm_endpoint_passes_on_retry_after_and_counts_the_failure(
    make_mirror: MakeClient, upstreams: Upstreams
) -> None:
    client = await make_mirror()
    upstreams.npm.upstream.fail("/-/v1/search", 429, headers={"Retry-After": "5"}, times=1)
    busy = await client.get("/npm/-/v1/search?text=left-pad")
    assert busy.status == 503, await busy.text()
    assert busy.headers["Retry-After"] == "5"  # the upstream's, not the mirror's default
    upstreams.npm.upstream.fail("/-/v1/search", 501)  # will not change: definite
    definite = await client.get("/npm/-/v1/search?text=left-pad")
    assert definite.status == 502, await definite.text()
    assert "Retry-After" not in definite.headers
    exposition = await (await client.get("/metrics")).text()
    assert 'mirror_upstream_errors_total{ecosystem="npm",kind="http-429"} 1.0' in exposition
