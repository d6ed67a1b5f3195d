"""`/ui/`: the overview. Per ecosystem, for the last hour and the last day: requests, the cache
hit ratio, the bytes served from the cache against the bytes fetched upstream, with a small
chart of each (`mirror.traffic`, summed in shared state over every worker and replica);
upstream health (the last upstream failure, stale serves); and state health (reachable, the
last-known policy in force, durability). A state that does not answer still shows the page,
with a notice instead of the figures."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from aiohttp import web

from mirror.errors import StateUnavailable
from mirror.model import ECOSYSTEMS
from mirror.services import ECOSYSTEM_ADAPTERS
from mirror.traffic import (
    DAY,
    WINDOWS,
    Bar,
    LastError,
    TrafficCount,
    WindowSummary,
    bars,
    last_error,
    ratio_text,
    size_text,
    summarize,
)
from mirror.ui import guard
from mirror.ui.render import render, services

# A chart's size in SVG user units (also its CSS pixel size).
CHART_WIDTH: Final = 240
CHART_HEIGHT: Final = 40


def routes() -> list[web.RouteDef]:
    return [web.get("/", overview_page, allow_head=False)]


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowView:
    """One ecosystem over one window, as the page shows it."""

    summary: WindowSummary
    hit_ratio: str
    from_cache: str
    from_upstream: str
    request_bars: list[Bar]
    cache_bars: list[Bar]
    upstream_bars: list[Bar]
    bucket_minutes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EcosystemView:
    name: str
    enabled: bool
    windows: list[WindowView]
    last_error: LastError | None


def window_view(counts: list[TrafficCount], ecosystem: str, now: datetime) -> list[WindowView]:
    views: list[WindowView] = []
    for window in WINDOWS:
        summary = summarize(counts, ecosystem, window, now)
        # Both byte series on one scale: the bars compare cache against upstream.
        peak = max([*summary.bytes_from_cache, *summary.bytes_from_upstream, 0])
        half = CHART_HEIGHT / 2
        views.append(
            WindowView(
                summary=summary,
                hit_ratio=ratio_text(summary.totals.hit_ratio),
                from_cache=size_text(summary.totals.bytes_from_cache),
                from_upstream=size_text(summary.totals.bytes_from_upstream),
                request_bars=bars(
                    summary.requests, summary.starts, width=CHART_WIDTH, height=CHART_HEIGHT
                ),
                cache_bars=bars(
                    summary.bytes_from_cache,
                    summary.starts,
                    width=CHART_WIDTH,
                    height=half,
                    peak=peak,
                ),
                upstream_bars=bars(
                    summary.bytes_from_upstream,
                    summary.starts,
                    width=CHART_WIDTH,
                    height=half,
                    peak=peak,
                ),
                bucket_minutes=int(window.bucket.total_seconds() // 60),
            )
        )
    return views


async def overview_page(request: web.Request) -> web.StreamResponse:
    guard.reader(request)
    found = services(request)
    enabled = request.config_dict[ECOSYSTEM_ADAPTERS]
    now = found.clock.now()
    state_problem: str | None = None
    durability: str | None = None
    counts: list[TrafficCount] = []
    # Each state call waits at most the serving path's state timeout: a state that accepts
    # connections and never answers must not hold the page for the client's socket timeouts.
    wait = found.config.state.timeout.total_seconds()
    # This worker's counts so far join the shared figures first; not when the last write
    # failed (state down: they wait for the timer). Shielded: a write given up on by the page
    # goes on in the background, so no count it carries is lost.
    if not found.traffic.last_write_failed:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.shield(found.traffic.flush())
    try:
        async with asyncio.timeout(wait):
            counts = await found.state.traffic(now - DAY.span)
        async with asyncio.timeout(wait):
            durability = await found.state.durability_warning()
    except StateUnavailable as exc:
        state_problem = exc.message
    except TimeoutError:
        counts = []
        state_problem = f"the shared state did not answer within {wait:g} s"
    ecosystems = [
        EcosystemView(
            name=name,
            enabled=name in enabled,
            windows=window_view(counts, name, now),
            last_error=last_error(counts, name),
        )
        for name in ECOSYSTEMS
    ]
    return render(
        request,
        "overview.html",
        now=now,
        ecosystems=ecosystems,
        state_problem=state_problem,
        durability=durability,
        degraded=found.policy.degraded,
        backend=found.traffic.backend,
        unwritten=found.traffic.pending,
        size_text=size_text,
        chart_width=CHART_WIDTH,
        chart_height=CHART_HEIGHT,
    )
