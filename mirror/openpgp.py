"""Who made an OpenPGP detached signature, pure: the issuer of the first signature packet of
an ASCII-armored (Maven's `.asc`) or binary signature. The signature is not verified (the
mirror has no keys to verify with); the issuer is only compared with the one of the release
before (`ecosystems/maven/signals.py`).

Read from RFC 4880 (OpenPGP) and RFC 9580 (its revision): armor (RFC 4880 §6.2, RFC 9580
§6.2), packet headers old and new format (RFC 4880 §4.2, RFC 9580 §4.2), signature packets v3
(§5.2.2), v4 and v5 (§5.2.3, 2-octet subpacket area counts) and v6 (RFC 9580 §5.2.3, 4-octet
counts), subpacket lengths (§5.2.3.1), Issuer Key ID (type 16, §5.2.3.5) and Issuer
Fingerprint (type 33, RFC 9580 §5.2.3.35).

Upstream bytes are untrusted: every reader here returns None on anything malformed, truncated
or larger than MAX_SIGNATURE_BYTES (a detached signature is well under 2 KiB), never raises.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

# An armored RSA-4096 signature with a few armor headers is about 1.2 KiB.
MAX_SIGNATURE_BYTES: Final = 8 * 1024
_ARMOR_BEGIN: Final = b"-----BEGIN PGP SIGNATURE-----"
_ARMOR_END: Final = b"-----END PGP SIGNATURE-----"
_SIGNATURE_TAG: Final = 2
_ISSUER_KEY_ID: Final = 16
_ISSUER_FINGERPRINT: Final = 33
_KEY_ID_OCTETS: Final = 8
# Issuer Fingerprint: the key version octet, then 20 octets (v4) or 32 (v5, v6).
_FINGERPRINT_OCTETS: Final = {4: 20, 5: 32, 6: 32}


@dataclass(frozen=True, slots=True)
class Issuer:
    """The key a signature names: its `key_id` (16 upper-case hex digits, what keys are
    compared by) and its `fingerprint` when the signature carries one."""

    key_id: str
    fingerprint: str | None = None


def signature_issuer(raw: bytes) -> Issuer | None:
    """The issuer of the first signature packet in `raw` (armored or binary): the Issuer
    Fingerprint subpacket when there is one, else the Issuer Key ID, hashed area first. None
    when `raw` is not a readable signature or names no issuer."""
    if not isinstance(raw, bytes) or len(raw) > MAX_SIGNATURE_BYTES:
        return None
    # Only armor is text: a binary signature may well end with a byte that looks like space.
    packets = dearmor(raw) if raw.lstrip().startswith(b"-----") else raw
    if packets is None:
        return None
    body = _first_signature_packet(packets)
    return _issuer(body) if body is not None else None


def dearmor(armored: bytes) -> bytes | None:
    """The binary data of an ASCII-armored signature (RFC 4880 §6.2): the base64 lines
    between the BEGIN and END lines, past the armor headers; the CRC line (`=XXXX`, optional
    in RFC 9580) is not checked. None when malformed."""
    lines = armored.replace(b"\r\n", b"\n").split(b"\n")
    stripped = [line.strip() for line in lines]
    if _ARMOR_BEGIN not in stripped or _ARMOR_END not in stripped:
        return None
    begin = stripped.index(_ARMOR_BEGIN)
    end = stripped.index(_ARMOR_END)
    if end <= begin:
        return None
    inner = stripped[begin + 1 : end]
    if b"" in inner:  # armor headers end with an empty line
        inner = inner[inner.index(b"") + 1 :]
    data = [line for line in inner if line and not (line.startswith(b"=") and len(line) == 5)]
    try:
        return base64.b64decode(b"".join(data), validate=True)
    except (binascii.Error, ValueError):
        return None


def _first_signature_packet(data: bytes) -> bytes | None:
    """The body of the first signature packet in `data`, skipping other packets (a marker
    packet, say); None when a header is malformed or a length runs past the end."""
    offset = 0
    while offset < len(data):
        header = _packet_header(data, offset)
        if header is None:
            return None
        tag, start, length = header
        end = start + length
        if end > len(data):
            return None
        if tag == _SIGNATURE_TAG:
            return data[start:end]
        offset = end
    return None


def _packet_header(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """(tag, body start, body length) of the packet at `offset` (RFC 4880 §4.2). Partial
    body lengths are refused: a signature packet never has them."""
    first = data[offset]
    if not first & 0x80:
        return None
    position = offset + 1
    if first & 0x40:  # new format: the tag in six bits, a length of 1, 2 or 5 octets
        tag = first & 0x3F
        if position >= len(data):
            return None
        octet = data[position]
        if octet < 192:
            return tag, position + 1, octet
        if octet < 224:
            if position + 1 >= len(data):
                return None
            return tag, position + 2, ((octet - 192) << 8) + data[position + 1] + 192
        if octet == 255:
            if position + 5 > len(data):
                return None
            return tag, position + 5, int.from_bytes(data[position + 1 : position + 5], "big")
        return None  # a partial body length
    tag = (first >> 2) & 0x0F  # old format: the tag in four bits, a length type in two
    length_type = first & 0x03
    if length_type == 3:  # indeterminate: to the end of the data
        return tag, position, len(data) - position
    octets = (1, 2, 4)[length_type]
    if position + octets > len(data):
        return None
    return tag, position + octets, int.from_bytes(data[position : position + octets], "big")


def _issuer(body: bytes) -> Issuer | None:
    """The issuer named by one signature packet's body (v3, v4, v5 or v6)."""
    if not body:
        return None
    version = body[0]
    if version in (2, 3):  # RFC 4880 §5.2.2: the key id is a field, 7 octets in
        field = body[7 : 7 + _KEY_ID_OCTETS]
        return Issuer(field.hex().upper()) if len(field) == _KEY_ID_OCTETS else None
    if version not in (4, 5, 6):
        return None
    count_octets = 4 if version == 6 else 2
    # version, signature type, public-key algorithm, hash algorithm, then the hashed area.
    position = 4
    areas: list[bytes] = []
    for _ in range(2):
        if position + count_octets > len(body):
            return None
        count = int.from_bytes(body[position : position + count_octets], "big")
        start = position + count_octets
        if start + count > len(body):
            return None
        areas.append(body[start : start + count])
        position = start + count
    fingerprint: Issuer | None = None
    key_id: Issuer | None = None
    for area in areas:
        for kind, value in _subpackets(area):
            if kind == _ISSUER_FINGERPRINT and fingerprint is None:
                fingerprint = _from_fingerprint(value)
            elif kind == _ISSUER_KEY_ID and key_id is None and len(value) == _KEY_ID_OCTETS:
                key_id = Issuer(value.hex().upper())
    return fingerprint or key_id


def _subpackets(area: bytes) -> list[tuple[int, bytes]]:
    """(type without the critical bit, data) of each subpacket of one area (RFC 4880
    §5.2.3.1); stops at the first malformed one."""
    found: list[tuple[int, bytes]] = []
    position = 0
    while position < len(area):
        octet = area[position]
        if octet < 192:
            length, position = octet, position + 1
        elif octet < 255:
            if position + 1 >= len(area):
                break
            length = ((octet - 192) << 8) + area[position + 1] + 192
            position += 2
        else:
            if position + 5 > len(area):
                break
            length = int.from_bytes(area[position + 1 : position + 5], "big")
            position += 5
        if length == 0 or position + length > len(area):
            break
        found.append((area[position] & 0x7F, area[position + 1 : position + length]))
        position += length
    return found


def _from_fingerprint(value: bytes) -> Issuer | None:
    """An Issuer Fingerprint subpacket's key: a v4 key id is the fingerprint's last 8
    octets (RFC 4880 §12.2), a v5/v6 key id its first 8 (RFC 9580 §5.5.4.3)."""
    if not value or _FINGERPRINT_OCTETS.get(value[0]) != len(value) - 1:
        return None
    fingerprint = value[1:]
    key_id = fingerprint[-_KEY_ID_OCTETS:] if value[0] == 4 else fingerprint[:_KEY_ID_OCTETS]
    return Issuer(key_id.hex().upper(), fingerprint.hex().upper())
