"""The allocator tuning of worker processes: harmless to call, and the trimming thread stops."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from mirror import malloc


def test_tuning_leaves_a_worker_able_to_allocate_big_and_small() -> None:
    # In a process of its own: the settings are process-wide (a worker's, not pytest's).
    code = (
        "from mirror import malloc; malloc.tune(); "
        "blocks = [bytes(n) for n in (10, 1000, 2 * malloc.MMAP_THRESHOLD) for _ in range(50)]; "
        "print(sum(map(len, blocks)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 50 * (10 + 1000 + 2 * malloc.MMAP_THRESHOLD)


def test_the_trimming_thread_runs_and_stops() -> None:
    stop = malloc.start_trimming(interval=0.01)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not _trimming_threads():
        time.sleep(0.01)
    assert _trimming_threads()
    stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _trimming_threads():
        time.sleep(0.01)
    assert not _trimming_threads()


def _trimming_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "malloc-trim"]
