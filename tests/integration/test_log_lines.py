"""Logging as `mirror serve` configures it (`serve.configure_logging`), through the whole app:
whatever a client path, a header or an admin's block reason carries, each event is one line
(continuations of a traceback are prefixed) and no control character reaches the output."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer
from yarl import URL

from mirror.app import create_app
from mirror.cli import serve
from mirror.clock import FixedClock
from mirror.config import Config, load_config
from mirror.logs import CONTINUATION
from tests.conftest import mirror_settings
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import OLD, Client

TOKEN = "alice-token-0123456789"
EVENT_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
FORGED_TIME = "2026-11-30 09:00:00,000"
FORGED = f"{FORGED_TIME} WARNING mirror.admin: delete block-1 by bob from 10.0.0.9"

Output = Callable[[], tuple[str, str]]  # (stdout, stderr) written since the last call


@pytest.fixture
def config(tmp_path: Path, registry: FakeNpmRegistry) -> Config:
    env = mirror_settings(
        tmp_path / "data",
        MIRROR_NPM_UPSTREAM=registry.url,
        MIRROR_ADMIN_TOKENS=f"alice:{TOKEN}",
        MIRROR_ACCESS_LOG="true",
        MIRROR_LOG_LEVEL="INFO",
    )
    return load_config(None, env)


@pytest.fixture
def output(config: Config, monkeypatch: pytest.MonkeyPatch) -> Output:
    """`_configure_logging` on clean loggers (restored after the test), its handlers writing
    into strings instead of the process's stdout and stderr."""
    root = logging.getLogger()
    access = logging.getLogger("mirror.access")
    for logger in (root, access):
        monkeypatch.setattr(logger, "handlers", [])
        monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setattr(access, "propagate", access.propagate)
    out, err = io.StringIO(), io.StringIO()
    with monkeypatch.context() as streams:
        streams.setattr(sys, "stdout", out)
        streams.setattr(sys, "stderr", err)
        serve.configure_logging(config)
    return lambda: (out.getvalue(), err.getvalue())


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, config: Config, output: Output, clock: FixedClock
) -> Client:
    return await aiohttp_client(create_app(config, clock=clock))


def assert_safe_events(text: str) -> list[str]:
    """Every line starts an event or continues one; nothing a terminal acts on."""
    lines = text.rstrip("\n").split("\n")
    for line in lines:
        assert EVENT_START.match(line) or line.startswith(CONTINUATION), line
        assert not UNSAFE.search(line), line
    return lines


async def test_a_block_reason_cannot_forge_a_log_line(client: Client, output: Output) -> None:
    reason = f"compromised\n{FORGED}\r\n\x1b[2J\x1b[31mred\u2028\x85\u202eevil"
    response = await client.post(
        "/api/v1/blocks",
        json={"ecosystem": "npm", "package": "left-pad", "versions": "1.0.0", "reason": reason},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    # The admin API refuses control characters in a reason outright...
    assert response.status == 400
    assert (await response.json())["field"] == "reason"
    # ...and untrusted text that does reach a log line (an upstream's words, a client's
    # path) stays on that line: the formatter `mirror serve` installs escapes it.
    logging.getLogger("mirror.admin").warning("block.create b-1 by alice: %s", reason)
    _, err = output()
    lines = assert_safe_events(err)
    assert not any("delete block-1 by bob" in line and "b-1" not in line for line in lines)
    (event,) = [line for line in lines if "block.create b-1 by alice" in line]
    # The forged text is inside the real event, on its line, not a line of its own.
    assert event.index("mirror.admin: ") < event.index("compromised") < event.index(FORGED_TIME)
    assert not any(line.startswith(FORGED_TIME) for line in lines)


async def raw_get(client: Client, target: str, headers: bytes = b"") -> bytes:
    """Send a GET as bytes (aiohttp's client refuses control characters in headers)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"GET "
            + target.encode()
            + b" HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n"
            + headers
            + b"\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


async def test_hostile_paths_and_headers_stay_in_one_access_line(
    client: Client, output: Output
) -> None:
    path = "/npm/left-pad%0a" + FORGED.replace(" ", "%20") + "/-/x%1b%5b2J%e2%80%a8.tgz"
    agent = "npm/10 \x85 \u2028 \u202e"  # NEL, line separator, right-to-left override
    answer = await raw_get(client, path, b"User-Agent: " + agent.encode() + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    other = await client.get(URL("/npm/%c2%85%0d%0a", encoded=True))
    assert other.status < 500
    out, err = output()
    assert not UNSAFE.search(out.replace("\n", ""))
    records = [json.loads(line) for line in out.rstrip("\n").split("\n")]
    assert [record["path"] for record in records] == [path, "/npm/%c2%85%0d%0a"]
    assert records[0]["ua"] == agent  # escaped in the line, intact for a JSON reader
    if err:
        assert_safe_events(err)


async def test_a_refused_request_logs_safely(client: Client, output: Output) -> None:
    """aiohttp itself logs a request it cannot parse, with the offending bytes."""
    header = b"User-Agent: npm \x1b[2J\x1b]0;owned\x07\r\nX-Forged: a\rb\r\n"
    answer = await raw_get(client, "/npm/left-pad%0a%1b[31m", header)
    assert answer.startswith(b"HTTP/1.0 400"), answer[:200]
    _, err = output()
    (line,) = [line for line in assert_safe_events(err) if "aiohttp.server" in line]
    # One INFO line, no traceback: a client cannot fill the log with malformed requests.
    assert " INFO aiohttp.server: refused a request it could not parse from 127.0.0.1" in line
    assert not any(line.startswith(CONTINUATION) for line in err.splitlines())
