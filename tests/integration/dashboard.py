"""Helpers of the dashboard's handler tests: log in through the real login form and read the
CSRF token a page's forms carry, as a browser would."""

from __future__ import annotations

import re
from typing import Final

from tests.integration.conftest import Client

ADMIN: Final = "alice-token-0123456789"
READER: Final = "auditor-token-0123456789"
DASHBOARD_TOKENS: Final = {
    "MIRROR_ADMIN_TOKENS": f"alice:{ADMIN}",
    "MIRROR_ADMIN_READ_TOKENS": f"auditor:{READER}",
}
_CSRF: Final = re.compile(r'name="csrf" value="([^"]+)"')


async def log_in(client: Client, token: str = ADMIN) -> None:
    response = await client.post("/ui/login", data={"token": token}, allow_redirects=False)
    assert response.status == 303, await response.text()


async def page(client: Client, path: str, status: int = 200) -> str:
    response = await client.get(path, allow_redirects=False)
    text = await response.text()
    assert response.status == status, text
    return text


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


async def form_post(
    client: Client, path: str, fields: dict[str, str], *, csrf_from: str = "/ui/"
) -> tuple[int, str, str]:
    """Post `fields` with the CSRF token of the page at `csrf_from`: (status, body,
    Location)."""
    token = csrf_of(await page(client, csrf_from))
    response = await client.post(path, data={**fields, "csrf": token}, allow_redirects=False)
    return response.status, await response.text(), response.headers.get("Location", "")
