"""The dashboard's blocks, exemptions and freezes page through the whole app (SQLite state in
tmp_path, a fake npm upstream with real tarballs, downloads recorded by real tarball
requests): listing each kind, the add form's dry run (what it would hide and who downloaded
it, nothing stored), creating (listed, enforced, audited), removing, and every refusal (no
CSRF token, a read-only login, bad input) changing nothing."""

from __future__ import annotations

import asyncio
import html
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.services import SERVICES
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import NOW, OLD, Client, MakeClient
from tests.integration.dashboard import DASHBOARD_TOKENS, READER, csrf_of, log_in, page

BLOCK = {
    "ecosystem": "npm",
    "package": "left-pad",
    "versions": "^1.3.0",
    "reason": "compromised maintainer",
    "expires": "",
}
TARBALL = "/npm/left-pad/-/left-pad-1.3.0.tgz"
RUNNER = "10.1.4.17"


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    registry.add_version("left-pad", "1.3.0", published=NOW - timedelta(days=30))
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(
        make_mirror,
        MIRROR_NPM_UPSTREAM=registry.url,
        MIRROR_TRUSTED_PROXIES="127.0.0.1",
        **DASHBOARD_TOKENS,
    )


@pytest.fixture
async def admin(client: Client) -> Client:
    await log_in(client)
    return client


async def stored(client: Client) -> tuple[list[Any], list[Any]]:
    state = client.app[SERVICES].state
    rules = [
        record
        for kind in ("block", "exemption", "freeze")
        for record in await state.list_rules(kind)
    ]
    return rules, list((await state.audit_page(limit=100)).entries)


async def submit(
    client: Client, path: str, fields: dict[str, str], *, csrf_from: str = "/ui/rules"
) -> tuple[int, str, str]:
    token = csrf_of(await page(client, csrf_from))
    response = await client.post(path, data={**fields, "csrf": token}, allow_redirects=False)
    return response.status, await response.text(), response.headers.get("Location", "")


async def download_recorded(client: Client) -> None:
    response = await client.get(TARBALL, headers={"X-Forwarded-For": RUNNER})
    assert response.status == 200, await response.text()
    state = client.app[SERVICES].state
    for _ in range(250):  # bounded: about 5 s; the ledger flushes every half second
        if await state.downloads("npm", "left-pad"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the download was not recorded in time")


async def create(client: Client, kind: str, fields: dict[str, str]) -> str:
    """Preview then confirm, as a browser does: the list page the redirect leads to."""
    status, preview, _ = await submit(client, f"/ui/rules/{kind}/preview", fields)
    assert status == 200, preview
    status, body, location = await submit(
        client, f"/ui/rules/{kind}", fields, csrf_from=f"/ui/rules?kind={kind}"
    )
    assert status == 303, body
    assert location == f"/ui/rules?kind={kind}"
    return await page(client, location)


@pytest.mark.parametrize(
    ("kind", "empty"),
    [("block", "No blocks."), ("exemption", "No exemptions."), ("freeze", "No freezes.")],
)
async def test_each_kind_lists_empty_with_tabs_and_an_add_form(
    admin: Client, kind: str, empty: str
) -> None:
    html_text = await page(admin, f"/ui/rules?kind={kind}")
    assert empty in html_text
    for tab in ("Blocks", "Exemptions", "Freezes"):
        assert f">{tab}</a>" in html_text
    assert f'action="/ui/rules/{kind}/preview"' in html_text
    assert '<label for="ecosystem">Ecosystem' in html_text
    assert "Preview</button>" in html_text


async def test_the_default_kind_is_block_and_an_unknown_kind_is_refused(admin: Client) -> None:
    assert "No blocks." in await page(admin, "/ui/rules")
    assert "kind: expected block, exemption or freeze" in await page(
        admin, "/ui/rules?kind=bogus", status=400
    )


async def test_preview_of_a_block_shows_what_it_hides_and_who_downloaded_it(
    admin: Client,
) -> None:
    await download_recorded(admin)
    status, preview, _ = await submit(admin, "/ui/rules/block/preview", BLOCK)
    assert status == 200, preview
    assert "nothing has been created yet" in preview
    assert "2 of 3 listed version(s): 1.3.0, 1.4.0" in preview
    assert f"<td>{RUNNER}</td>" in preview
    assert "<td>left-pad-1.3.0.tgz</td>" in preview
    assert "Create block</button>" in preview
    # The confirm form carries what was typed.
    assert '<input type="hidden" name="versions" value="^1.3.0">' in preview
    assert await stored(admin) == ([], [])
    assert (await admin.get(TARBALL)).status == 200


async def test_preview_warns_when_a_block_covers_nothing(admin: Client) -> None:
    status, preview, _ = await submit(
        admin, "/ui/rules/block/preview", {**BLOCK, "versions": "9.9.9"}
    )
    assert status == 200, preview
    assert "Warning: left-pad 9.9.9 covers no version the upstream lists" in preview
    assert "No one has downloaded these versions" in preview


async def test_a_created_block_is_listed_enforced_and_audited(admin: Client) -> None:
    listed = await create(admin, "block", BLOCK)
    (record,), (entry,) = await stored(admin)
    assert f"Block {record.id} created" in listed
    assert "Covers now: 2 of 3 listed version(s): 1.3.0, 1.4.0" in listed
    assert f"<code>{record.id}</code>" in listed
    assert "<td>compromised maintainer</td>" in listed
    assert "<td>alice</td>" in listed
    assert (entry.actor, entry.action, entry.target) == ("alice", "block.create", record.id)
    assert entry.client == "127.0.0.1"
    assert (await admin.get(TARBALL)).status == 403
    # The notice is shown once.
    assert "created" not in await page(admin, "/ui/rules?kind=block")


async def test_a_script_in_the_reason_is_shown_as_text(admin: Client) -> None:
    reason = "<script>alert(1)</script>"
    fields = {**BLOCK, "reason": reason}
    status, preview, _ = await submit(admin, "/ui/rules/block/preview", fields)
    assert status == 200
    listed = await create(admin, "block", fields)
    for text in (preview, listed):
        assert reason not in text
        assert html.escape(reason) in text


async def test_remove_takes_a_block_away_and_is_audited(admin: Client) -> None:
    listed = await create(admin, "block", BLOCK)
    (record,), _ = await stored(admin)
    assert f'action="/ui/rules/block/{record.id}/remove"' in listed
    assert 'data-confirm="Remove block' in listed
    status, body, location = await submit(admin, f"/ui/rules/block/{record.id}/remove", {})
    assert (status, location) == (303, "/ui/rules?kind=block")
    after = await page(admin, location)
    assert f"Block {record.id} removed: npm left-pad ^1.3.0 (compromised maintainer)" in after
    assert "No blocks." in after
    rules, audit = await stored(admin)
    assert rules == []
    assert [(entry.action, entry.actor) for entry in audit] == [
        ("block.delete", "alice"),
        ("block.create", "alice"),
    ]
    assert (await admin.get(TARBALL)).status == 200
    # Removing it again: a page saying there is none, nothing audited.
    status, body, _ = await submit(admin, f"/ui/rules/block/{record.id}/remove", {})
    assert status == 404
    assert "there is no block" in body
    assert len((await stored(admin))[1]) == 2


@pytest.mark.parametrize("path", ["/ui/rules/block", "/ui/rules/block/preview"])
async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    admin: Client, path: str
) -> None:
    response = await admin.post(path, data=BLOCK, allow_redirects=False)
    assert response.status == 403
    assert "CSRF token" in await response.text()
    wrong = await admin.post(path, data={**BLOCK, "csrf": "forged"}, allow_redirects=False)
    assert wrong.status == 403
    assert await stored(admin) == ([], [])


async def test_a_read_only_login_sees_the_list_but_no_forms(make_mirror: MakeClient) -> None:
    writer = await make_mirror()
    await log_in(writer)
    await create(writer, "block", BLOCK)
    (record,), audit = await stored(writer)
    reader = await make_mirror()
    await log_in(reader, READER)
    listed = await page(reader, "/ui/rules?kind=block")
    assert f"<code>{record.id}</code>" in listed
    assert "Remove</button>" not in listed
    assert "Preview</button>" not in listed
    token = csrf_of(listed)  # the logout form's
    for path in (
        "/ui/rules/block",
        "/ui/rules/block/preview",
        f"/ui/rules/block/{record.id}/remove",
    ):
        response = await reader.post(path, data={**BLOCK, "csrf": token}, allow_redirects=False)
        assert response.status == 403
        assert "read-only login" in await response.text()
    assert await stored(reader) == ([record], audit)


@pytest.mark.parametrize(
    ("fields", "message", "kept"),
    [
        (
            {**BLOCK, "ecosystem": "cargo"},
            "ecosystem: unknown ecosystem &#39;cargo&#39;",
            'value="cargo" selected',
        ),
        ({**BLOCK, "package": ""}, "package: package is required", 'value="^1.3.0"'),
        (
            {**BLOCK, "expires": "next tuesday"},
            "expires: &#39;next tuesday&#39; is not a time",
            'value="next tuesday"',
        ),
    ],
)
@pytest.mark.parametrize("step", ["/ui/rules/block/preview", "/ui/rules/block"])
async def test_bad_input_shows_the_form_again_with_the_message_and_what_was_typed(
    admin: Client, fields: dict[str, str], message: str, kept: str, step: str
) -> None:
    status, body, _ = await submit(admin, step, fields)
    assert status == 400, body
    assert message in body
    assert kept in body
    assert 'value="compromised maintainer"' in body
    assert await stored(admin) == ([], [])


async def test_an_exemption_round_trip(admin: Client) -> None:
    fields = {**BLOCK, "versions": "1.4.0", "reason": "urgent fix", "expires": "7d"}
    status, preview, _ = await submit(admin, "/ui/rules/exemption/preview", fields)
    assert status == 200, preview
    assert "1 of 3 listed version(s): 1.4.0" in preview
    assert "Who already downloaded" not in preview
    assert "Create exemption</button>" in preview
    assert (await admin.get("/npm/left-pad/-/left-pad-1.4.0.tgz")).status == 403  # held
    listed = await create(admin, "exemption", fields)
    (record,), (entry,) = await stored(admin)
    assert f"Exemption {record.id} created" in listed
    assert record.expires_at == NOW + timedelta(days=7)
    assert entry.action == "exemption.create"
    assert (await admin.get("/npm/left-pad/-/left-pad-1.4.0.tgz")).status == 200
    status, _, _ = await submit(
        admin, f"/ui/rules/exemption/{record.id}/remove", {}, csrf_from="/ui/rules?kind=exemption"
    )
    assert status == 303
    assert (await stored(admin))[0] == []


async def test_a_freeze_round_trip(admin: Client) -> None:
    listed = await page(admin, "/ui/rules?kind=freeze")
    assert '<label for="published_after">Published after' in listed
    assert '<label for="until">Until' in listed
    fields = {
        "ecosystem": "npm",
        "package": "",
        "published_after": "60d",
        "until": "7d",
        "reason": "release week",
    }
    status, preview, _ = await submit(admin, "/ui/rules/freeze/preview", fields)
    assert status == 200, preview
    assert "Create freeze</button>" in preview
    assert "release week" in preview
    assert (await admin.get(TARBALL)).status == 200
    listed = await create(admin, "freeze", fields)
    (record,), (entry,) = await stored(admin)
    assert f"Freeze {record.id} created" in listed
    assert record.package == "*"
    assert record.expires_at == NOW + timedelta(days=7)
    assert entry.action == "freeze.create"
    assert (await admin.get(TARBALL)).status == 403  # published 30 days ago: frozen
    bad = {**fields, "until": "2001-01-01"}
    status, body, _ = await submit(
        admin, "/ui/rules/freeze", bad, csrf_from="/ui/rules?kind=freeze"
    )
    assert status == 400
    assert "until: 2001-01-01T00:00:00Z is already past" in body
    assert 'value="2001-01-01"' in body


async def test_a_degraded_state_lists_the_enforced_rules_and_says_so(
    make_mirror: MakeClient, tmp_path: Path
) -> None:
    first = await make_mirror()
    await log_in(first)
    await create(first, "block", BLOCK)
    (record,), _ = await stored(first)
    await asyncio.sleep(0.1)  # the guard copies the change to the last-known copy at once
    await first.close()
    for suffix in ("-wal", "-shm", ""):  # the shared state lost, the copy kept
        (tmp_path / "data" / f"state.sqlite3{suffix}").unlink(missing_ok=True)
    restarted = await make_mirror()
    await log_in(restarted)
    listed = await page(restarted, "/ui/rules?kind=block")
    assert "The shared state is degraded" in listed
    assert "mirror state restore" in listed
    assert f"<code>{record.id}</code>" in listed
    assert (await restarted.get(TARBALL)).status == 403


async def test_a_state_that_does_not_answer_lists_the_rules_this_worker_enforces(
    admin: Client,
) -> None:
    await create(admin, "block", BLOCK)
    (record,), _ = await stored(admin)
    state = admin.app[SERVICES].state
    await state.close()  # every state call now fails
    try:
        listed = await page(admin, "/ui/rules?kind=block")  # 200, not a bare 503
        assert 'role="alert">State unavailable:' in listed
        assert "the blocks this worker still enforces" in listed
        assert f"<code>{record.id}</code>" in listed
        assert "<td>compromised maintainer</td>" in listed
        assert (await admin.get(TARBALL)).status == 403  # and it does enforce it
    finally:
        await state.open()
