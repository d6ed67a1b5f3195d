"""Untrusted text for logs and terminals: what is unsafe, and how it is escaped."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from mirror import safetext


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain text, ünïcode, 日本語, emoji 🙂", "plain text, ünïcode, 日本語, emoji 🙂"),
        ("a\nb", "a\\nb"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("tab\there", "tab\\there"),
        ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
        ("bidi\u202eevil\u2066", "bidi\\u202eevil\\u2066"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("lone\udc80", "lone\\udc80"),
    ],
)
def test_escape_keeps_text_on_one_printable_line(text: str, escaped: str) -> None:
    assert safetext.escape(text) == escaped
    assert safetext.escape(escaped) == escaped  # escaping twice changes nothing more
    assert safetext.escape(text).isprintable()


def test_every_unsafe_character_is_escaped_and_nothing_else() -> None:
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        unsafe = unicodedata.category(char) in safetext.UNSAFE_CATEGORIES
        assert safetext.is_unsafe(char) is unsafe
        assert (safetext.first_unsafe(f"ab{char}") == 2) is unsafe
        if not unsafe and char.isprintable():
            assert safetext.escape(char) == char
        if unsafe:
            assert safetext.escape(char).isprintable()


def test_non_strings_are_shown_as_their_str() -> None:
    assert safetext.escape(42) == "42"
    assert safetext.escape(ValueError("bad\nthing")) == "bad\\nthing"
    assert safetext.describe_character("\n") == "U+000A"
