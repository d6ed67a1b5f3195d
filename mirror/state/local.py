"""Embedded shared state: one SQLite file in the data dir (WAL), shared by the worker processes of
one machine. All SQLite calls run on one private thread per store, never on the event loop.
Limits: one machine only (no network filesystems); the ledger and the audit log are pruned by
age (and capped) as `state.base` describes, the same as on Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from mirror.clock import Clock, SystemClock
from mirror.errors import StateUnavailable
from mirror.holds import (
    HOLDS_KEPT,
    HOLDS_RETENTION,
    REQUESTERS_KEPT,
    REQUESTERS_SHOWN,
    HeldVersion,
    HoldEvent,
    Requester,
    merged_events,
    said_micros,
)
from mirror.model import (
    AuditEntry,
    DownloadEvent,
    IdentityTotal,
    RuleKind,
    RuleRecord,
    TakedownEvent,
)
from mirror.state.base import (
    AUDIT_CAP,
    AUDIT_RETENTION,
    DOWNLOADS_KEPT,
    LEDGER_RETENTION,
    AuditPage,
    DownloadPage,
    FetchHolder,
    InvalidPosition,
    StateIdentity,
    sort_identities,
)
from mirror.takedowns import EVENTS_KEPT, event_from_json, event_to_json
from mirror.traffic import FIGURES, TRAFFIC_RETENTION, TrafficCount, summed

log = logging.getLogger("mirror.state")

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
# SQLite waits this long for another process's write lock before giving up with "locked".
_BUSY_TIMEOUT_MS = 2000
_LOCKED_RETRIES = 3
# Admin writes wait longer: several writers at once (an incident) must all succeed.
_ADMIN_LOCKED_RETRIES = 10
# Rows one write prunes at most (the rest goes with the next writes): a write stays quick.
_PRUNE_BATCH = 1000
# The ledger is pruned by age at most this often per store.
_LEDGER_PRUNE_EVERY = timedelta(minutes=1)
_REPLACED_SETTLE_SECONDS = 0.2
# A `downloads_page` position: "at:seq", both within SQLite's 64-bit integers.
_POSITION = re.compile(r"-?[0-9]{1,18}:[0-9]{1,18}")

# One row per (file, client address, read token): first seen, last seen, how many times, and
# what the client said about itself in its latest download (attributes "" = not said).
_LEDGER_TABLE = """CREATE TABLE IF NOT EXISTS {name} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ecosystem TEXT NOT NULL, package TEXT NOT NULL,
    version TEXT NOT NULL, filename TEXT NOT NULL, client TEXT NOT NULL,
    first_at INTEGER NOT NULL, last_at INTEGER NOT NULL, count INTEGER NOT NULL,
    token TEXT NOT NULL DEFAULT '', user_agent TEXT NOT NULL DEFAULT '',
    ci TEXT NOT NULL DEFAULT '', command TEXT NOT NULL DEFAULT '',
    session TEXT NOT NULL DEFAULT '',
    UNIQUE (ecosystem, package, version, filename, client, token))"""
_LEDGER_KEY = "ecosystem, package, version, filename, client, token"
# A ledger row as `downloads_page` reads it (the position is (first_at, seq)).
_LEDGER_ROW = "version, filename, client, token, first_at, last_at, count, user_agent, ci, "
_LEDGER_ROW += "command, session, seq"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('policy_version', 0)",
    """CREATE TABLE IF NOT EXISTS rules (
        kind TEXT NOT NULL, id TEXT NOT NULL, ecosystem TEXT NOT NULL, package TEXT NOT NULL,
        versions TEXT NOT NULL, reason TEXT NOT NULL, created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL, expires_at INTEGER, data TEXT NOT NULL,
        PRIMARY KEY (kind, id))""",
    """CREATE TABLE IF NOT EXISTS publish_times (
        ecosystem TEXT NOT NULL, key TEXT NOT NULL, at INTEGER NOT NULL,
        PRIMARY KEY (ecosystem, key))""",
    """CREATE TABLE IF NOT EXISTS digests (
        ecosystem TEXT NOT NULL, key TEXT NOT NULL, digest TEXT NOT NULL,
        PRIMARY KEY (ecosystem, key))""",
    _LEDGER_TABLE.format(name="ledger"),
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
        client TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, before TEXT,
        after TEXT)""",
    # Written once (`claim_identity`): a file deleted or replaced comes back without it.
    """CREATE TABLE IF NOT EXISTS identity (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1), value TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS identity_restored_from (value TEXT PRIMARY KEY)",
    # The dashboard's traffic figures: one row per ecosystem per minute (`mirror.traffic`).
    # A column per summed figure, named as the figure (`traffic.FIGURES`).
    "CREATE TABLE IF NOT EXISTS traffic (ecosystem TEXT NOT NULL, minute INTEGER NOT NULL, "
    + "".join(f"{figure} INTEGER NOT NULL, " for figure in FIGURES)
    + "last_error TEXT NOT NULL, PRIMARY KEY (minute, ecosystem))",
    # A loss a degraded worker published, with its last-known copy (`publish_loss`).
    """CREATE TABLE IF NOT EXISTS lost (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1), identity TEXT NOT NULL,
        version INTEGER NOT NULL, copy BLOB NOT NULL)""",
)
# Run after _SCHEMA and the upgrade (which may rebuild the ledger table).
_LEDGER_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ledger_by_package ON ledger (ecosystem, package, first_at)",
    "CREATE INDEX IF NOT EXISTS ledger_by_last_seen ON ledger (last_at)",
    # The per-package cap keeps the most recently seen rows; `since` reads by it too.
    "CREATE INDEX IF NOT EXISTS ledger_by_package_seen ON ledger (ecosystem, package, last_at)",
)
# Run after _SCHEMA, once each (they check what the file already has): the ledger of earlier
# versions (one row per noted download) folded into rows, and the audit's `pinned` flag (the
# creation entry of a stored rule: never pruned while the rule lives).
_AUDIT_INDEXES = (
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at, seq)",
    "CREATE INDEX IF NOT EXISTS audit_by_target ON audit (target, at, seq)",
    "CREATE INDEX IF NOT EXISTS audit_by_actor ON audit (actor, at, seq)",
    "CREATE INDEX IF NOT EXISTS audit_prunable ON audit (pinned, at, seq)",
)
_TRAFFIC_COLUMNS = ", ".join(("ecosystem", "minute", *FIGURES, "last_error"))
# Sums a bucket's numbers; a later non-empty error kind replaces the stored one.
_ADD_TRAFFIC = (
    f"INSERT INTO traffic ({_TRAFFIC_COLUMNS}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join('?' * (len(FIGURES) + 3))}) "
    "ON CONFLICT (minute, ecosystem) DO UPDATE SET "
    + ", ".join(f"{figure} = {figure} + excluded.{figure}" for figure in FIGURES)
    + ", last_error = CASE WHEN excluded.last_error != '' THEN excluded.last_error "
    "ELSE last_error END"
)
# Takedown events (`mirror.takedowns`): one row per event id, its data as JSON.
_EVENTS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS takedowns (
        id TEXT PRIMARY KEY, at INTEGER NOT NULL, ecosystem TEXT NOT NULL,
        package TEXT NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS takedowns_by_time ON takedowns (at, id)",
    "CREATE INDEX IF NOT EXISTS takedowns_by_package ON takedowns (ecosystem, package, at, id)",
)
# The quarantine queue (`mirror.holds`): one row per held version, and its requesters (at most
# REQUESTERS_KEPT per version; `more` is when a requester was last only counted, in
# microseconds, 0 = never: shown while that is within HOLDS_RETENTION).
_HOLDS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS holds (
        ecosystem TEXT NOT NULL, package TEXT NOT NULL, version TEXT NOT NULL,
        published_at INTEGER, until INTEGER, first_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL, count INTEGER NOT NULL, more INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (ecosystem, package, version))""",
    "CREATE INDEX IF NOT EXISTS holds_by_last ON holds (ecosystem, last_at)",
    """CREATE TABLE IF NOT EXISTS hold_requesters (
        ecosystem TEXT NOT NULL, package TEXT NOT NULL, version TEXT NOT NULL,
        client TEXT NOT NULL, token TEXT NOT NULL, last_at INTEGER NOT NULL,
        PRIMARY KEY (ecosystem, package, version, client, token))""",
    "CREATE INDEX IF NOT EXISTS hold_requesters_by_last ON hold_requesters (last_at)",
)
_UPSERT_HOLD = (
    "INSERT INTO holds (ecosystem, package, version, published_at, until, first_at, last_at, "
    "count) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ecosystem, package, version) DO UPDATE "
    "SET published_at = CASE WHEN excluded.last_at >= last_at THEN excluded.published_at "
    "ELSE published_at END, until = CASE WHEN excluded.last_at >= last_at THEN excluded.until "
    "ELSE until END, first_at = min(first_at, excluded.first_at), "
    "last_at = max(last_at, excluded.last_at), count = count + excluded.count"
)
_RULE_COLUMNS = (
    "id, kind, ecosystem, package, versions, reason, created_at, created_by, expires_at, data"
)


# A row added to the ledger (the key, first, last, count, then the attributes). Every SET
# expression reads the stored row as it was: the attributes of the later download win (on a
# tie, the one written last), as `DownloadEvent.merged` does.
_LATER = "CASE WHEN excluded.last_at >= last_at THEN excluded.{0} ELSE {0} END"
_UPSERT_ROW = (
    f"INSERT INTO ledger ({_LEDGER_KEY}, first_at, last_at, count, user_agent, ci, command, "  # noqa: S608 (constants)
    f"session) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT ({_LEDGER_KEY}) "
    "DO UPDATE SET first_at = min(first_at, excluded.first_at), "
    "last_at = max(last_at, excluded.last_at), count = count + excluded.count, "
    + ", ".join(
        f"{column} = {_LATER.format(column)}"
        for column in ("user_agent", "ci", "command", "session")
    )
)


def _position(text: str) -> tuple[int, int]:
    """(at, seq) of a position `downloads_page` issued as "at:seq"."""
    if not _POSITION.fullmatch(text):
        raise InvalidPosition(f"not a download position of this store: {text[:40]!r}")
    at, _, seq = text.partition(":")
    return int(at), int(seq)


def _micros(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError(f"state stores aware datetimes only, got naive {at!r}")
    return (at - _EPOCH) // _MICRO


def _minutes(at: datetime) -> int:
    """Whole minutes since the epoch, rounded down (a traffic bucket)."""
    return int((at - _EPOCH) // timedelta(minutes=1))


def _from_micros(value: int) -> datetime:
    return _EPOCH + value * _MICRO


def _dump(data: Mapping[str, Any] | None) -> str | None:
    return None if data is None else json.dumps(dict(data), separators=(",", ":"))


def _rule_row(rule: RuleRecord) -> tuple[Any, ...]:
    expires = None if rule.expires_at is None else _micros(rule.expires_at)
    return (
        rule.id,
        rule.kind,
        rule.ecosystem,
        rule.package,
        rule.versions,
        rule.reason,
        _micros(rule.created_at),
        rule.created_by,
        expires,
        _dump(rule.data),
    )


def _rule_from_row(row: tuple[Any, ...]) -> RuleRecord:
    rid, kind, ecosystem, package, versions, reason, created, by, expires, data = row
    return RuleRecord(
        id=rid,
        kind=cast(RuleKind, kind),
        ecosystem=ecosystem,
        package=package,
        versions=versions,
        reason=reason,
        created_at=_from_micros(created),
        created_by=by,
        expires_at=None if expires is None else _from_micros(expires),
        data=json.loads(data),
    )


class LocalState:
    """`StateStore` on a SQLite file. Several processes may open the same file: writes take
    SQLite's write lock (`BEGIN IMMEDIATE`), and `watch()` polls the policy counter every
    `poll_interval`, so changes from other processes arrive within one interval."""

    def __init__(
        self,
        path: Path,
        *,
        poll_interval: timedelta = timedelta(milliseconds=250),
        clock: Clock | None = None,
        downloads_kept: int = DOWNLOADS_KEPT,
        ledger_retention: timedelta = LEDGER_RETENTION,
        audit_retention: timedelta = AUDIT_RETENTION,
        audit_cap: int = AUDIT_CAP,
        events_kept: int = EVENTS_KEPT,
    ) -> None:
        if downloads_kept < 1 or audit_cap < 1 or events_kept < 1:
            raise ValueError("downloads_kept, audit_cap and events_kept must be at least 1")
        self.path = path
        self.poll_interval = poll_interval
        # The same retention as the Redis backend (state.base).
        self.downloads_kept = downloads_kept
        self.ledger_retention = ledger_retention
        self.audit_retention = audit_retention
        self.audit_cap = audit_cap
        self.events_kept = events_kept
        self.clock: Clock = clock or SystemClock()
        self._ledger_pruned_at: datetime | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Touched only on the executor's single thread.
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None

    # lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-sqlite")
        await self._run(lambda _conn: None, "open")  # the schema is made on connecting

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_conn)
        finally:
            executor.shutdown(wait=False)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone(), "ping")

    # rules -----------------------------------------------------------------------------------
    async def add_rule(self, rule: RuleRecord, *, audit: AuditEntry | None = None) -> None:
        row = _rule_row(rule)
        retention = self._audit_retention()

        def add(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute(
                    f"INSERT OR REPLACE INTO rules ({_RULE_COLUMNS}) "  # noqa: S608 (constant)
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                _bump(conn)
                # A replaced rule's creation entry is an ordinary entry from now on.
                _unpin(conn, rule.id)
                if audit is not None:
                    _insert_audit(conn, audit, pinned=True)
                _prune_audit(conn, *retention)

        await self._run(add, "add rule", retries=_ADMIN_LOCKED_RETRIES)

    async def remove_rule(
        self, kind: RuleKind, rule_id: str, *, audit: AuditEntry | None = None
    ) -> RuleRecord | None:
        retention = self._audit_retention()

        def remove(conn: sqlite3.Connection) -> RuleRecord | None:
            with _write(conn):
                row = conn.execute(
                    f"SELECT {_RULE_COLUMNS} FROM rules WHERE kind = ? AND id = ?",  # noqa: S608
                    (kind, rule_id),
                ).fetchone()
                if row is None:
                    return None
                conn.execute("DELETE FROM rules WHERE kind = ? AND id = ?", (kind, rule_id))
                _bump(conn)
                _unpin(conn, rule_id)
                if audit is not None:
                    _insert_audit(conn, audit, pinned=False)
                _prune_audit(conn, *retention)
                return _rule_from_row(row)

        return await self._run(remove, "remove rule", retries=_ADMIN_LOCKED_RETRIES)

    async def list_rules(self, kind: RuleKind | None = None) -> list[RuleRecord]:
        def select(conn: sqlite3.Connection) -> list[RuleRecord]:
            sql = f"SELECT {_RULE_COLUMNS} FROM rules"  # noqa: S608 (constant)
            params: tuple[str, ...] = ()
            if kind is not None:
                sql, params = sql + " WHERE kind = ?", (kind,)
            rows = conn.execute(sql + " ORDER BY created_at, id", params).fetchall()
            return [_rule_from_row(row) for row in rows]

        return await self._run(select, "list rules")

    # change notification ---------------------------------------------------------------------
    async def policy_version(self) -> int:
        return await self._run(_read_version, "read policy version")

    async def watch(self) -> AsyncIterator[int]:
        last = await self.policy_version()
        interval = self.poll_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            version = await self.policy_version()
            if version != last:
                last = version
                yield version

    # publish times and digests -----------------------------------------------------------------
    async def get_publish_time(self, ecosystem: str, key: str) -> datetime | None:
        def get(conn: sqlite3.Connection) -> datetime | None:
            row = conn.execute(
                "SELECT at FROM publish_times WHERE ecosystem = ? AND key = ?", (ecosystem, key)
            ).fetchone()
            return None if row is None else _from_micros(row[0])

        return await self._run(get, "read publish time")

    async def set_publish_time(self, ecosystem: str, key: str, at: datetime) -> None:
        micros = _micros(at)

        def put(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO publish_times (ecosystem, key, at) VALUES (?, ?, ?)",
                    (ecosystem, key, micros),
                )

        await self._run(put, "store publish time")

    async def remember_digest(self, ecosystem: str, key: str, digest: str) -> str:
        def remember(conn: sqlite3.Connection) -> str:
            with _write(conn):
                conn.execute(
                    "INSERT OR IGNORE INTO digests (ecosystem, key, digest) VALUES (?, ?, ?)",
                    (ecosystem, key, digest),
                )
                row = conn.execute(
                    "SELECT digest FROM digests WHERE ecosystem = ? AND key = ?", (ecosystem, key)
                ).fetchone()
                return str(row[0])

        return await self._run(remember, "remember digest")

    # download ledger ---------------------------------------------------------------------------
    async def record_download(self, event: DownloadEvent) -> None:
        await self.record_downloads([event])

    async def record_downloads(self, events: Sequence[DownloadEvent]) -> None:
        if not events:
            return
        rows = [
            (
                *event.key,
                _micros(event.at),
                _micros(event.last_seen),
                event.count,
                event.user_agent,
                event.ci,
                event.command,
                event.session,
            )
            for event in _aggregate(events)
        ]
        packages = {(row[0], row[1]) for row in rows}
        kept = self.downloads_kept
        now = self.clock.now()
        prune_before: int | None = None
        if self._ledger_pruned_at is None or now - self._ledger_pruned_at >= _LEDGER_PRUNE_EVERY:
            prune_before = _micros(now - self.ledger_retention)

        def upsert(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.executemany(_UPSERT_ROW, rows)
                for ecosystem, package in packages:
                    # The most recently seen rows of the package are kept.
                    conn.execute(
                        "DELETE FROM ledger WHERE ecosystem = ? AND package = ? AND seq IN "
                        "(SELECT seq FROM ledger WHERE ecosystem = ? AND package = ? "
                        "ORDER BY last_at DESC, seq DESC LIMIT -1 OFFSET ?)",
                        (ecosystem, package, ecosystem, package, kept),
                    )
                if prune_before is not None:
                    conn.execute(
                        "DELETE FROM ledger WHERE seq IN (SELECT seq FROM ledger "
                        "WHERE last_at < ? LIMIT ?)",
                        (prune_before, _PRUNE_BATCH * 10),
                    )

        await self._run(upsert, "record downloads")
        if prune_before is not None:
            self._ledger_pruned_at = now

    async def downloads(
        self, ecosystem: str, package: str, *, since: datetime | None = None
    ) -> list[DownloadEvent]:
        events: list[DownloadEvent] = []
        after: str | None = None
        # Bounded: the package keeps at most `downloads_kept` rows.
        while True:
            page = await self.downloads_page(
                ecosystem, package, limit=self.downloads_kept, since=since, after=after
            )
            events.extend(page.events)
            if page.next_after is None:
                return events
            after = page.next_after

    async def downloads_page(
        self,
        ecosystem: str,
        package: str,
        *,
        limit: int,
        since: datetime | None = None,
        versions: Callable[[str], bool] | None = None,
        after: str | None = None,
    ) -> DownloadPage:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where, params = _package_rows(ecosystem, package, since)
        if after is not None:
            at, seq = _position(after)
            where += " AND (first_at > ? OR (first_at = ? AND seq > ?))"
            params += [at, at, seq]

        def select(conn: sqlite3.Connection) -> DownloadPage:
            if versions is not None and not _want_versions(conn, ecosystem, package, versions):
                return DownloadPage(events=[], next_after=None)
            query = where if versions is None else where + _WANTED
            # `query` is built from constant fragments above; every value is a parameter.
            rows = conn.execute(
                f"SELECT {_LEDGER_ROW} FROM ledger WHERE "  # noqa: S608 (constants)
                + query
                + " ORDER BY first_at, seq LIMIT ?",
                (*params, limit + 1),
            ).fetchall()
            shown = rows[:limit]
            events = [
                DownloadEvent(
                    ecosystem=ecosystem,
                    package=package,
                    version=version,
                    filename=filename,
                    client=client,
                    token=token,
                    at=_from_micros(first),
                    last_at=_from_micros(last),
                    count=count,
                    user_agent=user_agent,
                    ci=ci,
                    command=command,
                    session=session,
                )
                for (
                    version, filename, client, token, first, last, count,
                    user_agent, ci, command, session, _,
                ) in shown
            ]  # fmt: skip
            more = len(rows) > limit
            return DownloadPage(
                events=events,
                next_after=f"{shown[-1][4]}:{shown[-1][-1]}" if more else None,
            )

        return await self._run(select, "read downloads")

    async def downloaded_packages(self, ecosystem: str) -> list[str]:
        def select(conn: sqlite3.Connection) -> list[str]:
            # From one package name to the next through the index (one seek per package):
            # DISTINCT would read an index entry per row, the whole ledger of `ecosystem`.
            rows = conn.execute(
                "WITH RECURSIVE names (package) AS ("
                "SELECT min(package) FROM ledger WHERE ecosystem = ? "
                "UNION ALL SELECT (SELECT min(package) FROM ledger "
                "WHERE ecosystem = ? AND package > names.package) "
                "FROM names WHERE names.package IS NOT NULL) "
                "SELECT package FROM names WHERE package IS NOT NULL",
                (ecosystem, ecosystem),
            ).fetchall()
            return [package for (package,) in rows]

        return await self._run(select, "list downloaded packages")

    async def download_identities(
        self,
        ecosystem: str,
        package: str,
        *,
        since: datetime | None = None,
        versions: Callable[[str], bool] | None = None,
    ) -> list[IdentityTotal]:
        where, params = _package_rows(ecosystem, package, since)

        def select(conn: sqlite3.Connection) -> list[IdentityTotal]:
            if versions is not None and not _want_versions(conn, ecosystem, package, versions):
                return []
            query = where if versions is None else where + _WANTED
            rows = conn.execute(
                # `query` is built from constant fragments; every value is a parameter.
                "SELECT token, ci, count(DISTINCT client), count(*), sum(count), "  # noqa: S608
                "min(first_at), max(last_at) FROM ledger WHERE " + query + " GROUP BY token, ci",
                params,
            ).fetchall()
            return sort_identities(
                IdentityTotal(
                    token=token,
                    ci=ci,
                    clients=clients,
                    rows=count,
                    downloads=downloads,
                    first_seen=_from_micros(first),
                    last_seen=_from_micros(last),
                )
                for token, ci, clients, count, downloads, first, last in rows
            )

        return await self._run(select, "read download identities")

    # traffic figures of the dashboard ------------------------------------------------------------
    async def add_traffic(self, counts: Sequence[TrafficCount]) -> None:
        if not counts:
            return
        rows = [
            (count.ecosystem, _minutes(count.minute), *count.figures(), count.last_error)
            for count in summed(counts)
        ]
        prune_before = _minutes(self.clock.now() - TRAFFIC_RETENTION)

        def add(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.executemany(_ADD_TRAFFIC, rows)
                conn.execute("DELETE FROM traffic WHERE minute < ?", (prune_before,))

        await self._run(add, "add traffic figures")

    async def traffic(self, since: datetime) -> list[TrafficCount]:
        first = max(_minutes(since), _minutes(self.clock.now() - TRAFFIC_RETENTION))

        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                f"SELECT {_TRAFFIC_COLUMNS} FROM traffic WHERE minute >= ? "  # noqa: S608 (constant)
                "ORDER BY minute, ecosystem",
                (first,),
            ).fetchall()

        return [
            TrafficCount(
                ecosystem=ecosystem,
                minute=_EPOCH + timedelta(minutes=minute),
                last_error=error,
                **dict(zip(FIGURES, figures, strict=True)),
            )
            for ecosystem, minute, *figures, error in await self._run(
                select, "read traffic figures"
            )
        ]

    # audit log ---------------------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None:
        retention = self._audit_retention()

        def insert(conn: sqlite3.Connection) -> None:
            with _write(conn):
                _insert_audit(conn, entry, pinned=False)
                _prune_audit(conn, *retention)

        await self._run(insert, "append audit entry", retries=_ADMIN_LOCKED_RETRIES)

    async def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        if limit <= 0:
            return []
        return (await self.audit_page(limit=limit)).entries

    async def audit_page(
        self,
        *,
        limit: int,
        target: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: str | None = None,
    ) -> AuditPage:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where: list[str] = ["1 = 1"]
        params: list[str | int] = []
        for column, value in (("target", target), ("actor", actor)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("at >= ?")
            params.append(_micros(since))
        if until is not None:
            where.append("at < ?")
            params.append(_micros(until))
        if after is not None:
            at, seq = _position(after)
            where.append("(at < ? OR (at = ? AND seq < ?))")
            params += [at, at, seq]
        retention = self._audit_retention()
        # Built from constant fragments; every value is a parameter.
        sql = (
            "SELECT at, actor, client, action, target, before, after, seq FROM audit "  # noqa: S608
            f"WHERE {' AND '.join(where)} ORDER BY at DESC, seq DESC LIMIT ?"
        )

        def select(conn: sqlite3.Connection) -> AuditPage:
            # Entries past the retention go even when nobody writes.
            with _write(conn):
                _prune_audit(conn, *retention)
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
            pruned = conn.execute(
                "SELECT value FROM meta WHERE key = 'audit_pruned_before'"
            ).fetchone()
            shown = rows[:limit]
            return AuditPage(
                entries=[_audit_from_row(row) for row in shown],
                next_after=f"{shown[-1][0]}:{shown[-1][7]}" if len(rows) > limit else None,
                pruned_before=None if pruned is None else _from_micros(pruned[0]),
            )

        return await self._run(select, "read audit log")

    def _audit_retention(self) -> tuple[int, int]:
        """(entries before this are pruned, the cap), for `_prune_audit`."""
        return _micros(self.clock.now() - self.audit_retention), self.audit_cap

    # takedown events -----------------------------------------------------------------------
    async def add_event(self, event: TakedownEvent) -> bool:
        data = json.dumps(event_to_json(event), separators=(",", ":"))

        def insert(conn: sqlite3.Connection) -> bool:
            with _write(conn):
                added = conn.execute(
                    "INSERT OR IGNORE INTO takedowns (id, at, ecosystem, package, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (event.id, _micros(event.detected_at), event.ecosystem, event.package, data),
                ).rowcount
                if added:
                    # Past the cap, events nobody had downloaded go first (oldest first),
                    # then the oldest: who had a taken-down version outlasts a flapping
                    # upstream's noise.
                    conn.execute(
                        "DELETE FROM takedowns WHERE id IN (SELECT id FROM takedowns "
                        "ORDER BY coalesce(json_extract(data, '$.clients'), 0) > 0 DESC, "
                        "at DESC, id DESC LIMIT -1 OFFSET ?)",
                        (self.events_kept,),
                    )
                return bool(added)

        return await self._run(insert, "record takedown event", retries=_ADMIN_LOCKED_RETRIES)

    async def events(
        self,
        *,
        limit: int,
        ecosystem: str | None = None,
        package: str | None = None,
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> list[TakedownEvent]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where: list[str] = ["1 = 1"]
        params: list[str | int] = []
        for column, value in (("ecosystem", ecosystem), ("package", package)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("at >= ?")
            params.append(_micros(since))
        if before is not None:
            at = _micros(before[0])
            where.append("(at < ? OR (at = ? AND id < ?))")
            params += [at, at, before[1]]
        # Built from constant fragments; every value is a parameter.
        sql = (
            "SELECT data FROM takedowns "  # noqa: S608
            f"WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC LIMIT ?"
        )

        def select(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute(sql, (*params, limit)).fetchall()]

        found = []
        for data in await self._run(select, "read takedown events"):
            event = event_from_json(json.loads(data))
            if event is not None:
                found.append(event)
        return found

    # quarantine queue ------------------------------------------------------------------------
    async def record_holds(self, events: Sequence[HoldEvent]) -> None:
        if not events:
            return
        merged = merged_events(events)
        prune_before = _micros(self.clock.now() - HOLDS_RETENTION)

        def upsert(conn: sqlite3.Connection) -> None:
            with _write(conn):
                # Stale requesters go first: they must not fill a version's slots (nor set
                # its "more" flag) against a requester asking now.
                conn.execute("DELETE FROM hold_requesters WHERE last_at < ?", (prune_before,))
                ecosystems: set[str] = set()
                for event in merged:
                    subject = event.subject
                    version = (subject.ecosystem, subject.package, subject.version)
                    ecosystems.add(subject.ecosystem)
                    conn.execute(
                        _UPSERT_HOLD,
                        (
                            *version,
                            *said_micros(subject),
                            _micros(event.at),
                            _micros(event.last_at),
                            event.count,
                        ),
                    )
                    _add_requester(conn, version, event)
                _drop_holds(
                    conn,
                    conn.execute(
                        "SELECT ecosystem, package, version FROM holds WHERE last_at < ?",
                        (prune_before,),
                    ).fetchall(),
                )
                for ecosystem in ecosystems:
                    # Past the cap, the least recently held go (by the index on last_at),
                    # and their requesters by their key: never a scan of every requester.
                    _drop_holds(
                        conn,
                        conn.execute(
                            "SELECT ecosystem, package, version FROM holds WHERE ecosystem = ? "
                            "ORDER BY last_at DESC LIMIT -1 OFFSET ?",
                            (ecosystem, HOLDS_KEPT),
                        ).fetchall(),
                    )

        await self._run(upsert, "record held requests")

    async def held_versions(self, *, limit: int, ecosystem: str | None = None) -> list[HeldVersion]:
        shown_since = _micros(self.clock.now() - HOLDS_RETENTION)

        def select(conn: sqlite3.Connection) -> list[HeldVersion]:
            if ecosystem is None:
                rows = conn.execute(
                    f"SELECT {_HOLD_COLUMNS} FROM holds ORDER BY last_at DESC LIMIT ?",  # noqa: S608 (constants)
                    (limit,),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_HOLD_COLUMNS} FROM holds WHERE ecosystem = ? "  # noqa: S608 (constants)
                    "ORDER BY last_at DESC LIMIT ?",
                    (ecosystem, limit),
                ).fetchall()
            return [_held_version(conn, row, shown_since) for row in rows]

        return await self._run(select, "read held versions")

    async def held_version(self, ecosystem: str, package: str, version: str) -> HeldVersion | None:
        shown_since = _micros(self.clock.now() - HOLDS_RETENTION)

        def select(conn: sqlite3.Connection) -> HeldVersion | None:
            row = conn.execute(
                f"SELECT {_HOLD_COLUMNS} FROM holds WHERE ecosystem = ? AND package = ? "  # noqa: S608 (constants)
                "AND version = ?",
                (ecosystem, package, version),
            ).fetchone()
            return None if row is None else _held_version(conn, row, shown_since)

        return await self._run(select, "read a held version")

    # identity and restore --------------------------------------------------------------------
    async def state_identity(self) -> StateIdentity:
        def read(conn: sqlite3.Connection) -> StateIdentity:
            row = conn.execute("SELECT value FROM identity").fetchone()
            predecessors = conn.execute("SELECT value FROM identity_restored_from").fetchall()
            claimed = conn.execute(
                "SELECT value FROM meta WHERE key = 'identity_claimed_ms'"
            ).fetchone()
            lost = conn.execute("SELECT identity, version FROM lost").fetchone()
            return StateIdentity(
                identity=None if row is None else str(row[0]),
                version=_read_version(conn),
                restored_from=frozenset(str(value) for (value,) in predecessors),
                age=None if claimed is None else time.time() - int(claimed[0]) / 1000,
                lost=None if lost is None else str(lost[0]),
                lost_version=0 if lost is None else int(lost[1]),
            )

        return await self._run(read, "read the state identity")

    async def claim_identity(self, candidate: str) -> str:
        def claim(conn: sqlite3.Connection) -> str:
            with _write(conn):
                claimed = conn.execute(
                    "INSERT OR IGNORE INTO identity (singleton, value) VALUES (1, ?)", (candidate,)
                ).rowcount
                if claimed:
                    conn.execute(
                        "INSERT OR REPLACE INTO meta (key, value) "
                        "VALUES ('identity_claimed_ms', ?)",
                        (int(time.time() * 1000),),
                    )
                return str(conn.execute("SELECT value FROM identity").fetchone()[0])

        return await self._run(claim, "claim the state identity")

    async def publish_loss(self, lost: str, version: int, copy: bytes) -> bool:
        def publish(conn: sqlite3.Connection) -> bool:
            with _write(conn):
                row = conn.execute("SELECT identity, version FROM lost").fetchone()
                if row is not None and (row[0] != lost or int(row[1]) >= version):
                    return False
                conn.execute(
                    "INSERT OR REPLACE INTO lost (singleton, identity, version, copy) "
                    "VALUES (1, ?, ?, ?)",
                    (lost, version, copy),
                )
                return True

        return await self._run(publish, "publish a lost state")

    async def published_loss(self) -> tuple[str, int, bytes] | None:
        def read(conn: sqlite3.Connection) -> tuple[str, int, bytes] | None:
            row = conn.execute("SELECT identity, version, copy FROM lost").fetchone()
            return None if row is None else (str(row[0]), int(row[1]), bytes(row[2]))

        return await self._run(read, "read a published loss")

    async def pinned_digests(self) -> dict[str, dict[str, str]]:
        def select(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
            pins: dict[str, dict[str, str]] = {}
            for ecosystem, key, digest in conn.execute(
                "SELECT ecosystem, key, digest FROM digests"
            ):
                pins.setdefault(ecosystem, {})[key] = digest
            return pins

        return await self._run(select, "read digest pins")

    async def restore(
        self,
        *,
        rules: Sequence[RuleRecord],
        digests: Mapping[str, Mapping[str, str]],
        audit: Sequence[AuditEntry],
        version_floor: int,
        predecessor: str,
    ) -> int:
        rule_rows = [_rule_row(rule) for rule in rules]
        pin_rows = [
            (ecosystem, key, digest)
            for ecosystem, keys in digests.items()
            for key, digest in keys.items()
        ]
        copied = {_audit_row(entry) for entry in audit}
        before, cap = self._audit_retention()

        def restore(conn: sqlite3.Connection) -> int:
            with _write(conn):
                conn.executemany(
                    f"INSERT OR IGNORE INTO rules ({_RULE_COLUMNS}) "  # noqa: S608 (constant)
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rule_rows,
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO digests (ecosystem, key, digest) VALUES (?, ?, ?)",
                    pin_rows,
                )
                # The audit is rewritten in time order: entries written since the loss and
                # the copy's, each once; the creation entries of stored rules are kept while
                # the rules live, the rest ages as always.
                existing = conn.execute(
                    "SELECT at, actor, client, action, target, before, after FROM audit"
                ).fetchall()
                merged = sorted(copied | {tuple(row) for row in existing}, key=lambda row: row[0])
                conn.execute("DELETE FROM audit")
                conn.executemany(
                    "INSERT INTO audit (at, actor, client, action, target, before, after) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    merged,
                )
                _pin_creation_entries(conn)
                _prune_audit(conn, before, cap)
                conn.execute(
                    "INSERT OR IGNORE INTO identity_restored_from (value) VALUES (?)",
                    (predecessor,),
                )
                conn.execute("DELETE FROM lost")
                version = max(_read_version(conn), version_floor) + 1
                conn.execute("UPDATE meta SET value = ? WHERE key = 'policy_version'", (version,))
                return version

        return await self._run(restore, "restore the state")

    # One host's state: its worker processes share the fetch by file lock alone
    # (`mirror.blobs.claims`), so the claim across replicas is always granted, without I/O.
    async def claim_fetch(self, key: str, owner: str, ttl: timedelta) -> FetchHolder:
        return FetchHolder(owner=owner)

    async def renew_fetch(self, key: str, owner: str, ttl: timedelta, announced: str = "") -> bool:
        return True

    async def release_fetch(self, key: str, owner: str) -> None:
        return None

    async def durability_warning(self) -> str | None:
        return None  # a committed SQLite transaction is on disk (WAL)

    # plumbing ----------------------------------------------------------------------------------
    async def _run(
        self,
        work: Callable[[sqlite3.Connection], T],
        what: str,
        *,
        retries: int = _LOCKED_RETRIES,
    ) -> T:
        executor = self._executor
        if executor is None:
            raise StateUnavailable(f"the state database is not open ({what})")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._call, work, what, retries)

    def _call(self, work: Callable[[sqlite3.Connection], T], what: str, retries: int) -> T:
        """On the executor thread: run `work`, retrying briefly when another process holds
        the lock past busy_timeout; every other SQLite failure becomes StateUnavailable."""
        for attempt in range(retries):
            try:
                return work(self._connection())
            except sqlite3.OperationalError as exc:
                if _is_locked(exc) and attempt + 1 < retries:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise self._unavailable(what, exc) from exc
            except (sqlite3.Error, OSError) as exc:
                raise self._unavailable(what, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, what: str, exc: BaseException) -> StateUnavailable:
        # A broken connection is dropped so the next call reopens the file.
        self._close_conn()
        # The file's path stays in the log: the message reaches clients.
        log.warning("SQLite state %s failed to %s: %s", self.path, what, exc)
        return StateUnavailable(f"the state database failed to {what}: {type(exc).__name__}")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._file_id != _file_id(self.path):
            # The file was deleted or replaced under us: an open connection would go on
            # reading the old one. Reopen, so the loss shows (a state with no identity).
            log.warning("SQLite state %s was deleted or replaced; reopening it", self.path)
            self._close_conn()
            # `rm state.sqlite3*` removes the file before its -wal: opening in between would
            # replay the old log into the new file (a mix of both). Let such a command end.
            time.sleep(_REPLACED_SETTLE_SECONDS)
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in _write).
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL: a commit survives a process crash; only an OS crash may lose
                # the last transactions, which is fine for a cache and a ledger.
                conn.execute("PRAGMA synchronous = NORMAL")
                self._create_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._file_id = _file_id(self.path)
        return self._conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        with _write(conn):
            for statement in _SCHEMA:
                conn.execute(statement)
            _upgrade(conn)
            for statement in (*_HOLDS_SCHEMA, *_EVENTS_SCHEMA):
                conn.execute(statement)

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the write lock up front, so two processes never
    deadlock upgrading read locks; rolls back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'policy_version'")


def _read_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'policy_version'").fetchone()
    return 0 if row is None else int(row[0])


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the database file, None when it is gone."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _audit_row(entry: AuditEntry) -> tuple[Any, ...]:
    return (
        _micros(entry.at),
        entry.actor,
        entry.client,
        entry.action,
        entry.target,
        _dump(entry.before),
        _dump(entry.after),
    )


def _upgrade(conn: sqlite3.Connection) -> None:
    """Inside the schema transaction: bring a file of an earlier version up to this one."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
    if "pinned" not in columns:
        conn.execute("ALTER TABLE audit ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")
        _pin_creation_entries(conn)
    for statement in _AUDIT_INDEXES:
        conn.execute(statement)
    ledger_columns = {row[1] for row in conn.execute("PRAGMA table_info(ledger)")}
    if "token" not in ledger_columns:
        # A ledger keyed by (client, file): its unique key cannot be altered, so the table is
        # copied into today's (every row with token "", its `seq` kept: positions stay valid).
        conn.execute(_LEDGER_TABLE.format(name="ledger_upgraded"))
        conn.execute(
            "INSERT INTO ledger_upgraded (seq, ecosystem, package, version, filename, client, "
            "first_at, last_at, count) SELECT seq, ecosystem, package, version, filename, "
            "client, first_at, last_at, count FROM ledger"
        )
        conn.execute("DROP TABLE ledger")
        conn.execute("ALTER TABLE ledger_upgraded RENAME TO ledger")
    for statement in _LEDGER_INDEXES:
        conn.execute(statement)
    old_ledger = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'downloads'"
    ).fetchone()
    if old_ledger is not None:
        conn.execute(
            "INSERT INTO ledger (ecosystem, package, version, filename, client, first_at, "
            "last_at, count) SELECT ecosystem, package, version, filename, client, min(at), "
            "max(at), count(*) FROM downloads "
            "GROUP BY ecosystem, package, version, filename, client "
            "ON CONFLICT (ecosystem, package, version, filename, client, token) DO NOTHING"
        )
        conn.execute("DROP TABLE downloads")


def _package_rows(
    ecosystem: str, package: str, since: datetime | None
) -> tuple[str, list[str | int]]:
    """The condition (and its parameters) of a package's ledger rows last seen since `since`."""
    if since is None:
        return "ecosystem = ? AND package = ?", [ecosystem, package]
    return "ecosystem = ? AND package = ? AND last_at >= ?", [ecosystem, package, _micros(since)]


# The rows of the versions `_want_versions` chose.
_WANTED = " AND version IN (SELECT v FROM wanted_versions)"


def _want_versions(
    conn: sqlite3.Connection, ecosystem: str, package: str, versions: Callable[[str], bool]
) -> bool:
    """Fill the connection's `wanted_versions` with the package's versions `versions`
    accepts; False when there is none. The spec is matched on the distinct versions (a few
    hundred at most), not per row; the rows are then selected by an indexed query."""
    known = conn.execute(
        "SELECT DISTINCT version FROM ledger WHERE ecosystem = ? AND package = ?",
        (ecosystem, package),
    ).fetchall()
    wanted = [version for (version,) in known if versions(version)]
    if not wanted:
        return False
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_versions (v TEXT)")
    conn.execute("DELETE FROM wanted_versions")
    conn.executemany("INSERT INTO wanted_versions (v) VALUES (?)", [(v,) for v in wanted])
    return True


def _aggregate(events: Sequence[DownloadEvent]) -> list[DownloadEvent]:
    """`events` with one row per (client address, token, file)."""
    rows: dict[tuple[str, ...], DownloadEvent] = {}
    for event in events:
        known = rows.get(event.key)
        rows[event.key] = event if known is None else known.merged(event)
    return list(rows.values())


def _insert_audit(conn: sqlite3.Connection, entry: AuditEntry, *, pinned: bool) -> None:
    """Inside a write transaction: append `entry`; `pinned` = the creation entry of a rule
    (kept while the rule is stored)."""
    conn.execute(
        "INSERT INTO audit (at, actor, client, action, target, before, after, pinned) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (*_audit_row(entry), int(pinned)),
    )


def _pin_creation_entries(conn: sqlite3.Connection) -> None:
    """Inside a write transaction: the newest creation entry of each stored rule is its
    creation entry, kept while the rule lives."""
    conn.execute(
        "UPDATE audit SET pinned = 1 WHERE seq IN (SELECT max(audit.seq) FROM audit "
        "JOIN rules ON audit.target = rules.id AND audit.action = rules.kind || '.create' "
        "GROUP BY audit.target)"
    )


def _unpin(conn: sqlite3.Connection, rule_id: str) -> None:
    """Inside a write transaction: the rule is gone (or replaced), its creation entry ages
    like every other."""
    conn.execute("UPDATE audit SET pinned = 0 WHERE target = ? AND pinned = 1", (rule_id,))


def _prune_audit(conn: sqlite3.Connection, before: int, cap: int) -> None:
    """Inside a write transaction: drop up to _PRUNE_BATCH unpinned entries older than
    `before`, then the oldest unpinned entries beyond `cap`; remember the newest time
    dropped (the API's `pruned_before`)."""
    dropped = conn.execute(
        "SELECT at, seq FROM audit WHERE pinned = 0 AND at < ? ORDER BY at, seq LIMIT ?",
        (before, _PRUNE_BATCH),
    ).fetchall()
    beyond = conn.execute(
        "SELECT at, seq FROM audit WHERE pinned = 0 ORDER BY at DESC, seq DESC LIMIT 1 OFFSET ?",
        (cap,),
    ).fetchone()
    if beyond is not None:
        # Entries at or before the first one past the cap, a batch per write.
        dropped += conn.execute(
            "SELECT at, seq FROM audit WHERE pinned = 0 AND (at < ? OR (at = ? AND seq <= ?)) "
            "ORDER BY at, seq LIMIT ?",
            (beyond[0], beyond[0], beyond[1], _PRUNE_BATCH),
        ).fetchall()
    if not dropped:
        return
    conn.executemany("DELETE FROM audit WHERE seq = ?", [(seq,) for _, seq in dropped])
    newest = max(at for at, _ in dropped)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('audit_pruned_before', ?) ON CONFLICT (key) "
        "DO UPDATE SET value = max(value, excluded.value)",
        (newest,),
    )


def _audit_from_row(row: tuple[Any, ...]) -> AuditEntry:
    at, actor, client, action, target, before, after, _ = row
    return AuditEntry(
        at=_from_micros(at),
        actor=actor,
        client=client,
        action=action,
        target=target,
        before=None if before is None else json.loads(before),
        after=None if after is None else json.loads(after),
    )


_HOLD_COLUMNS = "ecosystem, package, version, published_at, until, first_at, last_at, count, more"


def _held_version(conn: sqlite3.Connection, row: tuple[Any, ...], shown_since: int) -> HeldVersion:
    """A `holds` row (`_HOLD_COLUMNS`) with its requesters, requesters older than
    `shown_since` left out (they are pruned on the next write)."""
    eco, package, version, published, until, first, last, count, more = row
    where = (eco, package, version, shown_since)
    requesters = conn.execute(
        "SELECT client, token FROM hold_requesters WHERE ecosystem = ? AND package = ? AND "
        "version = ? AND last_at >= ? ORDER BY last_at DESC, client, token LIMIT ?",
        (*where, REQUESTERS_SHOWN),
    ).fetchall()
    (total,) = conn.execute(
        "SELECT count(*) FROM hold_requesters WHERE ecosystem = ? AND package = ? "
        "AND version = ? AND last_at >= ?",
        where,
    ).fetchone()
    return HeldVersion(
        ecosystem=eco,
        package=package,
        version=version,
        published_at=None if published is None else _from_micros(published),
        until=None if until is None else _from_micros(until),
        requests=int(count),
        requesters=tuple(Requester(client, token) for client, token in requesters),
        requester_count=int(total),
        more_requesters=int(more) >= shown_since,
        first_held=_from_micros(first),
        last_held=_from_micros(last),
    )


def _drop_holds(conn: sqlite3.Connection, versions: Sequence[tuple[str, str, str]]) -> None:
    """Forget `versions` (ecosystem, package, version) and their requesters, by key."""
    conn.executemany(
        "DELETE FROM holds WHERE ecosystem = ? AND package = ? AND version = ?", versions
    )
    conn.executemany(
        "DELETE FROM hold_requesters WHERE ecosystem = ? AND package = ? AND version = ?",
        versions,
    )


def _add_requester(
    conn: sqlite3.Connection, version: tuple[str, str, str], event: HoldEvent
) -> None:
    """Note `event`'s requester of `version`: a known one is refreshed; a new one is stored
    while the version has fewer than REQUESTERS_KEPT, else only flagged (`more`)."""
    requester = (*version, event.client, event.token)
    refreshed = conn.execute(
        "UPDATE hold_requesters SET last_at = max(last_at, ?) WHERE ecosystem = ? AND "
        "package = ? AND version = ? AND client = ? AND token = ?",
        (_micros(event.last_at), *requester),
    ).rowcount
    if refreshed:
        return
    (stored,) = conn.execute(
        "SELECT count(*) FROM hold_requesters WHERE ecosystem = ? AND package = ? AND version = ?",
        version,
    ).fetchone()
    if stored < REQUESTERS_KEPT:
        conn.execute(
            "INSERT INTO hold_requesters (ecosystem, package, version, client, token, last_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (*requester, _micros(event.last_at)),
        )
    else:
        conn.execute(
            "UPDATE holds SET more = max(more, ?) WHERE ecosystem = ? AND package = ? AND "
            "version = ?",
            (_micros(event.last_at), *version),
        )
