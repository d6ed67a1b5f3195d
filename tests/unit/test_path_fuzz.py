"""Whatever a client puts in a path, the gate and the parsers answer with a parsed request or
a 400 (`BadRequest`) with a message: never another exception (a 500) and never a path that
climbs out of its prefix."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from mirror.ecosystems.maven import paths as maven_paths
from mirror.ecosystems.npm import names as npm_names
from mirror.ecosystems.pypi import names as pypi_names
from mirror.errors import BadRequest, NotFound
from mirror.pathgate import check_request_path, path_problem, require_under, segment_problem
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


# the gate -------------------------------------------------------------------------------------

# Hostile segments, built as intent (what the segment means once decoded) x spelling.
INTENTS = (".", "..", "..;", "..;x=1", "a/b", "/", "\\", "a\\..", "../x", "\x00", "a\x01", "\x0a",
           "\x7f", "\x9b")  # fmt: skip


def _encode(char: str) -> str:
    return "".join(f"%{byte:02x}" for byte in char.encode("utf-8"))


HOSTILE_SPELLINGS: dict[str, Callable[[str], str]] = {
    "plain": lambda char: char,
    "lower": _encode,
    "upper": lambda char: _encode(char).upper(),
    "double": lambda char: _encode(char).replace("%", "%25"),
    "double-upper": lambda char: _encode(char).upper().replace("%", "%25"),
    "triple": lambda char: _encode(char).replace("%", "%2525"),
    "quadruple": lambda char: _encode(char).replace("%", "%252525"),
}
HOSTILE_SEGMENTS = sorted(
    {
        "".join(spell(char) if not char.isalnum() else char for char in intent)
        for intent in INTENTS
        for spell in HOSTILE_SPELLINGS.values()
    }
    - {"a/b", "/", "../x"}  # plain slashes only separate segments: not one hostile segment
    | {".%2e", "%2e.", ".%2E", "%2E%2e", "%2e%252e", "\uff0e\uff0e", "\u2025", "%ef%bc%8e%ef%bc%8e",
       "a%ef%bc%8fb", "%c0%ae%c0%ae", "%e0%80%ae", "a%ef%bc%bcb", "%2e%2e%3b", "%2e%2e;a=b",
       "%25%32%65%25%32%65", "%%32%65%%32%65"}
)  # fmt: skip
GATED_ROUTES = (
    "/npm/{}",
    "/npm/left-pad/{}",
    "/npm/left-pad/-/{}",
    "/npm/@acme%2f{}",
    "/npm/-/v1/search/{}",
    "/npm/-/npm/v1/attestations/{}",
    "/npm/-/package/{}/dist-tags",
    "/pypi/simple/{}/",
    "/pypi/files/demo/{}",
    "/maven/org/{}/lib/1.0/lib-1.0.jar",
    "/api/v1/blocks/{}",
    "/{}/npm/left-pad",
)


def test_the_hostile_table_is_hundreds_of_requests() -> None:
    assert len(HOSTILE_SEGMENTS) * len(GATED_ROUTES) > 800


@pytest.mark.parametrize("segment", HOSTILE_SEGMENTS)
def test_every_hostile_spelling_is_refused_at_every_position(segment: str) -> None:
    for route in GATED_ROUTES:
        path = route.replace("{}", segment)
        assert path_problem(path) is not None, path
        with pytest.raises(BadRequest, match="the request path is refused"):
            check_request_path(path + "?q=1")


@pytest.mark.parametrize(
    "path",
    [
        "/npm/left-pad",
        "/npm/@acme%2fwidget",
        "/npm/@acme%2Fwidget",
        "/npm/%40acme%2Fwidget",
        "/npm/@acme/widget/-/widget-1.0.0.tgz",
        "/npm/@acme%2fwidget/-/widget-1.0.0.tgz",
        "/npm/-/package/@acme%2fwidget/dist-tags",
        "/npm/-/npm/v1/attestations/@acme%2Fwidget@1.0.0",
        "/npm/-/v1/search?text=%2e%2e%2f",
        "/npm/lodash.merge/-/lodash.merge-4.6.2.tgz",
        "/npm/left-pad/...",
        "/npm/left-pad/.bin",
        "/pypi/simple/",
        "/pypi/simple/zope-interface/",
        "/pypi/files/demo/demo-1.0%2Blocal-py3-none-any.whl",
        "/pypi/files/demo/demo-1.0.tar.gz.metadata",
        "/maven/org/example/lib/1.0.0/lib-1.0.0.jar.sha1",
        "/api/v1/blocks/b-0123abcd",
        "/api/v1/explain?ecosystem=npm&package=..&version=%00",
        "/",
        "/healthz",
    ],
)
def test_ordinary_paths_pass_the_gate(path: str) -> None:
    check_request_path(path)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/npm/@acme%2fwidget%2fmore", "encoded slash"),
        ("/npm/@acme%2f..", "'.' or '..' segment"),
        ("/npm/@..%2fwidget", "'.' or '..' segment"),
        ("/npm/left-pad/-/@acme%2fwidget", "encoded slash"),
        ("/npm/-/v1/search/@acme%2fwidget", "encoded slash"),
        ("/pypi/simple/@acme%2fwidget/", "encoded slash"),
        ("/npm/@acme%252fwidget", "encoded slash"),
        ("/npm/@acme%2f\n", "control character"),
        ("/npm/x/%" + "25" * 5 + "2e", "more than 4 times"),
        ("/npm/" + "a" * 5000, "longer than"),
    ],
)
def test_the_scope_slash_is_the_only_encoded_slash(path: str, problem: str) -> None:
    assert problem in (path_problem(path) or "")


npm_name_parts = st.from_regex(r"[a-z0-9][a-z0-9._~-]{0,20}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(npm_name_parts, npm_name_parts, st.sampled_from(["%2f", "%2F", "/"]), st.booleans())
def test_every_scoped_name_form_passes(scope: str, name: str, slash: str, tarball: bool) -> None:
    path = f"/npm/@{scope}{slash}{name}" + (f"/-/{name}-1.0.0.tgz" if tarball else "")
    if name in {".", ".."} or scope in {".", ".."}:
        assert path_problem(path) is not None
    else:
        assert path_problem(path) is None


GATE_ALPHABET = st.sampled_from(
    [*"ab.-_~@/;\\%", "%2e", "%2E", "%2f", "%2F", "%5c", "%25", "%32", "%65", "%00", "%0a",
     "..", "\uff0e", "\x00", "%c0", "%ae", "@acme%2f", "\u2025"]
)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(st.lists(GATE_ALPHABET, max_size=30).map("".join))
def test_what_the_gate_lets_through_never_climbs_out(tail: str) -> None:
    """Whatever passes the gate, resolved as an HTTP client (yarl) or a server decoding it
    up to four times would, stays below the prefix it was asked under."""
    path = "/npm/x/" + tail
    problem = path_problem(path)
    if problem is not None:
        assert problem
        return
    resolved = URL("http://upstream.invalid/base" + path).path
    assert resolved.startswith("/base/npm/x/")
    text = path
    for _ in range(4):
        text = unquote(text)
        assert ".." not in text.split("/")
        assert "\\" not in text
        assert posixpath.normpath(text).startswith("/npm/x")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_segment_problem_never_raises(segment: str) -> None:
    problem = segment_problem(segment)
    assert problem is None or isinstance(problem, str)


BASE = "http://upstream.invalid:8080/registry/"


@pytest.mark.parametrize(
    "url",
    [
        BASE + "-/v1/search?text=..",
        BASE + "-/npm/v1/attestations/@acme%2fwidget@1.0.0",
        BASE + "left-pad",
    ],
)
def test_urls_under_the_base_are_kept(url: str) -> None:
    assert require_under(url, BASE) == url
    assert require_under(url, BASE.rstrip("/")) == url


@pytest.mark.parametrize(
    "url",
    [
        BASE + "-/v1/search/../../secret",
        BASE + "-/v1/search/%2e%2e/%2E%2E/secret",
        BASE + "-/v1/search/.%2e/secret",
        BASE + "-/v1/search/%252e%252e/secret",
        BASE + "@acme%2f..",
        BASE + "a/%5c..",
        "http://upstream.invalid:8080/registry-other/x",
        "http://upstream.invalid:8080/secret",
        "http://upstream.invalid:9090/registry/x",
        "https://upstream.invalid:8080/registry/x",
        "http://other.invalid:8080/registry/x",
        "http://user@upstream.invalid:8080/registry/x",
        BASE + "x#fragment",
    ],
)
def test_urls_that_leave_the_base_are_refused(url: str) -> None:
    with pytest.raises(BadRequest):
        require_under(url, BASE)


@settings(max_examples=500, deadline=None)
@given(st.lists(GATE_ALPHABET, max_size=20).map("".join))
def test_require_under_agrees_with_the_http_client(tail: str) -> None:
    """A URL `require_under` keeps is one the HTTP client sends below the base."""
    url = BASE + tail.replace("\\", quote("\\"))
    try:
        require_under(url, BASE)
    except BadRequest:
        return
    assert URL(url).path.startswith("/registry/")
