"""Impact at scale: a download ledger of `--ledger-rows` rows (default 1,000,000) built in both
state backends (SQLite in a temp dir, a real `redis-server` on a free 127.0.0.1 port) through
`StateStore.record_downloads`, then the reads an impact report makes, timed through the API's
own page builder (`mirror.admin.impact.impact_page`), median and worst of `--ledger-runs`.

The shape: 2,000 npm packages `@bench/pkg-NNNN`; every 400th of them (5 in all) holds
`DOWNLOADS_KEPT` rows (100,000: 50 versions x 2,000 clients, the most a package keeps), the
rest share what remains (about 250 rows each: 5 versions x 50 clients). Clients are 10.x.y.z
addresses; a handful of read tokens and CI values; all rows last seen within the retention.

This is a scale check in absolute milliseconds (target: every read under a second), not a
ratio like the serving benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final, cast

from mirror.admin.impact import impact_page
from mirror.admin.parse import ImpactCursor, ImpactQuery, decode_cursor, encode_cursor
from mirror.errors import StateUnavailable
from mirror.model import DownloadEvent
from mirror.services import Services
from mirror.state.base import DOWNLOADS_KEPT, StateStore
from mirror.state.local import LocalState
from mirror.state.redis import RedisState
from tests.conftest import start_redis

PACKAGES: Final = 2000
BIG_EVERY: Final = 400  # every 400th package is a big one: 5 of 2,000
BIG_VERSIONS: Final = 50
SMALL_VERSIONS: Final = 5
BATCH: Final = 5000  # events per record_downloads call
PROGRESS_EVERY: Final = 100_000
DEEP_ROW: Final = 90_000  # the deep page starts about here in a big package
PAGE: Final = 100  # the API's default page
READ_BUDGET_SECONDS: Final = 30  # one read is repeated while its runs took less than this
WALK_BUDGET_SECONDS: Final = 60  # the whole walk, past which its time is extrapolated
WALK_PAGE: Final = 1000  # the API's largest page: what `mirror impact --format csv` reads
TOKENS: Final = ("", "", "ci-bot", "team-web", "team-data")
CIS: Final = ("", "", "github-actions", "gitlab", "ci")
AGENTS: Final = (
    "npm/10.8.2 node/v22.11.0 linux x64 workspaces/false",
    "npm/10.8.2 node/v22.11.0 linux x64 workspaces/false ci/github-actions",
    "pnpm/9.12.0 npm/? node/v20.18.0 linux x64",
    "yarn/1.22.22 npm/? node/v20.18.0 linux x64",
)


def package_name(index: int) -> str:
    return f"@bench/pkg-{index:04d}"


def _address(client: int) -> str:
    return f"10.{(client >> 16) & 255}.{(client >> 8) & 255}.{client & 255}"


def _rows_per_package(total: int) -> list[int]:
    """How many rows each package gets: the big ones up to DOWNLOADS_KEPT, the rest evenly."""
    big = [index for index in range(PACKAGES) if index % BIG_EVERY == 0]
    per_big = min(DOWNLOADS_KEPT, total // (2 * len(big)))
    rest = total - per_big * len(big)
    small = PACKAGES - len(big)
    counts = []
    for index in range(PACKAGES):
        if index % BIG_EVERY == 0:
            counts.append(per_big)
        else:
            position = index - index // BIG_EVERY - 1
            counts.append(rest // small + (1 if position < rest % small else 0))
    return counts


def ledger_events(total: int, now: datetime, seed: int = 13) -> Iterator[DownloadEvent]:
    """`total` distinct ledger rows, package by package, all last seen within 80 days."""
    rng = random.Random(seed)  # noqa: S311 (repeatable test data, not a secret)
    for index, rows in enumerate(_rows_per_package(total)):
        name = package_name(index)
        short = name.rpartition("/")[2]
        kinds = BIG_VERSIONS if index % BIG_EVERY == 0 else SMALL_VERSIONS
        for row in range(rows):
            version = f"1.{row % kinds}.0"
            client = row // kinds
            first = now - timedelta(seconds=rng.randrange(10, 80 * 86400))
            yield DownloadEvent(
                ecosystem="npm",
                package=name,
                version=version,
                filename=f"{short}-{version}.tgz",
                client=_address(client),
                at=first,
                last_at=first + timedelta(seconds=rng.randrange(0, 86400)),
                count=rng.randrange(1, 20),
                token=TOKENS[client % len(TOKENS)],
                user_agent=AGENTS[client % len(AGENTS)],
                ci=CIS[client % len(CIS)],
                command=("ci", "install")[client % 2],
                session=f"{client:016x}",
            )


async def build(store: StateStore, total: int, label: str) -> float:
    """Write `total` rows in batches of BATCH; print progress; the seconds it took."""
    started = time.monotonic()
    batch: list[DownloadEvent] = []
    written = 0
    for event in ledger_events(total, datetime.now(UTC)):
        batch.append(event)
        if len(batch) == BATCH:
            await store.record_downloads(batch)
            written += len(batch)
            batch = []
            if written % PROGRESS_EVERY == 0:
                elapsed = time.monotonic() - started
                print(
                    f"  {label}: {written:,} rows in {elapsed:.0f} s "
                    f"({written / elapsed:,.0f} rows/s)",
                    flush=True,
                )
    await store.record_downloads(batch)
    return time.monotonic() - started


Page = dict[str, Any]


async def _page(
    store: StateStore,
    package: str,
    spec: str = "*",
    *,
    limit: int = PAGE,
    cursor: str | None = None,
) -> Page:
    """One impact page as `GET /api/v1/impact` builds it (the state is all it reads)."""
    services = cast(Services, SimpleNamespace(state=store))
    query = ImpactQuery("npm", package, spec, None, "")
    position: ImpactCursor | None = None
    if cursor is not None:
        query, position = decode_cursor(cursor, query)
    return await impact_page(services, query, limit=limit, cursor=position)


async def _walk(store: StateStore, package: str) -> tuple[int, int]:
    """Every page of a package in pages of WALK_PAGE, as `mirror impact --format csv` reads
    them, for at most WALK_BUDGET_SECONDS: (rows read, rows the package has; equal when the
    walk finished)."""
    rows, cursor, deadline = 0, None, time.monotonic() + WALK_BUDGET_SECONDS
    while True:
        page = await _page(store, package, limit=WALK_PAGE, cursor=cursor)
        rows += len(page["downloads"])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows, rows
        if time.monotonic() > deadline:
            return rows, await _count(store, package)


async def _count(store: StateStore, package: str) -> int:
    """The package's rows, read from the state (not through impact pages: cheap)."""
    rows, after = 0, None
    while True:
        page = await store.downloads_page("npm", package, limit=WALK_PAGE, after=after)
        rows += len(page.events)
        if page.next_after is None:
            return rows
        after = page.next_after


async def _deep_cursor(store: StateStore, package: str, row: int) -> str:
    """The impact cursor of the page that starts after `row` rows of `package`, found
    through the state's own pages (walking impact pages there would cost far more)."""
    rows, after = 0, None
    while rows < row:
        page = await store.downloads_page("npm", package, limit=WALK_PAGE, after=after)
        rows += len(page.events)
        if page.next_after is None:
            break
        after = page.next_after
    return encode_cursor(
        ImpactQuery("npm", package, "*", None, ""), ImpactCursor(package=package, after=after)
    )


async def _walk_figure(store: StateStore, package: str) -> tuple[str, float, float, int]:
    """The whole walk once (it is a hundred pages), extrapolated when it ran out of time."""
    started = time.perf_counter()
    rows, total = await _walk(store, package)
    spent = (time.perf_counter() - started) * 1000
    name = f"every page of the big package ({total:,} rows, {WALK_PAGE}/page)"
    if rows < total:
        name += f", extrapolated from {rows:,} rows"
        spent = spent * total / max(rows, 1)
    return name, spent, spent, 1


async def _identities(store: Any, package: str) -> object:
    """The identity summary, if this branch's state has one (`download_identities`; `Any`:
    the protocol here may not name it yet); only the options it takes are passed."""
    method = store.download_identities
    accepted = inspect.signature(method).parameters
    options = {key: None for key in ("since", "versions") if key in accepted}
    return await method("npm", package, **options)


async def _times(runs: int, read: Callable[[], Awaitable[object]]) -> tuple[float, float, int]:
    """Median and worst milliseconds of `runs` calls, and how many ran: a slow read stops
    repeating after READ_BUDGET_SECONDS, so the measure stays bounded."""
    spent: list[float] = []
    while len(spent) < runs and sum(spent) < READ_BUDGET_SECONDS * 1000:
        started = time.perf_counter()
        await read()
        spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent), max(spent), len(spent)


async def measure(store: StateStore, runs: int) -> list[tuple[str, float, float, int]]:
    """(read, median ms, worst ms, runs) of each impact read."""
    big = package_name(0)
    deep = await _deep_cursor(store, big, DEEP_ROW)
    reads: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        (f"exact package, first page ({PAGE})", lambda: _page(store, big)),
        (f"exact package, deep page (row ~{DEEP_ROW:,})", lambda: _page(store, big, cursor=deep)),
        ("exact package, one version of 50 (1.7.0)", lambda: _page(store, big, "1.7.0")),
        ("exact package, range of versions (>=1.40.0)", lambda: _page(store, big, ">=1.40.0")),
        ("exact package, no version matches (9.9.9)", lambda: _page(store, big, "9.9.9")),
        (f"glob @bench/* over {PACKAGES:,} packages, first page", lambda: _page(store, "@bench/*")),
        (
            "glob @bench/*, no version matches (100 packages read)",
            lambda: _page(store, "@bench/*", "9.9.9"),
        ),
    ]
    if hasattr(store, "download_identities"):
        reads.append(("identity summary of the big package", lambda: _identities(store, big)))
    results = []
    for name, read in reads:
        median, worst, ran = await _times(runs, read)
        print(f"    {name}: {median:.1f} / {worst:.1f} ms ({ran} runs)", flush=True)
        results.append((name, median, worst, ran))
    if not hasattr(store, "download_identities"):
        results.append(("identity summary (download_identities)", float("nan"), float("nan"), 0))
    walk = await _walk_figure(store, big)
    print(f"    {walk[0]}: {walk[1]:.1f} ms", flush=True)
    results.append(walk)
    return results


@contextlib.asynccontextmanager
async def _backends(workdir: Path) -> AsyncIterator[list[tuple[str, StateStore]]]:
    process: subprocess.Popen[bytes] | None = None
    stores: list[tuple[str, StateStore]] = []
    try:
        stores.append(("sqlite", LocalState(workdir / "state.db")))
        process, url = start_redis(workdir)
        stores.append(("redis", RedisState(url, namespace="bench")))
        for _, store in stores:
            await store.open()
        yield stores
    finally:
        for _, store in stores:
            await store.close()
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


async def run_ledger(total: int, runs: int) -> list[str]:
    """Build the ledger in each backend, time the reads; the lines of a table."""
    lines = [
        f"impact at scale: {total:,} ledger rows, {PACKAGES:,} packages, "
        f"median / worst of {runs} runs"
    ]
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as temp:
        async with _backends(Path(temp)) as stores:
            figures: dict[str, list[tuple[str, float, float, int]]] = {}
            for label, store in stores:
                try:
                    seconds = await build(store, total, label)
                except StateUnavailable as exc:
                    # Reported, and the other backend still measured.
                    lines.append(f"{label}: building the ledger failed: {exc}")
                    continue
                lines.append(
                    f"{label}: {total:,} rows written in {seconds:.0f} s "
                    f"({total / seconds:,.0f} rows/s)"
                )
                figures[label] = await measure(store, runs)
    if not figures:
        return lines
    names = [row[0] for row in next(iter(figures.values()))]
    width = max(len(name) for name in names)
    lines.append(f"{'read':<{width}}  " + "  ".join(f"{label + ' ms':>22}" for label in figures))
    for row, name in enumerate(names):
        cells = []
        for results in figures.values():
            _, median, worst, ran = results[row]
            cell = "(absent)" if median != median else f"{median:8.1f} / {worst:6.1f}"
            cells.append(cell + (f" ({ran}x)" if 0 < ran < runs else ""))
        # The walk is many pages by design; every other read is one page and should be < 1 s.
        single = not name.startswith("every page")
        over = any(results[row][2] >= 1000 for results in figures.values())
        flag = "  OVER 1 s" if single and over else ""
        lines.append(f"{name:<{width}}  " + "  ".join(f"{cell:>22}" for cell in cells) + flag)
    return lines


def main_ledger(total: int, runs: int) -> list[str]:
    return asyncio.run(run_ledger(total, runs))
