"""`mirror serve` as a real process: what a client or an admin writes cannot forge a line of
its log or put an escape sequence on the operator's terminal."""

from __future__ import annotations

import json
import re

import aiohttp
import pytest
from yarl import URL

from mirror.logs import CONTINUATION
from tests.conftest import free_port
from tests.e2e.conftest import StartMirror, stop_mirror

TOKEN = "alice-token-0123456789"
EVENT_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
FORGED_TIME = "2026-11-30 09:00:00,000"
FORGED = f"{FORGED_TIME} WARNING mirror.admin: delete block-1 by bob from 10.0.0.9"


@pytest.mark.e2e
async def test_log_lines_cannot_be_forged(start_mirror: StartMirror) -> None:
    mirror = await start_mirror(
        {
            "MIRROR_ADMIN_TOKENS": f"alice:{TOKEN}",
            # Nothing listens there: no request in this test needs the upstream.
            "MIRROR_NPM_UPSTREAM": f"http://127.0.0.1:{free_port()}/",
            "MIRROR_ACCESS_LOG": "true",
        }
    )
    reason = f"compromised\n{FORGED}\r\n\x1b[2J\x1b[31mred\u2028\x85\u202eevil"
    path = "/npm/left-pad%0a" + FORGED.replace(" ", "%20") + "/-/x%1b%5b2J.tgz"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{mirror.url}/api/v1/blocks",
            json={"ecosystem": "npm", "package": "left-pad", "versions": "1.0.0", "reason": reason},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response:
            # Control characters in a reason are refused outright (nothing stored, nothing
            # logged but the refusal).
            assert response.status == 400, await response.text()
            assert (await response.json())["field"] == "reason"
        async with session.get(URL(mirror.url + path, encoded=True)) as response:
            assert response.status < 500
    assert await stop_mirror(mirror) == 0

    log = mirror.log()
    lines = log.rstrip("\n").split("\n")
    for line in lines:
        assert not UNSAFE.search(line), line
        if line.startswith("{"):
            json.loads(line)  # an access-log line, whole
        else:
            started = line.startswith((CONTINUATION, "quarantine-mirror listening on "))
            assert EVENT_START.match(line) or started, line
    assert not any(line.startswith(FORGED_TIME) for line in lines)
    assert not any("delete block-1 by bob" in line for line in lines if not line.startswith("{"))
    assert any(json.loads(line).get("path") == path for line in lines if line.startswith("{"))
