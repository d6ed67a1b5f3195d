"""`mirror state export` / `import` on real backends: SQLite → file → fresh SQLite, and
SQLite → file → Redis (the move to replicas), give back the same rules, pins, audit and
ledger; the target continues the exported state; a damaged file changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mirror import lastknown, statebackup
from mirror.model import AuditEntry, DownloadEvent, RuleRecord
from mirror.state.base import StateStore
from mirror.state.local import LocalState
from mirror.state.redis import RedisState
from mirror.statebackup import ExportError

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

OpenStore = Callable[[str], Awaitable[StateStore]]


@pytest.fixture
async def open_store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[OpenStore]:
    opened: list[StateStore] = []

    async def build(kind: str) -> StateStore:
        store: StateStore
        if kind == "local":
            store = LocalState(tmp_path / f"{uuid.uuid4().hex}.sqlite3")
        else:
            url: str = request.getfixturevalue("redis_url")
            store = RedisState(url, namespace=f"backup-{uuid.uuid4().hex}")
        await store.open()
        opened.append(store)
        return store

    yield build
    for store in opened:
        await store.close()


def rule(kind: str, package: str, index: int, **extra: object) -> RuleRecord:
    return RuleRecord(
        id=f"{kind[0]}-{index:012d}",
        kind=kind,  # type: ignore[arg-type]
        ecosystem="npm",
        package=package,
        versions="1.0.0" if kind != "freeze" else "*",
        reason=f"{kind} {package}",
        created_at=NOW - timedelta(hours=index),
        created_by="alice",
        expires_at=NOW + timedelta(days=index) if index % 2 else None,
        data=extra,  # type: ignore[arg-type]
    )


async def populate(state: StateStore) -> None:
    for index, (kind, package) in enumerate(
        [("block", "left-pad"), ("exemption", "@corp/ui"), ("block", "evil")], start=1
    ):
        record = rule(kind, package, index)
        audit = AuditEntry(
            at=record.created_at, actor="alice", client="10.0.0.1", action=f"{kind}.create",
            target=f"npm:{package}", after={"id": record.id},
        )  # fmt: skip
        await state.add_rule(record, audit=audit)
    frozen = rule("freeze", "*", 4, published_after=(NOW - timedelta(days=1)).isoformat())
    await state.add_rule(frozen)
    await state.append_audit(
        AuditEntry(at=NOW, actor="bob", client="10.0.0.2", action="exemption.delete", target="x")
    )
    await state.remember_digest("npm", "left-pad/1.1.0/left-pad-1.1.0.tgz", "sha512-aaa")
    await state.remember_digest("maven", "org/x/1/x-1.jar", "sha1-bbb")
    await state.record_downloads(
        [
            DownloadEvent(
                ecosystem="npm", package="left-pad", version="1.0.0",
                filename="left-pad-1.0.0.tgz", client=f"10.1.0.{n}",
                at=NOW - timedelta(minutes=n), last_at=NOW, count=n,
            )
            for n in range(1, 4)
        ]
        # Who: one address with two read tokens (two rows), and what each client said.
        + [
            DownloadEvent(
                ecosystem="npm", package="left-pad", version="1.0.0",
                filename="left-pad-1.0.0.tgz", client="10.1.0.1", token=token,
                at=NOW - timedelta(minutes=9), last_at=NOW, count=2,
                user_agent="npm/10.8.2 node/v22.11.0 linux x64 workspaces/false ci/github-actions",
                ci="github-actions", command="ci", session=f"session-{token}",
            )
            for token in ("ci-builds", "release")
        ]
    )  # fmt: skip


async def snapshot(state: StateStore) -> tuple[object, ...]:
    return (
        await state.list_rules(),
        await state.pinned_digests(),
        await state.audit_log(limit=100),
        sorted(await state.downloads("npm", "left-pad"), key=lambda row: (row.client, row.token)),
    )


@pytest.mark.parametrize("target", ["local", "redis"])
async def test_export_then_import_gives_back_the_whole_state(
    open_store: OpenStore, target: str
) -> None:
    source = await open_store("local")
    await populate(source)
    data = statebackup.encode(await statebackup.read_export(source, ledger=True))
    fresh = await open_store(target)
    await statebackup.write_import(fresh, statebackup.decode(data))
    assert await snapshot(fresh) == await snapshot(source)
    # The target continues the exported state: a replica whose last-known copy came from the
    # source trusts it.
    exported = (await source.state_identity()).identity
    seen = await fresh.state_identity()
    assert exported is not None
    assert exported in seen.restored_from
    known = lastknown.LastKnown(identity=exported, version=1, rules=())
    assert lastknown.assess(known, seen) is None


async def test_importing_twice_changes_nothing(open_store: OpenStore) -> None:
    source = await open_store("local")
    await populate(source)
    export = statebackup.decode(
        statebackup.encode(await statebackup.read_export(source, ledger=False))
    )
    target = await open_store("local")
    await statebackup.write_import(target, export)
    once = await snapshot(target)
    await statebackup.write_import(target, export)
    assert await snapshot(target) == once
    assert once[3] == []  # no ledger asked for, none written


async def test_rules_added_after_an_export_stay_on_import(open_store: OpenStore) -> None:
    source = await open_store("local")
    await populate(source)
    export = await statebackup.read_export(source, ledger=False)
    target = await open_store("redis")
    newer = rule("block", "newer", 9)
    await target.add_rule(newer)
    await statebackup.write_import(target, export)
    ids = {record.id for record in await target.list_rules()}
    assert ids == {record.id for record in export.policy.rules} | {newer.id}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"format": "something-else"}', "not a state export"),
        (
            b'{"format": "quarantine-mirror-state-export", "format_version": 99}',
            "format version 99",
        ),
        (
            b'{"format": "quarantine-mirror-state-export", "format_version": 1, "policy": {}}',
            "policy cannot be read",
        ),
    ],
)
def test_a_file_that_is_not_an_export_is_refused_by_name(data: bytes, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        statebackup.decode(data)


async def test_the_ledger_keeps_who_downloaded_through_export_and_import(
    open_store: OpenStore,
) -> None:
    source = await open_store("local")
    await populate(source)
    export = statebackup.decode(
        statebackup.encode(await statebackup.read_export(source, ledger=True))
    )
    target = await open_store("redis")
    await statebackup.write_import(target, export)
    rows = {(row.client, row.token): row for row in await target.downloads("npm", "left-pad")}
    assert sorted(rows) == [
        ("10.1.0.1", ""), ("10.1.0.1", "ci-builds"), ("10.1.0.1", "release"),
        ("10.1.0.2", ""), ("10.1.0.3", ""),
    ]  # fmt: skip
    release = rows[("10.1.0.1", "release")]
    assert (release.ci, release.command, release.session, release.count) == (
        "github-actions", "ci", "session-release", 2,
    )  # fmt: skip
    assert release.user_agent.startswith("npm/10.8.2 ")
    assert rows[("10.1.0.2", "")].user_agent == ""


async def test_a_backup_written_before_the_ledger_kept_who_still_imports(
    open_store: OpenStore,
) -> None:
    source = await open_store("local")
    await populate(source)
    doc = json.loads(statebackup.encode(await statebackup.read_export(source, ledger=True)))
    for row in doc["ledger"]:
        for name in ("token", "user_agent", "ci", "command", "session"):
            del row[name]
    target = await open_store("local")
    await statebackup.write_import(target, statebackup.decode(json.dumps(doc).encode()))
    rows = await target.downloads("npm", "left-pad")
    # The two tokens' rows of 10.1.0.1 are one row without them: counts 1 + 2 + 2.
    assert sorted((row.client, row.token, row.ci, row.count) for row in rows) == [
        ("10.1.0.1", "", "", 5), ("10.1.0.2", "", "", 2), ("10.1.0.3", "", "", 3),
    ]  # fmt: skip


async def test_a_ledger_row_with_a_token_that_is_not_text_is_refused(
    open_store: OpenStore,
) -> None:
    source = await open_store("local")
    await populate(source)
    doc = json.loads(statebackup.encode(await statebackup.read_export(source, ledger=True)))
    doc["ledger"][0]["token"] = {"name": "x"}
    with pytest.raises(ExportError, match="token must be text"):
        statebackup.decode(json.dumps(doc).encode())


async def test_a_damaged_ledger_row_refuses_the_whole_file(open_store: OpenStore) -> None:
    source = await open_store("local")
    await populate(source)
    text = statebackup.encode(await statebackup.read_export(source, ledger=True)).decode()
    damaged = text.replace('"count": 3', '"count": -3').encode()
    assert damaged != text.encode()
    with pytest.raises(ExportError, match="ledger cannot be read"):
        statebackup.decode(damaged)
