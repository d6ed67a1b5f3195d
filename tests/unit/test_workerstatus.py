"""The supervisor's back-off as workers read it: only their own supervisor's file counts, and
a file that cannot be read never makes a worker unready."""

from __future__ import annotations

from pathlib import Path

from mirror import workerstatus
from mirror.workerstatus import Restarting, StatusFile


def test_backing_off_slots_are_described_with_the_time_left(tmp_path: Path) -> None:
    path = workerstatus.path_in(tmp_path)
    workerstatus.write(path, 4242, [Restarting(worker=2, crashes=3, at=1000.0)])
    assert StatusFile(path, 4242).backoff(now=998.0) == [
        "worker 2 crashed 3 times, restarting in 2.0 s"
    ]
    assert StatusFile(path, 4242).backoff(now=1001.0) == [
        "worker 2 crashed 3 times, restarting in 0.0 s"
    ]
    workerstatus.write(path, 4242, [])
    assert StatusFile(path, 4242).backoff(now=998.0) == []


def test_another_supervisors_or_a_damaged_file_is_ignored(tmp_path: Path) -> None:
    path = workerstatus.path_in(tmp_path)
    assert StatusFile(path, 1).backoff() == []  # no file
    workerstatus.write(path, 1, [Restarting(worker=1, crashes=2, at=0.0)])
    assert StatusFile(path, 2).backoff() == []  # left by a supervisor that was killed
    path.write_bytes(b'{"supervisor": 1, "restarting": [{"worker": "x"}]}')
    assert StatusFile(path, 1).backoff() == []
    path.write_bytes(b"\xff")
    assert StatusFile(path, 1).backoff() == []
