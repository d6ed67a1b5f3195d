"""The pure PyPI JSON API functions: parse → filter → render `/pypi/{project}/json` and
`/pypi/{project}/{version}/json`, and an HTML page's upload times filled from the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from mirror.ecosystems.pypi import jsonapi, simple
from tests.unit.pypi_samples import (
    AGE,
    API,
    BASE,
    FILES,
    HOSTS,
    NOW,
    OLD,
    UPSTREAM,
    UPSTREAM_HTML,
    api_file,
    block,
    rules,
    sha,
)


def test_upload_times_and_sizes_come_from_the_json_api_for_html_pages() -> None:
    page = simple.parse_project_page(UPSTREAM_HTML, "demo", UPSTREAM, HOSTS)
    api = jsonapi.parse_api_document(
        orjson.dumps(
            {
                "info": {"name": "demo", "version": "1.1"},
                "releases": {
                    "1.0": [
                        {
                            "filename": "demo-1.0.tar.gz",
                            "url": f"{FILES}/packages/ab/demo-1.0.tar.gz",
                            "upload_time": "2025-01-02T03:04:05",
                            "size": 99,
                            "digests": {"sha256": sha("a")},
                        }
                    ],
                    "1.2": [
                        {
                            "filename": "demo-1.2.tar.gz",
                            "url": "x",
                            "upload_time_iso_8601": "2025-01-02T03:04:05.000001Z",
                            "digests": {"sha256": sha("other bytes")},
                        }
                    ],
                },
            }
        ),
        "demo",
        "http://up.test/pypi/demo/json",
    )
    merged = jsonapi.with_api_details(page, api)
    first = merged.file("demo-1.0.tar.gz")
    assert first is not None
    assert first.upload_time == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert first.size == 99
    # Only an md5 on the page, another sha256 in the API: the time is still taken by name.
    third = merged.file("demo-1.2.tar.gz")
    assert third is not None
    assert third.upload_time is not None


# JSON API ------------------------------------------------------------------------------------


def test_json_api_project_is_filtered_and_info_version_recomputed() -> None:
    api = jsonapi.parse_api_document(orjson.dumps(API), "demo", "http://up.test/pypi/demo/json")
    view = jsonapi.filter_api(api, rules(), NOW)
    assert view.latest == "1.1"
    body = orjson.loads(jsonapi.render_api_project(api, view, BASE))
    assert body["info"]["version"] == "1.1"
    assert sorted(body["releases"]) == ["1.0", "1.1", "1.2b1"]
    assert [item["filename"] for item in body["releases"]["1.1"]] == ["demo-1.1-py3-none-any.whl"]
    assert [item["url"] for item in body["urls"]] == [
        f"{BASE}/files/demo/demo-1.1-py3-none-any.whl"
    ]
    assert body["last_serial"] == 42
    assert view.valid_until == NOW - timedelta(hours=5) + AGE


def test_json_api_version_document() -> None:
    raw = {
        "info": {"name": "demo", "version": "1.1"},
        "urls": API["releases"]["1.1"],  # type: ignore[index]
    }
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")
    visible, hidden = jsonapi.decide_api_version(api, rules(), NOW)
    assert [item.filename for item in visible] == ["demo-1.1-py3-none-any.whl"]
    assert len(hidden) == 1
    assert hidden[0].verdict == "quarantined"
    body = orjson.loads(jsonapi.render_api_version(api, "1.1", visible, BASE))
    assert [item["url"] for item in body["urls"]] == [
        f"{BASE}/files/demo/demo-1.1-py3-none-any.whl"
    ]
    blocked_visible, blocked = jsonapi.decide_api_version(api, rules(block("1.1")), NOW)
    assert blocked_visible == []
    assert all(item.verdict == "blocked" for item in blocked)


def test_hostile_links_in_the_json_api_are_left_out() -> None:
    raw = {
        **API,
        "releases": {
            **API["releases"],  # type: ignore[dict-item]
            "0.5": [{**api_file("demo-0.5.tar.gz", OLD), "url": "file:///etc/demo-0.5.tar.gz"}],
        },
        "urls": [{**api_file("demo-2.0-py3-none-any.whl", OLD), "url": "http://[::1/x"}],
    }
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/", HOSTS)
    assert api.releases["0.5"] == ()
    assert api.urls == ()
    assert "demo-1.0-py3-none-any.whl" in api.files_by_name()


# the JSON API carries nothing of a held release ----------------------------------------------

SECRET = "HELD-SECRET-9d2e"


def secret_api() -> dict[str, Any]:
    """Upstream `info` is of 2.0 (held: 5 hours old) and full of the secret."""
    return {
        **API,
        "info": {
            "name": "demo",
            "version": "2.0",
            "summary": SECRET,
            "description": SECRET,
            "requires_dist": [f"{SECRET.lower()}>=1"],
            "home_page": f"https://example.com/{SECRET}",
            "project_urls": {"Source": f"https://example.com/{SECRET}"},
        },
        "vulnerabilities": [{"id": SECRET}],
        "x-extra": SECRET,
    }


def test_api_info_of_a_held_release_is_never_shown() -> None:
    api = jsonapi.parse_api_document(orjson.dumps(secret_api()), "demo", "http://up.test/")
    view = jsonapi.filter_api(api, rules(), NOW)
    assert view.latest == "1.1"
    assert jsonapi.info_for(api, "1.1") is None
    raw = jsonapi.render_api_project(api, view, BASE)
    assert SECRET.encode() not in raw
    body = orjson.loads(raw)
    assert set(body) == {"info", "last_serial", "releases", "urls"}
    info = body["info"]
    assert info["version"] == "1.1"
    assert info["name"] == "demo"
    assert info["requires_dist"] is None  # unknown, not "no dependencies" from another release
    assert set(jsonapi.INFO_KEYS) <= set(info)


def test_api_info_comes_from_the_release_document_only_when_it_is_of_that_release() -> None:
    api = jsonapi.parse_api_document(orjson.dumps(secret_api()), "demo", "http://up.test/")
    view = jsonapi.filter_api(api, rules(), NOW)
    own = {"info": {"name": "demo", "version": "1.1", "summary": "one one"}, "vulnerabilities": []}
    body = orjson.loads(jsonapi.render_api_project(api, view, BASE, own))
    assert body["info"]["summary"] == "one one"
    assert body["vulnerabilities"] == []
    # A per-version document that describes another release (a hostile or broken upstream).
    other = {"info": {"name": "demo", "version": "2.0", "summary": SECRET}}
    assert SECRET.encode() not in jsonapi.render_api_project(api, view, BASE, other)


def test_api_info_of_the_visible_latest_is_kept() -> None:
    api = jsonapi.parse_api_document(orjson.dumps(secret_api()), "demo", "http://up.test/")
    view = jsonapi.filter_api(api, rules(), NOW + timedelta(days=4))
    assert view.latest == "2.0"
    body = orjson.loads(jsonapi.render_api_project(api, view, BASE))
    assert body["info"]["summary"] == SECRET  # 2.0 is visible now: its own info
    assert "x-extra" not in body


def test_api_with_nothing_visible_says_why() -> None:
    api = jsonapi.parse_api_document(orjson.dumps(secret_api()), "demo", "http://up.test/")
    view = jsonapi.filter_api(api, rules(block("<2")), NOW)
    assert view.latest is None
    with pytest.raises(ValueError, match="visible"):
        jsonapi.render_api_project(api, view, BASE)
    assert jsonapi.api_nothing_visible_message("demo", view) == (
        "no release of demo is available from this mirror yet: 1 file held in quarantine "
        "(the first available 2026-11-25T05:00Z); 4 files blocked"
    )


def test_api_version_document_keeps_only_its_own_release() -> None:
    raw = {
        "info": {"name": "demo", "version": "2.0", "summary": SECRET},
        "urls": [
            api_file("demo-1.1-py3-none-any.whl", OLD),
            api_file("demo-2.0-py3-none-any.whl", OLD, comment_text=SECRET),
        ],
        "vulnerabilities": [{"id": SECRET}],
    }
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")
    visible, hidden = jsonapi.decide_api_version(api, rules(), NOW, "1.1")
    assert [item.filename for item in visible] == ["demo-1.1-py3-none-any.whl"]
    assert hidden == []
    body = jsonapi.render_api_version(api, "1.1", visible, BASE)
    assert SECRET.encode() not in body
    assert orjson.loads(body)["info"]["version"] == "1.1"
