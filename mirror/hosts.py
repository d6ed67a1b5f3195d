"""The allowlist key of a URL's host: what an upstream scope and a document's file-link check
compare. Pure: no I/O, no aiohttp (yarl parses the URL)."""

from __future__ import annotations

from yarl import URL

DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: URL) -> str | None:
    """The allowlist key of `url`: lower-case host, plus `:port` when not the scheme's default."""
    if url.scheme not in DEFAULT_PORTS or not url.raw_host:
        return None
    host = url.raw_host.lower()
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is None or port == DEFAULT_PORTS[url.scheme]:
        return host
    return f"{host}:{port}"
