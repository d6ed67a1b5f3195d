"""Where the dashboard goes after a login (`guard.local_target`): a dashboard path only, in
every spelling of a way out (dot segments, percent-encoded or not, other hosts, the login
page itself), else the overview."""

from __future__ import annotations

import pytest

from mirror.ui.guard import HOME_PATH, local_target


@pytest.mark.parametrize(
    "target",
    [
        "/ui/",
        "/ui/queue",
        "/ui/queue?ecosystem=npm",
        "/ui/explain?q=npm+left-pad%401.0.0",
        "/ui/review?ecosystem=maven&package=org.example:lib&version=1.0",
        "/ui/a/../queue",  # climbs, but stays under /ui/
        "/ui/queue/..",
        "/ui/impact?versions=..%2F..",  # dots in the query are no path segments
        "/ui/file..name",
    ],
)
def test_dashboard_paths_are_kept(target: str) -> None:
    assert local_target(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "/ui/../../api/v1/rules",
        "/ui/../api/v1/blocks",
        "/ui/..",
        "/ui/%2e%2e/api/v1/rules",
        "/ui/%2E%2E/api/v1/rules",
        "/ui/.%2e/api/v1/rules",
        "/ui/%2e./api/v1/rules",
        "/ui/%2e%2e%2fapi/v1/rules",
        "/ui/..%2Fapi/v1/rules",
        "/ui/%252e%252e/api/v1/rules",  # encoded twice
        "/ui/%25252e%25252e%25252fapi",  # three times
        "/ui/queue/../../npm/left-pad",
        "/ui/./../login",
        "/ui/a/%2e%2e/%2e%2e/api",
        "/ui/../ui/login",  # the login page, reached by a detour
        "/ui/login?next=/ui/",
        "/ui/%2F%2Fevil.example/",
        "/ui/%5C%5Cevil.example/",
        "/ui/\\evil",
        "//evil.example/ui/",
        "https://evil.example/ui/",
        "/api/v1/blocks",
        "/ui",
        "/ui/\r\nSet-Cookie:x=1",
        "/ui/%0d%0aSet-Cookie:x=1",
    ],
)
def test_every_way_out_goes_to_the_overview(target: str | None) -> None:
    assert local_target(target) == HOME_PATH
