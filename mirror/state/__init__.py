"""Shared state: the `StateStore` interface, its record types, and `create_state`, which picks
the backend from settings (Redis when `state.redis_url` is set, else SQLite in the data dir).
Nothing here holds state itself; the app owns the store it gets."""

from __future__ import annotations

from mirror.clock import Clock
from mirror.config import Config
from mirror.state.base import (
    RULE_KINDS,
    AuditEntry,
    DownloadEvent,
    RuleKind,
    RuleRecord,
    StateStore,
)
from mirror.state.local import LocalState
from mirror.state.redis import RedisState

__all__ = [
    "RULE_KINDS",
    "AuditEntry",
    "DownloadEvent",
    "LocalState",
    "RedisState",
    "RuleKind",
    "RuleRecord",
    "StateStore",
    "create_state",
]

STATE_FILENAME = "state.sqlite3"


def create_state(config: Config, *, clock: Clock | None = None) -> StateStore:
    """The configured backend, not yet opened: `RedisState` on `config.state.redis_url` if
    set, else `LocalState` at `<data_dir>/state.sqlite3` polling every `state.poll_interval`."""
    if config.state.redis_url:
        return RedisState(config.state.redis_url, clock=clock)
    return LocalState(
        config.data_dir / STATE_FILENAME, poll_interval=config.state.poll_interval, clock=clock
    )
