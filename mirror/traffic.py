"""Traffic figures of the dashboard's overview: what each ecosystem served, how much of it came
from the cache, and what it cost the upstream registries, in one-minute buckets.

Pure. `TrafficTally` gathers a worker's counts in plain integers on the serving path (no I/O,
no lock: one event loop per worker); `mirror.trafficrecorder` takes them every few seconds and
adds them to shared state as `TrafficCount`s (one per ecosystem per minute), where the counts
of every worker and replica are summed. `summarize` turns the stored counts back into the
windows and bars the page shows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from mirror.model import ECOSYSTEMS

MINUTE: Final = timedelta(minutes=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Shared state keeps the buckets this long (one row per ecosystem per minute): the day view
# and a margin, bounded whatever the traffic.
TRAFFIC_RETENTION: Final = timedelta(days=2)


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    """The figures a bucket sums. Every place that stores, reads or adds them (the tally,
    both state backends, `summarize`) goes by `FIGURES`, derived from these fields: a new
    figure is one field here."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    bytes_from_cache: int = 0
    bytes_from_upstream: int = 0
    upstream_errors: int = 0
    stale_serves: int = 0

    @property
    def hit_ratio(self) -> float | None:
        """Hits among cache lookups; None with no lookup."""
        lookups = self.hits + self.misses
        return None if lookups == 0 else self.hits / lookups

    def figures(self) -> tuple[int, ...]:
        """The figures in `FIGURES` order."""
        return tuple(getattr(self, name) for name in FIGURES)


# The names of the summed figures, in one order for every store and reader.
FIGURES: Final[tuple[str, ...]] = tuple(figure.name for figure in fields(Totals))
# Where `TrafficTally` keeps each figure in its per-ecosystem list.
REQUESTS: Final = FIGURES.index("requests")
HITS: Final = FIGURES.index("hits")
MISSES: Final = FIGURES.index("misses")
FROM_CACHE: Final = FIGURES.index("bytes_from_cache")
FROM_UPSTREAM: Final = FIGURES.index("bytes_from_upstream")
UPSTREAM_ERRORS: Final = FIGURES.index("upstream_errors")
STALE: Final = FIGURES.index("stale_serves")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficCount(Totals):
    """One ecosystem's traffic in the minute starting at `minute` (UTC, whole minute).
    `hits`/`misses` are cache lookups (metadata and artifacts): a fresh cached copy, or one
    that needed upstream. `bytes_from_cache`: body bytes sent from cached copies instead of an
    upstream fetch (the registry load saved; 0 for a 304, the range's bytes for a 206);
    `bytes_from_upstream`: body bytes fetched. `stale_serves`: metadata served from an old
    copy because upstream failed; `last_error`: the kind of the latest upstream failure in
    the minute ("" for none)."""

    ecosystem: str
    minute: datetime
    last_error: str = ""

    @property
    def key(self) -> tuple[str, datetime]:
        return self.ecosystem, self.minute

    def merged(self, other: TrafficCount) -> TrafficCount:
        """The sum of two counts of one bucket (the later error kind wins when it has one)."""
        return replace(
            self,
            **{name: getattr(self, name) + getattr(other, name) for name in FIGURES},
            last_error=other.last_error or self.last_error,
        )


def minute_of(at: datetime) -> datetime:
    """The start of the minute `at` falls in, in UTC."""
    return at.astimezone(UTC).replace(second=0, microsecond=0)


class TrafficTally:
    """One worker's counts since they were last taken, per ecosystem. Every method is one
    or two integer additions: it runs on the serving path."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self._last_error: dict[str, str] = {}

    def _row(self, ecosystem: str) -> list[int]:
        row = self._counts.get(ecosystem)
        if row is None:
            row = self._counts[ecosystem] = [0] * len(FIGURES)
        return row

    def request(self, ecosystem: str) -> None:
        self._row(ecosystem)[REQUESTS] += 1

    def hit(self, ecosystem: str, size: int) -> None:
        row = self._row(ecosystem)
        row[HITS] += 1
        row[FROM_CACHE] += size

    def miss(self, ecosystem: str) -> None:
        self._row(ecosystem)[MISSES] += 1

    def fetched(self, ecosystem: str, size: int) -> None:
        self._row(ecosystem)[FROM_UPSTREAM] += size

    def upstream_error(self, ecosystem: str, kind: str) -> None:
        self._row(ecosystem)[UPSTREAM_ERRORS] += 1
        self._last_error[ecosystem] = kind

    def stale(self, ecosystem: str) -> None:
        self._row(ecosystem)[STALE] += 1

    def take(self, minute: datetime) -> list[TrafficCount]:
        """Everything counted since the last take, as counts of `minute`, and start again.
        Only the mirror's ecosystems (an advisory feed's fetches are no registry traffic)."""
        counts, self._counts = self._counts, {}
        errors, self._last_error = self._last_error, {}
        return [
            TrafficCount(
                ecosystem=ecosystem,
                minute=minute,
                last_error=errors.get(ecosystem, ""),
                **dict(zip(FIGURES, row, strict=True)),
            )
            for ecosystem, row in counts.items()
            if ecosystem in ECOSYSTEMS and any(row)
        ]


def summed(counts: Iterable[TrafficCount]) -> list[TrafficCount]:
    """`counts` with one count per (ecosystem, minute), oldest first."""
    by_key: dict[tuple[str, datetime], TrafficCount] = {}
    for count in counts:
        known = by_key.get(count.key)
        by_key[count.key] = count if known is None else known.merged(count)
    return sorted(by_key.values(), key=lambda count: (count.minute, count.ecosystem))


# The page: windows, totals and bars ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """A span the page shows, cut into `buckets` bars."""

    name: str
    span: timedelta
    buckets: int

    @property
    def bucket(self) -> timedelta:
        return self.span / self.buckets


HOUR: Final = Window("last hour", timedelta(hours=1), 12)  # five-minute bars
DAY: Final = Window("last day", timedelta(days=1), 24)  # hourly bars
WINDOWS: Final = (HOUR, DAY)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One bar of a chart, in the SVG's user units (y grows downwards)."""

    x: float
    y: float
    width: float
    height: float
    value: int
    start: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowSummary:
    """One ecosystem over one window: totals and per-bucket requests and bytes."""

    ecosystem: str
    window: Window
    totals: Totals
    requests: list[int] = field(default_factory=list)
    bytes_from_cache: list[int] = field(default_factory=list)
    bytes_from_upstream: list[int] = field(default_factory=list)
    starts: list[datetime] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class LastError:
    at: datetime
    kind: str


def summarize(
    counts: Sequence[TrafficCount], ecosystem: str, window: Window, now: datetime
) -> WindowSummary:
    """`ecosystem`'s counts within `window` up to `now`, in buckets on whole multiples of
    the bucket length (five-minute bars start at :00, :05…; hourly bars on the hour): the
    last bucket is the one `now` falls in."""
    bucket = window.bucket
    current = minute_of(now)
    end = current - (current - _EPOCH) % bucket + bucket
    start = end - window.span
    requests = [0] * window.buckets
    from_cache = [0] * window.buckets
    from_upstream = [0] * window.buckets
    total = [0] * len(FIGURES)
    for count in counts:
        if count.ecosystem != ecosystem or not start <= count.minute < end:
            continue
        index = min(int((count.minute - start) / bucket), window.buckets - 1)
        requests[index] += count.requests
        from_cache[index] += count.bytes_from_cache
        from_upstream[index] += count.bytes_from_upstream
        for position, value in enumerate(count.figures()):
            total[position] += value
    return WindowSummary(
        ecosystem=ecosystem,
        window=window,
        totals=Totals(**dict(zip(FIGURES, total, strict=True))),
        requests=requests,
        bytes_from_cache=from_cache,
        bytes_from_upstream=from_upstream,
        starts=[start + bucket * index for index in range(window.buckets)],
    )


def last_error(counts: Iterable[TrafficCount], ecosystem: str) -> LastError | None:
    """The latest minute with an upstream failure of `ecosystem`, and its kind."""
    latest: TrafficCount | None = None
    for count in counts:
        is_later = latest is None or count.minute >= latest.minute
        if count.ecosystem == ecosystem and count.upstream_errors and is_later:
            latest = count
    if latest is None:
        return None
    return LastError(at=latest.minute, kind=latest.last_error or "unknown")


def bars(
    values: Sequence[int],
    starts: Sequence[datetime],
    *,
    width: float,
    height: float,
    peak: int | None = None,
) -> list[Bar]:
    """Bars for `values` side by side across `width`, standing on the bottom of `height`,
    scaled to `peak` (the largest value if None; two series on one scale share it); a
    one-unit gap between bars. A value above zero is at least one unit tall."""
    if not values:
        return []
    slot = width / len(values)
    peak = max(values) if peak is None else peak
    drawn: list[Bar] = []
    for index, value in enumerate(values):
        tall = 0.0 if peak <= 0 else min(height, height * value / peak)
        if value and tall < 1:
            tall = 1.0  # a bucket with any traffic stays visible
        drawn.append(
            Bar(
                x=round(index * slot, 2),
                y=round(height - tall, 2),
                width=round(max(slot - 1, 1), 2),
                height=round(tall, 2),
                value=value,
                start=starts[index],
            )
        )
    return drawn


def size_text(size: int) -> str:
    """Bytes as people read them: `0 B`, `512 B`, `1.5 KiB`, `3.2 GiB`."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def ratio_text(ratio: float | None) -> str:
    """`50 %`, or `-` with nothing to divide."""
    return "-" if ratio is None else f"{ratio * 100:.0f} %"
