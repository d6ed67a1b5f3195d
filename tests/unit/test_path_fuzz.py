"""Whatever a client puts in a path, the parsers answer with a parsed request or a 400
(`BadRequest`) with a message: never another exception (a 500) and never a path that climbs
out of its prefix."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.ecosystems.maven import paths as maven_paths
from mirror.ecosystems.npm import names as npm_names
from mirror.ecosystems.pypi import names as pypi_names
from mirror.errors import BadRequest, NotFound
from mirror.policy import Subject

T = TypeVar("T")

SEGMENT_ALPHABET = st.sampled_from(
    [*"abcAZ09-._~@%2fF/\\:*?\x00\x1f \u00e9\u202e", "%2e%2e", "..", "%00", "%2F", "%5c"]
)
raw_paths = st.lists(SEGMENT_ALPHABET, max_size=40).map("".join)


def parse_or_reason(parse: Callable[[str], T], text: str) -> tuple[T | None, str | None]:
    """(parsed, None), or (None, the message of the 400/404 the parser raised)."""
    try:
        return parse(text), None
    except (BadRequest, NotFound) as exc:
        return None, str(exc)


@settings(max_examples=600, deadline=None)
@given(raw_paths)
def test_npm_paths_parse_or_say_why(tail: str) -> None:
    parsed, reason = parse_or_reason(npm_names.parse_request_path, "/npm/" + tail)
    if parsed is None:
        assert reason
        return
    if parsed.package is not None:
        name = parsed.package.name
        assert ".." not in name.split("/")
        assert not any(ord(char) < 32 for char in name)


@settings(max_examples=600, deadline=None)
@given(raw_paths)
def test_pypi_paths_parse_or_say_why(tail: str) -> None:
    parsed, reason = parse_or_reason(pypi_names.parse_request_path, "/pypi/" + tail)
    if parsed is None:
        assert reason
        return
    for value in (getattr(parsed, "project", None), getattr(parsed, "filename", None)):
        if isinstance(value, str):
            assert "/" not in value
            assert value not in ("..", ".")
            assert not any(ord(char) < 32 for char in value)


@settings(max_examples=600, deadline=None)
@given(raw_paths)
def test_maven_paths_parse_or_say_why(tail: str) -> None:
    parsed, reason = parse_or_reason(maven_paths.parse_path, tail)
    if parsed is None:
        assert reason
        return
    assert ".." not in parsed.path.split("/")
    assert not parsed.path.startswith("/")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=30))
def test_pypi_file_versions_never_raise(filename: str, project: str) -> None:
    version = pypi_names.file_version(filename, project)
    assert version is None or isinstance(version, str)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=20))
def test_subject_labels_never_raise(package: str, version: str) -> None:
    for ecosystem in ("npm", "pypi", "maven"):
        assert Subject(ecosystem, package, version, filename="f").label
