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
