"""Fetch claims within one host: its worker processes share the blob directory, so one `flock`
per cache key keeps concurrent misses on several workers to one upstream fetch. (Across hosts
sharing one cache volume, a claim in shared state does the same: `mirror.artifacts.download`.)

- `<claims dir>/<sha256 of the cache key>.lock`: whoever holds the exclusive lock fetches; the
  others poll for the stored blob (or for the lock to come free: the holder gave up or died).
  The claims dir is the server's own (its state dir), never the shared cache: a lock there
  means one host, whatever the cache's filesystem does with locks.
- The holder writes into its claim file where the bytes are being written (the name of a temp
  file in the store), so a waiting process can stream the growing file to its own clients
  (`PeerFetch`): the temp file becomes the blob by an atomic rename, which keeps the inode, so
  a reader reads on unchanged. A host following another host's fetch announces that host's
  temp file, so its own workers follow it too.
- Only a temp file of the store's own temp directory is ever opened, whatever a claim says:
  an announcement is a bare file name, opened in that directory without following links.

The blob store (`mirror.blobs.store.BlobStore.claim` / `peer_fetch`) decides the paths; these
functions run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
from pathlib import Path

# The name of a write in progress (`BlobStore.begin`): 32 hex digits and ".part".
_TEMP_NAME = re.compile(r"[0-9a-f]{32}\.part")


class FetchClaim:
    """An exclusive claim on one key's upstream fetch; `release()` when the outcome is known
    (the index entry is written first, so waiters find it)."""

    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._fd: int | None = fd

    def announce(self, name: str) -> None:
        """(Thread.) Say where the bytes are being written (a temp file's name in the store),
        so processes waiting on this claim can stream them to their clients as they arrive."""
        if self._fd is None:
            return
        data = name.encode()
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

    async def unlinked(self) -> bool:
        """Whether the file was removed: its writer gave up (a committed blob keeps it)."""
        if self._fd is None:
            return True
        return (await asyncio.to_thread(os.fstat, self._fd)).st_nlink == 0

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def open_peer(claim: Path, temp_dir: Path) -> PeerFetch | None:
    """(Thread.) The temp file announced in `claim`, opened for reading; None until one is
    announced, or when it is gone or not a file of `temp_dir`."""
    try:
        announced = claim.read_bytes().decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    return open_announced(announced, temp_dir)


def open_announced(name: str, temp_dir: Path) -> PeerFetch | None:
    """(Thread.) The temp file `name` in `temp_dir`, opened for reading; None when it is gone
    or `name` is not a bare temp file name (a path, a link: nothing outside `temp_dir`)."""
    # Only ever a temp file of this store, whatever the claim says.
    if not _TEMP_NAME.fullmatch(name):
        return None
    try:
        fd = os.open(temp_dir / name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # gone, or a link
        return None
    return PeerFetch(fd)


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
