"""PEP 658 core metadata the mirror derives itself: `METADATA` read from a wheel it has cached
and verified, for wheels whose upstream index declares no metadata file, so resolvers read a
few kB instead of the whole wheel.

Choices, stated plainly:
- The extracted bytes are a blob of the artifact store under a key of the wheel's sha256
  (`derived_key`): extracted once, shared by every worker process and replica, evicted like
  any artifact. They are derived from verified bytes only, so they need no upstream digest.
- Which wheels of a project have derived metadata is kept on disk next to the cache,
  `<data_dir>/pypi-metadata/<project>/<wheel sha256>.<METADATA sha256>` (empty files: one
  directory listing gives a page render every declaration), and `generation`, rewritten
  (atomically) after each new one. The generation is part of a rendered page's key, so a
  wheel cached after a page was rendered changes the page in every worker process at its
  next request: one small read per page request, one listing per render.
- A marker outlives an evicted blob: the page keeps declaring the metadata (its sha256 is a
  function of the wheel's verified bytes), and a request for it extracts it again from the
  cached wheel, or, when the wheel is gone too, fetches the wheel (verified as always) first.
  Only then: a `.metadata` request never downloads a wheel the page did not declare.
- A wheel without a readable METADATA (see `wheelmetadata`) is remembered per process and
  simply gets no declaration; the wheel itself is served as always.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mirror import errors
from mirror.artifacts.serve import ArtifactServer
from mirror.blobs.store import BlobEntry, BlobStore, BlobVanished, check_digests
from mirror.budget import BudgetedLRU, ByteBudget
from mirror.ecosystems.pypi.wheelmetadata import (
    WheelMetadataError,
    is_wheel,
    read_wheel_metadata,
)
from mirror.files import atomic_write
from mirror.model import ArtifactRef

log = logging.getLogger(__name__)

DIRECTORY_NAME = "pypi-metadata"
GENERATION_FILE = "generation"
# Wheels whose METADATA is being extracted at once, per process; more wait for their next
# request (the wheel is served meanwhile; only the declaration waits).
MAX_DERIVING = 8
# Per process: wheel sha256 → METADATA sha256 ("" when the wheel has none readable).
_KNOWN_ENTRIES = 65536
_KNOWN_ENTRY_BYTES = 200
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NO_METADATA = ""


@dataclass(frozen=True, slots=True)
class MetadataFile:
    """A wheel's METADATA as the mirror serves it, and the sha256 its pages declare."""

    data: bytes
    sha256: str


def derived_key(wheel_sha256: str) -> str:
    """The artifact store key of the METADATA extracted from the wheel `wheel_sha256`."""
    return f"pypi-derived/core-metadata/{wheel_sha256}"


class DerivedMetadata:
    """See the module docstring. Construct without I/O."""

    def __init__(
        self,
        *,
        blobs: BlobStore,
        artifacts: ArtifactServer,
        directory: Path,
        budget: ByteBudget,
    ) -> None:
        self._blobs = blobs
        self._artifacts = artifacts
        self._directory = directory
        self._known: BudgetedLRU[str, str] = BudgetedLRU(
            budget,
            "derived PyPI metadata",
            lambda _value: _KNOWN_ENTRY_BYTES,
            max_entries=_KNOWN_ENTRIES,
        )
        # wheel sha256 → its METADATA, read (and verified) once per process: a warm
        # `.metadata` request touches no disk.
        self._hot: BudgetedLRU[str, MetadataFile] = BudgetedLRU(
            budget, "derived PyPI metadata bytes", lambda held: len(held.data)
        )
        self._deriving: dict[str, asyncio.Task[MetadataFile | None]] = {}

    # declarations ---------------------------------------------------------------------------

    async def generation(self, project: str) -> str:
        """A name for the set of `project`'s derived declarations: changes with each one."""
        return await asyncio.to_thread(self._read_generation, project)

    async def declared(self, project: str) -> Mapping[str, str]:
        """wheel sha256 → sha256 of its derived METADATA, for every wheel of `project` that
        has one."""
        return await asyncio.to_thread(self._list, project)

    def _project_dir(self, project: str) -> Path:
        # `project` is PEP 503-normalised: [a-z0-9-], never a path of its own.
        return self._directory / project

    def _read_generation(self, project: str) -> str:
        try:
            return (self._project_dir(project) / GENERATION_FILE).read_text("ascii").strip()
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            return ""

    def _list(self, project: str) -> dict[str, str]:
        found: dict[str, str] = {}
        try:
            with os.scandir(self._project_dir(project)) as entries:
                for item in entries:
                    wheel, _, metadata = item.name.partition(".")
                    if _SHA256.match(wheel) and _SHA256.match(metadata):
                        found[wheel] = metadata
        except (FileNotFoundError, NotADirectoryError):
            pass
        return found

    def _mark(self, project: str, wheel_sha256: str, metadata_sha256: str) -> None:
        """(Thread.) Record the declaration, then a new generation (in that order: a reader
        that saw the new generation lists the new marker)."""
        directory = self._project_dir(project)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{wheel_sha256}.{metadata_sha256}").touch()
        atomic_write(directory / GENERATION_FILE, uuid.uuid4().hex.encode("ascii"))

    # the bytes ------------------------------------------------------------------------------

    async def metadata(self, wheel: ArtifactRef, *, fetch: bool = False) -> MetadataFile | None:
        """The METADATA of the wheel `wheel` (the policy check has passed) if the mirror has
        the wheel cached and verified, extracted once; None if it has not (or the wheel has no
        readable METADATA). `fetch`: download the wheel first if it is not cached (only for
        metadata a page has declared). Raises what serving the wheel would (a cached wheel
        that no longer matches the declared digest, an upstream failure while fetching)."""
        sha256 = _declared_sha256(wheel)
        if sha256 is None or not is_wheel(wheel.filename):
            return None
        if self._known.get(sha256) == _NO_METADATA:
            return None
        hot = self._hot.get(sha256)
        if hot is not None:
            return hot
        stored = await self._stored(sha256)
        if stored is not None:
            return stored
        running = self._deriving.get(sha256)
        if running is None:
            running = self._start(wheel, sha256, fetch=fetch)
        return await asyncio.shield(running)

    def derive_soon(self, wheel: ArtifactRef, *, wait_for_download: bool) -> None:
        """After `wheel` was served: extract its METADATA in the background unless this
        process knows it is done. `wait_for_download`: the wheel's download may still be
        storing it (a GET of the whole file), so wait for it; else only a cached wheel."""
        sha256 = _declared_sha256(wheel)
        if sha256 is None or not is_wheel(wheel.filename):
            return
        if self._known.get(sha256) is not None or sha256 in self._deriving:
            return
        if len(self._deriving) >= MAX_DERIVING:
            return
        self._start(wheel, sha256, fetch=wait_for_download)

    def _start(
        self, wheel: ArtifactRef, sha256: str, *, fetch: bool
    ) -> asyncio.Task[MetadataFile | None]:
        task = asyncio.ensure_future(self._derive(wheel, sha256, fetch=fetch))
        self._deriving[sha256] = task
        task.add_done_callback(partial(self._finished, sha256))
        return task

    def _finished(self, sha256: str, task: asyncio.Task[MetadataFile | None]) -> None:
        self._deriving.pop(sha256, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Seen by a waiting `metadata` call, if any; a background one only logs it.
            log.info("no derived metadata from the wheel %s yet: %s", sha256[:16], exc)

    async def _stored(self, wheel_sha256: str) -> MetadataFile | None:
        key = derived_key(wheel_sha256)
        entry = await self._blobs.lookup(key)
        if entry is None:
            return None
        try:
            data = await self._blobs.read_verified(entry)
        except BlobVanished:
            self._blobs.forget(key)
            return None
        self._known.put(wheel_sha256, entry.sha256)
        found = MetadataFile(data=data, sha256=entry.sha256)
        self._hot.put(wheel_sha256, found)
        return found

    async def _derive(self, wheel: ArtifactRef, sha256: str, *, fetch: bool) -> MetadataFile | None:
        """Extract, store and declare the METADATA of `wheel` (sha256 `sha256`); None when
        the wheel is not cached (and not `fetch`) or has no readable METADATA."""
        entry = await self._wheel_entry(wheel, fetch=fetch)
        if entry is None:
            return None
        data = await self._extract(wheel, sha256, entry)
        if data is None:
            return None
        try:
            metadata_sha256 = await self._store(sha256, data, wheel.filename)
        except errors.StorageFull as exc:
            # Served anyway (like a wheel on a full disk); declared once it can be stored.
            log.error("%s; the METADATA of %s is served without caching it", exc, wheel.filename)
            return MetadataFile(data=data, sha256=hashlib.sha256(data).hexdigest())
        await asyncio.to_thread(self._mark, wheel.package, sha256, metadata_sha256)
        self._known.put(sha256, metadata_sha256)
        derived = MetadataFile(data=data, sha256=metadata_sha256)
        self._hot.put(sha256, derived)
        return derived

    async def _wheel_entry(self, wheel: ArtifactRef, *, fetch: bool) -> BlobEntry | None:
        if fetch:
            fetched, _ = await self._artifacts.store(wheel)
            return fetched
        entry = await self._blobs.lookup(wheel.cache_key)
        if entry is None:
            return None
        # The cached bytes must be the ones the index declares now (as serving them checks).
        check_digests(entry.digests, wheel.digests, what=wheel.filename)
        return entry

    async def _extract(self, wheel: ArtifactRef, sha256: str, entry: BlobEntry) -> bytes | None:
        try:
            blob = await self._blobs.open_blob(entry)
        except BlobVanished:
            self._blobs.forget(wheel.cache_key)
            return None
        try:
            return await asyncio.to_thread(read_wheel_metadata, blob.file, wheel.filename)
        except WheelMetadataError as exc:
            log.warning("no metadata declared for %s: %s", wheel.filename, exc)
            self._known.put(sha256, _NO_METADATA)
            return None
        finally:
            blob.file.close()

    async def _store(self, wheel_sha256: str, data: bytes, filename: str) -> str:
        """Store `data` as the derived METADATA of the wheel; its sha256."""
        writer = await self._blobs.begin(derived_key(wheel_sha256))
        try:
            await writer.write(data)
            entry = await writer.commit((), what=f"the METADATA of {filename}")
        except BaseException:
            await writer.abort()
            raise
        finally:
            writer.close()
        return entry.sha256


def _declared_sha256(wheel: ArtifactRef) -> str | None:
    for digest in wheel.digests:
        if digest.algorithm == "sha256" and _SHA256.match(digest.hexdigest.lower()):
            return digest.hexdigest.lower()
    return None
