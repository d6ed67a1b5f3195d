"""`mirror serve` as users run it: bad settings, worker processes, TLS, graceful stop."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import REPO, StartMirror, stop_mirror
from tests.scrape import scraped


def test_bad_setting_exits_non_zero_naming_the_key(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
    env.update({"MIRROR_QUARANTINE": "three days", "MIRROR_DATA_DIR": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-m", "mirror", "serve", "--config", str(REPO / "config/mirror.toml")],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "quarantine.default" in result.stderr
    assert "three days" in result.stderr


def test_a_data_dir_it_cannot_write_stops_the_start_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory", encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
    env.update({"MIRROR_DATA_DIR": str(tmp_path / "file" / "data"), "MIRROR_LISTEN": "127.0.0.1:0"})
    result = subprocess.run(
        [sys.executable, "-m", "mirror", "serve", "--config", str(REPO / "config/mirror.toml")],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"mirror: invalid setting: data_dir: {tmp_path / 'file' / 'data'} is not writable by "
        f"uid {os.getuid()} (Not a directory)"
    ]
    assert "listening" not in result.stdout + result.stderr


def test_config_command_prints_effective_settings_without_secrets(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
    env["MIRROR_ADMIN_TOKENS"] = "alice:s3cret-s3cret-s3cret"
    env["MIRROR_NPM_UPSTREAM"] = "https://ci:upstr3am-pass@npm.internal.example/"
    env["MIRROR_PYPI_UPSTREAM"] = "https://pypi.internal.example/simple/"
    env["MIRROR_PYPI_UPSTREAM_AUTH"] = "Bearer t0ken-t0ken"
    result = subprocess.run(
        [sys.executable, "-m", "mirror", "config", "--config", str(REPO / "config/mirror.toml")],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"alice"' in result.stdout
    assert "s3cret" not in result.stdout
    assert "upstr3am-pass" not in result.stdout
    assert "t0ken" not in result.stdout
    assert '"upstream": "https://npm.internal.example/"' in result.stdout
    assert result.stdout.count('"upstream_auth": "<set>"') == 2


@pytest.mark.e2e
async def test_two_workers_serve_and_stop_gracefully(start_mirror: StartMirror) -> None:
    mirror = await start_mirror(workers=2)
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.get(f"{mirror.url}/healthz") as response:
                assert response.status == 200
        async with session.get(f"{mirror.url}/metrics") as response:
            text = await response.text()
            assert response.status == 200
            # Both workers' counters are aggregated into one exposition.
            assert "mirror_requests_total" in text
        # Whichever worker answered them, the 20 are counted in any worker's scrape once the
        # workers' request tallies are written (every second while they change).
        counted: float | None = None
        for _ in range(20):
            async with session.get(f"{mirror.url}/metrics") as response:
                counted = scraped(await response.text(), "mirror_requests_total",
                                  ecosystem="none", kind="other", status="200")  # fmt: skip
            if counted is not None and counted >= 20:
                break
            await asyncio.sleep(0.25)
        assert counted is not None
        assert counted >= 20
        async with session.get(f"{mirror.url}/readyz") as response:
            assert response.status == 200
    assert await stop_mirror(mirror) == 0
    log = mirror.log()
    assert "2 worker(s)" in log
    # One JSON access-log line per request.
    assert log.count('"path":"/healthz"') == 20


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.mark.e2e
async def test_tls(start_mirror: StartMirror, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    mirror = await start_mirror(
        {"MIRROR_TLS_CERT": str(cert), "MIRROR_TLS_KEY": str(key)}, readiness_scheme="https"
    )
    context = ssl.create_default_context(cafile=str(cert))
    url = mirror.url.replace("http://", "https://")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz", ssl=context) as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{mirror.url}/healthz") as response:
                await response.read()
