"""npm names and raw request paths: what is accepted, how it is parsed, what is refused."""

from __future__ import annotations

import pytest

from mirror.ecosystems.npm.names import PackageName, packument_url, parse_name, parse_request_path
from mirror.errors import BadRequest


@pytest.mark.parametrize(
    "name",
    [
        "left-pad",
        "lodash.merge",
        "@babel/core",
        "@types/node",
        "JSONStream",  # old packages may have upper case
        "uglify-js~2",
        "a" * 214,
        "@s/" + "n" * 210,
        "really-cool_package.v2",
    ],
)
def test_valid_names_are_accepted(name: str) -> None:
    assert parse_name(name).name == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("a" * 215, "longer than 214"),
        (".hidden", "starts with"),
        ("_private", "starts with"),
        ("node_modules", "not a valid"),
        ("favicon.ico", "not a valid"),
        (" spaced", "spaces"),
        ("tab\there", "control"),
        ("back\\slash", "backslash"),
        ("@scope", "@scope/name"),
        ("@/name", "@scope/name"),
        ("@scope/", "@scope/name"),
        ("@scope/a/b", "slash outside the scope"),
        ("@scope/..", "'..'"),
        ("@../x", "'..'"),
        ("with space", "characters"),
        ("emoji-\u2603", "characters"),
        ("semi;colon", "characters"),
        ("@scope/.dot", "starts with '.'"),
    ],
)
def test_invalid_names_are_refused_with_a_message(name: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_name(name)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/npm/@babel%2fcore",
        "/npm/@babel%2Fcore",
        "/npm/@babel/core",
        "/npm/%40babel%2fcore",
        "/npm/@babel%2fcore?write=true",
    ],
    ids=["npm-%2f", "pnpm-%2F", "literal", "encoded-at", "query"],
)
def test_every_scope_form_names_the_same_packument(raw_path: str) -> None:
    parsed = parse_request_path(raw_path)
    assert parsed.kind == "packument"
    assert parsed.package == PackageName("@babel/core")


@pytest.mark.parametrize(
    ("raw_path", "package", "file"),
    [
        ("/npm/left-pad/-/left-pad-1.3.0.tgz", "left-pad", "left-pad-1.3.0.tgz"),
        ("/npm/@babel/core/-/core-7.0.0.tgz", "@babel/core", "core-7.0.0.tgz"),
        ("/npm/@babel%2fcore/-/core-7.0.0.tgz", "@babel/core", "core-7.0.0.tgz"),
        ("/npm/x/-/x-1.0.0-beta.1.tgz", "x", "x-1.0.0-beta.1.tgz"),
    ],
)
def test_tarball_paths(raw_path: str, package: str, file: str) -> None:
    parsed = parse_request_path(raw_path)
    assert parsed.kind == "tarball"
    assert parsed.package == PackageName(package)
    assert parsed.file == file


def test_special_and_version_paths() -> None:
    assert parse_request_path("/npm/-/ping?write=true").special == "ping"
    assert parse_request_path("/npm/-/v1/search?text=x").special == "v1/search"
    version = parse_request_path("/npm/left-pad/latest")
    assert (version.kind, version.version) == ("version", "latest")


@pytest.mark.parametrize(
    "raw_path",
    [
        "/npm/..",
        "/npm/../etc/passwd",
        "/npm/left-pad%2f..%2f..%2fetc",
        "/npm/left%2fpad",
        "/npm/left%5cpad",
        "/npm/@scope%2fname%2fextra",
        "/npm/left-pad/-/..",
        "/npm/left-pad/-/a%2fb.tgz",
        "/npm/left-pad/a/b/c",
        "/npm/%00evil",
        "/npm/%zz",
        "/npm/%ff%fe",
        "/npm/" + "a" * 215,
        "/npm/@scope",
    ],
)
def test_bad_paths_are_400(raw_path: str) -> None:
    with pytest.raises(BadRequest):
        parse_request_path(raw_path)


def test_packument_url_encodes_the_scope_slash_only() -> None:
    upstream = "http://127.0.0.1:9/registry/"
    assert packument_url(upstream, PackageName("@babel/core")) == (
        "http://127.0.0.1:9/registry/@babel%2fcore"
    )
    assert packument_url(upstream, PackageName("left-pad")) == (
        "http://127.0.0.1:9/registry/left-pad"
    )


def test_canonical_tarball_path() -> None:
    assert PackageName("@babel/core").tarball_path("7.1.0") == "/@babel/core/-/core-7.1.0.tgz"
    assert PackageName("left-pad").tarball_filename("1.3.0") == "left-pad-1.3.0.tgz"
