"""Shared state for many replicas on one Redis (`redis.asyncio`, pooled, 2 s socket timeouts).
Limits: downloads keep the newest 100,000 events per package, audit the newest 10,000 entries;
publish times and digests are kept forever. Every Redis failure becomes `StateUnavailable`."""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError, WatchError

from mirror.clock import Clock, SystemClock
from mirror.errors import StateUnavailable
from mirror.state.base import (
    AUDIT_KEPT,
    DOWNLOADS_KEPT,
    RULE_KINDS,
    AuditEntry,
    DownloadEvent,
    DownloadPage,
    InvalidPosition,
    RuleKind,
    RuleRecord,
    StateIdentity,
)

log = logging.getLogger("mirror.state")

# A dead Redis must fail a request fast (fail closed), not hang it.
SOCKET_TIMEOUT = 2.0
# A missed pub/sub message cannot leave a replica stale for longer than this.
WATCH_POLL_SECONDS = 1.0
_REMOVE_ATTEMPTS = 5
# Download events read per round trip while paging through one package.
_PAGE_CHUNK = 1000
# A `downloads_page` position: "score:hex(member)" (members are short JSON arrays).
_POSITION = re.compile(r"-?[0-9]{1,18}:(?:[0-9a-f]{2}){1,4096}")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _micros(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError(f"state stores aware datetimes only, got naive {at!r}")
    return (at - _EPOCH) // _MICRO


def _from_micros(value: int | str) -> datetime:
    return _EPOCH + int(value) * _MICRO


def _encode_rule(rule: RuleRecord) -> str:
    return json.dumps(
        {
            "id": rule.id,
            "kind": rule.kind,
            "ecosystem": rule.ecosystem,
            "package": rule.package,
            "versions": rule.versions,
            "reason": rule.reason,
            "created_at": _micros(rule.created_at),
            "created_by": rule.created_by,
            "expires_at": None if rule.expires_at is None else _micros(rule.expires_at),
            "data": dict(rule.data),
        },
        separators=(",", ":"),
    )


def _decode_rule(raw: str) -> RuleRecord:
    doc = json.loads(raw)
    expires = doc["expires_at"]
    return RuleRecord(
        id=doc["id"],
        kind=cast(RuleKind, doc["kind"]),
        ecosystem=doc["ecosystem"],
        package=doc["package"],
        versions=doc["versions"],
        reason=doc["reason"],
        created_at=_from_micros(doc["created_at"]),
        created_by=doc["created_by"],
        expires_at=None if expires is None else _from_micros(expires),
        data=doc["data"],
    )


def _optional(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if data is None else dict(data)


class RedisState:
    """`StateStore` on Redis, keys under `<namespace>:`. Rule changes bump an INCR counter in
    the same MULTI/EXEC and are announced on the `<namespace>:policy` channel; `watch()` also
    re-reads the counter every second in case a message was lost."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "qm",
        clock: Clock | None = None,
        downloads_kept: int = DOWNLOADS_KEPT,
        audit_kept: int = AUDIT_KEPT,
    ) -> None:
        if downloads_kept < 1 or audit_kept < 1:
            raise ValueError("downloads_kept and audit_kept must be at least 1")
        self.url = url
        self.downloads_kept = downloads_kept
        self.audit_kept = audit_kept
        self.namespace = namespace
        self.clock: Clock = clock or SystemClock()
        self.channel = f"{namespace}:policy"
        self._version_key = f"{namespace}:policy:version"
        self._audit_key = f"{namespace}:audit"
        self._identity_key = f"{namespace}:identity"
        self._predecessors_key = f"{namespace}:identity:restored-from"
        self._client: aioredis.Redis | None = None

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    # lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        """Build the connection pool. Connects lazily: a replica may start before Redis
        answers; `ping()` (readiness) and every call report it until it does."""
        if self._client is not None:
            return
        with self._translate("connect"):
            self._client = aioredis.Redis.from_url(
                self.url,
                decode_responses=True,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
                # One quick retry replaces a pooled connection that a Redis restart closed.
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1),
                health_check_interval=30,
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with self._translate("close"):
                await client.aclose()

    async def ping(self) -> None:
        client = self._redis("ping")
        with self._translate("ping"):
            await client.ping()

    # rules -----------------------------------------------------------------------------------
    async def add_rule(self, rule: RuleRecord, *, audit: AuditEntry | None = None) -> None:
        client = self._redis("add rule")
        encoded = _encode_rule(rule)
        with self._translate("add rule"):
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(self._key("rules", rule.kind), rule.id, encoded)
                pipe.incr(self._version_key)
                if audit is not None:
                    self._push_audit(pipe, audit)
                results = await pipe.execute()
            await client.publish(self.channel, str(results[1]))

    def _push_audit(self, pipe: Any, entry: AuditEntry) -> None:
        """Queue `entry` (newest first, capped) on a MULTI pipeline."""
        pipe.lpush(self._audit_key, _encode_audit(entry))
        pipe.ltrim(self._audit_key, 0, self.audit_kept - 1)

    async def remove_rule(
        self, kind: RuleKind, rule_id: str, *, audit: AuditEntry | None = None
    ) -> RuleRecord | None:
        client = self._redis("remove rule")
        key = self._key("rules", kind)
        with self._translate("remove rule"):
            # WATCH so the delete and the counter bump happen only if we saw the rule.
            for _ in range(_REMOVE_ATTEMPTS):
                async with client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hget(key, rule_id)
                        if raw is None:
                            await pipe.unwatch()
                            return None
                        pipe.multi()
                        pipe.hdel(key, rule_id)
                        pipe.incr(self._version_key)
                        if audit is not None:
                            self._push_audit(pipe, audit)
                        version = (await pipe.execute())[1]
                    except WatchError:
                        continue
                await client.publish(self.channel, str(version))
                return _decode_rule(raw)
        log.warning("Redis state %s: rule %s/%s kept changing", self._where(), kind, rule_id)
        raise StateUnavailable(
            f"the shared state (Redis): rule {kind}/{rule_id} kept changing while removing it"
        )

    async def list_rules(self, kind: RuleKind | None = None) -> list[RuleRecord]:
        client = self._redis("list rules")
        kinds = RULE_KINDS if kind is None else (kind,)
        with self._translate("list rules"):
            async with client.pipeline(transaction=False) as pipe:
                for each in kinds:
                    pipe.hvals(self._key("rules", each))
                results: list[list[str]] = await pipe.execute()
        rules = [_decode_rule(raw) for values in results for raw in values]
        rules.sort(key=lambda rule: (rule.created_at, rule.id))
        return rules

    # change notification ---------------------------------------------------------------------
    async def policy_version(self) -> int:
        client = self._redis("read policy version")
        with self._translate("read policy version"):
            value = await client.get(self._version_key)
        return 0 if value is None else int(value)

    async def watch(self) -> AsyncIterator[int]:
        client = self._redis("watch policy")
        with self._translate("watch policy"):
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                # Subscribe before the first read so no change falls between them.
                await pubsub.subscribe(self.channel)
                last = await self.policy_version()
                while True:
                    # The message only wakes us; the counter is the truth.
                    await pubsub.get_message(timeout=WATCH_POLL_SECONDS)
                    version = await self.policy_version()
                    if version != last:
                        last = version
                        yield version

    # publish times and digests -----------------------------------------------------------------
    async def get_publish_time(self, ecosystem: str, key: str) -> datetime | None:
        client = self._redis("read publish time")
        with self._translate("read publish time"):
            value = await client.hget(self._key("publish", ecosystem), key)
        return None if value is None else _from_micros(value)

    async def set_publish_time(self, ecosystem: str, key: str, at: datetime) -> None:
        client = self._redis("store publish time")
        with self._translate("store publish time"):
            await client.hset(self._key("publish", ecosystem), key, str(_micros(at)))

    async def remember_digest(self, ecosystem: str, key: str, digest: str) -> str:
        client = self._redis("remember digest")
        hash_key = self._key("digests", ecosystem)
        with self._translate("remember digest"):
            async with client.pipeline(transaction=True) as pipe:
                pipe.hsetnx(hash_key, key, digest)
                pipe.hget(hash_key, key)
                _, stored = await pipe.execute()
        return str(stored)

    # download ledger ---------------------------------------------------------------------------
    async def record_download(self, event: DownloadEvent) -> None:
        await self.record_downloads([event])

    async def record_downloads(self, events: Sequence[DownloadEvent]) -> None:
        if not events:
            return
        client = self._redis("record downloads")
        trimmed: set[str] = set()
        with self._translate("record downloads"):
            async with client.pipeline(transaction=True) as pipe:
                for event in events:
                    key = self._key("downloads", event.ecosystem, event.package)
                    # A random tag keeps two identical events (same client, same
                    # microsecond) distinct members of the sorted set.
                    member = json.dumps(
                        [event.version, event.filename, event.client, secrets.token_hex(6)],
                        separators=(",", ":"),
                    )
                    pipe.zadd(key, {member: _micros(event.at)})
                    trimmed.add(key)
                for key in trimmed:
                    # Keep the newest `downloads_kept` events (by time) per package.
                    pipe.zremrangebyrank(key, 0, -(self.downloads_kept + 1))
                await pipe.execute()

    async def downloaded_packages(self, ecosystem: str) -> list[str]:
        client = self._redis("list downloaded packages")
        prefix = self._key("downloads", ecosystem, "")
        names: set[str] = set()
        with self._translate("list downloaded packages"):
            async for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=500):
                text = key.decode() if isinstance(key, bytes) else str(key)
                names.add(text[len(prefix) :])
        return sorted(names)

    async def downloads(
        self, ecosystem: str, package: str, *, since: datetime | None = None
    ) -> list[DownloadEvent]:
        client = self._redis("read downloads")
        floor: int | str = "-inf" if since is None else _micros(since)
        with self._translate("read downloads"):
            rows = await client.zrangebyscore(
                self._key("downloads", ecosystem, package), floor, "+inf", withscores=True
            )
        events = []
        for member, score in rows:
            version, filename, client_name, _ = json.loads(member)
            events.append(
                DownloadEvent(
                    ecosystem=ecosystem,
                    package=package,
                    version=version,
                    filename=filename,
                    client=client_name,
                    at=_from_micros(int(score)),
                )
            )
        return events

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
        # Members sort by (score = time, member bytes); a position is the last one shown.
        floor = -(2**62) if since is None else _micros(since)
        last: tuple[int, bytes] | None = None
        if after is not None:
            last = _position(after)
            floor = max(floor, last[0])
        client = self._redis("read downloads")
        key = self._key("downloads", ecosystem, package)
        events: list[DownloadEvent] = []
        positions: list[tuple[int, bytes]] = []
        offset = 0
        with self._translate("read downloads"):
            # Bounded: each pass reads the next chunk of the package's (capped) sorted set.
            while len(events) <= limit:
                rows = await client.zrangebyscore(
                    key, floor, "+inf", start=offset, num=_PAGE_CHUNK, withscores=True
                )
                offset += len(rows)
                for member, score in rows:
                    raw = member if isinstance(member, bytes) else str(member).encode()
                    position = (int(score), raw)
                    if last is not None and position <= last:
                        continue
                    version, filename, client_name, _ = json.loads(raw)
                    if versions is not None and not versions(version):
                        continue
                    events.append(
                        DownloadEvent(
                            ecosystem=ecosystem,
                            package=package,
                            version=version,
                            filename=filename,
                            client=client_name,
                            at=_from_micros(int(score)),
                        )
                    )
                    positions.append(position)
                    if len(events) > limit:
                        break
                if len(rows) < _PAGE_CHUNK:
                    break
        if len(events) <= limit:
            return DownloadPage(events=events, next_after=None)
        at, member = positions[limit - 1]
        return DownloadPage(events=events[:limit], next_after=f"{at}:{member.hex()}")

    # audit log ---------------------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None:
        client = self._redis("append audit entry")
        with self._translate("append audit entry"):
            async with client.pipeline(transaction=True) as pipe:
                self._push_audit(pipe, entry)
                await pipe.execute()

    async def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        if limit <= 0:
            return []
        client = self._redis("read audit log")
        with self._translate("read audit log"):
            rows = await client.lrange(self._audit_key, 0, limit - 1)
        entries = []
        for raw in rows:
            doc = json.loads(raw)
            entries.append(
                AuditEntry(
                    at=_from_micros(doc["at"]),
                    actor=doc["actor"],
                    client=doc["client"],
                    action=doc["action"],
                    target=doc["target"],
                    before=doc["before"],
                    after=doc["after"],
                )
            )
        return entries

    # identity and restore --------------------------------------------------------------------
    async def state_identity(self) -> StateIdentity:
        client = self._redis("read the state identity")
        with self._translate("read the state identity"):
            async with client.pipeline(transaction=True) as pipe:
                pipe.get(self._identity_key)
                pipe.get(self._version_key)
                pipe.smembers(self._predecessors_key)
                identity, version, predecessors = await pipe.execute()
        return StateIdentity(
            identity=identity,
            version=0 if version is None else int(version),
            restored_from=frozenset(predecessors),
        )

    async def claim_identity(self, candidate: str) -> str:
        client = self._redis("claim the state identity")
        with self._translate("claim the state identity"):
            async with client.pipeline(transaction=True) as pipe:
                pipe.setnx(self._identity_key, candidate)
                pipe.get(self._identity_key)
                _, stored = await pipe.execute()
        return str(stored)

    async def pinned_digests(self) -> dict[str, dict[str, str]]:
        client = self._redis("read digest pins")
        prefix = self._key("digests", "")
        pins: dict[str, dict[str, str]] = {}
        with self._translate("read digest pins"):
            async for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=500):
                text = key.decode() if isinstance(key, bytes) else str(key)
                pins[text[len(prefix) :]] = dict(await client.hgetall(text))
        return {ecosystem: keys for ecosystem, keys in pins.items() if keys}

    async def restore(
        self,
        *,
        rules: Sequence[RuleRecord],
        digests: Mapping[str, Mapping[str, str]],
        audit: Sequence[AuditEntry],
        version_floor: int,
        predecessor: str,
    ) -> int:
        client = self._redis("restore the state")
        copied = [_encode_audit(entry) for entry in audit]
        with self._translate("restore the state"):
            # WATCH: the version and the audit are read, then rewritten; an admin write in
            # between makes the transaction start over.
            for _ in range(_REMOVE_ATTEMPTS):
                async with client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(self._version_key, self._audit_key)
                        current = await pipe.get(self._version_key)
                        existing = await pipe.lrange(self._audit_key, 0, -1)
                        version = max(int(current or 0), version_floor) + 1
                        merged = sorted(
                            set(existing) | set(copied),
                            key=lambda raw: int(json.loads(raw)["at"]),
                            reverse=True,
                        )[: self.audit_kept]
                        pipe.multi()
                        for rule in rules:
                            pipe.hsetnx(self._key("rules", rule.kind), rule.id, _encode_rule(rule))
                        for ecosystem, keys in digests.items():
                            if keys:
                                pipe.hset(self._key("digests", ecosystem), mapping=dict(keys))
                        pipe.delete(self._audit_key)
                        if merged:
                            pipe.rpush(self._audit_key, *merged)
                        pipe.sadd(self._predecessors_key, predecessor)
                        pipe.set(self._version_key, version)
                        await pipe.execute()
                    except WatchError:
                        continue
                await client.publish(self.channel, str(version))
                return version
        raise StateUnavailable("the shared state (Redis) kept changing while restoring it")

    async def durability_warning(self) -> str | None:
        client = self._redis("read the persistence settings")
        with self._translate("read the persistence settings"):
            try:
                save = await client.config_get("save")
                appendonly = await client.config_get("appendonly")
            except ResponseError:
                # CONFIG is often disabled or renamed on managed Redis: nothing to tell.
                return None
        if save.get("save") or appendonly.get("appendonly") == "yes":
            return None
        return (
            f'Redis at {self._where()} persists nothing (save "" and appendonly no): a '
            "restart empties it, and the mirror then serves only its last-known rules and "
            "reports not ready until `mirror state restore`; turn on RDB or AOF persistence"
        )

    # plumbing ----------------------------------------------------------------------------------
    def _redis(self, what: str) -> aioredis.Redis:
        if self._client is None:
            raise StateUnavailable(f"the shared state (Redis) is not open ({what})")
        return self._client

    def _where(self) -> str:
        # Never echo a password from the URL into logs or responses.
        host_part = self.url.rpartition("@")[2]
        return f"{host_part} (namespace {self.namespace!r})"

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            # Where Redis is and what it said stay in the log: the message reaches clients.
            log.warning(
                "Redis state %s failed to %s: %s", self._where(), what, str(exc) or type(exc)
            )
            raise StateUnavailable(
                f"the shared state (Redis) failed to {what}: {type(exc).__name__}"
            ) from exc


def _position(text: str) -> tuple[int, bytes]:
    """(score, member) of a position `downloads_page` issued as "score:hex(member)"."""
    if not _POSITION.fullmatch(text):
        raise InvalidPosition(f"not a download position of this store: {text[:40]!r}")
    at, _, member = text.partition(":")
    return int(at), bytes.fromhex(member)


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _encode_audit(entry: AuditEntry) -> str:
    return json.dumps(
        {
            "at": _micros(entry.at),
            "actor": entry.actor,
            "client": entry.client,
            "action": entry.action,
            "target": entry.target,
            "before": _optional(entry.before),
            "after": _optional(entry.after),
        },
        separators=(",", ":"),
    )
