"""Untrusted text (rule reasons, package names, advisory summaries, upstream answers) shown in
a log line or on a terminal: one rule for what is unsafe, one escaping function. Pure.

Unsafe are the characters that can end a line, move the cursor, start a terminal escape
sequence or reorder what is shown: Unicode categories Cc (C0, DEL, C1), Cf (format,
bidirectional overrides), Cs (lone surrogates), Zl and Zp (line and paragraph separators).
Escaped, each is written `\\n`, `\\r`, `\\t`, `\\xNN`, `\\uNNNN` or `\\UNNNNNNNN`, so the text
stays on one line and shows what was there. Log lines (`mirror.logs`), the admin API's change
log and the CLI's output all escape with this one function."""

from __future__ import annotations

import unicodedata
from typing import Final

UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_unsafe(char: str) -> bool:
    return unicodedata.category(char) in UNSAFE_CATEGORIES


def first_unsafe(text: str) -> int | None:
    """The index of the first unsafe character of `text`, or None."""
    for index, char in enumerate(text):
        if char.isprintable():
            continue  # no printable character is in an unsafe category: the fast path
        if is_unsafe(char):
            return index
    return None


def escape(text: object) -> str:
    """`text` (str() of it) with every unsafe character escaped: one line, no control."""
    value = text if isinstance(text, str) else str(text)
    if value.isprintable() or first_unsafe(value) is None:  # isprintable: the fast path
        return value
    return "".join(_escaped(char) if is_unsafe(char) else char for char in value)


def describe_character(char: str) -> str:
    """`U+000A` for error messages."""
    return f"U+{ord(char):04X}"


def _escaped(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
