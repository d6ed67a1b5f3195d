"""The value types the layers share: the ecosystems the mirror serves, what an artifact path
stands for and its declared digests, a rendered view, why a version is visible or not, and the
records the shared state keeps (rules, downloads, audit entries). Frozen dataclasses, no I/O,
no behaviour beyond deriving from their own fields: every layer may import this module, and it
imports nothing of the mirror's but (for type checking) the policy's Decision."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from mirror import policy

# The ecosystems, in the order the mirror lists them (settings, metrics, explain).
ECOSYSTEMS: Final[tuple[str, ...]] = ("npm", "pypi", "maven")

# Risk signals (`mirror.risk`): what a version does differently from the package's own earlier
# releases, by name, with the ecosystems where it can occur. The names are a contract: the
# `[[risk.rules]]` settings, explain, refusals and the metrics use them.
RISK_SIGNALS: Final[Mapping[str, tuple[str, ...]]] = {
    "install-script-added": ("npm",),
    "provenance-dropped": ("npm", "pypi"),
    "new-publisher": ("npm",),
    "major-jump": ("npm",),
    "dormant-revived": ("npm",),
    "new-file-type": ("pypi",),
    "signature-missing": ("maven",),
    "signature-key-changed": ("maven",),
}
# What a risk rule does with a version that shows its signal: `note` reports it only, `extend`
# holds it until its publish time plus the rule's age (when that is longer than its
# quarantine), `hold` hides it until an admin exempts it.
RiskAction = Literal["note", "extend", "hold"]
RISK_ACTIONS: Final[tuple[RiskAction, ...]] = ("note", "extend", "hold")


@dataclass(frozen=True, slots=True, kw_only=True)
class Digest:
    """A declared digest from upstream metadata: algorithm in {sha512, sha256, sha1}, hex value."""

    algorithm: str
    hexdigest: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactRef:
    """What a local artifact path stands for, found in metadata the mirror fetched itself."""

    ecosystem: str
    package: str
    version: str
    filename: str
    upstream_url: str
    digests: tuple[Digest, ...]
    content_type: str = "application/octet-stream"
    size: int | None = None
    published_at: datetime | None = None

    @property
    def cache_key(self) -> str:
        return f"{self.ecosystem}/{self.package}/{self.version}/{self.filename}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """A pre-rendered, filtered view: served as bytes with no per-request work.

    `valid_until` is the next quarantine boundary (when the view would change by the clock
    alone); None means it changes only with upstream or policy."""

    body: bytes
    content_type: str
    etag: str
    gzipped: bytes | None = None
    brotli: bytes | None = None
    valid_until: datetime | None = None
    last_modified: datetime | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """Why a version (or file) is visible or not, for `/api/v1/explain`."""

    ecosystem: str
    package: str
    version: str
    verdict: str
    detail: str
    published_at: datetime | None = None
    until: datetime | None = None
    rule: Mapping[str, Any] | None = None
    files: tuple[Mapping[str, Any], ...] = ()
    # The risk signals the version shows, each with what its rule does (`Decision.describe`).
    signals: tuple[Mapping[str, Any], ...] = ()
    # Of those, the one whose rule holds the version (names the decision), else None.
    risk: Mapping[str, Any] | None = None

    @classmethod
    def of(
        cls,
        decision: policy.Decision,
        *,
        published_at: datetime | None,
        detail: str | None = None,
        files: tuple[Mapping[str, Any], ...] = (),
    ) -> Explanation:
        """What explain answers for `decision`: its subject, verdict, `until` and deciding
        rule, with `detail` (default: the decision's sentence) and the publish time the
        adapter shows. The one place a decision becomes an Explanation."""
        subject = decision.subject
        rule = decision.rule
        return cls(
            ecosystem=subject.ecosystem,
            package=subject.package,
            version=subject.version,
            verdict=str(decision.verdict),
            detail=decision.detail if detail is None else detail,
            published_at=published_at,
            until=decision.until,
            rule=rule.describe() if rule is not None else None,
            files=files,
            signals=decision.describe_signals(),
            risk=decision.risk.describe() if decision.risk is not None else None,
        )


RuleKind = Literal["block", "exemption", "freeze"]
RULE_KINDS: tuple[RuleKind, ...] = ("block", "exemption", "freeze")


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleRecord:
    """A block, exemption or freeze as stored. `versions` is a spec in the ecosystem's own
    syntax (`*` for all). `expires_at` None = until deleted. `data` carries kind-specific
    fields (a freeze's `published_after`, for example)."""

    id: str
    kind: RuleKind
    ecosystem: str
    package: str
    versions: str
    reason: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadEvent:
    """Downloads of one file by one client: the ledger behind "who already pulled it?".

    As noted, one download (or the repeats a worker gathered before writing them):
    `at` the first, `last_at` the latest (None = `at`), `count` how many. As stored and read
    back, the aggregate over every worker: the ledger keeps one row per (client address, read
    token, file), so its size follows distinct downloads, not traffic.

    Who: `client` the address (a forwarded one only from a trusted proxy), `token` the name
    of the read token presented ("" = none). What the client said about itself, as of its
    latest download in the row: `user_agent`, `ci` (the CI system it names, such as
    "github-actions" from npm's `ci/…`; "ci" when it only says it runs in CI, as pip does;
    "" = not CI), `command` (npm's `npm-command`, such as "ci" or "install") and `session`
    (npm's `npm-session`: one id per npm run)."""

    ecosystem: str
    package: str
    version: str
    filename: str
    client: str
    at: datetime
    last_at: datetime | None = None
    count: int = 1
    token: str = ""
    user_agent: str = ""
    ci: str = ""
    command: str = ""
    session: str = ""

    @property
    def last_seen(self) -> datetime:
        return self.at if self.last_at is None else self.last_at

    @property
    def key(self) -> tuple[str, str, str, str, str, str]:
        """What the ledger aggregates by: the file, the client address and the read token."""
        return (self.ecosystem, self.package, self.version, self.filename, self.client, self.token)

    def merged(self, other: DownloadEvent) -> DownloadEvent:
        """This row and `other` (the same key) as one: first, last, the counts added, and
        what the client said about itself in the later of the two."""
        latest = other if other.last_seen >= self.last_seen else self
        return DownloadEvent(
            ecosystem=self.ecosystem,
            package=self.package,
            version=self.version,
            filename=self.filename,
            client=self.client,
            token=self.token,
            at=min(self.at, other.at),
            last_at=max(self.last_seen, other.last_seen),
            count=self.count + other.count,
            user_agent=latest.user_agent,
            ci=latest.ci,
            command=latest.command,
            session=latest.session,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityTotal:
    """Who pulled a package, grouped by what they presented: one read token (`token`, "" =
    none) and one CI system (`ci`, "" = not CI) over the package's ledger rows. `clients`
    distinct client addresses, `rows` ledger rows (file, address, token), `downloads` their
    counts summed, `first_seen` / `last_seen` the earliest and latest of them."""

    token: str
    ci: str
    clients: int
    rows: int
    downloads: int
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One admin change: who (token name, client address), when, what, before and after."""

    at: datetime
    actor: str
    client: str
    action: str
    target: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None


TakedownKind = Literal["removed", "yanked"]
TAKEDOWN_KINDS: tuple[TakedownKind, ...] = ("removed", "yanked")


@dataclass(frozen=True, slots=True, kw_only=True)
class ImpactRow:
    """One client that downloaded a taken-down version, as the event keeps it: the client
    address, the read token's name ("" = none), the CI system it named, how many downloads,
    the first and last."""

    client: str
    token: str
    ci: str
    count: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TakedownEvent:
    """The upstream stopped offering a version (or on PyPI one file) the mirror had seen
    listed: `removed` (no longer in the refreshed document: npm unpublish, a deleted PyPI
    file, a Maven version gone from its metadata) or `yanked` (PEP 592; `reason` the yank's
    reason). `id` is derived from what was taken down (`takedown_id`), so every worker and
    replica that notices the same takedown records one event. `impact` the clients that had
    downloaded it (from the ledger, at `detected_at`; at most a bounded number, `clients`
    and `downloads` count them all)."""

    id: str
    ecosystem: str
    package: str
    version: str
    kind: TakedownKind
    detected_at: datetime
    filename: str = ""
    reason: str = ""
    clients: int = 0
    downloads: int = 0
    impact: tuple[ImpactRow, ...] = ()


def takedown_id(
    ecosystem: str, package: str, version: str, filename: str, kind: TakedownKind
) -> str:
    """`t-` and 16 hex digits of a hash of what was taken down: the same takedown noticed by
    two workers (or twice) has one id."""
    text = "\x00".join((ecosystem, package, version, filename, kind))
    return "t-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
