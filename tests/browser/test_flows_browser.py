"""The dashboard's flows end to end in a real browser and the real npm client: a block made
on the rules page (preview, then create) that npm then meets, the quarantine queue after a
held install, and the impact and audit pages that follow. They use the pages' labels,
buttons and paths, as a person would."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser.conftest import Dashboard, screenshot
from tests.e2e.test_npm_e2e import installed_version

REASON = "compromised release: steals tokens"


async def create_block_on_the_rules_page(ui: Dashboard) -> None:
    """Block left-pad 1.3.0 through the form: preview the dry run, then create it."""
    await ui.goto("/ui/rules?kind=block")
    await ui.page.get_by_label("Ecosystem").select_option("npm")
    await ui.page.get_by_label("Package").fill("left-pad")
    await ui.page.get_by_label("Versions").fill("1.3.0")
    await ui.page.get_by_label("Reason").fill(REASON)
    await ui.page.get_by_role("button", name="Preview").click()
    main = ui.page.locator("main")
    await expect(main).to_contain_text("left-pad")
    await expect(main).to_contain_text("1.3.0")  # the version the block would hide
    await screenshot(ui.page, "rules-preview")
    await ui.page.get_by_role("button", name="Create block").click()
    await ui.page.wait_for_url(ui.url("/ui/rules?kind=block"))
    listed = ui.page.locator("main tr", has_text="left-pad")
    await expect(listed).to_have_count(1)
    await expect(listed).to_contain_text("1.3.0")
    await expect(listed).to_contain_text(REASON)


async def install_pinned_before_the_block(ui: Dashboard) -> Path:
    """A project that installed left-pad 1.3.0 (allowed then): its lockfile pins it with
    the tarball's URL, as a CI job would hold it."""
    project = ui.npm.project("pinned")
    result = await ui.npm.npm("install", "left-pad@1.3.0", cwd=project)
    assert result.code == 0, result
    assert installed_version(project, "left-pad") == "1.3.0"
    return project


async def assert_npm_meets_the_block(ui: Dashboard, pinned: Path) -> None:
    """After the block: `npm install left-pad@1.3.0` finds no such version and says which
    block hides it; `npm ci` from the old lockfile is refused 403 with the reason."""
    fresh = await ui.npm.npm("install", "left-pad@1.3.0", cwd=ui.npm.project("fresh"))
    assert fresh.code != 0, fresh
    assert "ETARGET" in fresh.out
    assert REASON in fresh.out
    again = ui.npm.project("again")
    shutil.copy(pinned / "package.json", again / "package.json")
    shutil.copy(pinned / "package-lock.json", again / "package-lock.json")
    lock = json.loads((again / "package-lock.json").read_text(encoding="utf-8"))
    assert lock["packages"]["node_modules/left-pad"]["resolved"].endswith("left-pad-1.3.0.tgz")
    refused = await ui.npm.npm("ci", cwd=again, cache="cache-after-block")
    assert refused.code != 0, refused
    assert "E403" in refused.out
    assert REASON in refused.out


async def wait_for_a_download_in_the_ledger(ui: Dashboard, path: str, text: str) -> None:
    """The ledger is written just after a response: reload `path` until it shows `text`
    (bounded)."""
    for _ in range(50):
        await ui.goto(path)
        if text in await ui.page.locator("main").inner_text():
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"{path} never showed {text!r}")


async def test_a_block_made_on_the_rules_page_stops_npm(ui: Dashboard) -> None:
    pinned = await install_pinned_before_the_block(ui)
    await ui.log_in()
    await create_block_on_the_rules_page(ui)
    await screenshot(ui.page, "rules-blocks")
    await assert_npm_meets_the_block(ui, pinned)


async def test_the_queue_lists_the_held_version_npm_asked_for(ui: Dashboard) -> None:
    project = ui.npm.project("queued")
    result = await ui.npm.npm("install", "left-pad", cwd=project)
    assert result.code == 0, result
    assert installed_version(project, "left-pad") == "1.3.0"  # 1.4.0, `latest`, is held
    await ui.log_in()
    await ui.goto("/ui/queue")
    row = ui.page.locator("main tr", has_text="left-pad")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("1.4.0")
    cells = [text.strip() for text in await row.locator("td").all_inner_texts()]
    # The requests cell: the count, then when the last one was held.
    firsts = [text.splitlines()[0] for text in cells if text]
    held_requests = [int(text) for text in firsts if re.fullmatch(r"\d+", text)]
    assert any(count >= 1 for count in held_requests), cells
    await screenshot(ui.page, "queue-held")
    # From the queue to the held version's review: what changed against 1.3.0.
    await row.get_by_role("link", name="Review").click()
    await ui.page.wait_for_url("**/ui/review?**")
    main = ui.page.locator("main")
    await expect(main).to_contain_text("1.4.0")
    await expect(main).to_contain_text("1.3.0")  # the newest allowed version, the baseline
    await expect(main).to_contain_text("package.json")
    await screenshot(ui.page, "review")


async def test_impact_names_the_client_and_audit_names_who_blocked(ui: Dashboard) -> None:
    await install_pinned_before_the_block(ui)
    await ui.log_in()
    await create_block_on_the_rules_page(ui)
    await wait_for_a_download_in_the_ledger(
        ui, "/ui/impact?ecosystem=npm&package=left-pad", "127.0.0.1"
    )
    await expect(ui.page.locator("main")).to_contain_text("left-pad")
    await screenshot(ui.page, "impact-left-pad")
    await ui.goto("/ui/audit")
    entry = ui.page.locator("main tr", has_text="left-pad").first
    await expect(entry).to_contain_text("alice")
    await expect(entry).to_contain_text("block")
    await screenshot(ui.page, "audit-block")


async def test_the_overview_counts_what_two_installs_pulled(ui: Dashboard) -> None:
    # Two installs with npm caches of their own: the second one's tarball comes from the
    # mirror's cache, so the overview shows hits and bytes the upstream was spared.
    for name in ("first", "second"):
        result = await ui.npm.npm("install", "left-pad", cwd=ui.npm.project(name), cache=name)
        assert result.code == 0, result
    await ui.log_in()
    await ui.goto("/ui/")
    npm_hour = ui.page.locator("main table", has_text="last hour").first.locator(
        "tr", has_text="last hour"
    )
    cells = [text.strip() for text in await npm_hour.locator("td").all_inner_texts()]
    requests = int(cells[0].split()[0])
    assert requests >= 4, cells  # two packuments and two tarballs at least
    assert not cells[1].startswith("-"), cells  # a hit ratio, some lookups answered from cache
    assert cells[2] != "0 B", cells  # bytes from the cache
    await screenshot(ui.page, "overview-traffic")
