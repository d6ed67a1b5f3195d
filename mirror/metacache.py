"""Cached upstream metadata documents (fresh / stale-while-revalidate / stale-if-error, kept
on disk for restarts and sibling workers) and the bounded cache of rendered, filtered views.
It never applies policy and never renders: callers pass `parse` and store `Rendered` views.

Choices, stated plainly:
- A copy asked for once its age passes REFRESH_AHEAD_FRACTION of `ttl` is served fresh while
  ONE background conditional GET revalidates it ahead of expiry (with the failure back-off
  below): a document asked for at least that often never goes stale, so no client waits for
  it or is served it stale.
- A copy older than `ttl` but younger than `stale_max` is served at once (`stale=True`) while
  ONE background conditional GET revalidates it; a failed revalidation is not retried for
  `min(ttl, 30 s)` so a down upstream sees one request per key per interval, not one per hit.
- A copy older than `stale_max` (or `refresh=True`, or none) is fetched in the foreground;
  if that fails with UpstreamUnavailable or BadUpstreamDocument, a copy younger than
  `stale_max` is still served stale.
- `refresh=True` (a client named a file or version the copy does not list) goes upstream
  only when nothing asked upstream for this document in the last `refresh_interval`
  (success or failure, this worker or a sibling through the disk copy); otherwise the copy
  is served as without `refresh`. Clients choose the names they ask for: without this limit
  each made-up name would be one upstream request.
- UpstreamNotFound is never masked: a 404/410 means the document was unpublished, so the
  copy is dropped from memory and disk and the error propagates. It is remembered for
  `negative_ttl` (in memory, at most `max_absent` names, least recently asked first out):
  the same error is raised again without asking upstream, `refresh=True` included.
- `parse` runs once per upstream change and key; the parsed value is reused while the
  caller passes an equal `parse` (use a module-level function, not a fresh lambda). An
  upstream that sends no validators answers every revalidation with the full body: when its
  sha256 is unchanged the version, the parsed value (and so every view callers keyed by the
  version) are kept.
- `immutable=True` (release files: Maven checksums and signatures) is for documents that never
  change once published: a copy that `parse` accepted is served from memory or disk whatever
  its age, never revalidated (only `refresh="urgent"` asks upstream again), and upstream's
  404 for one is remembered for IMMUTABLE_NEGATIVE_TTL (at least `negative_ttl`), unless it
  is `required` (a release file's `.sha1`: some repositories upload the file before its
  checksums, so its absence is remembered for `negative_ttl` only). A copy held (in memory,
  or on disk from an earlier release whose parser was laxer) is checked by `parse` before it
  is served: one `parse` refuses is dropped (memory and disk) and fetched again, never served
  nor refused forever. `forget` drops a copy a caller found wrong (a checksum a download did
  not match). The hourly prune still removes such copies from disk once older than
  `stale_max`; one pruned and no longer in memory is fetched once again.
- A copy read from disk is checked by `parse` (for `current`, by the parser it was given)
  before it is served: a copy stored under another parser is never served unchecked.
- Takedowns: when upstream answers a copy held (in memory or on disk) with new bytes, or
  with 404/410, and `parse` can list what a document offers (`takedowns.Lists`), the
  `watcher` given at construction is handed both copies (`DocumentChange`). It is called
  synchronously and must only schedule its work: the cache never waits for it, and its
  errors are logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import orjson

from mirror import errors
from mirror.budget import BudgetedLRU, ByteBudget, Weighed
from mirror.clock import Clock
from mirror.files import atomic_write
from mirror.flight import SingleFlight
from mirror.metrics import Metrics
from mirror.model import Rendered
from mirror.replay import DocumentStamp, ReplaySource
from mirror.upstream import Upstream, UpstreamDocument, redact

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bodies above this are parsed in a thread: a 20 MB packument would stall every client.
PARSE_IN_THREAD_BYTES = 1024 * 1024
# Documents of that size are parsed this many at a time per worker: a parsed 10 MiB packument
# takes ~200 MiB while it is being filtered, and ten concurrent misses would add up.
LARGE_PARSES_AT_ONCE = 2
FAILURE_BACKOFF = timedelta(seconds=30)
# A copy asked for once its age passes this fraction of the TTL is revalidated in the
# background while still served fresh (refresh-ahead). A fraction rather than "TTL minus a
# fixed margin" so that it fits any TTL (a 30 s margin would be all of a 30 s TTL). With 0.8
# a document asked for at least every fifth of its TTL never expires: the install that comes
# just after the TTL finds a copy refreshed a minute ago, instead of a stale copy (served
# while revalidating) or, past `stale_max`, a wait for upstream. The cost: a busy document is
# asked for every 0.8 TTL instead of every TTL (25 % more conditional GETs); one asked for
# rarely is revalidated as before, at most once per TTL.
REFRESH_AHEAD_FRACTION = 0.8
# How long an upstream 404 for an immutable document (a release file's checksum or
# signature) is remembered. Release repositories never add a checksum to a released file
# later (Maven Central's files are write-once), so its absence is as durable as the file; a
# day still bounds the harm of a repository fixed by hand or a file asked for while it was
# being deployed (such a version is normally in quarantine for days anyway), at one upstream
# request per file per day instead of one per `negative_ttl`.
IMMUTABLE_NEGATIVE_TTL = timedelta(days=1)
DEFAULT_MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
DEFAULT_REFRESH_INTERVAL = timedelta(seconds=30)
DEFAULT_NEGATIVE_TTL = timedelta(minutes=1)
DEFAULT_MEMORY_BUDGET = 96 * 1024**2
# A parsed document costs about this many bytes per byte of its raw JSON (measured with
# tracemalloc on a generated 5,000-version packument: 2.9 MB raw, 14.6 MB parsed, 5.0x).
# The budget charges raw length x this factor instead of walking the objects.
PARSED_BYTES_PER_RAW_BYTE = 5
# Distinct client-facing base URLs (without `public_url`) whose rendered views are kept.
DEFAULT_MAX_BASES = 8
_UNPARSED: Any = object()


# How `MetaCache.get` may go upstream ahead of the TTL: not at all, rate-limited per
# document (`True`: a client asked for something the copy lacks), or at once ("urgent").
Refresh = bool | Literal["urgent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedDocument(Generic[T]):
    """A document as served: `version` is the sha256 hex of `raw` (changes iff upstream did)."""

    url: str
    parsed: T
    version: str
    fetched_at: datetime
    stale: bool
    etag: str | None
    last_modified: str | None
    raw: bytes
    accept: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    url: str
    accept: str
    raw: bytes
    version: str
    fetched_at: datetime  # last time upstream confirmed these bytes (200 or 304)
    etag: str | None
    last_modified: str | None
    parse: Callable[[bytes], Any] | None = None
    parsed: Any = _UNPARSED
    failed_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Absent:
    """An upstream 404/410, kept to be raised again as it was."""

    message: str
    data: dict[str, Any]
    noted_at: datetime
    lasts: timedelta


_Key = tuple[str, str]
# Documents whose replacements are counted for `MetaCache.stamp` before the counts start over.
MAX_REPLACED_NOTED = 65_536


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentChange:
    """A held copy replaced by upstream: `before` is the held copy parsed by `parse` when it
    was kept parsed so, else its raw bytes (the watcher parses them, off the event loop when
    larger than PARSE_IN_THREAD_BYTES); `after` the new copy parsed by `parse`, or None when
    upstream answered 404/410 (everything removed). `parse` implements `takedowns.Lists`."""

    ecosystem: str
    url: str
    before: Any
    before_parsed: bool
    after: Any
    parse: Callable[[bytes], Any]


# Called with each change; it must return at once (schedule its work) and never raise.
Watcher = Callable[[DocumentChange], None]


class MetaCache:
    """Upstream metadata by (url, accept). Construct without I/O; `close()` stops background
    revalidations. Memory holds at most `max_entries` documents, paid for in bytes from
    `budget` (raw bytes, plus the parsed form: its own `memory_bytes()` when it is
    `Weighed`, else estimated as raw x PARSED_BYTES_PER_RAW_BYTE;
    when the parsed form does not fit, only the raw bytes stay, `current` serves the version
    without parsing, and `parsed` parses again), and at most `max_absent` remembered 404s
    (LRU each); disk is unbounded (one small pair of files per document ever fetched)."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        directory: Path,
        ttl: timedelta,
        stale_max: timedelta,
        clock: Clock,
        metrics: Metrics | None = None,
        max_entries: int = 2048,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
        refresh_interval: timedelta = DEFAULT_REFRESH_INTERVAL,
        negative_ttl: timedelta = DEFAULT_NEGATIVE_TTL,
        max_absent: int = 4096,
        budget: ByteBudget | None = None,
        watcher: Watcher | None = None,
    ) -> None:
        self._upstream = upstream
        self._watcher = watcher
        # How often each document's copy was replaced, for `stamp` (only keys replaced at
        # least once; bounded by MAX_REPLACED_NOTED, then a new epoch).
        self._replaced: dict[_Key, int] = {}
        self._replaced_epoch = 0
        self._directory = directory
        self._ttl = ttl
        self._stale_max = max(stale_max, ttl)
        self._clock = clock
        self._metrics = metrics
        self._max_entries = max(1, max_entries)
        self._max_document_bytes = max_document_bytes
        self._refresh_interval = refresh_interval
        self._negative_ttl = negative_ttl
        self._max_absent = max(1, max_absent)
        budget = budget or ByteBudget(DEFAULT_MEMORY_BUDGET)
        self._entries: BudgetedLRU[_Key, _Entry] = BudgetedLRU(
            budget, "documents", _entry_bytes, max_entries=self._max_entries
        )
        # Keyed by names clients choose: paid for in bytes like everything else.
        self._absent: BudgetedLRU[_Key, tuple[_Key, _Absent]] = BudgetedLRU(
            budget, "remembered 404s", _absent_bytes, max_entries=self._max_absent
        )
        # Concurrent requests share one upstream request, one read of the copy on disk and
        # one parse per document.
        self._refreshes: SingleFlight[_Key, _Entry] = SingleFlight(
            "metadata refresh", on_join=self._count_refresh_join
        )
        self._loads: SingleFlight[_Key, _Entry | None] = SingleFlight("metadata load")
        self._parses: SingleFlight[Hashable, Any] = SingleFlight("metadata parse")
        self._large_parses = asyncio.Semaphore(LARGE_PARSES_AT_ONCE)

    async def get(
        self,
        url: str,
        parse: Callable[[bytes], T],
        *,
        ecosystem: str,
        accept: str | None = None,
        refresh: Refresh = False,
        immutable: bool = False,
        required: bool = False,
        max_bytes: int | None = None,
    ) -> CachedDocument[T]:
        """The document at `url`, parsed by `parse`, fetched on `ecosystem`'s behalf (its
        hosts, its credentials). `refresh=True` asks upstream now unless it was asked for this
        document less than `refresh_interval` ago; `refresh="urgent"` (an admin creating a
        rule, never a client) asks now regardless, past a remembered 404 too. `immutable`:
        a document that never changes once published (see the module docstring): a copy held
        is served whatever its age and `refresh=True` is ignored; `required` (with
        `immutable`): its 404 is remembered for `negative_ttl`, not IMMUTABLE_NEGATIVE_TTL.
        `max_bytes`: a smaller cap than `max_document_bytes` for this document.

        Raises UpstreamNotFound (upstream says 404/410), UpstreamUnavailable and
        BadUpstreamDocument (no usable copy younger than `stale_max`), HostNotAllowed (even
        for a cached copy: a URL off `ecosystem`'s hosts is never served)."""
        self._upstream.check(url, ecosystem=ecosystem)
        key: _Key = (url, accept or "")
        if refresh != "urgent":
            self.raise_if_absent(url, ecosystem=ecosystem, accept=accept)
        entry = await self._entry(key, parse)
        if entry is not None and immutable and refresh != "urgent":
            try:
                check = _checked(entry, parse)
                if check is not parse:  # `current` of a copy not checked by its parser yet
                    entry = await self._parsed(entry, check)
                    self._remember(key, entry)
                served = await self._serve(key, entry, parse, stale=False)
            except errors.BadUpstreamDocument as exc:
                # Kept for good, so never kept broken: a copy `parse` refuses (stored by a
                # laxer parser, or by another caller's) is dropped and fetched again.
                log.warning("dropping the held copy of %s: %s", redact(url), exc)
                await self._drop(key)
                entry = None
            else:
                self._count(ecosystem, hit=True, size=len(entry.raw))
                return served
        if entry is not None and refresh is True and self._asked_recently(entry):
            refresh = False
        if entry is not None and not refresh:
            age = self._clock.now() - entry.fetched_at
            if age < self._ttl:
                self._count(ecosystem, hit=True, size=len(entry.raw))
                if age >= self._ttl * REFRESH_AHEAD_FRACTION:
                    self._revalidate_in_background(key, entry, parse, ecosystem)
                return await self._serve(key, entry, parse, stale=False)
            if age < self._stale_max:
                self._count(ecosystem, hit=False)
                self._revalidate_in_background(key, entry, parse, ecosystem)
                if self._metrics is not None:
                    self._metrics.stale_serves.labels("revalidating").inc()
                    if entry.failed_at is not None and entry.failed_at >= entry.fetched_at:
                        # Its last revalidation failed: stale because upstream fails.
                        self._metrics.traffic.stale(ecosystem)
                return await self._serve(key, entry, parse, stale=True)
        self._count(ecosystem, hit=False)
        try:
            entry = await self._refresh(
                key,
                parse,
                ecosystem,
                absent_for=self._absence_ttl(immutable=immutable, required=required),
                max_bytes=max_bytes,
            )
        except (errors.UpstreamUnavailable, errors.BadUpstreamDocument) as exc:
            fallback = self._entries.get(key) or entry
            if fallback is None or self._clock.now() - fallback.fetched_at >= self._stale_max:
                raise
            # Not a line per request: the upstream client logged the failure (once per host
            # and interval) and the stale serve is counted (mirror_stale_serves_total).
            log.debug("serving %s stale: %s", redact(url), exc)
            if self._metrics is not None:
                self._metrics.stale_serves.labels("upstream-error").inc()
                self._metrics.traffic.stale(ecosystem)
            return await self._serve(key, fallback, parse, stale=True)
        return await self._serve(key, entry, parse, stale=False)

    async def current(
        self,
        url: str,
        parse: Callable[[bytes], Any],
        *,
        ecosystem: str,
        accept: str | None = None,
        refresh: Refresh = False,
        immutable: bool = False,
        required: bool = False,
        max_bytes: int | None = None,
    ) -> CachedDocument[None]:
        """The document's bytes and version as `get` would serve them, without parsing the
        copy held: a caller whose rendered view of this version is cached needs nothing more
        (the parsed form may have been dropped to stay within the memory budget). New bytes
        from upstream are still parsed once by `parse`, so a broken document is refused (and
        the copy held served stale) exactly as with `get`."""
        return await self.get(
            url,
            _RawOnly(parse),
            ecosystem=ecosystem,
            accept=accept,
            refresh=refresh,
            immutable=immutable,
            required=required,
            max_bytes=max_bytes,
        )

    def stamp(self, doc: CachedDocument[Any]) -> DocumentStamp:
        """A mark of `doc`'s copy that `unchanged` compares with the copy held later: for an
        answer kept beyond this cache, which must not outlive the copy it was built from."""
        key: _Key = (doc.url, doc.accept)
        return DocumentStamp(key, self._replaced_epoch, self._replaced.get(key, 0))

    def view_source(
        self, doc: CachedDocument[Any], *, ecosystem: str, policy_version: int
    ) -> ReplaySource:
        """What a view rendered from `doc` under `policy_version` depends on, for the hot path
        (`mirror.replay`): this copy of `doc`, fresh as long as it is."""
        return ReplaySource(
            ecosystem=ecosystem,
            policy_version=policy_version,
            fresh_until=self.fresh_until(doc),
            document=self.stamp(doc),
            upstream_size=len(doc.raw),
        )

    def unchanged(self, stamp: DocumentStamp) -> bool:
        """Whether the document `stamp` marks has not been replaced (new bytes, gone upstream,
        forgotten) since: two dictionary look-ups."""
        return (
            stamp.epoch == self._replaced_epoch
            and self._replaced.get(stamp.key, 0) == stamp.replaced
        )

    def _note_replaced(self, key: _Key) -> None:
        """Count a replacement of `key`'s copy (see `stamp`); past MAX_REPLACED_NOTED keys the
        counts start over under a new epoch, which no earlier stamp matches."""
        if key not in self._replaced and len(self._replaced) >= MAX_REPLACED_NOTED:
            self._replaced.clear()
            self._replaced_epoch += 1
        self._replaced[key] = self._replaced.get(key, 0) + 1

    def fresh_until(self, doc: CachedDocument[Any]) -> datetime:
        """Until when `doc` is served as it is without asking upstream (a refresh-ahead starts
        after it): a copy served stale is due now. For answers kept beyond this cache (the
        hot path), which must come back here once it is due."""
        if doc.stale:
            return doc.fetched_at
        return self.fresh_from(doc.fetched_at)

    def fresh_from(self, moment: datetime) -> datetime:
        """Until when an answer built at `moment` from documents confirmed then (immutable
        ones included) may be kept beyond this cache: as long as a fresh copy is served."""
        return moment + self._ttl * REFRESH_AHEAD_FRACTION

    async def forget(self, url: str, *, accept: str | None = None) -> None:
        """Drop the copy of `url` held in memory and on disk: the next request asks upstream.
        For a caller that found the copy wrong (a checksum the file it describes did not
        match): an immutable copy would otherwise be served for good."""
        await self._drop((url, accept or ""))

    async def _drop(self, key: _Key) -> None:
        self._note_replaced(key)
        self._entries.pop(key)
        await asyncio.to_thread(self._discard_files, key)

    async def parsed(self, doc: CachedDocument[Any], parse: Callable[[bytes], T]) -> T:
        """`doc`'s very bytes parsed by `parse`: the parsed form kept in memory when it is of
        these bytes, else parsed now (in a thread when large; concurrent callers share one
        parse), and kept with the copy held when that is of these bytes and the budget
        allows."""
        key: _Key = (doc.url, doc.accept)
        current = self._entries.get(key)
        if current is not None and current.version == doc.version:
            entry = await self._parsed(current, parse)
            latest = self._entries.peek(key)
            if entry is not current and latest is not None and latest.version == doc.version:
                self._remember(key, dataclasses.replace(latest, parse=parse, parsed=entry.parsed))
            return entry.parsed  # type: ignore[no-any-return]
        bare = _Entry(
            url=doc.url,
            accept=doc.accept,
            raw=doc.raw,
            version=doc.version,
            fetched_at=doc.fetched_at,
            etag=doc.etag,
            last_modified=doc.last_modified,
        )
        return (await self._parsed(bare, parse)).parsed  # type: ignore[no-any-return]

    def memory_bytes(self) -> int:
        """Bytes the budget charges for the documents held in memory."""
        return self._entries.bytes_held()

    def _asked_recently(self, entry: _Entry) -> bool:
        """Whether upstream was asked for this document (and answered, or failed) less than
        `refresh_interval` ago: then a forced refresh would only repeat that question."""
        asked = (
            entry.fetched_at if entry.failed_at is None else max(entry.fetched_at, entry.failed_at)
        )
        return self._clock.now() - asked < self._refresh_interval

    # remembered 404s --------------------------------------------------------------------

    def raise_if_absent(self, url: str, *, ecosystem: str, accept: str | None = None) -> None:
        """Raise UpstreamNotFound again, as upstream worded it, when upstream answered 404/410
        for `url` less than `negative_ttl` ago (IMMUTABLE_NEGATIVE_TTL for an immutable
        document). For callers that ask upstream directly (a
        HEAD), together with `note_absent`."""
        key: _Key = (url, accept or "")
        held = self._absent.get(key)
        if held is None:
            return
        _, absent = held
        if self._clock.now() - absent.noted_at >= absent.lasts:
            self._absent.pop(key)
            return
        self._count(ecosystem, hit=True)
        raise errors.UpstreamNotFound(absent.message, **absent.data)

    def note_absent(
        self,
        url: str,
        error: errors.UpstreamNotFound,
        *,
        accept: str | None = None,
        immutable: bool = False,
        required: bool = False,
    ) -> None:
        """Remember upstream's 404/410 for `url` for `negative_ttl` (an `immutable`
        document's that is not `required`: IMMUTABLE_NEGATIVE_TTL, or `negative_ttl` when that
        is longer)."""
        key: _Key = (url, accept or "")
        self._note_absent(key, error, self._absence_ttl(immutable=immutable, required=required))

    def _note_absent(self, key: _Key, error: errors.UpstreamNotFound, lasts: timedelta) -> None:
        absent = _Absent(
            message=error.message,
            data=dict(error.data),
            noted_at=self._clock.now(),
            lasts=lasts,
        )
        self._absent.put(key, (key, absent))

    def _absence_ttl(self, *, immutable: bool, required: bool) -> timedelta:
        if immutable and not required:
            return max(self._negative_ttl, IMMUTABLE_NEGATIVE_TTL)
        return self._negative_ttl

    def _count(self, ecosystem: str, *, hit: bool, size: int = 0) -> None:
        """Fresh copies are hits (also when a refresh-ahead starts in the background);
        anything else that asks upstream (stale serves included) is a miss. `size`: the
        hit copy's bytes, what upstream would have sent without the cache."""
        if self._metrics is None:
            return
        if hit:
            self._metrics.hit(ecosystem, "metadata")
            self._metrics.traffic.hit(ecosystem, size)
        else:
            self._metrics.child(self._metrics.cache_misses, ecosystem, "metadata").inc()
            self._metrics.traffic.miss(ecosystem)

    async def drain(self) -> None:
        """Wait for the revalidations running now (their errors are logged, not raised)."""
        tasks = self._refreshes.tasks()
        if tasks:
            # wait, not gather: a cancelled drain must not cancel the revalidations.
            await asyncio.wait(tasks)

    def __len__(self) -> int:
        """Documents held in memory (at most `max_entries`)."""
        return len(self._entries)

    async def close(self) -> None:
        # Together: every task is cancelled before any of them gets to run again.
        await asyncio.gather(self._refreshes.close(), self._loads.close(), self._parses.close())

    # memory and disk --------------------------------------------------------------------

    async def _entry(self, key: _Key, parse: Callable[[bytes], Any]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        return await self._loads.run(key, lambda: self._load(key, parse))

    async def _load(self, key: _Key, parse: Callable[[bytes], Any]) -> _Entry | None:
        """The copy on disk (parsed, so concurrent first requests share one parse), or None."""
        entry = await asyncio.to_thread(self._read_files, key)
        if entry is None:
            return None
        try:
            entry = await self._parsed(entry, _checked(entry, parse))
        except errors.BadUpstreamDocument as exc:
            log.warning("ignoring the stored copy of %s: %s", redact(key[0]), exc)
            return None
        current = self._entries.get(key)
        if current is not None:
            return current
        self._remember(key, entry)
        return entry

    def _remember(self, key: _Key, entry: _Entry) -> None:
        """Keep `entry` in memory; when its parsed form does not fit the budget, keep the
        raw bytes alone (the version is what most requests need: their view is rendered)."""
        self._absent.pop(key)  # upstream has it (again)
        if not self._entries.put(key, entry) and entry.parsed is not _UNPARSED:
            self._entries.put(key, dataclasses.replace(entry, parsed=_UNPARSED))

    def _paths(self, key: _Key) -> tuple[Path, Path]:
        name = hashlib.sha256(f"{key[0]}\n{key[1]}".encode()).hexdigest()
        return self._directory / f"{name}.meta", self._directory / f"{name}.body"

    def _read_replaced(self, key: _Key, version: str) -> _Entry | None:
        """The copy on disk when it is not `version` (the bytes replacing it), else None."""
        meta_path, _ = self._paths(key)
        try:
            stored = orjson.loads(meta_path.read_bytes()).get("version")
        except (OSError, orjson.JSONDecodeError, AttributeError):
            stored = None
        if stored == version:
            return None
        return self._read_files(key)

    def _read_files(self, key: _Key) -> _Entry | None:
        meta_path, body_path = self._paths(key)
        try:
            meta = orjson.loads(meta_path.read_bytes())
            raw = body_path.read_bytes()
        except FileNotFoundError:
            if meta_path.exists() or body_path.exists():
                self._discard_files(key)
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("removing unreadable cached copy of %s: %s", redact(key[0]), exc)
            self._discard_files(key)
            return None
        try:
            entry = _Entry(
                url=str(meta["url"]),
                accept=str(meta["accept"]),
                raw=raw,
                version=str(meta["version"]),
                fetched_at=datetime.fromisoformat(meta["fetched_at"]),
                etag=meta.get("etag"),
                last_modified=meta.get("last_modified"),
            )
            intact = (
                (entry.url, entry.accept) == key
                and entry.fetched_at.tzinfo is not None
                and hashlib.sha256(raw).hexdigest() == entry.version
            )
        except (KeyError, TypeError, ValueError):
            intact = False
        if not intact:
            # A crash between the two renames, a sibling worker's interleaved write, or a
            # damaged disk: a cache may forget, it must not serve wrong bytes.
            log.warning("removing inconsistent cached copy of %s", redact(key[0]))
            self._discard_files(key)
            return None
        return entry

    def _write_files(self, entry: _Entry, *, body: bool) -> None:
        """Body first, then meta, each atomically: the meta names the body's sha256, so a
        reader never trusts a half-written pair."""
        self._directory.mkdir(parents=True, exist_ok=True)
        meta_path, body_path = self._paths((entry.url, entry.accept))
        if body:
            atomic_write(body_path, entry.raw)
        meta = {
            "url": entry.url,
            "accept": entry.accept,
            "version": entry.version,
            "fetched_at": entry.fetched_at.isoformat(),
            "etag": entry.etag,
            "last_modified": entry.last_modified,
        }
        atomic_write(meta_path, orjson.dumps(meta))

    async def prune(self) -> int:
        """Remove on-disk copies older than `stale_max`: too old to serve even when upstream
        is down, so keeping them only fills the disk. Returns how many documents went."""
        cutoff = (self._clock.now() - self._stale_max).timestamp()
        return await asyncio.to_thread(self._prune_files, cutoff)

    def _prune_files(self, cutoff: float) -> int:
        removed = 0
        try:
            metas = list(self._directory.glob("*.meta"))
        except FileNotFoundError:
            return 0
        for meta_path in metas:
            try:
                if meta_path.stat().st_mtime >= cutoff:
                    continue
                meta_path.unlink(missing_ok=True)
                meta_path.with_suffix(".body").unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not prune %s: %s", meta_path, exc)
                continue
            removed += 1
        # Bodies whose meta never got written (a crash between the two renames).
        for body_path in self._directory.glob("*.body"):
            with contextlib.suppress(OSError):
                if (
                    not body_path.with_suffix(".meta").exists()
                    and body_path.stat().st_mtime < cutoff
                ):
                    body_path.unlink()
        return removed

    def _discard_files(self, key: _Key) -> None:
        for path in self._paths(key):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not remove %s: %s", path, exc)

    async def _store(self, entry: _Entry, *, body: bool) -> None:
        try:
            await asyncio.to_thread(self._write_files, entry, body=body)
        except OSError as exc:
            # Memory still serves it; only restarts lose the copy.
            log.warning("could not store %s on disk: %s", redact(entry.url), exc)

    # upstream ---------------------------------------------------------------------------

    def _revalidate_in_background(
        self, key: _Key, entry: _Entry, parse: Callable[[bytes], Any], ecosystem: str
    ) -> None:
        if key in self._refreshes:
            return
        if entry.failed_at is not None:
            backoff = min(self._ttl, FAILURE_BACKOFF)
            if self._clock.now() - entry.failed_at < backoff:
                return
        task = self._refreshes.start(key, lambda: self._revalidate(key, parse, ecosystem))
        task.add_done_callback(lambda done: self._log_background(key, done))

    async def _refresh(
        self,
        key: _Key,
        parse: Callable[[bytes], Any],
        ecosystem: str,
        *,
        absent_for: timedelta,
        max_bytes: int | None,
    ) -> _Entry:
        return await self._refreshes.run(
            key,
            lambda: self._revalidate(
                key, parse, ecosystem, absent_for=absent_for, max_bytes=max_bytes
            ),
        )

    def _count_refresh_join(self) -> None:
        if self._metrics is not None:
            self._metrics.singleflight_joins.labels("metadata").inc()

    async def _revalidate(
        self,
        key: _Key,
        parse: Callable[[bytes], Any],
        ecosystem: str,
        *,
        absent_for: timedelta | None = None,
        max_bytes: int | None = None,
    ) -> _Entry:
        """One (conditional) GET; on success the new entry is in memory and on disk."""
        url, accept = key
        old = self._entries.peek(key)
        lists = _lister(parse) if self._watcher is not None else None
        try:
            document = await self._upstream.fetch(
                url,
                ecosystem=ecosystem,
                etag=old.etag if old else None,
                last_modified=old.last_modified if old else None,
                accept=accept or None,
                max_bytes=min(max_bytes or self._max_document_bytes, self._max_document_bytes),
            )
        except errors.UpstreamNotFound as exc:
            held = old
            if lists is not None and held is None:
                held = await asyncio.to_thread(self._read_files, key)
            self._note_replaced(key)
            self._entries.pop(key)
            self._note_absent(key, exc, absent_for or self._negative_ttl)
            await asyncio.to_thread(self._discard_files, key)
            if lists is not None and held is not None:
                self._watch(ecosystem, held, None, lists)
            raise
        except errors.UpstreamError:
            self._mark_failed(key)
            raise
        now = self._clock.now()
        if document.status == 304:
            if old is None:
                log.warning("upstream answered %s with 304 unasked", redact(url))
                raise errors.BadUpstreamDocument(
                    f"the {ecosystem} upstream answered 304 to an unconditional request"
                )
            entry = dataclasses.replace(
                old,
                fetched_at=now,
                etag=document.etag or old.etag,
                last_modified=document.last_modified or old.last_modified,
                failed_at=None,
            )
            self._remember(key, entry)
            await self._store(entry, body=False)
            return entry
        entry = _entry_from(key, document, now)
        if old is not None and old.version == entry.version:
            # Same bytes (under new validators, or none: an upstream without ETag or
            # Last-Modified sends the whole body each time): keep the parsed value, no
            # re-parse; the version is the same, so callers' views keyed by it stay too.
            entry = dataclasses.replace(entry, parse=old.parse, parsed=old.parsed)
        if isinstance(parse, _RawOnly):
            # New bytes are parsed once even for a caller that needs only the version.
            same_bytes = old is not None and old.version == entry.version
            validate = None if same_bytes else parse.validate
            parse = _RawOnly(None) if validate is None else validate
        try:
            entry = await self._parsed(entry, parse)
        except errors.BadUpstreamDocument:
            self._mark_failed(key)
            raise
        held = old
        if lists is not None and held is None:
            # Not in memory (evicted, or never loaded by this worker): the copy on disk is
            # what upstream replaces; read before it is overwritten, unless its meta names
            # these very bytes (nothing changed: no body read, no hash).
            held = await asyncio.to_thread(self._read_replaced, key, entry.version)
        if old is None or old.version != entry.version:
            self._note_replaced(key)
        self._remember(key, entry)
        await self._store(entry, body=old is None or old.version != entry.version)
        if lists is not None and held is not None and held.version != entry.version:
            self._watch(ecosystem, held, entry, lists)
        return entry

    def _watch(
        self, ecosystem: str, held: _Entry, new: _Entry | None, lists: Callable[[bytes], Any]
    ) -> None:
        """Hand a replaced copy to the watcher: never raises, never waits."""
        if self._watcher is None:
            return
        if new is not None and (new.parse != lists or new.parsed is _UNPARSED):
            return  # not parsed by the lister (cannot happen after `_parsed`); nothing to list
        parsed = held.parse == lists and held.parsed is not _UNPARSED
        change = DocumentChange(
            ecosystem=ecosystem,
            url=held.url,
            before=held.parsed if parsed else held.raw,
            before_parsed=parsed,
            after=None if new is None else new.parsed,
            parse=lists,
        )
        try:
            self._watcher(change)
        except Exception:
            log.exception("the takedown watcher failed on %s", redact(held.url))

    def _mark_failed(self, key: _Key) -> None:
        current = self._entries.get(key)
        if current is not None:
            self._entries.put(key, dataclasses.replace(current, failed_at=self._clock.now()))

    def _log_background(self, key: _Key, task: asyncio.Task[_Entry]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # An upstream failure is in the upstream client's outage log already (a line per
            # host and interval, not per document); anything else is news.
            level = logging.DEBUG if isinstance(exc, errors.UpstreamError) else logging.WARNING
            log.log(level, "background revalidation of %s failed: %s", redact(key[0]), exc)

    # parsing ----------------------------------------------------------------------------

    async def _serve(
        self, key: _Key, entry: _Entry, parse: Callable[[bytes], T], *, stale: bool
    ) -> CachedDocument[T]:
        if isinstance(parse, _RawOnly):
            parsed: Any = None
        elif entry.parse != parse or entry.parsed is _UNPARSED:
            entry = await self._parsed(entry, parse)
            current = self._entries.peek(key)
            if current is not None and current.version == entry.version:
                self._remember(
                    key, dataclasses.replace(current, parse=entry.parse, parsed=entry.parsed)
                )
            parsed = entry.parsed
        else:
            parsed = entry.parsed
        return CachedDocument(
            url=entry.url,
            accept=entry.accept,
            parsed=parsed,
            version=entry.version,
            fetched_at=entry.fetched_at,
            stale=stale,
            etag=entry.etag,
            last_modified=entry.last_modified,
            raw=entry.raw,
        )

    async def _parsed(self, entry: _Entry, parse: Callable[[bytes], Any]) -> _Entry:
        if isinstance(parse, _RawOnly) or (entry.parse == parse and entry.parsed is not _UNPARSED):
            return entry
        # Concurrent requests for one document whose parsed form was not kept share one
        # parse: fifty parses of one big packument at once would be fifty parsed copies.
        key = (entry.url, entry.accept, entry.version, parse)
        try:
            hash(key)
        except TypeError:
            # A parser equal by value but unhashable cannot key a flight: on purpose, it is
            # parsed on its own (no sharing) rather than refused.
            return dataclasses.replace(entry, parse=parse, parsed=await self._parse(entry, parse))
        parsed = await self._parses.run(key, lambda: self._parse(entry, parse))
        return dataclasses.replace(entry, parse=parse, parsed=parsed)

    async def _parse(self, entry: _Entry, parse: Callable[[bytes], Any]) -> Any:
        try:
            if len(entry.raw) > PARSE_IN_THREAD_BYTES:
                async with self._large_parses:
                    parsed = await asyncio.to_thread(parse, entry.raw)
            else:
                parsed = parse(entry.raw)
        except errors.MirrorError:
            raise
        except Exception as exc:
            log.warning("could not parse %s: %s: %s", redact(entry.url), type(exc).__name__, exc)
            raise errors.BadUpstreamDocument(
                f"could not parse an upstream document: {type(exc).__name__}"
            ) from exc
        return parsed


class RenderedCache:
    """Filtered, rendered views by caller-chosen key, least recently used first out, paid for
    in bytes (body + gzip and brotli bodies) from the worker's `budget`. A view expires at its
    `valid_until` (the next quarantine boundary); policy changes call `clear()`.

    Views embed the base URL clients reached the mirror at. Without `public_url` that base
    comes from the request (Host), which any client chooses: `caches_base` admits at most
    `max_bases` distinct bases per worker, and views for any other base are rendered for that
    request alone (`get_or_render(..., cache=False)`), one at a time, and never kept."""

    def __init__(
        self,
        *,
        max_entries: int = 4096,
        budget: ByteBudget | None = None,
        max_bases: int = DEFAULT_MAX_BASES,
    ) -> None:
        self._views: BudgetedLRU[Hashable, Rendered] = BudgetedLRU(
            budget or ByteBudget(DEFAULT_MEMORY_BUDGET),
            "rendered",
            _rendered_bytes,
            max_entries=max(1, max_entries),
        )
        self._renders: SingleFlight[Hashable, Rendered] = SingleFlight("render")
        self._max_bases = max(1, max_bases)
        self._bases: set[str] = set()
        self._refused_base_logged = False
        # Uncached renders run one at a time: a flood of made-up Host values costs one
        # render's CPU and memory at a time, not one per request in flight.
        self._uncached = asyncio.Semaphore(1)
        # Views rendered so far (kept or not): what an unchanged upstream document must not
        # raise. Read by tests and when investigating CPU use.
        self.renders = 0

    def caches_base(self, base: str) -> bool:
        """Whether views rendered for `base` may be kept: the first `max_bases` distinct
        bases this worker sees are; any other is rendered per request."""
        if base in self._bases:
            return True
        if len(self._bases) < self._max_bases:
            self._bases.add(base)
            return True
        if not self._refused_base_logged:
            self._refused_base_logged = True
            log.warning(
                "clients reach this mirror under more than %d base URLs (Host or forwarded "
                "headers); views for the others are rendered per request and not cached: "
                "set public_url",
                self._max_bases,
            )
        return False

    async def get_or_render(
        self,
        key: Hashable,
        now: datetime,
        render: Callable[[], Awaitable[Rendered]],
        *,
        cache: bool = True,
    ) -> Rendered:
        """The view under `key`, rendered by `render()` on a miss: concurrent misses share
        one render (a big document is filtered once, not once per waiting client), and a
        client that leaves does not cancel it for the others. `cache=False` renders without
        keeping the view (still shared with concurrent requests for the same key)."""
        if cache:
            cached = self.get(key, now)
            if cached is not None:
                return cached
        return await self._renders.run(key, lambda: self._render(key, render, cache))

    async def _render(
        self, key: Hashable, render: Callable[[], Awaitable[Rendered]], cache: bool
    ) -> Rendered:
        self.renders += 1
        if not cache:
            # On purpose: uncached renders also wait for each other across keys (the
            # flight shares one render per key only).
            async with self._uncached:
                return await render()
        rendered = await render()
        self.put(key, rendered)
        return rendered

    def get(self, key: Hashable, now: datetime) -> Rendered | None:
        rendered = self._views.get(key)
        if rendered is None:
            return None
        if rendered.valid_until is not None and now >= rendered.valid_until:
            self._views.pop(key)
            return None
        return rendered

    def put(self, key: Hashable, rendered: Rendered) -> None:
        self._views.put(key, rendered)

    def clear(self) -> None:
        self._views.clear()

    def memory_bytes(self) -> int:
        """Bytes the budget charges for the views held."""
        return self._views.bytes_held()

    def __len__(self) -> int:
        return len(self._views)


def _rendered_bytes(view: Rendered) -> int:
    headers = sum(len(name) + len(value) for name, value in view.headers.items())
    compressed = len(view.gzipped or b"") + len(view.brotli or b"")
    return len(view.body) + compressed + len(view.etag) + headers


@dataclass(frozen=True, slots=True)
class _RawOnly:
    """The `parse` of `MetaCache.current`: copies held are not parsed; `validate` parses
    new bytes from upstream (None: nothing to parse)."""

    validate: Callable[[bytes], Any] | None

    def __call__(self, raw: bytes) -> None:
        raise AssertionError("_RawOnly is never called")  # pragma: no cover


def _lister(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any] | None:
    """The parser behind `parse` (`current`'s `validate`) when it can list what a document
    offers (`takedowns.Lists`), else None."""
    if isinstance(parse, _RawOnly):
        if parse.validate is None:
            return None
        parse = parse.validate
    return parse if callable(getattr(parse, "listing", None)) else None


def _checked(entry: _Entry, parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """The parser that checks a copy held before it is served: `parse`, or for `current`
    (`_RawOnly`) its `validate` unless the copy was parsed by it already (nothing to do)."""
    if not isinstance(parse, _RawOnly) or parse.validate is None:
        return parse
    if entry.parse == parse.validate and entry.parsed is not _UNPARSED:
        return parse
    return parse.validate


def _entry_bytes(entry: _Entry) -> int:
    """What an entry costs the budget: its raw bytes, and its parsed form as that form
    weighs itself, else by estimate."""
    if entry.parsed is _UNPARSED:
        parsed = 0
    elif isinstance(entry.parsed, Weighed):
        parsed = entry.parsed.memory_bytes()
    else:
        parsed = len(entry.raw) * PARSED_BYTES_PER_RAW_BYTE
    return len(entry.raw) + parsed


def _absent_bytes(held: tuple[_Key, _Absent]) -> int:
    """A remembered 404 costs its URL (a name a client chose) and upstream's message."""
    (url, accept), absent = held
    return len(url) + len(accept) + len(absent.message) + 64 * len(absent.data)


def _entry_from(key: _Key, document: UpstreamDocument, now: datetime) -> _Entry:
    return _Entry(
        url=key[0],
        accept=key[1],
        raw=document.body,
        version=hashlib.sha256(document.body).hexdigest(),
        fetched_at=now,
        etag=document.etag,
        last_modified=document.last_modified,
    )
