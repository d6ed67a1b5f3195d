"""Pre-warm jobs (`POST /api/v1/warm`): every allowed pinned version of a lockfile fetched into
the cache through the serving path, so an offline or flaky-network build installs from the
mirror alone.

Choices, stated plainly:
- In process, not a request to itself: each pin is explained by its adapter, then its files
  are found by the adapter exactly as for a client's request (`Ecosystem.warm_refs`: the same
  documents, the same policy check, which refuses held and blocked versions) and stored by
  `ArtifactServer.store` (the shared, verified, single-flight download clients join). Nobody
  receives the bytes, so the download ledger is not written: the mirror itself is not one of
  "who pulled it".
- A job runs in the worker process that took the POST, at most `WARM_PARALLEL` pins at once,
  at most `MAX_RUNNING_WARM_JOBS` jobs per worker (429 beyond), within `WARM_JOB_SECONDS`.
  Its status is a JSON file in the state directory (`warm/<id>.json`), rewritten as it
  progresses: `GET /api/v1/warm/{id}` answers from it in whichever worker process of this
  server the GET lands (they share the state directory). A status not rewritten for
  `STALE_SECONDS` belongs to a worker that died: `interrupted`. The newest
  `MAX_KEPT_WARM_JOBS` statuses are kept, none past `WARM_KEEP_SECONDS`.
- Replicas never share a state directory, but they share the audit log: the job's start
  (`warm.start`: what was asked) and its end (`warm.finish`: the counts) are audited, so a GET
  on another replica answers from the audit log (state and counts; the full summary is on the
  replica that ran it). Behind a load balancer, `?wait=SECONDS` is the robust way: the POST
  waits (bounded) and answers the finished job with its summary, wherever it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from mirror.admin.auth import Caller
from mirror.blobs.store import BlobVanished
from mirror.ecosystems.base import Ecosystem
from mirror.errors import (
    Blocked,
    Busy,
    Held,
    MirrorError,
    NotFound,
    Quarantined,
    StateUnavailable,
)
from mirror.files import atomic_write
from mirror.lockfiles.pins import Lockfile, Pin
from mirror.lockfiles.report import pin_result
from mirror.lockfiles.warming import (
    MAX_KEPT_WARM_JOBS,
    MAX_RUNNING_WARM_JOBS,
    OUTCOMES,
    WARM_KEEP_SECONDS,
    WARM_PARALLEL,
    is_pom_packaging,
    refusal,
    warm_summary,
)
from mirror.policy import iso_seconds as iso
from mirror.rulechanges import audit_entry, log_change
from mirror.services import Services

log = logging.getLogger(__name__)

# A job ends after this; pins not done by then are listed as failed.
WARM_JOB_SECONDS: Final = 3600.0
# A running job rewrites its status at most this often while it progresses, and at least this
# often while it waits (a heartbeat); a running status older than STALE_SECONDS is a dead one.
WRITE_EVERY: Final = 1.0
HEARTBEAT_SECONDS: Final = 5.0
STALE_SECONDS: Final = 60.0
JOB_ID: Final = re.compile(r"[0-9a-f]{24}")
JOBS_DIRECTORY: Final = "warm"


@dataclass(slots=True)
class WarmJob:
    """One job's request and progress (only the worker running it holds this)."""

    id: str
    caller: Caller
    name: str
    lockfile: Lockfile
    pins: Sequence[Pin]
    started: datetime
    results: list[dict[str, Any]] = field(default_factory=list)
    finished: datetime | None = None
    summary: dict[str, Any] | None = None
    interrupted: bool = False
    task: asyncio.Task[None] | None = None

    def status(self, now: datetime) -> dict[str, Any]:
        """What `GET /api/v1/warm/{id}` answers (and the status file holds)."""
        counts = dict.fromkeys(OUTCOMES, 0)
        for result in self.results:
            counts[result["outcome"]] += 1
        if self.summary is not None:
            counts = {outcome: len(self.summary[outcome]) for outcome in OUTCOMES}
        return {
            "id": self.id,
            "state": (
                "running"
                if self.summary is None
                else "interrupted"
                if self.interrupted
                else "finished"
            ),
            "started": iso(self.started),
            "finished": iso(self.finished),
            "updated": iso(now),
            "requested_by": self.caller.actor,
            "file": self.name,
            "format": self.lockfile.format,
            "pins": len(self.pins),
            "done": len(self.results) if self.summary is None else len(self.pins),
            "counts": counts,
            "bytes": sum(r.get("bytes", 0) for r in self.results if r["outcome"] == "fetched"),
            "summary": self.summary,
        }


class WarmJobs:
    """This worker's warm jobs: started, run, their status written to `directory`."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._running: dict[str, WarmJob] = {}

    async def start(
        self,
        services: Services,
        adapters: Mapping[str, Ecosystem],
        caller: Caller,
        name: str,
        lockfile: Lockfile,
        pins: Sequence[Pin],
        asked: Mapping[str, Any],
    ) -> WarmJob:
        """A new job, audited (`warm.start` with what was `asked`), then running. Raises Busy
        when this worker runs as many as it may, StateUnavailable when the start cannot be
        audited (then nothing runs)."""
        if len(self._running) >= MAX_RUNNING_WARM_JOBS:
            raise Busy(
                f"this worker already runs {len(self._running)} warm jobs; retry when one has "
                "finished (GET /api/v1/warm/{id} shows their progress)"
            )
        job = WarmJob(
            id=secrets.token_hex(12),
            caller=caller,
            name=name,
            lockfile=lockfile,
            pins=pins,
            started=services.clock.now(),
        )
        self._running[job.id] = job  # its slot, taken before the audit is awaited
        entry = audit_entry(
            services.clock, caller.actor, caller.client, "warm.start", job.id, None, asked
        )
        try:
            await services.state.append_audit(entry)
            log_change(entry)
            # Written before the answer goes out: a GET on another worker then finds it.
            await self._write(job, services)
        except BaseException:
            del self._running[job.id]
            raise
        job.task = asyncio.get_running_loop().create_task(
            self._run(job, services, adapters), name=f"warm {job.id}"
        )
        return job

    async def close(self) -> None:
        """Stop the running jobs (the worker is shutting down): their statuses say so."""
        tasks = [job.task for job in self._running.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def path(self, job_id: str) -> Path:
        return self._directory / f"{job_id}.json"

    async def status(self, job_id: str, now: datetime) -> dict[str, Any] | None:
        """The status of `job_id` from its file (any worker of this server wrote it); None
        when there is none."""
        if not JOB_ID.fullmatch(job_id):
            return None
        try:
            raw = await asyncio.to_thread(self.path(job_id).read_bytes)
            status: dict[str, Any] = json.loads(raw)
        except (OSError, ValueError):
            return None
        if status.get("state") == "running" and job_id not in self._running:
            updated = datetime.fromisoformat(str(status.get("updated")))
            if now - updated > timedelta(seconds=STALE_SECONDS):
                status["state"] = "interrupted"
        return status

    # running ------------------------------------------------------------------------------

    async def _run(
        self, job: WarmJob, services: Services, adapters: Mapping[str, Ecosystem]
    ) -> None:
        parallel = asyncio.Semaphore(WARM_PARALLEL)

        async def one(pin: Pin) -> None:
            async with parallel:
                try:
                    result = await warm_pin(services, adapters, pin)
                except Exception:  # a bug must fail one pin, not the job
                    log.exception("warming %s failed", pin)
                    why = "warming it failed; the mirror logged the details"
                    result = {**pin_result(pin, None, None, why), "outcome": "failed"}
                job.results.append(result)

        writer = asyncio.get_running_loop().create_task(
            self._keep_writing(job, services), name=f"warm {job.id} status"
        )
        cause = "the job's time limit ran out"
        try:
            async with asyncio.timeout(WARM_JOB_SECONDS):
                await asyncio.gather(*(one(pin) for pin in job.pins))
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            cause = "the mirror stopped before this pin was warmed"
            job.interrupted = True
            raise
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            done = {(r["ecosystem"], r["package"], r["version"]) for r in job.results}
            unfinished = [
                pin for pin in job.pins if (pin.ecosystem, pin.package, pin.version) not in done
            ]
            summary = warm_summary(job.results, unfinished, why=cause)
            summary["unpinned"] = list(job.lockfile.unpinned)
            summary["skipped"] = list(job.lockfile.skipped)
            job.summary = summary
            job.finished = services.clock.now()
            self._running.pop(job.id, None)
            await asyncio.shield(self._finish(job, services))

    async def _keep_writing(self, job: WarmJob, services: Services) -> None:
        """Rewrite the status every WRITE_EVERY when it changed, and every HEARTBEAT_SECONDS
        anyway (a heartbeat). Polled, not woken: a plain sleep is what cancels cleanly."""
        written, last = len(job.results), time.monotonic()
        while True:
            await asyncio.sleep(WRITE_EVERY)
            if len(job.results) != written or time.monotonic() - last >= HEARTBEAT_SECONDS:
                written, last = len(job.results), time.monotonic()
                await self._write(job, services)

    async def _write(self, job: WarmJob, services: Services) -> None:
        data = json.dumps(job.status(services.clock.now())).encode()
        try:
            await asyncio.to_thread(self._write_file, job.id, data)
        except OSError as exc:
            log.error("could not write the status of warm job %s: %s", job.id, exc)

    def _write_file(self, job_id: str, data: bytes) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path(job_id), data)

    async def _finish(self, job: WarmJob, services: Services) -> None:
        """The final status, written and audited; then old statuses are pruned."""
        await self._write(job, services)
        status = job.status(services.clock.now())
        entry = audit_entry(
            services.clock,
            job.caller.actor,
            job.caller.client,
            "warm.finish",
            job.id,
            None,
            {key: status[key] for key in ("file", "format", "pins", "counts", "bytes")},
        )
        try:
            await services.state.append_audit(entry)
            log_change(entry)
        except StateUnavailable as exc:
            log.error("warm job %s finished; its end could not be audited: %s", job.id, exc)
        await asyncio.to_thread(self._prune)

    def _prune(self) -> None:
        """Keep the newest MAX_KEPT_WARM_JOBS statuses, none older than WARM_KEEP_SECONDS."""
        try:
            files = [(path.stat().st_mtime, path) for path in self._directory.glob("*.json")]
        except OSError:
            return
        files.sort(reverse=True)
        oldest = time.time() - WARM_KEEP_SECONDS
        for index, (modified, path) in enumerate(files):
            if index >= MAX_KEPT_WARM_JOBS or modified < oldest:
                with contextlib.suppress(OSError):
                    os.unlink(path)


async def warm_pin(
    services: Services, adapters: Mapping[str, Ecosystem], pin: Pin
) -> dict[str, Any]:
    """Explain `pin` as a preflight does, then, if it installs, store every file a build asks
    for: one result with its `outcome` (fetched, cached, held, blocked, failed)."""
    adapter = adapters.get(pin.ecosystem)
    if adapter is None:
        why = f"{pin.ecosystem} is not enabled on this mirror"
        return {**pin_result(pin, "error", None, why), "outcome": "failed"}
    try:
        explanation = await adapter.explain(pin.package, pin.version)
    except MirrorError as exc:  # a bad name, an upstream that cannot answer, no such version
        return {**pin_result(pin, "error", None, exc.message), "outcome": "failed"}
    result = pin_result(pin, explanation.verdict, iso(explanation.until), explanation.detail)
    outcome = refusal(explanation.verdict)
    if outcome is not None:
        return {**result, "outcome": outcome}
    try:
        files, size, fetched = await _store_files(services, adapter, pin)
    except Held as exc:  # refused since it was explained (a block added meanwhile)
        held = "blocked" if isinstance(exc, Blocked) else "held"
        until = iso(exc.until) if isinstance(exc, Quarantined) else None
        return {**result, "outcome": held, "until": until, "detail": exc.message}
    except MirrorError as exc:
        return {**result, "outcome": "failed", "detail": exc.message}
    return {**result, "outcome": "fetched" if fetched else "cached", "files": files, "bytes": size}


async def _store_files(services: Services, adapter: Ecosystem, pin: Pin) -> tuple[int, int, bool]:
    """(files, their bytes, whether any had to be fetched) of `pin`, each stored."""
    refs = await adapter.warm_refs(pin.package, pin.version)
    size = 0
    fetched = False
    for ref in refs:
        entry, cached = await services.artifacts.store(ref)
        size += entry.size
        fetched = fetched or not cached
        if pin.ecosystem == "maven" and len(refs) == 1:
            # No jar upstream: fine for a parent or a BOM only (pom packaging).
            try:
                pom = await services.blobs.read_verified(entry)
            except BlobVanished:
                pom = b""
            if not is_pom_packaging(pom):
                raise NotFound(
                    f"{pin.package}:{pin.version} has no jar upstream and its pom does not "
                    "declare pom packaging"
                )
    return len(refs), size, fetched


async def audited_status(services: Services, job_id: str) -> dict[str, Any] | None:
    """What the audit log (shared by every replica) knows of `job_id`: its start and, once
    finished, its counts. None when it knows nothing."""
    if not JOB_ID.fullmatch(job_id):
        return None
    page = await services.state.audit_page(limit=10, target=job_id)
    entries = {entry.action: entry for entry in page.entries}
    start, finish = entries.get("warm.start"), entries.get("warm.finish")
    if start is None or start.after is None:
        return None
    asked = start.after
    finished = finish.after if finish is not None and finish.after is not None else None
    return {
        "id": job_id,
        "state": "finished" if finished is not None else "running",
        "started": iso(start.at),
        "finished": iso(finish.at) if finish is not None else None,
        "updated": iso(finish.at if finish is not None else start.at),
        "requested_by": start.actor,
        "file": asked.get("file"),
        "format": asked.get("format"),
        "pins": asked.get("pins"),
        "done": asked.get("pins") if finished is not None else None,
        "counts": finished.get("counts") if finished is not None else None,
        "bytes": finished.get("bytes") if finished is not None else None,
        "summary": None,
        "note": "this server keeps no status of this job (it runs or ran on another replica, "
        "or its status was pruned): this is what the audit log says of it; the full summary "
        "is on the replica that ran it (POST with ?wait= to get it in the answer)",
    }
