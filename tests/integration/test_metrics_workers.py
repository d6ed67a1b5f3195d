"""The request metrics with several worker processes (`mirror serve`): each worker writes its
tally to the multiprocess directory, a scrape by any worker sums every worker's, a worker
that stopped still counts, and a broken file is skipped, never a failed scrape. Workers are
stood for by `Metrics` objects with their own worker ids over one directory."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from mirror.app import create_app
from mirror.config import load_config
from mirror.metrics import TALLY_FLUSH_SECONDS, Metrics
from tests.conftest import mirror_settings, wait_until
from tests.scrape import scraped


def worker(directory: Path, number: int) -> Metrics:
    return Metrics(CollectorRegistry(), multiprocess_dir=directory, worker=number)


async def test_a_scrape_sums_every_workers_tally_a_stopped_one_included(tmp_path: Path) -> None:
    stopped, first, second = (worker(tmp_path, number) for number in (1, 2, 3))
    stopped.observe_request("npm", "artifact", 200, 0.02, 300)
    stopped.hit("npm", "artifact")
    await stopped.close()  # its last figures written as it stops
    first.observe_request("npm", "artifact", 200, 0.3, 200)
    first.observe_request("npm", "artifact", 404, 0.001, 0)
    first.hit("npm", "artifact")
    second.observe_request("npm", "artifact", 200, 4.0, 100)
    await second.close()
    # `first` scrapes: its own figures are written first, then every file is read.
    text = first.render().decode()
    answered = {"ecosystem": "npm", "kind": "artifact"}
    assert scraped(text, "mirror_requests_total", status="200", **answered) == 3
    assert scraped(text, "mirror_requests_total", status="404", **answered) == 1
    assert scraped(text, "mirror_cache_hits_total", ecosystem="npm", kind="artifact") == 2
    assert scraped(text, "mirror_bytes_served_total", ecosystem="npm", kind="artifact") == 600
    latency = {"ecosystem": "npm", "kind": "artifact"}
    assert scraped(text, "mirror_request_seconds_bucket", le="0.025", **latency) == 2
    assert scraped(text, "mirror_request_seconds_bucket", le="0.5", **latency) == 3
    assert scraped(text, "mirror_request_seconds_bucket", le="+Inf", **latency) == 4
    assert scraped(text, "mirror_request_seconds_count", **latency) == 4
    assert scraped(text, "mirror_request_seconds_sum", **latency) == pytest.approx(4.321)
    # Any worker's scrape says the same.
    assert second.render().decode() == text


async def test_a_broken_tally_file_is_skipped_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "tally_77.json").write_bytes(b'{"requests": [["npm", "meta')
    scraper = worker(tmp_path, 1)
    scraper.observe_request("pypi", "metadata", 200, 0.01, 10)
    with caplog.at_level(logging.WARNING, logger="mirror.metrics"):
        text = scraper.render().decode()
    labels = {"ecosystem": "pypi", "kind": "metadata", "status": "200"}
    assert scraped(text, "mirror_requests_total", **labels) == 1
    assert "tally_77.json" in caplog.text


async def test_a_worker_writes_its_tally_every_second_while_it_changes(tmp_path: Path) -> None:
    metrics = worker(tmp_path, 5)
    mine = tmp_path / "tally_5.json"
    metrics.start()
    try:
        metrics.observe_request("maven", "metadata", 200, 0.01, 42)
        # Written by the flusher, with no scrape on this worker.
        assert await wait_until(mine.exists, seconds=3 * TALLY_FLUSH_SECONDS)
        other = worker(tmp_path, 6)
        text = other.render().decode()
        assert scraped(text, "mirror_bytes_served_total", ecosystem="maven", kind="metadata") == 42
        metrics.observe_request("maven", "metadata", 200, 0.01, 8)

        def shows_fifty() -> bool:
            served = scraped(
                other.render().decode(),
                "mirror_bytes_served_total", ecosystem="maven", kind="metadata",
            )  # fmt: skip
            return served == 50

        assert await wait_until(shows_fifty, seconds=3 * TALLY_FLUSH_SECONDS)
    finally:
        await metrics.close()


async def test_the_app_writes_its_tally_and_its_scrape_counts_the_other_workers(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    gone = worker(metrics_dir, 1)  # a worker that served earlier and exited
    for _ in range(4):
        gone.observe_request("none", "other", 200, 0.001, 15)
    await gone.close()
    config = load_config(None, mirror_settings(tmp_path / "data"))
    client = await aiohttp_client(create_app(config, metrics_dir=metrics_dir))
    for _ in range(3):
        assert (await client.get("/healthz")).status == 200
    text = await (await client.get("/metrics")).text()
    health = {"ecosystem": "none", "kind": "other", "status": "200"}
    assert scraped(text, "mirror_requests_total", **health) == 7
    await client.close()
    # Stopping wrote the last figures (the scrape itself was counted after it answered).
    after = worker(metrics_dir, 2).render().decode()
    assert scraped(after, "mirror_requests_total", **health) == 8
