"""What the supervisor of `mirror serve` tells its workers' `/readyz`: which worker slots are
waiting out a restart back-off because their workers keep crashing. The supervisor replaces
a small JSON file in the data dir (atomically: a reader sees a whole version) whenever that
changes; a worker reads it when asked whether it is ready. The file names the supervisor's
pid, so a file left by a supervisor that was killed is never taken for the current one's."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mirror.files import atomic_write

FILENAME = "supervisor.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Restarting:
    """Worker slot `worker` (1-based) lost `crashes` workers in a row, each within a short
    time of starting; the next one starts at `at` (seconds since the epoch)."""

    worker: int
    crashes: int
    at: float

    def describe(self, now: float) -> str:
        times = "time" if self.crashes == 1 else "times"
        return (
            f"worker {self.worker} crashed {self.crashes} {times}, restarting in "
            f"{max(self.at - now, 0.0):.1f} s"
        )


def path_in(data_dir: Path) -> Path:
    return data_dir / FILENAME


def write(path: Path, supervisor: int, restarting: Sequence[Restarting]) -> None:
    """Replace the file with the slots backing off now (none: an empty list)."""
    doc = {
        "supervisor": supervisor,
        "restarting": [
            {"worker": item.worker, "crashes": item.crashes, "at": item.at} for item in restarting
        ],
    }
    atomic_write(path, json.dumps(doc, separators=(",", ":")).encode())


@dataclass(frozen=True, slots=True)
class StatusFile:
    """A worker's view of its supervisor's file."""

    path: Path
    supervisor: int

    def backoff(self, now: float | None = None) -> list[str]:
        """One line per worker slot the supervisor is backing off on; none when the file is
        missing, unreadable or another supervisor's (readiness must not fail on it).
        Blocking (a small file read)."""
        try:
            doc = json.loads(self.path.read_bytes())
            if doc.get("supervisor") != self.supervisor:
                return []
            items = [
                Restarting(worker=int(item["worker"]), crashes=int(item["crashes"]),
                           at=float(item["at"]))
                for item in doc["restarting"]
            ]  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return []
        moment = time.time() if now is None else now
        return [item.describe(moment) for item in items]
