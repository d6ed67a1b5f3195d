"""Writing a file so that a reader sees the old copy or the new one, whole: written once,
used by the metadata cache and the last-known copy of the policy."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Replace `path` with `data` atomically (a temp file beside it, then a rename); with
    `durable`, fsync the bytes before the rename (for a copy that matters exactly when
    something else was lost)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
