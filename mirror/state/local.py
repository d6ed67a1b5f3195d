"""Embedded shared state: one SQLite file in the data dir (WAL), shared by the worker processes of
one machine. All SQLite calls run on one private thread per store, never on the event loop.
Limits: one machine only (no network filesystems); downloads and audit are never pruned here."""

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
from mirror.state.base import (
    AUDIT_KEPT,
    DOWNLOADS_KEPT,
    AuditEntry,
    DownloadEvent,
    DownloadPage,
    InvalidPosition,
    RuleKind,
    RuleRecord,
    StateIdentity,
)

log = logging.getLogger("mirror.state")

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
# SQLite waits this long for another process's write lock before giving up with "locked".
_BUSY_TIMEOUT_MS = 2000
_LOCKED_RETRIES = 3
_REPLACED_SETTLE_SECONDS = 0.2
# A `downloads_page` position: "at:seq", both within SQLite's 64-bit integers.
_POSITION = re.compile(r"-?[0-9]{1,18}:[0-9]{1,18}")

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
    """CREATE TABLE IF NOT EXISTS downloads (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, ecosystem TEXT NOT NULL, package TEXT NOT NULL,
        version TEXT NOT NULL, filename TEXT NOT NULL, client TEXT NOT NULL,
        at INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS downloads_by_package ON downloads (ecosystem, package, at)",
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
        client TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, before TEXT,
        after TEXT)""",
    # Written once (`claim_identity`): a file deleted or replaced comes back without it.
    """CREATE TABLE IF NOT EXISTS identity (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1), value TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS identity_restored_from (value TEXT PRIMARY KEY)",
)
_RULE_COLUMNS = (
    "id, kind, ecosystem, package, versions, reason, created_at, created_by, expires_at, data"
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
        audit_kept: int = AUDIT_KEPT,
    ) -> None:
        if downloads_kept < 1 or audit_kept < 1:
            raise ValueError("downloads_kept and audit_kept must be at least 1")
        self.path = path
        self.poll_interval = poll_interval
        # The same retention as the Redis backend: the newest events per package, the newest
        # audit entries overall.
        self.downloads_kept = downloads_kept
        self.audit_kept = audit_kept
        self.clock: Clock = clock or SystemClock()
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
        kept = self.audit_kept

        def add(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute(
                    f"INSERT OR REPLACE INTO rules ({_RULE_COLUMNS}) "  # noqa: S608 (constant)
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                _bump(conn)
                if audit is not None:
                    _insert_audit(conn, audit, kept)

        await self._run(add, "add rule")

    async def remove_rule(
        self, kind: RuleKind, rule_id: str, *, audit: AuditEntry | None = None
    ) -> RuleRecord | None:
        kept = self.audit_kept

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
                if audit is not None:
                    _insert_audit(conn, audit, kept)
                return _rule_from_row(row)

        return await self._run(remove, "remove rule")

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
        rows = [
            (
                event.ecosystem,
                event.package,
                event.version,
                event.filename,
                event.client,
                _micros(event.at),
            )
            for event in events
        ]
        if not rows:
            return

        packages = {(row[0], row[1]) for row in rows}
        kept = self.downloads_kept

        def insert(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.executemany(
                    "INSERT INTO downloads (ecosystem, package, version, filename, client, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                for ecosystem, package in packages:
                    conn.execute(
                        "DELETE FROM downloads WHERE ecosystem = ? AND package = ? AND seq IN "
                        "(SELECT seq FROM downloads WHERE ecosystem = ? AND package = ? "
                        "ORDER BY at DESC, seq DESC LIMIT -1 OFFSET ?)",
                        (ecosystem, package, ecosystem, package, kept),
                    )

        await self._run(insert, "record downloads")

    async def downloads(
        self, ecosystem: str, package: str, *, since: datetime | None = None
    ) -> list[DownloadEvent]:
        sql = (
            "SELECT version, filename, client, at FROM downloads "
            "WHERE ecosystem = ? AND package = ?"
        )
        params: tuple[str | int, ...] = (ecosystem, package)
        if since is not None:
            sql, params = sql + " AND at >= ?", (*params, _micros(since))

        def select(conn: sqlite3.Connection) -> list[DownloadEvent]:
            rows = conn.execute(sql + " ORDER BY at, seq", params).fetchall()
            return [
                DownloadEvent(
                    ecosystem=ecosystem,
                    package=package,
                    version=version,
                    filename=filename,
                    client=client,
                    at=_from_micros(at),
                )
                for version, filename, client, at in rows
            ]

        return await self._run(select, "read downloads")

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
        where = "ecosystem = ? AND package = ?"
        params: list[str | int] = [ecosystem, package]
        if since is not None:
            where += " AND at >= ?"
            params.append(_micros(since))
        if after is not None:
            at, seq = _position(after)
            where += " AND (at > ? OR (at = ? AND seq > ?))"
            params += [at, at, seq]

        def select(conn: sqlite3.Connection) -> DownloadPage:
            query = where
            if versions is not None:
                # The spec is matched on the distinct versions (a few hundred at most), not
                # per row; the rows are then selected by an indexed query.
                known = conn.execute(
                    "SELECT DISTINCT version FROM downloads WHERE ecosystem = ? AND package = ?",
                    (ecosystem, package),
                ).fetchall()
                wanted = [version for (version,) in known if versions(version)]
                if not wanted:
                    return DownloadPage(events=[], next_after=None)
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_versions (v TEXT)")
                conn.execute("DELETE FROM wanted_versions")
                conn.executemany(
                    "INSERT INTO wanted_versions (v) VALUES (?)", [(v,) for v in wanted]
                )
                query += " AND version IN (SELECT v FROM wanted_versions)"
            # `query` is built from constant fragments above; every value is a parameter.
            rows = conn.execute(
                "SELECT version, filename, client, at, seq FROM downloads WHERE "  # noqa: S608
                + query
                + " ORDER BY at, seq LIMIT ?",
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
                    at=_from_micros(at),
                )
                for version, filename, client, at, _ in shown
            ]
            more = len(rows) > limit
            return DownloadPage(
                events=events,
                next_after=f"{shown[-1][3]}:{shown[-1][4]}" if more else None,
            )

        return await self._run(select, "read downloads")

    async def downloaded_packages(self, ecosystem: str) -> list[str]:
        def select(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT DISTINCT package FROM downloads WHERE ecosystem = ? ORDER BY package",
                (ecosystem,),
            ).fetchall()
            return [package for (package,) in rows]

        return await self._run(select, "list downloaded packages")

    # audit log ---------------------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None:
        kept = self.audit_kept

        def insert(conn: sqlite3.Connection) -> None:
            with _write(conn):
                _insert_audit(conn, entry, kept)

        await self._run(insert, "append audit entry")

    async def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        def select(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                "SELECT at, actor, client, action, target, before, after FROM audit "
                "ORDER BY seq DESC LIMIT ?",
                (max(limit, 0),),
            ).fetchall()
            return [
                AuditEntry(
                    at=_from_micros(at),
                    actor=actor,
                    client=client,
                    action=action,
                    target=target,
                    before=None if before is None else json.loads(before),
                    after=None if after is None else json.loads(after),
                )
                for at, actor, client, action, target, before, after in rows
            ]

        return await self._run(select, "read audit log")

    # identity and restore --------------------------------------------------------------------
    async def state_identity(self) -> StateIdentity:
        def read(conn: sqlite3.Connection) -> StateIdentity:
            row = conn.execute("SELECT value FROM identity").fetchone()
            predecessors = conn.execute("SELECT value FROM identity_restored_from").fetchall()
            return StateIdentity(
                identity=None if row is None else str(row[0]),
                version=_read_version(conn),
                restored_from=frozenset(str(value) for (value,) in predecessors),
            )

        return await self._run(read, "read the state identity")

    async def claim_identity(self, candidate: str) -> str:
        def claim(conn: sqlite3.Connection) -> str:
            with _write(conn):
                conn.execute(
                    "INSERT OR IGNORE INTO identity (singleton, value) VALUES (1, ?)", (candidate,)
                )
                return str(conn.execute("SELECT value FROM identity").fetchone()[0])

        return await self._run(claim, "claim the state identity")

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
        kept = self.audit_kept

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
                # the copy's, each once, the newest `kept`.
                existing = conn.execute(
                    "SELECT at, actor, client, action, target, before, after FROM audit"
                ).fetchall()
                merged = sorted(copied | {tuple(row) for row in existing}, key=lambda row: row[0])
                conn.execute("DELETE FROM audit")
                conn.executemany(
                    "INSERT INTO audit (at, actor, client, action, target, before, after) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    merged[-kept:],
                )
                conn.execute(
                    "INSERT OR IGNORE INTO identity_restored_from (value) VALUES (?)",
                    (predecessor,),
                )
                version = max(_read_version(conn), version_floor) + 1
                conn.execute("UPDATE meta SET value = ? WHERE key = 'policy_version'", (version,))
                return version

        return await self._run(restore, "restore the state")

    async def durability_warning(self) -> str | None:
        return None  # a committed SQLite transaction is on disk (WAL)

    # plumbing ----------------------------------------------------------------------------------
    async def _run(self, work: Callable[[sqlite3.Connection], T], what: str) -> T:
        executor = self._executor
        if executor is None:
            raise StateUnavailable(f"the state database is not open ({what})")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._call, work, what)

    def _call(self, work: Callable[[sqlite3.Connection], T], what: str) -> T:
        """On the executor thread: run `work`, retrying briefly when another process holds
        the lock past busy_timeout; every other SQLite failure becomes StateUnavailable."""
        for attempt in range(_LOCKED_RETRIES):
            try:
                return work(self._connection())
            except sqlite3.OperationalError as exc:
                if _is_locked(exc) and attempt + 1 < _LOCKED_RETRIES:
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


def _insert_audit(conn: sqlite3.Connection, entry: AuditEntry, kept: int) -> None:
    """Inside a write transaction: append `entry`, keep the newest `kept` entries."""
    cursor = conn.execute(
        "INSERT INTO audit (at, actor, client, action, target, before, after) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        _audit_row(entry),
    )
    conn.execute("DELETE FROM audit WHERE seq <= ?", ((cursor.lastrowid or 0) - kept,))
