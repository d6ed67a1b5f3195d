"""Cross-worker download claims: worker processes share the blob directory, so one `flock`
per cache key keeps concurrent misses on several workers to one upstream fetch.

- `claims/<sha256 of the cache key>.lock`: whoever holds the exclusive lock fetches; the others
  poll for the stored blob (or for the lock to come free: the holder gave up or died).
- The holder writes into its claim file where its bytes are being written (its temp file), so
  a waiting process can stream the growing file to its own clients (`PeerFetch`): the temp file
  becomes the blob by an atomic rename, which keeps the inode, so a reader reads on unchanged.
- Only a temp file of the store's own temp directory is ever opened, whatever a claim file says.

The blob store (`mirror.blobs.store.BlobStore.claim` / `peer_fetch`) decides the paths; these
functions run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path


class FetchClaim:
    """An exclusive claim on one key's upstream fetch; `release()` when the outcome is known
    (the index entry is written first, so waiters find it)."""

    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._fd: int | None = fd

    def announce(self, temp: Path) -> None:
        """(Thread.) Say where the bytes are being written, so processes waiting on this
        claim can stream them to their own clients as they arrive."""
        if self._fd is None:
            return
        data = str(temp).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # Unlinked while still locked: a waiter that opened the old file takes a lock on a
        # file nobody else will open, which at worst costs one more upstream fetch.
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        os.close(fd)


class PeerFetch:
    """Read side of another process's fetch: its temp file, which becomes the blob itself on
    commit (an atomic rename keeps the inode, so this descriptor reads on unchanged)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    async def size(self) -> int:
        if self._fd is None:
            return 0
        return (await asyncio.to_thread(os.fstat, self._fd)).st_size

    async def read_at(self, offset: int, size: int) -> bytes:
        if self._fd is None:
            return b""
        return await asyncio.to_thread(os.pread, self._fd, size, offset)

    async def is_file(self, path: Path) -> bool:
        """Whether this is the file now at `path` (the peer's temp file became that blob)."""
        if self._fd is None:
            return False
        fd = self._fd

        def same() -> bool:
            try:
                return os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                return False

        return await asyncio.to_thread(same)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def open_peer(claim: Path, temp_dir: Path) -> PeerFetch | None:
    """(Thread.) The temp file announced in `claim`, opened for reading; None until one is
    announced, or when it is gone or not in `temp_dir`."""
    try:
        announced = claim.read_bytes().decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    # Only ever a temp file of this store, whatever the claim file says.
    if not announced or Path(announced).parent != temp_dir:
        return None
    try:
        return PeerFetch(os.open(announced, os.O_RDONLY | os.O_CLOEXEC))
    except FileNotFoundError:
        return None


def try_claim(path: Path) -> FetchClaim | None:
    """(Thread.) The claim whose lock file is `path`, or None while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return FetchClaim(path, fd)
