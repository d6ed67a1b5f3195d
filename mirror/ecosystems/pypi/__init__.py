"""The PyPI adapter: a simple index at `/pypi/simple/` (PEP 503 HTML and PEP 691 JSON) that
hides files younger than the quarantine age, each by its own upload time, and refuses
blocked versions. `create(services)` is what the app calls; the pure logic lives in `names`,
`negotiation` (Accept), `links` (which file links may be fetched), `simple` (project pages
and the project list) and `jsonapi` (the legacy JSON API), which import nothing of aiohttp
(so `routes` is imported only when needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mirror.ecosystems.pypi.routes import PypiIndex
    from mirror.services import Services

__all__ = ["create"]


def create(services: Services) -> PypiIndex:
    from mirror.ecosystems.pypi.routes import PypiIndex

    return PypiIndex(services)
