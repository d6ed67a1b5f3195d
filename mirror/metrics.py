"""Every Prometheus metric, defined once, on the app's own `CollectorRegistry` (never the
global default registry: two apps in one test process would collide). Labels are bounded:
never package names; never an upstream host or URL (settings, possibly internal, and
`/metrics` is open): upstream metrics are labelled by ecosystem.

The per-request metrics (requests, latency, bytes served, cache hits) are counted in plain
integers (`RequestTally`), not prometheus_client metrics: under `mirror serve` every increment
of those writes a memory-mapped file, a measurable share of a cached request. The tally is
exported at scrape time by `RequestCollector`; with several worker processes each worker
writes its tally to `tally_<worker>.json` in the multiprocess directory every second while it
changes (and at close), and a scrape sums every worker's file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from mirror.files import atomic_write
from mirror.traffic import TrafficTally

log = logging.getLogger("mirror.metrics")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# The `le` labels of the latency buckets, spelled as prometheus_client spells them.
# (prometheus-client leaves floatToGoString unannotated.)
_BUCKET_LABELS: Final = (
    *(floatToGoString(bound) for bound in _LATENCY_BUCKETS),  # type: ignore[no-untyped-call]
    "+Inf",
)
# How often a worker writes its tally for the other workers' scrapes (while it changes).
TALLY_FLUSH_SECONDS: Final = 1.0
_TALLY_PREFIX: Final = "tally_"


class UnreadableTally(ValueError):
    """A tally file that is not `RequestTally.to_json`'s output."""


class LatencyTally:
    """One label set's latency histogram: the observations per bucket (not cumulative; the
    last is +Inf) and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self, counts: list[int] | None = None, total: float = 0.0) -> None:
        self.counts = counts if counts is not None else [0] * len(_BUCKET_LABELS)
        self.total = total

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (`le`).
        self.counts[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def copy(self) -> LatencyTally:
        return LatencyTally(list(self.counts), self.total)

    def add(self, other: LatencyTally) -> None:
        for index, count in enumerate(other.counts):
            self.counts[index] += count
        self.total += other.total

    def cumulative(self) -> list[tuple[str, float]]:
        """The buckets as Prometheus expects them: each counts every observation up to its
        bound; +Inf is the count."""
        buckets: list[tuple[str, float]] = []
        running = 0
        for label, count in zip(_BUCKET_LABELS, self.counts, strict=True):
            running += count
            buckets.append((label, running))
        return buckets


class RequestTally:
    """A worker's request figures in plain dicts of numbers: no lock, no I/O on the serving
    path (one event loop per worker). `snapshot` may run on another thread (the scrape): it
    copies each dict in one C-level call, which the GIL keeps whole."""

    __slots__ = ("bytes_served", "changed", "hits", "latency", "requests")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], LatencyTally] = {}
        self.bytes_served: dict[tuple[str, str], int] = {}
        self.hits: dict[tuple[str, str], int] = {}
        # Set on every count, cleared by the writer: a worker at rest writes nothing.
        self.changed = False

    def observe(self, ecosystem: str, kind: str, status: int, seconds: float, size: int) -> None:
        key = (ecosystem, kind, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        pair = (ecosystem, kind)
        latency = self.latency.get(pair)
        if latency is None:
            latency = self.latency[pair] = LatencyTally()
        latency.observe(seconds)
        if size:
            self.bytes_served[pair] = self.bytes_served.get(pair, 0) + size
        self.changed = True

    def hit(self, ecosystem: str, kind: str) -> None:
        pair = (ecosystem, kind)
        self.hits[pair] = self.hits.get(pair, 0) + 1
        self.changed = True

    def snapshot(self) -> RequestTally:
        copy = RequestTally()
        copy.requests = self.requests.copy()
        copy.latency = {pair: latency.copy() for pair, latency in self.latency.copy().items()}
        copy.bytes_served = self.bytes_served.copy()
        copy.hits = self.hits.copy()
        return copy

    def add(self, other: RequestTally) -> None:
        """Add `other`'s figures to these (another worker's, for the scrape)."""
        for key, count in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + count
        for pair, latency in other.latency.items():
            mine = self.latency.get(pair)
            if mine is None:
                self.latency[pair] = latency.copy()
            else:
                mine.add(latency)
        for pair, size in other.bytes_served.items():
            self.bytes_served[pair] = self.bytes_served.get(pair, 0) + size
        for pair, count in other.hits.items():
            self.hits[pair] = self.hits.get(pair, 0) + count

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "requests": [[*key, count] for key, count in self.requests.items()],
                "latency": [
                    [*pair, latency.counts, latency.total] for pair, latency in self.latency.items()
                ],
                "bytes_served": [[*pair, size] for pair, size in self.bytes_served.items()],
                "hits": [[*pair, count] for pair, count in self.hits.items()],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RequestTally:
        """Read `to_json`'s output; UnreadableTally for anything else."""
        try:
            document = json.loads(data)
            tally = cls()
            for ecosystem, kind, status, count in document["requests"]:
                tally.requests[(_text(ecosystem), _text(kind), _whole(status))] = _whole(count)
            for ecosystem, kind, counts, total in document["latency"]:
                if not isinstance(counts, list) or len(counts) != len(_BUCKET_LABELS):
                    raise ValueError("latency buckets differ from this version's")
                tally.latency[(_text(ecosystem), _text(kind))] = LatencyTally(
                    [_whole(count) for count in counts], _number(total)
                )
            for ecosystem, kind, size in document["bytes_served"]:
                tally.bytes_served[(_text(ecosystem), _text(kind))] = _whole(size)
            for ecosystem, kind, count in document["hits"]:
                tally.hits[(_text(ecosystem), _text(kind))] = _whole(count)
        except (ValueError, KeyError, TypeError) as exc:  # not JSON, or of another shape
            raise UnreadableTally(f"not a tally: {exc}") from exc
        return tally


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not a label value: {value!r}")
    return value


def _whole(value: object) -> int:
    # A count a worker could have reached: never negative (counters would seem to reset),
    # never past what a scrape can print as a float.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError(f"not a count: {value!r}")
    return value


def _number(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"not a sum of seconds or bytes: {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"not a sum of seconds or bytes: {value!r}")
    return number


class RequestCollector(Collector):
    """The request metrics, built at scrape time from the tally `read` returns (this
    worker's live figures, or every worker's summed). Names, help texts and labels are those
    the prometheus_client metrics had."""

    def __init__(self, read: Callable[[], RequestTally]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        # The names, for the registry's duplicate check, without reading any figure.
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        tally = self._read()
        requests, latency, hits, served = self._families()
        for (ecosystem, kind, status), count in sorted(tally.requests.items()):
            requests.add_metric([ecosystem, kind, str(status)], count)
        for (ecosystem, kind), stats in sorted(tally.latency.items()):
            latency.add_metric([ecosystem, kind], stats.cumulative(), stats.total)
        for (ecosystem, kind), count in sorted(tally.hits.items()):
            hits.add_metric([ecosystem, kind], count)
        for (ecosystem, kind), size in sorted(tally.bytes_served.items()):
            served.add_metric([ecosystem, kind], size)
        return [requests, latency, hits, served]

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily, HistogramMetricFamily, CounterMetricFamily, CounterMetricFamily
    ]:
        return (
            CounterMetricFamily(
                "mirror_requests_total", "HTTP requests answered",
                labels=["ecosystem", "kind", "status"],
            ),
            HistogramMetricFamily(
                "mirror_request_seconds", "Time to answer a request (headers sent)",
                labels=["ecosystem", "kind"],
            ),
            CounterMetricFamily(
                "mirror_cache_hits_total", "Requests answered from the local cache",
                labels=["ecosystem", "kind"],
            ),
            CounterMetricFamily(
                "mirror_bytes_served_total", "Body bytes sent to clients",
                labels=["ecosystem", "kind"],
            ),
        )  # fmt: skip


# A worker's tally is a few KiB (label sets are bounded); a file far larger is not one.
MAX_TALLY_BYTES = 1024 * 1024


def read_tallies(directory: Path) -> RequestTally:
    """Every worker's tally file in `directory`, summed (a worker that exited still counts,
    as prometheus_client's multiprocess counters do). A file that cannot be read is left
    out with a log line: a scrape never fails over one."""
    summed = RequestTally()
    for path in sorted(directory.glob(f"{_TALLY_PREFIX}*.json")):
        try:
            if path.stat().st_size > MAX_TALLY_BYTES:
                raise UnreadableTally(f"larger than {MAX_TALLY_BYTES} bytes")
            summed.add(RequestTally.from_json(path.read_bytes()))
        except FileNotFoundError:
            continue  # removed since the listing (the server stopping)
        except (OSError, UnreadableTally) as exc:
            log.warning("metrics: skipping the request tally %s: %s", path.name, exc)
    return summed


class Metrics:
    """The mirror's metrics. `kind` labels: metadata, artifact, admin, health, other."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        multiprocess_dir: Path | None = None,
        worker: int | None = None,
    ) -> None:
        """`worker` names this worker's tally file (default: the process id; tests stand
        for several workers in one process with it)."""
        self.multiprocess_dir = multiprocess_dir
        # The dashboard's traffic figures of this worker, until `TrafficRecorder` takes them.
        self.traffic = TrafficTally()
        # The request metrics of this worker (see the module's docstring).
        self.tally = RequestTally()
        worker_id = os.getpid() if worker is None else worker
        self._tally_file = (
            None
            if multiprocess_dir is None
            else multiprocess_dir / f"{_TALLY_PREFIX}{worker_id}.json"
        )
        # One writer of the tally file at a time (the flusher, a scrape's thread), so the
        # newest snapshot is the one that lands.
        self._tally_lock = threading.Lock()
        self._tally_unwritable = False  # logged once until a write succeeds again
        self._flusher: asyncio.Task[None] | None = None
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        # This worker's live figures; with several workers `render` sums the files instead.
        r.register(RequestCollector(self.tally.snapshot))
        self.cache_misses = Counter(
            "mirror_cache_misses_total", "Requests that needed upstream",
            ["ecosystem", "kind"], registry=r,
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
        """Count one answered request: its status, latency and body bytes."""
        self.tally.observe(ecosystem, kind, status, seconds, size)

    def hit(self, ecosystem: str, kind: str) -> None:
        """Count one request answered from the local cache."""
        self.tally.hit(ecosystem, kind)

    def start(self) -> None:
        """With several workers, write this worker's tally every second while it changes
        (nothing to do for a single process: the scrape reads the live figures)."""
        if self._tally_file is not None and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_tally(), name="metrics-tally")

    async def close(self) -> None:
        """Stop the writer and write the last figures (a stopped worker's still count)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self._tally_file is not None:
            await asyncio.to_thread(self._write_tally)

    async def _flush_tally(self) -> None:
        while True:
            await asyncio.sleep(TALLY_FLUSH_SECONDS)
            if self.tally.changed:
                await asyncio.to_thread(self._write_tally)

    def _write_tally(self) -> None:
        """Write this worker's tally file (atomically: a scrape reads the old or the new);
        a failure is logged (once until a write succeeds), the next flush tries again."""
        if self._tally_file is None:
            return
        with self._tally_lock:
            # Cleared before the snapshot: a count during the write marks it changed again.
            self.tally.changed = False
            data = self.tally.snapshot().to_json()
            try:
                atomic_write(self._tally_file, data)
            except OSError as exc:
                self.tally.changed = True
                if not self._tally_unwritable:
                    log.warning("metrics: could not write the request tally: %s", exc)
                self._tally_unwritable = True
            else:
                self._tally_unwritable = False

    def render(self) -> bytes:
        """The exposition text. With several worker processes, aggregate every worker's
        files (PROMETHEUS_MULTIPROC_DIR, set by `mirror serve` before workers start): the
        prometheus_client `*.db` files and the request tallies, this worker's written first
        (the other workers' are at most a second old)."""
        directory = self.multiprocess_dir
        if directory is not None and directory.is_dir():
            self._write_tally()
            aggregate = CollectorRegistry()
            # prometheus-client leaves this constructor unannotated.
            prometheus_multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
                aggregate, path=str(directory)
            )
            aggregate.register(RequestCollector(lambda: read_tallies(directory)))
            return generate_latest(aggregate)
        return generate_latest(self.registry)
