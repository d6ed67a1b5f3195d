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


@pytest.mark.parametrize(
    ("accept", "form"),
    [
        ("  ", "text-html"),
        (",,;q=1", "text-html"),  # empty items are skipped
        (" , application/vnd.pypi.simple.v1+json", "json"),  # ... and what follows them read
        ("application/vnd.pypi.simple.v1+json;q=0.5=1, text/html;q=0.5", "text-html"),  # bad q
        ("application/vnd.pypi.simple.v1+json, text/html;q=5", "json"),  # both capped at 1
        ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", "json"),  # media types are case-insensitive
        ("application/vnd.pypi.simple.v1+json; Q=0", None),  # the q key is case-insensitive
        ("application/vnd.pypi.simple.v1+json;q=x, text/html;q=0.1", "text-html"),  # bad q: 0
        ("application/vnd.pypi.simple.v1+json;q=5, text/html", "json"),  # q capped at 1
        ("application/vnd.pypi.simple.v1+json;q=-1, */*;q=0", None),  # q floored at 0
        ("application/vnd.pypi.simple.v1+json;level=1;q=0.9, text/html;q=0.8", "json"),
        ("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.5", "json"),  # tie: JSON
        ("application/vnd.pypi.simple.v1+json;q=0.5, */*;q=0.5", "json"),
        ("application/vnd.pypi.simple.v1+json;q=0.4, */*;q=0.5", "text-html"),
        ("application/vnd.pypi.simple.v1+json;q=0.4, text/*;q=0.5", "text-html"),
        ("application/vnd.pypi.simple.v1+json;q=0.6, text/*;q=0.5", "json"),
        ("text/*;q=0", None),
        ("application/vnd.pypi.simple.latest+html", "v1-html"),
        ("application/vnd.pypi.simple.v1+html;q=0.5, text/html;q=0.5", "v1-html"),
        ("application/vnd.pypi.simple.v1+html;q=0.4, text/html;q=0.5", "text-html"),
        ("application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0", "v1-html"),
        # The highest q of a type named twice counts.
        ("text/html;q=0.1, application/vnd.pypi.simple.v1+json;q=0.5, text/html;q=0.9",
         "text-html"),
        ("application/vnd.pypi.simple.v1+json;q=0.9, text/html;q=0.5, "
         "application/vnd.pypi.simple.v1+json;q=0.1", "json"),
        ("application/vnd.pypi.simple.v1+html;q=0.9, application/vnd.pypi.simple.v1+html;q=0.1,"
         " text/html;q=0.5", "v1-html"),
        ("*/*;q=0.2, */*;q=0.1, application/vnd.pypi.simple.v1+json;q=0.15", "text-html"),
        ("application/vnd.pypi.simple.v1+html, */*;q=0", "v1-html"),  # named HTML beats */*
    ],
)  # fmt: skip
def test_choose_form_details(accept: str, form: str | None) -> None:
    assert negotiation.choose_form(accept) == form


def test_content_types_and_what_the_mirror_asks_for() -> None:
    assert negotiation.CONTENT_TYPES == {
        "json": "application/vnd.pypi.simple.v1+json",
        "v1-html": "application/vnd.pypi.simple.v1+html",
        "text-html": "text/html; charset=utf-8",
    }
    # The upstream is asked for JSON first (it alone carries upload times), HTML after.
    assert negotiation.choose_form(negotiation.UPSTREAM_ACCEPT) == "json"
    assert negotiation.UPSTREAM_ACCEPT == (
        "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
        "text/html;q=0.01"
    )
