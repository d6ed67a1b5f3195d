"""Pure parts of the admin CLI: origins, the terminal escaping of answers, rule coverage
cells, and the secret-free view of the settings."""

from __future__ import annotations

import pytest

from mirror.cli import client, preflight, settings, tables
from mirror.cli.osvimport import import_osv_text


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("http://127.0.0.1:8080/api", "http://127.0.0.1:8080/other", True),
        ("http://Mirror.Example:80/a", "http://mirror.example/b", True),
        ("https://mirror.example/a", "https://mirror.example:443/b", True),
        ("https://mirror.example/a", "http://mirror.example/a", False),
        ("http://127.0.0.1:8080/a", "http://127.0.0.1:8081/a", False),
        ("http://mirror.example/a", "http://evil.example/a", False),
        ("http://mirror.example/a", "http://mirror.example.evil.example/a", False),
        ("http://mirror.example/a", "http://user@evil.example/a", False),
    ],
)
def test_origin_compares_scheme_host_and_port(first: str, second: str, same: bool) -> None:
    assert (client.origin(first) == client.origin(second)) is same


def test_tables_and_texts_escape_every_answer_field() -> None:
    evil = "x\x1b[2J\nFORGED\x07"
    table = tables.format_table(("A", "B"), [(evil, evil)])
    assert "\x1b" not in table
    assert len(table.splitlines()) == 2
    rule = {
        "id": evil, "ecosystem": "npm", "package": evil, "versions": evil, "reason": evil,
        "created_by": evil, "expires_at": None, "expired": False,
        "covers": {"versions": [evil], "count": 1, "listed": 1},
    }  # fmt: skip
    for text in (
        tables.rules_table("block", [rule]),
        tables.explain_text(
            {"ecosystem": "npm", "package": evil, "version": evil, "verdict": evil,
             "detail": evil, "rule": rule}
        ),
        tables.audit_table([{"at": evil, "actor": evil, "client": evil, "action": evil,
                                  "target": evil, "after": rule}]),
        tables.impact_text({"error": evil}),
        preflight.preflight_text(
            {"checked": 1, "unpinned": [evil],
             "refused": [{"package": evil, "version": evil, "verdict": evil, "until": None,
                          "detail": evil}]}
        ),
        import_osv_text(
            {"advisories": 1, "notes": [evil],
             "blocks": [{"action": "created", "ecosystem": "npm", "package": evil,
                         "versions": evil}]}
        ),
    ):  # fmt: skip
        assert all(char.isprintable() for line in text.splitlines() for char in line), text
        assert not any(line.startswith("FORGED") for line in text.splitlines())


def test_coverage_cells_say_none_loudly_and_unknown_as_such() -> None:
    none = {"covers": {"versions": [], "count": 0, "listed": 4, "warning": "x 9 covers no…"}}
    assert tables.covers_cell(none) == "NONE (covers no version the upstream lists)"
    unknown = {"covers": {"versions": None, "note": "glob"}}
    assert tables.covers_cell(unknown) == "?"
    many = {"covers": {"versions": [f"1.0.{n}" for n in range(7)], "count": 7, "listed": 9}}
    assert tables.covers_cell(many) == "1.0.0, 1.0.1, 1.0.2, 1.0.3, 1.0.4 (+2)"
    assert tables.covers_cell({}) == ""
    assert tables.coverage_lines(none) == ["WARNING: x 9 covers no…"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:hunter2@host:6379/0", "redis://user:<set>@host:6379/0"),
        ("redis://:hunter2@host", "redis://:<set>@host"),
        ("https://t0ken@host/path", "https://<set>@host/path"),
        ("https://host/simple/?token=abc&flag", "https://host/simple/?token=<set>&flag"),
        ("https://host/maven2/", "https://host/maven2/"),
        ("https://host/#frag", "https://host/"),
    ],
)
def test_urls_in_settings_show_no_secret(url: str, shown: str) -> None:
    assert settings.redact_url(url) == shown


def test_secret_named_settings_are_hidden_wherever_they_are() -> None:
    data = {
        "npm": {"upstream_auth": "Bearer x", "upstream": "https://a:b@h/"},
        "extra": {"client_secret": "s", "password": "p", "api_token": "t", "nothing": ""},
        "admin": {"tokens": ["ops"]},
        "takedowns": {"webhook": "https://hooks.example.com/services/T0/B0/secret"},
    }
    assert settings.redact_settings(data) == {
        "npm": {"upstream_auth": "<set>", "upstream": "https://a:<set>@h/"},
        "extra": {"client_secret": "<set>", "password": "<set>", "api_token": "<set>",
                  "nothing": ""},
        "admin": {"tokens": ["ops"]},
        "takedowns": {"webhook": "<set>"},
    }  # fmt: skip
