"""Pytest fixtures around `FakeUpstream`, for any test module: register with
`pytest_plugins = ["tests.fakes.fixtures"]` in tests/conftest.py (or import the fixtures)."""

from __future__ import annotations

import pytest
from pytest_aiohttp import AiohttpServer

from tests.fakes.upstream import FakeUpstream


@pytest.fixture
async def fake_upstream(aiohttp_server: AiohttpServer) -> FakeUpstream:
    """A started FakeUpstream on 127.0.0.1; `fake_upstream.host` goes in the allowlist."""
    upstream = FakeUpstream()
    await upstream.start(aiohttp_server)
    return upstream


@pytest.fixture
async def other_upstream(aiohttp_server: AiohttpServer) -> FakeUpstream:
    """A second, independent FakeUpstream (another port): for allowlist and redirect tests."""
    upstream = FakeUpstream()
    await upstream.start(aiohttp_server)
    return upstream
