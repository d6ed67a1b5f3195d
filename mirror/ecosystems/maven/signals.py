"""Maven risk signals, pure: `signature-missing` (the version before it had a `.asc`
signature, this one has none) and `signature-key-changed` (its `.asc` names another key than
the version before it's), from what the routes found of the two `.pom.asc` files.

What was found of one version's signature is a `Seen`: signed by a key (`key_id`), signed but
its issuer unreadable (`key_id` None), not signed (`UNSIGNED`, upstream answered 404) or not
known (None: not looked up, old versions). A version whose `.asc` could not be fetched
(upstream failing) is `UNCHECKED`: it counts as the signal, so an `extend` or `hold` rule never
lets it through because upstream was down (the routes ask again; nothing unchecked is kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from mirror.risk import RiskRules, Signal

MISSING: Final = "signature-missing"
KEY_CHANGED: Final = "signature-key-changed"


@dataclass(frozen=True, slots=True)
class Seen:
    """What one version's `.pom.asc` showed: `signed` with the issuer's `key_id` (None when
    the signature names none readable), or not signed; `checked` False when upstream could
    not be asked."""

    signed: bool
    key_id: str | None = None
    checked: bool = True


UNSIGNED: Final = Seen(signed=False)
UNCHECKED: Final = Seen(signed=False, checked=False)


def signature_signals(
    version: str, seen: Seen | None, previous: str | None, previous_seen: Seen | None
) -> tuple[Signal, ...]:
    """The signature signals of `version` against `previous`, the version before it in
    Maven order: none when either is not known or there is no previous version."""
    if seen is None or previous is None or previous_seen is None:
        return ()
    if not seen.checked:
        return (unchecked(version),)
    if not previous_seen.checked:
        if not seen.signed:
            return (
                Signal.of(
                    MISSING,
                    f"{version} has no .asc signature; that of {previous} could not be "
                    "fetched from upstream",
                ),
            )
        if seen.key_id is None:
            return ()  # no key to compare
        return (
            Signal.of(
                KEY_CHANGED,
                f"{version} is signed by key {seen.key_id}; the .asc of {previous} could not "
                "be fetched from upstream to compare",
            ),
        )
    if not previous_seen.signed:
        return ()
    if not seen.signed:
        return (
            Signal.of(
                MISSING, f"{version} has no .asc signature; {previous} was {_by(previous_seen)}"
            ),
        )
    if None not in (seen.key_id, previous_seen.key_id) and seen.key_id != previous_seen.key_id:
        return (
            Signal.of(
                KEY_CHANGED,
                f"{version} is signed by key {seen.key_id}; {previous} by key "
                f"{previous_seen.key_id}",
            ),
        )
    return ()


def unchecked(version: str) -> Signal:
    """The signal of a version whose signature could not be checked (its `.asc`, or the
    metadata naming the release before it, could not be fetched): counted as missing."""
    return Signal.of(
        MISSING,
        f"the .asc signature of {version} could not be checked (upstream failing); "
        "it counts as missing until it can",
    )


def reach(rules: RiskRules, package: str) -> timedelta | None:
    """How long after its publish time a version of `package` (canonical) can still be
    held by a signature signal: the longest `extend` of the rules that apply to it, None
    when a `hold` applies (any age), 0 when both are only noted."""
    longest = timedelta(0)
    for name in (MISSING, KEY_CHANGED):
        verdict = rules.verdict("maven", package, Signal.of(name, ""))
        if verdict.action == "hold":
            return None
        if verdict.action == "extend":
            longest = max(longest, verdict.age)
    return longest


def seen_of(key_id: str | None) -> Seen:
    """A version signed by `key_id` (None: an issuer that could not be read)."""
    return Seen(signed=True, key_id=key_id)


def _by(seen: Seen) -> str:
    return f"signed by key {seen.key_id}" if seen.key_id is not None else "signed"
