"""mirror.openpgp: the issuer of real signatures made by gpg (in a throw-away GNUPGHOME), of
the same packets re-framed by hand (RFC 4880 §4.2 headers, v3 and v6 bodies), and None for
anything hostile or truncated."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mirror import openpgp
from mirror.openpgp import Issuer
from tests.fakes import signatures

GPG = shutil.which("gpg")


def gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(
        ["gpg", "--batch", "--quiet", "--homedir", str(home), *args],
        input=data,
        capture_output=True,
        check=True,
        timeout=60,
        env={**os.environ, "GNUPGHOME": str(home)},
    ).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Two keys without passphrase (ed25519 and RSA): uid -> fingerprint."""
    if GPG is None:
        pytest.skip("gpg is not installed")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    fingerprints = {}
    for uid, algorithm in (("ed@example.test", "ed25519"), ("rsa@example.test", "rsa2048")):
        gpg(home, "--passphrase", "", "--quick-gen-key", uid, algorithm, "sign", "never")
        listing = gpg(home, "--with-colons", "--list-keys", uid).decode()
        fpr = next(line for line in listing.splitlines() if line.startswith("fpr:"))
        fingerprints[uid] = fpr.split(":")[9]
    return home, fingerprints


@pytest.mark.parametrize("uid", ["ed@example.test", "rsa@example.test"])
def test_real_armored_and_binary_signatures_name_their_key(
    keys: tuple[Path, dict[str, str]], uid: str
) -> None:
    home, fingerprints = keys
    fingerprint = fingerprints[uid]
    expected = Issuer(key_id=fingerprint[-16:], fingerprint=fingerprint)
    for armor in (("--armor",), ()):
        signature = gpg(home, *armor, "--local-user", uid, "--detach-sign", data=b"a pom\n")
        assert openpgp.signature_issuer(signature) == expected


def test_the_fake_repositorys_stored_signatures_read_as_their_keys() -> None:
    for key_id, fingerprint, armored in signatures.KEYS.values():
        assert openpgp.signature_issuer(armored) == Issuer(key_id, fingerprint)


def packets(name: str = "alpha") -> bytes:
    decoded = openpgp.dearmor(signatures.armored(name))
    assert decoded is not None
    return decoded


def body_of(data: bytes) -> bytes:
    """The body of gpg's old-format signature packet with a one-octet length (RFC 4880
    §4.2.1: tag octet 0b10_0010_00, then the length)."""
    assert data[0] == 0x88
    return data[2 : 2 + data[1]]


def test_new_format_headers_are_read() -> None:
    body = body_of(packets())
    expected = openpgp.signature_issuer(signatures.armored("alpha"))
    # RFC 4880 §4.2.2: 0xC0 | tag 2, then a one-octet (<192) length.
    assert openpgp.signature_issuer(bytes([0xC2, len(body)]) + body) == expected
    # The five-octet form: 255 then a four-octet length.
    long_form = bytes([0xC2, 255]) + len(body).to_bytes(4, "big") + body
    assert openpgp.signature_issuer(long_form) == expected
    # A partial body length (224..254) never frames a signature packet.
    assert openpgp.signature_issuer(bytes([0xC2, 0xE1]) + body) is None


def test_other_packets_before_the_signature_are_skipped() -> None:
    # RFC 4880 §5.8: a Marker packet (tag 10, "PGP"), old format, one-octet length.
    marker = bytes([0x80 | (10 << 2), 3]) + b"PGP"
    assert openpgp.signature_issuer(marker + packets("beta")) == Issuer(
        signatures.key_id("beta"), signatures.KEYS["beta"][1]
    )


def subpacket(kind: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, kind]) + data


def test_the_key_id_subpacket_is_used_when_there_is_no_fingerprint() -> None:
    # RFC 4880 §5.2.3: version 4, type 0, algorithm 22 (EdDSA), hash 8 (SHA-256), hashed
    # area (a creation time, §5.2.3.4), unhashed area (Issuer, §5.2.3.5), hash prefix.
    hashed = subpacket(2, b"\x5f\x00\x00\x00")
    unhashed = subpacket(16, bytes.fromhex("0123456789ABCDEF"))
    body = (
        bytes([4, 0, 22, 8])
        + len(hashed).to_bytes(2, "big")
        + hashed
        + len(unhashed).to_bytes(2, "big")
        + unhashed
        + b"\xab\xcd"
    )
    assert openpgp.signature_issuer(bytes([0xC2, len(body)]) + body) == Issuer("0123456789ABCDEF")


def test_a_v6_signature_names_its_key_by_the_fingerprints_first_octets() -> None:
    # RFC 9580 §5.2.3: v6 areas have four-octet counts; Issuer Fingerprint (§5.2.3.35) is
    # the key version (6) then 32 octets; a v6 key id is the fingerprint's first 8 octets.
    fingerprint = bytes(range(32))
    hashed = subpacket(33 | 0x80, b"\x06" + fingerprint)  # the critical bit set
    body = (
        bytes([6, 0, 27, 10])
        + len(hashed).to_bytes(4, "big")
        + hashed
        + (0).to_bytes(4, "big")
        + b"\xab\xcd"
    )
    assert openpgp.signature_issuer(bytes([0xC2, len(body)]) + body) == Issuer(
        fingerprint[:8].hex().upper(), fingerprint.hex().upper()
    )


def test_a_v3_signature_names_its_key_id_field() -> None:
    # RFC 4880 §5.2.2: version 3, 5, type, creation time (4), key id (8), algorithms.
    body = bytes([3, 5, 0]) + b"\x5f\x00\x00\x00" + bytes.fromhex("FEDCBA9876543210") + b"\x01\x08"
    assert openpgp.signature_issuer(bytes([0x88, len(body)]) + body) == Issuer("FEDCBA9876543210")


def armor(data: bytes, *, headers: str = "") -> bytes:
    encoded = base64.b64encode(data).decode()
    lines = [encoded[index : index + 64] for index in range(0, len(encoded), 64)]
    return (
        "-----BEGIN PGP SIGNATURE-----\n"
        + headers
        + "\n"
        + "\n".join(lines)
        + "\n-----END PGP SIGNATURE-----\n"
    ).encode()


def test_armor_headers_crlf_and_no_checksum_line_are_read() -> None:
    data = packets()
    framed = armor(data, headers="Version: GnuPG v2\nComment: a comment: with colons\n")
    expected = openpgp.signature_issuer(data)
    assert expected is not None
    assert openpgp.signature_issuer(framed) == expected
    assert openpgp.signature_issuer(framed.replace(b"\n", b"\r\n")) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"not a signature",
        b"-----BEGIN PGP SIGNATURE-----\n\n!!!!\n-----END PGP SIGNATURE-----\n",
        b"-----END PGP SIGNATURE-----\n-----BEGIN PGP SIGNATURE-----\n",
        # the fake repository's old placeholder: hex between the armor lines
        b"-----BEGIN PGP SIGNATURE-----\n" + b"ab" * 20 + b"\n-----END PGP SIGNATURE-----\n",
        bytes([0xC2, 255, 0xFF, 0xFF, 0xFF, 0xFF]),  # a length past the end
        bytes([0x88]),  # a header cut short
        bytes([0x89, 0x00]),  # a two-octet length cut short
        bytes([0xC2, 0xC5]),  # a two-octet new-format length cut short
        bytes([0xC2, 3, 4, 0, 22]),  # a v4 body cut before its counts
        bytes([0xC2, 8, 4, 0, 22, 8, 0xFF, 0xFF, 0, 0]),  # a hashed count past the end
        bytes([0xC2, 4, 99, 0, 0, 0]),  # an unknown version
        bytes([0xC2, 0x03, 3, 5, 0]),  # a v3 body cut before its key id
        armor(b"\x00" * 10),
    ],
)
def test_hostile_or_truncated_input_is_not_a_signature(raw: bytes) -> None:
    assert openpgp.signature_issuer(raw) is None


def test_every_truncation_of_a_real_signature_reads_as_none_or_its_issuer() -> None:
    data = packets()
    expected = openpgp.signature_issuer(data)
    for end in range(len(data)):
        assert openpgp.signature_issuer(data[:end]) in (None, expected)


def test_malformed_subpackets_are_skipped() -> None:
    # An area whose subpacket claims more than it holds, and a zero-length subpacket.
    for area in (b"\x10\x10\x00", b"\x00", b"\xff\x00\x00", b"\xc5"):
        body = bytes([4, 0, 22, 8]) + len(area).to_bytes(2, "big") + area + b"\x00\x00\xab\xcd"
        assert openpgp.signature_issuer(bytes([0xC2, len(body)]) + body) is None
    # A fingerprint of the wrong length for its key version is not an issuer.
    wrong = subpacket(33, b"\x04" + bytes(19))
    body = bytes([4, 0, 22, 8, 0, len(wrong)]) + wrong + b"\x00\x00\xab\xcd"
    assert openpgp.signature_issuer(bytes([0xC2, len(body)]) + body) is None


def test_more_than_the_bound_is_not_a_signature() -> None:
    padded = signatures.armored("alpha") + b" " * openpgp.MAX_SIGNATURE_BYTES
    assert openpgp.signature_issuer(padded) is None
    assert openpgp.signature_issuer("text") is None  # type: ignore[arg-type]
