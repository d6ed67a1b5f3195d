"""What a handler leaves on a request so that the hot path (`mirror.hotpath`) may answer the
same request again from memory: the marks, set on the slow path, read by the front.

Two marks make an answer replayable, and both are needed:
- `REPLAY_SOURCE`, set by the ecosystem adapter: what the answer depends on besides its bytes
  (the policy version it was decided under, how long the upstream metadata it came from is
  fresh, and for an artifact the inputs to decide it again under newer rules);
- `REPLAY_BODY`, set by whoever built the bytes (`responses.respond` for a rendered view,
  the artifact server for a small blob answered from memory): what kind of answer it is and
  what a replay must record (the artifact for the ledger, the versions a view holds back for
  the quarantine queue).

An answer with only one of them, an error, a conditional or ranged answer is never replayed.
Only pure data here: no I/O, no aiohttp handler logic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from mirror.blobs.store import BlobEntry
from mirror.holds import HeldSubject
from mirror.model import ArtifactRef
from mirror.policy import Subject
from mirror.risk import Signal


@dataclass(frozen=True, slots=True)
class Decided:
    """The inputs of an artifact's policy decision: decided again, not remembered, whenever
    the rules change (a new policy version) or the clock passes the decision's end."""

    subject: Subject
    published_at: datetime | None
    signals: tuple[Signal, ...] = ()


@dataclass(frozen=True, slots=True)
class DocumentStamp:
    """Which copy of an upstream document an answer was built from (`MetaCache.stamp`): the
    answer is kept no longer than that copy is (`MetaCache.unchanged`)."""

    key: tuple[str, str]  # the document's URL and Accept
    epoch: int
    replaced: int


@dataclass(frozen=True, slots=True)
class ReplaySource:
    """What an answer depends on besides its bytes. `policy_version`: the version of the rules
    it was decided or filtered under (read before deciding, so a change during the request
    makes the replay decide again). `fresh_until`: until when the upstream document it was
    built from needs no revalidation (after it, the slow path asks upstream again).
    `decided`: for an artifact, what to decide again under newer rules; None for a view (a
    view under newer rules is rendered again by the slow path). `document`: the copy of the
    upstream document it was built from, if any (a newer copy ends the answer at once).
    `upstream_size`: for a view, the bytes of the upstream document it saved fetching (the
    traffic tally's hit)."""

    ecosystem: str
    policy_version: int
    fresh_until: datetime
    decided: Decided | None = None
    document: DocumentStamp | None = None
    upstream_size: int = 0


@dataclass(frozen=True, slots=True)
class ArtifactBody:
    """A stored artifact answered from memory (verified bytes): a replay counts a cache hit,
    notes the blob's use for eviction and records a GET in the download ledger."""

    ref: ArtifactRef
    blob: BlobEntry


@dataclass(frozen=True, slots=True)
class ViewBody:
    """A rendered metadata view: a replay notes `held` (the versions it withholds by
    quarantine) in the quarantine queue, as the slow path does; `valid_until`: until when
    these very bytes and headers stay the answer by the clock (a held version's quarantine
    ending changes the view; its max-age counts down before that), None: by the clock, ever."""

    held: tuple[HeldSubject, ...] = ()
    valid_until: datetime | None = None


ReplayBody = ArtifactBody | ViewBody

REPLAY_SOURCE: web.RequestKey[ReplaySource] = web.RequestKey("mirror.replay-source", ReplaySource)
REPLAY_BODY: web.RequestKey[ReplayBody] = web.RequestKey("mirror.replay-body", object)  # type: ignore[arg-type]
