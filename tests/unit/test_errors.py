"""The HTTP reason phrase clients print: short, complete, printable ASCII; the headers an
error requires (`Retry-After` on a transient upstream failure)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from mirror.errors import (
    BUSY_RETRY_AFTER,
    MAX_PHRASE,
    RETRY_AFTER,
    RETRY_AFTER_MAX,
    BadRequest,
    Busy,
    IntegrityError,
    NotFound,
    PolicyUnavailable,
    Quarantined,
    StateUnavailable,
    UpstreamUnavailable,
    reason_phrase,
)


def test_phrase_is_the_first_clause() -> None:
    error = Quarantined(
        "left-pad@1.4.0 is in quarantine until 2026-11-25T10:00:00Z: it was published "
        "2026-11-22T10:00:00Z and this mirror holds releases for 3d; ask for an exemption "
        "if you need it sooner",
        until=datetime(2026, 11, 25, 10, tzinfo=UTC),
    )
    assert error.phrase == "left-pad@1.4.0 is in quarantine until 2026-11-25T10:00:00Z"


def test_control_characters_and_non_ascii_never_reach_the_phrase() -> None:
    phrase = NotFound("left-pad has no tarball \x00\r\nX-Injected: 1 \u00e9.tgz upstream").phrase
    assert phrase == "left-pad has no tarball X-Injected"
    assert reason_phrase("caf\u00e9 \u202e is gone", 404) == "caf? ? is gone"


def test_a_long_clause_gives_the_standard_phrase_not_a_cut_word() -> None:
    assert BadRequest("x" * (MAX_PHRASE + 1)).phrase == "Bad Request"
    assert reason_phrase("\x01\x02", 403) == "Forbidden"
    assert reason_phrase("", 599) == "Error"


@given(st.text(max_size=400), st.sampled_from([400, 403, 404, 502, 503]))
def test_any_message_gives_a_safe_phrase(message: str, status: int) -> None:
    phrase = reason_phrase(message, status)
    assert phrase
    assert len(phrase) <= MAX_PHRASE
    assert all(32 <= ord(char) < 127 for char in phrase)
    assert phrase == phrase.strip()


def test_a_transient_upstream_failure_is_a_503_with_a_bounded_retry_after() -> None:
    transient = UpstreamUnavailable("could not fetch left-pad from the npm upstream: timed out")
    assert (transient.status, transient.headers) == (503, (("Retry-After", str(RETRY_AFTER)),))
    assert transient.body()["reason"] == "upstream-unavailable"
    assert UpstreamUnavailable("x", retry_after=3600).headers == (
        ("Retry-After", str(RETRY_AFTER_MAX)),
    )
    assert UpstreamUnavailable("x", retry_after=-5).headers == (("Retry-After", "1"),)


def test_a_definite_upstream_failure_is_a_502_without_retry_after() -> None:
    definite = UpstreamUnavailable("the npm upstream answered HTTP 403", transient=False)
    assert (definite.status, definite.headers, definite.retry_after) == (502, (), None)


def test_every_answer_worth_retrying_says_when() -> None:
    """Shared state slow, no rule set yet, too many warm jobs: each says when to retry; a
    definite refusal says nothing of the kind."""
    assert dict(StateUnavailable("slow").headers) == {"Retry-After": str(RETRY_AFTER)}
    assert dict(PolicyUnavailable("none yet").headers) == {"Retry-After": str(RETRY_AFTER)}
    assert dict(Busy("two jobs run").headers) == {"Retry-After": str(BUSY_RETRY_AFTER)}
    assert NotFound("gone").headers == ()
    assert IntegrityError("changed").headers == ()
