"""Dashboard logins, pure: the signed session cookie and the CSRF token bound to it.

A login is an admin token (role "admin": every page and change) or a read-only admin token
(role "read": pages only). The cookie names the token, never holds it: `name`, `role`,
`expires` and a random `nonce`, signed with a key derived from the token itself. So every
worker and replica with the same settings accepts it without shared state, and changing or
removing the token ends its sessions at once. The CSRF token is a second signature of the
same nonce, sent in every form and checked on every change. `LoginThrottle` counts failed
logins per client, so the form stops checking tokens for a client that keeps guessing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from mirror.identity import match_token

COOKIE: Final = "mirror_ui"
CSRF_FIELD: Final = "csrf"
MAX_COOKIE_CHARS: Final = 1024
# Failed logins a client may make in one window before the form stops checking its tokens
# until the window ends, and how many clients one worker keeps count of (the oldest
# forgotten first).
MAX_FAILED_LOGINS: Final = 10
FAILED_LOGIN_WINDOW: Final = timedelta(minutes=1)
MAX_THROTTLED_CLIENTS: Final = 10_000
Role = Literal["admin", "read"]
_ROLES: Final = ("admin", "read")


@dataclass(frozen=True, slots=True)
class UiSession:
    """Who is logged in: the token's name and role, until `expires` (Unix seconds)."""

    name: str
    role: Role
    expires: int
    nonce: str

    @property
    def can_write(self) -> bool:
        return self.role == "admin"


def log_in(
    presented: str, admin_tokens: Mapping[str, str], read_tokens: Mapping[str, str]
) -> tuple[str, Role] | None:
    """The name and role of the token typed at the login form, or None. Both lists are
    compared in full, constant time each (`match_token`)."""
    admin = match_token(presented, admin_tokens)
    reader = match_token(presented, read_tokens)
    if admin is not None:
        return admin, "admin"
    if reader is not None:
        return reader, "read"
    return None


def issue(
    name: str, role: Role, secret: str, *, now: datetime, lifetime: timedelta, nonce: str
) -> str:
    """The cookie value of a new session of token `name` (whose value is `secret`)."""
    payload = {
        "n": name,
        "r": role,
        "e": int((now + lifetime).timestamp()),
        "s": nonce,
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_sign(secret, 'session', body)}"


def verify(
    cookie: str | None,
    admin_tokens: Mapping[str, str],
    read_tokens: Mapping[str, str],
    *,
    now: datetime,
) -> UiSession | None:
    """The session a cookie value proves, or None: malformed, forged, expired, or its token
    changed or removed (or moved to the other role)."""
    if not cookie or len(cookie) > MAX_COOKIE_CHARS or cookie.count(".") != 1:
        return None
    body, signature = cookie.split(".")
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, binascii.Error, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    name, role, expires, nonce = (payload.get(key) for key in ("n", "r", "e", "s"))
    if not (
        isinstance(name, str)
        and role in _ROLES
        and isinstance(expires, int)
        and not isinstance(expires, bool)
        and isinstance(nonce, str)
    ):
        return None
    secret = (admin_tokens if role == "admin" else read_tokens).get(name)
    if secret is None:
        return None
    # Bytes, never str: compare_digest refuses a str with non-ASCII characters (TypeError),
    # and the signature is whatever the client sent.
    if not hmac.compare_digest(
        signature.encode("utf-8", "surrogateescape"), _sign(secret, "session", body).encode()
    ):
        return None
    if expires <= now.timestamp():
        return None
    return UiSession(
        name=name, role="admin" if role == "admin" else "read", expires=expires, nonce=nonce
    )


def csrf_token(session: UiSession, secret: str) -> str:
    """The token every form of `session` carries (`CSRF_FIELD`)."""
    return _sign(secret, "csrf", session.nonce)


def csrf_valid(session: UiSession, secret: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(
        (presented or "").encode("utf-8", "surrogateescape"),
        csrf_token(session, secret).encode(),
    )


def session_secret(
    session: UiSession, admin_tokens: Mapping[str, str], read_tokens: Mapping[str, str]
) -> str | None:
    """The token a verified session was signed with (None once it is gone)."""
    return (admin_tokens if session.role == "admin" else read_tokens).get(session.name)


def _sign(secret: str, purpose: str, message: str) -> str:
    # A key per purpose, derived from the token: a session signature is never a valid CSRF
    # token, and the token itself never appears in either.
    key = hashlib.sha256(f"mirror-ui/{purpose}\0{secret}".encode()).digest()
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(slots=True)
class _Failures:
    started: datetime
    count: int


@dataclass(slots=True)
class LoginThrottle:
    """Failed logins per client address, in one worker's memory: after `max_failures` in a
    `window` (counted from the client's first failure in it), the client is refused until
    the window ends, without its tokens being checked. At most `max_clients` are tracked;
    past that the client whose window started first is forgotten. Not shared between
    workers or replicas: it slows guessing, it does not count it exactly."""

    max_failures: int = MAX_FAILED_LOGINS
    window: timedelta = FAILED_LOGIN_WINDOW
    max_clients: int = MAX_THROTTLED_CLIENTS
    _clients: OrderedDict[str, _Failures] = field(default_factory=OrderedDict)

    def refused_until(self, client: str, now: datetime) -> datetime | None:
        """The end of the window that refuses `client` now, or None when it may try."""
        failures = self._current(client, now)
        if failures is None or failures.count < self.max_failures:
            return None
        return failures.started + self.window

    def failed(self, client: str, now: datetime) -> bool:
        """Count a failed login of `client`; True when this failure starts its refusal (the
        one moment to log it)."""
        failures = self._current(client, now)
        if failures is None:
            failures = self._clients[client] = _Failures(started=now, count=0)
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        failures.count += 1
        return failures.count == self.max_failures

    def _current(self, client: str, now: datetime) -> _Failures | None:
        failures = self._clients.get(client)
        if failures is not None and now >= failures.started + self.window:
            del self._clients[client]
            return None
        return failures

    def __len__(self) -> int:
        return len(self._clients)
