"""The dashboard's takedown events page through the whole app: events recorded with
`state.add_event` (both state backends) shown to a read-only login with their clients and a
link to the Impact page of their version, hostile names and reasons as text, filters and
paging, the CSV (`mirror events --csv`'s columns and cells), and 400 pages for bad filters."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import datetime, timedelta
from functools import partial

import pytest

from mirror.model import ImpactRow
from mirror.services import SERVICES
from mirror.takedowns import Takedown, event_of
from tests.integration.conftest import NOW, Client, MakeClient, on_backend
from tests.integration.dashboard import DASHBOARD_TOKENS, READER, log_in, page

HOSTILE_NAME = "@evil/<script>alert(1)</script>"
HOSTILE_REASON = '<img src=x onerror="alert(2)"> =HYPERLINK("http://127.0.0.1/x")'


@pytest.fixture
def make_mirror(make_mirror: MakeClient) -> MakeClient:
    return partial(make_mirror, **DASHBOARD_TOKENS)


@pytest.fixture(params=["local", "redis"])
def on_each_backend(request: pytest.FixtureRequest, make_mirror: MakeClient) -> MakeClient:
    """Dashboard mirrors on the SQLite state, then on Redis."""
    return on_backend(request, make_mirror)


async def record(
    client: Client,
    ecosystem: str,
    package: str,
    takedown: Takedown,
    at: datetime,
    clients: tuple[str, ...] = ("10.0.0.7",),
) -> None:
    rows = tuple(
        ImpactRow(
            client=address,
            token="team-a",
            ci="",
            count=2,
            first_at=NOW - timedelta(days=2),
            last_at=NOW - timedelta(days=1),
        )
        for address in clients
    )
    event = event_of(ecosystem, package, takedown, at, rows, clients=len(rows) + 1, downloads=7)
    assert await client.app[SERVICES].state.add_event(event)


def links(text: str, label: str) -> list[str]:
    return [
        html.unescape(href)
        for href, shown in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', text)
        if html.unescape(shown) == label
    ]


@pytest.mark.parametrize("path", ["/ui/events", "/ui/events.csv"])
async def test_the_events_need_a_login(client: Client, path: str) -> None:
    response = await client.get(path, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/ui/login?next=")


async def test_a_read_only_login_sees_each_event_with_who_had_it(
    on_each_backend: MakeClient,
) -> None:
    client = await on_each_backend()
    await record(
        client,
        "npm",
        HOSTILE_NAME,
        Takedown("6.6.6", "", "yanked", HOSTILE_REASON),
        NOW - timedelta(hours=1),
        clients=("10.0.0.7", "10.0.0.8"),
    )
    await record(
        client,
        "pypi",
        "evil-pkg",
        Takedown("1.0", "evil_pkg-1.0.tar.gz", "removed"),
        NOW - timedelta(hours=2),
    )
    await log_in(client, READER)
    text = await page(client, "/ui/events")
    assert '<a href="/ui/events" aria-current="page">Takedowns</a>' in text
    # Names and reasons are text, never markup.
    assert "<script>alert" not in text
    assert "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in text
    headings = [html.unescape(h) for h in re.findall(r"<h2>(.*?)</h2>", text, re.S)]
    assert headings == [
        f"yanked: npm {HOSTILE_NAME} 6.6.6",
        "removed: pypi evil-pkg 1.0 evil_pkg-1.0.tar.gz",
    ]
    rows = re.findall(r"<tr>\s*(.*?)</tr>", text, re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]
    impact = [row for row in cells if len(row) == 6]
    assert [row[:4] for row in impact] == [
        ["10.0.0.7", "team-a", "-", "2"],
        ["10.0.0.8", "team-a", "-", "2"],
        ["10.0.0.7", "team-a", "-", "2"],
    ]
    assert impact[0][4:] == ["2026-11-20 10:00 UTC", "2026-11-21 10:00 UTC"]
    assert "Downloaded by 3 clients" in text
    assert "1 more client(s) not listed" in text
    [to_impact] = links(text, f"Impact of {HOSTILE_NAME} 6.6.6")
    assert to_impact == (
        "/ui/impact?ecosystem=npm&package=%40evil%2F%3Cscript%3Ealert%281%29%3C%2Fscript%3E"
        "&versions=%3D%3D%3D6.6.6"
    )
    assert (await client.get(to_impact)).status == 200
    assert links(text, "Impact of evil-pkg 1.0") == [
        "/ui/impact?ecosystem=pypi&package=evil-pkg&versions=%3D%3D%3D1.0"
    ]


async def test_filters_and_pages(on_each_backend: MakeClient) -> None:
    client = await on_each_backend()
    for n in range(3):
        takedown = Takedown(f"1.0.{n}", "", "removed")
        await record(client, "npm", "left-pad", takedown, NOW - timedelta(hours=n + 1))
    await record(client, "pypi", "evil-pkg", Takedown("2.0", "", "removed"), NOW)
    await record(client, "npm", "left-pad", Takedown("0.1.0", "", "removed"), NOW - timedelta(30))
    await log_in(client, READER)

    def shown(text: str) -> list[str]:
        return [html.unescape(h) for h in re.findall(r"<h2>(.*?)</h2>", text, re.S)]

    assert len(shown(await page(client, "/ui/events"))) == 5
    pypi = await page(client, "/ui/events?ecosystem=pypi&package=Evil_Pkg")
    assert shown(pypi) == ["removed: pypi evil-pkg 2.0"]
    assert '<option value="pypi" selected>' in pypi
    assert 'name="package" value="Evil_Pkg"' in pypi
    first = await page(client, "/ui/events?ecosystem=npm&since=7d&limit=2")
    assert shown(first) == ["removed: npm left-pad 1.0.0", "removed: npm left-pad 1.0.1"]
    [older] = links(first, "Next page (older events)")
    second = await page(client, older)
    assert shown(second) == ["removed: npm left-pad 1.0.2"]  # the month-old one: before since
    assert links(second, "Next page (older events)") == []
    assert links(second, "Newest events") == ["/ui/events?ecosystem=npm&since=7d"]
    nothing = await page(client, "/ui/events?ecosystem=maven")
    assert "No matching takedown events." in nothing


async def test_the_events_csv(on_each_backend: MakeClient) -> None:
    client = await on_each_backend()
    await record(
        client,
        "npm",
        HOSTILE_NAME,
        Takedown("6.6.6", "", "yanked", HOSTILE_REASON),
        NOW - timedelta(hours=1),
    )
    for n in range(3):
        takedown = Takedown(f"1.0.{n}", "", "removed")
        await record(client, "npm", "left-pad", takedown, NOW - timedelta(hours=n + 2))
    await log_in(client, READER)
    text = await page(client, "/ui/events?limit=1")
    [csv_link] = links(text, "Download CSV")
    assert csv_link == "/ui/events.csv"
    response = await client.get("/ui/events.csv?limit=1")  # pages of one: every page read
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="events.csv"'
    header, *rows = list(csv.reader(io.StringIO(await response.text())))
    assert header == [
        "detected_at", "kind", "ecosystem", "package", "version", "filename", "reason",
        "clients", "downloads", "id",
    ]  # fmt: skip
    assert [row[4] for row in rows] == ["6.6.6", "1.0.0", "1.0.1", "1.0.2"]
    # Cells a spreadsheet would run are text.
    assert rows[0][3] == "'" + HOSTILE_NAME
    assert rows[0][6] == HOSTILE_REASON  # starts with "<": not a formula
    only = await client.get("/ui/events.csv?ecosystem=npm&package=left-pad")
    assert len((await only.text()).splitlines()) == 4


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=yesterday", "since: &#39;yesterday&#39; is not a time"),
        ("package=left-pad", "ecosystem: required with package"),
        ("ecosystem=cargo", "ecosystem: unknown ecosystem"),
        ("after=nonsense", "after: not a cursor of this query"),
        ("limit=0", "limit: expected a number from 1 to 500"),
    ],
)
async def test_a_bad_filter_is_a_400_page(client: Client, query: str, message: str) -> None:
    await log_in(client)
    text = await page(client, f"/ui/events?{query}", status=400)
    assert message in text
    response = await client.get(f"/ui/events.csv?{query}")
    assert response.status == 400
    assert message in await response.text()
