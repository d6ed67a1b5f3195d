"""PyPI simple-index content negotiation, pure: which representation (PEP 691 JSON, PEP 503
HTML as `application/vnd.pypi.simple.v1+html` or as `text/html`) an `Accept` header asks for,
and what the mirror asks its upstream for."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Literal

Form = Literal["json", "v1-html", "text-html"]
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
TEXT_HTML_TYPE = "text/html"
CONTENT_TYPES: Mapping[Form, str] = {
    "json": JSON_TYPE,
    "v1-html": HTML_TYPE,
    "text-html": "text/html; charset=utf-8",
}
# What the mirror asks the upstream for: PEP 691 JSON (it alone carries upload-time), HTML
# from index servers that have nothing else.
UPSTREAM_ACCEPT = f"{JSON_TYPE}, {HTML_TYPE};q=0.2, {TEXT_HTML_TYPE};q=0.01"
_JSON_OFFERS: frozenset[str] = frozenset({JSON_TYPE, "application/vnd.pypi.simple.latest+json"})
_HTML_OFFERS: frozenset[str] = frozenset({HTML_TYPE, "application/vnd.pypi.simple.latest+html"})


def _form_for(accept: str | None) -> Form | None:
    """The representation for an `Accept` header, or None (406) when the client refuses
    every one with q=0. No header, `*/*`, or nothing we offer named → `text/html` (what PyPI
    does; pip discards a page whose type it does not know). JSON wins only with a strictly
    higher q or an equal q when named explicitly (pip, uv and Poetry put it first, q=1)."""
    if not accept or not accept.strip():
        return "text-html"
    json_q: float | None = None
    v1_q: float | None = None
    text_q: float | None = None
    wildcard_q: float | None = None
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value.strip())))
                except ValueError:
                    q = 0.0
        if media in _JSON_OFFERS:
            json_q = max(json_q or 0.0, q)
        elif media in _HTML_OFFERS:
            v1_q = max(v1_q or 0.0, q)
        elif media == TEXT_HTML_TYPE:
            text_q = max(text_q or 0.0, q)
        elif media in ("*/*", "text/*"):
            wildcard_q = max(wildcard_q or 0.0, q)
    html_named = max(v1_q or 0.0, text_q or 0.0) if (v1_q, text_q) != (None, None) else None
    html_q = html_named if html_named is not None else wildcard_q
    if json_q is None and html_q is None:
        return "text-html"
    best_json = json_q or 0.0
    best_html = html_q or 0.0
    if best_json <= 0 and best_html <= 0:
        return None
    if best_json > best_html or (best_json == best_html and json_q is not None):
        return "json"
    if v1_q is not None and v1_q >= (text_q or 0.0):
        return "v1-html"
    return "text-html"


# Clients send a handful of distinct Accept headers. Cached by wrapping, not by decorating:
# mutation testing (mutmut) leaves decorated functions alone, and this one it must test.
choose_form = functools.lru_cache(maxsize=256)(_form_for)
