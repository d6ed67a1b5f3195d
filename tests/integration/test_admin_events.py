"""`GET /api/v1/events` through the whole app, on each state backend (SQLite, a real Redis):
takedown events recorded with `state.add_event` are listed newest first, filtered by
ecosystem, package (compared the ecosystem's way) and time, paged by an opaque cursor, and
guarded as impact reports are (they name client addresses)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from mirror.model import ImpactRow, TakedownKind
from mirror.services import SERVICES
from mirror.takedowns import Takedown, event_of
from tests.integration.conftest import NOW, Client, MakeClient, on_backend

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"
PATH = "/api/v1/events"


def auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(params=["local", "redis"])
def make_mirror(request: pytest.FixtureRequest, make_mirror: MakeClient) -> MakeClient:
    """Mirrors with an admin and a read-only token, on the SQLite state, then on Redis."""
    return on_backend(
        request,
        make_mirror,
        MIRROR_ADMIN_TOKENS=f"ops:{ADMIN}",
        MIRROR_ADMIN_READ_TOKENS=f"auditor:{READER}",
    )


async def record(
    client: Client,
    ecosystem: str,
    package: str,
    version: str,
    detected_at: datetime,
    *,
    kind: TakedownKind = "removed",
    filename: str = "",
    reason: str = "",
    clients: tuple[str, ...] = ("10.0.0.7",),
) -> None:
    rows = tuple(
        ImpactRow(
            client=address,
            token="ci-bot",
            ci="github-actions",
            count=3,
            first_at=detected_at - timedelta(days=1),
            last_at=detected_at - timedelta(hours=1),
        )
        for address in clients
    )
    found = Takedown(version=version, filename=filename, kind=kind, reason=reason)
    event = event_of(
        ecosystem, package, found, detected_at, rows, clients=len(rows), downloads=3 * len(rows)
    )
    assert await client.app[SERVICES].state.add_event(event)


async def listed(client: Client, status: int = 200, **params: str) -> Any:
    response = await client.get(PATH, params=params, headers=auth())
    assert response.status == status, await response.text()
    return await response.json()


def shown(answer: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["ecosystem"], e["package"], e["version"]) for e in answer["events"]]


async def test_events_need_a_token_unless_impact_is_opened(make_mirror: MakeClient) -> None:
    closed = await make_mirror()
    await record(closed, "npm", "left-pad", "1.4.0", NOW - timedelta(hours=1))
    assert (await closed.get(PATH)).status == 401
    assert (await closed.get(PATH, headers=auth("x" * 24))).status == 403
    answer = await (await closed.get(PATH, headers=auth(READER))).json()  # read-only: enough
    assert shown(answer) == [("npm", "left-pad", "1.4.0")]
    opened = await make_mirror(MIRROR_ADMIN_OPEN_IMPACT="true")
    assert (await opened.get(PATH)).status == 200
    both = await make_mirror(MIRROR_ADMIN_OPEN_IMPACT="true", MIRROR_ADMIN_PROTECT_READS="true")
    assert (await both.get(PATH)).status == 401


async def test_an_event_is_listed_with_who_had_it(make_mirror: MakeClient) -> None:
    client = await make_mirror()
    at = NOW - timedelta(minutes=30)
    await record(
        client,
        "pypi",
        "evil-pkg",
        "1.0",
        at,
        kind="yanked",
        filename="evil_pkg-1.0-py3-none-any.whl",
        reason="malware",
        clients=("10.0.0.7", "10.0.0.8"),
    )
    (event,) = (await listed(client))["events"]
    assert event["kind"] == "yanked"
    assert event["reason"] == "malware"
    assert event["filename"] == "evil_pkg-1.0-py3-none-any.whl"
    assert event["detected_at"].startswith("2026-11-22T09:30:00")
    assert (event["clients"], event["downloads"]) == (2, 6)
    assert [row["client"] for row in event["impact"]] == ["10.0.0.7", "10.0.0.8"]
    assert event["impact"][0]["token"] == "ci-bot"
    assert event["impact"][0]["ci"] == "github-actions"
    assert (await listed(client))["next"] is None


async def test_filters_by_ecosystem_package_and_since(make_mirror: MakeClient) -> None:
    client = await make_mirror()
    await record(client, "npm", "left-pad", "1.4.0", NOW - timedelta(days=10))
    await record(client, "npm", "left-pad", "1.5.0", NOW - timedelta(days=2))
    await record(client, "npm", "Left-Pad", "2.0.0", NOW - timedelta(days=1))
    await record(client, "pypi", "evil-pkg", "1.0", NOW - timedelta(hours=3))
    everything = await listed(client)
    assert shown(everything) == [
        ("pypi", "evil-pkg", "1.0"),
        ("npm", "Left-Pad", "2.0.0"),
        ("npm", "left-pad", "1.5.0"),
        ("npm", "left-pad", "1.4.0"),
    ]
    assert len(shown(await listed(client, ecosystem="npm"))) == 3
    # npm names are compared as written; PyPI's the PEP 503 way.
    assert shown(await listed(client, ecosystem="npm", package="left-pad")) == [
        ("npm", "left-pad", "1.5.0"),
        ("npm", "left-pad", "1.4.0"),
    ]
    assert shown(await listed(client, ecosystem="pypi", package="Evil_Pkg")) == [
        ("pypi", "evil-pkg", "1.0")
    ]
    assert len(shown(await listed(client, since="7d"))) == 3
    assert shown(await listed(client, ecosystem="npm", since="2026-11-21T00:00Z")) == [
        ("npm", "Left-Pad", "2.0.0")
    ]


async def test_bad_filters_say_which(make_mirror: MakeClient) -> None:
    client = await make_mirror()
    for params, field in (
        ({"ecosystem": "cargo"}, "ecosystem"),
        ({"package": "left-pad"}, "ecosystem"),  # a name is compared the ecosystem's way
        ({"since": "last tuesday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"package": "a\u202eb", "ecosystem": "npm"}, "package"),
        ({"after": "not a cursor"}, "after"),
        ({"after": "eyJxIjoxfQ"}, "after"),  # base64 JSON, but not a cursor of this mirror
    ):
        refused = await listed(client, 400, **params)
        assert refused["field"] == field, (params, refused)


async def test_pages_follow_the_cursor_to_the_end(make_mirror: MakeClient) -> None:
    client = await make_mirror()
    same_moment = NOW - timedelta(hours=1)
    for n in range(5):  # five at one moment: the id orders them, no event lost or repeated
        await record(client, "npm", "left-pad", f"1.0.{n}", same_moment)
    await record(client, "npm", "left-pad", "0.9.0", NOW - timedelta(days=3))
    await record(client, "npm", "left-pad", "0.1.0", NOW - timedelta(days=30))
    seen: list[tuple[str, str, str]] = []
    pages = 0
    params = {"ecosystem": "npm", "since": "7d", "limit": "2"}
    answer = await listed(client, **params)
    while True:
        pages += 1
        seen += shown(answer)
        if answer["next"] is None:
            break
        answer = await listed(client, **params, after=answer["next"])
    assert pages == 3
    assert len(seen) == len(set(seen)) == 6
    assert seen[-1] == ("npm", "left-pad", "0.9.0")  # older than since: not listed
    first = await listed(client, ecosystem="npm", since="7d", limit="2")
    # A cursor belongs to its filters: with others it is refused, not misread.
    refused = await listed(client, 400, ecosystem="pypi", since="7d", after=first["next"])
    assert refused["field"] == "after"
