"""Real OpenPGP detached signatures for the fake Maven repository's `.asc` files: made once
with `gpg` (ed25519 keys generated in a throw-away GNUPGHOME, `gpg --armor --detach-sign`), so
the mirror reads their issuer as it would read Central's. They sign other bytes than the
files they stand beside: the mirror reads who signed, it does not verify."""

from __future__ import annotations

from typing import Final

# key name -> (key id, fingerprint, armored signature)
KEYS: Final[dict[str, tuple[str, str, bytes]]] = {
    "alpha": (
        "07DFC63889C2B14E",
        "FE200C50A0FEF62B800DC65D07DFC63889C2B14E",
        b"""-----BEGIN PGP SIGNATURE-----

iIkEABYIADEWIQT+IAxQoP72K4ANxl0H38Y4icKxTgUCaw5hmRMcYWxwaGFAZXhh
bXBsZS50ZXN0AAoJEAffxjiJwrFOoUoA/32wHGBBeG+Xdqw/UxcnC9dlN7TCHWtd
X/hOQAvCA+OWAQDQx0gh7xwuz7Xw1fBNIjzFH0XhB9fMHLVF5UK5vLssAg==
=iP8c
-----END PGP SIGNATURE-----
""",
    ),
    "beta": (
        "D473BDC402FBC340",
        "4E985CCFB889F4366E2CE459D473BDC402FBC340",
        b"""-----BEGIN PGP SIGNATURE-----

iIgEABYIADAWIQROmFzPuIn0Nm4s5FnUc73EAvvDQAUCaw5hmRIcYmV0YUBleGFt
cGxlLnRlc3QACgkQ1HO9xAL7w0CshgD/RAsYWQTpwBoxfvrqklQM43gk3OF97AYi
3p5Dbgi5g+QA/iP8MNG8KozlHv9ros0XK7lU4VyZQQ0u/bxBtypUhRoA
=tmwd
-----END PGP SIGNATURE-----
""",
    ),
}


def key_id(name: str) -> str:
    return KEYS[name][0]


def armored(name: str) -> bytes:
    return KEYS[name][2]
