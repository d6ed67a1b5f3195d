"""`mirror impact --format table|csv|json`: what each writer makes of hostile answer text, of
answers without the who-fields (a mirror before read tokens), and of several pages."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from mirror.cli import tables
from mirror.reportcells import csv_cell, show

# Each starts a spreadsheet formula, or hides a line or a terminal escape in a cell.
FORMULAS = ('=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1:A9)")
EVIL_AGENT = 'npm/10 "quoted", comma\r\nforged,row\x1b[2J\u202e'


def download(**fields: Any) -> dict[str, Any]:
    row = {
        "client": "10.0.0.1", "package": "left-pad", "version": "1.0.0",
        "filename": "left-pad-1.0.0.tgz", "first_seen": "2026-11-01T00:00:00Z",
        "last_seen": "2026-11-02T00:00:00Z", "count": 1, "token": "ci-bot",
        "user_agent": "npm/10.8.2", "ci": "github-actions", "command": "ci", "session": "ab12",
    }  # fmt: skip
    row.update(fields)
    return row


def page(*downloads: dict[str, Any], more: str | None = None) -> dict[str, Any]:
    return {
        "ecosystem": "npm",
        "package": "left-pad",
        "versions": "*",
        "limit": 100,
        "clients": sorted({d["client"] for d in downloads}),
        "downloads": list(downloads),
        "next_cursor": more,
    }


def hostile_pages() -> list[dict[str, Any]]:
    first = page(
        *(download(package=f, client=f"10.0.0.{i}") for i, f in enumerate(FORMULAS)), more="c1"
    )
    second = page(
        download(
            package="@scope/pkg",
            user_agent=EVIL_AGENT,
            session=FORMULAS[0],
            first_seen="2026-10-01T00:00:00Z",
            last_seen="2026-11-20T00:00:00Z",
        ),
        download(version="-1", token="", ci="", count=7),
    )
    return [first, second]


def test_csv_has_one_row_per_download_and_no_cell_starts_a_formula() -> None:
    text = "".join(tables.impact_csv(hostile_pages()))
    assert "\x1b" not in text
    assert "\u202e" not in text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(tables.DOWNLOAD_COLUMNS)
    assert len(rows) == 1 + 6  # every download of both pages, each on one line
    assert len(text.splitlines()) == 1 + 6
    for row in rows[1:]:
        assert len(row) == len(tables.DOWNLOAD_COLUMNS)
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row
    packages = [dict(zip(rows[0], row, strict=True))["package"] for row in rows[1:]]
    assert packages[:4] == ["'" + formula for formula in FORMULAS]
    assert packages[4] == "'@scope/pkg"
    evil = dict(zip(rows[0], rows[5], strict=True))
    assert evil["user_agent"] == 'npm/10 "quoted", comma\\r\\nforged,row\\x1b[2J\\u202e'
    assert evil["session"] == "'" + FORMULAS[0]
    last = dict(zip(rows[0], rows[6], strict=True))
    assert (last["version"], last["token"], last["ci"], last["count"]) == ("'-1", "", "", "7")
    assert last["ecosystem"] == "npm"


def test_csv_and_json_of_an_answer_without_the_who_fields() -> None:
    bare = {key: value for key, value in download().items()
            if key not in {"token", "user_agent", "ci", "command", "session"}}  # fmt: skip
    rows = list(csv.reader(io.StringIO("".join(tables.impact_csv([page(bare)])))))
    record = dict(zip(rows[0], rows[1], strict=True))
    assert record["token"] == record["user_agent"] == record["session"] == ""
    assert record["client"] == "10.0.0.1"
    assert record["count"] == "1"
    document = json.loads("".join(tables.impact_json({"package": "left-pad"}, [page(bare)])))
    assert document["downloads"][0]["token"] == ""
    assert document["identities"] == [
        {"token": "", "ci": "", "clients": 1, "downloads": 1,
         "first_seen": "2026-11-01T00:00:00Z", "last_seen": "2026-11-02T00:00:00Z"}
    ]  # fmt: skip


def test_json_keeps_hostile_values_exactly_and_sums_identities_over_every_page() -> None:
    query = {"ecosystem": "npm", "package": "=evil", "versions": None}
    text = "".join(tables.impact_json(query, hostile_pages()))
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "\r" not in text
    document = json.loads(text)
    assert document["query"] == query
    assert len(document["downloads"]) == 6
    assert [d["package"] for d in document["downloads"][:4]] == list(FORMULAS)
    assert document["downloads"][4]["user_agent"] == EVIL_AGENT
    assert document["downloads"][5]["count"] == 7
    assert set(document["downloads"][0]) == set(tables.DOWNLOAD_COLUMNS)
    # Most downloads first; distinct clients; the earliest first and latest last seen.
    assert document["identities"] == [
        {"token": "", "ci": "", "clients": 1, "downloads": 7,
         "first_seen": "2026-11-01T00:00:00Z", "last_seen": "2026-11-02T00:00:00Z"},
        {"token": "ci-bot", "ci": "github-actions", "clients": 4, "downloads": 5,
         "first_seen": "2026-10-01T00:00:00Z", "last_seen": "2026-11-20T00:00:00Z"},
    ]  # fmt: skip


def test_an_interrupted_walk_leaves_no_valid_json() -> None:
    def pages() -> Iterator[Mapping[str, Any]]:
        yield page(download())
        raise RuntimeError("the second page failed")

    written: list[str] = []

    def write_all() -> None:
        written.extend(tables.impact_json({}, pages()))

    with pytest.raises(RuntimeError):
        write_all()
    assert written  # the first page was written as it arrived
    with pytest.raises(json.JSONDecodeError):
        json.loads("".join(written))


def test_table_shows_token_and_ci_columns_and_identities_when_present() -> None:
    answer = page(download(), download(client="10.0.0.2", token="", ci=""))
    answer["identities"] = [
        {"token": "ci-bot", "ci": "github-actions", "clients": 1, "downloads": 1,
         "first_seen": "2026-11-01T00:00:00Z", "last_seen": "2026-11-02T00:00:00Z"},
        {"token": "", "ci": "", "clients": 1, "downloads": 1,
         "first_seen": "2026-11-01T00:00:00Z", "last_seen": "2026-11-02T00:00:00Z"},
    ]  # fmt: skip
    lines = tables.impact_text(answer).splitlines()
    assert lines[1].split() == [
        "CLIENT", "TOKEN", "CI", "PACKAGE", "VERSION", "FILE", "FIRST", "SEEN", "LAST", "SEEN",
        "COUNT",
    ]  # fmt: skip
    assert lines[2].split()[:3] == ["10.0.0.1", "ci-bot", "github-actions"]
    assert lines[3].split()[:3] == ["10.0.0.2", "-", "-"]
    assert lines[4] == "identities:"
    assert lines[5].split()[:4] == ["TOKEN", "CI", "CLIENTS", "DOWNLOADS"]
    assert lines[6].split()[:4] == ["ci-bot", "github-actions", "1", "1"]
    assert lines[7].split()[:4] == ["-", "-", "1", "1"]


def test_table_of_an_answer_without_the_who_fields_has_neither_column() -> None:
    bare = {key: value for key, value in download().items() if key not in {"token", "ci"}}
    lines = tables.impact_text(page(bare)).splitlines()
    assert "TOKEN" not in lines[1]
    assert "CI " not in lines[1]
    assert "identities:" not in lines


@pytest.mark.parametrize(
    "value",
    [
        " =1+1",
        "   +1",
        "\t=1+1",  # escaped to \t by show(), checked raw too
        "\r@SUM(A1)",
        " \t -2+3",
        "\uff1d1+1",  # full-width = + - @
        "\uff0b1",
        "\uff0d1",
        "\uff20SUM(A1)",
        "  \uff1d1",
        "\u3000=1",  # an ideographic space
    ],
)
def test_a_formula_after_blanks_or_in_full_width_is_text(value: str) -> None:
    cell = csv_cell(value)
    assert cell.startswith("'"), cell
    assert cell[1:] == show(value)


@pytest.mark.parametrize(
    "value", ["left-pad", "1.0.0", "a=b", "org.example:lib", "10.0.0.1", " spaced", "", "7"]
)
def test_an_ordinary_cell_is_unchanged(value: str) -> None:
    assert csv_cell(value) == value
