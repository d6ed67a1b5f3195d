"""`mirror.upstream.Upstream` against real aiohttp servers on 127.0.0.1 (FakeUpstream)."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer
from yarl import URL

from mirror import errors
from mirror.clock import FixedClock
from mirror.config import UpstreamConfig
from mirror.metrics import Metrics
from mirror.upstream import Upstream, UpstreamScope, UpstreamStream, parse_retry_after, redact
from tests.fakes.upstream import FakeUpstream

CONFIG = UpstreamConfig(
    connect_timeout=timedelta(seconds=5),
    read_timeout=timedelta(seconds=5),
    retries=2,
    backoff=timedelta(0),
)


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeUpstream:
    upstream = FakeUpstream()
    await upstream.start(aiohttp_server)
    return upstream


@pytest.fixture
async def other(aiohttp_server: AiohttpServer) -> FakeUpstream:
    """A second server on another port: not in the allowlist."""
    upstream = FakeUpstream()
    await upstream.start(aiohttp_server)
    return upstream


def npm_scope(fake: FakeUpstream, **extra: Any) -> UpstreamScope:
    """The npm scope of a mirror whose npm upstream is `fake`."""
    return UpstreamScope.of("npm", fake.url("/"), **extra)


@pytest.fixture
async def client(fake: FakeUpstream, metrics: Metrics) -> AsyncIterator[Upstream]:
    upstream = Upstream(CONFIG, scopes=[npm_scope(fake)], metrics=metrics)
    await upstream.start()
    yield upstream
    await upstream.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def collect(stream: UpstreamStream, into: list[bytes]) -> None:
    async for chunk in stream.iter_chunks():
        into.append(chunk)


# allowlist ------------------------------------------------------------------------------


def test_allows_only_listed_hosts_with_their_port() -> None:
    scope = UpstreamScope.of(
        "pypi", "http://127.0.0.1:8081/simple/", file_hosts=["files.example.org"]
    )
    upstream = Upstream(CONFIG, scopes=[scope])

    def allows(url: str) -> bool:
        return upstream.allows(url, ecosystem="pypi")

    assert allows("https://files.example.org/a.tgz")
    assert allows("https://FILES.example.org:443/a.tgz")
    assert allows("http://127.0.0.1:8081/x")
    assert not allows("http://127.0.0.1:8082/x")
    assert not allows("https://files.example.org:8443/a.tgz")
    assert not allows("ftp://files.example.org/a.tgz")
    assert not allows("file:///etc/passwd")
    assert not allows("https://evil.example.com/@files.example.org/")
    assert not allows("https://files.example.org@evil.example.com/")
    assert not allows("not a url")


def test_each_ecosystem_allows_only_its_own_hosts() -> None:
    """Three upstreams on one machine, differing only by port, and a PyPI file host: each
    ecosystem may reach its own upstream and file hosts, nothing of another's; an
    ecosystem with no scope reaches nothing."""
    upstream = Upstream(
        CONFIG,
        scopes=[
            UpstreamScope.of("npm", "http://127.0.0.1:8001/"),
            UpstreamScope.of(
                "pypi", "http://127.0.0.1:8002/simple/", file_hosts=["127.0.0.1:8003"]
            ),
            UpstreamScope.of("maven", "http://127.0.0.1:8004/maven2/"),
        ],
    )
    hosts = {
        "npm": "http://127.0.0.1:8001/left-pad/-/left-pad-1.0.0.tgz",
        "pypi": "http://127.0.0.1:8002/simple/requests/",
        "pypi-files": "http://127.0.0.1:8003/packages/requests-2.0.0.tar.gz",
        "maven": "http://127.0.0.1:8004/maven2/a/b/1.0/b-1.0.jar",
    }
    allowed = {
        ecosystem: {
            name for name, url in hosts.items() if upstream.allows(url, ecosystem=ecosystem)
        }
        for ecosystem in ("npm", "pypi", "maven", "cargo")
    }
    assert allowed == {
        "npm": {"npm"},
        "pypi": {"pypi", "pypi-files"},
        "maven": {"maven"},
        "cargo": set(),
    }


def test_credentials_are_bound_to_the_exact_origin() -> None:
    """Scheme, host and port: https credentials never go over http, nor to another port of
    the same host, nor to a file host."""
    scope = UpstreamScope.of(
        "npm",
        "https://registry.internal.example/npm/",
        file_hosts=["files.internal.example"],
        auth="Bearer s3cret",
    )
    given = {
        url: scope.authorization(URL(url))
        for url in (
            "https://registry.internal.example/npm/left-pad",
            "https://REGISTRY.internal.example:443/other/path",
            "http://registry.internal.example/npm/left-pad",
            "http://registry.internal.example:443/npm/left-pad",
            "https://registry.internal.example:8443/npm/left-pad",
            "https://files.internal.example/left-pad.tgz",
        )
    }
    assert [url for url, auth in given.items() if auth is not None] == [
        "https://registry.internal.example/npm/left-pad",
        "https://REGISTRY.internal.example:443/other/path",
    ]
    assert "s3cret" not in repr(scope)


def test_a_scope_names_what_it_fetches_without_host_or_prefix() -> None:
    scope = UpstreamScope.of(
        "pypi", "https://mirror.internal.example:8443/repo/pypi-remote/simple/",
        file_hosts=["files.internal.example"],
    )  # fmt: skip
    base = "https://mirror.internal.example:8443/repo/pypi-remote"
    assert scope.subject(f"{base}/simple/requests/?x=secret") == "requests"
    assert scope.subject(f"{base}/pypi/requests/json") == "pypi/requests/json"
    assert scope.subject("https://files.internal.example/p/q/requests-2.0.tar.gz") == (
        "requests-2.0.tar.gz"
    )
    assert scope.subject("http://elsewhere.example/secret/dir/") == "dir"
    assert scope.subject(f"{base}/simple/") == "simple"


async def test_refuses_other_hosts_before_any_connection(
    client: Upstream, other: FakeUpstream
) -> None:
    other.add("/secret", b"internal")
    with pytest.raises(errors.HostNotAllowed):
        await client.fetch(other.url("/secret"), ecosystem="npm")
    with pytest.raises(errors.HostNotAllowed):
        await client.head(other.url("/secret"), ecosystem="npm")
    with pytest.raises(errors.HostNotAllowed):
        async with client.stream(other.url("/secret"), ecosystem="npm"):
            pass
    with pytest.raises(errors.HostNotAllowed):
        await client.forward("POST", other.url("/secret"), body=b"{}", ecosystem="npm")
    assert other.requests == []


async def test_refuses_redirect_to_another_host(
    client: Upstream, fake: FakeUpstream, other: FakeUpstream
) -> None:
    other.add("/target", b"elsewhere")
    fake.redirect("/moved", other.url("/target"))
    with pytest.raises(errors.HostNotAllowed):
        await client.fetch(fake.url("/moved"), ecosystem="npm")
    with pytest.raises(errors.HostNotAllowed):
        async with client.stream(fake.url("/moved"), ecosystem="npm"):
            pass
    assert fake.count("/moved") == 2
    assert other.requests == []


async def test_follows_redirects_on_the_same_host_up_to_a_limit(
    client: Upstream, fake: FakeUpstream
) -> None:
    fake.add("/final", b"here", etag='"f"')
    fake.redirect("/a", "/b", status=301)
    fake.redirect("/b", fake.url("/final"), status=307)
    document = await client.fetch(fake.url("/a"), ecosystem="npm")
    assert document.body == b"here"
    assert document.url == fake.url("/final")
    assert document.etag == '"f"'

    for hop in range(7):
        fake.redirect(f"/loop{hop}", f"/loop{hop + 1}")
    with pytest.raises(
        errors.UpstreamUnavailable, match="redirected loop0 more than 5 times"
    ) as caught:
        await client.fetch(fake.url("/loop0"), ecosystem="npm")
    assert fake.count("/loop6") == 0
    # A redirect loop is definite: no Retry-After, no 503 inviting a retry.
    assert (caught.value.status, caught.value.headers) == (502, ())


# single-flight --------------------------------------------------------------------------


async def test_concurrent_fetches_share_one_request(
    client: Upstream, fake: FakeUpstream, metrics: Metrics
) -> None:
    body = b"x" * 200_000
    fake.add("/doc", body, content_type="application/json")
    fake.hold("/doc")
    tasks = [
        asyncio.create_task(client.fetch(fake.url("/doc"), ecosystem="npm")) for _ in range(50)
    ]
    await fake.wait_for("/doc")
    fake.release("/doc")
    documents = await asyncio.gather(*tasks)
    assert fake.count("/doc") == 1
    assert all(document.body == body for document in documents)
    assert sample(metrics, "mirror_singleflight_joins_total", kind="document") == 49

    # The map is emptied when the request is done: a later fetch asks again.
    await client.fetch(fake.url("/doc"), ecosystem="npm")
    assert fake.count("/doc") == 2


async def test_different_validators_are_different_flights(
    client: Upstream, fake: FakeUpstream
) -> None:
    fake.add("/doc", b"v1", etag='"1"')
    fake.hold("/doc")
    plain = asyncio.create_task(client.fetch(fake.url("/doc"), ecosystem="npm"))
    conditional = asyncio.create_task(client.fetch(fake.url("/doc"), etag='"1"', ecosystem="npm"))
    await fake.wait_for("/doc", 2)
    fake.release("/doc")
    assert (await plain).status == 200
    assert (await conditional).status == 304


async def test_a_waiter_that_leaves_does_not_cancel_the_shared_request(
    client: Upstream, fake: FakeUpstream
) -> None:
    fake.add("/doc", b"body")
    fake.hold("/doc")
    leaver = asyncio.create_task(client.fetch(fake.url("/doc"), ecosystem="npm"))
    stayer = asyncio.create_task(client.fetch(fake.url("/doc"), ecosystem="npm"))
    await fake.wait_for("/doc")
    leaver.cancel()
    fake.release("/doc")
    assert (await stayer).body == b"body"
    assert leaver.cancelled()
    assert fake.count("/doc") == 1


# retries and error mapping --------------------------------------------------------------


async def test_retries_503_then_succeeds(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/doc", b"ok")
    fake.fail("/doc", 503, times=1)
    document = await client.fetch(fake.url("/doc"), ecosystem="npm")
    assert document.body == b"ok"
    assert fake.count("/doc") == 2


async def test_retries_429(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/doc", b"ok")
    fake.fail("/doc", 429, times=2, headers={"Retry-After": "0"})
    assert (await client.fetch(fake.url("/doc"), ecosystem="npm")).body == b"ok"
    assert fake.count("/doc") == 3


async def test_gives_up_after_the_configured_retries(
    client: Upstream, fake: FakeUpstream, metrics: Metrics
) -> None:
    fake.add("/doc", b"ok")
    fake.fail("/doc", 502)
    with pytest.raises(errors.UpstreamUnavailable, match="HTTP 502") as caught:
        await client.fetch(fake.url("/doc"), ecosystem="npm")
    assert caught.value.status == 503
    assert caught.value.headers == (("Retry-After", str(errors.RETRY_AFTER)),)
    assert fake.count("/doc") == CONFIG.retries + 1
    assert sample(
        metrics, "mirror_upstream_requests_total", ecosystem="npm", outcome="http-error"
    ) == (CONFIG.retries + 1)


@pytest.mark.parametrize("status", [404, 410])
async def test_not_found_is_not_retried(client: Upstream, fake: FakeUpstream, status: int) -> None:
    fake.fail("/gone", status)
    with pytest.raises(errors.UpstreamNotFound) as caught:
        await client.fetch(fake.url("/gone?token=s3cret"), ecosystem="npm")
    assert caught.value.message == f"the npm upstream has no gone (HTTP {status})"
    assert fake.count("/gone") == 1


@pytest.mark.parametrize(
    ("status", "answered"), [(400, 502), (401, 502), (403, 502), (500, 503), (501, 502)]
)
async def test_other_client_and_server_errors_are_unavailable_without_retry(
    client: Upstream, fake: FakeUpstream, status: int, answered: int
) -> None:
    # A 4xx is definite (retrying will not change it): 502, no Retry-After; a 5xx that is
    # not retried here may still pass: 503 with Retry-After, so the client retries; 501 (not
    # implemented) will not.
    fake.fail("/doc", status)
    with pytest.raises(errors.UpstreamUnavailable, match=f"HTTP {status}") as caught:
        await client.fetch(fake.url("/doc"), ecosystem="npm")
    assert fake.count("/doc") == 1
    assert caught.value.status == answered
    assert dict(caught.value.headers) == ({"Retry-After": "2"} if answered == 503 else {})


async def test_connection_refused_is_unavailable(fake: FakeUpstream) -> None:
    # A port nobody listens on: bind, note it, close.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    upstream = Upstream(CONFIG, scopes=[UpstreamScope.of("npm", f"http://127.0.0.1:{port}/")])
    await upstream.start()
    try:
        with pytest.raises(errors.UpstreamUnavailable, match="could not fetch"):
            await upstream.fetch(f"http://127.0.0.1:{port}/doc", ecosystem="npm")
    finally:
        await upstream.close()


async def test_read_timeout_is_unavailable(fake: FakeUpstream) -> None:
    config = UpstreamConfig(
        connect_timeout=timedelta(seconds=5),
        read_timeout=timedelta(milliseconds=200),
        retries=1,
        backoff=timedelta(0),
    )
    fake.add("/slow", b"late")
    fake.slow("/slow", 3)
    upstream = Upstream(config, scopes=[npm_scope(fake)])
    await upstream.start()
    try:
        with pytest.raises(errors.UpstreamUnavailable, match="timed out") as caught:
            await upstream.fetch(fake.url("/slow"), ecosystem="npm")
    finally:
        await upstream.close()
    assert caught.value.status == 503
    assert fake.count("/slow") == 2


async def test_truncated_document_is_unavailable(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/doc", b"y" * 100_000)
    fake.truncate("/doc")
    with pytest.raises(errors.UpstreamUnavailable):
        await client.fetch(fake.url("/doc"), ecosystem="npm")


async def test_max_bytes(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/big", b"z" * 10_000)
    with pytest.raises(errors.BadUpstreamDocument, match="larger than"):
        await client.fetch(fake.url("/big"), max_bytes=9_999, ecosystem="npm")
    assert (
        await client.fetch(fake.url("/big"), max_bytes=10_000, ecosystem="npm")
    ).body == b"z" * 10_000


async def test_gzip_bomb_stops_at_max_bytes(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/bomb", gzip.compress(b"\0" * 50_000_000), headers={"Content-Encoding": "gzip"})
    with pytest.raises(errors.BadUpstreamDocument, match="larger than"):
        await client.fetch(fake.url("/bomb"), max_bytes=1_000_000, ecosystem="npm")
    # Without a limit the steps still add up to the whole document.
    assert len((await client.fetch(fake.url("/bomb"), ecosystem="npm")).body) == 50_000_000


@pytest.mark.parametrize("limit", ["none", "above", "exact"])
async def test_documents_that_expand_past_one_step_are_decoded_whole(
    client: Upstream, fake: FakeUpstream, limit: str
) -> None:
    """A chunk that inflates to many steps (very compressible JSON) is decoded step by step,
    the tail in a thread: the bytes are exactly the document's, also at the limit exactly."""
    body = b'{"versions": {' + b'"1.0.0": {"name": "left-pad"}, ' * 240_000 + b'"x": 1}}'
    max_bytes = {"none": None, "above": 3 * len(body), "exact": len(body)}[limit]
    fake.add("/packument", gzip.compress(body), headers={"Content-Encoding": "gzip"})
    fetched = await client.fetch(fake.url("/packument"), max_bytes=max_bytes, ecosystem="npm")
    assert fetched.body == body


# conditional GET and encoding -----------------------------------------------------------


async def test_conditional_get_returns_304(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/doc", b"v1", etag='"abc"', last_modified="Tue, 01 Apr 2025 10:00:00 GMT")
    first = await client.fetch(fake.url("/doc"), ecosystem="npm")
    assert first.status == 200
    assert first.etag == '"abc"'
    assert first.last_modified == "Tue, 01 Apr 2025 10:00:00 GMT"

    by_etag = await client.fetch(fake.url("/doc"), etag=first.etag, ecosystem="npm")
    assert by_etag.status == 304
    assert by_etag.body == b""
    assert fake.last("/doc").headers["If-None-Match"] == '"abc"'

    by_date = await client.fetch(
        fake.url("/doc"), last_modified=first.last_modified, ecosystem="npm"
    )
    assert by_date.status == 304
    assert fake.last("/doc").headers["If-Modified-Since"] == first.last_modified

    fake.add("/doc", b"v2", etag='"def"')
    changed = await client.fetch(fake.url("/doc"), etag=first.etag, ecosystem="npm")
    assert (changed.status, changed.body, changed.etag) == (200, b"v2", '"def"')


async def test_documents_are_decoded_and_accept_is_sent(
    client: Upstream, fake: FakeUpstream
) -> None:
    body = b'{"name": "left-pad"}' * 1000
    fake.add("/doc", body, content_type="application/json", compress=True)
    document = await client.fetch(
        fake.url("/doc"), accept="application/vnd.npm.install-v1+json", ecosystem="npm"
    )
    assert document.body == body
    assert "Content-Encoding" not in document.headers
    assert document.headers["Content-Type"] == "application/json"
    sent = fake.last("/doc").headers
    assert sent["Accept"] == "application/vnd.npm.install-v1+json"
    assert "gzip" in sent["Accept-Encoding"]
    assert sent["User-Agent"] == CONFIG.user_agent


async def test_head(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/a.pom", b"<project/>", last_modified="Tue, 01 Apr 2025 10:00:00 GMT")
    document = await client.head(fake.url("/a.pom"), ecosystem="npm")
    assert (document.status, document.body) == (200, b"")
    assert document.last_modified == "Tue, 01 Apr 2025 10:00:00 GMT"
    assert fake.last("/a.pom").method == "HEAD"
    with pytest.raises(errors.UpstreamNotFound):
        await client.head(fake.url("/missing.pom"), ecosystem="npm")


# stream ---------------------------------------------------------------------------------


async def test_stream_yields_raw_bytes_in_bounded_chunks(
    client: Upstream, fake: FakeUpstream, metrics: Metrics
) -> None:
    tarball = gzip.compress(bytes(range(256)) * 4000)
    # Misconfigured servers label .tgz as gzip-encoded: the artifact must stay as published.
    fake.add("/a.tgz", tarball, headers={"Content-Encoding": "gzip"}, compress=True)
    chunks: list[bytes] = []
    async with client.stream(fake.url("/a.tgz"), ecosystem="npm") as stream:
        assert stream.status == 200
        assert stream.content_length == len(tarball)
        async for chunk in stream.iter_chunks():
            chunks.append(chunk)
    assert b"".join(chunks) == tarball
    assert max(len(chunk) for chunk in chunks) <= 64 * 1024
    assert fake.last("/a.tgz").headers["Accept-Encoding"] == "identity"
    assert sample(metrics, "mirror_upstream_bytes_total", ecosystem="npm") == len(tarball)


async def test_stream_maps_errors_before_yielding(client: Upstream, fake: FakeUpstream) -> None:
    with pytest.raises(errors.UpstreamNotFound):
        async with client.stream(fake.url("/missing.tgz"), ecosystem="npm"):
            pytest.fail("must not enter")
    fake.add("/a.tgz", b"tar")
    fake.fail("/a.tgz", 503, times=1)
    async with client.stream(fake.url("/a.tgz"), ecosystem="npm") as stream:
        assert [chunk async for chunk in stream.iter_chunks()] == [b"tar"]
    assert fake.count("/a.tgz") == 2
    fake.fail("/a.tgz", 500)
    with pytest.raises(errors.UpstreamUnavailable, match="HTTP 500"):
        async with client.stream(fake.url("/a.tgz"), ecosystem="npm"):
            pytest.fail("must not enter")


async def test_stream_truncated_body_raises_from_the_iterator(
    client: Upstream, fake: FakeUpstream
) -> None:
    body = b"t" * 300_000
    fake.add("/a.tgz", body)
    fake.truncate("/a.tgz")
    chunks: list[bytes] = []
    async with client.stream(fake.url("/a.tgz"), ecosystem="npm") as stream:
        assert stream.content_length == len(body)
        with pytest.raises(errors.UpstreamUnavailable):
            await collect(stream, chunks)
    assert 0 < len(b"".join(chunks)) < len(body)


async def test_artifact_size_is_an_unencoded_head_through_the_scope(
    client: Upstream, fake: FakeUpstream, other: FakeUpstream
) -> None:
    fake.add("/a.whl", b"w" * 1234)
    fake.redirect("/moved.whl", "/a.whl")
    assert await client.artifact_size(fake.url("/moved.whl"), ecosystem="npm") == 1234
    assert fake.last("/a.whl").method == "HEAD"
    assert fake.last("/a.whl").headers["Accept-Encoding"] == "identity"
    # A length of encoded bytes is not the file's.
    fake.add("/b.whl", b"w" * 1234, headers={"Content-Encoding": "gzip"})
    assert await client.artifact_size(fake.url("/b.whl"), ecosystem="npm") is None
    with pytest.raises(errors.UpstreamNotFound):
        await client.artifact_size(fake.url("/missing.whl"), ecosystem="npm")
    other.add("/c.whl", b"elsewhere")
    fake.redirect("/away.whl", other.url("/c.whl"))
    with pytest.raises(errors.HostNotAllowed):
        await client.artifact_size(fake.url("/away.whl"), ecosystem="npm")
    with pytest.raises(errors.HostNotAllowed):
        await client.artifact_size(other.url("/c.whl"), ecosystem="npm")
    assert other.requests == []


async def test_a_ranged_stream_is_the_upstreams_206_or_its_whole_file(
    client: Upstream, fake: FakeUpstream
) -> None:
    body = bytes(range(256)) * 10
    fake.add("/a.whl", body)
    async with client.stream(fake.url("/a.whl"), ecosystem="npm", byte_range="bytes=-6") as part:
        assert part.status == 206
        assert part.headers["Content-Range"] == f"bytes {len(body) - 6}-{len(body) - 1}/{len(body)}"
        assert [chunk async for chunk in part.iter_chunks()] == [body[-6:]]
    assert fake.last("/a.whl").headers["Range"] == "bytes=-6"
    fake.ignore_ranges("/a.whl")
    async with client.stream(fake.url("/a.whl"), ecosystem="npm", byte_range="bytes=0-9") as whole:
        assert whole.status == 200
        assert whole.content_length == len(body)
    fake.heal("/a.whl")
    with pytest.raises(errors.UpstreamUnavailable, match="HTTP 416"):
        async with client.stream(
            fake.url("/a.whl"), ecosystem="npm", byte_range=f"bytes={len(body)}-"
        ):
            pytest.fail("must not enter")


# forward --------------------------------------------------------------------------------


async def test_forward_relays_any_status_and_never_retries_post(
    client: Upstream, fake: FakeUpstream
) -> None:
    fake.add("/-/npm/v1/security/audits/quick", b'{"ok": true}', content_type="application/json")
    document = await client.forward(
        "POST",
        fake.url("/-/npm/v1/security/audits/quick"),
        body=b'{"requires": {}}',
        headers={"Content-Type": "application/json", "Connection": "close", "Host": "evil"},
        ecosystem="npm",
    )
    assert (document.status, document.body) == (200, b'{"ok": true}')
    seen = fake.last("/-/npm/v1/security/audits/quick")
    assert (seen.method, seen.body) == ("POST", b'{"requires": {}}')
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Host"] == fake.host

    fake.fail("/-/npm/v1/security/audits/quick", 503)
    failed = await client.forward(
        "POST", fake.url("/-/npm/v1/security/audits/quick"), ecosystem="npm"
    )
    assert failed.status == 503
    assert fake.count("/-/npm/v1/security/audits/quick", method="POST") == 2

    missing = await client.forward("GET", fake.url("/nothing"), ecosystem="npm")
    assert missing.status == 404


async def test_forward_retries_idempotent_methods(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/x", b"ok")
    fake.fail("/x", 503, times=1)
    assert (await client.forward("GET", fake.url("/x"), ecosystem="npm")).status == 200
    assert fake.count("/x") == 2


async def test_not_started_is_unavailable(fake: FakeUpstream) -> None:
    upstream = Upstream(CONFIG, scopes=[npm_scope(fake)])
    with pytest.raises(errors.UpstreamUnavailable, match="not started"):
        await upstream.fetch(fake.url("/doc"), ecosystem="npm")
    assert fake.requests == []


def test_redact_drops_secrets() -> None:
    assert redact("https://user:pw@h.example/p/a?token=x#f") == "https://h.example/p/a"


async def test_credentials_go_to_their_own_host_only(
    fake: FakeUpstream, other: FakeUpstream, metrics: Metrics
) -> None:
    """A private upstream's Authorization is sent to that host, on every kind of request,
    and never follows a redirect to another (allowed) host such as a file host."""
    fake.add("/doc", b"{}", content_type="application/json")
    fake.add("/file", b"bytes")
    fake.redirect("/elsewhere", other.url("/file"))
    other.add("/file", b"bytes")
    upstream = Upstream(
        CONFIG,
        scopes=[npm_scope(fake, file_hosts=[other.host], auth="Bearer s3cret")],
        metrics=metrics,
    )
    await upstream.start()
    try:
        await upstream.fetch(fake.url("/doc"), ecosystem="npm")
        await upstream.head(fake.url("/doc"), ecosystem="npm")
        async with upstream.stream(fake.url("/file"), ecosystem="npm") as response:
            assert b"".join([chunk async for chunk in response.iter_chunks()]) == b"bytes"
        await upstream.fetch(fake.url("/elsewhere"), ecosystem="npm")
    finally:
        await upstream.close()
    sent = [request.headers.get("Authorization") for request in fake.requests]
    assert sent == ["Bearer s3cret"] * 4
    assert [request.headers.get("Authorization") for request in other.requests] == [None]


# scopes: hosts and credentials per ecosystem ----------------------------------------------


@pytest.fixture
async def maven(aiohttp_server: AiohttpServer) -> FakeUpstream:
    """A third server: the Maven upstream of the same mirror (same host, another port)."""
    upstream = FakeUpstream()
    await upstream.start(aiohttp_server)
    return upstream


@pytest.fixture
async def scoped(
    fake: FakeUpstream, other: FakeUpstream, maven: FakeUpstream, metrics: Metrics
) -> AsyncIterator[Upstream]:
    """npm on `fake` with credentials, PyPI on `fake`'s sibling `other` as its file host (its
    index is `fake` too, without credentials), Maven on `maven` with its own credentials."""
    upstream = Upstream(
        CONFIG,
        scopes=[
            npm_scope(fake, auth="Bearer npm-secret"),
            UpstreamScope.of("pypi", fake.url("/simple/"), file_hosts=[other.host]),
            UpstreamScope.of("maven", maven.url("/maven2/"), auth="Bearer maven-secret"),
        ],
        metrics=metrics,
    )
    await upstream.start()
    yield upstream
    await upstream.close()


def authorizations(fake: FakeUpstream) -> list[str | None]:
    return [request.headers.get("Authorization") for request in fake.requests]


async def test_an_ecosystem_never_requests_another_ecosystems_hosts(
    scoped: Upstream, other: FakeUpstream, maven: FakeUpstream
) -> None:
    maven.add("/maven2/a/b/1.0/b-1.0.jar", b"jar")
    other.add("/packages/p-1.0.tar.gz", b"sdist")
    for url in (maven.url("/maven2/a/b/1.0/b-1.0.jar"), other.url("/packages/p-1.0.tar.gz")):
        with pytest.raises(errors.HostNotAllowed):
            await scoped.fetch(url, ecosystem="npm")
        with pytest.raises(errors.HostNotAllowed):
            await scoped.head(url, ecosystem="npm")
        with pytest.raises(errors.HostNotAllowed):
            async with scoped.stream(url, ecosystem="npm"):
                pytest.fail("must not enter")
        with pytest.raises(errors.HostNotAllowed):
            await scoped.forward("GET", url, ecosystem="npm")
    with pytest.raises(errors.HostNotAllowed):
        await scoped.fetch(other.url("/packages/p-1.0.tar.gz"), ecosystem="maven")
    assert maven.requests == []
    assert other.requests == []


@pytest.mark.parametrize("target", ["maven", "pypi-files"])
async def test_a_redirect_to_another_ecosystems_host_is_refused_before_any_request(
    scoped: Upstream,
    fake: FakeUpstream,
    other: FakeUpstream,
    maven: FakeUpstream,
    target: str,
) -> None:
    elsewhere = maven if target == "maven" else other
    elsewhere.add("/x/left-pad-1.0.0.tgz", b"not npm")
    fake.redirect("/left-pad/-/left-pad-1.0.0.tgz", elsewhere.url("/x/left-pad-1.0.0.tgz"))
    fake.redirect("/left-pad", elsewhere.url("/x/left-pad-1.0.0.tgz"), status=307)
    with pytest.raises(errors.HostNotAllowed) as caught:
        async with scoped.stream(fake.url("/left-pad/-/left-pad-1.0.0.tgz"), ecosystem="npm"):
            pytest.fail("must not enter")
    assert caught.value.status == 502
    with pytest.raises(errors.HostNotAllowed):
        await scoped.fetch(fake.url("/left-pad"), ecosystem="npm")
    with pytest.raises(errors.HostNotAllowed):
        await scoped.forward("POST", fake.url("/left-pad"), body=b"{}", ecosystem="npm")
    assert elsewhere.requests == []
    for message in (caught.value.message, caught.value.phrase, str(caught.value.body())):
        assert elsewhere.host not in message
        assert fake.host not in message
        assert "127.0.0.1" not in message


async def test_credentials_of_one_ecosystem_never_reach_another_ones_host(
    scoped: Upstream, fake: FakeUpstream, other: FakeUpstream, maven: FakeUpstream
) -> None:
    """Same address, different ports: npm's token goes to npm's upstream only, Maven's to
    Maven's only; PyPI's requests to the very host of npm's upstream carry no token (the
    credentials belong to the npm scope, not to the host), nor do file-host requests."""
    fake.add("/left-pad", b"{}")
    fake.add("/simple/requests/", b"<html></html>")
    other.add("/packages/requests-1.0.tar.gz", b"sdist")
    maven.add("/maven2/a/b/maven-metadata.xml", b"<metadata/>")
    fake.redirect("/simple/moved/", other.url("/packages/requests-1.0.tar.gz"))

    await scoped.fetch(fake.url("/left-pad"), ecosystem="npm")
    await scoped.fetch(fake.url("/simple/requests/"), ecosystem="pypi")
    await scoped.fetch(fake.url("/simple/moved/"), ecosystem="pypi")
    await scoped.fetch(maven.url("/maven2/a/b/maven-metadata.xml"), ecosystem="maven")
    await scoped.forward(
        "GET",
        fake.url("/left-pad"),
        headers={"Authorization": "Bearer from-a-client", "Cookie": "session=1"},
        ecosystem="npm",
    )
    assert authorizations(fake) == ["Bearer npm-secret", None, None, "Bearer npm-secret"]
    assert "Cookie" not in fake.requests[-1].headers
    assert authorizations(other) == [None]
    assert authorizations(maven) == ["Bearer maven-secret"]


async def test_two_ecosystems_on_one_origin_each_send_their_own_credentials(
    fake: FakeUpstream,
) -> None:
    """One repository manager serving npm and PyPI under two paths of one origin, with a token
    each: every request carries its own ecosystem's token (credentials are not keyed by host)."""
    fake.add("/api/npm/left-pad", b"{}")
    fake.add("/api/pypi/simple/requests/", b"<html></html>")
    upstream = Upstream(
        CONFIG,
        scopes=[
            UpstreamScope.of("npm", fake.url("/api/npm/"), auth="Bearer npm-token"),
            UpstreamScope.of("pypi", fake.url("/api/pypi/simple/"), auth="Bearer pypi-token"),
        ],
    )
    await upstream.start()
    try:
        await upstream.fetch(fake.url("/api/npm/left-pad"), ecosystem="npm")
        await upstream.fetch(fake.url("/api/pypi/simple/requests/"), ecosystem="pypi")
    finally:
        await upstream.close()
    assert authorizations(fake) == ["Bearer npm-token", "Bearer pypi-token"]


async def test_one_document_fetched_by_two_ecosystems_is_two_flights(
    scoped: Upstream, fake: FakeUpstream
) -> None:
    """Single-flight never lets one ecosystem's request share another's answer (fetched with
    other credentials)."""
    fake.add("/shared", b"doc")
    fake.hold("/shared")
    npm = asyncio.create_task(scoped.fetch(fake.url("/shared"), ecosystem="npm"))
    pypi = asyncio.create_task(scoped.fetch(fake.url("/shared"), ecosystem="pypi"))
    await fake.wait_for("/shared", 2)
    fake.release("/shared")
    await asyncio.gather(npm, pypi)
    assert sorted(authorizations(fake), key=str) == ["Bearer npm-secret", None]


# what clients and /metrics may see ----------------------------------------------------------


async def test_error_messages_name_no_upstream_host(
    fake: FakeUpstream, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """Every error that can reach a client names the ecosystem and what was fetched; the
    host, port and path prefix (settings, maybe internal) go to the log only."""
    prefix = "/internal-prefix/npm-remote"
    fake.fail(f"{prefix}/unavailable", 503)
    fake.fail(f"{prefix}/missing", 404)
    fake.add(f"{prefix}/big", b"z" * 1000)
    fake.add(f"{prefix}/cut", b"y" * 100_000)
    fake.truncate(f"{prefix}/cut")
    fake.add(f"{prefix}/packed", b"not gzip", headers={"Content-Encoding": "gzip"})
    fake.add(f"{prefix}/zipped", b"x", headers={"Content-Encoding": "br"})
    for hop in range(7):
        fake.redirect(f"{prefix}/loop{hop}", f"{prefix}/loop{hop + 1}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    upstream = Upstream(
        CONFIG,
        scopes=[
            UpstreamScope.of("npm", fake.url(prefix + "/")),
            UpstreamScope.of("pypi", f"http://127.0.0.1:{closed_port}{prefix}/simple/"),
        ],
        metrics=metrics,
    )
    await upstream.start()
    caught: list[errors.MirrorError] = []
    try:
        for path in ("unavailable", "missing", "big", "packed", "zipped", "loop0"):
            with pytest.raises(errors.UpstreamError) as error:
                await upstream.fetch(fake.url(f"{prefix}/{path}"), ecosystem="npm", max_bytes=100)
            caught.append(error.value)
        with pytest.raises(errors.UpstreamError) as error:
            async with upstream.stream(fake.url(f"{prefix}/cut"), ecosystem="npm") as stream:
                await collect(stream, [])
        caught.append(error.value)
        with pytest.raises(errors.UpstreamError) as error:
            await upstream.fetch(
                f"http://127.0.0.1:{closed_port}{prefix}/simple/requests/", ecosystem="pypi"
            )
        caught.append(error.value)
        with pytest.raises(errors.UpstreamError) as error:
            await upstream.fetch(fake.url("/x"), ecosystem="maven")
        caught.append(error.value)
    finally:
        await upstream.close()
    assert [type(error).__name__ for error in caught] == [
        "UpstreamUnavailable",
        "UpstreamNotFound",
        "BadUpstreamDocument",
        "BadUpstreamDocument",
        "BadUpstreamDocument",
        "UpstreamUnavailable",
        "UpstreamUnavailable",
        "UpstreamUnavailable",
        "HostNotAllowed",
    ]
    assert caught[0].message == "the npm upstream answered HTTP 503 for unavailable"
    assert caught[7].message == (
        "could not fetch requests from the pypi upstream: could not connect"
    )
    port = fake.host.rsplit(":", 1)[1]
    for error in caught:
        shown = f"{error.message} {error.phrase} {error.body()}"
        for secret in ("127.0.0.1", port, str(closed_port), "internal-prefix", "http"):
            assert secret not in shown, (secret, shown)
    # The log keeps the URL for the operator.
    assert f"{fake.host}{prefix}/unavailable" in caplog.text
    assert str(closed_port) in caplog.text

    exposition = metrics.render().decode()
    assert "mirror_upstream_requests_total" in exposition
    assert "127.0.0.1" not in exposition
    assert port not in exposition
    assert sample(metrics, "mirror_upstream_requests_total", ecosystem="npm", outcome="http-error")


# transient failures: 503 with Retry-After; the outage log ---------------------------------

NO_RETRY = UpstreamConfig(
    connect_timeout=timedelta(seconds=5),
    read_timeout=timedelta(seconds=5),
    retries=0,
    backoff=timedelta(0),
)


async def test_a_reset_is_retried_and_when_it_persists_is_a_transient_503(
    client: Upstream, fake: FakeUpstream, metrics: Metrics
) -> None:
    fake.add("/doc", b"ok")
    fake.reset("/doc", times=1)
    assert (await client.fetch(fake.url("/doc"), ecosystem="npm")).body == b"ok"
    assert fake.count("/doc") == 2

    fake.reset("/doc")
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        await client.fetch(fake.url("/doc"), ecosystem="npm")
    assert caught.value.message == (
        "could not fetch doc from the npm upstream: the connection was lost"
    )
    assert (caught.value.status, caught.value.headers) == (503, (("Retry-After", "2"),))
    assert caught.value.body()["reason"] == "upstream-unavailable"
    assert (
        sample(metrics, "mirror_upstream_errors_total", ecosystem="npm", kind="connection-lost")
        == 1
    )


@pytest.mark.parametrize(
    ("sent", "passed_on"),
    [
        ("7", "7"),
        ("600", str(errors.RETRY_AFTER_MAX)),  # bounded: a client waits a few seconds at most
        ("0", "1"),
        ("Sun, 22 Nov 2026 10:00:04 GMT", "4"),  # an HTTP date, 4 s after the clock's now
        ("soon", str(errors.RETRY_AFTER)),
        (None, str(errors.RETRY_AFTER)),
    ],
)
async def test_the_upstreams_retry_after_is_passed_on_bounded(
    fake: FakeUpstream, sent: str | None, passed_on: str
) -> None:
    fake.fail("/busy", 429, headers={"Retry-After": sent} if sent is not None else {})
    clock = FixedClock(datetime(2026, 11, 22, 10, 0, tzinfo=UTC))
    upstream = Upstream(NO_RETRY, scopes=[npm_scope(fake)], clock=clock)
    await upstream.start()
    try:
        with pytest.raises(errors.UpstreamUnavailable, match="HTTP 429") as caught:
            await upstream.fetch(fake.url("/busy"), ecosystem="npm")
    finally:
        await upstream.close()
    assert caught.value.status == 503
    assert dict(caught.value.headers) == {"Retry-After": passed_on}


async def test_an_outage_is_logged_once_per_interval_with_counts_then_its_end(
    fake: FakeUpstream, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """200 failing requests during an outage are one line, not 200; the next interval's
    first failure summarises the rest with counts; the first answer ends it."""
    caplog.set_level(logging.INFO, logger="mirror")
    clock = FixedClock(datetime(2026, 11, 22, 10, 0, tzinfo=UTC))
    upstream = Upstream(NO_RETRY, scopes=[npm_scope(fake)], metrics=metrics, clock=clock)
    await upstream.start()
    for n in range(200):
        fake.add(f"/pkg-{n}", b"{}")
    fake.down()
    fake.reset("/pkg-7")  # aiohttp itself retries a reset once on a reused connection
    try:
        for n in range(200):
            with pytest.raises(errors.UpstreamUnavailable):
                await upstream.fetch(fake.url(f"/pkg-{n}"), ecosystem="npm")
        outage = [r for r in caplog.records if r.name == "mirror.upstream"]
        assert [r.getMessage() for r in outage] == [
            f"upstream {fake.host} is failing: the npm upstream answered HTTP 503 for pkg-0 "
            f"({fake.url('/pkg-0')}); further failures of {fake.host} are summarised every 30 s"
        ]
        assert outage[0].levelno == logging.WARNING

        clock.advance(timedelta(seconds=31))
        with pytest.raises(errors.UpstreamUnavailable):
            await upstream.fetch(fake.url("/pkg-0"), ecosystem="npm")
        fake.up()
        await upstream.fetch(fake.url("/pkg-1"), ecosystem="npm")
        await upstream.fetch(fake.url("/pkg-2"), ecosystem="npm")
    finally:
        await upstream.close()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "mirror.upstream"]
    assert lines[1:] == [
        (
            "WARNING",
            f"upstream {fake.host} still failing: 200 failures (199 http-5xx, 1 connection-lost) "
            f"in the last 31 s, failing for 31 s; the last: the npm upstream answered HTTP 503 "
            f"for pkg-0 ({fake.url('/pkg-0')})",
        ),
        ("INFO", f"upstream {fake.host} answers again after 31 s of failures (201 in all)"),
    ]
    assert sample(metrics, "mirror_upstream_errors_total", ecosystem="npm", kind="http-5xx") == 200
    assert (
        sample(metrics, "mirror_upstream_errors_total", ecosystem="npm", kind="connection-lost")
        == 1
    )


async def test_a_definite_answer_is_no_outage_and_ends_one(
    fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mirror")
    clock = FixedClock(datetime(2026, 11, 22, 10, 0, tzinfo=UTC))
    upstream = Upstream(NO_RETRY, scopes=[npm_scope(fake)], clock=clock)
    await upstream.start()
    fake.fail("/down", 502)
    try:
        with pytest.raises(errors.UpstreamUnavailable):
            await upstream.fetch(fake.url("/down"), ecosystem="npm")
        with pytest.raises(errors.UpstreamNotFound) as missing:
            await upstream.fetch(fake.url("/missing"), ecosystem="npm")
    finally:
        await upstream.close()
    assert missing.value.status == 404
    assert missing.value.headers == ()
    messages = [r.getMessage() for r in caplog.records if r.name == "mirror.upstream"]
    assert messages[1:] == [
        f"the npm upstream has no missing (HTTP 404) ({fake.url('/missing')})",
        f"upstream {fake.host} answers again after 0 s of failures (1 in all)",
    ]


# review fixes: Retry-After forms, definite 5xx, refused redirects, attribution ----------------


@pytest.mark.parametrize(
    ("sent", "seconds"),
    [
        ("12", 12),
        (" 3 ", 3),
        ("²", None),  # str.isdigit() says yes; int() does not
        ("١٢", None),  # Arabic-Indic digits: not the ASCII digits HTTP allows
        ("-1", None),
        ("1.5", None),
        ("9" * 10, None),
        ("Sun, 22 Nov 2026 10:00:04 GMT", 4),
        ("Sun, 22 Nov 2026 09:59:00 GMT", -60),
        ("soon", None),
        ("Sun, 99 Nov 2026 10:00:04 GMT", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_ascii_seconds_or_an_http_date(
    sent: str | None, seconds: int | None
) -> None:
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert parse_retry_after(sent, now) == seconds


@pytest.mark.parametrize("sent", ["²", "١٢", "-1", "Sun, 22 Nov 2026 10:00:01 GMT", "garbage"])
async def test_an_odd_retry_after_is_retried_and_passed_on_without_crashing(
    fake: FakeUpstream, sent: str
) -> None:
    fake.fail("/busy", 429, headers={"Retry-After": sent})
    clock = FixedClock(datetime(2026, 11, 22, 10, 0, tzinfo=UTC))
    upstream = Upstream(CONFIG, scopes=[npm_scope(fake)], clock=clock)  # with retries
    await upstream.start()
    try:
        with pytest.raises(errors.UpstreamUnavailable, match="HTTP 429") as caught:
            await upstream.fetch(fake.url("/busy"), ecosystem="npm")
    finally:
        await upstream.close()
    assert fake.count("/busy") == CONFIG.retries + 1
    assert fake.last("/busy").method == "GET"
    expected = "1" if sent.startswith("Sun") else str(errors.RETRY_AFTER)
    assert dict(caught.value.headers) == {"Retry-After": expected}


@pytest.mark.parametrize(
    ("status", "client_status"), [(500, 503), (503, 503), (501, 502), (505, 502), (507, 502)]
)
async def test_only_the_5xx_that_may_pass_are_transient(
    client: Upstream, fake: FakeUpstream, status: int, client_status: int
) -> None:
    fake.fail("/doc", status)
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        await client.fetch(fake.url("/doc"), ecosystem="npm")
    assert caught.value.status == client_status
    assert ("Retry-After" in dict(caught.value.headers)) == (client_status == 503)


async def test_refused_redirects_are_each_logged_and_no_outage(
    fake: FakeUpstream, other: FakeUpstream, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mirror")
    clock = FixedClock(datetime(2026, 11, 22, 10, 0, tzinfo=UTC))
    upstream = Upstream(NO_RETRY, scopes=[npm_scope(fake)], metrics=metrics, clock=clock)
    await upstream.start()
    fake.redirect("/a", other.url("/x"))
    fake.redirect("/b", "http://127.0.0.9:9/y")
    fake.add("/fine", b"{}")
    try:
        for path in ("/a", "/b", "/a"):  # the same refusal again within the interval: counted
            with pytest.raises(errors.HostNotAllowed):
                await upstream.fetch(fake.url(path), ecosystem="npm")
        await upstream.fetch(fake.url("/fine"), ecosystem="npm")
    finally:
        await upstream.close()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "mirror.upstream"]
    assert lines == [
        (
            "WARNING",
            f"refused a redirect from {fake.url('/a')} to {other.url('/x')}: not the npm "
            "upstream's host or one of its file hosts (an attack signal, or a file host missing "
            "from the settings)",
        ),
        (
            "WARNING",
            f"refused a redirect from {fake.url('/b')} to http://127.0.0.9:9/y: not the npm "
            "upstream's host or one of its file hosts (an attack signal, or a file host missing "
            "from the settings)",
        ),
    ]  # and no outage of the upstream's host, nor its end
    assert (
        sample(metrics, "mirror_upstream_errors_total", ecosystem="npm", kind="redirect-refused")
        == 3
    )
    assert other.requests == []


async def test_a_file_host_failing_after_a_redirect_is_the_one_logged(
    fake: FakeUpstream, other: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mirror")
    upstream = Upstream(NO_RETRY, scopes=[npm_scope(fake, file_hosts=[other.host])])
    await upstream.start()
    other.add("/cdn/a.tgz", b"t" * 200_000)
    other.truncate("/cdn/a.tgz")
    fake.redirect("/a.tgz", other.url("/cdn/a.tgz"))
    try:
        with pytest.raises(errors.UpstreamUnavailable) as caught:
            async with upstream.stream(fake.url("/a.tgz"), ecosystem="npm") as stream:
                await collect(stream, [])
    finally:
        await upstream.close()
    # The client's terms: what it asked for; the log: the host and URL that failed.
    assert caught.value.message == (
        "could not fetch a.tgz from the npm upstream: the connection was lost"
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "mirror.upstream"]
    assert len(lines) == 1
    assert lines[0].startswith(
        f"upstream {other.host} is failing: could not fetch {other.url('/cdn/a.tgz')} "
    )


async def test_artifact_size_joins_are_counted_apart_from_documents(
    client: Upstream, fake: FakeUpstream, metrics: Metrics
) -> None:
    fake.add("/a.whl", b"w" * 10)
    fake.hold("/a.whl")
    sizes = [
        asyncio.create_task(client.artifact_size(fake.url("/a.whl"), ecosystem="npm"))
        for _ in range(3)
    ]
    await fake.wait_for("/a.whl")
    await asyncio.sleep(0.05)  # let the other two join
    fake.release("/a.whl")
    assert await asyncio.gather(*sizes) == [10, 10, 10]
    assert fake.count("/a.whl") == 1
    assert sample(metrics, "mirror_singleflight_joins_total", kind="artifact-size") == 2
    assert sample(metrics, "mirror_singleflight_joins_total", kind="document") == 0
