"""Browser-test fixtures: `mirror serve` as a real process (the e2e suite's `start_mirror`)
with a fake npm upstream serving real tarballs and the dashboard's admin and read-only
tokens, driven by Debian's chromium through Playwright (never a downloaded browser), one
page per test, and `screenshot` saving each page visited as a test artifact."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import pytest
from playwright.async_api import Browser, ConsoleMessage, Dialog, Error, Page, async_playwright
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import REPO, RunningMirror, StartMirror
from tests.e2e.conftest import start_mirror as start_mirror  # the e2e suite's mirror process
from tests.e2e.test_npm_e2e import Env as NpmEnv
from tests.fakes.npm import FakeNpmRegistry

CHROMIUM: Final = Path("/usr/bin/chromium")
PAGE_TIMEOUT_MS: Final = 15_000  # every wait of a page: a hung page fails its test, bounded
ADMIN: Final = "alice-browser-token-0123456789"
READER: Final = "auditor-browser-token-0123456789"
QUARANTINE: Final = "3d"
YOUNG_PUBLISHED: Final = timedelta(hours=5)  # left-pad 1.4.0: held by the 3 d quarantine
# Where screenshots go: $MIRROR_TEST_ARTIFACTS, else build/test-artifacts/screenshots. Read
# when the suite loads: the autouse `clean_environ` fixture hides MIRROR_* from every test.
ARTIFACTS: Final = Path(
    os.environ.get("MIRROR_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts" / "screenshots"
)
# Chromium reports a blocked load or script as a console error saying this.
CSP_REPORT: Final = re.compile(r"Content Security Policy", re.IGNORECASE)
# Records every `securitypolicyviolation` event of a page (run by Playwright before the
# page's own scripts, outside the page's CSP) so a test can read them back.
RECORD_CSP_VIOLATIONS: Final = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


async def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as `<name>.png` in the artifacts directory (the issue asks for a
    screenshot of each page); returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path


@dataclass
class Dashboard:
    """One browser page on the running mirror, with what it reported: console errors, page
    errors and dialogs (a dialog would mean injected script ran)."""

    page: Page
    mirror: RunningMirror
    registry: FakeNpmRegistry
    npm: NpmEnv
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.mirror.url + path

    async def goto(self, path: str) -> None:
        response = await self.page.goto(self.url(path))
        assert response is not None

    async def log_in(self, token: str = ADMIN) -> None:
        """Type the token into the labelled field and press the button, as a person would."""
        await self.goto("/ui/login")
        await self.page.get_by_label("Admin or read-only admin token").fill(token)
        await self.page.get_by_role("button", name="Log in").click()
        await self.page.wait_for_url(self.url("/ui/"))

    async def csp_violations(self) -> list[str]:
        """Every CSP violation the page saw: its own events and Chromium's console reports."""
        recorded: list[str] = await self.page.evaluate("window.__cspViolations || []")
        reported = [text for text in self.console_errors if CSP_REPORT.search(text)]
        return recorded + reported


def _chromium_or_skip() -> str:
    """Debian's chromium; the tests skip without it, naming the fix (and fail under CI,
    whose .ci/run installs it), as the e2e suite's optional clients do."""
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} is missing: the browser tests use Debian's chromium "
            "(apt-get install chromium; .ci/run installs it)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(CHROMIUM)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian chromium; `--no-sandbox` because tests run as root in CI."""
    executable = _chromium_or_skip()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def npm_registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    """left-pad 1.0.0 and 1.3.0 (old) and 1.4.0 (5 h old, `latest`: held)."""
    now = datetime.now(UTC)
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=now - timedelta(days=400))
    registry.add_version("left-pad", "1.3.0", published=now - timedelta(days=90))
    registry.add_version("left-pad", "1.4.0", published=now - YOUNG_PUBLISHED)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
async def mirror(start_mirror: StartMirror, npm_registry: FakeNpmRegistry) -> RunningMirror:
    return await start_mirror(
        {
            "MIRROR_NPM_UPSTREAM": npm_registry.url,
            "MIRROR_QUARANTINE": QUARANTINE,
            "MIRROR_ADMIN_TOKENS": f"alice:{ADMIN}",
            "MIRROR_ADMIN_READ_TOKENS": f"auditor:{READER}",
        }
    )


@pytest.fixture
async def ui(
    browser: Browser, mirror: RunningMirror, npm_registry: FakeNpmRegistry, tmp_path: Path
) -> AsyncIterator[Dashboard]:
    """A fresh browser context (no cookies) and page on the mirror, for one test."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    context.set_default_navigation_timeout(PAGE_TIMEOUT_MS)
    await context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = await context.new_page()
    dashboard = Dashboard(
        page=page,
        mirror=mirror,
        registry=npm_registry,
        npm=NpmEnv(mirror=mirror, registry=npm_registry, root=tmp_path / "clients"),
    )

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            dashboard.console_errors.append(message.text)

    def on_page_error(error: Error) -> None:
        dashboard.page_errors.append(str(error))

    async def on_dialog(dialog: Dialog) -> None:
        dashboard.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("dialog", on_dialog)
    try:
        yield dashboard
    finally:
        await context.close()
