"""`mirror.upstream.Upstream` against real aiohttp servers on 127.0.0.1 (FakeUpstream)."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpServer

from mirror import errors
from mirror.config import UpstreamConfig
from mirror.metrics import Metrics
from mirror.upstream import Upstream, UpstreamStream, redact
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


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
async def client(fake: FakeUpstream, metrics: Metrics) -> AsyncIterator[Upstream]:
    upstream = Upstream(CONFIG, allowed_hosts=[fake.host], metrics=metrics)
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
    upstream = Upstream(CONFIG, allowed_hosts=["files.example.org", "127.0.0.1:8081"])
    assert upstream.allows("https://files.example.org/a.tgz")
    assert upstream.allows("https://FILES.example.org:443/a.tgz")
    assert upstream.allows("http://127.0.0.1:8081/x")
    assert not upstream.allows("http://127.0.0.1:8082/x")
    assert not upstream.allows("https://files.example.org:8443/a.tgz")
    assert not upstream.allows("ftp://files.example.org/a.tgz")
    assert not upstream.allows("file:///etc/passwd")
    assert not upstream.allows("https://evil.example.com/@files.example.org/")
    assert not upstream.allows("https://files.example.org@evil.example.com/")
    assert not upstream.allows("not a url")


async def test_refuses_other_hosts_before_any_connection(
    client: Upstream, other: FakeUpstream
) -> None:
    other.add("/secret", b"internal")
    with pytest.raises(errors.HostNotAllowed):
        await client.fetch(other.url("/secret"))
    with pytest.raises(errors.HostNotAllowed):
        await client.head(other.url("/secret"))
    with pytest.raises(errors.HostNotAllowed):
        async with client.stream(other.url("/secret")):
            pass
    with pytest.raises(errors.HostNotAllowed):
        await client.forward("POST", other.url("/secret"), body=b"{}")
    assert other.requests == []


async def test_refuses_redirect_to_another_host(
    client: Upstream, fake: FakeUpstream, other: FakeUpstream
) -> None:
    other.add("/target", b"elsewhere")
    fake.redirect("/moved", other.url("/target"))
    with pytest.raises(errors.HostNotAllowed):
        await client.fetch(fake.url("/moved"))
    with pytest.raises(errors.HostNotAllowed):
        async with client.stream(fake.url("/moved")):
            pass
    assert fake.count("/moved") == 2
    assert other.requests == []


async def test_follows_redirects_on_the_same_host_up_to_a_limit(
    client: Upstream, fake: FakeUpstream
) -> None:
    fake.add("/final", b"here", etag='"f"')
    fake.redirect("/a", "/b", status=301)
    fake.redirect("/b", fake.url("/final"), status=307)
    document = await client.fetch(fake.url("/a"))
    assert document.body == b"here"
    assert document.url == fake.url("/final")
    assert document.etag == '"f"'

    for hop in range(7):
        fake.redirect(f"/loop{hop}", f"/loop{hop + 1}")
    with pytest.raises(errors.UpstreamUnavailable, match="redirected more than 5 times"):
        await client.fetch(fake.url("/loop0"))
    assert fake.count("/loop6") == 0


# single-flight --------------------------------------------------------------------------


async def test_concurrent_fetches_share_one_request(
    client: Upstream, fake: FakeUpstream, metrics: Metrics
) -> None:
    body = b"x" * 200_000
    fake.add("/doc", body, content_type="application/json")
    fake.hold("/doc")
    tasks = [asyncio.create_task(client.fetch(fake.url("/doc"))) for _ in range(50)]
    await fake.wait_for("/doc")
    fake.release("/doc")
    documents = await asyncio.gather(*tasks)
    assert fake.count("/doc") == 1
    assert all(document.body == body for document in documents)
    assert sample(metrics, "mirror_singleflight_joins_total", kind="document") == 49

    # The map is emptied when the request is done: a later fetch asks again.
    await client.fetch(fake.url("/doc"))
    assert fake.count("/doc") == 2


async def test_different_validators_are_different_flights(
    client: Upstream, fake: FakeUpstream
) -> None:
    fake.add("/doc", b"v1", etag='"1"')
    fake.hold("/doc")
    plain = asyncio.create_task(client.fetch(fake.url("/doc")))
    conditional = asyncio.create_task(client.fetch(fake.url("/doc"), etag='"1"'))
    await fake.wait_for("/doc", 2)
    fake.release("/doc")
    assert (await plain).status == 200
    assert (await conditional).status == 304


async def test_a_waiter_that_leaves_does_not_cancel_the_shared_request(
    client: Upstream, fake: FakeUpstream
) -> None:
    fake.add("/doc", b"body")
    fake.hold("/doc")
    leaver = asyncio.create_task(client.fetch(fake.url("/doc")))
    stayer = asyncio.create_task(client.fetch(fake.url("/doc")))
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
    document = await client.fetch(fake.url("/doc"))
    assert document.body == b"ok"
    assert fake.count("/doc") == 2


async def test_retries_429(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/doc", b"ok")
    fake.fail("/doc", 429, times=2, headers={"Retry-After": "0"})
    assert (await client.fetch(fake.url("/doc"))).body == b"ok"
    assert fake.count("/doc") == 3


async def test_gives_up_after_the_configured_retries(
    client: Upstream, fake: FakeUpstream, metrics: Metrics
) -> None:
    fake.add("/doc", b"ok")
    fake.fail("/doc", 502)
    with pytest.raises(errors.UpstreamUnavailable, match="HTTP 502") as caught:
        await client.fetch(fake.url("/doc"))
    assert caught.value.status == 502
    assert fake.count("/doc") == CONFIG.retries + 1
    assert sample(
        metrics, "mirror_upstream_requests_total", host=fake.host, outcome="http-error"
    ) == (CONFIG.retries + 1)


@pytest.mark.parametrize("status", [404, 410])
async def test_not_found_is_not_retried(client: Upstream, fake: FakeUpstream, status: int) -> None:
    fake.fail("/gone", status)
    with pytest.raises(errors.UpstreamNotFound) as caught:
        await client.fetch(fake.url("/gone?token=s3cret"))
    assert "/gone" in caught.value.message
    assert "s3cret" not in caught.value.message
    assert fake.count("/gone") == 1


@pytest.mark.parametrize("status", [400, 401, 403, 500])
async def test_other_client_and_server_errors_are_unavailable_without_retry(
    client: Upstream, fake: FakeUpstream, status: int
) -> None:
    fake.fail("/doc", status)
    with pytest.raises(errors.UpstreamUnavailable, match=f"HTTP {status}"):
        await client.fetch(fake.url("/doc"))
    assert fake.count("/doc") == 1


async def test_connection_refused_is_unavailable(fake: FakeUpstream) -> None:
    # A port nobody listens on: bind, note it, close.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    upstream = Upstream(CONFIG, allowed_hosts=[f"127.0.0.1:{port}"])
    await upstream.start()
    try:
        with pytest.raises(errors.UpstreamUnavailable, match="could not fetch"):
            await upstream.fetch(f"http://127.0.0.1:{port}/doc")
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
    upstream = Upstream(config, allowed_hosts=[fake.host])
    await upstream.start()
    try:
        with pytest.raises(errors.UpstreamUnavailable, match="timed out") as caught:
            await upstream.fetch(fake.url("/slow"))
    finally:
        await upstream.close()
    assert caught.value.status == 504
    assert fake.count("/slow") == 2


async def test_truncated_document_is_unavailable(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/doc", b"y" * 100_000)
    fake.truncate("/doc")
    with pytest.raises(errors.UpstreamUnavailable):
        await client.fetch(fake.url("/doc"))


async def test_max_bytes(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/big", b"z" * 10_000)
    with pytest.raises(errors.BadUpstreamDocument, match="larger than"):
        await client.fetch(fake.url("/big"), max_bytes=9_999)
    assert (await client.fetch(fake.url("/big"), max_bytes=10_000)).body == b"z" * 10_000


async def test_gzip_bomb_stops_at_max_bytes(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/bomb", gzip.compress(b"\0" * 50_000_000), headers={"Content-Encoding": "gzip"})
    with pytest.raises(errors.BadUpstreamDocument, match="larger than"):
        await client.fetch(fake.url("/bomb"), max_bytes=1_000_000)


# conditional GET and encoding -----------------------------------------------------------


async def test_conditional_get_returns_304(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/doc", b"v1", etag='"abc"', last_modified="Tue, 01 Apr 2025 10:00:00 GMT")
    first = await client.fetch(fake.url("/doc"))
    assert first.status == 200
    assert first.etag == '"abc"'
    assert first.last_modified == "Tue, 01 Apr 2025 10:00:00 GMT"

    by_etag = await client.fetch(fake.url("/doc"), etag=first.etag)
    assert by_etag.status == 304
    assert by_etag.body == b""
    assert fake.last("/doc").headers["If-None-Match"] == '"abc"'

    by_date = await client.fetch(fake.url("/doc"), last_modified=first.last_modified)
    assert by_date.status == 304
    assert fake.last("/doc").headers["If-Modified-Since"] == first.last_modified

    fake.add("/doc", b"v2", etag='"def"')
    changed = await client.fetch(fake.url("/doc"), etag=first.etag)
    assert (changed.status, changed.body, changed.etag) == (200, b"v2", '"def"')


async def test_documents_are_decoded_and_accept_is_sent(
    client: Upstream, fake: FakeUpstream
) -> None:
    body = b'{"name": "left-pad"}' * 1000
    fake.add("/doc", body, content_type="application/json", compress=True)
    document = await client.fetch(fake.url("/doc"), accept="application/vnd.npm.install-v1+json")
    assert document.body == body
    assert "Content-Encoding" not in document.headers
    assert document.headers["Content-Type"] == "application/json"
    sent = fake.last("/doc").headers
    assert sent["Accept"] == "application/vnd.npm.install-v1+json"
    assert "gzip" in sent["Accept-Encoding"]
    assert sent["User-Agent"] == CONFIG.user_agent


async def test_head(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/a.pom", b"<project/>", last_modified="Tue, 01 Apr 2025 10:00:00 GMT")
    document = await client.head(fake.url("/a.pom"))
    assert (document.status, document.body) == (200, b"")
    assert document.last_modified == "Tue, 01 Apr 2025 10:00:00 GMT"
    assert fake.last("/a.pom").method == "HEAD"
    with pytest.raises(errors.UpstreamNotFound):
        await client.head(fake.url("/missing.pom"))


# stream ---------------------------------------------------------------------------------


async def test_stream_yields_raw_bytes_in_bounded_chunks(
    client: Upstream, fake: FakeUpstream, metrics: Metrics
) -> None:
    tarball = gzip.compress(bytes(range(256)) * 4000)
    # Misconfigured servers label .tgz as gzip-encoded: the artifact must stay as published.
    fake.add("/a.tgz", tarball, headers={"Content-Encoding": "gzip"}, compress=True)
    chunks: list[bytes] = []
    async with client.stream(fake.url("/a.tgz")) as stream:
        assert stream.status == 200
        assert stream.content_length == len(tarball)
        async for chunk in stream.iter_chunks():
            chunks.append(chunk)
    assert b"".join(chunks) == tarball
    assert max(len(chunk) for chunk in chunks) <= 64 * 1024
    assert fake.last("/a.tgz").headers["Accept-Encoding"] == "identity"
    assert sample(metrics, "mirror_upstream_bytes_total", host=fake.host) == len(tarball)


async def test_stream_maps_errors_before_yielding(client: Upstream, fake: FakeUpstream) -> None:
    with pytest.raises(errors.UpstreamNotFound):
        async with client.stream(fake.url("/missing.tgz")):
            pytest.fail("must not enter")
    fake.add("/a.tgz", b"tar")
    fake.fail("/a.tgz", 503, times=1)
    async with client.stream(fake.url("/a.tgz")) as stream:
        assert [chunk async for chunk in stream.iter_chunks()] == [b"tar"]
    assert fake.count("/a.tgz") == 2
    fake.fail("/a.tgz", 500)
    with pytest.raises(errors.UpstreamUnavailable, match="HTTP 500"):
        async with client.stream(fake.url("/a.tgz")):
            pytest.fail("must not enter")


async def test_stream_truncated_body_raises_from_the_iterator(
    client: Upstream, fake: FakeUpstream
) -> None:
    body = b"t" * 300_000
    fake.add("/a.tgz", body)
    fake.truncate("/a.tgz")
    chunks: list[bytes] = []
    async with client.stream(fake.url("/a.tgz")) as stream:
        assert stream.content_length == len(body)
        with pytest.raises(errors.UpstreamUnavailable):
            await collect(stream, chunks)
    assert 0 < len(b"".join(chunks)) < len(body)


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
    )
    assert (document.status, document.body) == (200, b'{"ok": true}')
    seen = fake.last("/-/npm/v1/security/audits/quick")
    assert (seen.method, seen.body) == ("POST", b'{"requires": {}}')
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Host"] == fake.host

    fake.fail("/-/npm/v1/security/audits/quick", 503)
    failed = await client.forward("POST", fake.url("/-/npm/v1/security/audits/quick"))
    assert failed.status == 503
    assert fake.count("/-/npm/v1/security/audits/quick", method="POST") == 2

    missing = await client.forward("GET", fake.url("/nothing"))
    assert missing.status == 404


async def test_forward_retries_idempotent_methods(client: Upstream, fake: FakeUpstream) -> None:
    fake.add("/x", b"ok")
    fake.fail("/x", 503, times=1)
    assert (await client.forward("GET", fake.url("/x"))).status == 200
    assert fake.count("/x") == 2


async def test_not_started_is_unavailable(fake: FakeUpstream) -> None:
    upstream = Upstream(CONFIG, allowed_hosts=[fake.host])
    with pytest.raises(errors.UpstreamUnavailable, match="not started"):
        await upstream.fetch(fake.url("/doc"))
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
        allowed_hosts=[fake.host, other.host],
        metrics=metrics,
        credentials={fake.host: "Bearer s3cret"},
    )
    await upstream.start()
    try:
        await upstream.fetch(fake.url("/doc"))
        await upstream.head(fake.url("/doc"))
        async with upstream.stream(fake.url("/file")) as response:
            assert b"".join([chunk async for chunk in response.iter_chunks()]) == b"bytes"
        await upstream.fetch(fake.url("/elsewhere"))
    finally:
        await upstream.close()
    sent = [request.headers.get("Authorization") for request in fake.requests]
    assert sent == ["Bearer s3cret"] * 4
    assert [request.headers.get("Authorization") for request in other.requests] == [None]
