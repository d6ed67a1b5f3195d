"""The real `pip` against `mirror serve` and a fake index whose newest release dropped the
PEP 740 provenance its predecessor had: pip resolves to the release before it, and a pin to
the held release fails saying it is held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import StartMirror
from tests.e2e.test_pypi_e2e import Env, installed
from tests.fakes.pypi import FakePypiIndex

pytestmark = pytest.mark.e2e


@pytest.fixture
async def env(aiohttp_server: AiohttpServer, start_mirror: StartMirror, tmp_path: Path) -> Env:
    now = datetime.now(UTC)
    index = FakePypiIndex()
    index.add_wheel("qm-signed", "1.0", uploaded=now - timedelta(days=90), provenance=True)
    index.add_sdist("qm-signed", "1.0", uploaded=now - timedelta(days=90), provenance=True)
    # Past the 3-day quarantine, inside the 14 days provenance-dropped extends it to.
    index.add_wheel("qm-signed", "1.1", uploaded=now - timedelta(days=5))
    await index.start(aiohttp_server)
    mirror = await start_mirror(
        {"MIRROR_PYPI_UPSTREAM": index.url, "MIRROR_QUARANTINE": "3d"},
        data_dir=tmp_path / "mirror-data",
    )
    return Env(mirror=mirror, index=index, root=tmp_path / "clients")


async def test_pip_resolves_to_the_release_before_the_one_that_dropped_provenance(
    env: Env,
) -> None:
    result = await env.pip_install("latest", "qm-signed")
    assert result.code == 0, result
    assert "VERSION = '1.0'" in installed(env.root / "latest", "qm_signed")
    assert env.index.upstream.count(env.index.file("qm_signed-1.1-py3-none-any.whl").path) == 0


async def test_pip_install_of_the_release_that_dropped_provenance_fails_saying_it_is_held(
    env: Env,
) -> None:
    pinned = await env.pip_install("pinned", "qm-signed==1.1")
    assert pinned.code != 0, pinned
    assert "from versions: 1.0" in pinned.out
    assert "No matching distribution found for qm-signed==1.1" in pinned.out
    # The file itself: pip prints the refusal's reason phrase, naming the hold.
    url = f"{env.mirror.url}/pypi/files/qm-signed/qm_signed-1.1-py3-none-any.whl"
    direct = await env.pip_install("direct", url)
    assert direct.code != 0, direct
    assert "403" in direct.out
    assert "qm_signed-1.1-py3-none-any.whl (qm-signed 1.1) is held until" in direct.out, direct
