"""Maven repository paths: validation before any fetch, and what each path stands for."""

from __future__ import annotations

import pytest

from mirror.ecosystems.maven import paths
from mirror.errors import BadRequest, NotFound


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param("org/example/../lib/1.0/lib-1.0.jar", id="dot-dot"),
        pytest.param("org/./example/lib/1.0/lib-1.0.jar", id="dot"),
        pytest.param("org//example/lib/1.0/lib-1.0.jar", id="empty-segment"),
        pytest.param("/org/example/lib/1.0/lib-1.0.jar", id="absolute"),
        pytest.param("org/example/lib/1.0/..%2f..%2fetc%2fpasswd", id="percent-2f"),
        pytest.param("org%2Fexample/lib/1.0/lib-1.0.jar", id="percent-2F-group"),
        pytest.param("org\\example/lib/1.0/lib-1.0.jar", id="backslash"),
        pytest.param("org/example/lib/1.0/lib-1.0.jar\x00.pom", id="nul"),
        pytest.param("org/example/lib/1.0/lib 1.0.jar", id="space"),
        pytest.param("org/exa\nmple/lib/1.0/lib-1.0.jar", id="newline"),
        pytest.param("org/example/lib/1.0/lib-1.0.jar;x", id="semicolon"),
        pytest.param("org/exämple/lib/1.0/lib-1.0.jar", id="non-ascii"),
        pytest.param("org/" + "a" * 201 + "/lib/1.0/lib-1.0.jar", id="long-segment"),
        pytest.param("a/" * 600 + "x.jar", id="long-path"),
        pytest.param("", id="empty"),
    ],
)
def test_invalid_paths_are_bad_requests(tail: str) -> None:
    with pytest.raises(BadRequest):
        paths.parse_path(tail)


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        pytest.param(
            "org/example/lib/1.4.0/lib-1.4.0.jar",
            ("org.example", "lib", "1.4.0", "lib-1.4.0.jar", None, False),
            id="jar",
        ),
        pytest.param(
            "org/example/lib/1.4.0/lib-1.4.0.pom.sha1",
            ("org.example", "lib", "1.4.0", "lib-1.4.0.pom", "sha1", False),
            id="pom-sha1",
        ),
        pytest.param(
            "org/example/lib/1.4.0/lib-1.4.0-sources.jar.asc",
            ("org.example", "lib", "1.4.0", "lib-1.4.0-sources.jar", None, True),
            id="sources-asc",
        ),
        pytest.param(
            "org/example/lib/1.4.0/lib-1.4.0.jar.asc.sha256",
            ("org.example", "lib", "1.4.0", "lib-1.4.0.jar", "sha256", True),
            id="asc-sha256",
        ),
        pytest.param(
            "io/x/jakarta.inject-api/2.0.1+b3/jakarta.inject-api-2.0.1+b3.module.sha512",
            (
                "io.x",
                "jakarta.inject-api",
                "2.0.1+b3",
                "jakarta.inject-api-2.0.1+b3.module",
                "sha512",
                False,
            ),
            id="dotted-artifact-plus-version",
        ),
        pytest.param(
            "com/acme/tool/2.0~rc1/tool-2.0~rc1.pom.md5",
            ("com.acme", "tool", "2.0~rc1", "tool-2.0~rc1.pom", "md5", False),
            id="tilde",
        ),
    ],
)
def test_artifact_files(tail: str, expected: tuple[object, ...]) -> None:
    parsed = paths.parse_path(tail)
    assert parsed.kind == "file"
    assert parsed.path == tail
    got = (parsed.group, parsed.artifact, parsed.version, parsed.base, parsed.checksum)
    assert (*got, parsed.signature) == expected
    assert parsed.gav == f"{expected[0]}:{expected[1]}:{expected[2]}"


@pytest.mark.parametrize(
    ("tail", "directories", "checksum", "coordinates"),
    [
        ("org/example/lib/maven-metadata.xml", ("org", "example", "lib"), None, "org.example:lib"),
        ("org/example/lib/maven-metadata.xml.sha1", ("org", "example", "lib"), "sha1",
         "org.example:lib"),
        ("org/apache/maven/plugins/maven-metadata.xml.md5",
         ("org", "apache", "maven", "plugins"), "md5", "org.apache.maven:plugins"),
    ],
)  # fmt: skip
def test_metadata_paths(
    tail: str, directories: tuple[str, ...], checksum: str | None, coordinates: str
) -> None:
    parsed = paths.parse_path(tail)
    assert parsed.kind == "metadata"
    assert parsed.directories == directories
    assert parsed.checksum == checksum
    assert parsed.coordinates == coordinates
    assert parsed.metadata_path == "/".join(directories) + "/maven-metadata.xml"


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        pytest.param("org/example/lib/1.0-SNAPSHOT/lib-1.0-SNAPSHOT.jar", "releases only",
                     id="snapshot-file"),
        pytest.param("org/example/lib/1.0-SNAPSHOT/maven-metadata.xml", "releases only",
                     id="snapshot-metadata"),
        pytest.param("org/example/lib/1.0/other-1.0.jar", "must start with lib-1.0",
                     id="foreign-file"),
        pytest.param("org/example/lib/1.0/lib-1.0x.jar", "must start with lib-1.0",
                     id="prefix-not-at-boundary"),
        pytest.param("org/example/lib/", "listings", id="listing"),
        pytest.param("lib/1.0/lib-1.0.jar", "layout", id="no-group"),
        pytest.param("org.example/lib/1.0/lib-1.0.jar", "dot in a group", id="dotted-group"),
        pytest.param("maven-metadata.xml", "root", id="root-metadata"),
    ],
)  # fmt: skip
def test_paths_never_served_are_not_found(tail: str, message: str) -> None:
    with pytest.raises(NotFound) as raised:
        paths.parse_path(tail)
    assert message in raised.value.message


def test_coordinates_round_trip() -> None:
    assert paths.parse_coordinates("org.example:lib") == ("org.example", "lib")
    assert paths.pom_path("org.example", "lib", "1.0") == "org/example/lib/1.0/lib-1.0.pom"
    for bad in ("lib", "org.example:lib:1.0", ":lib", "org..x:lib", "org/x:lib"):
        with pytest.raises(BadRequest):
            paths.parse_coordinates(bad)


@pytest.mark.parametrize("version", ["..", ".", "1.0/../..", "../../secret", "1.0/x", "", "1%2e0"])
def test_pom_paths_take_one_version_segment(version: str) -> None:
    with pytest.raises(BadRequest):
        paths.pom_path("org.example", "lib", version)
    with pytest.raises(BadRequest):
        paths.version_segment(version)
