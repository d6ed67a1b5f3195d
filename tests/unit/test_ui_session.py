"""The dashboard's session cookie, CSRF token and login throttle, pure: what a cookie proves
(and that anything malformed, forged, expired or from a changed token proves nothing, never
an error), and how failed logins are counted per client."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from mirror.ui import session as sessions
from mirror.ui.session import LoginThrottle, UiSession

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LIFETIME = timedelta(hours=8)
ADMINS = {"alice": "alice-token-0123456789"}
READERS = {"auditor": "auditor-token-0123456789", "alice": "reader-alice-0123456789"}


def cookie_of(name: str = "alice", role: sessions.Role = "admin", secret: str = "") -> str:
    secret = secret or (ADMINS if role == "admin" else READERS)[name]
    return sessions.issue(name, role, secret, now=NOW, lifetime=LIFETIME, nonce="n0nce")


def verified(cookie: str | None, *, now: datetime = NOW) -> UiSession | None:
    return sessions.verify(cookie, ADMINS, READERS, now=now)


def b64(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()


def test_a_cookie_proves_its_name_role_and_expiry() -> None:
    found = verified(cookie_of())
    assert found == UiSession(
        name="alice", role="admin", expires=int((NOW + LIFETIME).timestamp()), nonce="n0nce"
    )
    assert found.can_write
    reader = verified(cookie_of("auditor", "read"))
    assert reader is not None
    assert (reader.name, reader.role, reader.can_write) == ("auditor", "read", False)
    assert "alice-token" not in cookie_of()  # the cookie names the token, never holds it


def test_a_cookie_ends_when_it_expires() -> None:
    cookie = cookie_of()
    assert verified(cookie, now=NOW + LIFETIME - timedelta(seconds=1)) is not None
    assert verified(cookie, now=NOW + LIFETIME) is None


def test_a_changed_or_removed_token_ends_its_sessions() -> None:
    cookie = cookie_of()
    assert sessions.verify(cookie, {"alice": "another-token-0123456789"}, READERS, now=NOW) is None
    assert sessions.verify(cookie, {}, READERS, now=NOW) is None


def test_a_role_cannot_be_switched() -> None:
    # alice is both an admin and a reader, with different tokens: her read-only cookie with
    # the role rewritten to admin is signed with the wrong key.
    body, signature = cookie_of("alice", "read").split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert payload["r"] == "read"
    assert verified(f"{b64({**payload, 'r': 'admin'})}.{signature}") is None
    # Nor signed with the admin token but claiming the read role.
    body, signature = cookie_of("alice", "admin").split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert verified(f"{b64({**payload, 'r': 'read'})}.{signature}") is None


def test_a_longer_expiry_breaks_the_signature() -> None:
    body, signature = cookie_of().split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert verified(f"{b64({**payload, 'e': payload['e'] + 3600})}.{signature}") is None


FORGED_BODY = b64({"n": "alice", "r": "admin", "e": 9999999999, "s": "x"})


@pytest.mark.parametrize(
    "cookie",
    [
        f"{FORGED_BODY}.\u00e9\u00e9",  # non-ASCII signature: compare_digest on str raises
        f"{FORGED_BODY}.\udcff",  # a lone surrogate
        f"{FORGED_BODY}.",
        f"{FORGED_BODY}.AAAA",
        "\u00e9\u00e9.AAAA",  # non-ASCII body
        f"{b64([[[[[[]]]]]])}.AAAA",
        f"{b64('alice')}.AAAA",
        f"{b64({'n': 'alice', 'r': 'root', 'e': 9999999999, 's': 'x'})}.AAAA",
        f"{b64({'n': 'alice', 'r': 'admin', 'e': True, 's': 'x'})}.AAAA",
        f"{b64({'n': 'alice', 'r': 'admin', 'e': '9999999999', 's': 'x'})}.AAAA",
        f"{b64({'n': 'mallory', 'r': 'admin', 'e': 9999999999, 's': 'x'})}.AAAA",
        base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".AAAA",  # not UTF-8
        "[" * 700 + ".AAAA",
        "a.b.c",
        "nodot",
        "",
        None,
        "x" * 5000,
    ],
)
def test_a_malformed_or_forged_cookie_is_no_login(cookie: str | None) -> None:
    assert verified(cookie) is None


def test_a_deeply_nested_body_is_no_login() -> None:
    nested = base64.urlsafe_b64encode(b"[" * 760).decode().rstrip("=")
    assert verified(f"{nested}.AAAA") is None


def test_the_csrf_token_belongs_to_its_session() -> None:
    found = verified(cookie_of())
    assert found is not None
    secret = ADMINS["alice"]
    token = sessions.csrf_token(found, secret)
    assert sessions.csrf_valid(found, secret, token)
    assert token != cookie_of().split(".")[1]  # a session signature is no CSRF token
    other = UiSession(name="alice", role="admin", expires=found.expires, nonce="other")
    assert not sessions.csrf_valid(other, secret, token)
    assert not sessions.csrf_valid(found, "another-token-0123456789", token)
    for presented in (None, "", token[:-1], token + "A", "\u00e9" * len(token), "\udcff"):
        assert not sessions.csrf_valid(found, secret, presented)


def test_log_in_finds_the_name_and_role() -> None:
    assert sessions.log_in(ADMINS["alice"], ADMINS, READERS) == ("alice", "admin")
    assert sessions.log_in(READERS["alice"], ADMINS, READERS) == ("alice", "read")
    assert sessions.log_in("nope-0123456789", ADMINS, READERS) is None


def test_the_throttle_refuses_a_client_for_the_rest_of_its_window() -> None:
    throttle = LoginThrottle(max_failures=3, window=timedelta(minutes=1))
    starts = [throttle.failed("10.0.0.1", NOW + timedelta(seconds=i)) for i in range(3)]
    assert starts == [False, False, True]  # the third failure starts the refusal: log it once
    assert throttle.refused_until("10.0.0.1", NOW + timedelta(seconds=30)) == NOW + timedelta(
        minutes=1
    )
    assert throttle.refused_until("10.0.0.2", NOW + timedelta(seconds=30)) is None
    assert not throttle.failed("10.0.0.1", NOW + timedelta(seconds=31))  # logged already
    assert throttle.refused_until("10.0.0.1", NOW + timedelta(minutes=1)) is None
    assert not throttle.failed("10.0.0.1", NOW + timedelta(minutes=1))  # a new window


def test_failures_in_different_windows_do_not_add_up() -> None:
    throttle = LoginThrottle(max_failures=2, window=timedelta(minutes=1))
    throttle.failed("10.0.0.1", NOW)
    throttle.failed("10.0.0.1", NOW + timedelta(seconds=61))
    assert throttle.refused_until("10.0.0.1", NOW + timedelta(seconds=62)) is None


def test_the_throttle_keeps_at_most_its_clients_forgetting_the_oldest() -> None:
    throttle = LoginThrottle(max_failures=1, window=timedelta(minutes=1), max_clients=3)
    for i in range(5):
        throttle.failed(f"10.0.0.{i}", NOW + timedelta(seconds=i))
    assert len(throttle) == 3
    later = NOW + timedelta(seconds=10)
    assert throttle.refused_until("10.0.0.0", later) is None  # forgotten
    assert throttle.refused_until("10.0.0.1", later) is None
    assert throttle.refused_until("10.0.0.4", later) is not None
