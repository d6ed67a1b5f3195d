"""An OSV advisory feed as the malicious-packages repository lays it out (npm, PyPI and Maven
advisories and one of an ecosystem the mirror does not serve), as a directory, a zip file or
zip bytes to serve over HTTP: for `mirror import-osv` and the server's feed sync."""

from __future__ import annotations

import json
import shutil
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = "malicious-packages-main"  # the top directory of the repository's zip


def malicious(advisory_id: str, ecosystem: str, name: str, **affected: Any) -> dict[str, Any]:
    return {
        "id": advisory_id,
        "summary": f"malicious code in {name}",
        "affected": [{"package": {"ecosystem": ecosystem, "name": name}, **affected}],
    }


def pypi_range(fixed: str) -> dict[str, Any]:
    events = [{"introduced": "0"}, {"fixed": fixed}]
    return {"ranges": [{"type": "ECOSYSTEM", "events": events}]}


FEED = {
    "npm/evil-npm/MAL-2026-1.json": malicious("MAL-2026-1", "npm", "evil-npm", versions=["1.0.0"]),
    "pypi/evil-py/MAL-2026-2.json": malicious("MAL-2026-2", "PyPI", "evil-py", **pypi_range("1.0")),
    "maven/org.evil:lib/MAL-2026-3.json": malicious(
        "MAL-2026-3", "Maven", "org.evil:lib", versions=["1.0"]
    ),
    "crates.io/evil-rs/MAL-2026-4.json": malicious(
        "MAL-2026-4", "crates.io", "evil-rs", versions=["0.1.0"]
    ),
}  # fmt: skip


def write_feed(root: Path, feed: dict[str, dict[str, Any]], form: str) -> Path:
    """The feed under `root` as a directory (replacing what was there) or a zip of it."""
    directory = root / ROOT
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name, advisory in feed.items():
        path = directory / "osv" / "malicious" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(advisory), encoding="utf-8")
    if form == "directory":
        return directory
    archive = root / "feed.zip"
    archive.write_bytes(zipped(feed))
    return archive


def zipped(feed: dict[str, dict[str, Any]]) -> bytes:
    """The feed as the repository's zip: every advisory under ROOT/osv/malicious/."""
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, advisory in sorted(feed.items()):
            archive.writestr(f"{ROOT}/osv/malicious/{name}", json.dumps(advisory))
    return buffer.getvalue()
