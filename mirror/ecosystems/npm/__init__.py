"""The npm adapter: a registry root at `/npm/` that hides quarantined and blocked versions.
`create(services)` is what the app calls; the pure packument logic lives in `document` and
`names`, which import nothing of aiohttp (so `routes` is imported only when needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mirror.ecosystems.npm.routes import NpmRegistry
    from mirror.services import Services

__all__ = ["create"]


def create(services: Services) -> NpmRegistry:
    from mirror.ecosystems.npm.routes import NpmRegistry

    return NpmRegistry(services)
