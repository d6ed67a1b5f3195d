"""Shared state for many replicas on one Redis (`redis.asyncio`, pooled, 2 s socket timeouts).
Limits: the ledger and the audit log are pruned by age (and capped) as `state.base` describes;
publish times and digests are kept forever. Every Redis failure becomes `StateUnavailable`.

Rule changes and the ledger are Lua scripts: each is atomic without WATCH, so concurrent
writers never make each other retry (and never fail because others are busy). The scripts
build key names from the namespace, so a single Redis (or a primary), not Redis Cluster."""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

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
    ECOSYSTEMS,
    RULE_KINDS,
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
    AUDIT_SCAN,
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
from mirror.traffic import FIGURES, MINUTE, TRAFFIC_RETENTION, TrafficCount, minute_of, summed

log = logging.getLogger("mirror.state")

# A dead Redis must fail a request fast (fail closed), not hang it.
SOCKET_TIMEOUT = 2.0
# A missed pub/sub message cannot leave a replica stale for longer than this.
WATCH_POLL_SECONDS = 1.0
# Download rows / audit entries read per round trip while paging.
_PAGE_CHUNK = 1000
_AUDIT_CHUNK = 500
# A `downloads_page` position: "score:hex(member)" (members are short JSON arrays).
_POSITION = re.compile(r"-?[0-9]{1,18}:(?:[0-9a-f]{2}){1,4096}")
# An audit entry's id, and an `audit_page` position: "<micros, 19 digits>-<sequence>". Ids
# sort as text in time order, so every audit index is a sorted set read by lex range.
_AUDIT_ID = re.compile(r"[0-9]{19}-[0-9]{12}")

# A rule change, its policy-version bump, its audit entry and the audit's pruning, atomically.
# ARGV: namespace, op (set | del | none), kind, rule id, rule JSON, audit JSON ("" = none),
# audit time (19 digits), actor, target, prune before (19 digits), cap.
# Returns {old rule JSON or false, new version or false}. The creation entry of a stored rule
# is "pinned" (rule id -> entry id) and is not in the prunable index until the rule goes.
_CHANGE_SCRIPT = """
local ns, op, kind, rule_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local entries, all = ns .. ':audit:entries', ns .. ':audit:all'
local prunable, pinned = ns .. ':audit:prunable', ns .. ':audit:pinned'
local rules = ns .. ':rules:' .. kind
local old = false
local version = false
if op == 'del' then
  old = redis.call('HGET', rules, rule_id)
  if not old then return {false, false} end
  redis.call('HDEL', rules, rule_id)
elseif op == 'set' then
  redis.call('HSET', rules, rule_id, ARGV[5])
end
if op ~= 'none' then
  version = redis.call('INCR', ns .. ':policy:version')
  local created = redis.call('HGET', pinned, rule_id)
  if created then
    redis.call('HDEL', pinned, rule_id)
    redis.call('ZADD', prunable, 0, created)
  end
end
if ARGV[6] ~= '' then
  local id = ARGV[7] .. '-' .. string.format('%012d', redis.call('INCR', ns .. ':audit:seq'))
  redis.call('HSET', entries, id, ARGV[6])
  redis.call('ZADD', all, 0, id)
  redis.call('ZADD', ns .. ':audit:target:' .. ARGV[9], 0, id)
  redis.call('ZADD', ns .. ':audit:actor:' .. ARGV[8], 0, id)
  if op == 'set' then
    redis.call('HSET', pinned, rule_id, id)
  else
    redis.call('ZADD', prunable, 0, id)
  end
end
local function drop(ids)
  local newest = false
  for _, id in ipairs(ids) do
    local raw = redis.call('HGET', entries, id)
    if raw then
      local doc = cjson.decode(raw)
      redis.call('ZREM', ns .. ':audit:target:' .. doc['target'], id)
      redis.call('ZREM', ns .. ':audit:actor:' .. doc['actor'], id)
      redis.call('HDEL', entries, id)
    end
    redis.call('ZREM', all, id)
    redis.call('ZREM', prunable, id)
    newest = string.sub(id, 1, 19)
  end
  if newest then
    local known = redis.call('GET', ns .. ':audit:pruned-before')
    if (not known) or known < newest then
      redis.call('SET', ns .. ':audit:pruned-before', newest)
    end
  end
end
drop(redis.call('ZRANGEBYLEX', prunable, '-', '(' .. ARGV[10], 'LIMIT', 0, 1000))
local excess = redis.call('ZCARD', prunable) - tonumber(ARGV[11])
if excess > 0 then
  drop(redis.call('ZRANGE', prunable, 0, math.min(excess, 1000) - 1))
end
return {old, version}
"""

# Download rows of one package added to its ledger, atomically. KEYS: first seen (sorted set
# member -> micros), last seen (the same), counts (hash), what the clients said (hash, member
# -> JSON [user agent, ci, command, session]; no field = all ""), the ledger's index of
# packages by their least recently seen row, the ecosystem's package names (sorted set,
# score 0), and the package's versions (hash, version -> its rows). ARGV: prune before
# (micros), rows kept, the package's name in the oldest index, its name, the key prefix of
# its versions' rows, then per version: the version, the key of its rows, how many rows, and
# per row: member, first, last, count, what the client said or "".
# What the client said is kept from the row's latest download (on a tie, the one written
# last). Rows last seen before the cutoff go, then the least recently seen beyond the cap.
# Each version's rows are also a sorted set by first seen (prefix .. hex(version)), so a page
# of a few versions reads only their rows; the versions hash counts each set's members.
_VERSION_ROWS_LUA = """
local function version_rows(prefix, member)
  local version = cjson.decode(member)[1]
  return prefix .. string.gsub(version, '.', function(c)
    return string.format('%02x', string.byte(c))
  end), version
end
local function index_row(versions, key, version, member, at)
  if redis.call('ZADD', key, at, member) == 1 then redis.call('HINCRBY', versions, version, 1) end
end
"""
_LEDGER_SCRIPT = (
    _VERSION_ROWS_LUA
    + """
local first, last, counts, who = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local oldest, packages, versions = KEYS[5], KEYS[6], KEYS[7]
local prefix = ARGV[5]
local i = 6
while i <= #ARGV do
  local version, key, ends = ARGV[i], ARGV[i + 1], i + 2 + 5 * tonumber(ARGV[i + 2])
  for j = i + 3, ends, 5 do
    -- Times stay strings for ZADD: a Lua number would be written with 14 digits only.
    local member, at, seen, said = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 4]
    local known = redis.call('ZSCORE', first, member)
    if (not known) or tonumber(known) > tonumber(at) then
      redis.call('ZADD', first, at, member)
      index_row(versions, key, version, member, at)
    end
    known = redis.call('ZSCORE', last, member)
    if (not known) or tonumber(known) <= tonumber(seen) then
      redis.call('ZADD', last, seen, member)
      if said == '' then redis.call('HDEL', who, member)
      else redis.call('HSET', who, member, said) end
    end
    redis.call('HINCRBY', counts, member, ARGV[j + 3])
  end
  i = ends + 1
end
local function drop(members)
  for _, member in ipairs(members) do
    redis.call('ZREM', first, member)
    redis.call('ZREM', last, member)
    redis.call('HDEL', counts, member)
    redis.call('HDEL', who, member)
    local key, version = version_rows(prefix, member)
    if redis.call('ZREM', key, member) == 1 and
        redis.call('HINCRBY', versions, version, -1) <= 0 then
      redis.call('HDEL', versions, version)
    end
  end
end
drop(redis.call('ZRANGEBYSCORE', last, '-inf', '(' .. ARGV[1], 'LIMIT', 0, 10000))
local excess = redis.call('ZCARD', last) - tonumber(ARGV[2])
if excess > 0 then drop(redis.call('ZRANGE', last, 0, excess - 1)) end
local least = redis.call('ZRANGE', last, 0, 0, 'WITHSCORES')
if least[2] then
  redis.call('ZADD', oldest, least[2], ARGV[3])
  redis.call('ZADD', packages, 0, ARGV[4])
else
  redis.call('ZREM', oldest, ARGV[3])
  redis.call('ZREM', packages, ARGV[4])
end
return 1
"""
)
# The next chunk of rows (with their first seen) of a sorted set by first seen, in order,
# from just after the anchor: ARGV[1] its member, ARGV[2] its first seen ("" = from the
# start), ARGV[3] how many. When the anchor row is gone or moved since, the chunk starts
# after the rows first seen before the anchor's time (rows tied with it to the microsecond
# are read again; none is skipped).
_CHUNK_LUA = """
local function next_chunk(first)
  local start = 0
  if ARGV[1] ~= '' then
    local score = redis.call('ZSCORE', first, ARGV[1])
    if score and tonumber(score) == tonumber(ARGV[2]) then
      start = redis.call('ZRANK', first, ARGV[1]) + 1
    else
      start = redis.call('ZCOUNT', first, '-inf', '(' .. ARGV[2])
    end
  end
  return redis.call('ZRANGE', first, start, start + tonumber(ARGV[3]) - 1, 'WITHSCORES')
end
"""
# The version index (see the ledger script) filled for a chunk of rows a ledger of an earlier
# version holds (`_CHUNK_LUA`). Adding is idempotent, and rows the ledger script writes
# meanwhile index themselves. KEYS: first seen, the versions hash. ARGV: anchor member,
# anchor first seen, rows, key prefix. Returns {rows read, last member, its first seen}.
_INDEX_VERSIONS_SCRIPT = (
    _VERSION_ROWS_LUA
    + _CHUNK_LUA
    + """
local first, versions = KEYS[1], KEYS[2]
local rows = next_chunk(first)
for i = 1, #rows, 2 do
  local key, version = version_rows(ARGV[4], rows[i])
  index_row(versions, key, version, rows[i], rows[i + 1])
end
return {#rows / 2, rows[#rows - 1] or '', rows[#rows] or ''}
"""
)

# Who pulled a package, totalled where the rows are (the replies stay small: a client would
# spend seconds parsing 100,000 rows). One call reads a chunk of the rows in first-seen order,
# from just after the anchor: the last row the previous call read (its member and first seen;
# "" = from the start). KEYS: first seen, last seen, counts, what the clients said.
# ARGV: anchor member, anchor first seen, rows to read, since (micros, "" = all), "1" to
# group by version too (else the version is "": fewer groups, a smaller reply). Returns
# {rows read, last member, its first seen, then per (version, token, ci) group: version,
# token, ci, rows, downloads, first, last, and its distinct client addresses joined by NUL}.
# The chunk is `_CHUNK_LUA`'s (rows tied with a gone anchor to the microsecond may then
# count twice).
_IDENTITIES_SCRIPT = (
    _CHUNK_LUA
    + """
local first, last, counts, who = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rows = next_chunk(first)
local since = tonumber(ARGV[4])
local groups, order = {}, {}
local members = {}
for i = 1, #rows, 2 do members[#members + 1] = rows[i] end
local seens, tallies, saids = {}, {}, {}
if #members > 0 then
  seens = redis.call('ZMSCORE', last, unpack(members))
  tallies = redis.call('HMGET', counts, unpack(members))
  saids = redis.call('HMGET', who, unpack(members))
end
for n, member in ipairs(members) do
  local at, seen = tonumber(rows[2 * n]), tonumber(seens[n])
  if seen and ((not since) or seen >= since) then
    local key = cjson.decode(member)
    local said = saids[n]
    local ci = said and cjson.decode(said)[2] or ''
    local token = key[4] or ''
    local version = ARGV[5] == '1' and key[1] or ''
    local id = version .. '\\0' .. token .. '\\0' .. ci
    local group = groups[id]
    if not group then
      group = {version, token, ci, 0, 0, at, seen, {}, {}}
      groups[id] = group
      order[#order + 1] = id
    end
    group[4] = group[4] + 1
    group[5] = group[5] + tonumber(tallies[n] or '0')
    if at < group[6] then group[6] = at end
    if seen > group[7] then group[7] = seen end
    if not group[9][key[3]] then
      group[9][key[3]] = true
      group[8][#group[8] + 1] = key[3]
    end
  end
end
local reply = {#rows / 2, rows[#rows - 1] or '', rows[#rows] or ''}
for _, id in ipairs(order) do
  local group = groups[id]
  for j = 1, 7 do reply[#reply + 1] = group[j] end
  reply[#reply + 1] = table.concat(group[8], '\\0')
end
return reply
"""
)
# Rows one `download_identities` script totals (it keeps Redis busy about 15 ms).
_IDENTITIES_CHUNK = 2000

# The audit of earlier versions (a list, newest first, of the same JSON entries) moved into
# today's indexes in one atomic step, so workers starting together move it once. ARGV:
# namespace. The newest creation entry of each stored rule is pinned.
_UPGRADE_AUDIT_SCRIPT = """
local ns = ARGV[1]
local old = ns .. ':audit'
if redis.call('TYPE', old)['ok'] ~= 'list' then return 0 end
local entries, all = ns .. ':audit:entries', ns .. ':audit:all'
local prunable, pinned = ns .. ':audit:prunable', ns .. ':audit:pinned'
local rows = redis.call('LRANGE', old, 0, -1)
for i = #rows, 1, -1 do
  local raw = rows[i]
  local doc = cjson.decode(raw)
  local at = string.format('%019d', math.max(doc['at'], 0))
  local id = at .. '-' .. string.format('%012d', redis.call('INCR', ns .. ':audit:seq'))
  redis.call('HSET', entries, id, raw)
  redis.call('ZADD', all, 0, id)
  redis.call('ZADD', ns .. ':audit:target:' .. doc['target'], 0, id)
  redis.call('ZADD', ns .. ':audit:actor:' .. doc['actor'], 0, id)
  local kind = string.match(doc['action'], '^(%a+)%.create$')
  if kind and redis.call('HEXISTS', ns .. ':rules:' .. kind, doc['target']) == 1 then
    local earlier = redis.call('HGET', pinned, doc['target'])
    if earlier then redis.call('ZADD', prunable, 0, earlier) end
    redis.call('HSET', pinned, doc['target'], id)
  else
    redis.call('ZADD', prunable, 0, id)
  end
end
redis.call('DEL', old)
return #rows
"""
# The identity set if none is, with the time (Redis's clock, ms) it was claimed. KEYS: the
# identity, its claim time; ARGV: the candidate. Returns the stored identity.
_CLAIM_SCRIPT = """
if redis.call('SETNX', KEYS[1], ARGV[1]) == 1 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end
return redis.call('GET', KEYS[1])
"""
# A lost state published (see `StateStore.publish_loss`). KEYS: the loss hash; ARGV: the
# lost identity, its policy version, the copy. Returns 1 when stored.
_PUBLISH_LOSS_SCRIPT = """
local held = redis.call('HMGET', KEYS[1], 'identity', 'version')
if held[1] and (held[1] ~= ARGV[1] or tonumber(held[2]) >= tonumber(ARGV[2])) then
  return 0
end
redis.call('HSET', KEYS[1], 'identity', ARGV[1], 'version', ARGV[2], 'copy', ARGV[3])
return 1
"""
# The policy version raised above a floor (a restored copy's), atomically. KEYS: the version.
# ARGV: the floor. Returns the new version.
_RAISE_VERSION_SCRIPT = """
local version = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1])) + 1
redis.call('SET', KEYS[1], version)
return version
"""
# Fetch claims across replicas. A claim's value is "<owner>\n<announced temp file name>".
# The claim taken for ARGV[1] (the owner) for ARGV[2] ms unless held; returns the value held.
_CLAIM_FETCH_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1] .. '\\n', 'NX', 'PX', ARGV[2]) then
  return ARGV[1] .. '\\n'
end
return redis.call('GET', KEYS[1]) or ''
"""
# The claim renewed (ARGV: owner, new value, ttl ms) or released (ARGV: owner) only while
# ARGV[1] holds it: compare and set/delete in one step, so a late call never touches the
# claim of a holder that took over after it expired. Returns 1 when done.
_RENEW_FETCH_SCRIPT = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '\\n' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_RELEASE_FETCH_SCRIPT = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '\\n' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Set once every piece of data of earlier versions has been moved (3: the index of package
# names per ecosystem is filled; 4: the index of each package's versions).
# The quarantine queue of one ecosystem (`mirror.holds`): KEYS last held, first held (sorted
# sets of versions), request counts, what the latest hold said (publish time, until), when a
# requester of a version was last only counted (more than kept); ARGV the retention bound,
# the versions kept, the requesters kept per version, the prefix of a version's requester
# set, the retention in milliseconds, then per version: member, first, last, count, said, n,
# and n (requester, last held) pairs. Every key expires after the retention when nothing is
# held any more, besides the pruning here.
_HOLDS_SCRIPT = """
local last, first, counts, said, more = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, kept, ttl = ARGV[4], tonumber(ARGV[3]), ARGV[5]
local function who(member)
  return prefix .. string.gsub(member, '.', function(c)
    return string.format('%02x', string.byte(c))
  end)
end
local i = 6
while i <= #ARGV do
  local member, at, seen, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 5])
  local known = redis.call('ZSCORE', first, member)
  if (not known) or tonumber(known) > tonumber(at) then redis.call('ZADD', first, at, member) end
  known = redis.call('ZSCORE', last, member)
  if (not known) or tonumber(known) <= tonumber(seen) then
    redis.call('ZADD', last, seen, member)
    redis.call('HSET', said, member, ARGV[i + 4])
  end
  redis.call('HINCRBY', counts, member, ARGV[i + 3])
  local key = who(member)
  -- Stale requesters leave first: they must not take the slots of one asking now.
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[1])
  for j = i + 6, i + 5 + 2 * n, 2 do
    local requester, when = ARGV[j], ARGV[j + 1]
    local stored = redis.call('ZSCORE', key, requester)
    if stored then
      if tonumber(stored) < tonumber(when) then redis.call('ZADD', key, when, requester) end
    elseif redis.call('ZCARD', key) < kept then
      redis.call('ZADD', key, when, requester)
    else
      local noted = redis.call('HGET', more, member)
      if (not noted) or tonumber(noted) < tonumber(when) then
        redis.call('HSET', more, member, when)
      end
    end
  end
  redis.call('PEXPIRE', key, ttl)
  i = i + 6 + 2 * n
end
local function drop(members)
  for _, member in ipairs(members) do
    redis.call('ZREM', first, member)
    redis.call('ZREM', last, member)
    redis.call('HDEL', counts, member)
    redis.call('HDEL', said, member)
    redis.call('HDEL', more, member)
    redis.call('DEL', who(member))
  end
end
drop(redis.call('ZRANGEBYSCORE', last, '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000))
local excess = redis.call('ZCARD', last) - tonumber(ARGV[2])
if excess > 0 then drop(redis.call('ZRANGE', last, 0, excess - 1)) end
if #ARGV > 5 then
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl) end
end
return 1
"""
_UPGRADED = "4"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _micros(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError(f"state stores aware datetimes only, got naive {at!r}")
    return (at - _EPOCH) // _MICRO


def _from_micros(value: int | str | bytes) -> datetime:
    return _EPOCH + int(value) * _MICRO


# The client decodes responses (decode_responses=True); redis-py's types cannot say so.
_ScoredRows = list[tuple[str, float]]


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
    the same script (atomic, no WATCH) and are announced on the `<namespace>:policy` channel;
    `watch()` also re-reads the counter every second in case a message was lost."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "qm",
        clock: Clock | None = None,
        downloads_kept: int = DOWNLOADS_KEPT,
        ledger_retention: timedelta = LEDGER_RETENTION,
        audit_retention: timedelta = AUDIT_RETENTION,
        audit_cap: int = AUDIT_CAP,
        events_kept: int = EVENTS_KEPT,
    ) -> None:
        if downloads_kept < 1 or audit_cap < 1 or events_kept < 1:
            raise ValueError("downloads_kept, audit_cap and events_kept must be at least 1")
        self.url = url
        self.downloads_kept = downloads_kept
        self.ledger_retention = ledger_retention
        self.audit_retention = audit_retention
        self.audit_cap = audit_cap
        self.events_kept = events_kept
        self.namespace = namespace
        self.clock: Clock = clock or SystemClock()
        self.channel = f"{namespace}:policy"
        self._version_key = f"{namespace}:policy:version"
        self._identity_key = f"{namespace}:identity"
        self._predecessors_key = f"{namespace}:identity:restored-from"
        self._claimed_key = f"{namespace}:identity:claimed-ms"
        # Not under `rules`: nothing reads a published loss as live policy.
        self._lost_key = f"{namespace}:lost-state"
        self._client: aioredis.Redis | None = None
        self._change: AsyncScript | None = None
        self._ledger: AsyncScript | None = None
        self._identities: AsyncScript | None = None
        self._upgrade_audit: AsyncScript | None = None
        self._index_versions: AsyncScript | None = None
        self._holds: AsyncScript | None = None
        self._upgraded = False

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
            self._change = self._client.register_script(_CHANGE_SCRIPT)
            self._ledger = self._client.register_script(_LEDGER_SCRIPT)
            self._identities = self._client.register_script(_IDENTITIES_SCRIPT)
            self._upgrade_audit = self._client.register_script(_UPGRADE_AUDIT_SCRIPT)
            self._index_versions = self._client.register_script(_INDEX_VERSIONS_SCRIPT)
            self._holds = self._client.register_script(_HOLDS_SCRIPT)

    async def close(self) -> None:
        client, self._client = self._client, None
        self._change = self._ledger = self._identities = self._upgrade_audit = None
        self._index_versions = self._holds = None
        if client is not None:
            with self._translate("close"):
                await client.aclose()

    async def ping(self) -> None:
        client = self._redis("ping")
        with self._translate("ping"):
            await client.ping()

    # rules -----------------------------------------------------------------------------------
    async def add_rule(self, rule: RuleRecord, *, audit: AuditEntry | None = None) -> None:
        _, version = await self._apply("add rule", "set", rule.kind, rule.id, rule, audit)
        await self._announce("add rule", version)

    async def remove_rule(
        self, kind: RuleKind, rule_id: str, *, audit: AuditEntry | None = None
    ) -> RuleRecord | None:
        old, version = await self._apply("remove rule", "del", kind, rule_id, None, audit)
        if old is None:
            return None
        await self._announce("remove rule", version)
        return _decode_rule(old)

    async def _apply(
        self,
        what: str,
        op: str,
        kind: str,
        rule_id: str,
        rule: RuleRecord | None,
        audit: AuditEntry | None,
    ) -> tuple[str | None, int | None]:
        """Run the change script: (the removed rule's JSON, the new policy version)."""
        script = self._script(self._change, what)
        await self._upgrade()
        prune_before = self.clock.now() - self.audit_retention
        args = [
            self.namespace,
            op,
            kind,
            rule_id,
            "" if rule is None else _encode_rule(rule),
            "" if audit is None else _encode_audit(audit),
            "" if audit is None else _audit_time(audit.at),
            "" if audit is None else audit.actor,
            "" if audit is None else audit.target,
            _audit_time(prune_before),
            str(self.audit_cap),
        ]
        with self._translate(what):
            old, version = await script(keys=[], args=args)
        return (old or None), (None if not version else int(version))

    async def _announce(self, what: str, version: int | None) -> None:
        """Wake the watchers. The change is stored already: a failure here is only logged
        (`watch()` re-reads the counter every second anyway)."""
        try:
            client = self._redis(what)
            with self._translate(what):
                await client.publish(self.channel, str(version))
        except StateUnavailable:
            log.warning("the change is stored; replicas see it within a second")

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
        await self._upgrade()
        await self._write_rows(events)

    async def _write_rows(self, events: Sequence[DownloadEvent]) -> None:
        script = self._script(self._ledger, "record downloads")
        by_package: dict[tuple[str, str], dict[str, DownloadEvent]] = {}
        for event in events:
            rows = by_package.setdefault((event.ecosystem, event.package), {})
            member = _member(event)
            known = rows.get(member)
            rows[member] = event if known is None else known.merged(event)
        prune_before = _micros(self.clock.now() - self.ledger_retention)
        client = self._redis("record downloads")
        with self._translate("record downloads"):
            # Packages nobody pulled lately are pruned too: the index says which hold rows
            # past the retention (a bounded number per write).
            stale = await client.zrangebyscore(
                self._key("ledger-oldest"), "-inf", f"({prune_before}", start=0, num=100
            )
            for name in stale:
                ecosystem, _, package = str(name).partition("\n")
                by_package.setdefault((ecosystem, package), {})
            async with client.pipeline(transaction=False) as pipe:
                for (ecosystem, package), rows in by_package.items():
                    args = [
                        str(prune_before),
                        str(self.downloads_kept),
                        f"{ecosystem}\n{package}",
                        package,
                        self._version_rows(ecosystem, package, ""),
                    ]
                    by_version: dict[str, list[str]] = {}
                    for member, row in rows.items():
                        by_version.setdefault(row.version, []).extend(
                            (
                                member,
                                str(_micros(row.at)),
                                str(_micros(row.last_seen)),
                                str(row.count),
                                _said(row),
                            )
                        )
                    for version, fields in by_version.items():
                        key = self._version_rows(ecosystem, package, version)
                        args += [version, key, str(len(fields) // 5), *fields]
                    await script(keys=self._ledger_keys(ecosystem, package), args=args, client=pipe)
                await pipe.execute()

    def _ledger_keys(self, ecosystem: str, package: str) -> list[str]:
        """First seen, last seen, counts, what the clients said of one package's rows; the
        index of packages by least recently seen row; the ecosystem's package names; the
        package's versions (version -> rows)."""
        return [
            self._key("ledger", ecosystem, package),
            self._key("ledger-last", ecosystem, package),
            self._key("ledger-count", ecosystem, package),
            self._key("ledger-who", ecosystem, package),
            self._key("ledger-oldest"),
            self._key("ledger-packages", ecosystem),
            self._key("ledger-versions", ecosystem, package),
        ]

    def _version_rows(self, ecosystem: str, package: str, version: str) -> str:
        """The key of one version's rows (first seen), as the ledger script builds it: the
        version in hex, so no package and version pair shares another's key."""
        return self._key("ledger-version", ecosystem, package, version.encode().hex())

    async def _chosen_versions(
        self,
        client: aioredis.Redis,
        ecosystem: str,
        package: str,
        versions: Callable[[str], bool] | None,
        wanted: int,
        per_version: int,
    ) -> tuple[list[str] | None, bool]:
        """The keys of the versions' rows worth reading for `wanted` matching rows ([] when
        no version matches; None when reading the package's rows in order finds them about
        as fast: no filter, or the matching versions hold most rows or are very many), and
        whether those rows are still to be filtered (a scan where some version does not
        match). `per_version`: what reading one version costs besides its rows, in rows."""
        if versions is None:
            return None, False
        held = cast(
            dict[str, str],
            await client.hgetall(self._key("ledger-versions", ecosystem, package)),
        )
        matching = {version: int(n) for version, n in held.items() if versions(version)}
        total = sum(int(n) for n in held.values())
        found = sum(matching.values())
        # A scan reads about wanted * total / found rows, the versions their rows and keys.
        scan = total if wanted >= found else wanted * total / max(found, 1)
        if found == 0 or scan > min(wanted, found) + per_version * len(matching):
            return [self._version_rows(ecosystem, package, version) for version in matching], False
        return None, len(matching) < len(held)

    async def downloaded_packages(self, ecosystem: str) -> list[str]:
        await self._upgrade()
        client = self._redis("list downloaded packages")
        with self._translate("list downloaded packages"):
            # Score 0 for all: the set keeps the names in byte order.
            names = await client.zrange(self._key("ledger-packages", ecosystem), 0, -1)
        return [str(name) for name in names]

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
        # Rows sort by (first seen, member bytes); a position is the last one shown.
        floor = -(2**62)
        last: tuple[int, bytes] | None = None
        if after is not None:
            last = _position(after)
            floor = last[0]
        seen_since = None if since is None else _micros(since)
        await self._upgrade()
        client = self._redis("read downloads")
        last_key, count_key, who_key = self._ledger_keys(ecosystem, package)[1:4]
        events: list[DownloadEvent] = []
        positions: list[tuple[int, bytes]] = []
        with self._translate("read downloads"):
            # Versions read in one pipeline: a version costs about a row.
            chosen, _ = await self._chosen_versions(
                client, ecosystem, package, versions, limit + 1, per_version=1
            )
            if chosen is None:
                chunks = _scanned(client, self._ledger_keys(ecosystem, package)[0], floor)
            else:
                chunks = _merged(client, chosen, floor, limit + 1)
            # Bounded: each chunk is the next of the package's (capped) rows in order.
            async for rows in chunks:
                members = [member.decode() for _, member in rows]
                lasts: list[float | None] = []
                counts: list[str | None] = []
                said: list[str | None] = []
                if members:
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.zmscore(last_key, members)
                        pipe.hmget(count_key, members)
                        pipe.hmget(who_key, members)
                        lasts, counts, said = await pipe.execute()
                for position, seen, count, who in zip(rows, lasts, counts, said, strict=True):
                    if last is not None and position <= last:
                        continue
                    if seen is None or count is None:
                        continue  # pruned between the reads
                    if seen_since is not None and int(seen) < seen_since:
                        continue
                    version, filename, client_name, token = _unmember(position[1])
                    if versions is not None and not versions(version):
                        continue
                    user_agent, ci, command, session = (
                        _NOTHING_SAID if who is None else json.loads(who)
                    )
                    events.append(
                        DownloadEvent(
                            ecosystem=ecosystem,
                            package=package,
                            version=version,
                            filename=filename,
                            client=client_name,
                            token=token,
                            at=_from_micros(position[0]),
                            last_at=_from_micros(int(seen)),
                            count=int(count),
                            user_agent=user_agent,
                            ci=ci,
                            command=command,
                            session=session,
                        )
                    )
                    positions.append(position)
                    if len(events) > limit:
                        break
                if len(events) > limit:
                    break
        if len(events) <= limit:
            return DownloadPage(events=events, next_after=None)
        at, last_member = positions[limit - 1]
        return DownloadPage(events=events[:limit], next_after=f"{at}:{last_member.hex()}")

    async def download_identities(
        self,
        ecosystem: str,
        package: str,
        *,
        since: datetime | None = None,
        versions: Callable[[str], bool] | None = None,
    ) -> list[IdentityTotal]:
        # The rows (at most the package's cap) are totalled in Redis chunk by chunk per
        # (token, ci); the chunks are added up here. A filter of few versions reads only
        # their rows (the version index, as pages do); a scan with a filter some version
        # fails totals per version too and chooses here. (A filter every version held
        # passes reads all: a row of a version first written meanwhile may count.)
        script = self._script(self._identities, "read download identities")
        await self._upgrade()
        client = self._redis("read download identities")
        keys = self._ledger_keys(ecosystem, package)[:4]
        groups: dict[tuple[str, str], _Identity] = {}
        wanted: dict[str, bool] = {}  # each version matched once, however many chunks name it
        with self._translate("read download identities"):
            # A version costs a round trip: about what totalling 20 rows costs.
            chosen, by_version = await self._chosen_versions(
                client, ecosystem, package, versions, self.downloads_kept, per_version=20
            )
            for first_key in [keys[0]] if chosen is None else chosen:
                args = [
                    "",
                    "",
                    str(_IDENTITIES_CHUNK),
                    "" if since is None else str(_micros(since)),
                    "1" if by_version else "",
                ]
                for _ in range(self.downloads_kept // _IDENTITIES_CHUNK + 2):  # the cap bounds it
                    reply = await script(keys=[first_key, *keys[1:]], args=args)
                    read, anchor, anchor_at = int(reply[0]), str(reply[1]), str(reply[2])
                    for offset in range(3, len(reply), 8):
                        version, token, ci, rows, downloads, first, last, clients = reply[
                            offset : offset + 8
                        ]
                        if by_version and versions is not None:
                            name = str(version)
                            if name not in wanted:
                                wanted[name] = versions(name)
                            if not wanted[name]:
                                continue
                        group = groups.setdefault((str(token), str(ci)), _Identity())
                        group.add(int(rows), int(downloads), int(first), int(last), str(clients))
                    if read < _IDENTITIES_CHUNK:
                        break
                    args[:2] = [anchor, anchor_at]
        return sort_identities(group.total(token, ci) for (token, ci), group in groups.items())

    # traffic figures of the dashboard ------------------------------------------------------------
    async def add_traffic(self, counts: Sequence[TrafficCount]) -> None:
        """One hash per minute (`traffic:<minute>`, fields `<ecosystem>:<figure>`), summed by
        HINCRBY in one MULTI; it expires when the retention has passed (by this store's clock,
        as the other prunes)."""
        if not counts:
            return
        now = self.clock.now()
        client = self._redis("add traffic figures")
        with self._translate("add traffic figures"):
            async with client.pipeline(transaction=True) as pipe:
                for count in summed(counts):
                    lasts = count.minute + TRAFFIC_RETENTION - now
                    if lasts <= timedelta(0):
                        continue
                    key = self._traffic_key(count.minute)
                    for name, value in zip(FIGURES, count.figures(), strict=True):
                        if value:
                            pipe.hincrby(key, f"{count.ecosystem}:{name}", value)
                    if count.last_error:
                        pipe.hset(key, f"{count.ecosystem}:last_error", count.last_error)
                    pipe.expire(key, max(int(lasts.total_seconds()), 1))
                await pipe.execute()

    async def traffic(self, since: datetime) -> list[TrafficCount]:
        now = self.clock.now()
        first = minute_of(max(since, now - TRAFFIC_RETENTION))
        # A minute ahead: another replica's clock may run a little fast.
        minutes: list[datetime] = []
        minute = first
        while minute <= minute_of(now) + MINUTE:
            minutes.append(minute)
            minute += MINUTE
        found: list[TrafficCount] = []
        client = self._redis("read traffic figures")
        with self._translate("read traffic figures"):
            for start in range(0, len(minutes), _TRAFFIC_CHUNK):
                chunk = minutes[start : start + _TRAFFIC_CHUNK]
                async with client.pipeline(transaction=False) as pipe:
                    for minute in chunk:
                        pipe.hgetall(self._traffic_key(minute))
                    hashes = await pipe.execute()
                for minute, fields in zip(chunk, hashes, strict=True):
                    found.extend(_traffic_counts(minute, fields))
        return found

    def _traffic_key(self, minute: datetime) -> str:
        return self._key("traffic", str(int((minute - _EPOCH) // MINUTE)))

    # audit log ---------------------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None:
        await self._apply("append audit entry", "none", "", "", None, entry)

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
        if after is not None and not _AUDIT_ID.fullmatch(after):
            raise InvalidPosition(f"not an audit position of this store: {after[:40]!r}")
        # Entries past the retention go even when nobody writes.
        await self._apply("read audit log", "none", "", "", None, None)
        # The smallest index that holds every match; the other filter is applied on reading.
        if target is not None:
            index = self._key("audit", "target", target)
        elif actor is not None:
            index = self._key("audit", "actor", actor)
        else:
            index = self._key("audit", "all")
        ceilings = [text for text in (after, until and _audit_time(until)) if text]
        high = "(" + min(ceilings) if ceilings else "+"
        low = "-" if since is None else "[" + _audit_time(since)
        entries: list[AuditEntry] = []
        ids: list[str] = []
        scanned = 0
        client = self._redis("read audit log")
        with self._translate("read audit log"):
            while len(entries) <= limit and scanned < AUDIT_SCAN:
                chunk = cast(
                    list[str],
                    await client.zrevrangebylex(index, high, low, start=0, num=_AUDIT_CHUNK),
                )
                if not chunk:
                    break
                scanned += len(chunk)
                high = "(" + chunk[-1]
                documents = cast(
                    list[str | None], await client.hmget(self._key("audit", "entries"), chunk)
                )
                for entry_id, raw in zip(chunk, documents, strict=True):
                    if raw is None:
                        continue  # pruned between the reads
                    entry = _decode_audit(raw)
                    if actor is not None and entry.actor != actor:
                        continue
                    entries.append(entry)
                    ids.append(entry_id)
                    if len(entries) > limit:
                        break
                if len(chunk) < _AUDIT_CHUNK:
                    high = ""
                    break
            pruned = await client.get(self._key("audit", "pruned-before"))
        if len(entries) > limit:
            next_after: str | None = ids[limit - 1]
        elif high and scanned >= AUDIT_SCAN:
            next_after = high[1:]  # scanned enough: go on from the last entry read
        else:
            next_after = None
        return AuditPage(
            entries=entries[:limit],
            next_after=next_after,
            pruned_before=None if pruned is None else _from_micros(pruned),
        )

    # data of earlier versions -----------------------------------------------------------------
    async def _upgrade(self) -> None:
        """Once per store: what an earlier version stored (the audit as a capped list, the
        ledger as one event per download) moved into today's form, nothing lost. Each piece
        moves atomically, so workers starting together move it once."""
        if self._upgraded:
            return
        client = self._redis("upgrade stored data")
        script = self._script(self._upgrade_audit, "upgrade stored data")
        marker = self._key("upgraded")
        with self._translate("upgrade stored data"):
            if await client.get(marker) == _UPGRADED:
                self._upgraded = True
                return
            moved = await script(keys=[], args=[self.namespace])
            if moved:
                log.warning("Redis state %s: %s audit entries moved", self._where(), moved)
            prefix = self._key("downloads", "")
            async for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=500):
                await self._upgrade_downloads(client, str(key), prefix)
            await self._index_package_names(client)
            await self._index_package_versions(client)
            await client.set(marker, _UPGRADED)
        self._upgraded = True

    async def _index_package_names(self, client: aioredis.Redis) -> None:
        """The ecosystems' package names (`downloaded_packages`) indexed from the index of
        packages by least recently seen row, which names every package holding rows (a
        ledger of an earlier version has rows but no name index). Adding is idempotent."""
        oldest = self._key("ledger-oldest")
        start = 0
        while True:
            names = cast(list[str], await client.zrange(oldest, start, start + _PAGE_CHUNK - 1))
            by_ecosystem: dict[str, list[str]] = {}
            for name in names:
                ecosystem, _, package = str(name).partition("\n")
                by_ecosystem.setdefault(ecosystem, []).append(package)
            for ecosystem, packages in by_ecosystem.items():
                index = self._key("ledger-packages", ecosystem)
                await client.zadd(index, dict.fromkeys(packages, 0))
            if len(names) < _PAGE_CHUNK:
                return
            start += len(names)

    async def _index_package_versions(self, client: aioredis.Redis) -> None:
        """Each package's version index (see the ledger script) filled from its rows, a
        chunk per call, package by package in name order (an earlier version kept none)."""
        script = self._script(self._index_versions, "upgrade stored data")
        prefix = self._key("ledger-packages", "")
        indexes = [
            str(key) async for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=500)
        ]
        for index in indexes:
            ecosystem = index[len(prefix) :]
            low = "-"
            while True:
                names = cast(
                    list[str], await client.zrangebylex(index, low, "+", start=0, num=_PAGE_CHUNK)
                )
                for package in names:
                    keys = [self._key("ledger", ecosystem, package)]
                    keys.append(self._key("ledger-versions", ecosystem, package))
                    args = [
                        "",
                        "",
                        str(_IDENTITIES_CHUNK),
                        self._version_rows(ecosystem, package, ""),
                    ]
                    # Bounded: the package keeps at most `downloads_kept` rows.
                    for _ in range(self.downloads_kept // _IDENTITIES_CHUNK + 2):
                        read, anchor, anchor_at = await script(keys=keys, args=args)
                        if int(read) < _IDENTITIES_CHUNK:
                            break
                        args[:2] = [str(anchor), str(anchor_at)]
                if len(names) < _PAGE_CHUNK:
                    break
                low = "(" + names[-1]

    async def _upgrade_downloads(self, client: aioredis.Redis, key: str, prefix: str) -> None:
        """One package's download events (an earlier version's form) folded into rows."""
        ecosystem, _, package = key[len(prefix) :].partition(":")
        moving = self._key("upgrading", secrets.token_hex(8))
        try:
            await client.rename(key, moving)
        except ResponseError:
            return  # another worker took it
        rows = cast(_ScoredRows, await client.zrange(moving, 0, -1, withscores=True))
        events = []
        for member, score in rows:
            version, filename, client_name = json.loads(member)[:3]
            at = _from_micros(int(score))
            events.append(
                DownloadEvent(
                    ecosystem=ecosystem, package=package, version=version,
                    filename=filename, client=client_name, at=at,
                )
            )  # fmt: skip
        for start in range(0, len(events), _PAGE_CHUNK):
            await self._write_rows(events[start : start + _PAGE_CHUNK])
        await client.delete(moving)

    # identity and restore --------------------------------------------------------------------
    # takedown events ---------------------------------------------------------------------------
    async def add_event(self, event: TakedownEvent) -> bool:
        """The event's JSON under `takedowns:data` (HSETNX: the first writer wins), its
        position in `takedowns:all` and `takedowns:<ecosystem>:<package>` (sorted sets scored
        by detection time in microseconds, members `<id>`); past `events_kept` the oldest
        of those nobody had downloaded go first (`takedowns:unseen` lists them), then the
        oldest.
        One script: an event is never half stored."""
        data = json.dumps(event_to_json(event), separators=(",", ":"))
        score = _event_score(event.detected_at)
        client = self._redis("record takedown event")
        with self._translate("record takedown event"):
            added = await client.eval(
                _ADD_EVENT_SCRIPT,
                4,
                self._key("takedowns", "data"),
                self._key("takedowns", "all"),
                self._key("takedowns", "pkg", event.ecosystem, event.package),
                self._key("takedowns", "unseen"),
                event.id,
                data,
                score,
                self.events_kept,
                self._key("takedowns", "pkg", ""),
                1 if event.clients > 0 else 0,
            )
        return bool(added)

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
        if ecosystem is not None and package is not None:
            index = self._key("takedowns", "pkg", ecosystem, package)
        else:
            index = self._key("takedowns", "all")
        high = "+inf" if before is None else str(_event_score(before[0]))
        low = "-inf" if since is None else str(_event_score(since))
        client = self._redis("read takedown events")
        found: list[TakedownEvent] = []
        with self._translate("read takedown events"):
            # Newest first; ties (one microsecond) ordered by id, descending, as SQLite does.
            members = cast(
                list[tuple[str, float]],
                await client.zrevrangebyscore(index, high, low, withscores=True),
            )
            ranked = sorted(((int(score), str(member)) for member, score in members), reverse=True)
            position = None if before is None else (_event_score(before[0]), before[1])
            chosen = [
                member for score, member in ranked if position is None or (score, member) < position
            ]
            for start in range(0, len(chosen), 200):
                if len(found) >= limit:
                    break
                chunk = chosen[start : start + 200]
                values = await client.hmget(self._key("takedowns", "data"), chunk)
                for value in values:
                    event = event_from_json(json.loads(value)) if value else None
                    if event is None or ecosystem not in (None, event.ecosystem):
                        continue
                    if package not in (None, event.package):
                        continue
                    found.append(event)
                    if len(found) >= limit:
                        break
        return found

    # quarantine queue ------------------------------------------------------------------------
    async def record_holds(self, events: Sequence[HoldEvent]) -> None:
        if not events:
            return
        script = self._script(self._holds, "record held requests")
        # ecosystem -> version member -> its events (one per requester)
        by_version: dict[str, dict[str, list[HoldEvent]]] = {}
        for event in merged_events(events):
            subject = event.subject
            member = json.dumps([subject.package, subject.version])
            by_version.setdefault(subject.ecosystem, {}).setdefault(member, []).append(event)
        prune_before = str(_micros(self.clock.now() - HOLDS_RETENTION))
        retention_ms = str(int(HOLDS_RETENTION.total_seconds() * 1000))
        client = self._redis("record held requests")
        with self._translate("record held requests"):
            async with client.pipeline(transaction=False) as pipe:
                # Every ecosystem's queue is pruned, also those with nothing new to add.
                for ecosystem in dict.fromkeys((*ECOSYSTEMS, *by_version)):
                    versions = by_version.get(ecosystem, {})
                    args = [
                        prune_before,
                        str(HOLDS_KEPT),
                        str(REQUESTERS_KEPT),
                        self._key("holds-who", ecosystem, ""),
                        retention_ms,
                    ]
                    for member, rows in versions.items():
                        latest = max(rows, key=lambda row: row.last_at)
                        said = json.dumps(said_micros(latest.subject))
                        args += [
                            member,
                            str(min(_micros(row.at) for row in rows)),
                            str(_micros(latest.last_at)),
                            str(sum(row.count for row in rows)),
                            said,
                            str(len(rows)),
                        ]
                        for row in rows:
                            args += [f"{row.client}\n{row.token}", str(_micros(row.last_at))]
                    await script(keys=self._holds_keys(ecosystem), args=args, client=pipe)
                await pipe.execute()

    def _holds_keys(self, ecosystem: str) -> list[str]:
        """Last held, first held, counts, what the latest hold said, when a requester was
        last only counted: one ecosystem's queue (`_HOLDS_SCRIPT`)."""
        return [
            self._key("holds-last", ecosystem),
            self._key("holds-first", ecosystem),
            self._key("holds-count", ecosystem),
            self._key("holds-said", ecosystem),
            self._key("holds-more", ecosystem),
        ]

    async def held_versions(self, *, limit: int, ecosystem: str | None = None) -> list[HeldVersion]:
        client = self._redis("read held versions")
        ecosystems = ECOSYSTEMS if ecosystem is None else (ecosystem,)
        with self._translate("read held versions"):
            newest: list[tuple[float, str, str]] = []
            for name in ecosystems:
                scored = cast(
                    _ScoredRows,
                    await client.zrevrange(
                        self._key("holds-last", name), 0, limit - 1, withscores=True
                    ),
                )
                newest += [(float(score), name, str(member)) for member, score in scored]
            newest.sort(key=lambda entry: (-entry[0], entry[1], entry[2]))
            return await self._held_details(client, newest[:limit])

    async def held_version(self, ecosystem: str, package: str, version: str) -> HeldVersion | None:
        client = self._redis("read a held version")
        member = json.dumps([package, version])
        with self._translate("read a held version"):
            score = await client.zscore(self._key("holds-last", ecosystem), member)
            if score is None:
                return None
            [found] = await self._held_details(client, [(float(score), ecosystem, member)])
        return found

    async def _held_details(
        self, client: aioredis.Redis, versions: Sequence[tuple[float, str, str]]
    ) -> list[HeldVersion]:
        """`versions` (last held, ecosystem, member) with what the queue knows of each;
        requesters older than the retention are left out (pruned on the next write)."""
        shown_since = _micros(self.clock.now() - HOLDS_RETENTION)
        async with client.pipeline(transaction=False) as pipe:
            for _, name, member in versions:
                _, first, counts, said, more = self._holds_keys(name)
                who = self._key("holds-who", name, member.encode().hex())
                pipe.zscore(first, member)
                pipe.hget(counts, member)
                pipe.hget(said, member)
                pipe.hget(more, member)
                pipe.zrevrangebyscore(who, "+inf", shown_since, start=0, num=REQUESTERS_SHOWN)
                pipe.zcount(who, shown_since, "+inf")
            answers = await pipe.execute()
        found: list[HeldVersion] = []
        for index, (score, name, member) in enumerate(versions):
            first, count, said, more, requesters, total = answers[index * 6 : index * 6 + 6]
            package, version = json.loads(member)
            published, until = json.loads(said) if said else (None, None)
            found.append(
                HeldVersion(
                    ecosystem=name,
                    package=package,
                    version=version,
                    published_at=None if published is None else _from_micros(published),
                    until=None if until is None else _from_micros(until),
                    requests=int(count or 0),
                    requesters=tuple(Requester(*str(raw).split("\n", 1)) for raw in requesters),
                    requester_count=int(total),
                    more_requesters=more is not None and int(more) >= shown_since,
                    first_held=_from_micros(int(float(first if first is not None else score))),
                    last_held=_from_micros(int(score)),
                )
            )
        return found

    async def state_identity(self) -> StateIdentity:
        client = self._redis("read the state identity")
        with self._translate("read the state identity"):
            async with client.pipeline(transaction=True) as pipe:
                pipe.get(self._identity_key)
                pipe.get(self._version_key)
                pipe.smembers(self._predecessors_key)
                pipe.get(self._claimed_key)
                pipe.time()
                pipe.hmget(self._lost_key, ["identity", "version"])
                identity, version, predecessors, claimed, now, lost = await pipe.execute()
        seconds, micros = now
        age = None if claimed is None else seconds + micros / 1e6 - int(claimed) / 1000
        return StateIdentity(
            identity=identity,
            version=0 if version is None else int(version),
            restored_from=frozenset(predecessors),
            age=age,
            lost=lost[0],
            lost_version=0 if lost[1] is None else int(lost[1]),
        )

    async def claim_identity(self, candidate: str) -> str:
        client = self._redis("claim the state identity")
        with self._translate("claim the state identity"):
            stored = await client.eval(
                _CLAIM_SCRIPT, 2, self._identity_key, self._claimed_key, candidate
            )
        return str(stored)

    async def publish_loss(self, lost: str, version: int, copy: bytes) -> bool:
        client = self._redis("publish a lost state")
        with self._translate("publish a lost state"):
            stored = await client.eval(
                _PUBLISH_LOSS_SCRIPT, 1, self._lost_key, lost, version, copy.decode()
            )
        return bool(stored)

    async def published_loss(self) -> tuple[str, int, bytes] | None:
        client = self._redis("read a published loss")
        with self._translate("read a published loss"):
            identity, version, copy = await client.hmget(
                self._lost_key, ["identity", "version", "copy"]
            )
        if identity is None or version is None or copy is None:
            return None
        return str(identity), int(version), str(copy).encode()

    async def pinned_digests(self) -> dict[str, dict[str, str]]:
        client = self._redis("read digest pins")
        prefix = self._key("digests", "")
        pins: dict[str, dict[str, str]] = {}
        with self._translate("read digest pins"):
            async for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=500):
                text = key.decode() if isinstance(key, bytes) else str(key)
                pins[text[len(prefix) :]] = cast(dict[str, str], await client.hgetall(text))
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
        await self._upgrade()
        copied = [_encode_audit(entry) for entry in audit]
        with self._translate("restore the state"):
            # Entries written since the loss stay; the copy's are added once each, through
            # the same step that moves an earlier version's audit into today's indexes (it
            # pins the creation entries of stored rules).
            known = set(await client.hvals(self._key("audit", "entries")))
            missing = [raw for raw in copied if raw not in known]
            missing.sort(key=lambda raw: int(json.loads(raw)["at"]), reverse=True)
            async with client.pipeline(transaction=True) as pipe:
                for rule in rules:
                    pipe.hsetnx(self._key("rules", rule.kind), rule.id, _encode_rule(rule))
                for ecosystem, keys in digests.items():
                    if keys:
                        pipe.hset(
                            self._key("digests", ecosystem),
                            # redis-py's Mapping type is invariant in its key type.
                            mapping=cast(Any, dict(keys)),
                        )
                pipe.sadd(self._predecessors_key, predecessor)
                pipe.delete(self._lost_key)
                if missing:
                    pipe.delete(self._key("audit"))
                    pipe.rpush(self._key("audit"), *missing)
                await pipe.execute()
            if missing:
                await self._script(self._upgrade_audit, "restore the state")(
                    keys=[], args=[self.namespace]
                )
            version = int(
                await client.eval(_RAISE_VERSION_SCRIPT, 1, self._version_key, version_floor)
            )
        await self._apply("restore the state", "none", "", "", None, None)  # prune by age
        await self._announce("restore the state", version)
        return version

    # fetch claims across replicas ---------------------------------------------------------------
    async def claim_fetch(self, key: str, owner: str, ttl: timedelta) -> FetchHolder:
        client = self._redis("claim a fetch")
        with self._translate("claim a fetch"):
            held = await client.eval(
                _CLAIM_FETCH_SCRIPT, 1, self._fetch_key(key), _owner(owner), _millis(ttl)
            )
        holder, _, announced = str(held).partition("\n")
        return FetchHolder(owner=holder, announced=announced)

    async def renew_fetch(self, key: str, owner: str, ttl: timedelta, announced: str = "") -> bool:
        client = self._redis("renew a fetch claim")
        checked = _owner(owner)
        value = f"{checked}\n{announced}"
        with self._translate("renew a fetch claim"):
            renewed = await client.eval(
                _RENEW_FETCH_SCRIPT, 1, self._fetch_key(key), checked, value, _millis(ttl)
            )
        return bool(renewed)

    async def release_fetch(self, key: str, owner: str) -> None:
        client = self._redis("release a fetch claim")
        with self._translate("release a fetch claim"):
            await client.eval(_RELEASE_FETCH_SCRIPT, 1, self._fetch_key(key), _owner(owner))

    def _fetch_key(self, key: str) -> str:
        # Hashed: any cache key makes a short key of known characters.
        return self._key("fetch", hashlib.sha256(key.encode()).hexdigest())

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

    def _script(self, script: AsyncScript | None, what: str) -> AsyncScript:
        if script is None:
            raise StateUnavailable(f"the shared state (Redis) is not open ({what})")
        return script

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


class _Identity:
    """The running totals of one (token, ci) over the chunks `download_identities` reads."""

    def __init__(self) -> None:
        self.rows = 0
        self.downloads = 0
        self.first: int | None = None
        self.last: int | None = None
        self.clients: set[str] = set()

    def add(self, rows: int, downloads: int, first: int, last: int, clients: str) -> None:
        self.rows += rows
        self.downloads += downloads
        self.first = first if self.first is None else min(self.first, first)
        self.last = last if self.last is None else max(self.last, last)
        self.clients.update(clients.split("\0"))

    def total(self, token: str, ci: str) -> IdentityTotal:
        return IdentityTotal(
            token=token,
            ci=ci,
            clients=len(self.clients),
            rows=self.rows,
            downloads=self.downloads,
            first_seen=_from_micros(self.first or 0),
            last_seen=_from_micros(self.last or 0),
        )


_TRAFFIC_CHUNK = 500  # minutes read in one round trip


def _traffic_counts(minute: datetime, fields: Mapping[str, str]) -> list[TrafficCount]:
    """A minute's hash back as one count per ecosystem, sorted by ecosystem."""
    by_ecosystem: dict[str, dict[str, str]] = {}
    for name, value in fields.items():
        ecosystem, _, figure = name.partition(":")
        by_ecosystem.setdefault(ecosystem, {})[figure] = value
    return [
        TrafficCount(
            ecosystem=ecosystem,
            minute=minute,
            last_error=figures.get("last_error", ""),
            **{name: int(figures.get(name, 0)) for name in FIGURES},
        )
        for ecosystem, figures in sorted(by_ecosystem.items())
    ]


def _owner(owner: str) -> str:
    if not owner or "\n" in owner:
        raise ValueError(f"a fetch claim's owner is one non-empty line, not {owner!r}")
    return owner


def _millis(ttl: timedelta) -> int:
    return max(1, int(ttl.total_seconds() * 1000))


def _position(text: str) -> tuple[int, bytes]:
    """(score, member) of a position `downloads_page` issued as "score:hex(member)"."""
    if not _POSITION.fullmatch(text):
        raise InvalidPosition(f"not a download position of this store: {text[:40]!r}")
    at, _, member = text.partition(":")
    return int(at), bytes.fromhex(member)


async def _scanned(
    client: aioredis.Redis, key: str, floor: int
) -> AsyncIterator[list[tuple[int, bytes]]]:
    """A package's rows from first seen `floor` on, (first seen, member) in order, a chunk
    per round trip."""
    offset = 0
    while True:
        rows = cast(
            _ScoredRows,
            await client.zrangebyscore(
                key, floor, "+inf", start=offset, num=_PAGE_CHUNK, withscores=True
            ),
        )
        offset += len(rows)
        yield [(int(score), member.encode()) for member, score in rows]
        if len(rows) < _PAGE_CHUNK:
            return


async def _merged(
    client: aioredis.Redis, keys: Sequence[str], floor: int, wanted: int
) -> AsyncIterator[list[tuple[int, bytes]]]:
    """The rows of several versions (their row keys) from first seen `floor` on, merged in
    the order `_scanned` reads a package's rows, a chunk per round trip. Each round reads
    the versions whose rows read so far are all passed on (twice as many as the last time,
    starting at a share of the `wanted` rows) and passes on the rows up to the smallest last
    row read of a version that has more: those are complete and in order."""
    if not keys:
        return
    offsets = dict.fromkeys(keys, 0)
    sizes = dict.fromkeys(keys, min(_PAGE_CHUNK, wanted // len(keys) + 2))
    buffers: dict[str, deque[tuple[int, bytes]]] = {key: deque() for key in keys}
    more = set(keys)
    reading = list(keys)
    while reading:
        async with client.pipeline(transaction=False) as pipe:
            for key in reading:
                pipe.zrangebyscore(
                    key, floor, "+inf", start=offsets[key], num=sizes[key], withscores=True
                )
            replies = cast(list[_ScoredRows], await pipe.execute())
        for key, rows in zip(reading, replies, strict=True):
            offsets[key] += len(rows)
            buffers[key].extend((int(score), member.encode()) for member, score in rows)
            if len(rows) < sizes[key]:
                more.discard(key)
            sizes[key] = min(_PAGE_CHUNK, sizes[key] * 2)
        bound = min((buffers[key][-1] for key in more), default=None)
        ready: list[list[tuple[int, bytes]]] = []
        for buffer in buffers.values():
            taken: list[tuple[int, bytes]] = []
            while buffer and (bound is None or buffer[0] <= bound):
                taken.append(buffer.popleft())
            ready.append(taken)
        yield list(heapq.merge(*ready))
        reading = [key for key in more if not buffers[key]]


def _member(event: DownloadEvent) -> str:
    """A ledger row's member: the file, the client address and the read token, the token
    left out when there is none (so the rows of versions before tokens are those rows)."""
    key = [event.version, event.filename, event.client]
    if event.token:
        key.append(event.token)
    return json.dumps(key, separators=(",", ":"))


def _unmember(raw: bytes) -> tuple[str, str, str, str]:
    """(version, filename, client, token) of a member `_member` wrote."""
    version, filename, client, *token = json.loads(raw)
    return version, filename, client, token[0] if token else ""


_NOTHING_SAID = ("", "", "", "")


def _said(event: DownloadEvent) -> str:
    """What the client said about itself as the ledger stores it ("" = nothing)."""
    said = [event.user_agent, event.ci, event.command, event.session]
    return json.dumps(said, separators=(",", ":")) if any(said) else ""


def _audit_time(at: datetime) -> str:
    """`at` as the time part of an audit id (19 digits: sorts as text in time order)."""
    return f"{min(max(_micros(at), 0), 10**19 - 1):019d}"


def _decode_audit(raw: str) -> AuditEntry:
    doc = json.loads(raw)
    return AuditEntry(
        at=_from_micros(doc["at"]),
        actor=doc["actor"],
        client=doc["client"],
        action=doc["action"],
        target=doc["target"],
        before=doc["before"],
        after=doc["after"],
    )


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


def _event_score(at: datetime) -> int:
    """A detection time as a takedown index's score: microseconds since the epoch."""
    return int((at - _EPOCH) / timedelta(microseconds=1))


# KEYS: data hash, the all-events index, the package's index. ARGV: id, JSON, score, how many
# events are kept, the prefix of package indexes (`…:takedowns:pkg:`). Returns 1 if added.
_ADD_EVENT_SCRIPT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if ARGV[6] == '0' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1]) end
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  -- Events nobody had downloaded (KEYS[4]) go first, oldest first; then the oldest.
  local old = redis.call('ZRANGE', KEYS[4], 0, excess - 1)
  if #old < excess then
    local more = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
    local chosen = {}
    for _, id in ipairs(old) do chosen[id] = true end
    for _, id in ipairs(more) do
      if #old >= excess then break end
      if not chosen[id] then table.insert(old, id); chosen[id] = true end
    end
  end
  for _, id in ipairs(old) do
    local data = redis.call('HGET', KEYS[1], id)
    if data then
      local event = cjson.decode(data)
      redis.call('ZREM', ARGV[5] .. event['ecosystem'] .. ':' .. event['package'], id)
    end
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[4], id)
  end
end
return 1
"""
