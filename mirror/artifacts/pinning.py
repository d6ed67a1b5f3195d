"""First-seen digest pins: once mirrored, an artifact's bytes may never change.

Choices, stated plainly:
- Before fetching, the strongest declared digest is remembered in shared state; if another one
  was remembered first, upstream changed published bytes and the mirror refuses them. With no
  declared digest, the sha256 of the first bytes fetched is remembered instead.
- Pins go through `ServingState`: never a wait on shared state past `state.timeout`; when it
  cannot answer, the declared digest is used (the bytes are verified against it all the same)
  and remembering it is retried in the background (a conflict found then is counted).
- A hit is checked against the digests declared now and against the pin this process knows
  (no state round trip).
- Every refusal of upstream bytes is counted here, by cause: `changed`, `mismatch`, `truncated`.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from mirror import errors
from mirror.blobs.store import ALGORITHMS, BlobEntry, DigestMismatch, strongest
from mirror.metrics import Metrics
from mirror.model import ArtifactRef, Digest
from mirror.servingstate import ServingState

log = logging.getLogger(__name__)


class Pins:
    """Judges an artifact's bytes against the digest remembered first (through `shared`) and
    the digests declared now; counts every refusal."""

    def __init__(self, shared: ServingState, metrics: Metrics) -> None:
        self._shared = shared
        self._metrics = metrics

    def check_stored(self, ref: ArtifactRef, entry: BlobEntry) -> None:
        """Refuse a stored blob whose verified digests differ from the declared ones or from
        the first-seen pin this process knows (bytes stored while shared state was down are
        refused once a different pin turns up)."""
        if not self.agrees(ref, entry):
            self.refuse_changed(ref)

    def agrees(self, ref: ArtifactRef, entry: BlobEntry) -> bool:
        """Whether the stored blob `entry` agrees with the digests `ref` declares and with the
        first-seen pin this process knows: memory only, nothing counted (a replay asks this
        on every answer; the slow path refuses and counts)."""
        for declared in ref.digests:
            stored = entry.digests.get(declared.algorithm)
            if stored is not None and stored != declared.hexdigest.strip().lower():
                return False
        pin = self._shared.pinned(ref.ecosystem, ref.cache_key)
        if pin is not None:
            algorithm, _, hexdigest = pin.partition(":")
            stored = entry.digests.get(algorithm)
            if stored is not None and stored != hexdigest:
                return False
        return True

    async def unchanged(self, ref: ArtifactRef) -> bool:
        """Whether the digests declared now agree with the one remembered first (remembering
        the declared one if none was; True when nothing can be compared), asked before bytes
        that cannot be verified are relayed. False too when the shared state could not be
        consulted (the fallback pins the declared digest: nothing was compared). A
        disagreement is neither counted nor raised here: the download refuses those bytes
        and counts that."""
        seen = await self._first_seen(ref)
        if seen is None:
            return True
        if not self._shared.pin_confirmed(ref.ecosystem, ref.cache_key):
            return False
        algorithm, _, hexdigest = seen[1].partition(":")
        same = [d for d in ref.digests if d.algorithm == algorithm]
        return all(d.hexdigest.strip().lower() == hexdigest for d in same)

    async def pin_declared(self, ref: ArtifactRef) -> tuple[Digest, ...]:
        """Remember the strongest declared digest; refuse if another was remembered first.
        Returns a remembered digest of an algorithm not declared now (checked on the bytes)."""
        seen = await self._first_seen(ref)
        if seen is None:
            return ()
        mine, first = seen
        if first == mine:
            return ()
        algorithm, _, hexdigest = first.partition(":")
        same = [d for d in ref.digests if d.algorithm == algorithm]
        if same:
            if all(d.hexdigest.strip().lower() == hexdigest for d in same):
                return ()
            self.refuse_changed(ref)
        if algorithm not in ALGORITHMS:
            return ()
        return (Digest(algorithm=algorithm, hexdigest=hexdigest),)

    async def _first_seen(self, ref: ArtifactRef) -> tuple[str, str] | None:
        """The strongest declared digest and the one remembered first for `ref` (each
        "algorithm:hex"; the declared one is remembered if none was); None when none is
        declared."""
        declared = strongest(ref.digests)
        if declared is None:
            return None
        mine = f"{declared.algorithm}:{declared.hexdigest.strip().lower()}"
        return mine, await self._shared.remember_digest(ref.ecosystem, ref.cache_key, mine)

    async def pin_fetched(self, ref: ArtifactRef, sha256: str) -> tuple[Digest, ...]:
        """No digest is declared: trust on first use, remembering `sha256` of the bytes
        fetched. Returns the digest remembered first, to check the bytes against."""
        mine = f"sha256:{sha256}"
        first = await self._shared.remember_digest(ref.ecosystem, ref.cache_key, mine)
        algorithm, _, hexdigest = first.partition(":")
        if algorithm not in ALGORITHMS:
            return ()
        return (Digest(algorithm=algorithm, hexdigest=hexdigest),)

    def judge_mismatch(
        self, ref: ArtifactRef, exc: DigestMismatch, pinned: tuple[Digest, ...]
    ) -> None:
        """Fetched bytes failed verification: if the digest they failed is a remembered pin,
        upstream changed published bytes (raised here); else a plain mismatch is counted and
        the caller re-raises `exc`."""
        if Digest(algorithm=exc.algorithm, hexdigest=exc.expected) in pinned:
            self.refuse_changed(ref)
        self.refused("mismatch", ref)

    def refuse_changed(self, ref: ArtifactRef) -> NoReturn:
        self.refused("changed", ref)
        log.warning("upstream changed the bytes of %s since it was first mirrored", ref.cache_key)
        raise errors.IntegrityError(
            f"upstream changed the bytes of {ref.package} {ref.version} ({ref.filename}) since "
            "it was first mirrored: an attack signal; the mirror refuses the new bytes"
        )

    def refused(self, cause: str, ref: ArtifactRef, *, logged: bool = True) -> None:
        """Count a refusal of upstream bytes (`changed`, `mismatch`, `truncated`).
        `logged=False` when the cause is logged already (a connection lost mid-body is in the
        upstream client's outage log, which does not write a line per request)."""
        self._metrics.integrity_failures.labels(ref.ecosystem, cause).inc()
        if cause != "changed" and logged:
            log.warning("refused %s from upstream: %s", ref.cache_key, cause)


def count_late_conflict(metrics: Metrics, ecosystem: str, key: str, mine: str, first: str) -> None:
    """`ServingState`'s conflict hook: a pin written late (shared state was down) found
    another digest remembered first."""
    metrics.integrity_failures.labels(ecosystem, "changed").inc()
