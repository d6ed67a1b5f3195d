"""The request metrics' tally and their export: counts, latency buckets as Prometheus
expects them (cumulative, `le`), sums, and the exposition text a scrape reads."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mirror.metrics import Metrics, RequestCollector, RequestTally, UnreadableTally
from tests.scrape import scraped


def samples(text: str) -> dict[str, list[Sample]]:
    """The exposition's samples by family name (as the parser names families)."""
    return {family.name: list(family.samples) for family in text_string_to_metric_families(text)}


def test_requests_are_counted_by_ecosystem_kind_and_status() -> None:
    tally = RequestTally()
    tally.observe("npm", "metadata", 200, 0.01, 100)
    tally.observe("npm", "metadata", 200, 0.02, 50)
    tally.observe("npm", "metadata", 404, 0.01, 0)
    tally.observe("pypi", "artifact", 200, 0.3, 7)
    assert tally.requests == {
        ("npm", "metadata", 200): 2,
        ("npm", "metadata", 404): 1,
        ("pypi", "artifact", 200): 1,
    }
    assert tally.bytes_served == {("npm", "metadata"): 150, ("pypi", "artifact"): 7}


def test_latency_buckets_are_cumulative_with_their_sum_and_count() -> None:
    tally = RequestTally()
    # 0.005 sits on a bound: it belongs to that bucket (`le`, less or equal).
    for seconds in (0.001, 0.005, 0.2, 0.2, 3.0, 120.0):
        tally.observe("npm", "artifact", 200, seconds, 0)
    buckets = dict(tally.latency[("npm", "artifact")].cumulative())
    assert buckets["0.005"] == 2
    assert buckets["0.01"] == 2
    assert buckets["0.1"] == 2
    assert buckets["0.25"] == 4
    assert buckets["2.5"] == 4
    assert buckets["5.0"] == 5
    assert buckets["60.0"] == 5
    assert buckets["+Inf"] == 6
    assert tally.latency[("npm", "artifact")].total == pytest.approx(123.406)


def test_the_scrape_shows_the_tally_under_the_names_and_labels_of_before() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.observe_request("npm", "metadata", 200, 0.02, 1000)
    metrics.observe_request("npm", "metadata", 200, 0.5, 24)
    metrics.observe_request("none", "other", 404, 0.001, 0)
    metrics.hit("npm", "metadata")
    metrics.hit("npm", "metadata")
    metrics.hit("maven", "artifact")
    text = metrics.render().decode()

    npm_metadata = {"ecosystem": "npm", "kind": "metadata"}
    assert scraped(text, "mirror_requests_total", status="200", **npm_metadata) == 2
    assert scraped(text, "mirror_requests_total", ecosystem="none", kind="other", status="404") == 1
    assert scraped(text, "mirror_cache_hits_total", ecosystem="npm", kind="metadata") == 2
    assert scraped(text, "mirror_cache_hits_total", ecosystem="maven", kind="artifact") == 1
    assert scraped(text, "mirror_bytes_served_total", ecosystem="npm", kind="metadata") == 1024
    # No body, no bytes: nothing served for that label set.
    assert scraped(text, "mirror_bytes_served_total", ecosystem="none", kind="other") is None
    latency = {"ecosystem": "npm", "kind": "metadata"}
    assert scraped(text, "mirror_request_seconds_bucket", le="0.01", **latency) == 0
    assert scraped(text, "mirror_request_seconds_bucket", le="0.025", **latency) == 1
    assert scraped(text, "mirror_request_seconds_bucket", le="0.5", **latency) == 2
    assert scraped(text, "mirror_request_seconds_bucket", le="+Inf", **latency) == 2
    assert scraped(text, "mirror_request_seconds_count", **latency) == 2
    assert scraped(text, "mirror_request_seconds_sum", **latency) == pytest.approx(0.52)
    assert "# HELP mirror_requests_total HTTP requests answered" in text
    assert "# TYPE mirror_request_seconds histogram" in text
    assert "# HELP mirror_cache_hits_total Requests answered from the local cache" in text
    # The rare metrics are still prometheus_client's, on the same registry.
    metrics.child(metrics.cache_misses, "npm", "metadata").inc()
    assert scraped(metrics.render().decode(), "mirror_cache_misses_total", ecosystem="npm",
                 kind="metadata") == 1  # fmt: skip


def test_every_bucket_of_before_is_exported_in_order() -> None:
    registry = CollectorRegistry()
    tally = RequestTally()
    tally.observe("pypi", "metadata", 200, 0.07, 0)
    registry.register(RequestCollector(tally.snapshot))
    families = samples(generate_latest(registry).decode())
    bounds = [
        sample.labels["le"]
        for sample in families["mirror_request_seconds"]
        if sample.name == "mirror_request_seconds_bucket"
    ]
    assert bounds == [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
        "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "+Inf",
    ]  # fmt: skip


def test_a_tally_reads_back_what_it_wrote_and_sums_with_another() -> None:
    first, second = RequestTally(), RequestTally()
    first.observe("npm", "artifact", 200, 0.02, 10)
    first.hit("npm", "artifact")
    second.observe("npm", "artifact", 200, 2.0, 5)
    second.observe("npm", "artifact", 304, 0.001, 0)
    summed = RequestTally.from_json(first.to_json())
    summed.add(RequestTally.from_json(second.to_json()))
    assert summed.requests == {("npm", "artifact", 200): 2, ("npm", "artifact", 304): 1}
    assert summed.bytes_served == {("npm", "artifact"): 15}
    assert summed.hits == {("npm", "artifact"): 1}
    latency = summed.latency[("npm", "artifact")]
    assert dict(latency.cumulative())["0.005"] == 1
    assert dict(latency.cumulative())["2.5"] == 3
    assert latency.total == pytest.approx(2.021)


@pytest.mark.parametrize(
    "broken",
    [
        b"",
        b'{"requests": [[',
        b"[]",
        b'{"requests": []}',
        b'{"requests": [["npm", "metadata", "200", 1]], "latency": [], "bytes_served": [],'
        b' "hits": []}',
        b'{"requests": [], "latency": [["npm", "metadata", [1, 2], 0.1]], "bytes_served": [],'
        b' "hits": []}',
        b"\xff\xfe",
        # Numbers no worker counts: negative, past a float, not finite.
        b'{"requests": [["npm", "metadata", 200, -999]], "latency": [], "bytes_served": [],'
        b' "hits": []}',
        b'{"requests": [["npm", "metadata", 200, 1' + b"0" * 400 + b']], "latency": [],'
        b' "bytes_served": [], "hits": []}',
        b'{"requests": [], "latency": [], "bytes_served": [["npm", "artifact", -2]], "hits": []}',
        b'{"requests": [], "latency": [], "bytes_served": [["npm", "artifact", 1e999]],'
        b' "hits": []}',
    ],
)
def test_anything_but_a_tally_is_refused_as_unreadable(broken: bytes) -> None:
    with pytest.raises(UnreadableTally):
        RequestTally.from_json(broken)
