"""The dashboard in a real browser (Debian's headless chromium) against `mirror serve`: log
in by typing the token, the overview, the explain page (a held version, a hostile query),
the CSP, the keyboard, read-only logins and logging out, with a screenshot of each page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.async_api import expect

from tests.browser.conftest import (
    ADMIN,
    READER,
    YOUNG_PUBLISHED,
    Dashboard,
    screenshot,
)

# The navigation bar's links, as base.html lists them.
NAV_LINKS = (
    "Overview",
    "Quarantine queue",
    "Blocks & exemptions",
    "Explain",
    "Impact",
    "Audit log",
    "Takedowns",
)
NAV_PAGES = {
    "queue": "/ui/queue",
    "rules": "/ui/rules",
    "impact": "/ui/impact",
    "audit": "/ui/audit",
    "events": "/ui/events",
}


async def test_logging_in_with_the_admin_token_shows_the_overview_and_who(ui: Dashboard) -> None:
    await ui.goto("/ui/login")
    await expect(ui.page.get_by_role("heading", name="Log in")).to_be_visible()
    await screenshot(ui.page, "login")
    await ui.log_in()
    await expect(ui.page.get_by_text("alice (admin)")).to_be_visible()
    await expect(ui.page.get_by_role("button", name="Log out")).to_be_visible()
    navigation = ui.page.get_by_role("navigation", name="Dashboard")
    for label in NAV_LINKS:
        await expect(navigation.get_by_role("link", name=label, exact=True)).to_be_visible()
    current = navigation.get_by_role("link", name="Overview", exact=True)
    await expect(current).to_have_attribute("aria-current", "page")
    await screenshot(ui.page, "overview")
    assert ui.page_errors == []
    assert await ui.csp_violations() == []


async def test_a_wrong_token_is_refused_on_the_form(ui: Dashboard) -> None:
    await ui.goto("/ui/login")
    await ui.page.get_by_label("Admin or read-only admin token").fill("not-a-token")
    await ui.page.get_by_role("button", name="Log in").click()
    await expect(ui.page.get_by_role("alert")).to_have_text(
        "That is not an admin or read-only admin token here."
    )
    assert ui.page.url.startswith(ui.url("/ui/login"))
    await screenshot(ui.page, "login-refused")


async def test_explain_shows_a_young_version_quarantined_until_its_time(ui: Dashboard) -> None:
    await ui.log_in()
    await ui.page.get_by_role("link", name="Explain", exact=True).click()
    await ui.page.wait_for_url(ui.url("/ui/explain"))
    await ui.page.get_by_label("Version").fill("npm left-pad@1.4.0")
    await ui.page.get_by_role("button", name="Explain").click()
    verdict = ui.page.get_by_role("heading", level=2)
    await expect(verdict).to_contain_text("quarantined")
    await expect(verdict).to_contain_text("left-pad 1.4.0")
    # Published 5 h ago, held for 3 days: free in 2 days and 19 hours (to the minute as
    # shown; either side of a minute boundary while the test runs).
    published = ui.registry.version("left-pad", "1.4.0").published
    assert published is not None
    until = published + timedelta(days=3)
    assert abs(datetime.now(UTC) - YOUNG_PUBLISHED - published) < timedelta(minutes=5)
    shown = ui.page.locator("dt:text-is('Until') + dd")
    expected = {
        (until + timedelta(minutes=delta)).strftime("%Y-%m-%d %H:%M UTC") for delta in (-1, 0, 1)
    }
    assert await shown.inner_text() in expected
    await expect(ui.page.get_by_role("link", name="Review this version")).to_be_visible()
    await screenshot(ui.page, "explain")
    assert await ui.csp_violations() == []


async def test_a_hostile_query_is_shown_as_text_and_injects_nothing(ui: Dashboard) -> None:
    await ui.log_in()
    await ui.goto("/ui/explain")
    hostile = 'npm <img src=x onerror="alert(1);window.__pwned=1">@1.0.0'
    await ui.page.get_by_label("Version").fill(hostile)
    await ui.page.get_by_role("button", name="Explain").click()
    # Refused, and the refusal quotes the name as text.
    await expect(ui.page.get_by_role("alert")).to_contain_text('<img src=x onerror="alert(1)')
    # The query comes back as the field's text, exactly as typed, and nowhere as markup.
    await expect(ui.page.get_by_label("Version")).to_have_value(hostile)
    injected = await ui.page.evaluate(
        "({images: document.querySelectorAll('img').length,"
        " handlers: document.querySelectorAll('[onerror]').length,"
        " pwned: typeof window.__pwned})"
    )
    assert injected == {"images": 0, "handlers": 0, "pwned": "undefined"}
    assert ui.dialogs == []
    assert ui.page_errors == []
    await screenshot(ui.page, "explain-hostile-query")


async def test_every_page_carries_the_csp_and_breaks_none_of_it(ui: Dashboard) -> None:
    response = await ui.page.goto(ui.url("/ui/login"))
    assert response is not None
    policy = await response.header_value("Content-Security-Policy")
    assert policy is not None
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    await ui.log_in()
    for path in ("/ui/", "/ui/explain?q=npm+left-pad%401.3.0", *NAV_PAGES.values()):
        response = await ui.page.goto(ui.url(path))
        assert response is not None
        assert response.status == 200, path
        assert await response.header_value("Content-Security-Policy") == policy, path
        assert await ui.csp_violations() == [], path
    assert ui.page_errors == []
    assert [text for text in ui.console_errors if "Content Security Policy" in text] == []
    # The listener does see a violation when there is one: an image from another origin.
    await ui.page.evaluate(
        "() => { const image = document.createElement('img');"
        " image.src = 'http://127.0.0.1:9/elsewhere.png'; document.body.append(image); }"
    )
    await ui.page.wait_for_function("window.__cspViolations.length > 0")
    assert any("img-src" in violation for violation in await ui.csp_violations())


async def test_the_keyboard_reaches_the_navigation_and_the_field_is_labelled(
    ui: Dashboard,
) -> None:
    await ui.goto("/ui/login")
    label = ui.page.locator("label[for=token]")
    await expect(label).to_be_visible()
    await expect(label).to_have_text("Admin or read-only admin token")
    await ui.page.keyboard.press("Tab")  # the skip link first
    await ui.page.keyboard.press("Tab")
    focused = await ui.page.evaluate("document.activeElement.id")
    assert focused == "token"
    await ui.page.keyboard.type(ADMIN)
    await ui.page.keyboard.press("Enter")
    await ui.page.wait_for_url(ui.url("/ui/"))
    reached: list[str] = []
    for _ in range(len(NAV_LINKS) + 2):
        await ui.page.keyboard.press("Tab")
        reached.append(await ui.page.evaluate("document.activeElement.textContent.trim()"))
    assert reached[0] == "Skip to content"
    assert reached[1 : 1 + len(NAV_LINKS)] == list(NAV_LINKS)
    assert reached[-1] == "Log out"
    # The focused control (the logout button, next after the links) shows a focus outline.
    outline = await ui.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


async def test_a_read_only_login_says_so(ui: Dashboard) -> None:
    await ui.log_in(READER)
    await expect(ui.page.get_by_text("auditor (read-only)")).to_be_visible()
    await screenshot(ui.page, "overview-read-only")


async def test_logging_out_goes_back_to_the_login_and_pages_need_it_again(
    ui: Dashboard,
) -> None:
    await ui.log_in()
    await ui.goto("/ui/explain?q=npm+left-pad%401.3.0")
    await expect(ui.page.get_by_role("heading", level=2)).to_contain_text("allowed")
    await ui.page.get_by_role("button", name="Log out").click()
    await ui.page.wait_for_url(ui.url("/ui/login"))
    await expect(ui.page.get_by_role("heading", name="Log in")).to_be_visible()
    await expect(ui.page.get_by_role("button", name="Log out")).to_have_count(0)
    for path in ("/ui/", "/ui/explain?q=npm+left-pad%401.3.0", "/ui/queue"):
        await ui.goto(path)
        assert ui.page.url.startswith(ui.url("/ui/login?next=")), path
        await expect(ui.page.get_by_label("Admin or read-only admin token")).to_be_visible()
    await screenshot(ui.page, "logged-out")


async def test_a_screenshot_of_every_page_in_the_navigation(ui: Dashboard) -> None:
    await ui.log_in()
    for name, path in NAV_PAGES.items():
        await ui.goto(path)
        await expect(ui.page.locator("main h1")).to_be_visible()
        link = ui.page.get_by_role("navigation", name="Dashboard").locator(f"a[href='{path}']")
        await expect(link).to_have_attribute("aria-current", "page")
        assert (await screenshot(ui.page, name)).exists()
    assert ui.page_errors == []
