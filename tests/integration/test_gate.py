"""The gate, through the whole app over real HTTP: hostile path spellings are a 400 before any
handler runs, on every route of the three ecosystems and the admin API; the npm relay routes
accept exact shapes only and build their upstream URL themselves, under the upstream's base.

The mirror runs against recording fake upstreams (npm under a path prefix, with credentials);
requests go out on raw sockets so that no client library normalizes what is sent."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.ecosystems.maven import paths as maven_paths
from mirror.ecosystems.npm.names import parse_name
from mirror.ecosystems.pypi.names import normalize, parse_project
from mirror.errors import MirrorError
from mirror.pathgate import path_problem
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry, escaped
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, Client, MakeClient

HELD = NOW - timedelta(hours=5)
TOKEN = "gate-admin-token-0123456789"
NPM_PREFIX = "/registry"
NPM_CREDENTIAL = "Bearer npm-upstream-credential-42"
SECRET = b'{"secret": "outside the npm upstream prefix"}'
SEARCH_ANSWER = b'{"objects":[],"total":0,"time":"now"}'
KEYS_ANSWER = b'{"keys":[{"keyid":"SHA256:fake","key":"MFk"}]}'
AUDIT_PATHS = ("/-/npm/v1/security/advisories/bulk", "/-/npm/v1/security/audits/quick")

# npm: left-pad 1.3.0 visible, 1.4.0 in quarantine, 1.5.0 blocked; @acme/widget 1.0.0 visible.
NPM_VISIBLE = {("left-pad", "1.3.0"), ("@acme/widget", "1.0.0")}
NPM_HELD_TARBALL = "/left-pad/-/left-pad-1.4.0.tgz"
NPM_BLOCKED_TARBALL = "/left-pad/-/left-pad-1.5.0.tgz"
PYPI_VISIBLE = {("demo", "1.0")}
MAVEN_VISIBLE = {("org.example:lib", "1.0.0")}


@dataclass(frozen=True, slots=True)
class Upstreams:
    npm: FakeNpmRegistry
    pypi: FakePypiIndex
    maven: FakeMavenRepository


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back on the socket: the status (None: the connection was dropped without
    an answer) and the body."""

    status: int | None
    body: bytes


# fixtures -------------------------------------------------------------------------------------


def serve_npm_under_prefix(registry: FakeNpmRegistry) -> None:
    """Serve the fake's packuments and tarballs again below NPM_PREFIX (tarball URLs too),
    plus the relayed endpoints; the root paths stay, so a request that left the prefix would
    find something to take."""
    fake = registry.upstream
    for name, package in registry.packages.items():
        document = registry.packument(name)
        for manifest in document["versions"].values():
            tarball = manifest["dist"]["tarball"]
            manifest["dist"]["tarball"] = tarball.replace(
                fake.url("/"), fake.url(NPM_PREFIX + "/"), 1
            )
        body = json.dumps(document).encode()
        for path in {"/" + escaped(name), "/" + escaped(name).replace("%2f", "%2F")}:
            fake.add(NPM_PREFIX + path, body, content_type="application/json")
        for version in package.versions:
            fake.add(
                NPM_PREFIX + registry.tarball_path(name, version),
                registry.version(name, version).tarball,
            )
    fake.add(NPM_PREFIX + "/-/v1/search", SEARCH_ANSWER, content_type="application/json")
    fake.add(NPM_PREFIX + "/-/npm/v1/keys", KEYS_ANSWER, content_type="application/json")
    for name, version in [*NPM_VISIBLE, ("left-pad", "1.4.0"), ("left-pad", "1.5.0")]:
        # yarl sends the scope separator as `%2F`; the fake matches the decoded form.
        fake.add(
            f"{NPM_PREFIX}/-/npm/v1/attestations/{name}@{version}",
            json.dumps({"attestations": [{"predicateType": f"{name}@{version}"}]}).encode(),
            content_type="application/json",
        )
    for path in AUDIT_PATHS:
        fake.add(NPM_PREFIX + path, b"{}", content_type="application/json")
    fake.add("/secret", SECRET, content_type="application/json")
    fake.add("/-/v1/search", SEARCH_ANSWER, content_type="application/json")


@pytest.fixture
async def upstreams(aiohttp_server: AiohttpServer) -> Upstreams:
    npm = FakeNpmRegistry()
    npm.add_version("left-pad", "1.3.0", published=OLD)
    npm.add_version("left-pad", "1.4.0", published=HELD)
    npm.add_version("left-pad", "1.5.0", published=OLD + timedelta(days=1))
    npm.add_version("@acme/widget", "1.0.0", published=OLD)
    await npm.start(aiohttp_server)
    serve_npm_under_prefix(npm)
    pypi = FakePypiIndex()
    pypi.add_wheel("demo", "1.0", uploaded=OLD)
    pypi.add_wheel("demo", "2.0", uploaded=HELD)
    await pypi.start(aiohttp_server)
    maven = FakeMavenRepository()
    maven.add_version("org.example", "lib", "1.0.0", published=OLD)
    maven.add_version("org.example", "lib", "1.9.0", published=HELD)
    await maven.start(aiohttp_server)
    return Upstreams(npm=npm, pypi=pypi, maven=maven)


@pytest.fixture
async def client(make_mirror: MakeClient, upstreams: Upstreams) -> Client:
    client = await make_mirror(
        MIRROR_NPM_UPSTREAM=upstreams.npm.upstream.url(NPM_PREFIX + "/"),
        MIRROR_NPM_UPSTREAM_AUTH=NPM_CREDENTIAL,
        MIRROR_PYPI_UPSTREAM=upstreams.pypi.url,
        MIRROR_MAVEN_UPSTREAM=upstreams.maven.url,
        MIRROR_UPSTREAM_RETRIES="0",
        MIRROR_ADMIN_TOKENS=f"gate:{TOKEN}",
    )
    block = {"ecosystem": "npm", "package": "left-pad", "versions": "1.5.0", "reason": "bad"}
    created = await client.post(
        "/api/v1/blocks", json=block, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert created.status == 201, await created.text()
    # Creating the block read the packument (to say which versions it covers): start the
    # tests' record of upstream requests from here.
    upstreams.npm.upstream.requests.clear()
    return client


async def send(client: Client, method: str, target: str | bytes, *, body: bytes = b"") -> Answer:
    """One request on its own connection, the target sent byte for byte as given."""
    server = client.server
    raw_target = target if isinstance(target, bytes) else target.encode("utf-8")
    head = (
        method.encode()
        + b" "
        + raw_target
        + b" HTTP/1.1\r\nHost: "
        + f"{server.host}:{server.port}".encode()
        + b"\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(10):
            response = await reader.read(1024 * 1024)
    finally:
        writer.close()
    # aiohttp's HTTP parser answers what it cannot parse (raw control characters) itself,
    # with an `HTTP/1.0 400`: an answer all the same.
    if not re.match(rb"HTTP/1\.[01] [0-9]{3} ", response):
        return Answer(status=None, body=response)
    status = int(response[9:12])
    return Answer(status=status, body=response.partition(b"\r\n\r\n")[2])


def error_of(answer: Answer) -> dict[str, Any]:
    # Connection: close and no chunking for error bodies: the body is the JSON document.
    parsed: dict[str, Any] = json.loads(answer.body)
    return parsed


# the hostile-path corpus ----------------------------------------------------------------------

# What a trick means once decoded; every special character in it gets each spelling below.
TRICKS = (
    ".",
    "..",
    "..;",
    "..;jsessionid=x",
    "../..",
    "a/../..",
    "a/b",
    "\\",
    "..\\..",
    "a\\b",
    "\x00",
    "a\x01",
    "\x0a",
    "\x1f",
    "\x7f",
    "\x85",
)
SPECIAL = set("./\\") | {chr(code) for code in [*range(0x20), 0x7F, 0x85]}
FULLWIDTH = {".": "\uff0e", "/": "\uff0f", "\\": "\uff3c"}
OVERLONG = {".": "%c0%ae", "/": "%c0%af", "\\": "%c1%9c"}


def _percent(char: str, case: str = "lower") -> str:
    encoded = "".join(f"%{byte:02x}" for byte in char.encode("utf-8"))
    return encoded.upper() if case == "upper" else encoded


SPELLINGS: dict[str, Callable[[str, int], str | None]] = {
    # None: this spelling of this character is no trick (a plain `/` just separates segments)
    "plain": lambda char, _index: None if char == "/" else char,
    "percent": lambda char, _index: _percent(char),
    "PERCENT": lambda char, _index: _percent(char, "upper"),
    "double": lambda char, _index: _percent(char).replace("%", "%25"),
    "DOUBLE": lambda char, _index: _percent(char, "upper").replace("%", "%25"),
    "triple": lambda char, _index: _percent(char).replace("%", "%2525"),
    "mixed": lambda char, index: (
        (char if char != "/" else "%2F") if index % 2 == 0 else _percent(char, "upper")
    ),
    "fullwidth": lambda char, _index: FULLWIDTH.get(char),
    "overlong": lambda char, _index: OVERLONG.get(char),
}


def spell(trick: str, spelling: str) -> str | None:
    """`trick` with every special character in `spelling`, or None where it does not apply."""
    out: list[str] = []
    for index, char in enumerate(trick):
        if char not in SPECIAL:
            out.append(char)
            continue
        spelled = SPELLINGS[spelling](char, index)
        if spelled is None:
            return None
        out.append(spelled)
    return "".join(out)


# Every route, with `{}` where the hostile segment goes; (method, template).
POSITIONS: tuple[tuple[str, str], ...] = (
    ("GET", "/npm/{}"),
    ("GET", "/npm/{}/left-pad"),
    ("GET", "/npm/left-pad/{}"),
    ("GET", "/npm/left-pad/-/{}"),
    ("GET", "/npm/left-pad/{}/left-pad-1.3.0.tgz"),
    ("GET", "/npm/@acme%2f{}"),
    ("GET", "/npm/@acme/{}/-/widget-1.0.0.tgz"),
    ("GET", "/npm/-/{}"),
    ("GET", "/npm/-/package/{}/dist-tags"),
    ("GET", "/npm/-/v1/search/{}"),
    ("GET", "/npm/-/v1/search/{}/{}/{}/left-pad/-/left-pad-1.4.0.tgz"),
    ("GET", "/npm/-/v1/search/{}?text=left"),
    ("GET", "/npm/-/npm/v1/keys/{}/{}/{}/{}/left-pad"),
    ("GET", "/npm/-/npm/v1/attestations/{}"),
    ("GET", "/npm/-/npm/v1/attestations/{}/left-pad@1.3.0"),
    ("POST", "/npm/-/npm/v1/security/advisories/bulk/{}"),
    ("POST", "/npm/-/npm/v1/security/{}/advisories/bulk"),
    ("GET", "/pypi/{}"),
    ("GET", "/pypi/simple/{}/"),
    ("GET", "/pypi/simple/{}"),
    ("GET", "/pypi/simple/demo/{}"),
    ("GET", "/pypi/files/{}/demo-1.0-py3-none-any.whl"),
    ("GET", "/pypi/files/demo/{}"),
    ("GET", "/pypi/files/demo/{}/{}/demo-2.0-py3-none-any.whl"),
    ("GET", "/pypi/pypi/{}/json"),
    ("GET", "/pypi/pypi/demo/{}/json"),
    ("GET", "/maven/{}"),
    ("GET", "/maven/org/{}/example/lib/maven-metadata.xml"),
    ("GET", "/maven/org/example/lib/{}/lib-1.0.0.jar"),
    ("GET", "/maven/org/example/lib/1.0.0/{}"),
    ("GET", "/maven/org/example/lib/1.9.0/{}/{}/1.9.0/lib-1.9.0.jar"),
    ("GET", "/api/v1/{}"),
    ("GET", "/api/v1/blocks/{}"),
    ("DELETE", "/api/v1/blocks/{}"),
    ("POST", "/api/v1/{}/blocks"),
    ("GET", "/api/v1/exemptions/{}"),
    ("POST", "/api/v1/exemptions/{}"),
    ("DELETE", "/api/v1/freezes/{}"),
    ("GET", "/{}/npm/left-pad"),
    ("GET", "/api/v1/explain/{}?ecosystem=npm&package=left-pad&version=1.3.0"),
    ("GET", "/api/v1/impact/{}"),
    ("GET", "/api/{}/v1/audit"),
)


def hostile_corpus() -> Iterator[tuple[str, str]]:
    """(method, target) for every trick, spelling and position: over a thousand requests."""
    segments = {spell(trick, spelling) for trick in TRICKS for spelling in SPELLINGS}
    for segment in sorted(segment for segment in segments if segment is not None):
        for method, template in POSITIONS:
            yield method, template.replace("{}", segment)


def test_the_corpus_is_large_and_hostile() -> None:
    corpus = list(hostile_corpus())
    assert len(corpus) > 1000
    assert len(set(corpus)) == len(corpus)
    # Every entry is refused by the gate's own judgement (the corpus generator is right).
    assert [target for _, target in corpus if path_problem(target.split("?")[0]) is None] == []


# What each upstream may be asked for: a parsed subject's own document or file, never more.


def npm_request_allowed(path: str) -> bool:
    if not path.startswith(NPM_PREFIX + "/"):
        return False
    rest = path[len(NPM_PREFIX) :]
    if rest in ("/-/v1/search", "/-/npm/v1/keys", *AUDIT_PATHS):
        return True
    attestation = re.fullmatch(r"/-/npm/v1/attestations/(.+)@([^@/]+)", rest)
    if attestation:
        name = unquote(attestation.group(1))
        return (name, attestation.group(2)) in NPM_VISIBLE
    tarball = re.fullmatch(r"/(@[^/]+/[^/]+|[^/@][^/]*)/-/([^/]+)-([0-9][^/]*)\.tgz", rest)
    if tarball:
        return (tarball.group(1), tarball.group(3)) in NPM_VISIBLE
    packument = re.fullmatch(r"/(@[^/]+%2[fF][^/]+|[^/@%][^/%]*)", rest)
    if packument:
        try:
            parse_name(unquote(packument.group(1)))
        except MirrorError:
            return False
        return True
    return False


def pypi_request_allowed(path: str) -> bool:
    if path == "/simple/":
        return True
    page = re.fullmatch(r"/simple/([a-z0-9-]+)/", path)
    if page:
        parse_project(page.group(1))
        return page.group(1) == normalize(page.group(1))
    api = re.fullmatch(r"/pypi/([a-z0-9-]+)/(?:[^/]+/)?json", path)
    if api:
        return True
    file = re.fullmatch(r"/packages/[0-9a-f]{2}/[0-9a-f]{2}/([^/]+?)(?:\.metadata)?", path)
    if file:
        name = file.group(1)
        return any(name.startswith(f"{project}-{version}-") for project, version in PYPI_VISIBLE)
    return False


def maven_request_allowed(method: str, path: str) -> bool:
    try:
        parsed = maven_paths.parse_path(path)
    except MirrorError:
        return False
    if parsed.kind == "metadata" or parsed.filename.endswith(".pom"):
        return True  # metadata, and the `.pom` whose Last-Modified is a publish time
    if parsed.filename.endswith(".pom.asc") and method == "GET":
        return True  # the signature the Maven risk signals read
    return (parsed.coordinates, parsed.version) in MAVEN_VISIBLE


def assert_upstreams_asked_only_for_their_subjects(upstreams: Upstreams) -> None:
    npm = [r.path for r in upstreams.npm.requests if not npm_request_allowed(r.path)]
    pypi = [r.path for r in upstreams.pypi.requests if not pypi_request_allowed(r.path)]
    maven = [
        r.path for r in upstreams.maven.requests if not maven_request_allowed(r.method, r.path)
    ]
    assert (npm, pypi, maven) == ([], [], [])
    # Credentials went with every npm request, all of which stayed under the prefix.
    assert all(r.headers.get("Authorization") == NPM_CREDENTIAL for r in upstreams.npm.requests)


async def send_all(client: Client, requests: list[tuple[str, str]]) -> list[Answer]:
    semaphore = asyncio.Semaphore(16)

    async def one(method: str, target: str) -> Answer:
        async with semaphore:
            body = b'{"left-pad":["1.3.0"]}' if method == "POST" else b""
            return await send(client, method, target, body=body)

    return await asyncio.gather(*(one(method, target) for method, target in requests))


async def test_every_hostile_spelling_on_every_route_is_a_400_and_reaches_no_upstream(
    client: Client, upstreams: Upstreams
) -> None:
    corpus = list(hostile_corpus())
    answers = await send_all(client, corpus)
    wrong = [
        (method, target, answer.status)
        for (method, target), answer in zip(corpus, answers, strict=True)
        if answer.status != 400
    ]
    assert wrong == []
    for answer in answers:
        if answer.body.startswith(b"{"):  # the mirror's own 400 (the HTTP parser has its own)
            assert error_of(answer)["reason"] == "bad-request"
            assert error_of(answer)["error"].startswith("the request path is refused")
    assert upstreams.npm.requests == []
    assert upstreams.pypi.requests == []
    assert upstreams.maven.requests == []


LEGIT: tuple[tuple[str, str], ...] = (
    ("GET", "/npm/left-pad"),
    ("GET", "/npm/@acme%2fwidget"),
    ("GET", "/npm/@acme%2Fwidget"),
    ("GET", "/npm/%40acme%2fwidget"),
    ("GET", "/npm/@acme/widget"),
    ("GET", "/npm/left-pad/-/left-pad-1.3.0.tgz"),
    ("GET", "/npm/@acme%2fwidget/-/widget-1.0.0.tgz"),
    ("GET", "/npm/@acme/widget/-/widget-1.0.0.tgz"),
    ("GET", "/npm/-/package/@acme%2fwidget/dist-tags"),
    ("GET", "/npm/-/v1/search?text=left&size=5"),
    ("GET", "/npm/-/npm/v1/keys"),
    ("GET", "/npm/-/npm/v1/attestations/left-pad@1.3.0"),
    ("GET", "/npm/-/npm/v1/attestations/@acme%2fwidget@1.0.0"),
    ("POST", "/npm/-/npm/v1/security/advisories/bulk"),
    ("GET", "/pypi/simple/"),
    ("GET", "/pypi/simple/demo/"),
    ("GET", "/pypi/pypi/demo/json"),
    ("GET", "/maven/org/example/lib/maven-metadata.xml"),
    ("GET", "/maven/org/example/lib/1.0.0/lib-1.0.0.jar"),
    ("GET", "/api/v1/blocks"),
)

# Fragments the random mix draws from: real names, tricks in every spelling, separators.
FRAGMENTS = (
    "npm", "pypi", "maven", "api", "v1", "-", "left-pad", "@acme", "widget", "%2f", "%2F",
    "%40", "demo", "simple", "files", "json", "org", "example", "lib", "1.0.0", "1.4.0",
    "1.5.0", "1.9.0", "2.0", "left-pad-1.4.0.tgz", "lib-1.9.0.jar", "search", "keys",
    "attestations", "blocks", "exemptions", "freezes", "explain", "maven-metadata.xml", "..",
    ".", "%2e", "%2E", "%25", "%252e", "%5c", "\\", ";", "@", "?", "=", "~", "%00", "%0a",
    "%c0%ae", "\uff0e",
)  # fmt: skip


def random_mix(count: int, seed: int) -> list[tuple[str, str]]:
    """Seeded random paths from real names and tricks: some pass the gate and reach the
    handlers (and the upstreams), which must then ask only for the subject's own paths."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    requests = []
    for _ in range(count):
        root = rng.choice(["/npm/", "/pypi/", "/maven/", "/api/v1/", "/npm/-/"])
        parts = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 8))]
        joiners = [rng.choice(["/", "/", "", "/-/"]) for _ in parts]
        tail = "".join(part + joiner for part, joiner in zip(parts, joiners, strict=True))
        requests.append((rng.choice(["GET", "GET", "POST"]), root + tail.rstrip("/")))
    return requests


async def test_legit_and_random_paths_never_fail_and_ask_upstream_only_for_their_subject(
    client: Client, upstreams: Upstreams
) -> None:
    legit = await send_all(client, list(LEGIT))
    assert [answer.status for answer in legit] == [200] * len(LEGIT)
    mix = random_mix(1500, seed=9)
    answers = await send_all(client, mix)
    failed = [
        (method, target, answer.status)
        for (method, target), answer in zip(mix, answers, strict=True)
        if answer.status is None or answer.status >= 500
    ]
    assert failed == []
    refused = [
        target
        for (_, target), answer in zip(mix, answers, strict=True)
        if path_problem(target.split("?")[0]) is not None and answer.status != 400
    ]
    assert refused == []
    # The mix did reach handlers and upstreams (else the check below would prove nothing).
    assert sum(answer.status == 400 for answer in answers) < len(mix)
    assert upstreams.npm.requests
    assert upstreams.pypi.requests
    assert upstreams.maven.requests
    assert_upstreams_asked_only_for_their_subjects(upstreams)


# regressions: the relay routes ----------------------------------------------------------------

TRAVERSALS = ("%2e%2e", "%2E%2E", ".%2e", "%2e.", "%252e%252e", "..", "%2e%2e%3b")
RELAYS = ("/npm/-/v1/search", "/npm/-/npm/v1/keys", "/npm/-/npm/v1/attestations")
TARGETS = (NPM_HELD_TARBALL, NPM_BLOCKED_TARBALL, "/left-pad", "/secret")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("relay", RELAYS)
@pytest.mark.parametrize("dots", TRAVERSALS)
async def test_relay_traversal_is_refused(
    client: Client, upstreams: Upstreams, relay: str, target: str, dots: str
) -> None:
    """`/npm/-/v1/search/%2e%2e/…/left-pad/-/left-pad-<held>.tgz` used to answer 200 with the
    held tarball (or the unfiltered packument), bypassing the policy and the ledger; with a
    prefixed upstream, more `..` left the prefix with the upstream's credentials."""
    answer = await send(client, "GET", relay + f"/{dots}" * 7 + target)
    assert answer.status == 400
    assert error_of(answer)["reason"] == "bad-request"
    assert b"secret" not in answer.body
    assert upstreams.npm.requests == []


async def test_a_held_or_blocked_tarball_stays_refused_by_its_own_route(client: Client) -> None:
    held = await send(client, "GET", "/npm" + NPM_HELD_TARBALL)
    blocked = await send(client, "GET", "/npm" + NPM_BLOCKED_TARBALL)
    assert (held.status, error_of(held)["reason"]) == (403, "quarantined")
    assert (blocked.status, error_of(blocked)["reason"]) == (403, "blocked")


async def test_relays_go_to_fixed_paths_under_the_prefix_with_credentials(
    client: Client, upstreams: Upstreams
) -> None:
    fake = upstreams.npm.upstream
    search = await client.get("/npm/-/v1/search?text=left%20pad&size=5&from=0&quality=0.65")
    assert search.status == 200
    assert await search.read() == SEARCH_ANSWER
    assert search.headers["Content-Type"] == "application/json"
    sent = fake.last(NPM_PREFIX + "/-/v1/search")
    assert sent.query == "text=left%20pad&size=5&from=0&quality=0.65"
    assert sent.headers["Authorization"] == NPM_CREDENTIAL
    keys = await client.get("/npm/-/npm/v1/keys")
    assert (keys.status, await keys.read()) == (200, KEYS_ANSWER)
    assert fake.last(NPM_PREFIX + "/-/npm/v1/keys").query == ""
    audit = await client.post(
        "/npm/-/npm/v1/security/audits/quick", json={"name": "app", "dependencies": {}}
    )
    assert audit.status == 200
    assert json.loads(fake.last(NPM_PREFIX + AUDIT_PATHS[1]).body)["name"] == "app"
    assert all(r.path.startswith(NPM_PREFIX + "/") for r in fake.requests)


@pytest.mark.parametrize(
    "path",
    [
        "/npm/-/v1/search/more",
        "/npm/-/v1/searchx",
        "/npm/-/v1/search/",
        "/npm/-/npm/v1/keys/x",
        "/npm/-/npm/v1/keysx",
        "/npm/-/npm/v1/keys/",
        "/npm/-/npm/v1/security/advisories",
        "/npm/-/npm/v1/attestations",
        "/npm/-/whoami",
        "/npm/-/v1/login",
        "/npm/-/npm/v1/user",
        "/npm/-/npm/v1/tokens",
        "/npm/-/org/acme/package",
    ],
)
async def test_only_exact_relay_paths_are_relayed(
    client: Client, upstreams: Upstreams, path: str
) -> None:
    answer = await send(client, "GET", path)
    assert answer.status == 404
    assert "not served by this mirror" in error_of(answer)["error"]
    assert upstreams.npm.requests == []


async def test_audit_relays_take_post_only(client: Client, upstreams: Upstreams) -> None:
    answer = await send(client, "GET", "/npm/-/npm/v1/security/advisories/bulk")
    assert answer.status == 405
    search = await send(client, "POST", "/npm/-/v1/search?text=x")
    assert search.status == 405
    assert upstreams.npm.requests == []


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("text=left&evil=1", "unknown search parameter 'evil'"),
        ("text=left&text=right", "more than once"),
        ("text=left&size=1000", "'size' must be a number"),
        ("text=left&size=-1", "'size' must be a number"),
        ("text=left&quality=2", "'quality' must be a number"),
        ("text=left&quality=nan", "'quality' must be a number"),
        ("text=left%00", "control characters"),
        ("text=%ff", "not UTF-8"),
        ("text=" + "a" * 600, "longer than"),
        ("a=1&b=2&c=3&d=4&e=5&f=6&g=7", "more than"),
    ],
)
async def test_search_query_is_checked(
    client: Client, upstreams: Upstreams, query: str, problem: str
) -> None:
    response = await client.get("/npm/-/v1/search?" + query)
    assert response.status == 400
    assert problem in (await response.json())["error"]
    assert upstreams.npm.requests == []


async def test_search_text_is_re_encoded_by_the_mirror(
    client: Client, upstreams: Upstreams
) -> None:
    response = await send(client, "GET", "/npm/-/v1/search?text=../../secret+%23x%26evil=1")
    assert response.status == 200
    sent = upstreams.npm.upstream.last(NPM_PREFIX + "/-/v1/search")
    # One parameter, whatever it holds: `&`, `=`, `#` stay inside the text.
    assert parse_qsl(sent.query, keep_blank_values=True) == [("text", "../../secret #x&evil=1")]
    assert sent.path == NPM_PREFIX + "/-/v1/search"


# regressions: attestations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "upstream_path"),
    [
        ("left-pad@1.3.0", "/-/npm/v1/attestations/left-pad@1.3.0"),
        ("@acme%2fwidget@1.0.0", "/-/npm/v1/attestations/@acme%2Fwidget@1.0.0"),
        ("@acme%2Fwidget@1.0.0", "/-/npm/v1/attestations/@acme%2Fwidget@1.0.0"),
        ("@acme/widget@1.0.0", "/-/npm/v1/attestations/@acme%2Fwidget@1.0.0"),
    ],
)
async def test_attestations_of_a_visible_version_are_relayed(
    client: Client, upstreams: Upstreams, spec: str, upstream_path: str
) -> None:
    response = await client.get("/npm/-/npm/v1/attestations/" + spec)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert (await response.json())["attestations"]
    asked = [r.path for r in upstreams.npm.requests if "/attestations/" in r.path]
    assert asked == [NPM_PREFIX + upstream_path]


@pytest.mark.parametrize(
    ("spec", "status", "reason"),
    [
        ("left-pad@1.4.0", 403, "quarantined"),
        ("left-pad@1.5.0", 403, "blocked"),
        ("left-pad@9.9.9", 404, "not-found"),
        ("left-pad", 400, "bad-request"),
        ("left-pad@", 400, "bad-request"),
        ("@acme%2fwidget", 400, "bad-request"),
        ("left-pad@1.3.0@1.4.0", 400, "bad-request"),
        ("left-pad/extra@1.3.0", 400, "bad-request"),
        (".hidden@1.3.0", 400, "bad-request"),
        ("left-pad@1.3.0%2b%2f", 400, "bad-request"),
    ],
)
async def test_attestations_follow_the_policy_of_the_tarball(
    client: Client, upstreams: Upstreams, spec: str, status: int, reason: str
) -> None:
    response = await send(client, "GET", "/npm/-/npm/v1/attestations/" + spec)
    assert response.status == status
    assert error_of(response)["reason"] == reason
    asked = [r.path for r in upstreams.npm.requests]
    assert [path for path in asked if "/attestations/" in path] == []


# regressions: what a relay answers ------------------------------------------------------------


async def test_a_relayed_answer_that_is_not_json_is_a_502(
    client: Client, upstreams: Upstreams
) -> None:
    tarball = upstreams.npm.version("left-pad", "1.4.0").tarball
    upstreams.npm.upstream.add(NPM_PREFIX + "/-/npm/v1/keys", tarball)
    response = await client.get("/npm/-/npm/v1/keys")
    assert response.status == 502
    body = await response.read()
    assert tarball not in body
    assert "not JSON" in json.loads(body)["error"]


async def test_upstream_content_type_is_not_passed_through(
    client: Client, upstreams: Upstreams
) -> None:
    upstreams.npm.upstream.add(NPM_PREFIX + "/-/npm/v1/keys", KEYS_ANSWER, content_type="text/html")
    response = await client.get("/npm/-/npm/v1/keys")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"


async def test_a_relayed_answer_that_is_a_package_document_is_a_502(
    client: Client, upstreams: Upstreams
) -> None:
    packument = json.dumps(upstreams.npm.packument("left-pad")).encode()
    upstreams.npm.upstream.add(
        NPM_PREFIX + "/-/v1/search", packument, content_type="application/json"
    )
    response = await client.get("/npm/-/v1/search?text=left")
    assert response.status == 502
    assert b"1.4.0" not in await response.read()


async def test_a_relay_redirected_to_another_path_is_a_502(
    client: Client, upstreams: Upstreams
) -> None:
    fake = upstreams.npm.upstream
    fake.redirect(NPM_PREFIX + "/-/npm/v1/keys", NPM_PREFIX + NPM_HELD_TARBALL)
    response = await client.get("/npm/-/npm/v1/keys")
    assert response.status == 502
    assert upstreams.npm.version("left-pad", "1.4.0").tarball not in await response.read()


async def test_an_upstream_404_on_a_relay_is_a_404_with_the_mirrors_message(
    client: Client, upstreams: Upstreams
) -> None:
    upstreams.npm.upstream.remove(NPM_PREFIX + "/-/npm/v1/keys")
    response = await client.get("/npm/-/npm/v1/keys")
    assert response.status == 404
    assert (await response.json())["reason"] == "not-found"


# the scoped-name grammar keeps working --------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/npm/@acme%2fwidget",
        "/npm/@acme%2Fwidget",
        "/npm/%40acme%2Fwidget",
        "/npm/@acme%2fwidget/-/widget-1.0.0.tgz",
        "/npm/-/package/@acme%2fwidget/dist-tags",
    ],
)
async def test_the_scope_separator_is_the_one_encoded_slash_allowed(
    client: Client, path: str
) -> None:
    assert (await send(client, "GET", path)).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/npm/@acme%2fwidget%2fmore",
        "/npm/@acme%2f%2e%2e",
        "/npm/@%2e%2e%2fwidget",
        "/npm/left-pad%2f-%2fleft-pad-1.4.0.tgz",
        "/npm/left-pad/-/@acme%2fwidget",
        "/npm/-/v1/search%2f..%2fleft-pad",
        "/npm/@acme%252fwidget",
        "/pypi/simple/@acme%2fwidget/",
        "/maven/org%2fexample/lib/maven-metadata.xml",
        "/api/v1/blocks%2f1",
    ],
)
async def test_any_other_encoded_slash_is_a_400(
    client: Client, upstreams: Upstreams, path: str
) -> None:
    answer = await send(client, "GET", path)
    assert answer.status == 400
    assert "slash" in error_of(answer)["error"] or "'..'" in error_of(answer)["error"]
    assert upstreams.npm.requests == []


async def test_a_large_audit_answer_is_relayed_whole(client: Client, upstreams: Upstreams) -> None:
    advisories = {f"pkg-{index}": [{"id": index, "title": "x" * 200}] for index in range(8000)}
    body = json.dumps(advisories).encode()
    assert len(body) > 1024**2  # parsed off the event loop
    upstreams.npm.upstream.add(NPM_PREFIX + AUDIT_PATHS[0], body, content_type="application/json")
    response = await client.post("/npm" + AUDIT_PATHS[0], json={"pkg-1": ["1.0.0"]})
    assert response.status == 200
    assert await response.read() == body
