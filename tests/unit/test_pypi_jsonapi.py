"""The pure PyPI JSON API functions: parse → filter → render `/pypi/{project}/json` and
`/pypi/{project}/{version}/json`, and an HTML page's upload times filled from the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from mirror.ecosystems.pypi import coremetadata, jsonapi, simple
from mirror.errors import BadUpstreamDocument
from mirror.jsondepth import MAX_DEPTH
from tests.unit.pypi_samples import (
    AGE,
    API,
    BASE,
    DEMO,
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

# A JSON document one level deeper than the mirror parses.
DEEP = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)


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
    visible, hidden = jsonapi.decide_api_version(api, rules(), NOW, "1.1")
    assert [item.filename for item in visible] == ["demo-1.1-py3-none-any.whl"]
    assert len(hidden) == 1
    assert hidden[0].verdict == "quarantined"
    body = orjson.loads(jsonapi.render_api_version(api, "1.1", visible, BASE))
    assert [item["url"] for item in body["urls"]] == [
        f"{BASE}/files/demo/demo-1.1-py3-none-any.whl"
    ]
    blocked_visible, blocked = jsonapi.decide_api_version(api, rules(block("1.1")), NOW, "1.1")
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
    with pytest.raises(
        ValueError, match=r"^render_api_project needs a view with a visible release$"
    ):
        jsonapi.render_api_project(api, view, BASE)
    assert jsonapi.api_nothing_visible_message("demo", view) == (
        "no release of demo is available from this mirror yet: 1 file held in quarantine "
        "(newest demo-2.0-py3-none-any.whl, available 2026-11-25T05:00Z); 4 files blocked by "
        "block b1: compromised release "
        "(demo-1.1-py3-none-any.whl, demo-1.1-cp313-cp313-win_amd64.whl, "
        "demo-1.2b1-py3-none-any.whl and 1 more)"
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


# the page merge: upload times, sizes and sha256 from the JSON API ---------------------------


def api_of(*files: object, version: str = "1.0", **extra: Any) -> jsonapi.ApiDocument:
    raw = {"info": {"name": "demo", "version": version}, "releases": {version: list(files)}}
    return jsonapi.parse_api_document(orjson.dumps({**raw, **extra}), "demo", "http://up.test/")


def html_page(*anchors_html: str) -> simple.ProjectPage:
    body = "<html><body>" + "".join(anchors_html) + "</body></html>"
    return simple.parse_project_page(body.encode(), "demo", UPSTREAM, HOSTS)


def merged_json(page: simple.ProjectPage, api: jsonapi.ApiDocument) -> dict[str, Any]:
    """The PEP 691 page a client sees for `page` merged with `api` (everything allowed)."""
    merged = jsonapi.with_api_details(page, api)
    view = simple.filter_page(merged, rules(unknown="allow"), NOW)
    body: dict[str, Any] = orjson.loads(simple.render_json(merged, view, BASE))
    return body


def test_merge_fills_time_size_and_sha256_of_a_page_without_them() -> None:
    uploaded = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    page = html_page(f'<a href="{FILES}/demo-1.0.tar.gz">demo-1.0.tar.gz</a>')
    api = api_of(api_file("demo-1.0.tar.gz", uploaded, size=77, digests={"sha256": "AB" * 32}))
    body = merged_json(page, api)
    (item,) = body["files"]
    assert item["upload-time"] == "2025-01-02T03:04:05.123456Z"
    assert item["size"] == 77
    assert item["hashes"] == {"sha256": "ab" * 32}
    assert body["meta"]["api-version"] == "1.1"


def test_merge_keeps_what_the_page_says_itself() -> None:
    page_time = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    doc = {
        "files": [
            {
                "filename": "demo-1.0.tar.gz",
                "url": f"{FILES}/demo-1.0.tar.gz",
                "hashes": {"md5": "0a"},
                "size": 5,
                "upload-time": "2024-05-06T07:08:09Z",
            }
        ]
    }
    page = simple.parse_project_page(orjson.dumps(doc), "demo", UPSTREAM, HOSTS)
    api = api_of(api_file("demo-1.0.tar.gz", OLD, size=77))
    merged = jsonapi.with_api_details(page, api)
    item = merged.file("demo-1.0.tar.gz")
    assert item is not None
    assert item.upload_time == page_time
    assert item.upload_time_text == "2024-05-06T07:08:09Z"
    assert item.size == 5
    assert item.hashes == {"md5": "0a", "sha256": sha("demo-1.0.tar.gz")}
    assert merged.by_filename == {"demo-1.0.tar.gz": item}


def test_merge_keeps_hashes_and_unknown_times_as_they_are() -> None:
    page = html_page(
        f'<a href="{FILES}/demo-1.0.tar.gz#sha256={sha("same")}">x</a>',
        f'<a href="{FILES}/demo-1.0.zip#md5=0a">x</a>',
    )
    api = api_of(
        {**api_file("demo-1.0.tar.gz", OLD, digests={"sha256": sha("same")}),
         "upload_time": None, "upload_time_iso_8601": None},
        api_file("demo-1.0.zip", OLD, digests={"md5": "0a"}),
    )  # fmt: skip
    files = merged_json(page, api)["files"]
    assert [item["hashes"] for item in files] == [{"sha256": sha("same")}, {"md5": "0a"}]
    assert "upload-time" not in files[0]  # known nowhere
    assert files[1]["upload-time"] == OLD.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_merge_refuses_a_file_whose_sha256_differs() -> None:
    page = html_page(f'<a href="{FILES}/demo-1.0.tar.gz#sha256={sha("page")}">x</a>')
    api = api_of(api_file("demo-1.0.tar.gz", OLD, digests={"sha256": sha("other")}))
    merged = jsonapi.with_api_details(page, api)
    item = merged.file("demo-1.0.tar.gz")
    assert item is not None
    assert item.upload_time is None  # another file under the same name: its time is not ours
    assert item.size is None
    assert item.sha256 == sha("page")


def test_merge_takes_a_file_from_urls_when_no_release_lists_it() -> None:
    page = html_page(f'<a href="{FILES}/demo-2.0.tar.gz">x</a>')
    uploaded = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    api = api_of(urls=[api_file("demo-2.0.tar.gz", uploaded)])
    item = jsonapi.with_api_details(page, api).file("demo-2.0.tar.gz")
    assert item is not None
    assert item.upload_time == uploaded


def test_merge_prefers_the_release_listing_over_urls() -> None:
    page = html_page(f'<a href="{FILES}/demo-1.0.tar.gz">x</a>')
    in_releases = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    api = api_of(
        api_file("demo-1.0.tar.gz", in_releases),
        urls=[api_file("demo-1.0.tar.gz", OLD)],
    )
    item = jsonapi.with_api_details(page, api).file("demo-1.0.tar.gz")
    assert item is not None
    assert item.upload_time == in_releases


# parsing the JSON API ------------------------------------------------------------------------


def test_api_upload_time_prefers_the_iso_field_and_falls_back() -> None:
    exact = datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    api = api_of(
        api_file("demo-1.0.tar.gz", exact),
        {**api_file("demo-1.0-py3-none-any.whl", exact), "upload_time_iso_8601": None},
        {**api_file("demo-1.0.zip", exact), "upload_time_iso_8601": None, "upload_time": "x"},
    )
    by_name = api.files_by_name()
    assert by_name["demo-1.0.tar.gz"].upload_time == exact
    assert by_name["demo-1.0-py3-none-any.whl"].upload_time == exact.replace(microsecond=0)
    assert by_name["demo-1.0.zip"].upload_time is None


def test_api_without_lists_has_no_files() -> None:
    raw = {"info": {"version": "1.0"}, "releases": [1], "urls": {"a": 1}}
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")
    assert (api.releases, api.urls, api.files_by_name()) == ({}, (), {})


def test_api_parser_parses_what_it_was_built_for() -> None:
    raw = orjson.dumps(
        {"info": {"version": "1.0"},
         "urls": [{**api_file("demo-1.0.tar.gz", OLD), "url": "../f/demo-1.0.tar.gz"},
                  {**api_file("demo-1.0.zip", OLD), "url": "http://evil.test/demo-1.0.zip"}]}
    )  # fmt: skip
    api = jsonapi.ApiParser("demo", "http://up.test/pypi/demo/json", HOSTS)(raw)
    assert api.project == "demo"
    assert [item.url for item in api.urls] == ["http://up.test/pypi/f/demo-1.0.tar.gz"]
    unchecked = jsonapi.ApiParser("demo", "http://up.test/pypi/demo/json")(raw)
    assert len(unchecked.urls) == 2


def test_api_file_fields_are_checked() -> None:
    api = api_of(
        api_file("demo-1.0.tar.gz", OLD, size=True, digests={"sha256": ""}),
        api_file("demo-1.0.zip", OLD, size=12, digests={"sha256": "ABCD"}),
        api_file("demo-1.0-py3-none-any.whl", OLD, digests=["ab"]),
        {"filename": "", "url": f"{FILES}/x"},
        {"filename": "demo-1.0.egg", "url": 5},
        "not an object",
    )
    files = {item.filename: item for item in api.releases["1.0"]}
    assert sorted(files) == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "demo-1.0.zip"]
    assert files["demo-1.0.tar.gz"].size is None
    assert files["demo-1.0.tar.gz"].sha256 is None
    assert files["demo-1.0.zip"].size == 12
    assert files["demo-1.0.zip"].sha256 == "abcd"
    assert files["demo-1.0-py3-none-any.whl"].sha256 is None
    assert files["demo-1.0.zip"].url == f"{FILES}/packages/demo-1.0.zip"


def test_api_urls_are_resolved() -> None:
    raw = {
        "info": {"name": "demo", "version": "2.0"},
        "releases": {"1.0": "not a list", "1.1": []},
        "urls": [{**api_file("demo-2.0.tar.gz", OLD), "url": "../files/demo-2.0.tar.gz"}],
    }
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/pypi/demo/json")
    assert api.releases == {"1.1": ()}
    (item,) = api.urls
    assert item.url == "http://up.test/pypi/files/demo-2.0.tar.gz"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[1]", "^the upstream JSON API of demo is not an object$"),
        (b'{"info": 5}', "^the upstream JSON API of demo is not an object$"),
        (b"{nope", "^the upstream JSON API of demo is not JSON: "),
        pytest.param(
            b'{"releases": ' + DEEP + b"}", "^the upstream JSON API of demo nests ", id="deep"
        ),
    ],
)
def test_api_refuses_a_document_that_is_not_an_object(raw: bytes, message: str) -> None:
    with pytest.raises(BadUpstreamDocument, match=message):
        jsonapi.parse_api_document(raw, "demo", "http://up.test/")


def test_api_skipped_links_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    bad = {**api_file("demo-2.0.tar.gz", OLD), "url": "http://evil.test/demo-2.0.tar.gz"}
    raw = {"info": {"version": "2.0"}, "releases": {"2.0": [bad]}, "urls": [bad]}
    with caplog.at_level("WARNING", logger="mirror.ecosystems.pypi.links"):
        api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/", HOSTS)
    assert api.urls == ()
    (record,) = caplog.records
    assert record.getMessage() == (
        "skipped 1 file link(s) on the upstream JSON API of 'demo': 'demo-2.0.tar.gz': "
        "host 'evil.test' is not an allowed file host"
    )


@pytest.mark.parametrize("hosts", [HOSTS, None])
def test_api_unresolvable_links_are_logged(
    hosts: frozenset[str] | None, caplog: pytest.LogCaptureFixture
) -> None:
    raw = {"releases": {"1.0": [{**api_file("demo-1.0.zip", OLD), "url": "http://[::1/x"}]}}
    with caplog.at_level("WARNING", logger="mirror.ecosystems.pypi.links"):
        api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/", hosts)
    assert api.releases == {"1.0": ()}
    assert [record.getMessage() for record in caplog.records] == [
        "skipped 1 file link(s) on the upstream JSON API of 'demo': 'demo-1.0.zip': "
        "its URL cannot be resolved"
    ]


def test_api_without_file_hosts_keeps_every_http_file() -> None:
    raw = {"info": {"version": "1.0"}, "releases": {"1.0": [
        {**api_file("demo-1.0.tar.gz", OLD), "url": "http://elsewhere.test/demo-1.0.tar.gz"},
        {**api_file("demo-1.0.zip", OLD), "url": "http://[::1/demo-1.0.zip"},
    ]}}  # fmt: skip
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")
    assert [item.filename for item in api.releases["1.0"]] == ["demo-1.0.tar.gz"]


# which release `info` names: yanked releases last ------------------------------------------


def project_api(releases: dict[str, list[dict[str, Any]]], **info: Any) -> jsonapi.ApiDocument:
    raw = {"info": {"name": "demo", "version": "0", **info}, "releases": releases}
    return jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")


def shown_info(api: jsonapi.ApiDocument) -> dict[str, Any]:
    view = jsonapi.filter_api(api, rules(), NOW)
    body: dict[str, Any] = orjson.loads(jsonapi.render_api_project(api, view, BASE))
    return body


def test_a_fully_yanked_release_is_not_latest() -> None:
    api = project_api(
        {
            "1.0": [api_file("demo-1.0.tar.gz", OLD)],
            "2.0": [
                api_file("demo-2.0.tar.gz", OLD, yanked=True, yanked_reason="broken"),
                api_file("demo-2.0-py3-none-any.whl", OLD, yanked=True, yanked_reason="broken"),
            ],
        }
    )
    body = shown_info(api)
    assert body["info"]["version"] == "1.0"
    assert body["info"]["yanked"] is False
    assert [item["filename"] for item in body["urls"]] == ["demo-1.0.tar.gz"]


def test_a_partly_yanked_release_stays_latest() -> None:
    api = project_api(
        {
            "1.0": [api_file("demo-1.0.tar.gz", OLD)],
            "2.0": [
                api_file("demo-2.0.tar.gz", OLD, yanked=True),
                api_file("demo-2.0-py3-none-any.whl", OLD),
            ],
        }
    )
    assert shown_info(api)["info"]["version"] == "2.0"


def test_only_yanked_releases_then_the_newest_of_them() -> None:
    api = project_api(
        {
            "1.0": [api_file("demo-1.0.tar.gz", OLD, yanked=True, yanked_reason="old")],
            "2.0": [api_file("demo-2.0.tar.gz", OLD, yanked=True, yanked_reason="bad")],
        }
    )
    info = shown_info(api)["info"]
    assert info["version"] == "2.0"
    assert info["yanked"] is True
    assert info["yanked_reason"] == "bad"


def test_a_final_release_wins_over_a_newer_prerelease() -> None:
    api = project_api(
        {
            "1.0": [api_file("demo-1.0.tar.gz", OLD)],
            "2.0rc1": [api_file("demo-2.0rc1.tar.gz", OLD)],
            "0.9": [api_file("demo-0.9.tar.gz", OLD)],
        }
    )
    assert shown_info(api)["info"]["version"] == "1.0"
    only_pre = project_api({"2.0rc1": [api_file("demo-2.0rc1.tar.gz", OLD)],
                            "2.0b1": [api_file("demo-2.0b1.tar.gz", OLD)]})  # fmt: skip
    assert shown_info(only_pre)["info"]["version"] == "2.0rc1"


def test_built_info_says_only_what_every_file_agrees_on() -> None:
    agree = [
        api_file("demo-1.0.tar.gz", OLD, requires_python=">=3.9", yanked=True, yanked_reason="x"),
        api_file("demo-1.0.zip", OLD, requires_python=">=3.9", yanked=True, yanked_reason="x"),
    ]
    api = project_api({"1.0": agree})
    info = jsonapi.built_info("demo", "1.0", api.releases["1.0"])
    assert info == {
        **dict.fromkeys(jsonapi.INFO_KEYS),
        "name": "demo",
        "version": "1.0",
        "requires_python": ">=3.9",
        "yanked": True,
        "yanked_reason": "x",
    }
    differ = [
        api_file("demo-1.0.tar.gz", OLD, requires_python=">=3.9", yanked=True, yanked_reason="a"),
        api_file("demo-1.0.zip", OLD, requires_python=">=3.8", yanked=True, yanked_reason="b"),
    ]
    info = jsonapi.built_info("demo", "1.0", project_api({"1.0": differ}).releases["1.0"])
    assert (info["requires_python"], info["yanked"], info["yanked_reason"]) == (None, True, None)
    mixed = [agree[0], api_file("demo-1.0.zip", OLD, requires_python=5, yanked_reason="x")]
    info = jsonapi.built_info("demo", "1.0", project_api({"1.0": mixed}).releases["1.0"])
    assert (info["requires_python"], info["yanked"], info["yanked_reason"]) == (None, False, None)
    numeric = [api_file("demo-1.0.zip", OLD, requires_python=5)]
    info = jsonapi.built_info("demo", "1.0", project_api({"1.0": numeric}).releases["1.0"])
    assert info["requires_python"] is None
    assert jsonapi.built_info("demo", "1.0", [])["yanked"] is False


# which info and vulnerabilities are shown ----------------------------------------------------


def test_info_version_is_compared_canonically() -> None:
    api = project_api({"1.0": [api_file("demo-1.0.tar.gz", OLD)]}, version="v1.0", summary="s")
    body = shown_info(api)
    assert body["info"]["summary"] == "s"  # v1.0 is 1.0
    assert body["info"]["version"] == "1.0"
    assert jsonapi.info_version({"info": {"version": 2}}) == "2"
    assert jsonapi.info_version({"info": {"version": None}}) is None
    assert jsonapi.info_version({"info": "2.0"}) is None
    assert jsonapi.info_version({"info": {"version": "not a version"}}) == "not a version"


def test_project_vulnerabilities_and_serial_follow_the_info_source() -> None:
    releases = {"1.0": [api_file("demo-1.0.tar.gz", OLD)]}
    own = project_api(releases, version="1.0")
    raw = {**own.document, "vulnerabilities": [{"id": "V-1"}], "last_serial": 9}
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")
    view = jsonapi.filter_api(api, rules(), NOW)
    body = orjson.loads(jsonapi.render_api_project(api, view, BASE))
    assert body["vulnerabilities"] == [{"id": "V-1"}]
    assert body["last_serial"] == 9
    assert list(body) == ["info", "last_serial", "releases", "urls", "vulnerabilities"]
    # A release document of the latest release brings its own vulnerabilities.
    other = {**raw, "info": {"name": "demo", "version": "0.1"}, "last_serial": "9"}
    api = jsonapi.parse_api_document(orjson.dumps(other), "demo", "http://up.test/")
    release_doc = {"info": {"version": "1.0", "summary": "s"}, "vulnerabilities": [{"id": "V-2"}]}
    body = orjson.loads(jsonapi.render_api_project(api, view, BASE, release_doc))
    assert body["vulnerabilities"] == [{"id": "V-2"}]
    assert body["info"]["summary"] == "s"
    assert "last_serial" not in body
    # Neither: no vulnerabilities at all (the upstream's are of another release).
    body = orjson.loads(jsonapi.render_api_project(api, view, BASE, {"info": "x"}))
    assert "vulnerabilities" not in body


def test_version_document_vulnerabilities_only_with_its_own_info() -> None:
    files = [api_file("demo-1.1-py3-none-any.whl", OLD)]
    raw = {"info": {"version": "1.1"}, "urls": files, "vulnerabilities": [{"id": "V"}],
           "last_serial": 3, "releases": {"1.1": files}}  # fmt: skip
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")
    visible, _hidden = jsonapi.decide_api_version(api, rules(), NOW, "1.1")
    body = orjson.loads(jsonapi.render_api_version(api, "1.1", visible, BASE))
    assert list(body) == ["info", "last_serial", "urls", "vulnerabilities"]
    assert body["last_serial"] == 3
    assert body["info"] == {"version": "1.1"}
    assert body["vulnerabilities"] == [{"id": "V"}]
    body = orjson.loads(jsonapi.render_api_version(api, "1.2", visible, BASE))
    assert "vulnerabilities" not in body
    assert body["info"]["version"] == "1.2"
    assert body["info"]["name"] == "demo"


def test_version_document_decides_nothing_of_another_release() -> None:
    raw = {"urls": [api_file("demo-1.1-py3-none-any.whl", OLD), api_file("demo.tar.gz", OLD)]}
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")
    visible, hidden = jsonapi.decide_api_version(api, rules(), NOW, "1.2")
    assert [item.filename for item in visible] == ["demo.tar.gz"]  # no version in its name
    assert hidden == []


def test_version_document_files_are_decided_as_the_release() -> None:
    raw = {"info": {"version": "v1.1"}, "urls": [api_file("demo-1.1-py3-none-any.whl", OLD)]}
    api = jsonapi.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")
    visible, blocked = jsonapi.decide_api_version(api, rules(block("==1.1")), NOW, "v1.1")
    assert visible == []
    assert [decision.version for decision in blocked] == ["1.1"]
    assert [decision.filename for decision in blocked] == ["demo-1.1-py3-none-any.whl"]


def test_nothing_visible_message_counts_each_kind() -> None:
    api = project_api(
        {
            "1.0": [api_file("demo-1.0.tar.gz", OLD), api_file("demo-1.0.zip", OLD)],
            "2.0": [api_file("demo-2.0.tar.gz", NOW - timedelta(hours=1))],
        }
    )
    view = jsonapi.filter_api(api, rules(block("<2")), NOW)
    assert jsonapi.api_nothing_visible_message("demo", view) == (
        "no release of demo is available from this mirror yet: 1 file held in quarantine "
        "(newest demo-2.0.tar.gz, available 2026-11-25T09:00Z); 2 files blocked by block b1: "
        "compromised release "
        "(demo-1.0.tar.gz, demo-1.0.zip)"
    )
    view = jsonapi.filter_api(api, rules(block("<3")), NOW)
    assert jsonapi.api_nothing_visible_message("demo", view) == (
        "no release of demo is available from this mirror yet: 3 files blocked by block b1: "
        "compromised release "
        "(demo-1.0.tar.gz, demo-1.0.zip, demo-2.0.tar.gz)"
    )
    empty = jsonapi.filter_api(project_api({}), rules(), NOW)
    assert jsonapi.api_nothing_visible_message("demo", empty) == (
        "the upstream index lists no files for demo"
    )


# composed documents, `info` from core metadata, the notice -----------------------------------

METADATA = coremetadata.parse_core_metadata(
    b"Metadata-Version: 2.1\nName: Demo\nVersion: 1.1\nSummary: one one\n"
    b"Requires-Dist: idna>=2\nRequires-Python: >=3.9\n\nThe body.\n",
    "demo-1.1-py3-none-any.whl",
)


def test_info_is_built_from_the_releases_core_metadata() -> None:
    api = jsonapi.parse_api_document(orjson.dumps(secret_api()), "demo", "http://up.test/")
    view = jsonapi.filter_api(api, rules(), NOW)
    raw = jsonapi.render_api_project(api, view, BASE, None, METADATA)
    assert SECRET.encode() not in raw
    info = orjson.loads(raw)["info"]
    assert (info["name"], info["version"], info["summary"]) == ("Demo", "1.1", "one one")
    assert info["requires_dist"] == ["idna>=2"]
    assert info["requires_python"] == ">=3.9"  # the metadata's, over the files'
    assert info["description"] == "The body.\n"
    assert info["release_url"] is None
    assert set(jsonapi.INFO_KEYS) <= set(info)


def test_core_metadata_of_another_release_or_project_is_not_used() -> None:
    assert jsonapi.metadata_describes(METADATA, "demo", "1.01")
    assert not jsonapi.metadata_describes(METADATA, "demo", "2.0")
    assert not jsonapi.metadata_describes(METADATA, "other", "1.1")
    api = jsonapi.parse_api_document(orjson.dumps(secret_api()), "demo", "http://up.test/")
    view = jsonapi.filter_api(api, rules(block("==1.1")), NOW)
    assert view.latest == "1.0"
    info = orjson.loads(jsonapi.render_api_project(api, view, BASE, None, METADATA))["info"]
    assert info["summary"] is None
    assert info["version"] == "1.0"


def test_a_project_document_is_composed_from_a_simple_page() -> None:
    page = simple.parse_project_page(orjson.dumps(DEMO), "demo", UPSTREAM, HOSTS)
    api = jsonapi.document_from_page(page)
    assert sorted(api.releases) == ["0.1", "0.9", "1.0", "1.1", "1.2", "2.0"]
    assert api.document == {"info": {}, "last_serial": 42}
    view = jsonapi.filter_api(api, rules(), NOW)
    assert view.latest == "1.2"
    body = orjson.loads(jsonapi.render_api_project(api, view, BASE, None, None))
    assert body["info"]["version"] == "1.2"
    assert body["info"]["requires_python"] == "<4,>=3.9"
    (sdist, wheel) = body["releases"]["1.0"]
    assert sdist == {
        "filename": "demo-1.0.tar.gz",
        "packagetype": "sdist",
        "digests": {"sha256": sha("demo-1.0.tar.gz")},
        "size": 1234,
        "upload_time": OLD.strftime("%Y-%m-%dT%H:%M:%S"),
        "upload_time_iso_8601": page.file("demo-1.0.tar.gz").upload_time_text,  # type: ignore[union-attr]
        "url": f"{BASE}/files/demo/demo-1.0.tar.gz",
        "requires_python": ">=3.8",
        "yanked": True,
        "yanked_reason": "broken build",
    }
    assert wheel["packagetype"] == "bdist_wheel"
    assert wheel["yanked"] is False
    assert wheel["yanked_reason"] is None


def test_a_release_is_cut_from_a_project_document() -> None:
    api = jsonapi.parse_api_document(orjson.dumps(API), "demo", "http://up.test/")
    cut = jsonapi.release_document(api, "1.01")
    assert cut is not None
    assert [item.filename for item in cut.urls] == [
        "demo-1.1-py3-none-any.whl",
        "demo-1.1-cp313-cp313-win_amd64.whl",
    ]
    assert cut.releases == {}
    assert jsonapi.info_for(cut, "1.1") is None  # the project's info is of 2.0
    assert jsonapi.release_document(api, "9.9") is None


def test_the_notice_says_what_is_held_back() -> None:
    api = jsonapi.parse_api_document(orjson.dumps(API), "demo", "http://up.test/")
    view = jsonapi.filter_api(api, rules(block("==1.0")), NOW)
    assert jsonapi.render_notice("demo", view) == (
        "demo: 2 files held in quarantine (newest demo-1.1-cp313-cp313-win_amd64.whl, "
        "available 2026-11-25T09:00Z); 1 file blocked by block b1: compromised release "
        "(demo-1.0-py3-none-any.whl)"
    )
    assert jsonapi.render_notice("demo", jsonapi.filter_api(api, rules(), NOW + AGE * 2)) is None
    visible, hidden = jsonapi.decide_api_version(
        jsonapi.release_document(api, "1.1") or api, rules(), NOW, "1.1"
    )
    one = jsonapi.version_view("1.1", visible, hidden)
    assert (one.latest, one.valid_until) == ("1.1", NOW - timedelta(hours=1) + AGE)
    assert jsonapi.render_notice("demo", one) == (
        "demo: 1 file held in quarantine "
        "(newest demo-1.1-cp313-cp313-win_amd64.whl, available 2026-11-25T09:00Z)"
    )
    none = jsonapi.version_view("1.1", [], hidden)
    assert (none.latest, none.releases) == (None, {})
    assert jsonapi.render_notice("d\u00e9mo", one) == (
        "d?mo: 1 file held in quarantine "
        "(newest demo-1.1-cp313-cp313-win_amd64.whl, available 2026-11-25T09:00Z)"
    )


def test_a_page_file_says_what_the_page_knows_and_null_for_the_rest() -> None:
    bare = simple.DistFile(
        filename="demo-1.0.tar.gz", url=f"{FILES}/demo-1.0.tar.gz", version="1.0", hashes={}
    )
    timed = simple.DistFile(
        filename="demo-1.0-py3-none-any.whl",
        url=f"{FILES}/demo-1.0-py3-none-any.whl",
        version="1.0",
        hashes={"sha256": sha("w")},
        size=7,
        upload_time=OLD,  # from the JSON API, no text of the page's own
    )
    page = simple.ProjectPage(
        project="demo",
        files=(bare, timed),
        by_filename={item.filename: item for item in (bare, timed)},
    )
    api = jsonapi.document_from_page(page)
    assert (api.urls, api.document) == ((), {"info": {}})
    first, second = api.releases["1.0"]
    assert (first.raw["digests"], first.raw["upload_time"], first.raw["size"]) == ({}, None, None)
    assert first.raw["upload_time_iso_8601"] is None
    assert (second.url, second.size, second.sha256) == (timed.url, 7, sha("w"))
    assert second.upload_time == OLD
    assert second.raw["upload_time"] == OLD.strftime("%Y-%m-%dT%H:%M:%S")
    assert second.raw["upload_time_iso_8601"] == OLD.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_built_info_keeps_the_release_and_the_files_requires_python() -> None:
    files = jsonapi.parse_api_document(orjson.dumps(API), "demo", "http://up.test/").releases
    metadata = coremetadata.parse_core_metadata(
        b"Name: demo\nVersion: 1.01\nSummary: s\n", "demo.whl"
    )
    one = [
        jsonapi.ApiFile(**{**vars_of(item), "raw": {"requires_python": ">=3"}})
        for item in files["1.1"]
    ]
    info = jsonapi.built_info("demo", "1.1", one, metadata)
    assert (info["version"], info["summary"], info["requires_python"]) == ("1.1", "s", ">=3")


def vars_of(item: jsonapi.ApiFile) -> dict[str, Any]:
    return {name: getattr(item, name) for name in item.__slots__}


def test_a_version_view_names_only_what_it_has() -> None:
    api = jsonapi.parse_api_document(orjson.dumps(API), "demo", "http://up.test/")
    cut = jsonapi.release_document(api, "1.0")
    assert cut is not None
    visible, hidden = jsonapi.decide_api_version(cut, rules(), NOW, "1.0")
    view = jsonapi.version_view("1.0", visible, hidden)
    assert view.releases == {"1.0": tuple(visible)}
    assert (view.held, view.valid_until, view.latest) == ({}, None, "1.0")
