"""Downloads noted as sent (`DownloadLedger.note_served`), against real SQLite state: they
become the rows the ledger always wrote (one per client, token and file, first and last seen,
how many), with the client behind trusted proxies as `client_of` names it and what it says
about itself as `describe_client` reads it; at most `max_served` notes wait unread, however
many arrive; nothing is lost at close, during a write, or while state is down."""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from multidict import CIMultiDict

from mirror.config import IPNetwork
from mirror.forwarded import client_of
from mirror.identity import describe_client
from mirror.ledger import MAX_IDENTITIES, DownloadLedger
from mirror.metrics import Metrics
from mirror.model import ArtifactRef, DownloadEvent
from mirror.state.local import LocalState
from tests.integration.test_ledger import SlowState
from tests.unit.test_identity import MAVEN, NPM, NPM_CI, PIP, PIP_CI, PNPM, UV, UV_CI, YARN

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
PROXIES: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("10.9.0.0/16"),
    ipaddress.ip_network("fd00::/8"),
)


def artifact(version: str = "1.14.1") -> ArtifactRef:
    return ArtifactRef(
        ecosystem="npm",
        package="axios",
        version=version,
        filename=f"axios-{version}.tgz",
        upstream_url=f"http://127.0.0.1:9/axios/-/axios-{version}.tgz",
        digests=(),
    )


def served(
    ledger: DownloadLedger,
    at: datetime,
    *,
    ref: ArtifactRef | None = None,
    peer: str | None = "10.0.0.1",
    forwarded_for: str | None = None,
    headers: dict[str, str] | None = None,
    token: str = "",
) -> None:
    """One download noted as the artifact server notes it, from these request headers."""
    sent = CIMultiDict(headers or {})
    ledger.note_served(
        ref or artifact(),
        peer=peer,
        forwarded_for=forwarded_for,
        user_agent=sent.get("User-Agent"),
        command=sent.get("npm-command"),
        session=sent.get("npm-session"),
        token=token,
        at=at,
    )


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[LocalState]:
    store = LocalState(tmp_path / "state.sqlite3")
    await store.open()
    yield store
    await store.close()


async def test_repeats_by_one_client_are_one_row_with_first_and_last_seen(
    state: LocalState,
) -> None:
    ledger = DownloadLedger(state, Metrics(), backend="local", flush_interval=60, max_served=8)
    # Out of order (two workers' clocks, a slow response), over several gatherings.
    minutes = [3, 0, 7, 5, 1, 9, 2, 4, 8, 6] * 3
    for minute in minutes:
        served(ledger, T0 + timedelta(minutes=minute), headers={"User-Agent": NPM})
    served(ledger, T0 + timedelta(minutes=4), ref=artifact("1.14.0"))
    await ledger.flush()
    served(ledger, T0 + timedelta(minutes=30), headers={"User-Agent": NPM_CI})
    await ledger.close()
    rows = await state.downloads("npm", "axios")
    assert [(r.version, r.client, r.at, r.last_seen, r.count, r.ci) for r in rows] == [
        ("1.14.1", "10.0.0.1", T0, T0 + timedelta(minutes=30), 31, "github-actions"),
        ("1.14.0", "10.0.0.1", T0 + timedelta(minutes=4), T0 + timedelta(minutes=4), 1, ""),
    ]


async def test_rows_are_the_rows_of_events_noted_one_by_one(tmp_path: Path) -> None:
    # The same downloads through `note` (the event built per request, as the artifact server
    # did) and through `note_served`: the same rows, to the field.
    stores = [LocalState(tmp_path / f"{name}.sqlite3") for name in ("events", "served")]
    for store in stores:
        await store.open()
    by_event = DownloadLedger(stores[0], Metrics(), backend="local", flush_interval=60)
    by_served = DownloadLedger(
        stores[1],
        Metrics(),
        backend="local",
        flush_interval=60,
        trusted_proxies=PROXIES,
        max_served=64,
    )
    chooser = random.Random(17)  # noqa: S311 - reproducible test data, not a secret
    user_agents = [NPM, NPM_CI, PIP_CI, UV_CI, MAVEN, "curl/8.5.0"]
    for n in range(2_000):
        ref = artifact(chooser.choice(["1.14.0", "1.14.1"]))
        peer = chooser.choice(["10.0.0.1", "10.0.0.2", "10.9.0.5"])
        forwarded_for = chooser.choice([None, "192.0.2.7", "6.6.6.6, 192.0.2.8"])
        headers = {"User-Agent": chooser.choice(user_agents)}
        if chooser.random() < 0.5:
            headers |= {"npm-command": "ci", "npm-session": f"{chooser.randrange(4):016x}"}
        token = chooser.choice(["", "team-a"])
        at = T0 + timedelta(seconds=chooser.randrange(5))  # many ties, out of order
        who = describe_client(CIMultiDict(headers), token=token)
        by_event.note(
            DownloadEvent(
                ecosystem=ref.ecosystem,
                package=ref.package,
                version=ref.version,
                filename=ref.filename,
                client=client_of(peer, forwarded_for, PROXIES),
                at=at,
                token=who.token,
                user_agent=who.user_agent,
                ci=who.ci,
                command=who.command,
                session=who.session,
            )
        )
        served(
            by_served,
            at,
            ref=ref,
            peer=peer,
            forwarded_for=forwarded_for,
            headers=headers,
            token=token,
        )
        if n == 1_000:
            await asyncio.gather(by_event.flush(), by_served.flush())
    await asyncio.gather(by_event.close(), by_served.close())
    expected, got = [await store.downloads("npm", "axios") for store in stores]
    assert len(got) > 10
    assert got == expected
    for store in stores:
        await store.close()


HEADER_SETS: list[dict[str, str]] = [
    {},
    {"User-Agent": NPM_CI, "npm-command": "ci", "npm-session": "3a2f3e59c1bf2e46"},
    {"User-Agent": NPM, "npm-command": "install"},
    {"User-Agent": PIP},
    {"User-Agent": PIP_CI},
    {"User-Agent": UV},
    {"User-Agent": UV_CI},  # its "ci" lies past the stored length
    {"User-Agent": PNPM},
    {"User-Agent": YARN},
    {"User-Agent": MAVEN},
    {"User-Agent": "Bun/1.1.38"},
    {"User-Agent": "npm/10 ci/<script>"},
    {"User-Agent": "   \t  "},
    {"User-Agent": "evil\x1b[31m/1.0\r\n\u202e ok\u2028" + "A" * 100_000},
    {"User-Agent": "evil\u202e/1.0 \u2028" + "x" * 1000, "npm-command": "install; rm -rf /"},
    {"User-Agent": 'pip/24.0 {"x":{"ci":true}}', "npm-session": "x" * 65},
    {"User-Agent": NPM_CI, "npm-command": "", "npm-session": "-leading-dash"},
    # Past what a row keeps of a note: the controls fill the prefix that is read.
    {"User-Agent": "\x07" * 9000 + NPM_CI, "npm-command": "i" * 8000},
]


async def test_each_client_is_described_as_describe_client_reads_it(state: LocalState) -> None:
    ledger = DownloadLedger(state, Metrics(), backend="local", flush_interval=60)
    expected = {}
    for n, headers in enumerate(HEADER_SETS):
        for token in ("", "team-a"):
            client = f"10.0.{n}.{len(token)}"
            for repeat in range(3):  # remembered after the first: the same answer
                at = T0 + timedelta(seconds=repeat)
                served(ledger, at, peer=client, headers=headers, token=token)
            expected[client, token] = describe_client(CIMultiDict(headers), token=token)
    await ledger.close()
    rows = await state.downloads("npm", "axios")
    assert len(rows) == len(expected)
    for row in rows:
        who = expected[row.client, row.token]
        assert (row.token, row.user_agent, row.ci, row.command, row.session) == (
            who.token,
            who.user_agent,
            who.ci,
            who.command,
            who.session,
        )
        assert row.count == 3


async def test_more_distinct_clients_than_are_remembered_are_still_described(
    state: LocalState,
) -> None:
    ledger = DownloadLedger(state, Metrics(), backend="local", flush_interval=60)
    # A client each, each with its own npm session: more reports than are remembered.
    clients = [f"10.{n // 256}.{n % 256}.1" for n in range(MAX_IDENTITIES + 500)]
    for n, client in enumerate([*clients, *clients[:10]]):  # the first ten again, forgotten
        headers = {"User-Agent": NPM_CI, "npm-session": f"{n % len(clients):016x}"}
        served(ledger, T0 + timedelta(seconds=n), peer=client, headers=headers)
    await ledger.close()  # every note read
    assert len(ledger._identities) <= MAX_IDENTITIES  # the memory of identities is bounded
    rows = await state.downloads("npm", "axios")
    assert [(r.client, r.session, r.ci, r.count) for r in rows] == [
        (client, f"{n:016x}", "github-actions", 2 if n < 10 else 1)
        for n, client in enumerate(clients)
    ]


@pytest.mark.parametrize(
    ("peer", "forwarded_for"),
    [
        ("10.9.0.1", "192.0.2.7"),  # through the proxy: the client it saw
        ("10.9.0.1", "6.6.6.6, 192.0.2.7, 10.9.3.3"),  # two proxies; the left hop is forged
        ("10.9.0.1", "not-an-address, 192.0.2.7"),
        ("10.9.0.1", "garbage"),  # the proxy itself
        ("10.9.0.1", None),
        ("[fd00::1]:443", "[2001:db8::5]:1234"),
        ("::ffff:10.9.0.2", "192.0.2.9:80"),
        ("203.0.113.4", "192.0.2.7"),  # not a proxy: its header is ignored
        (None, "192.0.2.7"),
    ],
)
async def test_the_client_behind_trusted_proxies_is_the_one_client_of_names(
    state: LocalState, peer: str | None, forwarded_for: str | None
) -> None:
    ledger = DownloadLedger(
        state, Metrics(), backend="local", flush_interval=60, trusted_proxies=PROXIES
    )
    served(ledger, T0, peer=peer, forwarded_for=forwarded_for)
    await ledger.close()
    [row] = await state.downloads("npm", "axios")
    assert row.client == client_of(peer, forwarded_for, PROXIES)


async def test_notes_waiting_unread_stay_bounded_under_load(state: LocalState) -> None:
    ledger = DownloadLedger(state, Metrics(), backend="local", flush_interval=60, max_served=256)
    most_waiting = 0
    for n in range(10_000):
        served(ledger, T0 + timedelta(milliseconds=n), headers={"User-Agent": PIP_CI})
        most_waiting = max(most_waiting, ledger.pending)  # one row plus notes unread
    assert most_waiting <= 256
    await ledger.close()
    [row] = await state.downloads("npm", "axios")
    assert (row.count, row.at, row.last_seen) == (10_000, T0, T0 + timedelta(seconds=9.999))


async def test_notes_are_written_within_the_flush_interval(state: LocalState) -> None:
    ledger = DownloadLedger(state, Metrics(), backend="local", flush_interval=0.05)
    served(ledger, T0, peer="10.0.0.1")
    served(ledger, T0, peer="10.0.0.2")
    for _ in range(100):  # bounded: 2 s
        if len(await state.downloads("npm", "axios")) == 2:
            break
        await asyncio.sleep(0.02)
    assert [e.client for e in await state.downloads("npm", "axios")] == ["10.0.0.1", "10.0.0.2"]
    await ledger.close()


async def test_a_note_during_a_write_is_written_without_another_note(tmp_path: Path) -> None:
    store = SlowState(tmp_path / "state.sqlite3")
    await store.open()
    ledger = DownloadLedger(store, Metrics(), backend="local", flush_interval=0.01)
    served(ledger, T0, peer="10.0.0.1")
    async with asyncio.timeout(5):
        await store.writing.wait()
    served(ledger, T0, peer="10.0.0.2")  # unread while the first is written
    store.release.set()
    for _ in range(100):  # bounded: 2 s, no close and no other note
        if len(await store.downloads("npm", "axios")) == 2:
            break
        await asyncio.sleep(0.02)
    assert [e.client for e in await store.downloads("npm", "axios")] == ["10.0.0.1", "10.0.0.2"]
    await ledger.close()
    await store.close()


async def test_close_writes_every_note(state: LocalState) -> None:
    ledger = DownloadLedger(state, Metrics(), backend="local", flush_interval=60)
    for n in range(3_000):  # folded twice on the way, the rest unread at close
        served(ledger, T0 + timedelta(seconds=n), peer=f"10.0.{n % 7}.1", ref=artifact())
    await ledger.close()
    rows = await state.downloads("npm", "axios")
    assert sorted((r.client, r.count) for r in rows) == [
        (f"10.0.{k}.1", len(range(k, 3_000, 7))) for k in range(7)
    ]


async def test_notes_survive_a_state_outage(tmp_path: Path) -> None:
    store = LocalState(tmp_path / "state.sqlite3")  # not open yet: every call fails
    metrics = Metrics()
    ledger = DownloadLedger(store, metrics, backend="local", flush_interval=60)
    served(ledger, T0, peer="10.0.0.1")
    served(ledger, T0 + timedelta(seconds=1), peer="10.0.0.1")
    assert await ledger.flush() is False
    assert ledger.pending == 1  # read into one row, kept
    assert metrics.registry.get_sample_value("mirror_state_errors_total", {"backend": "local"})
    served(ledger, T0 + timedelta(seconds=2), peer="10.0.0.1")  # while state is down
    await store.open()  # once state answers, the kept row and the new note are written
    await ledger.close()
    [row] = await store.downloads("npm", "axios")
    assert (row.client, row.count, row.at, row.last_seen) == (
        "10.0.0.1",
        3,
        T0,
        T0 + timedelta(seconds=2),
    )
    await store.close()
