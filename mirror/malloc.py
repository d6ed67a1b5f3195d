"""glibc's allocator, tuned for a worker process (each setting measured with the install-set
benchmark, `python3 -m bench.run --only install-set`). Where the C library is not glibc,
nothing here does anything.

A worker allocates many short-lived buffers of megabytes (upstream bodies, rendered and
compressed packuments) from the event loop and from a few threads:
- glibc gives every thread that allocates its own arena and keeps what each arena grew to;
  two arenas per worker are enough for its few threads (410 -> 366 MiB peak).
- glibc raises its mmap threshold each time a mapped buffer is freed, after which big buffers
  come from the heap, which fragments and is not given back; a fixed 1 MiB threshold keeps
  them mapped and returned when freed (246 -> 184 MiB).
- Fixing the mmap threshold also fixes glibc's trim threshold at 128 KiB: the top of the heap
  is then returned and taken back on almost every request, which halved the rate of warm
  2,000-version packuments (2,100 -> 1,000 req/s). A 32 MiB trim threshold keeps the rate;
  the trimming below gives the memory back instead.
- Memory freed inside the heap stays with the process until it is trimmed; trimming every
  half second (well under a millisecond each) gives it back (189-193 -> 169-176 MiB)."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

_M_ARENA_MAX = -8  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
ARENAS = 2
# Allocations from this size up get their own mapping, returned to the system when freed.
MMAP_THRESHOLD = 1024 * 1024
TRIM_SECONDS = 0.5
# The heap top is kept up to this size between trims (see above).
TRIM_THRESHOLD = 32 * 1024 * 1024


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    return function


def tune() -> None:
    """Set the arenas and the mmap threshold; call before the worker allocates much."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return
    mallopt(_M_ARENA_MAX, ARENAS)
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def start_trimming(interval: float = TRIM_SECONDS) -> Callable[[], None]:
    """Return freed heap pages to the system every `interval` seconds from a daemon thread
    (it runs while the event loop is busy, which is when memory was just freed); returns
    the function that stops it."""
    stop = threading.Event()
    trim = _libc_function("malloc_trim")
    if trim is None:
        return stop.set

    def run() -> None:
        while not stop.wait(interval):
            trim(0)

    threading.Thread(target=run, name="malloc-trim", daemon=True).start()
    return stop.set
