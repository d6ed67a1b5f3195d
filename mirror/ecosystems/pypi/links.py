"""The file links of PyPI upstream documents (project pages and the JSON API), pure: a link
resolved against its document, the check that the mirror may fetch from it (http(s) on an
allowed file host only), and one log line per parsed document for the links left out. Both
document parsers use these, so a page and the JSON API refuse the same links."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urljoin

from yarl import URL

from mirror.hosts import host_key

log = logging.getLogger(__name__)

_MAX_LOGGED_LINKS = 5
_MAX_LOGGED_TEXT = 120


def _describe(filename: str, problem: str) -> str:
    """`filename: problem` for a log line: the upstream's text cut short and escaped
    (`ascii` escapes control characters, so a skipped link never forges a log line)."""
    shown = filename if len(filename) <= _MAX_LOGGED_TEXT else filename[:_MAX_LOGGED_TEXT] + "..."
    return f"{shown!a}: {problem}"


def log_skipped_links(project: str, where: str, skipped: Sequence[tuple[str, str]]) -> None:
    """One warning per parsed upstream document that had links the mirror will not follow
    (parsing happens once per upstream change, so this is not repeated per request)."""
    if not skipped:
        return
    shown = "; ".join(_describe(name, problem) for name, problem in skipped[:_MAX_LOGGED_LINKS])
    extra = len(skipped) - _MAX_LOGGED_LINKS
    more = f"; and {extra} more" if extra > 0 else ""
    log.warning(
        "skipped %d file link(s) on the upstream %s of %s: %s%s",
        len(skipped),
        where,
        ascii(project),
        shown,
        more,
    )


def resolve(base: str, href: str) -> str | None:
    """`href` made absolute against `base`; None when the standard library cannot parse it
    (e.g. a broken IPv6 literal)."""
    try:
        return urljoin(base, href)
    except ValueError:
        return None


def link_problem(url: str, allowed: frozenset[str]) -> str | None:
    """Why the mirror will not fetch a file from `url`, or None when it may: only http(s)
    URLs on one of the `allowed` file hosts (`file:`, `data:`, `javascript:`, relative
    leftovers and any other host are refused)."""
    try:
        parsed = URL(url)
        scheme = parsed.scheme.lower()
        if scheme not in ("http", "https"):
            return f"scheme {scheme or '(none)'!a} is not http(s)"
        key = host_key(parsed)
    except (ValueError, TypeError):
        return "its URL is not valid"
    if key is None:
        return "its URL names no host"
    if key not in allowed:
        return f"host {key!a} is not an allowed file host"
    return None
