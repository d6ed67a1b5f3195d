"""Risk signals where a person asks "why", whichever ecosystem computed them: explain's JSON
(`signals`, `risk`, per PyPI file), `mirror explain`'s text, and the dashboard's Explain,
Review and Quarantine queue pages, rendered by the dashboard's own templates from real policy
decisions. Hostile signal text stays text."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
import pytest

from mirror import policy
from mirror.admin.routes import explanation_json, one_file
from mirror.cli.tables import explain_text
from mirror.config import QuarantineConfig
from mirror.errors import NotFound
from mirror.holds import HeldVersion
from mirror.model import Explanation
from mirror.reportcells import signal_action
from mirror.risk import Signal
from mirror.ui.pages.queue import QueueRow
from mirror.ui.pages.review import Review
from mirror.ui.render import environment
from mirror.ui.session import UiSession

_TAG = re.compile(r"<[^>]*>")
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
PUBLISHED = NOW - timedelta(days=5)
SCRIPT_ADDED = "postinstall script added in 4.2.1; 4.2.0 had none"
NEW_PUBLISHER = "4.2.1 published by mallory; 4.2.0 and earlier by alice"
RULES = policy.compile_rules([], QuarantineConfig(default=timedelta(days=3)), NOW)


def decide(
    signals: list[Signal],
    *,
    ecosystem: str = "npm",
    package: str = "left-pad",
    version: str = "4.2.1",
    filename: str | None = None,
) -> policy.Decision:
    subject = policy.Subject(ecosystem, package, version, filename=filename)
    return policy.decide(subject, PUBLISHED, NOW, RULES, signals)


def two_signals() -> policy.Decision:
    """Held: the install script extends it to 14 days; the new publisher is only noted."""
    return decide(
        [
            Signal.of("new-publisher", NEW_PUBLISHER),
            Signal.of("install-script-added", SCRIPT_ADDED),
        ]
    )


def answer_of(decision: policy.Decision, **extra: Any) -> dict[str, Any]:
    return explanation_json(Explanation.of(decision, published_at=PUBLISHED, **extra))


# the API's JSON --------------------------------------------------------------------------------


def test_explain_json_lists_every_signal_and_names_the_one_that_holds() -> None:
    answer = answer_of(two_signals())
    assert answer["verdict"] == "quarantined"
    assert answer["signals"] == [
        {
            "signal": "install-script-added",
            "detail": SCRIPT_ADDED,
            "action": "extend",
            "age": "14d",
            "rule": "default",
        },
        {
            "signal": "new-publisher",
            "detail": NEW_PUBLISHER,
            "action": "note",
            "age": None,
            "rule": "default",
        },
    ]
    assert answer["risk"] == answer["signals"][0]


def test_a_version_shown_with_a_note_lists_it_and_nothing_holds_it() -> None:
    answer = answer_of(decide([Signal.of("new-publisher", NEW_PUBLISHER)]))
    assert answer["verdict"] == "allowed"  # 5 days old, past the 3-day quarantine
    assert answer["detail"].endswith(f"; risk signal new-publisher: {NEW_PUBLISHER}")
    assert [signal["action"] for signal in answer["signals"]] == ["note"]
    assert answer["risk"] is None


def test_a_version_without_signals_says_so_with_empty_fields() -> None:
    answer = answer_of(decide([]))
    assert answer["signals"] == []
    assert answer["risk"] is None


def test_pypi_file_by_file_each_file_keeps_its_own_signals() -> None:
    wheel = decide(
        [Signal.of("new-file-type", "a wheel added to 1.0 three weeks after its sdist")],
        ecosystem="pypi",
        package="demo",
        version="1.0",
        filename="demo-1.0-py3-none-any.whl",
    )
    sdist = decide([], ecosystem="pypi", package="demo", version="1.0", filename="demo-1.0.tar.gz")
    entries = tuple(
        {
            "filename": decision.filename,
            "verdict": str(decision.verdict),
            "detail": decision.detail,
            "signals": list(decision.describe_signals()),
            "risk": decision.risk.describe() if decision.risk else None,
        }
        for decision in (sdist, wheel)
    )
    answer = answer_of(sdist, files=entries)
    assert answer["files"][0]["signals"] == []
    one = one_file(answer, "demo-1.0-py3-none-any.whl")
    assert [signal["signal"] for signal in one["signals"]] == ["new-file-type"]
    assert one["risk"] is None  # new-file-type is noted by default
    assert one_file(answer, "demo-1.0.tar.gz")["signals"] == []
    with pytest.raises(NotFound):
        one_file(answer, "demo-1.0-cp312-none-any.whl")


# mirror explain ---------------------------------------------------------------------------------


def test_signal_action_says_note_extended_or_held() -> None:
    assert signal_action({"action": "note"}) == "note"
    assert signal_action({"action": "extend", "age": "14d"}) == "extended to 14d"
    assert signal_action({"action": "hold"}) == "held until exempted"
    assert signal_action({"action": "\x1b[2Jodd"}) == "\\x1b[2Jodd"


def test_mirror_explain_prints_the_signals_under_the_verdict() -> None:
    answer = {**answer_of(two_signals()), "published_at": "2026-11-17T10:00:00Z"}
    lines = explain_text(answer).splitlines()
    assert lines[0] == "npm left-pad 4.2.1: quarantined"
    assert lines[1].startswith("  left-pad@4.2.1 is held until 2026-12-01T10:00Z: " + SCRIPT_ADDED)
    assert lines[-3:] == [
        "  signals:",
        f"    install-script-added (extended to 14d, holds it): {SCRIPT_ADDED}",
        f"    new-publisher (note): {NEW_PUBLISHER}",
    ]


def test_mirror_explain_prints_no_signal_section_without_signals() -> None:
    assert "signals:" not in explain_text(answer_of(decide([])))


def test_mirror_explain_names_the_signals_of_each_pypi_file() -> None:
    answer = {
        **answer_of(decide([], ecosystem="pypi", package="demo", version="1.0")),
        "files": [
            {"filename": "demo-1.0.tar.gz", "verdict": "allowed", "signals": []},
            {
                "filename": "demo-1.0-py3-none-any.whl",
                "verdict": "quarantined",
                "signals": [{"signal": "provenance-dropped", "action": "extend", "age": "14d"}],
            },
        ],
    }
    text = explain_text(answer)
    assert "SIGNALS" in text.splitlines()[-3]
    assert text.splitlines()[-1].endswith("provenance-dropped")


def test_hostile_signal_text_reaches_the_terminal_escaped() -> None:
    decision = decide([Signal.of("new-publisher", "by \x1b[31mmallory\x1b[0m\r\nroot")])
    text = explain_text(answer_of(decision))
    assert "\x1b" not in text
    assert "\r" not in text
    assert "new-publisher (note): by \\x1b[31mmallory\\x1b[0m\\r\\nroot" in text


# the dashboard ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def templates() -> jinja2.Environment:
    return environment()


READER = UiSession(name="auditor", role="read", expires=2**40, nonce="n")


def page(env: jinja2.Environment, template: str, **context: Any) -> str:
    """A page as `render` renders it for a read-only login (no forms)."""
    return env.get_template(template).render(
        session=READER, csrf="", csrf_field="csrf", navigation=(), here="", **context
    )


def rows_of(text: str, caption_start: str) -> list[str]:
    """The body rows' cells of the table whose caption starts with `caption_start`, as text."""
    table = text.split(f"<caption>{caption_start}", 1)[1].split("</table>", 1)[0]
    body = table.split("<tbody>", 1)[1]
    return [
        " | ".join(html.unescape(_TAG.sub("", cell)).strip() for cell in row.split("</td>")[:-1])
        for row in body.split("</tr>")[:-1]
    ]


def test_the_explain_page_lists_the_signals_and_marks_the_one_that_holds(
    templates: jinja2.Environment,
) -> None:
    text = page(
        templates,
        "explain.html",
        query="npm left-pad@4.2.1",
        answer=answer_of(two_signals()),
        problem=None,
        review_query="ecosystem=npm&package=left-pad&version=4.2.1",
    )
    assert rows_of(text, "Risk signals") == [
        f"install-script-added | {SCRIPT_ADDED} | extended to 14d (holds it) | default",
        f"new-publisher | {NEW_PUBLISHER} | note | default",
    ]


def test_the_explain_page_of_a_pypi_release_shows_each_files_signals(
    templates: jinja2.Environment,
) -> None:
    answer = {
        **answer_of(decide([], ecosystem="pypi", package="demo", version="1.0")),
        "files": [
            {"filename": "demo-1.0.tar.gz", "verdict": "allowed", "detail": "ok", "signals": []},
            {
                "filename": "demo-1.0-py3-none-any.whl",
                "verdict": "quarantined",
                "detail": "held",
                "until": "2026-12-01T10:00:00+00:00",
                "signals": [{"signal": "provenance-dropped", "action": "extend", "age": "14d"}],
            },
        ],
    }
    text = page(templates, "explain.html", query="pypi demo==1.0", answer=answer, problem=None,
                review_query="")  # fmt: skip
    assert "<caption>Risk signals" not in text  # the release's own decision has none
    rows = rows_of(text, "Files")
    assert rows[0].endswith(" | -")
    assert rows[1].endswith(" | provenance-dropped (extended to 14d)")


def review_page(templates: jinja2.Environment, decision: policy.Decision) -> str:
    return page(
        templates,
        "review.html",
        ecosystem="npm",
        package="left-pad",
        version="4.2.1",
        answer=Explanation.of(decision, published_at=PUBLISHED),
        review=Review(baseline="4.2.0"),
        held=None,
        downloads=[],
        can_write=False,
        max_downloads=20,
    )


def test_the_review_page_shows_the_policys_risk_signals_with_their_action(
    templates: jinja2.Environment,
) -> None:
    text = review_page(templates, two_signals())
    assert '<h2 id="risk">Risk signals</h2>' in text
    assert rows_of(text, "What the mirror") == [
        f"install-script-added | {SCRIPT_ADDED} | extended to 14d (holds it) | default",
        f"new-publisher | {NEW_PUBLISHER} | note | default",
    ]


def test_the_review_page_says_when_there_is_no_risk_signal(templates: jinja2.Environment) -> None:
    text = review_page(templates, decide([]))
    assert "No risk signal: the metadata shows nothing the risk rules look for" in text


def test_hostile_signal_text_on_the_dashboard_is_escaped_and_visible(
    templates: jinja2.Environment,
) -> None:
    hostile = '<script>alert(1)</script> \x1b[2J\u202e "quoted"'
    text = review_page(templates, decide([Signal.of("new-publisher", hostile)]))
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\x1b[2J\\u202e &#34;quoted&#34;" in text
    assert "\x1b" not in text
    assert "\u202e" not in text


def queue_row(risk: dict[str, Any] | None) -> QueueRow:
    held = HeldVersion(
        ecosystem="npm",
        package="left-pad",
        version="4.2.1",
        published_at=PUBLISHED,
        until=None,
        requests=2,
        requesters=(),
        requester_count=1,
        more_requesters=False,
        first_held=NOW,
        last_held=NOW,
    )
    return QueueRow(held=held, state="held", risk=risk, review_query="", explain_query="")


def test_the_queue_names_the_signal_that_holds_a_version(templates: jinja2.Environment) -> None:
    hold = {"signal": "new-publisher", "detail": NEW_PUBLISHER, "action": "hold", "age": None}
    context: dict[str, Any] = {
        "title": "Quarantine queue",
        "released": 0,
        "ecosystems": ("npm",),
        "chosen": "",
        "limit": 200,
        "state_problem": None,
    }
    text = page(templates, "queue.html", rows=[queue_row(hold)], **context)
    assert "risk signal <code>new-publisher</code> (held until exempted)" in text
    plain = page(templates, "queue.html", rows=[queue_row(None)], **context)
    assert "risk signal" not in plain
