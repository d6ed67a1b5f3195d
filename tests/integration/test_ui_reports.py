"""The dashboard's impact and audit pages through the whole app, with a fake npm upstream:
real downloads through the mirror (anonymous and with a read token), the ledger flushed, the
impact page and its CSV (the CLI's columns and cells, byte for byte), paging by cursor;
blocks created and removed through the admin API, the audit page and its CSV; logins, and
400 pages for bad filters."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import re
from datetime import timedelta
from functools import partial

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.cli import tables
from mirror.services import SERVICES
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import NOW, OLD, Client, MakeClient
from tests.integration.dashboard import ADMIN, DASHBOARD_TOKENS, READER, log_in, page

TEAM = "team-a-read-token-0123456789"
SCRIPT_AGENT = "<script>alert(1)</script> npm/10.8.2"
FORMULA_AGENT = "=cmd|' /C calc'!A0"
IMPACT = "/ui/impact?ecosystem=npm&package=left-pad"


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    registry.add_version("left-pad", "1.3.0", published=OLD + timedelta(days=1))
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(
        make_mirror,
        MIRROR_NPM_UPSTREAM=registry.url,
        MIRROR_ACCESS_TOKENS=f"team-a:{TEAM}",
        **DASHBOARD_TOKENS,
    )


async def download(client: Client, version: str, headers: dict[str, str]) -> None:
    response = await client.get(f"/npm/left-pad/-/left-pad-{version}.tgz", headers=headers)
    assert response.status == 200, await response.text()
    await response.read()


@pytest.fixture
async def downloaded(client: Client) -> Client:
    """Two downloads noted in the ledger: anonymous with a hostile user agent, and with the
    read token of team-a with one a spreadsheet would run."""
    await download(client, "1.0.0", {"User-Agent": SCRIPT_AGENT})
    await download(
        client, "1.3.0", {"User-Agent": FORMULA_AGENT, "Authorization": f"Bearer {TEAM}"}
    )
    state = client.app[SERVICES].state
    for _ in range(250):  # bounded: about 5 s; the ledger flushes every half second
        if len(await state.downloads("npm", "left-pad")) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(await state.downloads("npm", "left-pad")) == 2
    return client


def links(text: str, label: str) -> list[str]:
    return [
        html.unescape(href)
        for href, shown in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', text)
        if shown == label
    ]


# logins -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [IMPACT, "/ui/impact.csv?ecosystem=npm&package=x", "/ui/audit",
                                  "/ui/audit.csv"])  # fmt: skip
async def test_the_reports_need_a_login(client: Client, path: str) -> None:
    response = await client.get(path, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/ui/login?next=")


# impact -------------------------------------------------------------------------------------


async def test_the_impact_page_lists_the_downloads_to_a_read_only_login(
    downloaded: Client,
) -> None:
    await log_in(downloaded, READER)
    text = await page(downloaded, IMPACT + "&versions=*&since=7d")
    # The filters stay in the form.
    assert '<option value="npm" selected>' in text
    assert 'name="package" value="left-pad"' in text
    assert 'name="since" value="7d"' in text
    rows = re.findall(r"<tr>\s*(.*?)</tr>", text, re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]
    downloads = [row for row in cells if len(row) == 9]
    assert [row[:5] for row in downloads] == [
        ["1.0.0", "left-pad-1.0.0.tgz", "127.0.0.1", "-", "-"],
        ["1.3.0", "left-pad-1.3.0.tgz", "127.0.0.1", "team-a", "-"],
    ]
    assert [row[7:] for row in downloads] == [
        ["1", html.escape(SCRIPT_AGENT, quote=False)],
        ["1", "=cmd|&#39; /C calc&#39;!A0"],
    ]
    assert downloads[0][5] == "2026-11-22 10:00 UTC"
    # The user agent is text, never markup.
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # Who pulled: per read token, over the whole package.
    identities = [row for row in cells if len(row) == 6]
    assert sorted(row[:4] for row in identities) == [
        ["-", "-", "1", "1"],
        ["team-a", "-", "1", "1"],
    ]
    assert "Totals over every matching download of the package." in text
    assert links(text, "Next page") == []
    [csv_link] = links(text, "Download CSV")
    assert csv_link == "/ui/impact.csv?ecosystem=npm&package=left-pad&versions=%2A&since=7d"
    response = await downloaded.get(csv_link)
    assert response.status == 200
    assert len((await response.text()).splitlines()) == 3  # the header and both rows


async def test_the_impact_csv_is_what_the_cli_writes(downloaded: Client) -> None:
    await log_in(downloaded)
    response = await downloaded.get("/ui/impact.csv?ecosystem=npm&package=left-pad")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert (
        response.headers["Content-Disposition"] == 'attachment; filename="impact-npm-left-pad.csv"'
    )
    assert response.headers["Cache-Control"] == "no-store"
    assert "Content-Security-Policy" in response.headers
    body = await response.text()
    # The same bytes `mirror impact --format csv` writes of the API's answer.
    api = await downloaded.get(
        "/api/v1/impact",
        params={"ecosystem": "npm", "package": "left-pad"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert body == "".join(tables.impact_csv([await api.json()]))
    header, *rows = list(csv.reader(io.StringIO(body)))
    assert header == [
        "ecosystem", "package", "version", "filename", "client", "token", "ci", "command",
        "session", "user_agent", "first_seen", "last_seen", "count",
    ]  # fmt: skip
    assert [(row[2], row[5], row[9], row[12]) for row in rows] == [
        ("1.0.0", "", SCRIPT_AGENT, "1"),
        ("1.3.0", "team-a", "'" + FORMULA_AGENT, "1"),  # a formula, written as text
    ]


async def test_the_impact_csv_of_a_glob_prefixes_the_scope(client: Client) -> None:
    await log_in(client)
    response = await client.get("/ui/impact.csv?ecosystem=npm&package=@evil/*")
    assert response.status == 200
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="impact-npm-_evil_.csv"'
    )
    assert (await response.text()).splitlines() == [",".join(tables.DOWNLOAD_COLUMNS)]


async def test_impact_pages_follow_the_cursor(downloaded: Client) -> None:
    await log_in(downloaded)
    first = await page(downloaded, IMPACT + "&limit=1")
    assert "left-pad-1.0.0.tgz" in first
    assert "left-pad-1.3.0.tgz" not in first
    [following] = links(first, "Next page")
    assert following.startswith("/ui/impact?ecosystem=npm&package=left-pad&limit=1&cursor=")
    second = await page(downloaded, following)
    assert "left-pad-1.3.0.tgz" in second
    assert "left-pad-1.0.0.tgz" not in second
    assert "Totals over the downloads on this page." in second
    assert links(second, "Next page") == []
    assert links(second, "First page") == ["/ui/impact?ecosystem=npm&package=left-pad"]
    # The CSV walks every page whatever the page size.
    response = await downloaded.get("/ui/impact.csv?ecosystem=npm&package=left-pad&limit=1")
    assert len((await response.text()).splitlines()) == 3


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("&since=yesterday", "since: &#39;yesterday&#39; is not a time"),
        ("&versions=%5E%5E1", "versions: "),
        ("&since=7d%E2%80%AE", "since: control and formatting characters are not allowed"),
        ("&extra=%1B%5B31m", "extra: control and formatting characters are not allowed"),
        ("&cursor=forged", "cursor: not a cursor of this query"),
    ],
)
async def test_a_bad_impact_filter_is_a_400_page(client: Client, query: str, message: str) -> None:
    await log_in(client)
    text = await page(client, IMPACT + query, status=400)
    assert message in text
    assert 'name="package" value="left-pad"' in text  # the form is there to fix it
    response = await client.get("/ui/impact.csv?ecosystem=npm&package=left-pad" + query)
    if "extra" not in query:  # the CSV reads only its own parameters
        assert response.status == 400
        assert response.headers["Content-Type"].startswith("text/html")
        assert message in await response.text()


async def test_the_impact_form_alone_asks_for_a_package(client: Client) -> None:
    await log_in(client)
    text = await page(client, "/ui/impact")
    assert '<label for="impact-package">' in text
    assert "Download CSV" not in text
    submitted = await page(client, "/ui/impact?ecosystem=npm&package=&since=7d", status=400)
    assert "package: required" in submitted
    assert 'name="since" value="7d"' in submitted


# audit --------------------------------------------------------------------------------------


async def block_and_unblock(client: Client) -> str:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    body = {"ecosystem": "npm", "package": "left-pad", "versions": "1.3.0",
            "reason": "<b>compromised</b> =HYPERLINK()"}  # fmt: skip
    created = await client.post("/api/v1/blocks", json=body, headers=headers)
    assert created.status == 201, await created.text()
    rule_id = (await created.json())["block"]["id"]
    removed = await client.delete(f"/api/v1/blocks/{rule_id}", headers=headers)
    assert removed.status in (200, 204), await removed.text()
    return str(rule_id)


async def test_the_audit_page_shows_who_changed_what(client: Client) -> None:
    rule_id = await block_and_unblock(client)
    await log_in(client, READER)
    text = await page(client, "/ui/audit")
    rows = re.findall(r"<tr>\s*(.*?)</tr>", text, re.S)
    entries = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]
    entries = [row for row in entries if len(row) == 6]
    assert len(entries) == 2
    assert [row[1] for row in entries] == ["alice", "alice"]
    assert [row[4] for row in entries] == [rule_id, rule_id]
    actions = [row[3] for row in entries]
    assert actions[0] != actions[1]  # the removal, then the creation: newest first
    assert "npm left-pad 1.3.0 (&lt;b&gt;compromised&lt;/b&gt; =HYPERLINK())" in entries[0][5]
    assert "<b>compromised" not in text
    assert "<details>" in text
    assert "&#34;reason&#34;" in text  # the rule in full, as JSON

    by_actor = await page(client, "/ui/audit?actor=alice")
    assert by_actor.count(f"<td>{rule_id}</td>") == 2
    assert 'name="actor" value="alice"' in by_actor
    nobody = await page(client, "/ui/audit?actor=nobody")
    assert "No matching entries." in nobody
    by_target = await page(client, f"/ui/audit?target={rule_id}")
    assert by_target.count(f"<td>{rule_id}</td>") == 2
    other = await page(client, "/ui/audit?target=b-000000000000")
    assert "No matching entries." in other

    first = await page(client, "/ui/audit?limit=1")
    assert first.count(f"<td>{rule_id}</td>") == 1
    [older] = links(first, "Next page (older entries)")
    second = await page(client, older)
    assert second.count(f"<td>{rule_id}</td>") == 1
    assert links(second, "Next page (older entries)") == []
    assert links(second, "Newest entries") == ["/ui/audit"]


async def test_the_audit_csv(client: Client) -> None:
    rule_id = await block_and_unblock(client)
    await log_in(client, READER)
    response = await client.get(f"/ui/audit.csv?actor=alice&target={rule_id}")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="audit.csv"'
    header, *rows = list(csv.reader(io.StringIO(await response.text())))
    assert header == ["at", "actor", "client", "action", "target", "before", "after"]
    assert [(row[1], row[2], row[4]) for row in rows] == [
        ("alice", "127.0.0.1", rule_id),
        ("alice", "127.0.0.1", rule_id),
    ]
    removal, creation = rows
    assert creation[5] == ""
    assert '"reason": "<b>compromised</b> =HYPERLINK()"' in creation[6]
    assert '"package": "left-pad"' in removal[5]
    empty = await client.get("/ui/audit.csv?actor=nobody")
    assert (await empty.text()).splitlines() == ["at,actor,client,action,target,before,after"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=yesterday", "since: &#39;yesterday&#39; is not a time"),
        ("since=1d&until=2d", "until: must be later than since"),
        ("actor=al%E2%80%AEice", "actor: control and formatting characters are not allowed"),
        ("limit=0", "limit: expected a number from 1 to 1000"),
    ],
)
async def test_a_bad_audit_filter_is_a_400_page(client: Client, query: str, message: str) -> None:
    await log_in(client)
    text = await page(client, f"/ui/audit?{query}", status=400)
    assert message in text
    response = await client.get(f"/ui/audit.csv?{query}")
    assert response.status == 400
    assert message in await response.text()


# a state that does not answer -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        (IMPACT + "&since=7d", 'name="since" value="7d"'),
        ("/ui/audit?actor=alice", 'name="actor" value="alice"'),
    ],
)
async def test_a_report_on_a_dead_state_is_a_503_page_with_the_form(
    client: Client, path: str, kept: str
) -> None:
    await log_in(client)
    state = client.app[SERVICES].state
    await state.close()  # every state call now fails
    try:
        text = await page(client, path, status=503)
    finally:
        await state.open()
    assert 'role="alert">State unavailable:' in text
    assert kept in text  # the form, with what was asked, to try again
