"""The dashboard's login hardened, through the whole app: a forged cookie of any shape is no
login (never a 500), the login form refuses other sites and throttles a client that keeps
failing, the cookie is Secure behind a trusted TLS-terminating proxy, and the page after
the login never leaves /ui/."""

from __future__ import annotations

import base64
import json
import logging
from datetime import timedelta
from functools import partial

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.ui.session import MAX_FAILED_LOGINS
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import OLD, Client, MakeClient
from tests.integration.dashboard import ADMIN, DASHBOARD_TOKENS, READER, log_in, page

WRONG = "not-the-token-0123456789"


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(make_mirror, MIRROR_NPM_UPSTREAM=registry.url, **DASHBOARD_TOKENS)


def forged_body() -> str:
    payload = {"n": "alice", "r": "admin", "e": 9999999999, "s": "x"}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()


async def test_a_forged_cookie_with_a_non_ascii_signature_is_no_login(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    for signature in ["\u00e9\u00e9", "\u00ff" * 43, "AAAA\u00e9"]:
        response = await client.get(
            "/ui/",
            headers={"Cookie": f"mirror_ui={forged_body()}.{signature}"},
            allow_redirects=False,
        )
        assert response.status == 303, await response.text()
        assert response.headers["Location"].startswith("/ui/login")
    assert "unhandled" not in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_cross_site_login_is_refused(client: Client) -> None:
    for site in ("cross-site", "same-site"):
        response = await client.post(
            "/ui/login",
            data={"token": ADMIN},
            headers={"Sec-Fetch-Site": site},
            allow_redirects=False,
        )
        assert response.status == 403, site
        assert "Set-Cookie" not in response.headers
    for site in ("same-origin", "none"):
        response = await client.post(
            "/ui/login",
            data={"token": READER},
            headers={"Sec-Fetch-Site": site},
            allow_redirects=False,
        )
        assert response.status == 303, site


async def wrong_login(client: Client, **headers: str) -> int:
    response = await client.post(
        "/ui/login", data={"token": WRONG}, headers=headers, allow_redirects=False
    )
    return response.status


async def test_a_client_that_keeps_failing_is_throttled_for_the_rest_of_the_minute(
    make_mirror: MakeClient, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mirror.ui")
    client = await make_mirror(MIRROR_TRUSTED_PROXIES="127.0.0.1/32")
    alice = {"X-Forwarded-For": "192.0.2.7"}
    for _ in range(MAX_FAILED_LOGINS):
        assert await wrong_login(client, **alice) == 403
    # Throttled: even the right token is not checked now.
    response = await client.post(
        "/ui/login", data={"token": ADMIN}, headers=alice, allow_redirects=False
    )
    assert response.status == 429
    assert "Set-Cookie" not in response.headers
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "Too many failed logins" in await response.text()
    assert await wrong_login(client, **alice) == 429
    throttled = [line for line in caplog.messages if "throttled" in line]
    assert len(throttled) == 1, caplog.messages  # once per client and window
    assert "192.0.2.7" in throttled[0]
    assert WRONG not in caplog.text
    # Another client is not held back.
    other = {"X-Forwarded-For": "192.0.2.8"}
    response = await client.post(
        "/ui/login", data={"token": ADMIN}, headers=other, allow_redirects=False
    )
    assert response.status == 303
    # The next minute, the first client may try again.
    clock.advance(timedelta(seconds=61))
    response = await client.post(
        "/ui/login", data={"token": ADMIN}, headers=alice, allow_redirects=False
    )
    assert response.status == 303


async def test_the_cookie_is_secure_behind_a_trusted_tls_proxy(make_mirror: MakeClient) -> None:
    proxied = await make_mirror(MIRROR_TRUSTED_PROXIES="127.0.0.1/32")
    response = await proxied.post(
        "/ui/login",
        data={"token": ADMIN},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert "Secure" in response.headers["Set-Cookie"]
    response = await proxied.post("/ui/login", data={"token": ADMIN}, allow_redirects=False)
    assert "Secure" not in response.headers["Set-Cookie"]  # plain http, as the proxy says
    # From a client that is not a trusted proxy, the header proves nothing (and a Secure
    # cookie would not come back over plain http).
    direct = await make_mirror()
    response = await direct.post(
        "/ui/login",
        data={"token": ADMIN},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert "Secure" not in response.headers["Set-Cookie"]


@pytest.mark.parametrize(
    "target",
    [
        "/ui/../../api/v1/rules",
        "/ui/../api/v1/blocks",
        "/ui/%2e%2e/api/v1/rules",
        "/ui/.%2E/api/v1/rules",
        "/ui/%252e%252e/api/v1/rules",
        "/ui/queue/../../npm/left-pad",
        "/ui/./../login",
    ],
)
async def test_the_login_never_climbs_out_of_the_dashboard(client: Client, target: str) -> None:
    response = await client.post(
        "/ui/login", data={"token": ADMIN, "next": target}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"] == "/ui/"


async def test_a_dashboard_target_is_kept(client: Client) -> None:
    response = await client.post(
        "/ui/login", data={"token": ADMIN, "next": "/ui/queue?ecosystem=npm"}, allow_redirects=False
    )
    assert response.headers["Location"] == "/ui/queue?ecosystem=npm"
    await log_in(client)
    await page(client, "/ui/queue?ecosystem=npm")
