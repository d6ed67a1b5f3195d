"""`maven-metadata.xml` and checksum files, pure: parse the upstream document once (no DTD, no
entities, size-capped), plan the lazy publish-time look-ups, filter the version list by policy
at a moment, render deterministic bytes and their checksums. Never does I/O."""

from __future__ import annotations

import copy
import hashlib
import re

# Only to build and serialise trees; parsing is always defusedxml.
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from mirror import notices, policy, versions
from mirror.clock import add_saturating
from mirror.ecosystems.maven import paths
from mirror.errors import BadRequest, BadUpstreamDocument
from mirror.risk import Signal
from mirror.takedowns import Listed, Listing

METADATA_TYPE = "text/xml"
CHECKSUM_TYPE = "text/plain"
# Central's biggest maven-metadata.xml files are a few hundred KB.
MAX_METADATA_BYTES = 8 * 1024 * 1024
HEX_LENGTHS: Mapping[str, int] = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
# A checksum file is one line (a digest, maybe a file name); a bigger body is not one.
MAX_CHECKSUM_BYTES = 1024
# What the mirror fetches of a release file's companion (`.sha1`, `.asc`…) at most: an
# armored signature is under 2 KiB; anything much bigger is not what it claims to be.
MAX_COMPANION_BYTES = 64 * 1024
_PGP_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_PGP_END = b"-----END PGP SIGNATURE-----"
# Old versions looked up past when the newest are old but `<lastUpdated>` is young.
MAX_BACKPORT_LOOKUPS = 16
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_HEX = re.compile(r"[0-9a-fA-F]+")
# `<lastUpdated>`: Maven's own way of writing a moment (`yyyyMMddHHmmss`, UTC), read and
# written only here; every other time the mirror writes comes from `mirror.clock`.
LAST_UPDATED_FORMAT = "%Y%m%d%H%M%S"


@dataclass(frozen=True, slots=True, eq=False)
class MavenMetadata:
    """A parsed upstream `maven-metadata.xml`. `root` has namespace-free tags and is shared by
    every view: treat it as read-only (`render_metadata` copies it). `versions` are ascending
    in Maven order, de-duplicated. `is_artifact` is False only for group metadata (plugin
    prefixes: `<plugins>`, no `<versioning>`, no `<artifactId>`), which names no versions and
    is passed through unchanged; anything else is filtered, whatever it lacks."""

    root: ET.Element
    namespace: str | None
    group_id: str | None
    artifact_id: str | None
    versions: tuple[str, ...]  # listed, plus any named by <latest>/<release>/<version>
    last_updated: datetime | None
    is_artifact: bool


@dataclass(frozen=True, slots=True)
class MetadataView:
    """The filtered version list at one moment under one set of rules."""

    visible: tuple[str, ...]  # ascending Maven order
    held: tuple[policy.Decision, ...]  # ascending Maven order
    latest: str | None
    release: str | None
    valid_until: datetime | None  # the earliest moment a held version leaves quarantine
    last_updated: datetime | None = None  # the newest known publish time of a visible version


@dataclass(frozen=True, slots=True)
class PublishPlan:
    """One step of the lazy publish-time algorithm: either `lookup` names the next version
    whose publish time is needed, or it is None and `published` holds a time (or None =
    unknown) for every version."""

    lookup: str | None
    published: Mapping[str, datetime | None]


# parse ---------------------------------------------------------------------------------------


def parse_metadata(raw: bytes) -> MavenMetadata:
    """Parse an upstream `maven-metadata.xml` (artifact or group level).

    Raises BadUpstreamDocument when the body is larger than MAX_METADATA_BYTES, has a DTD,
    entity declarations or external references, is not well-formed, or its root is not
    `<metadata>`."""
    if len(raw) > MAX_METADATA_BYTES:
        raise BadUpstreamDocument(
            f"upstream maven-metadata.xml is {len(raw)} bytes, over the "
            f"{MAX_METADATA_BYTES}-byte limit"
        )
    try:
        parsed = SafeET.fromstring(raw, forbid_dtd=True, forbid_entities=True)
    except DefusedXmlException as exc:
        raise BadUpstreamDocument(
            f"upstream maven-metadata.xml was refused: it declares a DTD, entities or external "
            f"references ({type(exc).__name__})"
        ) from None
    except ET.ParseError as exc:
        raise BadUpstreamDocument(
            f"upstream maven-metadata.xml is not well-formed XML: {exc}"
        ) from None
    namespace = _namespace(parsed.tag)
    root = _strip_namespaces(parsed)
    if root.tag != "metadata":
        raise BadUpstreamDocument(
            f"upstream maven-metadata.xml has root <{root.tag}>, expected <metadata>"
        )
    versioning = root.find("versioning")
    listed = versioning.find("versions") if versioning is not None else None
    found: list[str] = []
    named: list[ET.Element | None] = []
    if listed is not None:
        named += listed.findall("version")
    if versioning is not None:
        # A version named only by <latest>/<release> is a version too: it is decided like
        # the listed ones (metadata without <versions> must not smuggle a held one through).
        named += [versioning.find("latest"), versioning.find("release")]
    named.append(root.find("version"))
    for element in named:
        text = ((element.text if element is not None else None) or "").strip()
        if text and text not in found and is_version_segment(text):
            found.append(text)
    last_updated = None
    if versioning is not None:
        last_updated = parse_last_updated(versioning.findtext("lastUpdated"))
    is_group = (
        versioning is None and root.find("plugins") is not None and root.find("artifactId") is None
    )
    return MavenMetadata(
        root=root,
        namespace=namespace,
        group_id=_text(root, "groupId"),
        artifact_id=_text(root, "artifactId"),
        versions=tuple(sorted(found, key=_maven_key)),
        last_updated=last_updated,
        is_artifact=not is_group,
    )


def is_version_segment(text: str) -> bool:
    """Whether `text` can be a version in a repository path: one segment a client could ask
    for (`paths.validate_segments`). Anything else the upstream lists (`../x`, control
    characters, spaces) is dropped: it could never be served, and its publish-time look-up
    would ask the upstream for a path the mirror did not choose."""
    try:
        return len(paths.validate_segments(text)) == 1
    except BadRequest:
        return False


def parse_last_updated(text: str | None) -> datetime | None:
    """`<lastUpdated>` (`yyyyMMddHHmmss`, UTC) as an aware datetime, or None if malformed."""
    if not text:
        return None
    value = text.strip()
    if not re.fullmatch(r"\d{14}", value):
        return None
    try:
        return datetime.strptime(value, LAST_UPDATED_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_checksum(raw: bytes, algorithm: str) -> str:
    """The hex digest in a `.sha1`/`.md5`/`.sha256`/`.sha512` file, lower-case. The whole
    body (at most MAX_CHECKSUM_BYTES, surrounding whitespace aside) must be one of the forms
    repositories publish: the digest alone (Maven Central, Nexus, Artifactory, what Maven and
    Gradle deploy), the digest then a file name (`sha1sum`: `hex  file`, `hex *file`), or
    `ALGO (file) = hex` (BSD, `openssl dgst`: `SHA1(file)= hex`).

    Raises BadUpstreamDocument otherwise: a page that merely contains a hex string of the
    right length (an error page's request id) is not a checksum, and a checksum is kept for
    good."""
    length = HEX_LENGTHS[algorithm]
    refused = BadUpstreamDocument(f"the upstream .{algorithm} file holds no {algorithm} digest")
    if len(raw) > MAX_CHECKSUM_BYTES:
        raise refused
    # A file name may be in any encoding; the digest itself is ASCII hex.
    text = raw.decode("ascii", errors="replace").strip()
    digest = f"([0-9a-fA-F]{{{length}}})"
    match = re.fullmatch(digest + r"(?:[ \t]+\S[^\r\n]*)?", text) or re.fullmatch(
        r"[A-Za-z0-9-]+ ?\([^\r\n]*\) ?= ?" + digest, text
    )
    if match is None:
        raise refused
    return match.group(1).lower()


@dataclass(frozen=True, slots=True)
class ChecksumParser:
    """`parse_checksum` for one algorithm, as a `MetaCache` parser: equal for equal
    algorithms, so every request for a checksum file shares one parsed value."""

    algorithm: str

    def __call__(self, raw: bytes) -> str:
        return parse_checksum(raw, self.algorithm)


def parse_signature(raw: bytes) -> bytes:
    """An `.asc` file as it is, once it is an ASCII-armored OpenPGP signature (what Maven
    repositories publish): a release file is kept for good, so an error page answered with 200
    must not be.

    Raises BadUpstreamDocument otherwise (no BEGIN or END line, or over
    MAX_COMPANION_BYTES)."""
    armored = raw.strip()
    if (
        len(raw) > MAX_COMPANION_BYTES
        or not armored.startswith(_PGP_BEGIN)
        or not armored.endswith(_PGP_END)
    ):
        raise BadUpstreamDocument("the upstream .asc file is not an armored OpenPGP signature")
    return raw


# lazy publish times ------------------------------------------------------------------------------


def plan_publish_times(
    ordered: Sequence[str],
    last_updated: datetime | None,
    window_start: datetime,
    known: Mapping[str, datetime | None],
    *,
    max_backport_lookups: int = MAX_BACKPORT_LOOKUPS,
) -> PublishPlan:
    """The next publish-time look-up needed, or the final answer, for versions `ordered`
    ascending in Maven order. A version is "old" when it was published before `window_start`
    (now minus the quarantine age).

    - walk newest first: a version missing from `known` is the next look-up; the first
      known old version ends the walk and every older version gets its time (versions are
      deployed in order, so they are at least that old). Unknown (None) times do not end
      the walk.
    - `last_updated` before `window_start` says nothing was deployed in the window: then
      the walk ends at the first old version, normally the newest, so one look-up (cached
      for good) at most. It is never trusted without one: the newest version is the one
      `<latest>`/`<release>` name, and its files are refused by their own `.pom` time, so a
      stale or lying `<lastUpdated>` must not make the metadata offer it.
    - when `last_updated` is young (or absent) and no young version was found yet, the young
      deploy may be a maintenance release of an older line (1.9.1 after 2.0.0): the walk
      goes on past old versions, at most `max_backport_lookups` of them, until it finds one.

    Limit, stated plainly: a second young maintenance release below the first old version
    after a young one is not looked up here; its files are still refused by their own `.pom`
    time."""
    published: dict[str, datetime | None] = {}
    # Nothing young to search for below an old version: lastUpdated is absent or old.
    found_young = last_updated is None or last_updated < window_start
    passed_old = 0
    for index in range(len(ordered) - 1, -1, -1):
        version = ordered[index]
        if version not in known:
            return PublishPlan(lookup=version, published=published)
        moment = known[version]
        published[version] = moment
        if moment is None:
            continue
        if moment >= window_start:
            found_young = True
            continue
        if not found_young and passed_old < max_backport_lookups:
            passed_old += 1
            continue
        for older in ordered[:index]:
            published.setdefault(older, moment)
        break
    return PublishPlan(lookup=None, published=published)


def quarantine_window_start(
    coordinates: str, ordered: Sequence[str], rules: policy.Rules, now: datetime
) -> datetime:
    """`now` minus the quarantine age that applies to `coordinates`, read from the policy
    itself: a version published `now` is held until `now + age`. Blocked or exempted versions
    say nothing about the age, so the newest other version is asked; when there is none (or
    the age is 0) the window starts `now` and no look-up is needed."""
    for version in reversed(ordered):
        decision = policy.decide(policy.Subject("maven", coordinates, version), now, now, rules)
        if decision.block is not None or decision.exemption is not None:
            continue
        if decision.visible or decision.until is None:
            return now
        return add_saturating(now, now - decision.until)  # an age of millennia clamps
    return now


# filter -------------------------------------------------------------------------------------------


def filter_metadata(
    metadata: MavenMetadata,
    coordinates: str,
    published: Mapping[str, datetime | None],
    rules: policy.Rules,
    now: datetime,
    signals: Mapping[str, Sequence[Signal]] | None = None,
) -> MetadataView:
    """Which versions of `coordinates` (`g:a`) are visible at `now`, given each version's risk
    `signals` (`maven.signals`, by version): hidden ones removed, `<latest>` = highest
    visible, `<release>` = highest visible non-SNAPSHOT (Maven order). A version missing from
    `published` counts as unknown."""
    shown = signals or {}
    split = policy.partition(
        (
            (version, policy.Subject("maven", coordinates, version), published.get(version))
            for version in metadata.versions
        ),
        now,
        rules,
        signals=lambda subject: shown.get(subject.version, ()),
    )
    visible = split.visible
    releases = [version for version in visible if not version.endswith("-SNAPSHOT")]
    times = [moment for version in visible if (moment := published.get(version)) is not None]
    return MetadataView(
        visible=visible,
        held=split.withheld,
        latest=visible[-1] if visible else None,
        release=releases[-1] if releases else None,
        valid_until=split.until,
        last_updated=max(times) if times else None,
    )


# render -------------------------------------------------------------------------------------------


# What a filtered artifact-level document keeps: anything else the upstream sent (a root
# <version>, <snapshot>, <snapshotVersions>, unknown elements) could name or describe a held
# version, and Maven needs none of it for release resolution.
_KEPT_ROOT = ("groupId", "artifactId", "versioning", "plugins")
_KEPT_VERSIONING = ("latest", "release", "versions", "lastUpdated")


def render_metadata(metadata: MavenMetadata, view: MetadataView | None) -> bytes:
    """Deterministic bytes of `metadata` rebuilt from `view` (or the document as parsed when
    `view` is None): `groupId`, `artifactId`, and `<versioning>` with `<latest>`, `<release>`,
    `<versions>` of visible versions and `<lastUpdated>` = the newest known publish time of
    a visible version (absent when none is known); `<plugins>` kept. The same visible set
    and times give the same bytes."""
    root = copy.deepcopy(metadata.root)
    if view is not None:
        for child in list(root):
            if child.tag not in _KEPT_ROOT:
                root.remove(child)
        versioning = root.find("versioning")
        if versioning is None:
            versioning = ET.SubElement(root, "versioning")
        for child in list(versioning):
            versioning.remove(child)
        if view.latest is not None:
            ET.SubElement(versioning, "latest").text = view.latest
        if view.release is not None:
            ET.SubElement(versioning, "release").text = view.release
        listed = ET.SubElement(versioning, "versions")
        for version in view.visible:
            ET.SubElement(listed, "version").text = version
        if view.last_updated is not None:
            stamp = view.last_updated.astimezone(UTC).strftime(LAST_UPDATED_FORMAT)
            ET.SubElement(versioning, "lastUpdated").text = stamp
    if metadata.namespace:
        root.attrib = {"xmlns": metadata.namespace, **root.attrib}
    _normalise_whitespace(root)
    ET.indent(root, space="  ")
    text = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + text.encode("utf-8") + b"\n"


def checksums(body: bytes) -> dict[str, str]:
    """Hex digests of `body` for each checksum file Maven and Gradle ask for."""
    return {
        "md5": hashlib.md5(body, usedforsecurity=False).hexdigest(),
        "sha1": hashlib.sha1(body, usedforsecurity=False).hexdigest(),
        "sha256": hashlib.sha256(body).hexdigest(),
        "sha512": hashlib.sha512(body).hexdigest(),
    }


def checksum_headers(body: bytes) -> dict[str, str]:
    """`X-Checksum-Sha1`/`-Md5` of `body`: maven-resolver validates from them and skips the
    separate `.sha1` request (no race with a quarantine boundary in between)."""
    sums = checksums(body)
    return {"X-Checksum-Sha1": sums["sha1"], "X-Checksum-Md5": sums["md5"]}


def held_summary(coordinates: str, view: MetadataView) -> str | None:
    """One line naming what holds the versions the view holds back (`notices.notice`), or
    None."""
    return notices.notice(coordinates, view.held, "version")


def nothing_visible_message(coordinates: str, view: MetadataView) -> str:
    """The 404 message of artifact metadata with no visible version."""
    summary = held_summary(coordinates, view)
    if summary is None:
        return f"the upstream metadata of {coordinates} lists no versions"
    return f"no version of {coordinates} is available from this mirror yet: {summary}"


# helpers ------------------------------------------------------------------------------------------


def _maven_key(version: str) -> Any:
    return versions.sort_key("maven", version)


def maven_order(values: Sequence[str]) -> list[str]:
    """`values` ascending in Maven (ComparableVersion) order."""
    return sorted(values, key=_maven_key)


def _namespace(tag: str) -> str | None:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else None


def _local(name: str) -> str:
    return name.split("}", 1)[1] if name.startswith("{") else name


def _strip_namespaces(element: ET.Element) -> ET.Element:
    """A copy of `element` with local tag names: a default namespace would otherwise render
    as `ns0:` prefixes, which Maven's non-namespace-aware reader does not understand."""
    result = ET.Element(_local(element.tag))
    for name, value in element.attrib.items():
        if name.startswith("{"):
            if _namespace(name) == _XSI:
                result.set("xmlns:xsi", _XSI)
                result.set("xsi:" + _local(name), value)
            continue
        result.set(name, value)
    result.text = element.text
    result.tail = element.tail
    for child in element:
        if isinstance(child.tag, str):
            result.append(_strip_namespaces(child))
    return result


def _normalise_whitespace(element: ET.Element) -> None:
    for node in element.iter():
        if node.text is not None and not node.text.strip():
            node.text = None
        if node.tail is not None and not node.tail.strip():
            node.tail = None


def _text(root: ET.Element, tag: str) -> str | None:
    value = root.findtext(tag)
    return value.strip() if value and value.strip() else None


# takedowns -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetadataParser:
    """`parse` for the metadata cache: `parse_metadata`, and the versions it lists
    (`takedowns.Lists`) as those of `coordinates` (the path asked for, never what the
    document claims). Equal parsers reuse one parsed value."""

    coordinates: str

    def __call__(self, raw: bytes) -> MavenMetadata:
        return parse_metadata(raw)

    def listing(self, parsed: MavenMetadata) -> Listing:
        """The versions `<versioning>` lists (group metadata lists none)."""
        if not parsed.is_artifact:
            return {}
        return {version: Listed(version) for version in parsed.versions}

    def listed_package(self, parsed: MavenMetadata) -> str:
        return self.coordinates
