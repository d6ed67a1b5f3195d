"""PyPI content negotiation: the form each client's `Accept` header gets."""

from __future__ import annotations

import pytest

from mirror.ecosystems.pypi import negotiation

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
POETRY_ACCEPT = "application/vnd.pypi.simple.v1+json, */*;q=0.1"


@pytest.mark.parametrize(
    ("accept", "form"),
    [
        (PIP_ACCEPT, "json"),
        (UV_ACCEPT, "json"),
        (POETRY_ACCEPT, "json"),
        (None, "text-html"),
        ("", "text-html"),
        ("*/*", "text-html"),
        ("text/html", "text-html"),
        ("application/json", "text-html"),  # nothing we offer: PyPI answers HTML
        ("application/vnd.pypi.simple.v1+html", "v1-html"),
        ("application/vnd.pypi.simple.latest+json", "json"),
        ("application/vnd.pypi.simple.v1+json;q=0.5, text/html", "text-html"),
        ("application/vnd.pypi.simple.v1+json;q=0, */*", "text-html"),
        ("application/vnd.pypi.simple.v1+json;q=0, text/html;q=0", None),
        ("*/*;q=0", None),
    ],
)
def test_choose_form(accept: str | None, form: str | None) -> None:
    assert negotiation.choose_form(accept) == form
