"""The Maven adapter: a repository root at `/maven/` that hides quarantined and blocked
versions. `create(services)` is what the app calls; the pure parts (`paths`, `document`)
import nothing of aiohttp, so `routes` is imported only when the adapter is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mirror.ecosystems.maven.routes import MavenRepository
    from mirror.services import Services

__all__ = ["create"]


def create(services: Services) -> MavenRepository:
    from mirror.ecosystems.maven.routes import MavenRepository

    return MavenRepository(services)
