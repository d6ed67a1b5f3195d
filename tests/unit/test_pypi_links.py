"""Which upstream file links the mirror may fetch from, and the one log line per document
for those it leaves out."""

from __future__ import annotations

import pytest

from mirror.ecosystems.pypi import links
from tests.unit.pypi_samples import HOSTS


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://files.test/a.whl", None),
        ("HTTPS://FILES.TEST/a.whl", None),
        ("file:///a.whl", "scheme 'file' is not http(s)"),
        ("data:,a", "scheme 'data' is not http(s)"),
        ("relative/a.whl", "scheme '(none)' is not http(s)"),
        ("http:///a.whl", "its URL names no host"),
        ("http://evil.test/a.whl", "host 'evil.test' is not an allowed file host"),
        ("http://files.test:8443/a.whl", "host 'files.test:8443' is not an allowed file host"),
    ],
)
def test_link_problem(url: str, problem: str | None) -> None:
    assert links.link_problem(url, HOSTS) == problem


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://files.test/a.whl", None),
        ("http://files.test:80/a.whl", None),  # the default port is the host's own key
        ("https://files.test:443/a.whl", None),
        ("https://files.test:80/a.whl", "host 'files.test:80' is not an allowed file host"),
        ("http://[::1]/a.whl", "host '[::1]' is not an allowed file host"),
        ("http://files.test:99999/a.whl", "its URL is not valid"),
        ("JAVASCRIPT:alert(1)", "scheme 'javascript' is not http(s)"),
        ("http://évil.test/a.whl", "host 'xn--vil-9la.test' is not an allowed file host"),
    ],
)
def test_link_problem_details(url: str, problem: str | None) -> None:
    assert links.link_problem(url, HOSTS) == problem


def test_link_problem_with_a_port_in_the_allowlist() -> None:
    allowed = frozenset({"files.test:8443", "[::1]"})
    assert links.link_problem("https://files.test:8443/a.whl", allowed) is None
    assert links.link_problem("http://[::1]/a.whl", allowed) is None
    assert links.link_problem("https://files.test/a.whl", allowed) == (
        "host 'files.test' is not an allowed file host"
    )


def test_resolve() -> None:
    assert (
        links.resolve("http://up.test/simple/demo/", "../x/a.whl")
        == "http://up.test/simple/x/a.whl"
    )
    assert links.resolve("http://up.test/simple/demo/", "http://[::1/a") is None


def test_skipped_links_log_line_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    skipped = [(f"file-{number}" + "x" * 200 * (number == 0), "why") for number in range(7)]
    with caplog.at_level("WARNING", logger="mirror.ecosystems.pypi.links"):
        links.log_skipped_links("dé\nmo", "page", skipped)
        links.log_skipped_links("demo", "page", [])
    (record,) = caplog.records
    long_name = "file-0" + "x" * 114 + "..."
    assert record.getMessage() == (
        f"skipped 7 file link(s) on the upstream page of 'd\\xe9\\nmo': '{long_name}': why; "
        "'file-1': why; 'file-2': why; 'file-3': why; 'file-4': why; and 2 more"
    )


def test_skipped_links_of_exactly_the_shown_number_say_no_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    skipped = [("x" * 120, "a"), ("b", "c"), ("d", "e"), ("f", "g"), ("h", "i")]
    with caplog.at_level("WARNING", logger="mirror.ecosystems.pypi.links"):
        links.log_skipped_links("demo", "JSON API", skipped)
    (record,) = caplog.records
    assert record.getMessage() == (
        f"skipped 5 file link(s) on the upstream JSON API of 'demo': '{'x' * 120}': a; "
        "'b': c; 'd': e; 'f': g; 'h': i"
    )


def test_one_more_than_shown_is_said(caplog: pytest.LogCaptureFixture) -> None:
    skipped = [(name, "why") for name in "abcdef"]
    with caplog.at_level("WARNING", logger="mirror.ecosystems.pypi.links"):
        links.log_skipped_links("demo", "page", skipped)
    (record,) = caplog.records
    assert record.getMessage().endswith("'e': why; and 1 more")
