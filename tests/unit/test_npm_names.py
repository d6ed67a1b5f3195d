"""npm names and raw request paths: what is accepted, how it is parsed, what is refused."""

from __future__ import annotations

import pytest

from mirror.ecosystems.npm.names import (
    PackageName,
    attestations_path,
    packument_url,
    parse_attestation_spec,
    parse_name,
    parse_request_path,
    search_query,
)
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


# relayed endpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        ("text=left&size=5", "text=left&size=5"),
        ("", ""),
        ("text=left+pad&from=20&quality=0.65&popularity=0.98&maintenance=0.5",
         "text=left%20pad&from=20&quality=0.65&popularity=0.98&maintenance=0.5"),
        ("text=a%26b%3Dc", "text=a%26b%3Dc"),
        ("text=../../x%2F%2e%2e", "text=..%2F..%2Fx%2F.."),
        ("text=keywords:react%20author:me", "text=keywords%3Areact%20author%3Ame"),
        ("text=", "text="),
    ],
)  # fmt: skip
def test_search_queries_are_re_encoded(raw: str, sent: str) -> None:
    assert search_query(raw) == sent


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("txt=left", "unknown search parameter 'txt'"),
        ("text=a&text=b", "more than once"),
        ("size=251", "'size' must be a number from 0 to 250"),
        ("size=1e2", "'size'"),
        ("size=%201", "'size'"),
        ("from=-1", "'from'"),
        ("quality=1.5", "'quality'"),
        ("popularity=inf", "'popularity'"),
        ("text=%00", "control characters"),
        ("text=%ff%fe", "not UTF-8"),
        ("text=" + "x" * 513, "longer than 512"),
        ("&".join(f"text{i}=1" for i in range(7)), "more than 6 parameters"),
    ],
)
def test_bad_search_queries_are_400(raw: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        search_query(raw)


@pytest.mark.parametrize(
    ("raw", "name", "version"),
    [
        ("left-pad@1.3.0", "left-pad", "1.3.0"),
        ("@acme%2fwidget@1.0.0", "@acme/widget", "1.0.0"),
        ("@acme%2Fwidget@1.0.0-beta.1", "@acme/widget", "1.0.0-beta.1"),
        ("%40acme%2fwidget@1.0.0", "@acme/widget", "1.0.0"),
        ("@acme/widget@2.0.0+build.5", "@acme/widget", "2.0.0+build.5"),
    ],
)
def test_attestation_specs(raw: str, name: str, version: str) -> None:
    package, parsed_version = parse_attestation_spec(raw)
    assert (package.name, parsed_version) == (name, version)


@pytest.mark.parametrize(
    "raw",
    [
        "left-pad",
        "left-pad@",
        "@acme%2fwidget",
        "@acme/widget",
        "@1.0.0",
        "left-pad@..",
        "left-pad@.1",
        "left-pad@1.0.0/x",
        "left-pad/-/left-pad@1.0.0",
        "@acme/widget/more@1.0.0",
        "@acme%2fwidget%2fmore@1.0.0",
        "left-pad@1.0.0%2f..",
        "..@1.0.0",
        "left-pad@1 0",
        "left-pad@1.0.0;x",
    ],
)
def test_bad_attestation_specs_are_400(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_attestation_spec(raw)


def test_attestations_path_is_built_by_the_mirror() -> None:
    assert attestations_path(PackageName("@acme/widget"), "1.0.0+b") == (
        "npm/v1/attestations/@acme%2fwidget@1.0.0+b"
    )
    assert attestations_path(PackageName("left-pad"), "1.3.0") == (
        "npm/v1/attestations/left-pad@1.3.0"
    )
