"""The quarantine queue through the whole app: a client held back by quarantine (a packument
or project page withholding a version, a pinned download refused) shows up on `/ui/queue`
with when the version becomes available and who asked; an admin exempts it from there (the
version is then served and the row says so); a read-only login cannot; hostile names and
reasons stay text."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from functools import partial

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.holdrecorder import HoldRecorder
from mirror.services import SERVICES
from tests.conftest import free_port
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, Client, MakeClient
from tests.integration.dashboard import (
    DASHBOARD_TOKENS,
    READER,
    csrf_of,
    form_post,
    log_in,
    page,
)

FRESH = NOW - timedelta(hours=5)  # inside the default 3-day quarantine
AVAILABLE = "2026-11-25 05:00 UTC"  # FRESH + 3 days, as the page writes it
READ_TOKEN = "ci-read-token-0123456789"
HOSTILE = "<b>evil</b>"


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    registry.add_version("left-pad", "1.4.0", published=FRESH)
    registry.add_version("brand-new", "0.1.0", published=FRESH)
    registry.add_version("@evil/pkg", "1.0.0", published=OLD)
    registry.add_version("@evil/pkg", "2.0.0-<i>x</i>", published=FRESH)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
async def index(aiohttp_server: AiohttpServer) -> FakePypiIndex:
    index = FakePypiIndex()
    index.add_wheel("demo", "1.0", uploaded=OLD)
    index.add_wheel("demo", "2.0", uploaded=FRESH)
    await index.start(aiohttp_server)
    return index


@pytest.fixture
def make_mirror(
    make_mirror: MakeClient, registry: FakeNpmRegistry, index: FakePypiIndex
) -> MakeClient:
    return partial(
        make_mirror,
        MIRROR_NPM_UPSTREAM=registry.url,
        MIRROR_PYPI_UPSTREAM=index.url,
        MIRROR_ACCESS_TOKENS=f"ci:{READ_TOKEN}",
        **DASHBOARD_TOKENS,
    )


async def flushed(client: Client) -> None:
    await client.app[SERVICES].holds.flush()


def row_of(text: str, package: str) -> str:
    """The table row naming `package` (escaped as the page writes it)."""
    for row in re.findall(r"<tr>.*?</tr>", text, flags=re.S):
        if f"<td>{html.escape(package)}</td>" in row:
            return row
    raise AssertionError(f"no row for {package!r} in the queue")


async def test_a_held_packument_request_is_queued(client: Client) -> None:
    response = await client.get("/npm/left-pad", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert response.status == 200
    assert "1.4.0" not in (await response.json())["versions"]
    await flushed(client)
    await log_in(client)
    text = await page(client, "/ui/queue")
    row = row_of(text, "left-pad")
    assert "<td>npm</td>" in row
    assert "<td>1.4.0</td>" in row
    assert "2026-11-22 05:00 UTC" in row  # published
    assert AVAILABLE in row  # available at
    assert '<td class="num">1<br>' in row  # one request held
    assert "127.0.0.1 (token ci)" in row
    assert "verdict-held" in row
    assert 'href="/ui/review?ecosystem=npm&amp;package=left-pad&amp;version=1.4.0"' in row
    assert 'href="/ui/explain?q=npm+left-pad%401.4.0"' in row
    assert 'action="/ui/queue/exempt"' in row


async def test_a_refused_pinned_download_is_counted(client: Client) -> None:
    for _ in range(2):
        response = await client.get("/npm/left-pad/-/left-pad-1.4.0.tgz")
        assert response.status == 403
    assert (await client.get("/npm/left-pad/1.4.0")).status == 404  # a pinned manifest
    await client.get("/npm/left-pad")
    await flushed(client)
    await log_in(client)
    row = row_of(await page(client, "/ui/queue?ecosystem=npm"), "left-pad")
    assert '<td class="num">4<br>' in row
    assert "127.0.0.1" in row


async def test_a_failing_note_never_changes_the_answer(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the recorder broke")

    recorder: HoldRecorder = client.app[SERVICES].holds
    monkeypatch.setattr(recorder, "note", broken)
    for _ in range(2):
        response = await client.get("/npm/left-pad")
        assert response.status == 200
        assert "1.0.0" in (await response.json())["versions"]
        refused = await client.get("/npm/left-pad/-/left-pad-1.4.0.tgz")
        assert refused.status == 403
        assert (await refused.json())["reason"] != "internal"
    warnings = [
        record
        for record in caplog.records
        if record.levelname == "WARNING" and "quarantine queue" in record.getMessage()
    ]
    assert len(warnings) == 1  # once, not on every request


async def test_an_unreachable_state_shows_a_notice(make_mirror: MakeClient) -> None:
    client = await make_mirror(MIRROR_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    await log_in(client)
    response = await client.get("/ui/queue?ecosystem=npm")
    assert response.status == 503
    assert response.headers["Retry-After"]
    text = await response.text()
    assert 'role="alert">State unavailable:' in text
    assert "cannot be read until it answers" in text
    assert '<option value="npm" selected>' in text  # the page itself, its filter kept
    assert "No version is held back" not in text


async def test_a_package_with_nothing_visible_yet_is_queued(client: Client) -> None:
    response = await client.get("/npm/brand-new")
    assert response.status == 404  # every version is held
    await flushed(client)
    await log_in(client)
    row = row_of(await page(client, "/ui/queue"), "brand-new")
    assert "<td>0.1.0</td>" in row
    assert AVAILABLE in row


async def test_pypi_pages_are_queued_and_filtered_by_ecosystem(client: Client) -> None:
    assert (await client.get("/pypi/simple/demo/")).status == 200
    assert (await client.get("/pypi/pypi/demo/json")).status == 200
    assert (await client.get("/pypi/pypi/demo/2.0/json")).status == 403
    await client.get("/npm/left-pad")
    await flushed(client)
    await log_in(client)
    everything = await page(client, "/ui/queue")
    row = row_of(everything, "demo")
    assert "<td>pypi</td>" in row
    assert "<td>2.0</td>" in row
    assert '<td class="num">3<br>' in row  # the page, the JSON API, the refused release
    assert 'href="/ui/explain?q=pypi+demo%3D%3D2.0"' in row
    only_pypi = await page(client, "/ui/queue?ecosystem=pypi")
    assert "<td>demo</td>" in only_pypi
    assert "<td>left-pad</td>" not in only_pypi
    await page(client, "/ui/queue?ecosystem=cobol", status=400)


async def test_an_admin_exempts_a_version_from_the_queue(client: Client) -> None:
    assert (await client.get("/npm/left-pad/-/left-pad-1.4.0.tgz")).status == 403
    await flushed(client)
    await log_in(client)
    fields = {"ecosystem": "npm", "package": "left-pad", "version": "1.4.0", "reason": ""}
    status, text, _ = await form_post(client, "/ui/queue/exempt", fields, csrf_from="/ui/queue")
    assert status == 400
    assert "reason" in text
    fields["reason"] = "needed for the hotfix"
    status, _, location = await form_post(client, "/ui/queue/exempt", fields, csrf_from="/ui/queue")
    assert (status, location) == (303, "/ui/queue")
    assert (await client.get("/npm/left-pad/-/left-pad-1.4.0.tgz")).status == 200
    row = row_of(await page(client, "/ui/queue"), "left-pad")
    assert "verdict-exempted" in row
    assert 'action="/ui/queue/exempt"' not in row  # nothing left to exempt
    audit = await client.app[SERVICES].state.audit_log(limit=1)
    assert audit[0].action == "exemption.create"
    assert audit[0].actor == "alice"
    assert audit[0].after is not None
    assert audit[0].after["versions"] == "===1.4.0"  # exactly this version


async def test_an_exemption_covers_exactly_the_version(client: Client) -> None:
    await log_in(client)
    for package, version in (("left-*", "1.4.0"), ("left-pad", ">=1.0.0")):
        fields = {"ecosystem": "npm", "package": package, "version": version, "reason": "r"}
        status, _, _ = await form_post(client, "/ui/queue/exempt", fields, csrf_from="/ui/queue")
        assert status == 400
    assert await client.app[SERVICES].state.list_rules("exemption") == []


async def test_a_read_only_login_cannot_exempt(client: Client) -> None:
    await client.get("/npm/left-pad")
    await flushed(client)
    await log_in(client, READER)
    text = await page(client, "/ui/queue")
    assert "<td>left-pad</td>" in text
    assert "/ui/queue/exempt" not in text
    fields = {"ecosystem": "npm", "package": "left-pad", "version": "1.4.0", "reason": "mine"}
    response = await client.post(
        "/ui/queue/exempt", data={**fields, "csrf": csrf_of(text)}, allow_redirects=False
    )
    assert response.status == 403
    assert await client.app[SERVICES].state.list_rules("exemption") == []


async def test_hostile_names_and_reasons_are_text(client: Client) -> None:
    response = await client.get("/npm/@evil%2fpkg")
    assert response.status == 200
    await client.get("/npm/left-pad")
    await flushed(client)
    await log_in(client)
    text = await page(client, "/ui/queue")
    assert "<i>x</i>" not in text
    assert "<td>2.0.0-&lt;i&gt;x&lt;/i&gt;</td>" in text
    hostile_version = {"ecosystem": "npm", "package": "@evil/pkg", "version": "2.0.0-<i>x</i>"}
    status, body, _ = await form_post(
        client, "/ui/queue/exempt", {**hostile_version, "reason": HOSTILE}, csrf_from="/ui/queue"
    )
    assert status == 400  # not one exact version npm knows how to write
    assert "<i>" not in body
    assert HOSTILE not in body
    fields = {"ecosystem": "npm", "package": "left-pad", "version": "1.4.0", "reason": HOSTILE}
    status, _, _ = await form_post(client, "/ui/queue/exempt", fields, csrf_from="/ui/queue")
    assert status == 303
    [rule] = await client.app[SERVICES].state.list_rules("exemption")
    assert rule.reason == HOSTILE  # stored as given
    text = await page(client, "/ui/queue")
    assert HOSTILE not in text
    assert "verdict-exempted" in row_of(text, "left-pad")


async def test_the_queue_needs_a_login(client: Client) -> None:
    response = await client.get("/ui/queue", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/ui/login?")
    response = await client.post(
        "/ui/queue/exempt",
        data={"ecosystem": "npm", "package": "left-pad", "version": "1.4.0", "reason": "x"},
        allow_redirects=False,
    )
    assert response.status == 303  # to the login page, nothing changed
    assert await client.app[SERVICES].state.list_rules("exemption") == []


async def test_an_empty_queue_says_so(client: Client) -> None:
    await log_in(client)
    assert "No version is held back" in await page(client, "/ui/queue")
