"""Core metadata → the JSON API's `info` fields: real METADATA shapes (a setuptools wheel with
its description as the body, an old PKG-INFO with a folded Description header, repeated
fields, non-ASCII), and hostile input (huge, too many fields, not metadata, random bytes)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.ecosystems.pypi import coremetadata
from mirror.ecosystems.pypi.coremetadata import parse_core_metadata
from mirror.errors import BadUpstreamDocument

# The METADATA of a wheel as setuptools (and hatchling, flit) write it today.
WHEEL_METADATA = """\
Metadata-Version: 2.4
Name: Demo_Pkg
Version: 2.32.3
Summary: Python HTTP for Humans.
Home-page: https://demo.example/
Download-URL: https://demo.example/dl
Author: Kenneth Réitz
Author-email: me@demo.example
Maintainer: Zoë
Maintainer-email: Zoë <zoe@demo.example>
License: Apache-2.0
License-Expression: Apache-2.0
License-File: LICENSE
License-File: NOTICE
Keywords: http,humans , requests
Project-URL: Documentation, https://demo.example/docs
Project-URL: Source, https://code.example/demo
Project-URL: Home-Page, https://demo.example/
Project-URL: Download_URL, https://demo.example/dl
Project-URL: homepage, https://mirror.example/
Project-URL: Files, https://demo.example/dl
Classifier: Development Status :: 5 - Production/Stable
Classifier: Programming Language :: Python :: 3
Classifier: Natural Language :: Français
Requires-Python: >=3.8
Description-Content-Type: text/markdown
Requires-Dist: charset-normalizer<4,>=2
Requires-Dist: idna<4,>=2.5
Requires-Dist: PySocks!=1.5.7,>=1.5.6; extra == "socks"
Provides-Extra: socks
Provides-Extra: use-chardet-on-py3
Dynamic: license-file
Platform: any

# Demo

**Demo** is a simple HTTP library — with ünïcödé.

    >>> import demo

        |  eight spaces and a bar, kept as written in a body

Second paragraph.
"""

# PKG-INFO as old setuptools wrote it: Metadata-Version 1.1, the description folded into a
# header (7 spaces and `|` keep blank lines and indentation), a download URL.
OLD_PKG_INFO = """\
Metadata-Version: 1.1
Name: oldpkg
Version: 0.4
Summary: An old package
Home-page: http://old.example/
Download-URL: http://old.example/oldpkg-0.4.tar.gz
Author: UNKNOWN
License: BSD
Description: Old package
       |
       |    indented line
       |last line
Platform: UNKNOWN
Platform: linux
"""


def parse(text: str) -> coremetadata.CoreMetadata:
    return parse_core_metadata(text.encode("utf-8"), "demo.whl")


def test_a_wheels_metadata_maps_to_the_index_info_fields() -> None:
    fields = parse(WHEEL_METADATA).fields
    assert set(fields) == set(coremetadata.INFO_FIELDS)
    assert fields["name"] == "Demo_Pkg"
    assert fields["version"] == "2.32.3"
    assert fields["summary"] == "Python HTTP for Humans."
    assert fields["author"] == "Kenneth Réitz"
    assert fields["maintainer_email"] == "Zoë <zoe@demo.example>"
    assert fields["license"] == "Apache-2.0"
    assert fields["license_expression"] == "Apache-2.0"
    assert fields["license_files"] == ["LICENSE", "NOTICE"]
    assert fields["keywords"] == "http, humans, requests"
    assert fields["classifiers"] == [
        "Development Status :: 5 - Production/Stable",
        "Programming Language :: Python :: 3",
        "Natural Language :: Français",
    ]
    assert fields["requires_dist"] == [
        "charset-normalizer<4,>=2",
        "idna<4,>=2.5",
        'PySocks!=1.5.7,>=1.5.6; extra == "socks"',
    ]
    assert fields["provides_extra"] == ["socks", "use-chardet-on-py3"]
    assert fields["dynamic"] == ["license-file"]
    assert fields["requires_python"] == ">=3.8"
    assert fields["platform"] == "any"
    assert fields["home_page"] == "https://demo.example/"
    assert fields["download_url"] == "https://demo.example/dl"
    # Homepage and Download first, from their own fields; a Project-URL repeating one of them
    # (under any spelling of its label) is not listed twice, one with another URL is.
    assert fields["project_urls"] == {
        "Homepage": "https://demo.example/",
        "Download": "https://demo.example/dl",
        "Documentation": "https://demo.example/docs",
        "Source": "https://code.example/demo",
        "homepage": "https://mirror.example/",
        "Files": "https://demo.example/dl",
    }
    assert fields["description_content_type"] == "text/markdown"
    assert fields["description"] == WHEEL_METADATA.split("\n\n", 1)[1]


def test_an_old_pkg_info_with_a_folded_description_header() -> None:
    fields = parse(OLD_PKG_INFO).fields
    assert fields["description"] == "Old package\n\n    indented line\nlast line"
    assert fields["platform"] == "UNKNOWN, linux"
    assert fields["project_urls"] == {
        "Homepage": "http://old.example/",
        "Download": "http://old.example/oldpkg-0.4.tar.gz",
    }
    assert fields["classifiers"] == []
    assert fields["requires_dist"] is None
    assert fields["provides_extra"] is None
    assert fields["keywords"] is None
    assert fields["license_files"] is None


def test_eight_space_folding_and_crlf_line_ends() -> None:
    text = "Name: a\r\nVersion: 1\r\nDescription: first\r\n        second\r\n\r\n"
    assert parse(text).fields["description"] == "first\nsecond"


def test_a_body_and_a_description_header_the_body_wins() -> None:
    text = "Name: a\nVersion: 1\nDescription: the header\n\nthe body\n"
    assert parse(text).fields["description"] == "the body\n"


def test_a_repeated_single_field_keeps_the_first() -> None:
    fields = parse("Name: a\nVersion: 1\nSummary: one\nSummary: two\n").fields
    assert fields["summary"] == "one"
    assert (fields["platform"], fields["description"], fields["project_urls"]) == (None,) * 3


def test_latin_1_headers_are_read_not_refused() -> None:
    # Old tools wrote Latin-1; packaging falls back to it for a header that is not UTF-8.
    raw = b"Name: a\nVersion: 1\nAuthor: J\xf6rg\n"
    fields = parse_core_metadata(raw, "a.whl").fields
    assert (fields["name"], fields["author"]) == ("a", "J\u00f6rg")


def test_accessors() -> None:
    parsed = parse(WHEEL_METADATA)
    assert (parsed.name, parsed.version) == ("Demo_Pkg", "2.32.3")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", r"^the core metadata of demo\.whl names no project or no version$"),
        (b"Name: a\n", r"names no project or no version$"),
        (b"Version: 1\n", r"names no project or no version$"),
        (b"\x00\xff\xfe garbage", r"names no project or no version$"),
        (b"<html><body>404</body></html>", r"names no project or no version$"),
    ],
)
def test_what_is_not_core_metadata_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(BadUpstreamDocument, match=message):
        parse_core_metadata(raw, "demo.whl")


def test_huge_input_is_refused_before_parsing() -> None:
    head = b"Name: a\nVersion: 1\n\n"
    largest = head + b"x" * (coremetadata.MAX_BYTES - len(head))
    assert parse_core_metadata(largest, "demo.whl").fields["description"] is not None
    with pytest.raises(BadUpstreamDocument, match=r"more than the 8388608 the mirror reads$"):
        parse_core_metadata(largest + b"x", "demo.whl")


def test_too_many_header_fields_are_refused() -> None:
    most = b"Name: a\nVersion: 1\n" + b"Classifier: x\n" * (coremetadata.MAX_FIELDS - 2)
    assert len(parse_core_metadata(most, "demo.whl").fields["classifiers"]) == 9998
    with pytest.raises(BadUpstreamDocument, match=r"more than 10000 header fields$"):
        parse_core_metadata(most + b"Classifier: y\n", "demo.whl")
    # Continuation lines (space or tab) and the body's lines are not fields.
    many = coremetadata.MAX_FIELDS
    folded = b"Name: a\nVersion: 1\nDescription: x\n" + b"  more\n\tmore\n" * many
    assert parse_core_metadata(folded, "demo.whl").fields["description"] is not None
    body = b"Name: a\nVersion: 1\n\n" + b"Classifier: in the body\n" * many
    assert parse_core_metadata(body, "demo.whl").fields["classifiers"] == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_parse_or_raise_bad_upstream_document(raw: bytes) -> None:
    try:
        parsed = parse_core_metadata(b"Name: a\nVersion: 1\n" + raw, "demo.whl")
    except BadUpstreamDocument:
        return
    # Whatever it says, it is text, lists and objects a JSON answer can carry as they are.
    assert set(parsed.fields) == set(coremetadata.INFO_FIELDS)
    assert isinstance(parsed.name, str)
    assert isinstance(parsed.version, str)
    orjson.dumps(dict(parsed.fields))
