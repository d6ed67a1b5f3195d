"""Log lines that untrusted text cannot forge. Messages carry what clients, upstream documents
and admins wrote (paths, package names, block reasons, upstream error text); written raw, a
newline would start a second line that looks like another event, and an escape sequence would
reach the terminal of the operator reading the log.

`SafeFormatter` writes each event as one line with every control character escaped. A
traceback or stack follows on continuation lines, each escaped the same way and prefixed with
`CONTINUATION`, so every line that does not start with that prefix starts an event. Backslashes
are left as they are (Windows paths and the JSON access log stay readable): the escaped form
of a control character is visible text and cannot act as one.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

from mirror.safetext import escape

__all__ = ["CONTINUATION", "MalformedRequestFilter", "SafeFormatter", "escape"]

CONTINUATION = "  | "


class SafeFormatter(logging.Formatter):
    """A `logging.Formatter` (same format string and date options) whose every line is safe:
    the formatted event on one escaped line, its exception and stack on prefixed lines."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        lines = [escape(self.formatMessage(record))]
        # Never a cached `exc_text`: another formatter may have written it unescaped.
        if record.exc_info:
            lines.extend(_continued(self.formatException(record.exc_info)))
        elif record.exc_text:
            lines.extend(_continued(record.exc_text))
        if record.stack_info:
            lines.extend(_continued(self.formatStack(record.stack_info)))
        return "\n".join(lines)


def _continued(text: str) -> list[str]:
    # Split on "\n" only: any other line break inside a line is escaped, not followed.
    return [CONTINUATION + escape(line) for line in text.rstrip("\n").split("\n")]


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs every request it cannot parse (a bad request line, a control character
    in a header) at ERROR with a traceback, so any client could fill the log with them. Such
    a request is the client's fault and got a 400: it becomes one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError) or not 400 <= error.code < 500:
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "refused a request it could not parse from %s: %s"
        record.args = (peer, error.message or type(error).__name__)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)
