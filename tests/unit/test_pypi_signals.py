"""PyPI risk signals (`pypi.signals`) and the PEP 740 provenance they read from the simple
page (JSON `provenance`, HTML `data-provenance`), the JSON API deciding files as the page
does, and hostile data never raising."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from mirror import policy
from mirror.config import QuarantineConfig, RiskConfig, RiskRule
from mirror.ecosystems.pypi import jsonapi, signals, simple
from mirror.ecosystems.pypi.signals import FileFacts, file_signals
from tests.unit.pypi_samples import AGE, BASE, FILES, HOSTS, NOW, UPSTREAM, entry, rules, sha, ts

DAY = timedelta(days=1)


def facts(filename: str, uploaded: datetime | None, provenance: bool | None = True) -> FileFacts:
    version = filename.split("-")[1].removesuffix(".tar.gz")
    return FileFacts(filename, version, uploaded, provenance)


def named(found: dict[str, Any], filename: str) -> list[tuple[str, str]]:
    return [(signal.name, signal.detail) for signal in found.get(filename, ())]


# provenance-dropped ---------------------------------------------------------------------------


def test_a_release_without_provenance_after_one_with_it_is_signalled_file_by_file() -> None:
    found = file_signals(
        [
            facts("requests-2.32.3-py3-none-any.whl", NOW - 20 * DAY),
            facts("requests-2.32.3.tar.gz", NOW - 20 * DAY, provenance=False),
            facts("requests-2.32.4-py3-none-any.whl", NOW - DAY, provenance=False),
            facts("requests-2.32.4.tar.gz", NOW - DAY, provenance=True),
        ]
    )
    assert named(found, "requests-2.32.4-py3-none-any.whl") == [
        (
            "provenance-dropped",
            "requests-2.32.4-py3-none-any.whl has no provenance (PEP 740); 2.32.3 had it",
        )
    ]
    assert set(found) == {"requests-2.32.4-py3-none-any.whl"}


def test_the_baseline_is_by_first_upload_not_by_version() -> None:
    # 1.0.1 (a backport) was uploaded after 2.0 with provenance; 2.0 had none: 1.0.1 is
    # compared with 2.0 and 2.1 with 1.0.1 (each the newest release BASELINE_AGE older).
    found = file_signals(
        [
            facts("demo-1.0.tar.gz", NOW - 130 * DAY, provenance=True),
            facts("demo-2.0.tar.gz", NOW - 90 * DAY, provenance=False),
            facts("demo-1.0.1.tar.gz", NOW - 50 * DAY, provenance=True),
            facts("demo-2.1.tar.gz", NOW - DAY, provenance=False),
        ]
    )
    assert [name for name, _ in named(found, "demo-2.0.tar.gz")] == ["provenance-dropped"]
    assert named(found, "demo-2.1.tar.gz") == [
        ("provenance-dropped", "demo-2.1.tar.gz has no provenance (PEP 740); 1.0.1 had it")
    ]
    assert "demo-1.0.1.tar.gz" not in found


def test_two_releases_in_a_row_without_provenance_are_both_signalled() -> None:
    """The decoy (2.32.4, held by the signal) is no baseline for the payload a minute later:
    both are compared with 2.32.3, the newest release uploaded BASELINE_AGE before them."""
    found = file_signals(
        [
            facts("requests-2.32.2.tar.gz", NOW - 90 * DAY),
            facts("requests-2.32.3.tar.gz", NOW - 40 * DAY),
            facts("requests-2.32.4.tar.gz", NOW - DAY, provenance=False),
            facts("requests-2.32.5.tar.gz", NOW - DAY + timedelta(minutes=1), provenance=False),
        ]
    )
    assert named(found, "requests-2.32.5.tar.gz") == [
        ("provenance-dropped", "requests-2.32.5.tar.gz has no provenance (PEP 740); 2.32.3 had it")
    ]
    assert [name for name, _ in named(found, "requests-2.32.4.tar.gz")] == ["provenance-dropped"]


def test_a_prerelease_decoy_without_provenance_is_no_baseline() -> None:
    """A prerelease nobody installs, uploaded first without provenance, does not clear the
    final release after it; with no release BASELINE_AGE older, the first release is the
    baseline."""
    found = file_signals(
        [
            facts("demo-1.0.tar.gz", NOW - 20 * DAY),
            facts("demo-1.1b1.tar.gz", NOW - 2 * DAY, provenance=False),
            facts("demo-1.1.tar.gz", NOW - DAY, provenance=False),
        ]
    )
    assert named(found, "demo-1.1.tar.gz") == [
        ("provenance-dropped", "demo-1.1.tar.gz has no provenance (PEP 740); 1.0 had it")
    ]
    assert "demo-1.1b1.tar.gz" in found
    # Once the decoy is BASELINE_AGE old it is the baseline: a later release is compared with it.
    later = file_signals(
        [
            facts("demo-1.0.tar.gz", NOW - 90 * DAY),
            facts("demo-1.1b1.tar.gz", NOW - 60 * DAY, provenance=False),
            facts("demo-1.1.tar.gz", NOW - DAY, provenance=False),
        ]
    )
    assert set(later) == {"demo-1.1b1.tar.gz"}


def test_unknown_provenance_and_untimed_files_are_no_basis() -> None:
    found = file_signals(
        [
            facts("demo-1.0.tar.gz", None, provenance=True),  # untimed: no basis
            facts("demo-1.1.tar.gz", NOW - 5 * DAY, provenance=None),  # the API: unknown
            facts("demo-1.2.tar.gz", NOW - DAY, provenance=None),
            facts("demo-1.3.tar.gz", NOW, provenance=False),
        ]
    )
    assert found == {}


def test_the_first_release_and_a_never_attested_project_show_nothing() -> None:
    assert file_signals([facts("demo-1.0.tar.gz", NOW, provenance=False)]) == {}
    assert (
        file_signals(
            [
                facts("demo-1.0.tar.gz", NOW - DAY, provenance=False),
                facts("demo-1.1.tar.gz", NOW, provenance=False),
            ]
        )
        == {}
    )


# new-file-type --------------------------------------------------------------------------------


def test_a_wheel_added_long_after_an_sdist_only_release_is_signalled() -> None:
    first = datetime(2025, 10, 26, 9, 0, tzinfo=UTC)
    late = first + 400 * DAY
    found = file_signals(
        [
            facts("demo-1.0.0.tar.gz", first, None),
            facts("demo-1.0.0-py3-none-any.whl", late, None),
            facts("demo-1.0.0-cp313-cp313-win_amd64.whl", late + DAY, None),
        ]
    )
    assert named(found, "demo-1.0.0-py3-none-any.whl") == [
        (
            "new-file-type",
            "wheel added to 1.0.0 on 2026-11-30, 400 days after its first file (sdist only before)",
        )
    ]
    # Every file of the late kind is held, not only the first one uploaded.
    assert [name for name, _ in named(found, "demo-1.0.0-cp313-cp313-win_amd64.whl")] == [
        "new-file-type"
    ]
    assert "demo-1.0.0.tar.gz" not in found


def test_files_of_a_release_uploaded_within_a_day_are_no_new_type() -> None:
    first = NOW - 10 * DAY
    assert (
        file_signals(
            [
                facts("demo-1.0.tar.gz", first, None),
                facts("demo-1.0-py3-none-any.whl", first + signals.LATE_FILE_AFTER, None),
                # Another wheel much later: wheels existed already.
                facts("demo-1.0-cp313-cp313-win_amd64.whl", NOW, None),
                # Legacy formats have no kind; an untimed wheel is no basis.
                facts("demo-1.0.win32.exe", NOW, None),
                facts("demo-1.1.tar.gz", first, None),
                facts("demo-1.1-py3-none-any.whl", None, None),
            ]
        )
        == {}
    )


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("demo-1.0-py3-none-any.whl", "wheel"),
        ("demo-1.0-PY3-NONE-ANY.WHL", "wheel"),
        ("demo-1.0.tar.gz", "sdist"),
        ("demo-1.0.zip", "sdist"),
        ("demo-1.0.win32.exe", None),
        ("demo-1.0.egg", None),
    ],
)
def test_file_kinds_by_extension(filename: str, kind: str | None) -> None:
    assert signals.file_kind(filename) == kind


# parsing PEP 740 ------------------------------------------------------------------------------


def test_json_provenance_key_is_read_as_presence() -> None:
    doc = {
        "files": [
            entry("demo-1.0.tar.gz", NOW - 9 * DAY, provenance=f"{FILES}/demo-1.0.tar.gz.prov"),
            entry("demo-1.1.tar.gz", NOW - 8 * DAY, provenance=None),
            entry("demo-1.2.tar.gz", NOW - 7 * DAY),
            entry("demo-1.3.tar.gz", NOW - 6 * DAY, provenance=""),
            entry("demo-1.4.tar.gz", NOW - 5 * DAY, provenance={"not": "a url"}),
        ]
    }
    page = simple.parse_project_page(orjson.dumps(doc), "demo", UPSTREAM, HOSTS)
    assert [item.provenance for item in page.files] == [True, False, False, False, False]
    assert [name for name, _ in named(dict(page.signals), "demo-1.1.tar.gz")] == [
        "provenance-dropped"
    ]
    # The provenance URL is never relayed to clients.
    view = simple.filter_page(page, rules(), NOW)
    assert b"prov" not in simple.render_json(page, view, BASE)
    assert b"prov" not in simple.render_html(page, view, BASE)


def test_html_data_provenance_attribute_is_read_as_presence() -> None:
    def anchor(filename: str, uploaded: datetime, extra: str = "") -> str:
        return (
            f'<a href="{FILES}/p/{filename}#sha256={sha(filename)}" '
            f'data-upload-time="{ts(uploaded)}"{extra}>{filename}</a>'
        )

    raw = (
        "<html><body>"
        + anchor("demo-1.0.tar.gz", NOW - 9 * DAY, f' data-provenance="{FILES}/x.provenance"')
        + anchor("demo-1.1.tar.gz", NOW - 8 * DAY)
        + anchor("demo-1.2.tar.gz", NOW - 7 * DAY, " data-provenance")
        + "</body></html>"
    ).encode()
    page = simple.parse_project_page(raw, "demo", UPSTREAM, HOSTS)
    assert [item.provenance for item in page.files] == [True, False, False]
    # 1.2 is compared with 1.0 (the first release; none is BASELINE_AGE older), not with 1.1.
    assert set(page.signals) == {"demo-1.1.tar.gz", "demo-1.2.tar.gz"}
    assert b"provenance" not in simple.render_html(
        page, simple.filter_page(page, rules(), NOW), BASE
    )


# deciding -------------------------------------------------------------------------------------


def dropped_page() -> simple.ProjectPage:
    doc = {
        "files": [
            entry("demo-1.0-py3-none-any.whl", NOW - 60 * DAY, provenance="u"),
            entry("demo-1.1-py3-none-any.whl", NOW - 10 * DAY),
        ]
    }
    return simple.parse_project_page(orjson.dumps(doc), "demo", UPSTREAM, HOSTS)


def test_the_page_holds_a_file_that_dropped_provenance_for_14_days_by_default() -> None:
    page = dropped_page()
    view = simple.filter_page(page, rules(), NOW)  # quarantine 3 days: 1.1 is old enough
    assert [item.filename for item in view.visible] == ["demo-1.0-py3-none-any.whl"]
    (held,) = view.quarantined
    assert held.risk is not None
    assert held.risk.signal.name == "provenance-dropped"
    assert held.until == NOW + 4 * DAY
    notice = simple.render_notice("demo", view)
    assert notice is not None
    assert "held for risk signal provenance-dropped" in notice


def test_a_note_only_reports() -> None:
    noted = policy.compile_rules(
        [],
        QuarantineConfig(default=AGE),
        NOW,
        RiskConfig(rules=(RiskRule(signal="provenance-dropped", action="note"),)),
    )
    view = simple.filter_page(dropped_page(), noted, NOW)
    assert len(view.visible) == 2
    assert view.quarantined == ()


def test_the_json_api_decides_a_file_with_the_pages_signals() -> None:
    page = dropped_page()
    api = jsonapi.document_from_page(page)
    view = jsonapi.filter_api(api, rules(), NOW)
    assert list(view.releases) == ["1.0"]
    # An upstream JSON API document states no provenance: alone it cannot signal the drop,
    # with the page it decides as the page does.
    raw = {
        "info": {"version": "1.1"},
        "releases": {
            "1.0": [api_entry("demo-1.0-py3-none-any.whl", NOW - 60 * DAY)],
            "1.1": [api_entry("demo-1.1-py3-none-any.whl", NOW - 10 * DAY)],
        },
    }
    upstream = jsonapi.parse_api_document(orjson.dumps(raw), "demo", UPSTREAM, HOSTS)
    assert upstream.signals == {}
    assert list(jsonapi.filter_api(upstream, rules(), NOW).releases) == ["1.0", "1.1"]
    merged = jsonapi.api_signals(upstream, page)
    assert list(jsonapi.filter_api(upstream, rules(), NOW, merged).releases) == ["1.0"]
    release = jsonapi.release_document(upstream, "1.1")
    assert release is not None
    visible, hidden = jsonapi.decide_api_version(release, rules(), NOW, "1.1", merged)
    assert visible == []
    assert [decision.risk.signal.name for decision in hidden if decision.risk] == [
        "provenance-dropped"
    ]


def test_the_json_api_finds_a_late_file_type_from_its_own_upload_times() -> None:
    raw = {
        "info": {"version": "1.0"},
        "releases": {
            "1.0": [
                api_entry("demo-1.0.tar.gz", NOW - 400 * DAY),
                api_entry("demo-1.0-py3-none-any.whl", NOW - 10 * DAY),
            ]
        },
    }
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", UPSTREAM, HOSTS)
    assert [signal.name for signal in api.signals["demo-1.0-py3-none-any.whl"]] == ["new-file-type"]


def api_entry(filename: str, uploaded: datetime) -> dict[str, Any]:
    return {
        "filename": filename,
        "url": f"{FILES}/p/{filename}",
        "digests": {"sha256": sha(filename)},
        "upload_time_iso_8601": ts(uploaded),
    }


# hostile data ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [
        [{"filename": "demo-1.0.tar.gz", "url": "x", "upload-time": 5, "provenance": 7}],
        [
            {"filename": "demo-1.0.tar.gz", "url": "x", "upload-time": "9999-12-31T23:59:59Z"},
            {"filename": "demo-1.1.whl", "url": "y", "upload-time": "0001-01-01T00:00:00Z"},
        ],
        [
            {
                "filename": "demo-1.0-py3-none-any.whl\x1b[31m" + "x" * 5000,
                "url": "z",
                "upload-time": ts(NOW),
                "provenance": ["u"],
            }
        ],
    ],
)
def test_hostile_pages_never_raise(files: list[dict[str, Any]]) -> None:
    page = simple.parse_project_page(
        orjson.dumps({"files": [entry("demo-0.9.tar.gz", NOW - DAY, provenance="u"), *files]}),
        "demo",
        UPSTREAM,
        HOSTS,
    )
    for found in page.signals.values():
        assert all(len(signal.detail) <= 200 for signal in found)


def test_many_releases_are_signalled_in_one_pass() -> None:
    files = [
        facts(f"demo-1.{n}.tar.gz", NOW - (5000 - n) * timedelta(minutes=1), n % 2 == 0)
        for n in range(5000)
    ]
    found = file_signals(files)
    assert len(found) == 2500
