"""`mirror state export` and `mirror state import` as operators run them: the embedded
SQLite state moved into a real redis-server, and files that cannot be read or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mirror.state.redis import RedisState
from tests.e2e.conftest import REPO, block_before_start


def mirror(*args: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
    env.update(settings)
    return subprocess.run(
        [sys.executable, "-m", "mirror", *args, "--config", str(REPO / "config/mirror.toml")],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
    )  # fmt: skip


async def test_the_embedded_state_moves_into_redis(
    tmp_path: Path, stoppable_redis: tuple[subprocess.Popen[bytes], str]
) -> None:
    _, url = stoppable_redis
    old = tmp_path / "old-state"
    await block_before_start(old, "npm", "left-pad", "1.3.0")
    exported = tmp_path / "policy.json"
    result = mirror(
        "state", "export", str(exported), "--ledger", "--data-dir", str(old), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"exported to {exported}: 1 block, 0 exemption, 0 freeze")
    assert json.loads(exported.read_text(encoding="utf-8"))["ledger"] == []

    result = mirror("state", "import", str(exported), cwd=tmp_path, MIRROR_REDIS_URL=url)
    assert result.returncode == 0, result.stderr
    assert "1 block" in result.stdout
    state = RedisState(url)
    await state.open()
    try:
        rules = await state.list_rules()
    finally:
        await state.close()
    assert [(rule.id, rule.package, rule.versions) for rule in rules] == [
        ("e2e-block", "left-pad", "1.3.0")
    ]
    status = mirror("state", "status", cwd=tmp_path, MIRROR_REDIS_URL=url)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "1 block" in status.stdout


def test_a_file_that_is_not_an_export_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text('{"rules": []}', encoding="utf-8")
    result = mirror("state", "import", "notes.json", "--data-dir", "data", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "mirror state import: not a state export (written by `mirror state export`)"
    ]
    missing = mirror("state", "import", "absent.json", "--data-dir", "data", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        "mirror state import: absent.json: No such file or directory"
    ]


def test_an_export_that_cannot_be_written_says_where(tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "policy.json"
    result = mirror("state", "export", str(target), "--data-dir", "data", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"mirror state export: {target}: ")
    assert not target.parent.exists()
