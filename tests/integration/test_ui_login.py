"""The dashboard's login, session and page plumbing through the whole app: the login form,
the signed HttpOnly SameSite=Strict cookie, CSRF on every change, the security headers on
every answer, and the explain page as the first page behind the login."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from functools import partial

import pytest
from pytest_aiohttp import AiohttpServer
from yarl import URL

from mirror.clock import FixedClock
from mirror.ui.render import CONTENT_SECURITY_POLICY
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import NOW, OLD, Client, MakeClient
from tests.integration.dashboard import (
    ADMIN,
    DASHBOARD_TOKENS,
    READER,
    csrf_of,
    form_post,
    log_in,
    page,
)


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(make_mirror, MIRROR_NPM_UPSTREAM=registry.url, **DASHBOARD_TOKENS)


async def test_pages_need_a_login_and_come_back_after_it(client: Client) -> None:
    response = await client.get("/ui/explain?q=npm+left-pad%401.0.0", allow_redirects=False)
    assert response.status == 303
    login_url = response.headers["Location"]
    assert URL(login_url).path == "/ui/login"
    assert URL(login_url).query["next"] == "/ui/explain?q=npm+left-pad@1.0.0"
    form = await page(client, login_url)
    assert 'value="/ui/explain?q=npm+left-pad@1.0.0"' in form
    response = await client.post(
        "/ui/login",
        data={"token": ADMIN, "next": "/ui/explain?q=npm+left-pad%401.0.0"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == "/ui/explain?q=npm+left-pad%401.0.0"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/ui/" in cookie
    assert ADMIN not in cookie  # the cookie names the token, never holds it
    html = await page(client, "/ui/explain?q=npm+left-pad%401.0.0")
    assert "allowed" in html
    assert "left-pad" in html
    assert "alice (admin)" in html


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/ui/", "/ui/\\evil", "/api/v1/blocks"]
)
async def test_the_login_never_sends_anyone_off_the_dashboard(client: Client, target: str) -> None:
    response = await client.post(
        "/ui/login", data={"token": ADMIN, "next": target}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"] == "/ui/"


async def test_a_wrong_token_is_refused_and_logged_without_it(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mirror.ui")
    wrong = "not-the-token-0123456789"
    response = await client.post("/ui/login", data={"token": wrong}, allow_redirects=False)
    assert response.status == 403
    assert "not an admin or read-only admin token" in await response.text()
    assert "Set-Cookie" not in response.headers
    assert "dashboard login refused" in caplog.text
    assert wrong not in caplog.text
    await page(client, "/ui/explain", status=303)


async def test_every_answer_carries_the_security_headers(client: Client) -> None:
    await log_in(client)
    for path, status in [
        ("/ui/login", 303),  # logged in already: on to the overview
        ("/ui/explain", 200),
        ("/ui/no-such-page", 404),
        ("/ui/static/ui.css", 200),
    ]:
        response = await client.get(path, allow_redirects=False)
        assert response.status == status, path
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    missing = await client.get("/ui/no-such-page")
    assert missing.content_type == "text/html"  # the dashboard's errors are pages, not JSON
    assert (await client.get("/ui", allow_redirects=False)).headers["Location"] == "/ui/"


async def test_no_page_loads_anything_from_another_origin(client: Client) -> None:
    await log_in(client)
    html = await page(client, "/ui/explain")
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith(("/ui/", "#")), url
    assert "<script>" not in html
    assert "style=" not in html


async def test_logging_out_needs_the_csrf_token_and_ends_the_session(client: Client) -> None:
    await log_in(client)
    forged = await client.post("/ui/logout", data={}, allow_redirects=False)
    assert forged.status == 403
    assert "CSRF token" in await forged.text()
    await page(client, "/ui/explain")  # still logged in
    status, _, location = await form_post(client, "/ui/logout", {}, csrf_from="/ui/explain")
    assert (status, location) == (303, "/ui/login")
    await page(client, "/ui/explain", status=303)


async def test_a_cross_site_post_is_refused_even_with_a_token(client: Client) -> None:
    await log_in(client)
    token = csrf_of(await page(client, "/ui/explain"))
    response = await client.post(
        "/ui/logout",
        data={"csrf": token},
        headers={"Sec-Fetch-Site": "cross-site"},
        allow_redirects=False,
    )
    assert response.status == 403


async def test_a_csrf_token_of_another_session_is_refused(make_mirror: MakeClient) -> None:
    first, second = await make_mirror(), await make_mirror()
    await log_in(first)
    await log_in(second)
    token = csrf_of(await page(first, "/ui/explain"))
    response = await second.post("/ui/logout", data={"csrf": token}, allow_redirects=False)
    assert response.status == 403


async def test_a_session_ends_when_it_expires_or_its_token_changes(
    make_mirror: MakeClient, clock: FixedClock
) -> None:
    client = await make_mirror()
    await log_in(client)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/ui/"))["mirror_ui"]
    await page(client, "/ui/explain")
    # Another worker with the token changed: the same cookie is no login there.
    changed = await make_mirror(MIRROR_ADMIN_TOKENS="alice:another-token-0123456789")
    changed.session.cookie_jar.update_cookies({"mirror_ui": cookie.value})
    await page(changed, "/ui/explain", status=303)
    clock.advance(timedelta(hours=8, seconds=1))
    await page(client, "/ui/explain", status=303)


async def test_a_forged_cookie_is_no_login(client: Client) -> None:
    await log_in(client)
    jar = client.session.cookie_jar
    value = jar.filter_cookies(client.make_url("/ui/"))["mirror_ui"].value
    body, signature = value.split(".")
    for forged in [f"{body}.{signature[:-2]}AA", f"{body}x.{signature}", "a.b", "x" * 5000]:
        jar.clear()
        jar.update_cookies({"mirror_ui": forged})
        await page(client, "/ui/explain", status=303)


async def test_a_read_only_login_reads_pages(client: Client) -> None:
    await log_in(client, READER)
    html = await page(client, "/ui/explain?q=npm+left-pad%401.4.0")
    assert "auditor (read-only)" in html
    assert "quarantined" in html
    assert "Review this version" in html


async def test_explain_says_how_to_write_a_query_and_escapes_it(client: Client) -> None:
    await log_in(client)
    html = await page(client, "/ui/explain?q=npm+left-pad", status=400)
    assert "name@version" in html
    hostile = "npm <script>alert(1)</script>@1.0.0"
    response = await client.get("/ui/explain", params={"q": hostile})
    html = await response.text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    bidi = await client.get("/ui/explain", params={"q": "pypi evil\u202e==1.0"})
    assert bidi.status == 400
    assert "\u202e" not in await bidi.text()


async def test_without_admin_tokens_the_login_page_says_what_to_set(
    make_mirror: MakeClient,
) -> None:
    bare = await make_mirror(MIRROR_ADMIN_TOKENS="", MIRROR_ADMIN_READ_TOKENS="")
    html = await page(bare, "/ui/login")
    assert "MIRROR_ADMIN_TOKENS" in html


async def test_the_dashboard_can_be_switched_off(make_mirror: MakeClient) -> None:
    off = await make_mirror(MIRROR_UI_ENABLED="false")
    response = await off.get("/ui/login")
    assert response.status == 404
