"""Client identity (`mirror.identity`): which read token an Authorization header presents,
and what the real clients' User-Agent and npm headers say about them, bounded and cleaned."""

from __future__ import annotations

import base64

import pytest
from multidict import CIMultiDict

from mirror.errors import Forbidden, Unauthorized
from mirror.identity import (
    CI_UNNAMED,
    MAX_USER_AGENT,
    ClientIdentity,
    ci_of,
    clean_user_agent,
    describe_client,
    match_token,
    presented_secret,
    read_token,
)

TEAM_A = "team-a-read-token-0123456789"
TEAM_B = "team-b-read-token-9876543210"
TOKENS = {"team-a": TEAM_A, "team-b": TEAM_B}

# Captured from the clients installed for the e2e tests, against a server that logs headers.
NPM = "npm/11.19.1 node/v20.20.2 linux x64 workspaces/false"
NPM_CI = "npm/11.19.1 node/v20.20.2 linux x64 workspaces/false ci/github-actions"
PNPM = "pnpm/9.15.9 npm/? node/v20.20.2 linux x64"
YARN = "yarn/1.22.22 npm/? node/v20.20.2 linux x64"
MAVEN = "Apache-Maven/3.8.7 (Java 17.0.15; Linux 6.18.44-fc-v595)"
PIP_FACTS = (
    '"cpu":"x86_64","distro":{"id":"bookworm","libc":{"lib":"glibc","version":"2.36"},'
    '"name":"Debian GNU/Linux","version":"12"},"implementation":{"name":"CPython",'
    '"version":"3.11.7"},"installer":{"name":"pip","version":"23.2.1"},"openssl_version":'
    '"OpenSSL 3.0.19 27 Jan 2026","python":"3.11.7","rustc_version":"1.95.0",'
    '"setuptools_version":"65.5.0","system":{"name":"Linux","release":"6.18.44-fc-v595"}}'
)
PIP = 'pip/23.2.1 {"ci":null,' + PIP_FACTS
PIP_CI = 'pip/23.2.1 {"ci":true,' + PIP_FACTS
UV_FACTS = (
    'uv/0.13.9 {"installer":{"name":"uv","version":"0.13.9","subcommand":["pip","compile"]},'
    '"python":"3.11.7","implementation":{"name":"CPython","version":"3.11.7"},"distro":'
    '{"name":"Debian GNU/Linux","version":"12","id":"bookworm","libc":{"lib":"glibc",'
    '"version":"2.36"}},"system":{"name":"Linux","release":"6.18.44-fc-v595"},"cpu":"x86_64",'
    '"openssl_version":null,"setuptools_version":null,"rustc_version":null,'
)
UV = UV_FACTS + '"ci":null}'
UV_CI = UV_FACTS + '"ci":true}'


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# tokens -----------------------------------------------------------------------------------


def test_match_token_names_the_token_or_none() -> None:
    assert match_token(TEAM_B, TOKENS) == "team-b"
    assert match_token(TEAM_A + "x", TOKENS) is None
    assert match_token("", TOKENS) is None
    assert match_token("\udcff", TOKENS) is None  # a lone surrogate does not break it


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (f"Bearer {TEAM_A}", "team-a"),  # npm's _authToken
        (f"bearer   {TEAM_A} ", "team-a"),
        (basic("__token__", TEAM_A), "team-a"),  # pip/uv user:token@, the user is free
        (basic("team-b", TEAM_B), "team-b"),  # Maven <server> username and password
        (basic(TEAM_B, ""), "team-b"),  # the token as the username, no password
    ],
)
def test_a_valid_token_names_the_client(authorization: str, expected: str) -> None:
    assert read_token(authorization, TOKENS, required=True) == expected
    assert read_token(authorization, TOKENS, required=False) == expected


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {TEAM_A[:-1]}",
        basic("team-a", "wrong-token-0123456789"),
        basic(TEAM_A, "not-empty"),  # a username is the token only with no password
        basic("", ""),
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),  # not UTF-8
        f"Token {TEAM_A}",  # an unknown scheme
        "Bearer",
        "Bearer " + "x" * 100_000,  # too long to be a credential
        "\x00\r\n",
    ],
)
def test_a_presented_credential_that_matches_no_token_is_refused(authorization: str) -> None:
    for required in (True, False):
        with pytest.raises(Unauthorized) as caught:
            read_token(authorization, TOKENS, required=required)
        assert "not valid" in caught.value.message
        assert TEAM_A not in caught.value.message
        assert "wrong-token" not in caught.value.message
        challenges = [value for name, value in caught.value.headers if name == "WWW-Authenticate"]
        assert challenges == ['Basic realm="quarantine-mirror"', 'Bearer realm="quarantine-mirror"']


def test_no_credentials_are_refused_only_when_required() -> None:
    assert read_token(None, TOKENS, required=False) == ""
    assert read_token("", TOKENS, required=False) == ""
    with pytest.raises(Unauthorized, match="needs a read token"):
        read_token(None, TOKENS, required=True)


def test_without_tokens_authorization_is_ignored_unless_required() -> None:
    # npm sends its _authToken to every registry it has one for: nothing to check it against.
    assert read_token(f"Bearer {TEAM_A}", {}, required=False) == ""
    with pytest.raises(Forbidden, match="MIRROR_ACCESS_TOKENS"):
        read_token(f"Bearer {TEAM_A}", {}, required=True)


def test_presented_secret() -> None:
    assert presented_secret(basic("u", "p:with:colons")) == "p:with:colons"
    assert presented_secret(basic("user-only", "")) == "user-only"
    assert presented_secret("Negotiate abc") is None


def test_the_admin_api_matches_with_the_same_function() -> None:
    from mirror.admin import auth

    assert auth.match_token is match_token


# client facts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "ci"),
    [
        (NPM, ""),
        (NPM_CI, "github-actions"),
        (PIP, ""),
        (PIP_CI, CI_UNNAMED),
        (UV, ""),
        (UV_CI, CI_UNNAMED),
        (PNPM, ""),
        (YARN, ""),
        (MAVEN, ""),
        ("Bun/1.1.38", ""),
        ("npm/10.8.2 node/v20.11.0 linux x64 workspaces/false ci/gitlab", "gitlab"),
        ("npm/10 ci/<script>", CI_UNNAMED),  # named oddly: in CI, the name is not kept
        ("curl/8.5.0", ""),
        ('pip/24.0 {"x":{"ci":true}}', ""),  # only the top-level "ci" counts
        ('pip/24.0 {"ci":true,"cut short', CI_UNNAMED),
        ("pip/24.0 {not json", ""),
    ],
)
def test_ci_from_the_real_user_agents(user_agent: str, ci: str) -> None:
    assert ci_of(user_agent) == ci


def test_npm_headers_name_the_command_and_session() -> None:
    headers = CIMultiDict(
        {"User-Agent": NPM_CI, "npm-command": "ci", "npm-session": "3a2f3e59c1bf2e46"}
    )
    assert describe_client(headers, token="team-a") == ClientIdentity(
        token="team-a",
        user_agent=NPM_CI,
        ci="github-actions",
        command="ci",
        session="3a2f3e59c1bf2e46",
    )


def test_uv_in_ci_is_seen_although_its_ci_comes_after_the_stored_length() -> None:
    who = describe_client(CIMultiDict({"User-Agent": UV_CI}))
    assert len(UV_CI) > MAX_USER_AGENT
    assert who.ci == CI_UNNAMED
    assert who.user_agent == UV_CI[:MAX_USER_AGENT]


def test_hostile_headers_are_bounded_and_cleaned() -> None:
    headers = CIMultiDict(
        {
            "User-Agent": "evil\x1b[31m/1.0\r\n\u202e ok\u2028" + "A" * 100_000,
            "npm-command": "install; rm -rf /",
            "npm-session": "x" * 65,
        }
    )
    who = describe_client(headers)
    assert who.user_agent.startswith("evil[31m/1.0 ok")
    assert len(who.user_agent) == MAX_USER_AGENT
    assert who.user_agent.isprintable()
    assert (who.command, who.session, who.ci, who.token) == ("", "", "", "")


def test_missing_headers_are_empty() -> None:
    assert describe_client(CIMultiDict()) == ClientIdentity()
    assert clean_user_agent("  \t ") == ""
