"""Every Prometheus metric, defined once, on the app's own `CollectorRegistry` (never the
global default registry: two apps in one test process would collide). Labels are bounded:
never package names; never an upstream host or URL (settings, possibly internal, and
`/metrics` is open): upstream metrics are labelled by ecosystem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

from mirror.traffic import TrafficTally

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The mirror's metrics. `kind` labels: metadata, artifact, admin, health, other."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess_dir: Path | None = None
    ) -> None:
        self.multiprocess_dir = multiprocess_dir
        # The dashboard's traffic figures of this worker, until `TrafficRecorder` takes them.
        self.traffic = TrafficTally()
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mirror_requests_total", "HTTP requests answered",
            ["ecosystem", "kind", "status"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "mirror_request_seconds", "Time to answer a request (headers sent)",
            ["ecosystem", "kind"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.cache_hits = Counter(
            "mirror_cache_hits_total", "Requests answered from the local cache",
            ["ecosystem", "kind"], registry=r,
        )  # fmt: skip
        self.cache_misses = Counter(
            "mirror_cache_misses_total", "Requests that needed upstream",
            ["ecosystem", "kind"], registry=r,
        )  # fmt: skip
        self.bytes_served = Counter(
            "mirror_bytes_served_total", "Body bytes sent to clients", ["ecosystem", "kind"],
            registry=r,
        )  # fmt: skip
        self.bytes_fetched = Counter(
            "mirror_upstream_bytes_total", "Body bytes fetched from upstreams", ["ecosystem"],
            registry=r,
        )  # fmt: skip
        self.upstream_requests = Counter(
            "mirror_upstream_requests_total", "Requests sent upstream", ["ecosystem", "outcome"],
            registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "mirror_upstream_errors_total",
            "Upstream fetches that failed after their retries, by kind: timeout, connect, "
            "connection-lost, network, truncated, http-429, http-5xx (http-4xx and so on for "
            "other statuses), redirect, redirect-refused (a redirect off the upstream's hosts), "
            "bad-document",
            ["ecosystem", "kind"], registry=r,
        )  # fmt: skip
        self.upstream_seconds = Histogram(
            "mirror_upstream_seconds", "Upstream response time (headers received)",
            ["ecosystem"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.singleflight_joins = Counter(
            "mirror_singleflight_joins_total",
            "Requests that joined an upstream fetch already in flight", ["kind"], registry=r,
        )  # fmt: skip
        self.policy_refusals = Counter(
            "mirror_policy_refusals_total", "Artifact requests refused by policy",
            ["ecosystem", "reason"], registry=r,
        )  # fmt: skip
        self.risk_refusals = Counter(
            "mirror_risk_refusals_total",
            "Requests refused because a risk signal's rule holds the version",
            ["ecosystem", "signal", "action"], registry=r,
        )  # fmt: skip
        self.takedowns = Counter(
            "mirror_takedowns_total",
            "Versions or files an upstream stopped offering (removed or yanked), once each",
            ["ecosystem", "kind"], registry=r,
        )  # fmt: skip
        self.takedown_webhook_failures = Counter(
            "mirror_takedown_webhook_failures_total",
            "Takedown events the webhook did not accept (after its retries)", registry=r,
        )  # fmt: skip
        self.integrity_failures = Counter(
            "mirror_integrity_failures_total",
            "Upstream bodies refused: digest mismatch, truncation, changed digest",
            ["ecosystem", "cause"], registry=r,
        )  # fmt: skip
        self.stale_serves = Counter(
            "mirror_stale_serves_total", "Metadata served stale", ["cause"], registry=r
        )
        self.blob_bytes = Gauge(
            "mirror_blob_store_bytes", "Bytes in the artifact store", registry=r,
            multiprocess_mode="max",
        )  # fmt: skip
        self.uncached_serves = Counter(
            "mirror_uncached_serves_total",
            "Artifacts relayed (verified) without caching: no room left to store them",
            ["ecosystem"], registry=r,
        )  # fmt: skip
        self.evictions = Counter(
            "mirror_blob_evictions_total", "Artifacts evicted by the size cap", registry=r
        )
        self.state_errors = Counter(
            "mirror_state_errors_total", "Shared-state calls that failed", ["backend"], registry=r
        )
        self.state_deferred_writes = Counter(
            "mirror_state_deferred_writes_total",
            "Shared-state writes of the serving path done in the background (queued), written "
            "(landed) or given up (dropped: backlog full or refused)",
            ["backend", "outcome"], registry=r,
        )  # fmt: skip

        self.feed_syncs = Counter(
            "mirror_feed_syncs_total",
            "Advisory feed syncs (`feeds.sources`): synced, or failed (nothing changed)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.feed_changes = Counter(
            "mirror_feed_changes_total", "Blocks a feed sync created, lifted or removed",
            ["action"], registry=r,
        )  # fmt: skip
        self.feed_last_success = Gauge(
            "mirror_feed_last_success_timestamp_seconds",
            "When the advisory feeds were last synced (Unix time)", registry=r,
            multiprocess_mode="max",
        )  # fmt: skip
        self.feed_unsupported = Gauge(
            "mirror_feed_unsupported_entries",
            "Affected entries of an ecosystem the mirror does not serve, skipped by the last "
            "feed sync", registry=r, multiprocess_mode="mostrecent",
        )  # fmt: skip

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set (hot paths count often)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_request(
        self, ecosystem: str, kind: str, status: int, seconds: float, size: int
    ) -> None:
        """Count one answered request. The labelled children are looked up once per label
        set: `labels()` costs more than the increment on the hot path."""
        key = (ecosystem, kind, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(ecosystem, kind, str(status)),
                self.request_seconds.labels(ecosystem, kind),
                self.bytes_served.labels(ecosystem, kind),
            )
            self._request_children[key] = children
        requests, latency, served = children
        requests.inc()
        latency.observe(seconds)
        if size:
            served.inc(size)

    def render(self) -> bytes:
        """The exposition text. With several worker processes, aggregate every worker's
        files (PROMETHEUS_MULTIPROC_DIR, set by `mirror serve` before workers start)."""
        if self.multiprocess_dir is not None and self.multiprocess_dir.is_dir():
            aggregate = CollectorRegistry()
            # prometheus-client leaves this constructor unannotated.
            prometheus_multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
                aggregate, path=str(self.multiprocess_dir)
            )
            return generate_latest(aggregate)
        return generate_latest(self.registry)
