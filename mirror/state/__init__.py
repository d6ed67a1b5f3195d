"""Shared state: the `StateStore` interface, its record types, and `create_state`, which picks
the backend from settings (Redis when `state.redis_url` is set, else SQLite in the data dir).
Nothing here holds state itself; the app owns the store it gets.

The backends are imported only when one is created, so that the pure modules (policy, the
document parsers) can use the record types without loading any I/O library."""

from __future__ import annotations

from mirror.clock import Clock
from mirror.config import Config
from mirror.model import (
    RULE_KINDS,
    AuditEntry,
    DownloadEvent,
    IdentityTotal,
    RuleKind,
    RuleRecord,
)
from mirror.state.base import AuditPage, StateStore

__all__ = [
    "RULE_KINDS",
    "AuditEntry",
    "AuditPage",
    "DownloadEvent",
    "IdentityTotal",
    "RuleKind",
    "RuleRecord",
    "StateStore",
    "backend_name",
    "create_state",
]

STATE_FILENAME = "state.sqlite3"


def create_state(config: Config, *, clock: Clock | None = None) -> StateStore:
    """The configured backend, not yet opened: `RedisState` on `config.state.redis_url` if
    set, else `LocalState` at `<state_dir>/state.sqlite3` (`state_dir` is `data_dir` unless
    set) polling every `state.poll_interval`; both keep the ledger for
    `state.ledger_retention` and the audit for `admin.audit_retention`."""
    if config.state.redis_url:
        from mirror.state.redis import RedisState

        return RedisState(
            config.state.redis_url,
            clock=clock,
            ledger_retention=config.state.ledger_retention,
            audit_retention=config.admin.audit_retention,
        )
    from mirror.state.local import LocalState

    return LocalState(
        config.state_directory / STATE_FILENAME,
        poll_interval=config.state.poll_interval,
        clock=clock,
        ledger_retention=config.state.ledger_retention,
        audit_retention=config.admin.audit_retention,
    )


def backend_name(state: StateStore) -> str:
    """`local` or `redis`: the `backend` label of `mirror_state_errors_total`."""
    return type(state).__name__.removesuffix("State").lower() or "unknown"
