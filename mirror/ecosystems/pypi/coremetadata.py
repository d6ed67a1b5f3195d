"""Core metadata (a wheel's `METADATA`, an sdist's `PKG-INFO`, a PEP 658 `.metadata` file),
pure: parse the RFC 822 header block (and the body, which holds the description from
Metadata-Version 2.1 on) into the fields the legacy JSON API's `info` carries, mapped the way
the public index maps them. Bounded (bytes, header fields); a hostile or broken file raises
BadUpstreamDocument, never anything else. Never does I/O.

Parsing is packaging's own (`packaging.metadata.parse_email`: encodings, multiple-use fields,
`Project-URL`, the body as description); this module bounds its input, settles what it leaves
unparsed (a description given twice, a field repeated) and maps names and shapes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from packaging.metadata import parse_email

from mirror.errors import BadUpstreamDocument

# Real METADATA files are a few KiB; the largest (a whole changelog as description) a few
# MiB. Anything bigger is not read at all.
MAX_BYTES = 8 * 1024 * 1024
# Header fields (lines that do not continue a field) before the body: a few hundred in real
# files (classifiers and Requires-Dist lines).
MAX_FIELDS = 10_000

# `info` keys this module fills (the others come from the files or the index itself).
INFO_FIELDS: tuple[str, ...] = (
    "name", "version", "summary", "description", "description_content_type", "keywords",
    "license", "license_expression", "license_files", "classifiers", "author", "author_email",
    "maintainer", "maintainer_email", "requires_python", "platform", "project_urls",
    "requires_dist", "provides_extra", "dynamic", "home_page", "download_url",
)  # fmt: skip

# Single-use fields whose value is text, by their `info` key (packaging's raw key the same).
_TEXT_FIELDS = (
    "name", "version", "summary", "description_content_type", "license", "license_expression",
    "author", "author_email", "maintainer", "maintainer_email", "requires_python", "home_page",
    "download_url",
)  # fmt: skip
# Multiple-use fields the index sends as a list, null when there is none.
_LIST_OR_NULL = ("requires_dist", "provides_extra", "dynamic", "license_files")
# An old-style folded `Description:` header: continuation lines are indented by 8 spaces,
# or by 7 and a `|` (setuptools' rfc822_escape, which keeps blank lines and indentation).
_FOLD = re.compile(r"^(?: {7}\|| {8})", re.MULTILINE)
_DESCRIPTION_HEADER = re.compile(rb"^description[ \t]*:", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class CoreMetadata:
    """The JSON API `info` fields of one release's core metadata (INFO_FIELDS, each present:
    null when the file does not say)."""

    fields: Mapping[str, Any]

    @property
    def name(self) -> str | None:
        value = self.fields.get("name")
        return value if isinstance(value, str) else None

    @property
    def version(self) -> str | None:
        value = self.fields.get("version")
        return value if isinstance(value, str) else None


def _head(raw: bytes) -> bytes:
    """The header block: everything before the first empty line."""
    return re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]


def _field_count(head: bytes) -> int:
    """Header fields (continuation lines not counted)."""
    return sum(1 for line in head.splitlines() if line[:1] not in (b" ", b"\t", b""))


def _unfold(description: str) -> str:
    """A `Description:` header's value without its continuation indent, lines ending in
    `\n` (a CRLF file's header values keep their `\r`)."""
    return _FOLD.sub("", description.replace("\r\n", "\n"))


def _first_text(values: object) -> str | None:
    """The first text of an unparsed field (packaging leaves a repeated one unparsed)."""
    if isinstance(values, list):
        for value in values:
            if isinstance(value, str):
                return value
    return None


def _description(
    raw: Mapping[str, Any], unparsed: Mapping[str, list[Any]], *, in_header: bool
) -> str | None:
    """The description: the body (Metadata-Version 2.1+) or the `Description:` header
    (`in_header`: unfolded). A file with both (packaging leaves them unparsed) gets the body:
    the newer form, written last."""
    value = raw.get("description")
    if isinstance(value, str):
        return _unfold(value) if in_header else value
    texts = [item for item in unparsed.get("description", []) if isinstance(item, str)]
    if texts:
        return texts[-1]
    return None


def _text_list(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _project_urls(
    raw: Mapping[str, Any], home_page: str | None, download_url: str | None
) -> dict[str, str] | None:
    """`project_urls` as the index builds it: `Homepage` and `Download` from their own fields
    first, then each `Project-URL` (one the same as those two is not repeated)."""
    urls: dict[str, str] = {}
    if home_page:
        urls["Homepage"] = home_page
    if download_url:
        urls["Download"] = download_url
    labelled = raw.get("project_urls")
    for label, url in labelled.items() if isinstance(labelled, dict) else ():
        if not isinstance(label, str) or not isinstance(url, str):
            continue
        folded = label.casefold().replace("-", "").replace("_", "")
        if (folded == "homepage" and url == urls.get("Homepage")) or (
            folded == "downloadurl" and url == urls.get("Download")
        ):
            continue
        urls[label] = url
    return urls or None


def parse_core_metadata(raw: bytes, what: str) -> CoreMetadata:
    """Parse core metadata bytes (`what` names them in errors). Raises BadUpstreamDocument
    when they are too large, have too many fields, or are not core metadata at all (no
    `Name` or no `Version`)."""
    if len(raw) > MAX_BYTES:
        raise BadUpstreamDocument(
            f"the core metadata of {what} is {len(raw)} bytes, more than the {MAX_BYTES} "
            "the mirror reads"
        )
    head = _head(raw)
    if _field_count(head) > MAX_FIELDS:
        raise BadUpstreamDocument(
            f"the core metadata of {what} has more than {MAX_FIELDS} header fields"
        )
    try:
        parsed, unparsed = parse_email(raw)
    except Exception as exc:  # a third-party parser on hostile bytes: any failure is theirs
        raise BadUpstreamDocument(
            f"the core metadata of {what} cannot be parsed: {type(exc).__name__}"
        ) from None
    raw_fields: Mapping[str, Any] = parsed
    fields: dict[str, Any] = dict.fromkeys(INFO_FIELDS)
    for key in _TEXT_FIELDS:
        value = raw_fields.get(key)
        fields[key] = value if isinstance(value, str) else _first_text(unparsed.get(key))
    if not fields["name"] or not fields["version"]:
        raise BadUpstreamDocument(f"the core metadata of {what} names no project or no version")
    in_header = _DESCRIPTION_HEADER.search(head) is not None
    fields["description"] = _description(raw_fields, unparsed, in_header=in_header)
    keywords = _text_list(raw_fields.get("keywords"))
    fields["keywords"] = ", ".join(keywords) if keywords else None
    fields["classifiers"] = _text_list(raw_fields.get("classifiers"))
    platforms = _text_list(raw_fields.get("platforms"))
    fields["platform"] = ", ".join(platforms) if platforms else None
    for key in _LIST_OR_NULL:
        fields[key] = _text_list(raw_fields.get(key)) or None
    fields["project_urls"] = _project_urls(raw_fields, fields["home_page"], fields["download_url"])
    return CoreMetadata(fields)
