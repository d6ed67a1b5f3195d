"""`mirror.logs`: one line per event whatever a message carries, tracebacks still readable."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import unicodedata
from collections.abc import Iterator

import pytest

from mirror.logs import CONTINUATION, SafeFormatter, escape

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EVENT_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
FORGED = "\n2026-11-30 09:00:00,000 WARNING mirror.admin: unblock npm left-pad by alice"
HOSTILE = [
    "\n",
    "\r",
    "\r\n",
    "\x1b[2J\x1b[31m",
    "\x00",
    "\x07",
    "\x7f",
    "\x85",  # NEL, a line break to some readers
    "\x9b31m",  # C1 CSI: an escape sequence without ESC
    "\u2028",
    "\u2029",
    "\u202e",  # right-to-left override
    "\x0b\x0c\x1c\x1d\x1e",  # line breaks to str.splitlines
]
# Every character a terminal or a line-splitting reader acts on.
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A logger `test.logs` writing through SafeFormatter into a string."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(SafeFormatter(FORMAT))
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def lines_of(buffer: io.StringIO) -> list[str]:
    text = buffer.getvalue()
    assert text.endswith("\n")
    return text[:-1].split("\n")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_escape_leaves_no_character_a_terminal_acts_on(hostile: str) -> None:
    escaped = escape(f"before{hostile}after")
    assert escaped.startswith("before")
    assert escaped.endswith("after")
    assert not UNSAFE.search(escaped)
    assert escaped.splitlines() == [escaped]
    assert escaped.isprintable()


def test_escape_keeps_printable_text_and_names_what_it_escaped() -> None:
    text = "left-pad@1.0.0 ünïcødé 🙂 C:\\path \\n"
    assert escape(text) == text
    assert escape("a\nb\rc\td\x1be\x85f\u2028g\u202eh") == (
        "a\\nb\\rc\\td\\x1be\\x85f\\u2028g\\u202eh"
    )


def test_every_control_character_is_escaped() -> None:
    for code in range(0x3000):
        char = chr(code)
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            assert escape(char) != char, hex(code)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_message_is_one_line(stream: io.StringIO, hostile: str) -> None:
    logger = logging.getLogger("test.logs")
    logger.warning("blocked %s (%s)", f"left-pad{hostile}", f"reason{hostile}{FORGED}")
    (line,) = lines_of(stream)
    assert EVENT_START.match(line)
    assert "WARNING test.logs: blocked left-pad" in line
    assert "unblock npm left-pad by alice" in line
    assert not UNSAFE.search(line)


def test_a_traceback_is_readable_and_cannot_start_an_event(stream: io.StringIO) -> None:
    logger = logging.getLogger("test.logs")
    try:
        raise ValueError(f"bad name\x1b[31m{FORGED}")
    except ValueError:
        logger.exception("request %s failed", "/npm/x\ny")
    first, *rest = lines_of(stream)
    assert EVENT_START.match(first)
    assert first.endswith("ERROR test.logs: request /npm/x\\ny failed")
    assert rest[0] == CONTINUATION + "Traceback (most recent call last):"
    assert any(line.startswith(CONTINUATION + '  File "') for line in rest)
    assert all(line.startswith(CONTINUATION) for line in rest)
    assert rest[-2] == CONTINUATION + "ValueError: bad name\\x1b[31m"
    assert rest[-1] == CONTINUATION + FORGED.strip("\n")
    assert not UNSAFE.search(stream.getvalue().replace("\n", ""))


def test_a_stack_is_continued_like_a_traceback(stream: io.StringIO) -> None:
    logging.getLogger("test.logs").warning("here\rthere", stack_info=True)
    first, *rest = lines_of(stream)
    assert first.endswith("WARNING test.logs: here\\rthere")
    assert rest[0] == CONTINUATION + "Stack (most recent call last):"
    assert all(line.startswith(CONTINUATION) for line in rest)


def test_a_cached_exception_text_is_not_trusted() -> None:
    """Another formatter may have filled `exc_text` first, unescaped."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord(
            "test.logs", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    record.exc_text = "Traceback\nforged line\x1b[2J"
    text = SafeFormatter("%(message)s").format(record)
    assert "forged" not in text
    assert text.split("\n")[-1] == CONTINUATION + "RuntimeError: boom"
    record.exc_info = None  # as a record from another process arrives
    text = SafeFormatter("%(message)s").format(record)
    assert text.split("\n") == [
        "failed",
        CONTINUATION + "Traceback",
        CONTINUATION + "forged line\\x1b[2J",
    ]


def test_json_access_lines_pass_unchanged() -> None:
    """The access log is `json.dumps` output (printable ASCII): the formatter changes none."""
    line = json.dumps({"path": "/npm/a%0ab", "ua": "x\x1b[31m\u2028\x85y\n"}, separators=(",", ":"))
    assert not UNSAFE.search(line)
    record = logging.LogRecord("mirror.access", logging.INFO, __file__, 1, line, None, None)
    assert SafeFormatter("%(message)s").format(record) == line
    assert json.loads(line)["ua"] == "x\x1b[31m\u2028\x85y\n"
