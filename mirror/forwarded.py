"""Who the client is and which URL it used, when proxies stand in front of the mirror (and
`READ_TOKEN`, the read token it presented).

`X-Forwarded-*` headers are believed only from a configured proxy (`trusted_proxies`): the
client is the rightmost `X-Forwarded-For` hop that is not itself a trusted proxy (hops to
the left of it were written by the client and prove nothing). The ledger, the audit log,
rate limits and rewritten URLs all ask this module, so they always name the same client."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

from mirror.config import Config, IPNetwork

# The name of the read token a package read presented (`mirror.identity.read_token`), set by
# the access check in `mirror.app` when there is one; the ledger records it.
READ_TOKEN = web.RequestKey("mirror.read-token", str)

# Headers that change the URLs a view is rendered with (behind a trusted proxy).
FORWARDED_URL_HEADERS = ("X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Prefix")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(peer: str | None, trusted: Iterable[IPNetwork]) -> bool:
    """True when `peer` (an address) lies in one of the `trusted` networks."""
    if not peer:
        return False
    address = _address(peer)
    return address is not None and any(address in network for network in trusted)


def client_of(peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> str:
    """The client's address: the socket `peer`, unless it is a trusted proxy; then the
    rightmost `X-Forwarded-For` hop that is not a trusted proxy. A malformed hop ends the
    walk at the last proxy seen (a proxy never writes one, so it came from the client)."""
    peer = peer or ""
    if not trusted or not is_trusted(peer, trusted) or not forwarded_for:
        return peer
    client = peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        address = _address(hop)
        if address is None:
            return client
        client = str(address)
        if not any(address in network for network in trusted):
            return client
    return client


def client_address(request: web.Request, config: Config) -> str:
    """The client of `request`, as the ledger, the audit log and rate limits record it."""
    return client_of(request.remote, request.headers.get("X-Forwarded-For"), config.trusted_proxies)


def from_trusted_proxy(request: web.Request, config: Config) -> bool:
    """True when `request` came through a configured proxy, so its X-Forwarded-* count."""
    return bool(config.trusted_proxies) and is_trusted(request.remote, config.trusted_proxies)


def forwarded_scheme(request: web.Request, config: Config) -> str | None:
    """The scheme the client used, as a trusted proxy says (`X-Forwarded-Proto`, its first
    value, lower-cased), or None when the request did not come through one or it says
    nothing."""
    if not from_trusted_proxy(request, config):
        return None
    said = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return said or None
