"""Maven repository paths, pure: validate a client's path under `/maven/` and say what it
stands for (an artifact file of a GAV, its checksum or signature companion, artifact or group
`maven-metadata.xml`). Never fetches anything and never decides policy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mirror.budget import small_input_cache
from mirror.errors import BadRequest, NotFound

# Checksum companions maven-resolver and Gradle ask for, longest suffix first.
CHECKSUM_ALGORITHMS: tuple[str, ...] = ("sha512", "sha256", "sha1", "md5")
SIGNATURE_SUFFIX = ".asc"
METADATA_FILE = "maven-metadata.xml"
SNAPSHOT_SUFFIX = "-SNAPSHOT"
RELEASES_ONLY = (
    "this mirror serves releases only (SNAPSHOT versions are not mirrored; Maven Central "
    "hosts none)"
)

MAX_PATH_CHARS = 1024
MAX_SEGMENT_CHARS = 200
MAX_SEGMENTS = 40
_SEGMENT = re.compile(r"[A-Za-z0-9._\-+~]+")

PathKind = Literal["file", "metadata"]


@dataclass(frozen=True, slots=True)
class MavenPath:
    """A validated request path. `path` is relative to the repository root (no leading `/`),
    exactly as it is requested upstream.

    kind "file": `group`, `artifact`, `version` are set; `base` is the artifact file a
    companion belongs to (`lib-1.0.jar` for `lib-1.0.jar.asc.sha1`); `checksum` names the
    algorithm when the file is a checksum; `signature` is True for `.asc` (and its checksums).
    kind "metadata": `directories` holds the segments before `maven-metadata.xml`; whether it
    is artifact or group metadata is only known from the document itself."""

    kind: PathKind
    path: str
    filename: str
    directories: tuple[str, ...]
    group: str | None = None
    artifact: str | None = None
    version: str | None = None
    base: str | None = None
    checksum: str | None = None
    signature: bool = False

    @property
    def coordinates(self) -> str:
        """`groupId:artifactId` (files), or the path's candidate for metadata."""
        if self.group is not None and self.artifact is not None:
            return f"{self.group}:{self.artifact}"
        return metadata_coordinates(self.directories)

    @property
    def gav(self) -> str:
        return f"{self.coordinates}:{self.version}"

    @property
    def metadata_path(self) -> str:
        """For a metadata checksum: the metadata document's own path."""
        return "/".join((*self.directories, METADATA_FILE))


def metadata_coordinates(directories: tuple[str, ...]) -> str:
    """`g:a` for `/{g}/{a}/maven-metadata.xml` (the last directory is the artifactId)."""
    if len(directories) < 2:
        return ".".join(directories)
    return ".".join(directories[:-1]) + ":" + directories[-1]


def split_companion(filename: str) -> tuple[str, str | None, bool]:
    """(`base`, checksum algorithm or None, is signature) of a file name:
    `a.jar.asc.sha1` -> (`a.jar`, "sha1", True)."""
    checksum = None
    for algorithm in CHECKSUM_ALGORITHMS:
        suffix = "." + algorithm
        if filename.endswith(suffix) and len(filename) > len(suffix):
            checksum = algorithm
            filename = filename[: -len(suffix)]
            break
    signature = filename.endswith(SIGNATURE_SUFFIX) and len(filename) > len(SIGNATURE_SUFFIX)
    if signature:
        filename = filename[: -len(SIGNATURE_SUFFIX)]
    return filename, checksum, signature


def validate_segments(tail: str) -> tuple[str, ...]:
    """The `/`-separated segments of `tail` (the raw path after `/maven/`, query removed).

    Raises BadRequest for empty, absolute, dot or over-long segments, percent-escapes,
    backslashes, control or any character outside `[A-Za-z0-9._-+~]`."""
    if len(tail) > MAX_PATH_CHARS:
        raise BadRequest(f"the path is longer than {MAX_PATH_CHARS} characters")
    if not tail:
        raise BadRequest("empty repository path")
    segments = tuple(tail.split("/"))
    if len(segments) > MAX_SEGMENTS:
        raise BadRequest(f"the path has more than {MAX_SEGMENTS} segments")
    for segment in segments:
        if not segment:
            raise BadRequest("the path has an empty segment (// or a leading /)")
        if segment in {".", ".."}:
            raise BadRequest("the path has a . or .. segment")
        if len(segment) > MAX_SEGMENT_CHARS:
            raise BadRequest(f"a path segment is longer than {MAX_SEGMENT_CHARS} characters")
        if not _SEGMENT.fullmatch(segment):
            raise BadRequest(
                f"the path segment {_printable(segment)!r} has characters outside "
                "A-Z a-z 0-9 . _ - + ~ (percent-escapes are not accepted)"
            )
    return segments


@small_input_cache(4096)  # pure; CI asks for the same paths over and over
def parse_path(tail: str) -> MavenPath:
    """What the repository path `tail` (raw, after `/maven/`, no query) stands for.

    Raises BadRequest for an invalid path (see `validate_segments`) and NotFound for paths
    this mirror never serves: directory listings, SNAPSHOTs, files outside the
    `{g}/{a}/{v}/{a}-{v}…` layout."""
    if not tail:
        raise BadRequest("empty repository path")
    if tail.endswith("/"):
        validate_segments(tail.rstrip("/") or "x")
        raise NotFound(
            "directory listings are not served by this mirror; ask for a file or maven-metadata.xml"
        )
    segments = validate_segments(tail)
    *directories, filename = segments
    base, checksum, signature = split_companion(filename)
    if base == METADATA_FILE and not signature:
        if not directories:
            raise NotFound("there is no maven-metadata.xml at the repository root")
        if directories[-1].endswith(SNAPSHOT_SUFFIX):
            raise NotFound(RELEASES_ONLY)
        _check_group(tail, directories[:-1])
        return MavenPath(
            kind="metadata",
            path=tail,
            filename=filename,
            directories=tuple(directories),
            base=base,
            checksum=checksum,
        )
    if len(directories) < 3:
        raise NotFound(
            f"{tail} is not in the Maven repository layout "
            "({group path}/{artifactId}/{version}/{artifactId}-{version}[-classifier].{ext})"
        )
    *group_parts, artifact, version = directories
    if version.endswith(SNAPSHOT_SUFFIX):
        raise NotFound(RELEASES_ONLY)
    _check_group(tail, group_parts)
    stem = f"{artifact}-{version}"
    if not (base.startswith(stem) and base[len(stem) : len(stem) + 1] in {".", "-"}):
        raise NotFound(
            f"{filename} is not a file of {'.'.join(group_parts)}:{artifact}:{version} "
            f"(its name must start with {stem}. or {stem}-)"
        )
    return MavenPath(
        kind="file",
        path=tail,
        filename=filename,
        directories=tuple(directories),
        group=".".join(group_parts),
        artifact=artifact,
        version=version,
        base=base,
        checksum=checksum,
        signature=signature,
    )


def pom_path(group: str, artifact: str, version: str) -> str:
    """The repository path of a GAV's `.pom` (whose Last-Modified is its publish time).
    Raises BadRequest when `version` is not one valid path segment."""
    version = version_segment(version)
    return f"{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}.pom"


def version_segment(version: str) -> str:
    """`version` when it is exactly one valid repository path segment (no `/`, no `..`);
    raises BadRequest otherwise. For versions from client input and from upstream metadata
    alike: either one becomes part of an upstream path."""
    if "/" in version:
        raise BadRequest(f"{_printable(version)!r} is not a Maven version (it has a '/')")
    validate_segments(version)
    return version


def _check_group(tail: str, group_parts: list[str]) -> None:
    # groupId dots become slashes, so a dotted group directory is not the layout; refusing
    # it keeps one upstream path per `g:a:v` (the publish-time cache is keyed by it).
    if any("." in part for part in group_parts):
        raise NotFound(f"{tail} is not in the Maven repository layout (a dot in a group directory)")


def parse_coordinates(package: str) -> tuple[str, str]:
    """(`groupId`, `artifactId`) of `g:a`; raises BadRequest for anything else."""
    group, sep, artifact = package.partition(":")
    if not sep or not group or not artifact or ":" in artifact:
        raise BadRequest(f"expected a Maven package as groupId:artifactId, got {package!r}")
    for part in (*group.split("."), artifact):
        if not _SEGMENT.fullmatch(part) or part in {".", ".."}:
            raise BadRequest(f"expected a Maven package as groupId:artifactId, got {package!r}")
    return group, artifact


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:60]
