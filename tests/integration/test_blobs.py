"""The artifact blob store on a real directory: verified commits, nothing left behind by bad
bytes, crashes or a full disk, LRU eviction under a cap, several stores sharing one directory."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import pytest

from mirror.blobs.store import (
    STALE_TEMP_AGE,
    BlobStore,
    BlobVanished,
    BlobWriter,
    DigestMismatch,
)
from mirror.budget import BudgetedLRU, ByteBudget
from mirror.clock import FixedClock
from mirror.errors import IntegrityError, StorageFull
from mirror.metrics import Metrics
from mirror.model import Digest
from tests.integration.conftest import fill_disk, small_disk

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BODY = b"the published tarball bytes\n" * 1000


def digest(algorithm: str, body: bytes) -> Digest:
    return Digest(algorithm=algorithm, hexdigest=hashlib.new(algorithm, body).hexdigest())


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
async def store(tmp_path: Path, clock: FixedClock, metrics: Metrics) -> AsyncIterator[BlobStore]:
    blobs = BlobStore(tmp_path / "artifacts", clock=clock, metrics=metrics)
    await blobs.open()
    yield blobs
    await blobs.close()


async def write(
    store: BlobStore, key: str, body: bytes, digests: tuple[Digest, ...], *, chunk: int = 4096
) -> None:
    algorithms = {d.algorithm for d in digests}
    writer = await store.begin(key, algorithms)
    try:
        for start in range(0, len(body), chunk):
            await writer.write(body[start : start + chunk])
        await writer.commit(digests, what=key)
    finally:
        writer.close()


async def test_verified_write_commits_and_is_found(store: BlobStore) -> None:
    declared = (digest("sha512", BODY), digest("sha1", BODY))
    await write(store, "npm/left-pad/1.3.0/left-pad-1.3.0.tgz", BODY, declared)
    entry = await store.lookup("npm/left-pad/1.3.0/left-pad-1.3.0.tgz")
    assert entry is not None
    assert entry.path.read_bytes() == BODY
    assert entry.sha256 == hashlib.sha256(BODY).hexdigest()
    assert entry.path.name == entry.sha256
    assert entry.size == len(BODY)
    assert entry.digests["sha512"] == declared[0].hexdigest
    assert entry.digests["sha1"] == declared[1].hexdigest
    assert await store.lookup("npm/left-pad/1.3.1/left-pad-1.3.1.tgz") is None
    assert files_under(store.directory / "tmp") == []


async def test_an_opened_blob_is_read_whole_even_if_evicted_meanwhile(store: BlobStore) -> None:
    await write(store, "k/a", BODY, (digest("sha256", BODY),))
    entry = await store.lookup("k/a")
    assert entry is not None
    blob = await store.open_blob(entry)
    try:
        entry.path.unlink()  # another process evicts it while this one sends it
        assert blob.size == len(BODY)
        assert blob.file.read() == BODY
    finally:
        blob.file.close()
    with pytest.raises(BlobVanished):
        await store.open_blob(entry)
    with pytest.raises(BlobVanished):
        await store.read_verified(entry)


async def test_a_blob_damaged_on_disk_is_removed_never_returned(store: BlobStore) -> None:
    await write(store, "k/a", BODY, (digest("sha256", BODY),))
    await write(store, "k/b", BODY + b"b", (digest("sha256", BODY + b"b"),))
    damaged, intact = await store.lookup("k/a"), await store.lookup("k/b")
    assert damaged is not None
    assert intact is not None
    damaged.path.write_bytes(b"bit rot" + BODY[7:])
    with pytest.raises(BlobVanished):
        await store.read_verified(damaged)
    assert not damaged.path.exists()
    assert await store.read_verified(intact) == BODY + b"b"


async def test_a_blob_parsed_verified_is_hashed_again_first(store: BlobStore) -> None:
    await write(store, "k/a", BODY, (digest("sha256", BODY),))
    await write(store, "k/b", BODY + b"b", (digest("sha256", BODY + b"b"),))
    damaged, intact = await store.lookup("k/a"), await store.lookup("k/b")
    assert damaged is not None
    assert intact is not None
    damaged.path.write_bytes(b"bit rot" + BODY[7:])
    parsed: list[bytes] = []

    def parse(file: BinaryIO) -> bytes:
        parsed.append(file.read())  # from its start, after the hash
        return parsed[-1][:4]

    with pytest.raises(BlobVanished):
        await store.parse_verified(damaged, parse)
    assert not damaged.path.exists()
    assert parsed == []
    assert await store.parse_verified(intact, parse) == BODY[:4]
    assert parsed == [BODY + b"b"]


@pytest.mark.parametrize(
    "declared",
    [
        (digest("sha512", b"other bytes"),),
        # the strongest matches but a weaker declared one does not: still refused
        (digest("sha512", BODY), digest("sha1", b"other bytes")),
        (digest("sha256", b"other bytes"), digest("sha1", BODY)),
    ],
)
async def test_wrong_digest_leaves_nothing(
    store: BlobStore, tmp_path: Path, declared: tuple[Digest, ...]
) -> None:
    with pytest.raises(DigestMismatch) as raised:
        await write(store, "npm/evil/1.0.0/evil-1.0.0.tgz", BODY, declared)
    assert isinstance(raised.value, IntegrityError)
    assert raised.value.status == 502
    assert files_under(tmp_path / "artifacts") == []
    assert await store.lookup("npm/evil/1.0.0/evil-1.0.0.tgz") is None


async def test_aborted_write_leaves_nothing(store: BlobStore, tmp_path: Path) -> None:
    writer = await store.begin("maven/g:a/1/a-1.jar", {"sha1"})
    await writer.write(BODY[:100])
    assert files_under(tmp_path / "artifacts" / "tmp") == [writer.temp]
    await writer.abort()
    writer.close()
    assert files_under(tmp_path / "artifacts") == []
    assert await store.lookup("maven/g:a/1/a-1.jar") is None


async def test_stale_temp_files_are_removed_at_open_but_live_ones_are_kept(
    tmp_path: Path, clock: FixedClock
) -> None:
    directory = tmp_path / "artifacts"
    (directory / "tmp").mkdir(parents=True)
    crashed = directory / "tmp" / "0123abcd.part"
    crashed.write_bytes(b"half a tarball")
    an_hour_ago = time.time() - STALE_TEMP_AGE.total_seconds() - 1
    os.utime(crashed, (an_hour_ago, an_hour_ago))
    live = directory / "tmp" / "4567ef01.part"
    live.write_bytes(b"a download in another worker")
    os.utime(live, (an_hour_ago, an_hour_ago))
    # Written just now, unlocked: another host's download whose lock this host cannot see.
    other_host = directory / "tmp" / "89abcdef.part"
    other_host.write_bytes(b"a download on another host")
    fd = os.open(live, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        store = BlobStore(directory, clock=clock)
        await store.open()
        assert not crashed.exists()
        assert live.exists()
        assert other_host.exists()
        await store.close()
    finally:
        os.close(fd)


async def test_two_stores_on_one_directory_see_each_others_commits(
    tmp_path: Path, clock: FixedClock
) -> None:
    first = BlobStore(tmp_path / "artifacts", clock=clock)
    second = BlobStore(tmp_path / "artifacts", clock=clock)
    await first.open()
    await second.open()
    try:
        assert await second.lookup("pypi/six/1.16.0/six-1.16.0.tar.gz") is None
        await write(first, "pypi/six/1.16.0/six-1.16.0.tar.gz", BODY, (digest("sha256", BODY),))
        entry = await second.lookup("pypi/six/1.16.0/six-1.16.0.tar.gz")
        assert entry is not None
        assert entry.path.read_bytes() == BODY
        # The same bytes under another key share the blob.
        await write(second, "pypi/six/1.16.0/copy.tar.gz", BODY, (digest("sha256", BODY),))
        assert len(files_under(tmp_path / "artifacts" / "sha256")) == 1
    finally:
        await first.close()
        await second.close()


async def test_full_disk_is_storage_full_and_leaves_nothing(
    tmp_path: Path, clock: FixedClock, metrics: Metrics
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        store = BlobStore(disk / "artifacts", clock=clock, metrics=metrics)
        await store.open()
        try:
            fill_disk(disk, leave=4096)  # the first chunk fits, the disk is full after it
            with pytest.raises(StorageFull) as raised:
                await write(store, "npm/big/1.0.0/big-1.0.0.tgz", BODY, (digest("sha512", BODY),))
            assert raised.value.status == 507
            assert "full" in raised.value.message
            assert files_under(disk / "artifacts") == []
            assert await store.lookup("npm/big/1.0.0/big-1.0.0.tgz") is None
        finally:
            await store.close()


async def test_quota_exceeded_is_storage_full(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The one fault here no real part produces on demand: a quota needs a quota-enabled file
    # system and a user over it. The kernel's write call is replaced to answer EDQUOT.
    def over_quota(fd: int, data: bytes) -> None:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(BlobWriter, "_write_all", staticmethod(over_quota))
    with pytest.raises(StorageFull):
        await write(store, "npm/big/1.0.0/big-1.0.0.tgz", BODY, (digest("sha512", BODY),))


async def test_lru_eviction_keeps_recently_read_blobs(
    tmp_path: Path, clock: FixedClock, metrics: Metrics
) -> None:
    size = 10_000
    bodies = {name: name.encode() * (size // len(name)) for name in ("aaaa", "bbbb", "cccc")}
    store = BlobStore(tmp_path / "artifacts", max_bytes=2 * size + 10, clock=clock, metrics=metrics)
    await store.open()
    try:
        await write(store, "k/a", bodies["aaaa"], (digest("sha256", bodies["aaaa"]),))
        clock.advance(timedelta(minutes=5))
        await write(store, "k/b", bodies["bbbb"], (digest("sha256", bodies["bbbb"]),))
        clock.advance(timedelta(minutes=5))
        # Reading a, as the artifact server does on a hit: its last use moves to now.
        used = await store.lookup("k/a")
        assert used is not None
        blob = await store.open_blob(used)
        blob.file.close()
        assert used.path.stat().st_mtime == clock.now().timestamp()
        clock.advance(timedelta(seconds=30))
        await store.note_use(used)
        assert used.path.stat().st_mtime != clock.now().timestamp()  # at most once a minute
        clock.advance(timedelta(minutes=5))
        await write(store, "k/c", bodies["cccc"], (digest("sha256", bodies["cccc"]),))

        assert await store.lookup("k/b") is None
        a, c = await store.lookup("k/a"), await store.lookup("k/c")
        assert a is not None
        assert a.path.read_bytes() == bodies["aaaa"]
        assert c is not None
        assert c.path.read_bytes() == bodies["cccc"]
        assert len(files_under(tmp_path / "artifacts" / "sha256")) == 2
        assert metrics.registry.get_sample_value("mirror_blob_evictions_total") == 1
        assert metrics.registry.get_sample_value("mirror_blob_store_bytes") == 2 * size

        # Another process evicted the blob behind this process's cached entry: a fresh store
        # (as a sibling worker would) does not find it either.
        other = BlobStore(tmp_path / "artifacts", clock=clock)
        await other.open()
        assert await other.lookup("k/b") is None
        await other.close()
    finally:
        await store.close()


async def test_the_blob_just_written_is_never_evicted(tmp_path: Path, clock: FixedClock) -> None:
    store = BlobStore(tmp_path / "artifacts", max_bytes=100, clock=clock)
    await store.open()
    try:
        await write(store, "k/big", BODY, (digest("sha256", BODY),))
        entry = await store.lookup("k/big")
        assert entry is not None
        assert entry.path.read_bytes() == BODY
    finally:
        await store.close()


async def test_index_entries_held_in_memory_are_paid_from_the_workers_budget(
    tmp_path: Path, clock: FixedClock
) -> None:
    budget = ByteBudget(64 * 1024, max_share=1.0)
    documents: BudgetedLRU[str, bytes] = BudgetedLRU(budget, "documents", len)
    store = BlobStore(tmp_path / "artifacts", clock=clock, budget=budget)
    await store.open()
    try:
        await write(store, "k/a", BODY, (digest("sha256", BODY),))
        assert (await store.lookup("k/a")) is not None
        assert budget.usage()["artifact index entries"] > 0
        # The copy in memory answers while it is held (the disk's is gone)...
        for index in files_under(tmp_path / "artifacts" / "index"):
            index.unlink()
        held = await store.lookup("k/a")
        assert held is not None
        assert held.path.read_bytes() == BODY
        # ...until the shared budget makes room for another cache's entries: then the
        # entry is read from disk again.
        documents.put("big", b"x" * 63 * 1024)
        assert budget.usage()["artifact index entries"] == 0
        assert await store.lookup("k/a") is None
    finally:
        await store.close()


async def test_close_removes_temp_files_of_unfinished_writes(
    tmp_path: Path, clock: FixedClock
) -> None:
    store = BlobStore(tmp_path / "artifacts", clock=clock)
    await store.open()
    writer = await store.begin("k/unfinished", {"sha1"})
    await writer.write(BODY)
    await store.close()
    assert files_under(tmp_path / "artifacts") == []
