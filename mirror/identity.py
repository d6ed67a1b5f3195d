"""Who a package read comes from, pure (no aiohttp, no state): the read token it presents and
what the client says about itself (user agent, CI, npm's command and session), bounded and
made safe to store and show.

Tokens. A read token arrives as npm's `_authToken` (`Authorization: Bearer <token>`) or as
HTTP Basic credentials: pip and uv send `user:token@` from the index URL, Maven its
`<server>` username and password. The password is the token and the username is free (a
team name, say); a client that sends the token as the username with an empty password is
accepted too. Every configured token is compared in constant time with no early exit
(`match_token`, also the admin API's matcher), so timing says nothing about which or how
many tokens exist.

Client facts, as the clients really send them:
- npm: `npm/11.19.1 node/v20.20.2 linux x64 workspaces/false ci/github-actions` (the `ci/…`
  token only in CI, named by ci-info), plus the headers `npm-command` (`install`, `ci`, …)
  and, from older npm versions, `npm-session` (npm 11 sends none).
- pip and uv: `pip/23.2.1 {…"ci":true…}`, `uv/0.13.9 {…"ci":null}`: a JSON object after the
  product whose `ci` is true in CI (pip's and uv's own environment checks); no system name.
- pnpm `pnpm/9.15.9 npm/? node/v20.20.2 linux x64`, yarn `yarn/1.22.22 npm/? node/…`, bun
  `Bun/1.0.14` (oven-sh/bun#7415), Maven `Apache-Maven/3.8.7 (Java 17.0.15; Linux …)`: no
  CI information (pnpm and yarn send the same string in CI); a ` ci/<name>` product token is
  read from any client that sends one.
All of it is self-reported: it describes the client, it proves nothing."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from mirror.errors import BEARER_CHALLENGE, REALM, Forbidden, Unauthorized
from mirror.safetext import is_unsafe

TOKENS_SETTING: Final = "MIRROR_ACCESS_TOKENS"  # the env name, not a secret
# What a 401 on a package read offers: Basic first (pip and uv retry with the index URL's
# credentials, Maven sends its <server> username and password only after a Basic challenge;
# Apache HttpClient skips the Bearer scheme it does not know), Bearer for npm's _authToken.
READ_CHALLENGES: Final = (f'Basic realm="{REALM}"', BEARER_CHALLENGE)

MAX_USER_AGENT: Final = 256  # characters kept of a user agent
# Characters of a user agent read for CI facts: pip's and uv's JSON is about 600.
MAX_SCANNED: Final = 2048
MAX_AUTHORIZATION: Final = 8192  # longer than any token plus scheme: not a credential
# npm-command ("install", "ci", "exec"), npm-session (16 hex digits), a CI system's name.
_SHORT_WORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CI_UNNAMED: Final = "ci"  # the client says it runs in CI without naming the system


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """What the ledger records of a client besides its address: `token` the name of the read
    token presented ("" = none), the (cleaned, bounded) `user_agent`, `ci` (the CI system
    named, `CI_UNNAMED` when only "in CI" is known, "" = not CI), npm's `command` and
    `session` ("" when not sent or not a short word)."""

    token: str = ""
    user_agent: str = ""
    ci: str = ""
    command: str = ""
    session: str = ""


def match_token(presented: str, tokens: Mapping[str, str]) -> str | None:
    """The name of the configured token equal to `presented`, or None. Compares against
    every token, constant time each, no early exit."""
    presented_bytes = presented.encode("utf-8", "surrogateescape")
    matched: str | None = None
    for name, token in tokens.items():
        if hmac.compare_digest(presented_bytes, token.encode()) and matched is None:
            matched = name
    return matched


def presented_secret(authorization: str | None) -> str | None:
    """The candidate token an `Authorization` header carries: the bearer token; of Basic
    credentials the password, or the username when the password is empty. None when there
    is no header, another scheme or a malformed one."""
    if not authorization or len(authorization) > MAX_AUTHORIZATION:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    scheme = scheme.lower()
    if not value or scheme not in ("bearer", "basic"):
        return None
    if scheme == "bearer":
        return value
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # not base64, or not UTF-8
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return password or user or None


def read_token(authorization: str | None, tokens: Mapping[str, str], *, required: bool) -> str:
    """The name of the read token a package read presents, "" for an allowed anonymous read.

    Raises Unauthorized (401 with Basic and Bearer challenges) when a token is `required`
    and none was presented, or when credentials were presented that match no token, required
    or not: a typo in a token should fail loudly, not make the client silently anonymous (the
    ledger would lose who it is). Raises Forbidden when tokens are required but none is
    configured (no client could ever read). Without tokens and not required, any
    Authorization header is ignored: npm sends its `_authToken` to every registry it has one
    for, and there is nothing to check it against."""
    if not tokens:
        if required:
            raise Forbidden(
                f"this mirror requires read tokens but has none configured: set "
                f"{TOKENS_SETTING} (name:token,…) or access.tokens in config/mirror.toml and "
                "restart"
            )
        return ""
    if not authorization:
        if not required:
            return ""
        raise Unauthorized(
            "this mirror needs a read token: npm _authToken, user:token@ in the pip or uv "
            "index URL, or Maven <server> credentials",
            challenges=READ_CHALLENGES,
        )
    secret = presented_secret(authorization)
    name = None if secret is None else match_token(secret, tokens)
    if name is not None:
        return name
    raise Unauthorized(
        "the read token is not valid on this mirror: check the token in .npmrc, the index "
        "URL or settings.xml",
        challenges=READ_CHALLENGES,
    )


def clean_user_agent(user_agent: str | None, limit: int = MAX_USER_AGENT) -> str:
    """`user_agent` as stored and shown: unsafe characters (controls, bidirectional
    overrides, line separators) removed, at most `limit` characters."""
    if not user_agent:
        return ""
    text = user_agent[: 4 * limit]  # bounds the work a hostile header can cause
    if not text.isprintable():  # the fast path: a usual user agent is printable
        text = "".join(char for char in text if not is_unsafe(char))
    return text.strip()[:limit].rstrip()


def ci_of(user_agent: str) -> str:
    """The CI system a (cleaned) user agent names: `CI_UNNAMED` when a pip/uv-style JSON
    part says `"ci":true` at its top level, else a `ci/<name>` product token's name (npm),
    else "". Plain string tests, no JSON parsing: this runs on every download."""
    _product, _, rest = user_agent.partition(" ")
    if rest.startswith("{"):
        # Both write compact JSON: pip puts "ci" first, uv last (a nested "ci" is neither).
        top_level = rest.startswith('{"ci":true,') or rest.endswith(',"ci":true}')
        return CI_UNNAMED if top_level else ""
    at = user_agent.find(" ci/")
    if at < 0:
        return ""
    name = user_agent[at + 4 :].split(" ", 1)[0]
    return name if _SHORT_WORD.fullmatch(name) else CI_UNNAMED


def short_word(value: str | None) -> str:
    """`value` when it is a short safe word (npm-command, npm-session), else ""."""
    if value and _SHORT_WORD.fullmatch(value):
        return value
    return ""


def describe_client(headers: Mapping[str, str], *, token: str = "") -> ClientIdentity:
    """The identity of a client from its request headers (a case-insensitive mapping) and
    the name of the read token it presented: `describe_reported` of its User-Agent,
    npm-command and npm-session headers."""
    return describe_reported(
        headers.get("User-Agent"),
        headers.get("npm-command"),
        headers.get("npm-session"),
        token=token,
    )


def describe_reported(
    user_agent: str | None, command: str | None, session: str | None, *, token: str = ""
) -> ClientIdentity:
    """The identity of a client from what it reported, as sent (its user agent, npm's
    command and session headers, any of them None when not sent), and the name of the read
    token it presented. CI is read from up to `MAX_SCANNED` characters of the user agent (uv
    writes its `ci` last), the stored user agent is shorter."""
    scanned = clean_user_agent(user_agent, MAX_SCANNED)
    return ClientIdentity(
        token=token,
        user_agent=scanned[:MAX_USER_AGENT].rstrip(),
        ci=ci_of(scanned),
        command=short_word(command),
        session=short_word(session),
    )
