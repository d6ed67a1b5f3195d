"""Who may use the admin API, pure (no aiohttp, no state): bearer tokens compared in constant
time, the caller a change is attributed to, and which reads need a token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from mirror.config import AdminConfig
from mirror.errors import Forbidden, Unauthorized
from mirror.identity import match_token

TOKENS_SETTING: Final = "MIRROR_ADMIN_TOKENS"  # the env name, not a secret


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: the token's name (or "anonymous" for an open read) and address."""

    actor: str
    client: str


NO_TOKENS: Final[Mapping[str, str]] = MappingProxyType({})


def identify(
    authorization: str | None,
    tokens: Mapping[str, str],
    read_tokens: Mapping[str, str] = NO_TOKENS,
    *,
    write: bool = True,
) -> str:
    """The name of the token in an `Authorization: Bearer …` header: an admin token, or for a
    read (not `write`) a read-only one too. Raises Forbidden when no token is configured or the
    token is wrong (or read-only for a write), Unauthorized when none was presented. Every
    configured token is compared (`match_token`: constant time, no early exit)."""
    if not tokens and (write or not read_tokens):
        raise Forbidden(
            f"the admin API is disabled on this mirror: set {TOKENS_SETTING} (name:token,…) or "
            "admin.tokens in config/mirror.toml and restart"
        )
    scheme, _, presented = (authorization or "").strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("this needs an admin token: send Authorization: Bearer <token>")
    matched = match_token(presented, tokens)
    read_only = match_token(presented, read_tokens)  # compared whatever matched above
    if matched is not None:
        return matched
    if read_only is not None:
        if write:
            raise Forbidden(
                f"{read_only} is a read-only admin token: a change needs an admin token"
            )
        return read_only
    raise Forbidden("the admin token is not valid on this mirror")


def authenticate(
    authorization: str | None,
    client: str,
    settings: AdminConfig,
    *,
    required: bool,
    write: bool,
) -> Caller:
    """The caller of a request from `client`: anonymous when no token is `required`, else
    named by its token, a read-only one only when not `write` (`identify`'s errors
    otherwise)."""
    if not required:
        return Caller(actor="anonymous", client=client)
    # Unauthorized (401) carries its WWW-Authenticate header through the error middleware.
    actor = identify(authorization, settings.tokens, settings.read_tokens, write=write)
    return Caller(actor=actor, client=client)


def reads_need_token(settings: AdminConfig) -> bool:
    """Reads (listings, explain) are open unless `admin.protect_reads`."""
    return settings.protect_reads


def impact_needs_token(settings: AdminConfig) -> bool:
    """Impact reports name client addresses: a token unless `admin.open_impact` opens them
    (`admin.protect_reads` closes every read, impact included)."""
    return settings.protect_reads or not settings.open_impact
