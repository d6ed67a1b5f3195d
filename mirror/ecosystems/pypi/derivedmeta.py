"""PEP 658 core metadata the mirror derives itself: `METADATA` read from a wheel it has cached
and verified, for wheels whose upstream index declares no metadata file, so resolvers read a
few kB instead of the whole wheel.

Choices, stated plainly:
- The extracted bytes are a blob of the artifact store under a key of the wheel's sha256,
  name and version (`derived_key`; the dist-info check depends on the filename, so the same
  bytes under another filename are another derivation): extracted once, shared by every
  worker process and replica, evicted like any artifact. They are derived from verified
  bytes only (the cached wheel is hashed again before it is read), so they need no
  upstream digest.
- Which wheels of a project have derived metadata is kept on disk next to the cache,
  `<data_dir>/pypi-metadata/<project>/<wheel sha256>.<METADATA sha256>` (empty files: one
  directory listing gives a page render every declaration), and `generation`, rewritten
  (atomically) after each new one only (a worker re-deriving after a restart changes no
  page). The generation is part of a rendered page's key, so a wheel cached after a page
  was rendered changes the page in every worker process at its next request: one small
  read per page request, one listing per render.
- A marker outlives an evicted blob: the page keeps declaring the metadata (its sha256 is a
  function of the wheel's verified bytes), and a request for it extracts it again from the
  cached wheel, or, when the wheel is gone too, fetches the wheel (verified as always) first.
  Only then: a `.metadata` request never downloads a wheel the page did not declare.
- A wheel without a readable METADATA (see `wheelmetadata`) is remembered per process and
  simply gets no declaration; the wheel itself is served as always.
- At most `MAX_DERIVING` extractions run at once per process, whether a page's wheel
  download or a `.metadata` request started them; `close` cancels those under way.
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

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion

from mirror import errors
from mirror.artifacts.serve import ArtifactServer
from mirror.blobs.store import BlobEntry, BlobStore, BlobVanished, check_digests
from mirror.budget import BudgetedLRU, ByteBudget
from mirror.ecosystems.pypi.names import is_wheel
from mirror.ecosystems.pypi.wheelmetadata import WheelMetadataError, read_wheel_metadata
from mirror.files import atomic_write
from mirror.model import ArtifactRef

log = logging.getLogger(__name__)

DIRECTORY_NAME = "pypi-metadata"
GENERATION_FILE = "generation"
# Wheels whose METADATA is being extracted at once, per process; more wait for their next
# request (the wheel is served meanwhile; only the declaration waits).
MAX_DERIVING = 8
# Per process: wheel → METADATA sha256 ("" when the wheel has none readable).
_KNOWN_ENTRIES = 65536
# Per process: wheel → its METADATA bytes (a few kB each, most of them).
_HOT_ENTRIES = 4096
_ENTRY_BYTES = 200  # a cache entry's own cost, its key and value objects
_NORMALISED_PROJECT = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NO_METADATA = ""


@dataclass(frozen=True, slots=True)
class MetadataFile:
    """A wheel's METADATA as the mirror serves it, and the sha256 its pages declare."""

    data: bytes
    sha256: str


def derived_key(identity: str) -> str:
    """The artifact store key of the METADATA extracted from the wheel `identity`
    (`_identity`: its sha256, name and version)."""
    return f"pypi-derived/core-metadata/{identity}"


class DerivedMetadata:
    """See the module docstring. Construct without I/O; `close` before the blob store."""

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
        # Keyed by `_identity` (wheel sha256, name, version), as the stored blobs are.
        self._known: BudgetedLRU[str, str] = BudgetedLRU(
            budget,
            "derived PyPI metadata",
            lambda _value: _ENTRY_BYTES,
            max_entries=_KNOWN_ENTRIES,
        )
        # Its METADATA, read (and verified) once per process: a warm `.metadata` request
        # touches no disk.
        self._hot: BudgetedLRU[str, MetadataFile] = BudgetedLRU(
            budget,
            "derived PyPI metadata bytes",
            lambda held: len(held.data) + _ENTRY_BYTES,
            max_entries=_HOT_ENTRIES,
        )
        self._deriving: dict[str, _Derivation] = {}
        # Extractions (whole-wheel hashes and zip reads in threads) at once, whatever
        # started them: a background derivation or a `.metadata` request.
        self._extracting = asyncio.Semaphore(MAX_DERIVING)
        self._closed = False

    async def close(self) -> None:
        """Cancel the derivations under way and start no more (before the blob store and
        the artifact server close: a derivation writes to them)."""
        self._closed = True
        tasks = [derivation.task for derivation in self._deriving.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # declarations ---------------------------------------------------------------------------

    async def generation(self, project: str) -> str:
        """A name for the set of `project`'s derived declarations: changes with each one."""
        return await asyncio.to_thread(self._read_generation, project)

    async def declared(self, project: str) -> Mapping[str, str]:
        """wheel sha256 → sha256 of its derived METADATA, for every wheel of `project` that
        has one."""
        return await asyncio.to_thread(self._list, project)

    def _project_dir(self, project: str) -> Path:
        """`project`'s directory; ValueError unless it is a PEP 503-normalised name (never a
        path of its own)."""
        if not _NORMALISED_PROJECT.fullmatch(project):
            raise ValueError(f"{project!r} is not a normalised PyPI project name")
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
        """(Thread.) Record the declaration, then, if it is new, a new generation (in that
        order: a reader that saw the new generation lists the new marker). A declaration
        already recorded (by a sibling worker, or before a restart) changes no page."""
        directory = self._project_dir(project)
        directory.mkdir(parents=True, exist_ok=True)
        marker = directory / f"{wheel_sha256}.{metadata_sha256}"
        try:
            with marker.open("x"):
                pass
        except FileExistsError:
            return
        try:
            atomic_write(directory / GENERATION_FILE, uuid.uuid4().hex.encode("ascii"))
        except BaseException:
            # Without its generation no page would show it: recorded at a later request.
            marker.unlink(missing_ok=True)
            raise

    # the bytes ------------------------------------------------------------------------------

    async def metadata(self, wheel: ArtifactRef, *, fetch: bool = False) -> MetadataFile | None:
        """The METADATA of the wheel `wheel` (the policy check has passed) if the mirror has
        the wheel cached and verified, extracted once; None if it has not (or the wheel has no
        readable METADATA). `fetch`: download the wheel first if it is not cached (only for
        metadata a page has declared). Raises what serving the wheel would (a cached wheel
        that no longer matches the declared digest, an upstream failure while fetching)."""
        identity = _identity(wheel)
        if identity is None:
            return None
        if self._known.get(identity) == _NO_METADATA:
            return None
        hot = self._hot.get(identity)
        if hot is not None:
            return hot
        stored = await self._stored(identity)
        if stored is not None:
            self._hot.put(identity, stored)
            return stored
        # A derivation under way that may not download answers None for a wheel that is not
        # cached: then one that may (bounded: each round waits for a derivation to end).
        for _round in range(3):
            if self._closed:
                return None
            running = self._deriving.get(identity)
            if running is None:
                running = self._start(wheel, identity, fetch=fetch)
            found = await asyncio.shield(running.task)
            if found is not None or running.fetch or not fetch:
                return found
            if self._known.get(identity) == _NO_METADATA:
                return None
        return None

    def derive_soon(self, wheel: ArtifactRef, *, wait_for_download: bool) -> None:
        """After `wheel` was served: extract its METADATA in the background unless this
        process knows it is done. `wait_for_download`: the wheel's download may still be
        storing it (a GET of the whole file), so wait for it; else only a cached wheel."""
        identity = _identity(wheel)
        if identity is None or self._closed:
            return
        if self._known.get(identity) is not None or identity in self._deriving:
            return
        if len(self._deriving) >= MAX_DERIVING:
            return
        self._start(wheel, identity, fetch=wait_for_download)

    def _start(self, wheel: ArtifactRef, identity: str, *, fetch: bool) -> _Derivation:
        task = asyncio.ensure_future(self._derive(wheel, identity, fetch=fetch))
        derivation = _Derivation(task=task, fetch=fetch)
        self._deriving[identity] = derivation
        task.add_done_callback(partial(self._finished, identity, derivation))
        return derivation

    def _finished(
        self, identity: str, derivation: _Derivation, task: asyncio.Task[MetadataFile | None]
    ) -> None:
        if self._deriving.get(identity) is derivation:
            del self._deriving[identity]
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Seen by a waiting `metadata` call, if any; a background one only logs it.
            log.info("no derived metadata from the wheel %s yet: %s", identity[:16], exc)

    async def _stored(self, identity: str) -> MetadataFile | None:
        key = derived_key(identity)
        entry = await self._blobs.lookup(key)
        if entry is None:
            return None
        try:
            data = await self._blobs.read_verified(entry)
        except BlobVanished:
            self._blobs.forget(key)
            return None
        return MetadataFile(data=data, sha256=entry.sha256)

    async def _derive(
        self, wheel: ArtifactRef, identity: str, *, fetch: bool
    ) -> MetadataFile | None:
        """Extract (unless stored already), store and declare the METADATA of `wheel`; None
        when the wheel is not cached (and not `fetch`) or has no readable METADATA."""
        derived = await self._stored(identity)
        if derived is None:
            entry = await self._wheel_entry(wheel, fetch=fetch)
            if entry is None:
                return None
            async with self._extracting:
                data = await self._extract(wheel, identity, entry)
            if data is None:
                return None
            try:
                metadata_sha256 = await self._store(identity, data, wheel.filename)
            except errors.StorageFull as exc:
                # Served anyway (like a wheel on a full disk); declared once it can be stored.
                log.error(
                    "%s; the METADATA of %s is served without caching it", exc, wheel.filename
                )
                return MetadataFile(data=data, sha256=hashlib.sha256(data).hexdigest())
            derived = MetadataFile(data=data, sha256=metadata_sha256)
        try:
            await asyncio.to_thread(
                self._mark, wheel.package, _wheel_sha256(identity), derived.sha256
            )
        except OSError as exc:
            # Served, not declared (nor remembered: a later request records it).
            log.error("could not declare the METADATA of %s: %s", wheel.filename, exc)
            return derived
        self._known.put(identity, derived.sha256)
        self._hot.put(identity, derived)
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

    async def _extract(self, wheel: ArtifactRef, identity: str, entry: BlobEntry) -> bytes | None:
        """The wheel's METADATA read from its blob, hashed again first (a blob damaged on disk
        is discarded, as serving it would, and yields nothing)."""
        if entry.sha256 != _wheel_sha256(identity):
            log.error("the cached %s is not the wheel its index declares", wheel.filename)
            return None
        try:
            return await self._blobs.parse_verified(
                entry, partial(read_wheel_metadata, filename=wheel.filename)
            )
        except BlobVanished:
            self._blobs.forget(wheel.cache_key)
            return None
        except WheelMetadataError as exc:
            log.warning("no metadata declared for %s: %s", wheel.filename, exc)
            self._known.put(identity, _NO_METADATA)
            return None

    async def _store(self, identity: str, data: bytes, filename: str) -> str:
        """Store `data` as the derived METADATA of the wheel; its sha256."""
        writer = await self._blobs.begin(derived_key(identity))
        try:
            await writer.write(data)
            entry = await writer.commit((), what=f"the METADATA of {filename}")
        except BaseException:
            await writer.abort()
            raise
        finally:
            writer.close()
        return entry.sha256


@dataclass(frozen=True, slots=True)
class _Derivation:
    """A derivation under way, and whether it may download the wheel."""

    task: asyncio.Task[MetadataFile | None]
    fetch: bool


def _identity(wheel: ArtifactRef) -> str | None:
    """`<wheel sha256>/<name>/<version>` (name and version from its filename, normalised):
    what a derived METADATA is of. Its dist-info must name the release the filename does,
    so the same bytes under another filename are another derivation (and their failure
    another's). None for no wheel or no sha256."""
    sha256 = _declared_sha256(wheel)
    if sha256 is None or not is_wheel(wheel.filename):
        return None
    try:
        name, version, _build, _tags = parse_wheel_filename(wheel.filename)
    except (InvalidWheelFilename, InvalidVersion):
        return None
    return f"{sha256}/{name}/{version}"


def _wheel_sha256(identity: str) -> str:
    return identity.split("/", 1)[0]


def _declared_sha256(wheel: ArtifactRef) -> str | None:
    for digest in wheel.digests:
        if digest.algorithm == "sha256" and _SHA256.match(digest.hexdigest.lower()):
            return digest.hexdigest.lower()
    return None
