"""One contract suite for every `StateStore` backend (local SQLite file, real redis-server),
plus the failure paths and backend-specific limits (retention, cross-process, lost messages)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from mirror.clock import FixedClock
from mirror.config import AdminConfig, Config, StateConfig
from mirror.errors import StateUnavailable
from mirror.state import (
    RULE_KINDS,
    AuditEntry,
    DownloadEvent,
    IdentityTotal,
    RuleKind,
    RuleRecord,
    StateStore,
    create_state,
)
from mirror.state import redis as redis_state
from mirror.state.base import InvalidPosition
from mirror.state.local import LocalState
from mirror.state.redis import RedisState, _encode_audit, _encode_rule, _micros
from tests.conftest import free_port
from tests.integration.conftest import FAST_POLL, OpenStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
NOW = T0 + timedelta(days=1)  # the stores' clock: retention counts from here


def make_rule(
    rule_id: str,
    *,
    kind: RuleKind = "block",
    created_at: datetime = T0,
    package: str = "left-pad",
    **extra: object,
) -> RuleRecord:
    fields: dict[str, object] = {
        "id": rule_id,
        "kind": kind,
        "ecosystem": "npm",
        "package": package,
        "versions": "1.3.0 || >=2.0.0 <2.1.0",
        "reason": "compromised maintainer account",
        "created_at": created_at,
        "created_by": "secops",
    }
    fields.update(extra)
    return RuleRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FixedClock:
    """This module's moment (the shared `open_store` opens stores on it)."""
    return FixedClock(NOW)


async def start_watching(
    store: StateStore, poke: Callable[[int], Awaitable[object]]
) -> AsyncGenerator[int, None]:
    """A running `store.watch()`. Its baseline is read when it starts, at a moment a test
    cannot see, so `poke` changes something until the watcher has reported once: every
    change after that is certainly after its baseline."""
    watcher = store.watch()
    assert isinstance(watcher, AsyncGenerator)
    first = asyncio.ensure_future(anext(watcher))
    try:
        async with asyncio.timeout(10):
            n = 0
            while not (await asyncio.wait({first}, timeout=0.2))[0]:
                await poke(n)
                n += 1
        first.result()
    except BaseException:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await watcher.aclose()
        raise
    return watcher


async def next_version_matching(watcher: AsyncIterator[int], wanted: int) -> int:
    """Read the watcher until it reports `wanted` or more (earlier changes may still be
    queued); two seconds at most, a second past the contract's one-second promise."""
    async with asyncio.timeout(2):
        while True:
            version = await anext(watcher)
            if version >= wanted:
                return version


# rules -------------------------------------------------------------------------------------------


async def test_rules_round_trip_every_field_of_every_kind(state: StateStore) -> None:
    rules = [
        make_rule(
            f"{kind}-1",
            kind=kind,
            created_at=T0 + timedelta(minutes=index),
            expires_at=T0 + timedelta(days=7, microseconds=1),
            data={"published_after": "2026-02-27T00:00:00Z", "ticket": ["SEC-1", 2, None]},
        )
        for index, kind in enumerate(RULE_KINDS)
    ]
    never_expires = make_rule("block-2", created_at=T0 + timedelta(hours=1))
    for rule in [*rules, never_expires]:
        await state.add_rule(rule)

    stored = await state.list_rules()

    assert stored == [*rules, never_expires]
    assert stored[-1].expires_at is None
    assert stored[-1].data == {}
    assert all(rule.created_at.tzinfo is not None for rule in stored)
    assert stored[0].created_at.utcoffset() == timedelta(0)


async def test_list_rules_filters_by_kind_oldest_first(state: StateStore) -> None:
    newest = make_rule("b-new", created_at=T0 + timedelta(hours=2))
    oldest = make_rule("b-old", created_at=T0)
    middle = make_rule("b-mid", created_at=T0 + timedelta(hours=1))
    exemption = make_rule("e-1", kind="exemption", created_at=T0 - timedelta(days=1))
    for rule in (newest, exemption, oldest, middle):
        await state.add_rule(rule)

    assert await state.list_rules("block") == [oldest, middle, newest]
    assert await state.list_rules("exemption") == [exemption]
    assert await state.list_rules("freeze") == []
    assert [rule.id for rule in await state.list_rules()] == ["e-1", "b-old", "b-mid", "b-new"]


async def test_remove_rule_returns_it_once(state: StateStore) -> None:
    rule = make_rule("b-1", data={"note": "x"})
    await state.add_rule(rule)
    await state.add_rule(make_rule("b-2"))

    assert await state.remove_rule("exemption", "b-1") is None
    assert await state.remove_rule("block", "b-1") == rule
    assert await state.remove_rule("block", "b-1") is None
    assert await state.remove_rule("block", "no-such-id") is None
    assert [r.id for r in await state.list_rules()] == ["b-2"]


async def test_adding_an_existing_id_replaces_the_rule(state: StateStore) -> None:
    await state.add_rule(make_rule("b-1", reason="first"))
    await state.add_rule(make_rule("b-1", reason="second"))

    assert [r.reason for r in await state.list_rules("block")] == ["second"]


async def test_policy_version_grows_on_changes_only(state: StateStore) -> None:
    start = await state.policy_version()

    await state.add_rule(make_rule("b-1"))
    after_add = await state.policy_version()
    await state.list_rules()
    await state.remove_rule("block", "missing")
    after_reads = await state.policy_version()
    await state.remove_rule("block", "b-1")
    after_remove = await state.policy_version()

    assert after_add > start
    assert after_reads == after_add
    assert after_remove > after_add


async def test_concurrent_changes_from_two_stores_are_all_counted(
    open_store: OpenStore,
) -> None:
    first, second = await open_store(), await open_store()
    start = await first.policy_version()

    await asyncio.gather(
        *(first.add_rule(make_rule(f"a-{n}")) for n in range(20)),
        *(second.add_rule(make_rule(f"b-{n}")) for n in range(20)),
    )

    assert await second.policy_version() == start + 40
    assert len(await first.list_rules()) == 40


# change notification -----------------------------------------------------------------------------


async def test_watch_sees_a_change_made_through_another_store(open_store: OpenStore) -> None:
    watching, other = await open_store(), await open_store()
    watcher = await start_watching(watching, lambda n: other.add_rule(make_rule(f"warm-{n}")))
    try:
        await other.add_rule(make_rule("the-change"))
        wanted = await other.policy_version()

        assert await next_version_matching(watcher, wanted) == wanted
        assert "the-change" in [rule.id for rule in await watching.list_rules()]
    finally:
        await watcher.aclose()


# publish times and digests -----------------------------------------------------------------------


async def test_publish_times_are_stored_per_ecosystem(state: StateStore) -> None:
    key = "org.example:lib:1.0"
    assert await state.get_publish_time("maven", key) is None

    await state.set_publish_time("maven", key, T0)
    await state.set_publish_time("maven", "other:lib:2.0", T0 + timedelta(days=1))

    stored = await state.get_publish_time("maven", key)
    assert stored == T0
    assert stored is not None
    assert stored.tzinfo is not None
    assert await state.get_publish_time("npm", key) is None


async def test_remember_digest_keeps_the_first_digest(state: StateStore) -> None:
    first = "sha256:" + "a" * 64
    later = "sha256:" + "b" * 64

    assert await state.remember_digest("pypi", "demo-1.0.tar.gz", first) == first
    assert await state.remember_digest("pypi", "demo-1.0.tar.gz", later) == first
    assert await state.remember_digest("npm", "demo-1.0.tar.gz", later) == later


# download ledger ---------------------------------------------------------------------------------


def download(version: str, at: datetime, *, package: str = "axios") -> DownloadEvent:
    return DownloadEvent(
        ecosystem="npm",
        package=package,
        version=version,
        filename=f"{package}-{version}.tgz",
        client="10.0.0.7",
        at=at,
    )


def row(event: DownloadEvent, *, last: datetime | None = None, count: int = 1) -> DownloadEvent:
    """`event` as the ledger gives it back: a row with its last-seen time and count."""
    return DownloadEvent(
        ecosystem=event.ecosystem, package=event.package, version=event.version,
        filename=event.filename, client=event.client, at=event.at,
        last_at=event.at if last is None else last, count=count,
    )  # fmt: skip


async def test_downloads_by_package_and_since_oldest_first(state: StateStore) -> None:
    events = [download(f"1.14.{n}", T0 + timedelta(minutes=n)) for n in range(4)]
    for event in (events[2], events[0], events[3], events[1]):
        await state.record_download(event)
    await state.record_download(download("1.0.0", T0, package="lodash"))

    assert await state.downloads("npm", "axios") == [row(event) for event in events]
    assert await state.downloads("npm", "axios", since=events[2].at) == [
        row(events[2]),
        row(events[3]),
    ]
    assert await state.downloads("npm", "lodash") == [row(download("1.0.0", T0, package="lodash"))]
    assert await state.downloads("pypi", "axios") == []


async def test_repeats_are_one_row_with_first_last_and_count(state: StateStore) -> None:
    first = download("1.14.1", T0 + timedelta(minutes=5))
    # The same client pulling the same file again (twice at one instant), earlier and later,
    # in one batch and in separate writes.
    await state.record_download(first)
    await state.record_download(first)
    await state.record_downloads(
        [download("1.14.1", T0 + timedelta(minutes=9)), download("1.14.1", T0)]
    )
    other_client = DownloadEvent(
        ecosystem="npm", package="axios", version="1.14.1", filename="axios-1.14.1.tgz",
        client="10.0.0.8", at=T0 + timedelta(minutes=1),
    )  # fmt: skip
    await state.record_download(other_client)

    assert await state.downloads("npm", "axios") == [
        row(download("1.14.1", T0), last=T0 + timedelta(minutes=9), count=4),
        row(other_client),
    ]
    # `since` keeps the rows last seen since then.
    since = await state.downloads("npm", "axios", since=T0 + timedelta(minutes=2))
    assert [(r.client, r.count) for r in since] == [("10.0.0.7", 4)]


async def test_rows_from_two_stores_add_up(open_store: OpenStore) -> None:
    # Two workers (two stores on one location) noting the same client and file: one row.
    first, second = await open_store(), await open_store()
    noted = DownloadEvent(
        ecosystem="npm", package="axios", version="1.14.1", filename="axios-1.14.1.tgz",
        client="10.0.0.7", at=T0, last_at=T0 + timedelta(minutes=3), count=3,
    )  # fmt: skip
    await asyncio.gather(
        first.record_downloads([noted]),
        second.record_downloads([download("1.14.1", T0 + timedelta(minutes=7))]),
    )
    assert await second.downloads("npm", "axios") == [
        row(noted, last=T0 + timedelta(minutes=7), count=4)
    ]


async def test_downloads_recorded_in_one_batch(state: StateStore) -> None:
    batch = [download(f"2.0.{n}", T0 + timedelta(seconds=n)) for n in range(3)]
    batch.append(download("9.9.9", T0, package="lodash"))
    await state.record_downloads(batch)
    await state.record_downloads([])
    assert await state.downloads("npm", "axios") == [row(event) for event in batch[:3]]
    assert await state.downloads("npm", "lodash") == [row(batch[3])]


async def read_all_pages(
    state: StateStore, limit: int, **options: Any
) -> tuple[list[DownloadEvent], int]:
    """Every event of npm axios through `downloads_page`, and how many pages it took."""
    events: list[DownloadEvent] = []
    after: str | None = None
    for pages in range(1, 1000):  # bounded
        page = await state.downloads_page("npm", "axios", limit=limit, after=after, **options)
        assert len(page.events) <= limit
        events.extend(page.events)
        if page.next_after is None:
            return events, pages
        assert len(page.events) == limit  # a page is short only when it is the last
        after = page.next_after
    raise AssertionError("paging did not end")


def by_time(events: list[DownloadEvent]) -> list[tuple[datetime, str, str]]:
    return sorted((event.at, event.version, event.client) for event in events)


async def test_downloads_page_walks_every_event_once_with_ties(state: StateStore) -> None:
    # 7 events, three of them in the same microsecond (a tie the position must break).
    events = [download(f"1.0.{n}", T0 + timedelta(minutes=n)) for n in range(4)]
    events += [download(f"2.0.{n}", T0 + timedelta(minutes=9)) for n in range(3)]
    await state.record_downloads(events)
    await state.record_download(download("1.0.0", T0, package="lodash"))

    for limit in (1, 2, 3, 6, 7, 100):
        got, pages = await read_all_pages(state, limit)
        assert by_time(got) == by_time(events), limit
        assert [event.at for event in got] == sorted(event.at for event in got)
        assert pages == max(1, -(-len(events) // limit)), limit
    got, _ = await read_all_pages(state, 2, since=T0 + timedelta(minutes=2))
    assert by_time(got) == by_time(events[2:])
    got, _ = await read_all_pages(state, 2, versions=lambda version: version.startswith("2."))
    assert by_time(got) == by_time(events[4:])
    got, pages = await read_all_pages(state, 2, versions=lambda version: version == "1.0.1")
    assert (by_time(got), pages) == (by_time(events[1:2]), 1)
    nothing = await state.downloads_page("npm", "axios", limit=5, versions=lambda _: False)
    assert (nothing.events, nothing.next_after) == ([], None)
    assert (await state.downloads_page("pypi", "axios", limit=5)).events == []


@pytest.mark.parametrize(
    "position",
    ["", "x", "1", "1:", ":1", "99999999999999999999999:1", "1:zz", "1:1:1", "\u0661:\u0661"],
)
async def test_downloads_page_refuses_a_position_it_did_not_issue(
    state: StateStore, position: str
) -> None:
    await state.record_download(download("1.0.0", T0))
    with pytest.raises(InvalidPosition):
        await state.downloads_page("npm", "axios", limit=1, after=position)


async def test_downloaded_packages_per_ecosystem(state: StateStore) -> None:
    assert await state.downloaded_packages("npm") == []
    for package in ("@evil/b", "axios", "@evil/a", "axios"):
        await state.record_download(download("1.0.0", T0, package=package))
    await state.record_downloads(
        [
            DownloadEvent(
                ecosystem="maven", package="org.example:lib", version="1.0", filename="lib.jar",
                client="10.0.0.8", at=T0,
            )
        ]
    )  # fmt: skip
    assert await state.downloaded_packages("npm") == ["@evil/a", "@evil/b", "axios"]
    assert await state.downloaded_packages("maven") == ["org.example:lib"]
    assert await state.downloaded_packages("pypi") == []


def pulled(
    client: str,
    at: datetime,
    *,
    token: str = "",
    version: str = "1.14.1",
    package: str = "axios",
    ci: str = "",
    count: int = 1,
    **said: str,
) -> DownloadEvent:
    """A download of npm `package` by `client` with read token `token`, CI `ci` and what
    else the client said (`user_agent`, `command`, `session`)."""
    return DownloadEvent(
        ecosystem="npm", package=package, version=version,
        filename=f"{package}-{version}.tgz", client=client, token=token, at=at, count=count,
        ci=ci, **said,
    )  # fmt: skip


def who(row: DownloadEvent) -> tuple[str, str, str, str, str, str, int]:
    return (row.client, row.token, row.user_agent, row.ci, row.command, row.session, row.count)


async def test_one_row_per_token_and_what_the_latest_download_said(state: StateStore) -> None:
    ua_old, ua_new = "npm/10.8.1 node/v22 ci/gitlab", "npm/10.8.2 node/v22 ci/github-actions"
    later = T0 + timedelta(minutes=5)
    await state.record_download(
        pulled("10.0.0.7", T0, ci="gitlab", user_agent=ua_old, command="install", session="s1")
    )
    # The same address with a read token: a row of its own.
    await state.record_download(pulled("10.0.0.7", T0, token="ci-builds", user_agent="pip/24"))
    # A later download of the first row: its words replace the first one's...
    await state.record_download(
        pulled(
            "10.0.0.7", later, ci="github-actions", user_agent=ua_new, command="ci", session="s2"
        )
    )
    # ... and an earlier one noted late (another worker's) counts, but does not replace them.
    await state.record_download(
        pulled("10.0.0.7", T0 + timedelta(minutes=1), user_agent="curl/8", session="s0")
    )
    rows = {row.token: row for row in await state.downloads("npm", "axios")}
    assert sorted(rows) == ["", "ci-builds"]
    assert who(rows[""]) == ("10.0.0.7", "", ua_new, "github-actions", "ci", "s2", 3)
    assert (rows[""].at, rows[""].last_seen) == (T0, later)
    assert who(rows["ci-builds"]) == ("10.0.0.7", "ci-builds", "pip/24", "", "", "", 1)
    # A later download that says nothing clears what the row said: it is the latest's.
    await state.record_download(pulled("10.0.0.7", later + timedelta(minutes=1)))
    rows = {row.token: row for row in await state.downloads("npm", "axios")}
    assert who(rows[""]) == ("10.0.0.7", "", "", "", "", "", 4)


async def test_two_stores_keep_what_the_latest_download_said(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    late = pulled("10.0.0.7", T0 + timedelta(minutes=9), token="t", ci="jenkins", session="late")
    early = pulled("10.0.0.7", T0, token="t", ci="travis", session="early", count=2)
    # Whichever worker writes last, the latest download's words win.
    await first.record_downloads([late])
    await second.record_downloads([early])
    await asyncio.gather(first.record_downloads([early]), second.record_downloads([late]))
    [row] = await second.downloads("npm", "axios")
    assert (row.token, row.ci, row.session, row.count) == ("t", "jenkins", "late", 6)
    assert (row.at, row.last_seen) == (T0, T0 + timedelta(minutes=9))


async def test_download_identities_total_per_token_and_ci(state: StateStore) -> None:
    minute = timedelta(minutes=1)
    await state.record_downloads(
        [
            pulled("10.0.0.1", T0, token="ci-builds", ci="github-actions", count=5),
            pulled("10.0.0.2", T0 + minute, token="ci-builds", ci="github-actions", count=2),
            pulled("10.0.0.2", T0 + minute, token="ci-builds", ci="github-actions",
                   version="1.14.0", count=1),
            pulled("10.0.0.3", T0 + 2 * minute, token="ci-builds", count=1),
            pulled("10.0.0.4", T0 + 3 * minute, count=3),
            pulled("10.0.0.4", T0 + 4 * minute, version="1.14.0", count=1),
            pulled("10.0.0.9", T0, package="lodash", count=50),
        ]
    )  # fmt: skip
    got = await state.download_identities("npm", "axios")
    assert got == [
        IdentityTotal(token="ci-builds", ci="github-actions", clients=2, rows=3, downloads=8,
                      first_seen=T0, last_seen=T0 + minute),
        IdentityTotal(token="", ci="", clients=1, rows=2, downloads=4,
                      first_seen=T0 + 3 * minute, last_seen=T0 + 4 * minute),
        IdentityTotal(token="ci-builds", ci="", clients=1, rows=1, downloads=1,
                      first_seen=T0 + 2 * minute, last_seen=T0 + 2 * minute),
    ]  # fmt: skip
    only = await state.download_identities(
        "npm", "axios", since=T0 + minute, versions=lambda version: version == "1.14.1"
    )
    assert [(i.token, i.ci, i.clients, i.rows, i.downloads) for i in only] == [
        ("", "", 1, 1, 3),
        ("ci-builds", "github-actions", 1, 1, 2),
        ("ci-builds", "", 1, 1, 1),
    ]
    assert await state.download_identities("npm", "axios", versions=lambda _: False) == []
    assert await state.download_identities("npm", "left-pad") == []
    assert await state.download_identities("pypi", "axios") == []


async def test_download_identities_count_every_row_once_in_small_reads(
    state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis totals a few rows per script: 3 here, so rows tied to the microsecond straddle
    # the reads (SQLite groups in one query; the same answer).
    monkeypatch.setattr(redis_state, "_IDENTITIES_CHUNK", 3)
    events = [
        pulled(f"10.0.0.{n % 4}", T0 + timedelta(seconds=n // 3), token=("a", "b")[n % 2],
               version=f"1.0.{n}", count=n + 1)
        for n in range(11)
    ]  # fmt: skip
    await state.record_downloads(events)
    totals = {
        (t.token, t.clients, t.rows, t.downloads)
        for t in await state.download_identities("npm", "axios")
    }
    assert totals == {("a", 2, 6, 1 + 3 + 5 + 7 + 9 + 11), ("b", 2, 5, 2 + 4 + 6 + 8 + 10)}


async def test_redis_prunes_what_clients_said_with_their_rows(
    redis_url: str, clock: FixedClock
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    store = RedisState(
        redis_url, namespace=namespace, clock=clock, ledger_retention=timedelta(days=30)
    )
    await store.open()
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await store.record_download(pulled("10.0.0.7", NOW, package="lodash", ci="ci", session="s"))
        assert await raw.hlen(f"{namespace}:ledger-who:npm:lodash") == 1
        clock.advance(timedelta(days=31))
        await store.record_download(pulled("10.0.0.7", clock.now()))
        # Nothing of the pruned package is left behind, and its name is out of the index.
        assert await raw.keys(f"{namespace}:ledger*:npm:lodash") == []
        assert await raw.keys(f"{namespace}:ledger-version:npm:lodash:*") == []
        assert await raw.zrange(f"{namespace}:ledger-packages:npm", 0, -1) == ["axios"]
    finally:
        await raw.aclose()
        await store.close()


def spread(package: str = "axios") -> list[DownloadEvent]:
    """150 rows of 11 versions: 1.0.0 holds 100, 1.1.0 to 1.10.0 five each; three rows
    share each second (ties across versions); tokens, CI and counts vary, a client each."""
    events = []
    for n in range(150):
        version = "1.0.0" if n % 3 else f"1.{n % 10 + 1}.0"
        events.append(
            pulled(f"10.0.{n // 50}.{n % 50}", T0 + timedelta(seconds=n // 3),
                   token=("", "a", "b")[n % 3], version=version, package=package,
                   ci=("", "gh")[n % 2], count=n % 4 + 1)
        )  # fmt: skip
    return events


FILTERS: dict[str, Callable[[str], bool]] = {
    "none": lambda version: version == "9.9.9",
    "one sparse": lambda version: version == "1.7.0",
    "two sparse": lambda version: version in ("1.3.0", "1.7.0"),
    "the dense one": lambda version: version == "1.0.0",
    "all but the dense one": lambda version: version != "1.0.0",
    "all": lambda version: True,
}


@pytest.mark.parametrize("chosen", list(FILTERS))
async def test_filtered_pages_are_the_rows_of_those_versions_in_order(
    state: StateStore, monkeypatch: pytest.MonkeyPatch, clock: FixedClock, chosen: str
) -> None:
    # Redis reads the rows of a few versions from their own sets and merges them (a few
    # rows per read here, so merging takes rounds); pages, order and cursors are those of
    # the package's rows with the other versions left out, as SQLite gives them.
    monkeypatch.setattr(redis_state, "_PAGE_CHUNK", 4)
    matches = FILTERS[chosen]
    await state.record_downloads(spread())
    await state.record_downloads(spread("lodash"))
    everything, _ = await read_all_pages(state, 1000)
    assert len(everything) == 150
    for limit in (1, 4, 7, 50, 1000):
        got, pages = await read_all_pages(state, limit, versions=matches)
        wanted = [row for row in everything if matches(row.version)]
        assert got == wanted, limit
        assert pages == max(1, -(-len(wanted) // limit)), limit
    since = T0 + timedelta(seconds=20)
    got, _ = await read_all_pages(state, 6, versions=matches, since=since)
    assert got == [row for row in everything if matches(row.version) and row.last_seen >= since]
    # Who pulled them: the totals of exactly those rows.
    expected: dict[tuple[str, str], tuple[int, int, set[str]]] = {}
    for row in everything:
        if matches(row.version):
            rows, downloads, clients = expected.get((row.token, row.ci), (0, 0, set()))
            expected[(row.token, row.ci)] = (
                rows + 1,
                downloads + row.count,
                clients | {row.client},
            )
    totals = await state.download_identities("npm", "axios", versions=matches)
    assert {(t.token, t.ci): (t.rows, t.downloads, t.clients) for t in totals} == {
        key: (rows, downloads, len(clients)) for key, (rows, downloads, clients) in expected.items()
    }


async def test_redis_version_index_loses_pruned_rows(redis_url: str, clock: FixedClock) -> None:
    # The per-version sets and the versions' counts follow the rows: capped, aged out.
    namespace = f"test-{uuid.uuid4().hex}"
    store = RedisState(
        redis_url, namespace=namespace, clock=clock, downloads_kept=3,
        ledger_retention=timedelta(days=30),
    )  # fmt: skip
    await store.open()
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        events = [
            pulled("10.0.0.7", T0 + timedelta(seconds=n), version=f"1.0.{n}") for n in range(5)
        ]
        events.append(pulled("10.0.0.8", T0 + timedelta(seconds=9), version="1.0.4"))
        await store.record_downloads(events)
        # The cap kept the 3 most recently seen rows: 1.0.3 and twice 1.0.4.
        assert await raw.hgetall(f"{namespace}:ledger-versions:npm:axios") == {
            "1.0.3": "1",
            "1.0.4": "2",
        }
        kept = await raw.keys(f"{namespace}:ledger-version:npm:axios:*")
        assert sorted(kept) == [
            f"{namespace}:ledger-version:npm:axios:{version.encode().hex()}"
            for version in ("1.0.3", "1.0.4")
        ]
        page = await store.downloads_page("npm", "axios", limit=5, versions=lambda v: v < "1.0.3")
        assert page.events == []
        clock.advance(timedelta(days=31))
        await store.record_download(pulled("10.0.0.7", clock.now(), package="lodash"))
        assert await raw.keys(f"{namespace}:ledger-version*:npm:axios*") == []
    finally:
        await raw.aclose()
        await store.close()


async def test_redis_indexes_the_versions_of_a_ledger_kept_without_them(
    redis_url: str, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ledger as the version before the version index left it (marker 3): the index is
    # built from its rows a chunk at a time, once, and filtered pages and totals find them.
    monkeypatch.setattr(redis_state, "_IDENTITIES_CHUNK", 7)
    namespace = f"test-{uuid.uuid4().hex}"
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    writer = RedisState(redis_url, namespace=namespace, clock=clock)
    await writer.open()
    stores: list[RedisState] = []
    try:
        await writer.record_downloads(spread() + spread("@evil/a"))
        expected = {
            package: (
                await writer.downloads_page(
                    "npm", package, limit=200, versions=FILTERS["two sparse"]
                )
            ).events
            for package in ("axios", "@evil/a")
        }
        assert len(expected["axios"]) == 10
        for key in await raw.keys(f"{namespace}:ledger-version*"):
            await raw.delete(key)
        await raw.set(f"{namespace}:upgraded", "3")
        stores = [RedisState(redis_url, namespace=namespace, clock=clock) for _ in range(2)]
        for store in stores:
            await store.open()
        pages = await asyncio.gather(
            *(
                store.downloads_page("npm", package, limit=200, versions=FILTERS["two sparse"])
                for store, package in zip(stores, ("axios", "@evil/a"), strict=True)
            )
        )
        assert [page.events for page in pages] == [expected["axios"], expected["@evil/a"]]
        assert await raw.get(f"{namespace}:upgraded") == "4"
        held = await raw.hgetall(f"{namespace}:ledger-versions:npm:axios")
        assert held == {"1.0.0": "100", **{f"1.{n}.0": "5" for n in range(1, 11)}}
        totals = await stores[0].download_identities(
            "npm", "axios", versions=FILTERS["the dense one"]
        )
        assert sum(total.rows for total in totals) == 100
    finally:
        for store in (writer, *stores):
            await store.close()
        await raw.aclose()


async def test_redis_identities_go_on_by_time_when_the_last_row_read_is_gone(
    redis_url: str, clock: FixedClock
) -> None:
    # Between two reads the row a read ended on was pruned: the next starts after the rows
    # first seen before that row's time, so none is counted twice or skipped.
    store = RedisState(redis_url, namespace=f"test-{uuid.uuid4().hex}", clock=clock)
    await store.open()
    try:
        await store.record_downloads(
            [pulled(f"10.0.0.{n}", T0 + timedelta(seconds=n), token="t") for n in range(4)]
        )
        keys = store._ledger_keys("npm", "axios")[:4]
        gone = '["1.14.1","axios-1.14.1.tgz","10.0.0.99","t"]'
        reply = await store._redis("test").eval(
            redis_state._IDENTITIES_SCRIPT, 4, *keys, gone, str(_micros(T0) + 2_000_000), "10", ""
        )
        assert reply[:2] == [2, '["1.14.1","axios-1.14.1.tgz","10.0.0.3","t"]']
        assert sorted(reply[10].split("\0")) == ["10.0.0.2", "10.0.0.3"]
    finally:
        await store.close()


# audit log ---------------------------------------------------------------------------------------


async def test_rule_changes_store_their_audit_entry_in_the_same_write(state: StateStore) -> None:
    def entry(action: str, target: str) -> AuditEntry:
        return AuditEntry(
            at=T0, actor="secops", client="192.0.2.1", action=action, target=target,
            after={"id": target},
        )  # fmt: skip

    await state.add_rule(make_rule("b1"), audit=entry("block.create", "b1"))
    assert await state.remove_rule("block", "b1", audit=entry("block.delete", "b1")) is not None
    # Nothing removed, nothing audited.
    assert await state.remove_rule("block", "b1", audit=entry("block.delete", "b1")) is None
    log = await state.audit_log()
    assert [(e.action, e.target) for e in log] == [("block.delete", "b1"), ("block.create", "b1")]
    assert log[1].after == {"id": "b1"}


async def test_audit_log_newest_first_with_limit(state: StateStore) -> None:
    entries = [
        AuditEntry(
            at=T0 + timedelta(seconds=n),
            actor="secops",
            client="192.0.2.1",
            action="block.add",
            target=f"npm/axios/{n}",
            before=None if n == 0 else {"versions": "*", "n": n},
            after={"versions": "1.14.1", "tags": ["a", "b"]} if n != 2 else None,
        )
        for n in range(3)
    ]
    for entry in entries:
        await state.append_audit(entry)

    assert await state.audit_log() == entries[::-1]
    assert await state.audit_log(limit=2) == [entries[2], entries[1]]


# health and failures -----------------------------------------------------------------------------


async def test_ping_answers(state: StateStore) -> None:
    await state.ping()


async def test_a_store_that_is_not_open_is_unavailable(tmp_path: Path, redis_url: str) -> None:
    for store in (LocalState(tmp_path / "s.sqlite3"), RedisState(redis_url)):
        with pytest.raises(StateUnavailable, match="not open"):
            await store.policy_version()


async def test_redis_where_nothing_listens_is_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    store = RedisState(f"redis://127.0.0.1:{port}/0", namespace="dead")
    await store.open()
    try:
        async with asyncio.timeout(15):
            with pytest.raises(StateUnavailable) as caught:
                await store.ping()
            # Where Redis is goes to the log, never into the message clients may see.
            assert str(port) not in str(caught.value)
            assert f"127.0.0.1:{port}" in caplog.text
            with pytest.raises(StateUnavailable, match="list rules"):
                await store.list_rules()
            with pytest.raises(StateUnavailable):
                await anext(store.watch())
    finally:
        await store.close()


async def test_redis_url_password_is_not_echoed(redis_url: str) -> None:
    url = f"redis://:hunter2hunter2@127.0.0.1:{free_port()}/0"
    store = RedisState(url)
    await store.open()
    try:
        async with asyncio.timeout(15):
            with pytest.raises(StateUnavailable) as caught:
                await store.ping()
    finally:
        await store.close()
    assert "hunter2" not in str(caught.value)


async def test_local_state_where_a_directory_stands_is_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.sqlite3"
    path.mkdir()
    store = LocalState(path)
    try:
        with pytest.raises(StateUnavailable) as caught:
            await store.open()
    finally:
        await store.close()
    # The file's path goes to the log, never into the message clients may see.
    assert "state.sqlite3" not in str(caught.value)
    assert str(path) in caplog.text


async def test_local_state_on_a_garbage_file_is_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database, just some bytes " * 200)
    store = LocalState(path)
    try:
        with pytest.raises(StateUnavailable, match="DatabaseError"):
            await store.open()
        assert "not a database" in caplog.text
        with pytest.raises(StateUnavailable):
            await store.ping()
    finally:
        await store.close()


# backend-specific behaviour ----------------------------------------------------------------------


CHILD_WRITER = """
import asyncio, sys
from datetime import UTC, datetime
from pathlib import Path
from mirror.state import RuleRecord
from mirror.state.local import LocalState

async def main():
    store = LocalState(Path(sys.argv[1]))
    await store.open()
    await store.add_rule(RuleRecord(
        id="from-child", kind="block", ecosystem="npm", package="axios", versions="1.14.1",
        reason="worm", created_by="child", created_at=datetime(2026, 3, 1, tzinfo=UTC)))
    await store.close()

asyncio.run(main())
"""


async def test_local_watch_sees_a_rule_added_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = LocalState(path, poll_interval=FAST_POLL)
    await store.open()
    try:
        watcher = await start_watching(store, lambda n: store.add_rule(make_rule(f"warm-{n}")))
    except BaseException:
        await store.close()
        raise
    try:
        before = await store.policy_version()
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD_WRITER, str(path))
        async with asyncio.timeout(30):
            assert await child.wait() == 0

        assert await next_version_matching(watcher, before + 1) == before + 1
        assert "from-child" in [rule.id for rule in await store.list_rules("block")]
    finally:
        await watcher.aclose()
        await store.close()


async def test_redis_watch_polls_when_a_message_is_lost(redis_url: str) -> None:
    store = RedisState(redis_url, namespace=f"test-{uuid.uuid4().hex}")
    await store.open()
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    counter = f"{store.namespace}:policy:version"
    watcher: AsyncGenerator[int, None] | None = None
    try:
        # Bump the counter without publishing, as if every message were lost.
        watcher = await start_watching(store, lambda n: raw.incr(counter))
        wanted = int(await raw.incr(counter))

        assert await next_version_matching(watcher, wanted) == wanted
    finally:
        if watcher is not None:
            await watcher.aclose()
        await raw.aclose()
        await store.close()


async def test_ledger_keeps_rows_by_age_and_the_most_recent_per_package(
    open_store: OpenStore, clock: FixedClock
) -> None:
    store = await open_store(downloads_kept=3, ledger_retention=timedelta(days=30))
    events = [download(f"1.0.{n}", T0 + timedelta(seconds=n)) for n in range(5)]
    for event in reversed(events):
        await store.record_download(event)
    await store.record_download(download("9.9.9", T0, package="lodash"))
    assert [r.version for r in await store.downloads("npm", "axios")] == ["1.0.2", "1.0.3", "1.0.4"]
    # Pulled again: now among the most recently seen (the least recently seen goes).
    await store.record_download(download("1.0.3", T0 + timedelta(minutes=1)))
    await store.record_download(download("1.0.5", T0 + timedelta(minutes=2)))
    assert [r.version for r in await store.downloads("npm", "axios")] == ["1.0.3", "1.0.4", "1.0.5"]
    assert len(await store.downloads("npm", "lodash")) == 1  # the cap is per package

    # Rows of read tokens and what clients said go with their rows.
    await store.record_download(
        pulled("10.0.0.7", T0, token="ci-builds", package="lodash", ci="jenkins", session="s")
    )
    assert sorted((r.token, r.ci) for r in await store.downloads("npm", "lodash")) == [
        ("", ""),
        ("ci-builds", "jenkins"),
    ]

    # 30 days later: a write prunes every row last seen before the retention.
    clock.advance(timedelta(days=30, minutes=2))
    await store.record_download(download("2.0.0", clock.now()))
    assert [r.version for r in await store.downloads("npm", "axios")] == ["2.0.0"]
    assert await store.downloads("npm", "lodash") == []
    assert await store.download_identities("npm", "lodash") == []
    assert await store.downloaded_packages("npm") == ["axios"]
    # A row of the pruned package again: it says only what the new download said.
    await store.record_download(
        pulled("10.0.0.7", clock.now(), token="ci-builds", package="lodash")
    )
    [again] = await store.downloads("npm", "lodash")
    assert (again.token, again.ci, again.session, again.count) == ("ci-builds", "", "", 1)
    assert await store.downloaded_packages("npm") == ["axios", "lodash"]


def audit(action: str, target: str, at: datetime = NOW, actor: str = "secops") -> AuditEntry:
    return AuditEntry(at=at, actor=actor, client="192.0.2.1", action=action, target=target)


async def read_audit(store: StateStore, limit: int, **filters: Any) -> tuple[list[AuditEntry], int]:
    """Every entry matching `filters` through `audit_page`, and how many pages it took."""
    entries: list[AuditEntry] = []
    after: str | None = None
    for pages in range(1, 1000):  # bounded
        page = await store.audit_page(limit=limit, after=after, **filters)
        assert len(page.entries) <= limit
        entries.extend(page.entries)
        if page.next_after is None:
            return entries, pages
        assert len(page.entries) == limit  # well under AUDIT_SCAN: no short pages
        after = page.next_after
    raise AssertionError("paging did not end")


async def test_audit_page_filters_by_target_actor_and_time_and_pages(state: StateStore) -> None:
    entries = [
        audit("block.create", f"b-{n % 3}", NOW - timedelta(hours=n), ("alice", "bob")[n % 2])
        for n in range(12)
    ]
    entries.append(audit("block.delete", "b-0", NOW - timedelta(hours=5), "carol"))  # a tie
    for entry in entries:
        await state.append_audit(entry)
    # Newest first; of two entries at one instant, the one written last first.
    order = sorted(range(len(entries)), key=lambda n: (entries[n].at, n), reverse=True)
    newest_first = [entries[n] for n in order]

    for limit in (1, 2, 5, 13, 100):
        got, pages = await read_audit(state, limit)
        assert got == newest_first
        assert pages == max(1, -(-len(entries) // limit)), limit
    got, _ = await read_audit(state, 2, target="b-0")
    assert {(e.target, e.at) for e in got} == {
        (e.target, e.at) for e in entries if e.target == "b-0"
    }
    assert len(got) == 5
    got, _ = await read_audit(state, 3, target="b-1", actor="bob")
    assert [e.at for e in got] == [NOW - timedelta(hours=n) for n in (1, 7)]
    got, _ = await read_audit(state, 3, actor="alice")
    assert [e.at for e in got] == [NOW - timedelta(hours=n) for n in (0, 2, 4, 6, 8, 10)]
    window = {"since": NOW - timedelta(hours=6), "until": NOW - timedelta(hours=2)}
    got, _ = await read_audit(state, 2, **window)
    assert sorted(e.at for e in got) == [NOW - timedelta(hours=n) for n in (6, 5, 5, 4, 3)]
    assert (await state.audit_page(limit=5, actor="nobody")).entries == []


@pytest.mark.parametrize("position", ["", "x", "1:", "1:1:1", "0000000000000000001-x", "\u0661:1"])
async def test_audit_page_refuses_a_position_it_did_not_issue(
    state: StateStore, position: str
) -> None:
    await state.append_audit(audit("block.create", "b-1"))
    with pytest.raises(InvalidPosition):
        await state.audit_page(limit=1, after=position)


async def test_audit_is_pruned_by_age_but_keeps_the_creation_of_a_live_rule(
    open_store: OpenStore, clock: FixedClock
) -> None:
    store = await open_store(audit_retention=timedelta(days=365))
    await store.add_rule(make_rule("b-live"), audit=audit("block.create", "b-live"))
    await store.add_rule(make_rule("b-gone"), audit=audit("block.create", "b-gone"))
    await store.remove_rule("block", "b-gone", audit=audit("block.delete", "b-gone"))
    await store.append_audit(audit("osv.import", "npm"))
    assert (await store.audit_page(limit=10)).pruned_before is None

    clock.advance(timedelta(days=366))
    await store.append_audit(audit("block.create", "b-new", clock.now()))

    page = await store.audit_page(limit=10)
    assert [(e.action, e.target) for e in page.entries] == [
        ("block.create", "b-new"),
        ("block.create", "b-live"),
    ]
    assert page.pruned_before == NOW
    # Once its rule is removed, the creation entry ages like every other.
    await store.remove_rule("block", "b-live", audit=audit("block.delete", "b-live", clock.now()))
    got, _ = await read_audit(store, 10, target="b-live")
    assert [e.action for e in got] == ["block.delete"]


async def test_audit_churn_never_pushes_out_the_creation_of_a_live_rule(
    open_store: OpenStore, clock: FixedClock
) -> None:
    # 10,000 admin writes (5,000 create/delete pairs) past a small safety cap.
    store = await open_store(audit_cap=1000)
    await store.add_rule(
        make_rule("e-live", kind="exemption"), audit=audit("exemption.create", "e-live")
    )
    for n in range(5000):
        clock.advance(timedelta(milliseconds=1))
        rule_id = f"f-{n}"
        await store.add_rule(
            make_rule(rule_id, kind="freeze"), audit=audit("freeze.create", rule_id, clock.now())
        )
        removed = await store.remove_rule(
            "freeze", rule_id, audit=audit("freeze.delete", rule_id, clock.now())
        )
        assert removed is not None

    found = await store.audit_page(limit=10, target="e-live")
    assert [(e.action, e.at) for e in found.entries] == [("exemption.create", NOW)]
    assert found.pruned_before is not None
    # The log is bounded: about the cap (it is pruned a batch per write), not 10,000.
    everything, _ = await read_audit(store, 1000)
    assert len(everything) == 1000 + 1
    assert everything[0].target == "f-4999"


async def test_eight_concurrent_writers_never_fail(open_store: OpenStore) -> None:
    # Eight workers (separate stores) each creating and removing 50 rules at once.
    writers = [await open_store() for _ in range(8)]
    start = await writers[0].policy_version()

    async def churn(store: StateStore, writer: int) -> None:
        for n in range(50):
            rule_id = f"b-{writer}-{n}"
            await store.add_rule(make_rule(rule_id), audit=audit("block.create", rule_id))
            removed = await store.remove_rule(
                "block", rule_id, audit=audit("block.delete", rule_id)
            )
            assert removed is not None
            assert removed.id == rule_id

    await asyncio.gather(*(churn(store, n) for n, store in enumerate(writers)))

    assert await writers[0].policy_version() == start + 800
    assert await writers[0].list_rules() == []
    entries, _ = await read_audit(writers[0], 1000)
    assert len(entries) == 800
    assert {(e.action, e.target) for e in entries} == {
        (f"block.{action}", f"b-{w}-{n}")
        for action in ("create", "delete")
        for w in range(8)
        for n in range(50)
    }


async def test_concurrent_removals_of_one_rule_remove_it_once(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(4)]
    await stores[0].add_rule(make_rule("b-1"), audit=audit("block.create", "b-1"))
    removed = await asyncio.gather(
        *(store.remove_rule("block", "b-1", audit=audit("block.delete", "b-1")) for store in stores)
    )
    assert [r.id for r in removed if r is not None] == ["b-1"]
    got, _ = await read_audit(stores[0], 10, target="b-1")
    assert [e.action for e in got] == ["block.delete", "block.create"]


async def test_redis_moves_what_an_earlier_version_stored(
    redis_url: str, clock: FixedClock
) -> None:
    # The audit as a capped list (newest first) and the ledger as one event per download.
    namespace = f"test-{uuid.uuid4().hex}"
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await raw.hset(f"{namespace}:rules:block", "b-live", _encode_rule(make_rule("b-live")))
    old_entries = [
        audit("block.create", "b-live", NOW - timedelta(days=400)),
        audit("block.create", "b-gone", NOW - timedelta(days=400)),
        audit("block.delete", "b-gone", NOW - timedelta(days=2)),
    ]
    for entry in old_entries:
        await raw.lpush(f"{namespace}:audit", _encode_audit(entry))
    for n, client in enumerate(("10.0.0.7", "10.0.0.7", "10.0.0.8")):
        member = f'["1.14.1","axios-1.14.1.tgz","{client}","tag{n}"]'
        await raw.zadd(f"{namespace}:downloads:npm:axios", {member: _micros(T0) + n})
    maven = f"{namespace}:downloads:maven:org.example:lib"
    await raw.zadd(maven, {'["1.0","lib.jar","c","t"]': _micros(T0)})

    stores = [RedisState(redis_url, namespace=namespace, clock=clock) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        # Two workers starting together: each piece moves once.
        pages = await asyncio.gather(*(store.audit_page(limit=10) for store in stores))
        # Past the retention but the creation of a stored rule: kept; the rest is pruned.
        assert [(e.action, e.target) for e in pages[0].entries] == [
            ("block.delete", "b-gone"),
            ("block.create", "b-live"),
        ]
        assert pages[1].entries == pages[0].entries
        rows = await stores[1].downloads("npm", "axios")
        assert [(r.client, r.count) for r in rows] == [("10.0.0.7", 2), ("10.0.0.8", 1)]
        assert await stores[0].downloaded_packages("maven") == ["org.example:lib"]
        assert await raw.exists(f"{namespace}:audit", f"{namespace}:downloads:npm:axios") == 0
    finally:
        for store in stores:
            await store.close()
        await raw.aclose()


async def test_local_state_moves_what_an_earlier_version_stored(
    tmp_path: Path, clock: FixedClock
) -> None:
    # A file of an earlier version: one ledger row per download, an audit without pins.
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE rules (kind TEXT NOT NULL, id TEXT NOT NULL, ecosystem TEXT NOT NULL,
                package TEXT NOT NULL, versions TEXT NOT NULL, reason TEXT NOT NULL,
                created_at INTEGER NOT NULL, created_by TEXT NOT NULL, expires_at INTEGER,
                data TEXT NOT NULL, PRIMARY KEY (kind, id));
            CREATE TABLE downloads (seq INTEGER PRIMARY KEY AUTOINCREMENT, ecosystem TEXT NOT NULL,
                package TEXT NOT NULL, version TEXT NOT NULL, filename TEXT NOT NULL,
                client TEXT NOT NULL, at INTEGER NOT NULL);
            CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,
                actor TEXT NOT NULL, client TEXT NOT NULL, action TEXT NOT NULL,
                target TEXT NOT NULL, before TEXT, after TEXT);
            INSERT INTO rules VALUES
                ('block', 'b-live', 'npm', 'axios', '*', '', 0, 'a', NULL, '{}');
            """
        )
        old = _micros(NOW - timedelta(days=400))
        for action, target in (("block.create", "b-live"), ("block.create", "b-gone")):
            conn.execute(
                "INSERT INTO audit (at, actor, client, action, target) VALUES (?, 'a', 'c', ?, ?)",
                (old, action, target),
            )
        for n, client in enumerate(("10.0.0.7", "10.0.0.7", "10.0.0.8")):
            conn.execute(
                "INSERT INTO downloads (ecosystem, package, version, filename, client, at) "
                "VALUES ('npm', 'axios', '1.14.1', 'axios-1.14.1.tgz', ?, ?)",
                (client, _micros(T0) + n),
            )
    conn.close()

    store = LocalState(path, clock=clock)
    await store.open()
    try:
        page = await store.audit_page(limit=10)
        assert [(e.action, e.target) for e in page.entries] == [("block.create", "b-live")]
        rows = await store.downloads("npm", "axios")
        assert [(r.client, r.count) for r in rows] == [("10.0.0.7", 2), ("10.0.0.8", 1)]
    finally:
        await store.close()


async def test_redis_reads_the_ledger_of_the_version_before_tokens(
    redis_url: str, clock: FixedClock
) -> None:
    # As the version before read tokens left it: members [version, file, client], no words
    # of the clients, no index of package names (`downloaded_packages` scanned keys).
    namespace = f"test-{uuid.uuid4().hex}"
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    rows = {"npm": ("axios", "@evil/a"), "maven": ("org.example:lib",)}
    for ecosystem, packages in rows.items():
        for package in packages:
            member = f'["1.0","{package}-1.0.tgz","10.0.0.7"]'
            await raw.zadd(f"{namespace}:ledger:{ecosystem}:{package}", {member: _micros(T0)})
            await raw.zadd(f"{namespace}:ledger-last:{ecosystem}:{package}", {member: _micros(NOW)})
            await raw.hset(f"{namespace}:ledger-count:{ecosystem}:{package}", member, "4")
            await raw.zadd(f"{namespace}:ledger-oldest", {f"{ecosystem}\n{package}": _micros(NOW)})
    await raw.set(f"{namespace}:upgraded", "2")

    stores = [RedisState(redis_url, namespace=namespace, clock=clock) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        listed = await asyncio.gather(*(store.downloaded_packages("npm") for store in stores))
        assert listed == [["@evil/a", "axios"]] * 2
        assert await stores[0].downloaded_packages("maven") == ["org.example:lib"]
        [old] = await stores[1].downloads("npm", "axios")
        assert who(old) == ("10.0.0.7", "", "", "", "", "", 4)
        # The same client without a token adds to its row; with a token it has its own.
        later = NOW + timedelta(minutes=1)
        await stores[0].record_downloads(
            [
                pulled("10.0.0.7", later, version="1.0", ci="ci", user_agent="pip/24"),
                pulled("10.0.0.7", later, version="1.0", token="ci-builds"),
            ]
        )
        got = sorted(await stores[1].downloads("npm", "axios"), key=lambda row: row.token)
        assert [who(row) for row in got] == [
            ("10.0.0.7", "", "pip/24", "ci", "", "", 5),
            ("10.0.0.7", "ci-builds", "", "", "", "", 1),
        ]
        assert got[0].at == T0
        assert await raw.get(f"{namespace}:upgraded") == "4"
        # Its rows are in the version index too: a filtered page finds them.
        page = await stores[0].downloads_page(
            "maven", "org.example:lib", limit=5, versions=lambda version: version == "1.0"
        )
        assert [row.client for row in page.events] == ["10.0.0.7"]
    finally:
        for store in stores:
            await store.close()
        await raw.aclose()


async def test_local_state_upgrades_the_ledger_of_the_version_before_tokens(
    tmp_path: Path, clock: FixedClock
) -> None:
    # The ledger table as the version before read tokens made it: keyed by (client, file).
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE ledger (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, ecosystem TEXT NOT NULL,
                package TEXT NOT NULL, version TEXT NOT NULL, filename TEXT NOT NULL,
                client TEXT NOT NULL, first_at INTEGER NOT NULL, last_at INTEGER NOT NULL,
                count INTEGER NOT NULL, UNIQUE (ecosystem, package, version, filename, client));
            CREATE INDEX ledger_by_package ON ledger (ecosystem, package, first_at);
            CREATE INDEX ledger_by_last_seen ON ledger (last_at);
            CREATE INDEX ledger_by_package_seen ON ledger (ecosystem, package, last_at);
            """
        )
        for n in range(3):
            conn.execute(
                "INSERT INTO ledger (ecosystem, package, version, filename, client, first_at, "
                "last_at, count) VALUES ('npm', 'axios', '1.0', 'axios-1.0.tgz', ?, ?, ?, ?)",
                (f"10.0.0.{n}", _micros(T0) + n, _micros(NOW), n + 1),
            )
    conn.close()

    stores = [LocalState(path, clock=clock) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        # Two processes opening the file together: it is upgraded once, nothing lost.
        before = await asyncio.gather(*(store.downloads("npm", "axios") for store in stores))
        assert before[0] == before[1]
        assert [who(row) for row in before[0]] == [
            (f"10.0.0.{n}", "", "", "", "", "", n + 1) for n in range(3)
        ]
        # A page position issued before the upgrade would still be valid: `seq` is kept.
        page = await stores[0].downloads_page("npm", "axios", limit=1)
        assert page.next_after == f"{_micros(T0)}:1"
        later = NOW + timedelta(minutes=1)
        await stores[0].record_downloads(
            [
                pulled("10.0.0.0", later, version="1.0", ci="ci"),
                pulled("10.0.0.0", later, version="1.0", token="ci-builds"),
            ]
        )
        got = sorted(await stores[1].downloads("npm", "axios"), key=lambda r: (r.client, r.token))
        assert [who(row) for row in got[:2]] == [
            ("10.0.0.0", "", "", "ci", "", "", 2),
            ("10.0.0.0", "ci-builds", "", "", "", "", 1),
        ]
    finally:
        for store in stores:
            await store.close()
    with sqlite3.connect(path) as conn:
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ledger'"
            )
        }
    conn.close()
    assert {"ledger_by_package", "ledger_by_last_seen", "ledger_by_package_seen"} <= indexes


def test_create_state_picks_the_backend(tmp_path: Path) -> None:
    local = create_state(Config(data_dir=tmp_path))
    remote = create_state(Config(state=StateConfig(redis_url="redis://127.0.0.1:1/0")))

    assert isinstance(local, LocalState)
    assert local.path == tmp_path / "state.sqlite3"
    assert isinstance(remote, RedisState)
    assert remote.url == "redis://127.0.0.1:1/0"
    retained = Config(
        data_dir=tmp_path,
        state=StateConfig(ledger_retention=timedelta(days=7)),
        admin=AdminConfig(audit_retention=timedelta(days=30)),
    )
    store = create_state(retained)
    assert isinstance(store, LocalState)
    assert (store.ledger_retention, store.audit_retention) == (
        timedelta(days=7),
        timedelta(days=30),
    )


# identity and restore (mirror.lastknown) --------------------------------------------------------


async def test_identity_is_claimed_once_and_read_with_the_version(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    seen = await first.state_identity()
    assert seen.identity is None
    assert seen.version == 0
    assert seen.restored_from == frozenset()

    assert await first.claim_identity("epoch-a") == "epoch-a"
    # A second claimant (another worker or replica) gets the stored identity, not its own.
    assert await second.claim_identity("epoch-b") == "epoch-a"
    await second.add_rule(make_rule("b1"))
    seen = await first.state_identity()
    assert (seen.identity, seen.version) == ("epoch-a", 1)


async def test_the_claim_time_is_kept_and_a_published_loss_until_a_restore(
    open_store: OpenStore,
) -> None:
    first, second = await open_store(), await open_store()
    assert (await first.state_identity()).age is None  # no identity: no claim time
    await first.claim_identity("epoch-new")
    await asyncio.sleep(0.3)
    await second.claim_identity("epoch-other")  # a claim that loses changes nothing
    age = (await second.state_identity()).age
    assert age is not None
    assert 0.25 <= age < 5

    seen = await first.state_identity()
    assert (seen.lost, seen.lost_version) == (None, 0)
    assert await first.published_loss() is None
    assert await first.publish_loss("epoch-old", 7, b'{"copy":7}')
    # Another replica's copy of the same lost state: only a newer one replaces it.
    assert not await second.publish_loss("epoch-old", 7, b'{"copy":"7 again"}')
    assert not await second.publish_loss("epoch-old", 6, b'{"copy":6}')
    assert await second.publish_loss("epoch-old", 9, b'{"copy":9}')
    # A copy of some other state does not replace the loss published first.
    assert not await first.publish_loss("epoch-unrelated", 50, b'{"copy":50}')
    seen = await second.state_identity()
    assert (seen.identity, seen.lost, seen.lost_version) == ("epoch-new", "epoch-old", 9)
    assert await first.published_loss() == ("epoch-old", 9, b'{"copy":9}')
    # Published, it is no rule of the state.
    assert await first.list_rules() == []

    await first.restore(rules=[], digests={}, audit=[], version_floor=9, predecessor="epoch-old")
    assert await second.published_loss() is None
    assert (await second.state_identity()).lost is None


async def test_pinned_digests_lists_every_first_digest(state: StateStore) -> None:
    assert await state.pinned_digests() == {}
    await state.remember_digest("npm", "left-pad/1.3.0.tgz", "sha256-a")
    await state.remember_digest("npm", "left-pad/1.3.0.tgz", "sha256-other")
    await state.remember_digest("pypi", "requests/x.whl", "sha256-b")
    assert await state.pinned_digests() == {
        "npm": {"left-pad/1.3.0.tgz": "sha256-a"},
        "pypi": {"requests/x.whl": "sha256-b"},
    }


async def test_restore_reseeds_rules_pins_audit_and_lineage(open_store: OpenStore) -> None:
    state, watcher_store = await open_store(), await open_store()
    await state.claim_identity("epoch-new")
    # Written after the loss, before the restore: kept, merged in time order.
    late = AuditEntry(at=T0 + timedelta(hours=2), actor="ops", client="c", action="x", target="t2")
    await state.add_rule(make_rule("new-block", created_at=T0 + timedelta(hours=2)), audit=late)
    await state.remember_digest("npm", "left-pad/1.3.0.tgz", "sha256-attacker")
    old = [
        AuditEntry(at=T0 + timedelta(hours=1), actor="secops", client="c", action="y", target="b1"),
        AuditEntry(at=T0, actor="secops", client="c", action="z", target="e1", after={"n": 1}),
    ]
    watcher = await start_watching(watcher_store, lambda n: state.add_rule(make_rule(f"warm-{n}")))
    try:
        version = await state.restore(
            rules=[make_rule("b1"), make_rule("e1", kind="exemption"), make_rule("new-block")],
            digests={"npm": {"left-pad/1.3.0.tgz": "sha256-first"}},
            audit=old,
            version_floor=41,
            predecessor="epoch-old",
        )
        assert version == 42
        assert await next_version_matching(watcher, 42) == 42
    finally:
        await watcher.aclose()

    restored = [rule.id for rule in await state.list_rules() if not rule.id.startswith("warm-")]
    assert sorted(restored) == ["b1", "e1", "new-block"]
    # The copy's first-seen digest wins over one recorded while the state was empty.
    assert await state.remember_digest("npm", "left-pad/1.3.0.tgz", "x") == "sha256-first"
    assert await state.audit_log() == [late, *old]
    seen = await state.state_identity()
    assert (seen.identity, seen.version, seen.restored_from) == (
        "epoch-new", 42, frozenset({"epoch-old"})
    )  # fmt: skip
    # Restoring twice adds nothing twice; the version still moves on.
    rules_before = await state.list_rules()
    again = await state.restore(
        rules=[make_rule("b1")], digests={}, audit=old, version_floor=3, predecessor="epoch-old"
    )
    assert again == 43
    assert await state.audit_log() == [late, *old]
    assert await state.list_rules() == rules_before


async def test_local_state_file_deleted_comes_back_without_identity(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = LocalState(path)
    await store.open()
    try:
        await store.claim_identity("epoch-a")
        await store.add_rule(make_rule("b1"))
        for suffix in ("", "-wal", "-shm"):
            await asyncio.to_thread(Path(f"{path}{suffix}").unlink, missing_ok=True)
        seen = await store.state_identity()
        assert (seen.identity, seen.version) == (None, 0)
        assert await store.list_rules() == []
    finally:
        await store.close()


async def test_redis_without_persistence_is_reported(redis_url: str, tmp_path: Path) -> None:
    # The session's redis-server runs with `save ""` and `appendonly no`.
    store = RedisState(redis_url, namespace=f"test-{uuid.uuid4().hex}")
    await store.open()
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        warning = await store.durability_warning()
        assert warning is not None
        assert "persists nothing" in warning
        assert "mirror state restore" in warning
        await raw.config_set("appendonly", "yes")
        try:
            assert await store.durability_warning() is None
        finally:
            await raw.config_set("appendonly", "no")
    finally:
        await raw.aclose()
        await store.close()
    assert await LocalState(tmp_path / "s.sqlite3").durability_warning() is None
