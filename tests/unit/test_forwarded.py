"""Forwarded headers count only from configured proxies; the client is the rightmost hop
that is not one of them."""

from __future__ import annotations

import ipaddress

import pytest

from mirror.forwarded import client_of, is_trusted

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # no proxies trusted, or the peer is not one: the socket peer, whatever the header says
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),
        ("203.0.113.7", None, "203.0.113.7"),
        # one trusted proxy: the hop it appended
        ("10.0.0.1", "203.0.113.7", "203.0.113.7"),
        # the client prepended a hop of its own choosing: ignored
        ("10.0.0.1", "1.2.3.4, 203.0.113.7", "203.0.113.7"),
        # a chain of trusted proxies
        ("10.0.0.1", "1.2.3.4, 203.0.113.7, 10.9.9.9, 10.0.0.2", "203.0.113.7"),
        # every hop a proxy: the leftmost
        ("10.0.0.1", "10.1.1.1, 10.2.2.2", "10.1.1.1"),
        # a malformed hop (never written by a proxy) ends the walk at the last proxy seen
        ("10.0.0.1", "203.0.113.7, not-an-ip", "10.0.0.1"),
        ("10.0.0.1", "203.0.113.7, not-an-ip, 10.0.0.2", "10.0.0.2"),
        # ports and brackets are tolerated; IPv6 proxies
        ("2001:db8::1", "[2001:db9::5]:443", "2001:db9::5"),
        ("10.0.0.1", "203.0.113.7:5555", "203.0.113.7"),
        # a trusted peer that sent no header
        ("10.0.0.1", "", "10.0.0.1"),
        ("", "203.0.113.7", ""),
    ],
)
def test_client_is_the_rightmost_untrusted_hop(
    peer: str, forwarded_for: str | None, client: str
) -> None:
    assert client_of(peer, forwarded_for, PROXIES) == client


def test_nothing_is_trusted_without_proxies() -> None:
    assert client_of("10.0.0.1", "203.0.113.7", ()) == "10.0.0.1"
    assert not is_trusted("10.0.0.1", ())
    assert is_trusted("::ffff:10.0.0.1", PROXIES)
    assert not is_trusted("garbage", PROXIES)
