"""`mirror state status|restore|export|import`, on the state backend directly (like `mirror
serve`, from the settings; no server needs to run): compare the shared state with the
last-known copy in the state dir, re-seed a state that was emptied, replaced or rolled back
from that copy, and write or read the whole policy as a file (`mirror.statebackup`). Workers
notice a restore or an import by themselves (their identity check, the policy version)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from mirror import lastknown, statebackup
from mirror.cli.exits import EXIT_FAILED, EXIT_OK
from mirror.cli.settings import load_settings
from mirror.config import Config
from mirror.errors import StateUnavailable
from mirror.files import atomic_write
from mirror.lastknown import LastKnown, LastKnownError
from mirror.livepolicy import AUDIT_COPIED
from mirror.state import create_state
from mirror.state.base import StateIdentity, StateStore


class RestoreRefused(Exception):
    """Nothing to restore from, or nothing to restore."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StateReport:
    seen: StateIdentity
    rule_counts: dict[str, int]
    known: LastKnown | None
    problem: str | None  # why a worker would not trust the state, None when it would
    # The copy is the one another replica published with the lost state (`publish_loss`),
    # not the data dir's.
    published: bool = False

    def lines(self, config: Config) -> list[str]:
        seen = self.seen
        lines = [
            f"state: identity {seen.identity or '(none)'}, policy version {seen.version}",
            "state rules: " + _counts(self.rule_counts),
        ]
        if seen.restored_from:
            lines.append("state restored from: " + ", ".join(sorted(seen.restored_from)))
        if seen.lost is not None:
            lines.append(
                f"state lost, reported by a replica: identity {seen.lost}, policy version "
                f"{seen.lost_version} (its last-known copy is published with it)"
            )
        where = str(lastknown.path_in(config.state_directory))
        if self.published:
            where = "published by a replica with the lost state"
        if self.known is None:
            lines.append(f"last-known copy: none at {where}")
        else:
            lines.append(
                f"last-known copy ({where}): identity {self.known.identity}, policy version "
                f"{self.known.version}; " + _counts(self.known.counts())
            )
        if self.problem is None:
            lines.append("status: ok")
        else:
            lines.append(f"status: DEGRADED: {self.problem}")
            lines.append("run `mirror state restore` to re-seed the state from the copy")
        return lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{value} {name}" for name, value in counts.items())


@asynccontextmanager
async def _opened(config: Config) -> AsyncIterator[StateStore]:
    await asyncio.to_thread(config.state_directory.mkdir, parents=True, exist_ok=True)
    state = create_state(config)
    await state.open()
    try:
        yield state
    finally:
        await state.close()


async def _rule_counts(state: StateStore) -> dict[str, int]:
    counts = {"block": 0, "exemption": 0, "freeze": 0}
    for rule in await state.list_rules():
        counts[rule.kind] += 1
    return counts


async def status(config: Config) -> StateReport:
    """The state and the last-known copy side by side. Raises StateUnavailable, or
    LastKnownError for a damaged copy."""
    known = await asyncio.to_thread(lastknown.load, lastknown.path_in(config.state_directory))
    async with _opened(config) as state:
        seen = await state.state_identity()
        counts = await _rule_counts(state)
        chosen, published = await _copy_to_use(state, seen, known)
    return StateReport(
        seen=seen,
        rule_counts=counts,
        known=chosen,
        problem=lastknown.assess(chosen, seen),
        published=published,
    )


async def _copy_to_use(
    state: StateStore, seen: StateIdentity, local: LastKnown | None
) -> tuple[LastKnown | None, bool]:
    """The data dir's copy, or the one a replica published with a lost state when the data
    dir has none, or has one the state already continues while a loss is reported (a replica
    that took the fresh state for the one). Whether it is the published one."""
    if seen.lost is None or seen.lost in seen.restored_from:
        return local, False
    if local is not None and lastknown.assess(local, seen) is not None:
        return local, False
    published = await state.published_loss()
    if published is None:
        return local, False
    return await asyncio.to_thread(lastknown.decode, published[2]), True


async def restore(config: Config) -> StateReport:
    """Re-seed the state from the last-known copy: rules, digest pins and audit; the state
    keeps (or gets) its own identity and records the copy's as its predecessor, and the copy
    is rewritten for the restored state. Raises RestoreRefused when there is no copy or the
    state is already the one the copy came from. With no copy in the data dir, the copy a
    replica published with the lost state is used; the restore removes that report."""
    path = lastknown.path_in(config.state_directory)
    local = await asyncio.to_thread(lastknown.load, path)
    async with _opened(config) as state:
        seen = await state.state_identity()
        known, _ = await _copy_to_use(state, seen, local)
        if known is None:
            raise RestoreRefused(
                f"no last-known copy at {path}, and none published by a replica with a lost "
                "state: nothing to restore from"
            )
        problem = lastknown.assess(known, seen)
        if problem is None:
            raise RestoreRefused(
                "nothing to restore: the state is the one the last-known rules came from "
                f"(identity {seen.identity}, policy version {seen.version})"
            )
        if seen.identity is None:
            await state.claim_identity(uuid.uuid4().hex)
        await state.restore(
            rules=known.rules,
            digests=known.digests,
            audit=known.audit,
            version_floor=known.version,
            predecessor=known.identity,
        )
        after = await state.state_identity()
        if after.identity is None:  # emptied again while restoring
            raise RestoreRefused("the state lost its identity while restoring; run it again")
        restored = LastKnown(
            identity=after.identity,
            version=after.version,
            rules=tuple(await state.list_rules()),
            digests=await state.pinned_digests(),
            audit=tuple(await state.audit_log(limit=AUDIT_COPIED)),
        )
        await asyncio.to_thread(lastknown.save, path, lastknown.encode(restored))
        counts = await _rule_counts(state)
    return StateReport(seen=after, rule_counts=counts, known=restored, problem=None)


async def export_to(config: Config, path: Path, *, ledger: bool) -> statebackup.Export:
    """Write the state's export to `path` (atomically: a failed export leaves no half file)."""
    async with _opened(config) as state:
        export = await statebackup.read_export(state, ledger=ledger)
    await asyncio.to_thread(atomic_write, path, statebackup.encode(export))
    return export


async def import_from(config: Config, path: Path) -> statebackup.Export:
    """Re-seed the state from the export at `path`; nothing is written unless it decodes."""
    export = statebackup.decode(await asyncio.to_thread(path.read_bytes))
    async with _opened(config) as state:
        await statebackup.write_import(state, export)
    return export


def _run_transfer(args: argparse.Namespace, config: Config) -> int:
    if args.state_action == "export":
        export = asyncio.run(export_to(config, args.file, ledger=args.ledger))
        print(f"exported to {args.file}: " + _counts(export.counts()))
    else:
        export = asyncio.run(import_from(config, args.file))
        print(
            f"imported from {args.file} (state {export.policy.identity}, policy version "
            f"{export.policy.version}): " + _counts(export.counts())
        )
    return EXIT_OK


def run_state(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """`mirror state status|restore|export|import`: the report (status, restore) or what was
    written; exit 1 when the state is degraded, cannot be restored, or a file cannot be
    written or read."""
    config = load_settings(args, environ)
    try:
        if args.state_action in ("export", "import"):
            return _run_transfer(args, config)
        if args.state_action == "status":
            report = asyncio.run(status(config))
        else:
            report = asyncio.run(restore(config))
            print("restored: rules, digest pins and audit are back in the state")
    except RestoreRefused as exc:
        print(f"mirror state restore: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (StateUnavailable, LastKnownError, statebackup.ExportError) as exc:
        print(f"mirror state {args.state_action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # the export file (the state's own errors are StateUnavailable)
        where = getattr(args, "file", "")
        print(f"mirror state {args.state_action}: {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(report.lines(config)))
    return EXIT_OK if report.problem is None else EXIT_FAILED
