"""Read tokens through the whole app: with `access.required`, every package read of npm, PyPI
and Maven (metadata and artifacts, GET and HEAD) without a valid token is a 401 offering Basic
and Bearer; Bearer (npm) and Basic (pip, uv, Maven) tokens are accepted; a wrong token is a
401 whether or not tokens are required; health, readiness, metrics, the index and the admin
API keep their own rules; the token never reaches a log line, an error or an upstream; and
the ledger is told which token, user agent and CI each download came with."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from functools import partial

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.model import DownloadEvent
from mirror.services import SERVICES
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import OLD, Client, MakeClient

TEAM_A = "team-a-read-token-0123456789"
TEAM_B = "team-b-read-token-9876543210"
ACCESS_TOKENS = f"team-a:{TEAM_A},team-b:{TEAM_B}"
ADMIN_TOKEN = "admin-token-abcdefghijklmnop"
WRONG = "wrong-read-token-00000000000"

NPM_CI = "npm/11.19.1 node/v20.20.2 linux x64 workspaces/false ci/github-actions"
PIP_CI = 'pip/23.2.1 {"ci":true,"cpu":"x86_64","installer":{"name":"pip","version":"23.2.1"}}'
MAVEN_UA = "Apache-Maven/3.8.7 (Java 17.0.15; Linux 6.18.44-fc-v595)"

# Each ecosystem's metadata and artifact route, as its clients ask for them.
READS = {
    "npm metadata": "/npm/left-pad",
    "npm tarball": "/npm/left-pad/-/left-pad-1.0.0.tgz",
    "pypi page": "/pypi/simple/demo/",
    "pypi wheel": "/pypi/files/demo/demo-1.0-py3-none-any.whl",
    "maven metadata": "/maven/org/example/lib/maven-metadata.xml",
    "maven jar": "/maven/org/example/lib/1.0.0/lib-1.0.0.jar",
}
OPEN = ["/", "/healthz", "/readyz", "/metrics", "/api/v1/blocks", "/api/v1/openapi.json"]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(slots=True)
class Upstreams:
    npm: FakeNpmRegistry
    pypi: FakePypiIndex
    maven: FakeMavenRepository

    def authorizations(self) -> set[str | None]:
        # (the Maven fake keeps no headers; the mirror's one upstream client serves all three)
        requests = [*self.npm.requests, *self.pypi.requests]
        return {request.headers.get("Authorization") for request in requests}


@pytest.fixture
async def upstreams(aiohttp_server: AiohttpServer) -> Upstreams:
    npm = FakeNpmRegistry()
    npm.add_version("left-pad", "1.0.0", published=OLD)
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
    return partial(
        make_mirror,
        MIRROR_NPM_UPSTREAM=upstreams.npm.url,
        MIRROR_PYPI_UPSTREAM=upstreams.pypi.url,
        MIRROR_MAVEN_UPSTREAM=upstreams.maven.url,
        MIRROR_ACCESS_TOKENS=ACCESS_TOKENS,
        MIRROR_ADMIN_TOKENS=f"ops:{ADMIN_TOKEN}",
    )


@pytest.fixture
async def required(make_mirror: MakeClient) -> Client:
    return await make_mirror(MIRROR_ACCESS_REQUIRED="true")


async def ledger_rows(client: Client) -> list[DownloadEvent]:
    """The download ledger's rows of the test's three packages, as written to state."""
    services = client.app[SERVICES]
    await services.artifacts.ledger.flush()
    packages = [("npm", "left-pad"), ("pypi", "demo"), ("maven", "org.example:lib")]
    return [row for key in packages for row in await services.state.downloads(*key)]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("read", READS)
async def test_a_read_without_a_token_is_a_401_offering_basic_and_bearer(
    required: Client, read: str, method: str
) -> None:
    response = await required.request(method, READS[read])
    assert response.status == 401
    assert response.headers.getall("WWW-Authenticate") == [
        'Basic realm="quarantine-mirror"',
        'Bearer realm="quarantine-mirror"',
    ]
    assert response.reason == "this mirror needs a read token"
    if method == "GET":
        body = await response.json()
        assert body["reason"] == "unauthorized"
        assert "npm _authToken" in body["error"]


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TEAM_A}", basic("team-a", TEAM_A), basic("anyone", TEAM_A), basic(TEAM_A, "")],
)
async def test_a_valid_token_reads(required: Client, read: str, authorization: str) -> None:
    response = await required.get(READS[read], headers={"Authorization": authorization})
    assert response.status == 200, await response.text()
    assert await response.read()
    # A shared cache in front must not hand an authorized answer to anyone else.
    assert "public" not in response.headers.get("Cache-Control", "")


async def test_a_read_token_is_never_sent_upstream(required: Client, upstreams: Upstreams) -> None:
    for path in READS.values():
        response = await required.get(path, headers={"Authorization": basic("team-a", TEAM_A)})
        assert response.status == 200
    assert upstreams.authorizations() == {None}


@pytest.mark.parametrize("access_required", ["true", "false"])
@pytest.mark.parametrize("read", ["npm metadata", "pypi wheel", "maven jar"])
async def test_a_wrong_token_is_a_401_required_or_not(
    make_mirror: MakeClient, read: str, access_required: str
) -> None:
    client = await make_mirror(MIRROR_ACCESS_REQUIRED=access_required)
    for authorization in (f"Bearer {WRONG}", basic("team-a", WRONG), f"Bearer {ADMIN_TOKEN}"):
        response = await client.get(READS[read], headers={"Authorization": authorization})
        assert response.status == 401
        assert response.reason == "the read token is not valid on this mirror"
        text = await response.text()
        assert WRONG not in text
        assert ADMIN_TOKEN not in text


async def test_without_required_tokens_anonymous_reads_are_open(make_mirror: MakeClient) -> None:
    client = await make_mirror()
    for path in READS.values():
        response = await client.get(path)
        assert response.status == 200, path
        assert "public" in response.headers.get("Cache-Control", "public")


@pytest.mark.parametrize("path", OPEN)
async def test_operational_routes_and_the_admin_api_keep_their_own_rules(
    required: Client, path: str
) -> None:
    response = await required.get(path)
    assert response.status == 200, (path, await response.text())


async def test_the_admin_api_still_takes_admin_tokens_not_read_tokens(required: Client) -> None:
    rule = {"ecosystem": "npm", "package": "left-pad", "versions": "*", "reason": "test"}
    as_reader = await required.post(
        "/api/v1/blocks", json=rule, headers={"Authorization": f"Bearer {TEAM_A}"}
    )
    assert as_reader.status == 403
    as_admin = await required.post(
        "/api/v1/blocks", json=rule, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert as_admin.status == 201, await as_admin.text()


async def test_tokens_never_reach_a_log_line(
    make_mirror: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    required = await make_mirror(MIRROR_ACCESS_REQUIRED="true", MIRROR_ACCESS_LOG="true")
    caplog.set_level(logging.DEBUG)
    for path in READS.values():
        for authorization in (f"Bearer {TEAM_A}", basic("team-b", TEAM_B), f"Bearer {WRONG}"):
            await required.get(path, headers={"Authorization": authorization})
    await required.app[SERVICES].artifacts.ledger.flush()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert '"path":"/npm/left-pad"' in logged  # the access log did write lines
    for secret in (TEAM_A, TEAM_B, WRONG, base64.b64encode(f"team-b:{TEAM_B}".encode()).decode()):
        assert secret not in logged


async def test_the_ledger_is_told_the_token_user_agent_and_ci(required: Client) -> None:
    downloads = [
        (
            READS["npm tarball"],
            {
                "Authorization": f"Bearer {TEAM_A}",
                "User-Agent": NPM_CI,
                "npm-command": "ci",
                "npm-session": "3a2f3e59c1bf2e46",
            },
        ),
        (
            READS["pypi wheel"],
            {"Authorization": basic("team-b", TEAM_B), "User-Agent": PIP_CI},
        ),
        (READS["maven jar"], {"Authorization": basic("team-b", TEAM_B), "User-Agent": MAVEN_UA}),
    ]
    for path, headers in downloads:
        for _ in range(2):  # a miss (streamed while stored), then a hit from disk
            response = await required.get(path, headers=headers)
            assert response.status == 200
            await response.read()
    rows = await ledger_rows(required)
    who = [(e.ecosystem, e.token, e.user_agent, e.ci, e.command, e.session, e.count) for e in rows]
    assert who == [  # the miss and the hit of each file: one row of two downloads
        ("npm", "team-a", NPM_CI, "github-actions", "ci", "3a2f3e59c1bf2e46", 2),
        ("pypi", "team-b", PIP_CI, "ci", "", "", 2),
        ("maven", "team-b", MAVEN_UA, "", "", "", 2),
    ]


async def test_an_anonymous_download_is_noted_without_a_token(make_mirror: MakeClient) -> None:
    client = await make_mirror()
    hostile = "evil\u202e/1.0 \u2028" + "x" * 1000  # bidi override, line separator
    response = await client.get(READS["npm tarball"], headers={"User-Agent": hostile})
    assert response.status == 200
    await response.read()
    [event] = await ledger_rows(client)
    assert (event.token, event.ci, event.command) == ("", "", "")
    assert event.user_agent.startswith("evil/1.0 x")
    assert len(event.user_agent) == 256
