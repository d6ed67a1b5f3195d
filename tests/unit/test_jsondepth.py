"""The depth check every upstream JSON document passes before a parser sees it."""

from __future__ import annotations

import json

import pytest

from mirror.ecosystems.npm import document as npm_document
from mirror.ecosystems.npm.names import PackageName
from mirror.ecosystems.pypi import jsonapi as pypi_jsonapi
from mirror.ecosystems.pypi import simple as pypi_simple
from mirror.errors import BadUpstreamDocument
from mirror.jsondepth import MAX_DEPTH, check_depth, nesting_depth


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"1", 0),
        (b'"text"', 0),
        (b"[]", 1),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'["[[[[", "{{{{"]', 1),
        (b'["\\"[[[", "x"]', 1),  # an escaped quote does not end the string
        (b'["\\\\", [[]]]', 3),  # an escaped backslash does not escape the quote after it
        (b'["\\\\\\"[[", []]', 2),
        (b'{"": [], "": {"": ""}}', 2),  # empty strings
        (b'["", "[", "", "]"]', 1),
        (b"[" * 600 + b"]" * 600, 600),
    ],
    ids=lambda value: value[:30] if isinstance(value, bytes) else str(value),
)
def test_nesting_depth(raw: bytes, depth: int) -> None:
    assert nesting_depth(raw) == depth


@pytest.mark.parametrize("depth", [1, 5, 40, MAX_DEPTH])
def test_depth_agrees_with_a_parser(depth: int) -> None:
    value: object = {"leaf": 'brackets "[{" in a string \\ and "\\\\"'}
    for level in range(depth - 1):
        value = [value, "]]]"] if level % 2 else {"k[": value, "}": "{"}
    raw = json.dumps(value).encode()
    assert nesting_depth(raw) == depth
    check_depth(raw, "the document")  # no error up to the limit


def test_a_deep_document_is_a_bad_upstream_document() -> None:
    raw = b"[" * 200_000 + b"]" * 200_000  # the 400 KB document that crashed orjson 3.8
    with pytest.raises(BadUpstreamDocument) as caught:
        check_depth(raw, "the upstream packument of deep")
    assert "the upstream packument of deep" in str(caught.value)
    assert "200000 levels" in str(caught.value)


def test_one_level_too_deep_is_refused_and_unclosed_ones_count() -> None:
    check_depth(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, "doc")
    with pytest.raises(BadUpstreamDocument):
        check_depth(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "doc")
    with pytest.raises(BadUpstreamDocument):  # never closed: a parser would still go down
        check_depth(b"[" * (MAX_DEPTH + 1), "doc")
    with pytest.raises(BadUpstreamDocument):  # an unterminated string hides nothing
        check_depth(b'["' + b"[" * (MAX_DEPTH + 1), "doc")


DEEP = b'{"name": "x", "versions": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"

PARSERS = {
    "npm packument": lambda raw: npm_document.parse_packument(raw, PackageName("x")),
    "pypi project page": lambda raw: pypi_simple.parse_project_json(
        raw, "x", "https://files.example/simple/x/", ["files.example"]
    ),
    "pypi json api": lambda raw: pypi_jsonapi.parse_api_document(
        raw, "x", "https://files.example/pypi/x/json"
    ),
    "pypi project list": pypi_simple.parse_root,
}


@pytest.mark.parametrize("parse", PARSERS.values(), ids=PARSERS.keys())
def test_every_upstream_json_parser_checks_the_depth_first(parse: object) -> None:
    assert callable(parse)
    with pytest.raises(BadUpstreamDocument, match="levels deep"):
        parse(DEEP)
