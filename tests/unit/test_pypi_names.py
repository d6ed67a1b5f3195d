"""PyPI names, file names, the version a file belongs to, and request paths."""

from __future__ import annotations

import pytest

from mirror.ecosystems.pypi import names
from mirror.errors import BadRequest


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("Foo_Bar", "foo-bar"),
        ("foo.bar", "foo-bar"),
        ("Foo__.-Bar", "foo-bar"),
        ("zope.interface", "zope-interface"),
        ("a", "a"),
        ("PyYAML", "pyyaml"),
    ],
)
def test_normalize(name: str, normalized: str) -> None:
    assert names.parse_project(name).normalized == normalized


@pytest.mark.parametrize(
    "name", ["", "-foo", "foo-", "foo bar", "foo/bar", "..", "f\u00f6o", "a" * 201, "foo\x00"]
)
def test_invalid_project_names_are_400(name: str) -> None:
    with pytest.raises(BadRequest):
        names.parse_project(name)


@pytest.mark.parametrize(
    "filename", ["", "../etc/passwd", "a/b.whl", "a\\b.whl", "x\x01.whl", ".hidden", "a" * 256]
)
def test_invalid_filenames_are_400(filename: str) -> None:
    with pytest.raises(BadRequest):
        names.parse_filename(filename)


@pytest.mark.parametrize(
    ("filename", "version"),
    [
        ("demo-1.0.0-py3-none-any.whl", "1.0.0"),
        ("Demo_Pkg-2.0rc1-cp311-cp311-manylinux_2_17_x86_64.whl", "2.0rc1"),
        ("demo-1.0.tar.gz", "1.0"),
        ("demo-1.0.zip", "1.0"),
        ("demo-pkg-1.0.tar.gz", "1.0"),
        ("demo-1.0-beta.tar.gz", "1.0b0"),  # packaging refuses; legacy: valid PEP 440
        ("demo-1.0-py2.7.egg", "1.0"),
        ("demo-1.0.1-py2.7-linux-x86_64.egg", "1.0.1"),
        ("demo-1.0.win32-py2.7.exe", "1.0"),
        ("demo-1.0.win-amd64-py3.4.exe", "1.0"),
        ("demo-1.0.tar.bz2", "1.0"),
        ("demo-1.0.macosx-10.6-intel.tar.gz", "1.0"),
        ("demo-2.0+local.1-py3-none-any.whl", "2.0+local.1"),
    ],
)
def test_file_version(filename: str, version: str) -> None:
    project = "demo-pkg" if filename.lower().startswith("demo-pkg") else "demo"
    assert names.file_version(filename, project) == version


@pytest.mark.parametrize(
    "filename",
    [
        "demo-2004d.tar.gz",  # not PEP 440: never attributed
        "demo.exe",
        "other-1.0.egg",  # another project's name
        "demo-1.0-py3-none-any.whl.asc",
        "demo-latest.tar.bz2",
        "not-a-wheel.whl",
    ],
)
def test_files_without_a_recognisable_version(filename: str) -> None:
    assert names.file_version(filename, "demo") is None


def test_request_paths() -> None:
    parse = names.parse_request_path
    assert parse("/pypi/simple/").kind == "root"
    page = parse("/pypi/simple/foo-bar/")
    assert (page.kind, page.project) == ("project", names.Project("foo-bar"))
    assert parse("/pypi/simple/Foo_Bar/").location == "/pypi/simple/foo-bar/"
    assert parse("/pypi/simple/Foo_Bar/").kind == "redirect"
    assert parse("/pypi/simple/foo").location == "/pypi/simple/foo/"
    assert parse("/pypi/simple").location == "/pypi/simple/"
    assert parse("/pypi/").location == "/pypi/simple/"
    file = parse("/pypi/files/foo/foo-1.0%2Blocal-py3-none-any.whl")
    assert (file.kind, file.filename) == ("file", "foo-1.0+local-py3-none-any.whl")
    api = parse("/pypi/pypi/foo/json")
    assert api.kind == "json"
    version = parse("/pypi/pypi/foo/1.0/json")
    assert (version.kind, version.version) == ("json-version", "1.0")
    assert parse("/pypi/pypi/Foo/1.0/json").location == "/pypi/pypi/foo/1.0/json"


@pytest.mark.parametrize(
    "path",
    [
        "/pypi/simple/..%2f..%2fetc/",
        "/pypi/simple/a/b/",
        "/pypi/files/foo/..%2fx.whl",
        "/pypi/files/foo/%2e%2e",
        "/pypi/files/foo/a%00.whl",
        "/pypi/files/foo",
        "/pypi/pypi/foo/../json",
        "/pypi/other/",
        "/pypi/simple/-bad-/",
    ],
)
def test_bad_request_paths(path: str) -> None:
    with pytest.raises(BadRequest):
        names.parse_request_path(path)


def test_urls() -> None:
    assert names.json_api_base("http://up.test:81/simple/") == "http://up.test:81/pypi/"
    assert names.json_api_base("http://up.test/repo/simple/") == "http://up.test/repo/pypi/"
    assert names.json_api_base("http://up.test/index/") is None
    assert names.simple_page_url("http://up.test/simple/", "foo") == "http://up.test/simple/foo/"
    assert (
        names.file_url("http://m.test/pypi", "foo", "foo-1.0+x-py3-none-any.whl")
        == "http://m.test/pypi/files/foo/foo-1.0+x-py3-none-any.whl"
    )


def test_json_api_urls_stay_under_the_api_base() -> None:
    api = "http://up.test/repo/pypi/"
    assert names.json_api_url(api, "demo") == "http://up.test/repo/pypi/demo/json"
    assert names.json_api_url(api, "demo", "1.0") == "http://up.test/repo/pypi/demo/1.0/json"
    assert names.json_api_url(api, "demo", "1/0") == "http://up.test/repo/pypi/demo/1%2F0/json"
    # A version taken from upstream metadata is not validated: `..` would climb out.
    for version in ("..", ".", "%2e%2e", "%252e%252e"):
        with pytest.raises(BadRequest):
            names.json_api_url(api, "demo", version)
