"""The content-addressed artifact store on disk, shared by every worker process, and the only
code that reads, stamps or removes its files.

Layout under the store's directory:

- `sha256/ab/cd/<hex>`: the blobs, named by the sha256 of their bytes;
- `index/ab/<sha256 of the cache key>.json`: which blob a cache key (`ArtifactRef.cache_key`)
  stands for and every digest verified when it was written;
- `tmp/<random>.part`: writes in progress, each held under an exclusive `flock` by its writer;
- `claims/<sha256 of the cache key>.lock`: which worker process fetches a key (`claims`),
  unless the store is given a claims directory of the server's own (`claims_dir`): replicas on
  several hosts share the rest, never their locks.

Choices, stated plainly:
- Disk is the source of truth: a process keeps a bounded in-memory copy of index entries it has
  read (they never change once written) and checks the blob still exists when it opens it
  (`BlobVanished` when not: another process evicted it). A blob read whole is hashed again, and
  removed if it no longer matches its name: damaged bytes are never handed out.
- A write streams to a temp file in the same filesystem while hashing, is verified against the
  declared digests (every declared one must match), then fsync'd and renamed into place; the index
  entry is written the same way. A mismatch, a short body, a full disk or a cancellation removes
  the temp file: nothing half-written is ever visible.
- A temp file nobody holds a lock on and nobody wrote to for `STALE_TEMP_AGE` is left over
  from a crash: `open()` removes it. (The age: a replica on another host sharing the volume
  may write it under a lock this host cannot see.) A writer re-creates its temp file if a
  sweeping process removed it between creation and locking.
- With `max_bytes`, the blob's mtime is its last use (set at commit, refreshed at most once a
  minute per blob on reads, from the store's clock); after a commit the least recently used
  blobs are removed until the store is under the cap. The blob just committed is never evicted,
  and writes in progress are temp files, not blobs. Index entries of evicted blobs are dropped
  when next looked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, TypeVar

import orjson

from mirror import errors
from mirror.blobs.claims import FetchClaim, PeerFetch, open_announced, open_peer, try_claim
from mirror.budget import BudgetedLRU, ByteBudget
from mirror.clock import Clock
from mirror.metrics import Metrics
from mirror.model import Digest

log = logging.getLogger(__name__)
T = TypeVar("T")

# Strongest first: the order in which declared digests are ranked.
ALGORITHMS: tuple[str, ...] = ("sha512", "sha256", "sha1")
TOUCH_INTERVAL = timedelta(minutes=1)
# Other processes commit too: re-measure the whole store at least this often when capped.
RESCAN_INTERVAL = timedelta(minutes=1)
MAX_CACHED_ENTRIES = 65536
# A temp file unwritten this long is no live download's (an upstream read times out sooner).
STALE_TEMP_AGE = timedelta(hours=1)
# What an index entry held in memory costs beyond its key and digests (the entry, its blob
# path, the digest mapping; measured with tracemalloc: ~1.2 kB with three digests).
_INDEX_ENTRY_BYTES = 768
# Without a worker's budget (tools, tests) the entry count alone bounds the index entries
# held: 65,536 of them take about 80 MiB.
_OWN_BUDGET = 256 * 1024**2
_TEMP_SUFFIX = ".part"
_HASH_CHUNK = 1024 * 1024  # bytes read at a time to hash a whole blob again
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class BlobVanished(Exception):
    """The blob behind an index entry is gone (evicted by another process since, or removed
    because its bytes no longer match their sha256). The caller forgets the entry."""


class DigestMismatch(errors.IntegrityError):
    """The bytes do not hash to a declared digest (nothing was stored)."""

    def __init__(self, message: str, *, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobEntry:
    """A committed artifact: its cache key, blob path and the digests verified at write time."""

    key: str
    sha256: str
    size: int
    path: Path
    digests: Mapping[str, str] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        """The strong ETag value (unquoted): the sha256 of the bytes."""
        return self.sha256


@dataclass(frozen=True, slots=True)
class OpenBlob:
    """A committed blob opened for reading (`BlobStore.open_blob`): served from this file
    object, so a blob evicted meanwhile is still read whole. The caller closes it."""

    file: BinaryIO
    size: int
    # POSIX time of its last recorded use (its mtime) when it was opened.
    modified: float


def strongest(digests: Iterable[Digest]) -> Digest | None:
    """The strongest supported digest in `digests`, or None if there is none."""
    ranked = [digest for digest in digests if digest.algorithm in ALGORITHMS]
    if not ranked:
        return None
    return min(ranked, key=lambda digest: ALGORITHMS.index(digest.algorithm))


def check_digests(actual: Mapping[str, str], expected: Iterable[Digest], *, what: str) -> None:
    """Raise DigestMismatch unless every expected digest of a supported algorithm matches
    `actual` (algorithm → hex), strongest first. `what` names the file in the message."""
    ranked = sorted(
        (digest for digest in expected if digest.algorithm in ALGORITHMS),
        key=lambda digest: ALGORITHMS.index(digest.algorithm),
    )
    for digest in ranked:
        wanted = digest.hexdigest.strip().lower()
        got = actual.get(digest.algorithm)
        if got is None:
            raise ValueError(f"{digest.algorithm} of {what} was not computed")
        if got != wanted:
            raise DigestMismatch(
                f"{what} does not match its declared {digest.algorithm} digest "
                f"(declared {wanted[:16]}…, received bytes hash to {got[:16]}…): not cached",
                algorithm=digest.algorithm,
                expected=wanted,
                actual=got,
            )


class BlobWriter:
    """One write in progress: `write` chunks, then `commit` (verify, fsync, rename, index) or
    `abort`. `fd` stays readable (`read_at`) until `close()`, also after commit, so clients can
    be served from the growing file. Made by `BlobStore.begin`."""

    def __init__(
        self, store: BlobStore, key: str, temp: Path, fd: int, algorithms: Iterable[str]
    ) -> None:
        self._store = store
        self.key = key
        self.temp = temp
        self.fd = fd
        self.written = 0
        self._hashes = {name: hashlib.new(name) for name in {"sha256", *algorithms}}
        self._finished = False
        self._closed = False

    async def write(self, chunk: bytes) -> None:
        """Append `chunk` (hashing it) off the event loop. A full disk raises StorageFull."""
        if self._finished:
            raise RuntimeError("write after commit or abort")
        try:
            await asyncio.to_thread(self._hash_and_write, chunk)
        except OSError as exc:
            await self.abort()
            raise _mapped(exc) from exc
        self.written += len(chunk)

    def _hash_and_write(self, chunk: bytes) -> None:
        for digest in self._hashes.values():
            digest.update(chunk)
        self._write_all(self.fd, chunk)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = os.write(fd, view)
            view = view[sent:]

    def hexdigests(self) -> dict[str, str]:
        """algorithm → hex of the bytes written so far."""
        return {name: digest.copy().hexdigest() for name, digest in self._hashes.items()}

    async def read_at(self, offset: int, size: int) -> bytes:
        """Bytes already written, read off the event loop."""
        return await asyncio.to_thread(os.pread, self.fd, size, offset)

    async def commit(self, expected: Iterable[Digest], *, what: str) -> BlobEntry:
        """Verify against `expected` (every one must match), then make the blob and its index
        entry visible atomically. On any failure nothing is left behind."""
        if self._finished:
            raise RuntimeError("commit after commit or abort")
        digests = self.hexdigests()
        try:
            check_digests(digests, expected, what=what)
        except errors.IntegrityError:
            await self.abort()
            raise
        entry = BlobEntry(
            key=self.key,
            sha256=digests["sha256"],
            size=self.written,
            path=self._store.blob_path(digests["sha256"]),
            digests=MappingProxyType(digests),
        )
        self._store.protect(entry.sha256)
        try:
            await asyncio.shield(asyncio.to_thread(self._store.commit_files, self, entry))
        except OSError as exc:
            await self.abort()
            raise _mapped(exc) from exc
        except BaseException:
            await self.abort()
            raise
        finally:
            self._store.unprotect(entry.sha256)
        self._finished = True
        await self._store.committed(self, entry)
        return entry

    async def abort(self) -> None:
        """Remove the temp file (idempotent; safe while being cancelled)."""
        if self._finished:
            return
        self._finished = True
        with contextlib.suppress(OSError):
            await asyncio.shield(asyncio.to_thread(_unlink_quietly, self.temp))
        self._store.forget_writer(self)

    def close(self) -> None:
        """Release the file descriptor (and its lock). Call once no reader needs `read_at`."""
        if not self._closed:
            self._closed = True
            os.close(self.fd)


class BlobStore:
    """Content-addressed artifacts under `directory` (see the module docstring). Construct
    without I/O; `open()` creates the layout and sweeps stale temp files."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 0,
        clock: Clock,
        metrics: Metrics | None = None,
        max_cached_entries: int = MAX_CACHED_ENTRIES,
        budget: ByteBudget | None = None,
        claims_dir: Path | None = None,
    ) -> None:
        self.directory = directory
        self._claims = claims_dir if claims_dir is not None else directory / "claims"
        self.max_bytes = max(0, max_bytes)
        self._clock = clock
        self._metrics = metrics
        # key → (entry, last access time written to disk): a cache of immutable index
        # entries, at most `max_cached_entries`, paid for from the worker's `budget`.
        self._entries: BudgetedLRU[str, tuple[BlobEntry, datetime]] = BudgetedLRU(
            budget or ByteBudget(_OWN_BUDGET),
            "artifact index entries",
            _index_entry_bytes,
            max_entries=max(1, max_cached_entries),
        )
        self._writers: set[BlobWriter] = set()
        self._protected: dict[str, int] = {}
        self._approx_bytes = 0
        self._scanned_at: datetime | None = None
        self._evicting: asyncio.Lock | None = None

    # layout -------------------------------------------------------------------------------

    @property
    def _blobs_dir(self) -> Path:
        return self.directory / "sha256"

    @property
    def _index_dir(self) -> Path:
        return self.directory / "index"

    @property
    def _temp_dir(self) -> Path:
        return self.directory / "tmp"

    def blob_path(self, sha256: str) -> Path:
        return self._blobs_dir / sha256[:2] / sha256[2:4] / sha256

    def _index_path(self, key: str) -> Path:
        name = hashlib.sha256(key.encode()).hexdigest()
        return self._index_dir / name[:2] / f"{name}.json"

    # fetching across processes ------------------------------------------------------------

    async def claim(self, key: str) -> FetchClaim | None:
        """Claim the upstream fetch of `key` for this process, or None while another worker
        process of this host holds it: one `flock` per key in the claims directory keeps
        concurrent misses on several workers to one upstream fetch."""
        return await asyncio.to_thread(try_claim, self._claim_path(key))

    async def peer_fetch(self, key: str) -> PeerFetch | None:
        """The growing temp file of another process's fetch of `key`, opened for reading, or
        None until that process has announced it (or when it is gone)."""
        return await asyncio.to_thread(open_peer, self._claim_path(key), self._temp_dir)

    async def peer_file(self, name: str) -> PeerFetch | None:
        """The growing temp file `name` of another host's fetch (announced in shared state),
        opened for reading; None when it is gone or is not a temp file of this store."""
        return await asyncio.to_thread(open_announced, name, self._temp_dir)

    def _claim_path(self, key: str) -> Path:
        name = hashlib.sha256(key.encode()).hexdigest()
        return self._claims / f"{name}.lock"

    # lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        self._evicting = asyncio.Lock()
        removed, total = await asyncio.to_thread(self._prepare_directory)
        if removed:
            log.info("removed %d stale temp file(s) from %s", removed, self._temp_dir)
        self._approx_bytes = total
        self._scanned_at = self._clock.now()
        self._set_gauge(total)

    def _prepare_directory(self) -> tuple[int, int]:
        for directory in (self._blobs_dir, self._index_dir, self._temp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        removed = sum(1 for path in self._temp_dir.iterdir() if _remove_if_stale(path))
        return removed, sum(size for _mtime, size, _path in self._scan_blobs())

    async def close(self) -> None:
        for writer in list(self._writers):
            await writer.abort()
            writer.close()
        self._writers.clear()

    # reading ------------------------------------------------------------------------------

    async def lookup(self, key: str) -> BlobEntry | None:
        """The committed entry for `key`, or None. From memory when this process has seen it
        (the caller handles a blob that vanished since with `forget`), else from disk."""
        cached = self._entries.get(key)
        if cached is not None:
            return cached[0]
        found = await asyncio.to_thread(self._read_index, key)
        if found is None:
            return None
        entry, used_at = found
        self._remember(entry, used_at)
        return entry

    def _read_index(self, key: str) -> tuple[BlobEntry, datetime] | None:
        index = self._index_path(key)
        try:
            raw = index.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = orjson.loads(raw)
            sha256 = str(data["sha256"])
            entry = BlobEntry(
                key=key,
                sha256=sha256,
                size=int(data["size"]),
                path=self.blob_path(sha256),
                digests=MappingProxyType({str(k): str(v) for k, v in data["digests"].items()}),
            )
            if data.get("key") != key:
                raise ValueError("index entry names another key")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable index entry %s: %s", index, exc)
            _unlink_quietly(index)
            return None
        try:
            stat = entry.path.stat()
        except FileNotFoundError:
            _unlink_quietly(index)  # the blob was evicted: the entry points nowhere
            return None
        return entry, datetime.fromtimestamp(stat.st_mtime, tz=self._clock.now().tzinfo)

    def forget(self, key: str) -> None:
        """Drop this process's copy of `key`'s entry (its blob was found missing)."""
        self._entries.pop(key)

    async def open_blob(self, entry: BlobEntry) -> OpenBlob:
        """Open `entry`'s blob for reading and note its use, in one hop off the event loop.
        Raises BlobVanished if it is gone."""
        return await asyncio.to_thread(_open_blob, entry.path, self._touch_due(entry))

    async def parse_verified(self, entry: BlobEntry, parse: Callable[[BinaryIO], T]) -> T:
        """`parse` of `entry`'s blob (opened at its start), after hashing the whole blob again,
        in one hop off the event loop that always closes the file (a caller cancelled while
        the thread runs leaks nothing): for a reader that parses the bytes rather than
        streaming them to a client that checks them. A blob damaged on disk since it was
        stored is removed and never parsed (BlobVanished, as `read_verified`)."""
        return await asyncio.to_thread(self.verified_parse(entry, parse))

    def verified_parse(self, entry: BlobEntry, parse: Callable[[BinaryIO], T]) -> Callable[[], T]:
        """The thread work of `parse_verified`, for a caller that runs it on threads of its
        own (the review page: its work must not queue on the default executor)."""
        return partial(_parse_verified, entry, self._touch_due(entry), parse)

    async def read_verified(self, entry: BlobEntry) -> bytes:
        """`entry`'s bytes, hashed again and its use noted, off the event loop. A blob damaged
        on disk since it was stored is removed and never returned: BlobVanished, as for a
        blob that is gone."""
        return await asyncio.to_thread(_read_verified, entry, self._touch_due(entry))

    async def note_use(self, entry: BlobEntry) -> None:
        """Record a use of `entry`'s blob (read from a copy elsewhere) for eviction: stamped
        on the blob at most once a minute."""
        at = self._touch_due(entry)
        if at is not None:
            await asyncio.to_thread(_touch, entry.path, at)

    def _touch_due(self, entry: BlobEntry) -> float | None:
        """If `entry`'s last recorded use is a minute old, note now as its use and return the
        POSIX time to stamp on the blob (done off the event loop); else None."""
        cached = self._entries.peek(entry.key)
        now = self._clock.now()
        if cached is not None and now - cached[1] < TOUCH_INTERVAL:
            return None
        self._remember(entry, now)
        return now.timestamp()

    def _remember(self, entry: BlobEntry, used_at: datetime) -> None:
        self._entries.put(entry.key, (entry, used_at))

    # writing ------------------------------------------------------------------------------

    async def begin(self, key: str, algorithms: Iterable[str] = ()) -> BlobWriter:
        """Start writing the artifact `key`, hashing with `algorithms` (and always sha256)."""
        unknown = set(algorithms) - set(ALGORITHMS)
        if unknown:
            raise ValueError(f"unsupported digest algorithms: {sorted(unknown)}")
        try:
            temp, fd = await asyncio.to_thread(self._create_temp)
        except OSError as exc:
            raise _mapped(exc) from exc
        writer = BlobWriter(self, key, temp, fd, algorithms)
        self._writers.add(writer)
        return writer

    def _create_temp(self) -> tuple[Path, int]:
        for _attempt in range(8):
            temp = self._temp_dir / f"{uuid.uuid4().hex}{_TEMP_SUFFIX}"
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # A sweep in another process may have removed it before the lock was taken.
                if os.stat(temp).st_ino == os.fstat(fd).st_ino:
                    return temp, fd
            except (BlockingIOError, FileNotFoundError):
                pass
            os.close(fd)
        raise OSError(errno.EAGAIN, "could not create a locked temp file", str(self._temp_dir))

    def commit_files(self, writer: BlobWriter, entry: BlobEntry) -> None:
        """(Thread.) fsync the temp file, rename it to its blob path, write the index entry.
        Also stamps the blob with the clock's time as its last use."""
        os.fsync(writer.fd)
        now = self._clock.now().timestamp()
        os.utime(writer.fd, (now, now))
        entry.path.parent.mkdir(parents=True, exist_ok=True)
        # Same name = same bytes: replacing a copy another process committed is harmless.
        os.replace(writer.temp, entry.path)
        _fsync_directory(entry.path.parent)
        index = self._index_path(entry.key)
        index.parent.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps(
            {
                "key": entry.key,
                "sha256": entry.sha256,
                "size": entry.size,
                "digests": dict(entry.digests),
            }
        )
        temp, fd = self._create_temp()
        try:
            BlobWriter._write_all(fd, body)
            os.fsync(fd)
            os.replace(temp, index)
        except BaseException:
            _unlink_quietly(temp)
            raise
        finally:
            os.close(fd)

    async def committed(self, writer: BlobWriter, entry: BlobEntry) -> None:
        self._writers.discard(writer)
        self._remember(entry, self._clock.now())
        self._approx_bytes += entry.size
        self._set_gauge(self._approx_bytes)
        if self.max_bytes:
            await self._enforce_cap(protect=entry.sha256)

    def forget_writer(self, writer: BlobWriter) -> None:
        self._writers.discard(writer)

    def protect(self, sha256: str) -> None:
        self._protected[sha256] = self._protected.get(sha256, 0) + 1

    def unprotect(self, sha256: str) -> None:
        left = self._protected.get(sha256, 0) - 1
        if left > 0:
            self._protected[sha256] = left
        else:
            self._protected.pop(sha256, None)

    # eviction -----------------------------------------------------------------------------

    async def _enforce_cap(self, *, protect: str) -> None:
        now = self._clock.now()
        stale = self._scanned_at is None or now - self._scanned_at >= RESCAN_INTERVAL
        if self._approx_bytes <= self.max_bytes and not stale:
            return
        lock = self._evicting or asyncio.Lock()
        async with lock:
            keep = {protect, *self._protected}
            total, evicted = await asyncio.to_thread(self._evict, keep)
        self._approx_bytes = total
        self._scanned_at = now
        self._set_gauge(total)
        if evicted:
            gone = set(evicted)
            for key in self._entries:
                cached = self._entries.peek(key)
                if cached is not None and cached[0].sha256 in gone:
                    self._entries.pop(key)
            if self._metrics is not None:
                self._metrics.evictions.inc(len(evicted))
            log.info("evicted %d artifact(s) to stay under %d bytes", len(evicted), self.max_bytes)

    def _evict(self, keep: set[str]) -> tuple[int, list[str]]:
        """(Thread.) Remove least recently used blobs until under the cap; returns the total
        left and the sha256 of each removed blob."""
        blobs = sorted(self._scan_blobs())
        total = sum(size for _mtime, size, _path in blobs)
        evicted: list[str] = []
        for _mtime, size, path in blobs:
            if total <= self.max_bytes:
                break
            if path.name in keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                evicted.append(path.name)
            total -= size
        return total, evicted

    def _scan_blobs(self) -> Iterator[tuple[float, int, Path]]:
        """(Thread.) (last use, size, path) of every committed blob."""
        for first in _subdirectories(self._blobs_dir):
            for second in _subdirectories(first):
                with contextlib.suppress(FileNotFoundError), os.scandir(second) as entries:
                    for item in entries:
                        with contextlib.suppress(FileNotFoundError):
                            if item.is_file(follow_symlinks=False):
                                stat = item.stat(follow_symlinks=False)
                                yield stat.st_mtime, stat.st_size, Path(item.path)

    def _set_gauge(self, total: int) -> None:
        if self._metrics is not None:
            self._metrics.blob_bytes.set(total)


# file helpers -----------------------------------------------------------------------------


def _mapped(exc: OSError) -> Exception:
    """StorageFull for a full disk or quota (ENOSPC/EDQUOT), else a copy of the OSError."""
    if exc.errno in _FULL_ERRNOS:
        return errors.StorageFull(
            f"the artifact store is full ({os.strerror(exc.errno)}): free disk space, or set "
            "cache.max_bytes below the free space so the mirror evicts old artifacts"
        )
    return OSError(exc.errno, exc.strerror, exc.filename)


def _touch(path: Path, at: float) -> None:
    """(Thread.) Record `at` as the blob's last use; a vanished blob is not an error here."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path, (at, at))


def _open_blob(path: Path, touch_at: float | None) -> OpenBlob:
    """(Thread.) The blob at `path` opened, its use stamped after its mtime was read."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise BlobVanished(str(path)) from None
    try:
        stat = os.fstat(file.fileno())
        if touch_at is not None:
            _touch(path, touch_at)
    except BaseException:
        file.close()
        raise
    return OpenBlob(file=file, size=stat.st_size, modified=stat.st_mtime)


def _parse_verified(entry: BlobEntry, touch_at: float | None, parse: Callable[[BinaryIO], T]) -> T:
    """(Thread.) `parse` of the blob if it still hashes to its sha256; else it is removed."""
    blob = _open_blob(entry.path, touch_at)
    with blob.file:
        digest = hashlib.sha256()
        while chunk := blob.file.read(_HASH_CHUNK):
            digest.update(chunk)
        if digest.hexdigest() != entry.sha256:
            log.error("blob %s does not match its sha256 on disk; discarding it", entry.path)
            _unlink_quietly(entry.path)
            raise BlobVanished(str(entry.path))
        blob.file.seek(0)
        return parse(blob.file)


def _read_verified(entry: BlobEntry, touch_at: float | None) -> bytes:
    """(Thread.) The blob's bytes if they still hash to its sha256; else it is removed."""
    try:
        data = entry.path.read_bytes()
    except FileNotFoundError:
        raise BlobVanished(str(entry.path)) from None
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        log.error("blob %s does not match its sha256 on disk; discarding it", entry.path)
        _unlink_quietly(entry.path)
        raise BlobVanished(str(entry.path))
    if touch_at is not None:
        _touch(entry.path, touch_at)
    return data


def _subdirectories(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as entries:
            return [Path(item.path) for item in entries if item.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _remove_if_stale(path: Path) -> bool:
    """Remove a temp file no live writer holds locked nor wrote to lately (left by a crash)."""
    if not path.name.endswith(_TEMP_SUFFIX):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if time.time() - os.fstat(fd).st_mtime < STALE_TEMP_AGE.total_seconds():
            return False  # maybe written by another host, under a lock not seen here
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a writer in another process is still busy with it
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _index_entry_bytes(held: tuple[BlobEntry, datetime]) -> int:
    """What an index entry held in memory costs the budget, by estimate (no walk)."""
    entry = held[0]
    return _INDEX_ENTRY_BYTES + len(entry.key) + sum(len(v) for v in entry.digests.values())
