"""The services every handler uses, built once per worker, and the typed keys the app keeps
them under. The adapters (`mirror.ecosystems.*.routes`) and the admin API read them from here;
`mirror.app` (the composition root: `create_app`, middlewares, ops routes) builds the app
from them, and only the entry points import it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from mirror import lastknown, workerstatus
from mirror.artifacts.serve import ArtifactServer
from mirror.blobs.store import BlobStore
from mirror.budget import ByteBudget
from mirror.clock import Clock, SystemClock
from mirror.config import Config, split_credentials
from mirror.ecosystems.base import Ecosystem
from mirror.holdrecorder import HoldRecorder
from mirror.livepolicy import LivePolicy
from mirror.metacache import MetaCache, RenderedCache
from mirror.metrics import Metrics
from mirror.model import ECOSYSTEMS
from mirror.state import backend_name, create_state
from mirror.state.base import StateStore
from mirror.takedownwatch import TakedownWatch
from mirror.trafficrecorder import TrafficRecorder
from mirror.upstream import Upstream, UpstreamScope, redact
from mirror.webhook import Webhook


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """Everything a handler may use, built once per app (per worker process)."""

    config: Config
    clock: Clock
    metrics: Metrics
    state: StateStore
    upstream: Upstream
    metacache: MetaCache
    rendered: RenderedCache
    blobs: BlobStore
    artifacts: ArtifactServer
    policy: LivePolicy
    # The one byte budget (`cache.memory_budget`) every in-memory cache of this worker pays from.
    memory: ByteBudget
    # The dashboard's traffic figures, written to shared state every few seconds.
    traffic: TrafficRecorder

    # Requests held back by quarantine, batched to state (the dashboard's quarantine queue).
    holds: HoldRecorder
    # Upstream takedowns noticed as documents refresh: events, log, metric, webhook.
    takedowns: TakedownWatch


SERVICES = web.AppKey("services", Services)
ECOSYSTEM_ADAPTERS = web.AppKey("ecosystems", Mapping[str, Ecosystem])
# handlers set request[REQUEST_KIND] = "metadata" | "artifact" (a RequestKey: aiohttp warns on str)
REQUEST_KIND = web.RequestKey("mirror.kind", str)
# Set by `mirror serve` in each worker: the supervisor's restart back-off, for /readyz.
SUPERVISOR_STATUS = web.AppKey("supervisor-status", workerstatus.StatusFile)


# The upstream scope of the feed URL at index i of `feeds.sources` is FEED_SCOPE + str(i + 1):
# each URL is one more upstream host, with its own credentials (from the URL), fetched
# through the one upstream client.
FEED_SCOPE = "feed"


@dataclass(frozen=True, slots=True)
class FeedSource:
    """One entry of `feeds.sources`: a path (a directory, a zip or a JSON file) or a URL of a
    zip. `label` names it in logs, errors and the audit: a URL without its credentials, query
    or fragment. `auth` (the URL's user info as an Authorization value) never leaves the
    upstream scope."""

    label: str
    path: str | None = None
    url: str | None = None
    scope: str | None = None
    auth: str | None = field(default=None, repr=False)


def feed_sources(sources: Sequence[str]) -> list[FeedSource]:
    found: list[FeedSource] = []
    for index, source in enumerate(sources):
        if "://" not in source:
            found.append(FeedSource(label=source, path=source))
            continue
        bare, auth = split_credentials(source)
        scope = f"{FEED_SCOPE}{index + 1}"
        found.append(FeedSource(label=redact(bare), url=bare, scope=scope, auth=auth))
    return found


def upstream_scopes(config: Config) -> list[UpstreamScope]:
    """Each enabled ecosystem's upstream scope: its own upstream host and file hosts, and
    its credentials for the upstream's exact origin. One ecosystem's requests never go to
    another's hosts, nor carry another's credentials. Each advisory feed URL is a scope of
    its own (`feed_sources`)."""
    scopes: list[UpstreamScope] = []
    for name in ECOSYSTEMS:
        ecosystem = config.ecosystem(name)
        if ecosystem.upstream is None:
            continue
        scopes.append(
            UpstreamScope.of(
                name,
                ecosystem.upstream,
                file_hosts=ecosystem.file_hosts,
                auth=ecosystem.upstream_auth,
            )
        )
    # Each feed URL is one more upstream host: the same client, timeouts, retries and bounds.
    for source in feed_sources(config.feeds.sources):
        if source.url is not None and source.scope is not None:
            scopes.append(UpstreamScope.of(source.scope, source.url, auth=source.auth))
    return scopes


def build_services(
    config: Config, *, clock: Clock | None = None, metrics_dir: Path | None = None
) -> Services:
    """Construct (not open) every service. Constructors do no I/O. `metrics_dir` is the
    shared Prometheus directory when several worker processes serve one port."""
    clock = clock or SystemClock()
    metrics = Metrics(multiprocess_dir=metrics_dir)
    state = create_state(config, clock=clock)
    upstream = Upstream(
        config.upstream, scopes=upstream_scopes(config), metrics=metrics, clock=clock
    )
    memory = ByteBudget(config.cache.memory_budget)
    blobs = BlobStore(
        config.data_dir / "artifacts",
        max_bytes=config.cache.max_bytes,
        clock=clock,
        metrics=metrics,
        budget=memory,
        # One host's fetch locks: replicas on other hosts may share the cache, never these.
        claims_dir=config.state_directory / "claims",
    )
    artifacts = ArtifactServer(
        blobs=blobs,
        upstream=upstream,
        state=state,
        metrics=metrics,
        clock=clock,
        trusted_proxies=config.trusted_proxies,
        state_timeout=config.state.timeout,
        budget=memory,
    )
    live_policy = LivePolicy(
        state,
        config.quarantine,
        clock,
        risk=config.risk,
        last_known_path=lastknown.path_in(config.state_directory),
        # Replicas with data dirs of their own share a Redis; the embedded state is one file
        # beside the copy.
        shared_by_replicas=bool(config.state.redis_url),
    )
    takedowns = TakedownWatch(
        state,
        metrics,
        clock,
        webhook=takedown_webhook(config, metrics),
        flush_ledger=artifacts.ledger.flush,
        reload_policy=live_policy.reload,
    )
    metacache = MetaCache(
        upstream,
        directory=config.data_dir / "metadata",
        ttl=config.cache.metadata_ttl,
        stale_max=config.cache.stale_max,
        clock=clock,
        metrics=metrics,
        max_document_bytes=config.cache.max_document_bytes,
        refresh_interval=config.cache.refresh_interval,
        negative_ttl=config.cache.negative_ttl,
        budget=memory,
        watcher=takedowns,
    )
    # While the state is not trusted, the last-known copy's digest pins win.
    artifacts.shared.use_known_pins(live_policy)
    return Services(
        config=config,
        clock=clock,
        metrics=metrics,
        state=state,
        upstream=upstream,
        metacache=metacache,
        rendered=RenderedCache(budget=memory),
        blobs=blobs,
        artifacts=artifacts,
        policy=live_policy,
        memory=memory,
        traffic=TrafficRecorder(
            metrics.traffic,
            state,
            metrics,
            clock,
            backend=backend_name(state),
        ),
        holds=HoldRecorder(state, metrics, clock),
        takedowns=takedowns,
    )


def takedown_webhook(config: Config, metrics: Metrics) -> Webhook | None:
    """The `takedowns.webhook` setting's client, its failures counted (None: not set)."""
    if not config.takedowns.webhook:
        return None
    return Webhook(
        config.takedowns.webhook,
        timeout=config.takedowns.webhook_timeout,
        on_failure=lambda _problem: metrics.takedown_webhook_failures.inc(),
        what="takedown webhook",
    )
