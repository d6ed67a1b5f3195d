"""The pure PyPI simple-index functions: parse → filter → render project pages and the
project list on realistic pages, hostile links included."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from mirror.ecosystems.pypi import links, simple
from mirror.errors import BadUpstreamDocument
from mirror.jsondepth import MAX_DEPTH
from tests.unit.pypi_samples import (
    AGE,
    BASE,
    FILES,
    HOSTILE_HREFS,
    HOSTS,
    NOW,
    OLD,
    UPSTREAM,
    UPSTREAM_HTML,
    anchors,
    block,
    entry,
    hostile_html,
    json_view,
    parse,
    rules,
    sha,
    ts,
)

# A JSON document one level deeper than the mirror parses.
DEEP = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)

# parse ---------------------------------------------------------------------------------------


def test_parse_json_keeps_fields_and_drops_files_on_other_hosts() -> None:
    page = parse()
    assert page.dropped == ("demo-0.8.tar.gz",)
    assert page.last_serial == 42
    sdist = page.file("demo-1.0.tar.gz")
    assert sdist is not None
    assert sdist.version == "1.0"
    assert sdist.yanked == "broken build"
    assert sdist.upload_time == OLD
    assert sdist.sha256 == sha("demo-1.0.tar.gz")
    assert sdist.metadata_digests()[0].hexdigest == sha("demo-1.0.tar.gz.metadata")
    assert page.file("demo-2004d.tar.gz") is not None
    assert page.file("demo-2004d.tar.gz").version is None  # type: ignore[union-attr]
    assert page.file("demo-0.1.win32.exe").version == "0.1"  # type: ignore[union-attr]


def test_parse_resolves_relative_urls_against_the_page() -> None:
    doc = {"files": [{**entry("demo-1.0.tar.gz", OLD), "url": "../../files/demo-1.0.tar.gz"}]}
    page = parse(doc)
    assert page.files[0].url == "http://up.test/files/demo-1.0.tar.gz"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "^the upstream page of demo is not JSON: "),
        (b'{"files": 5}', "^the upstream page of demo has no list of files$"),
    ],
)
def test_parse_refuses_broken_json(raw: bytes, message: str) -> None:
    with pytest.raises(BadUpstreamDocument, match=message):
        simple.parse_project_page(raw, "demo", UPSTREAM, HOSTS)


def test_parse_html_page() -> None:
    page = simple.parse_project_page(UPSTREAM_HTML, "demo", UPSTREAM, HOSTS)
    first, second, third = page.files
    assert first.url == f"{FILES}/packages/ab/demo-1.0.tar.gz"
    assert first.requires_python == ">=3.8"
    assert first.yanked is True
    assert first.core_metadata is False
    assert first.upload_time is None
    assert second.url == "http://up.test/packages/cd/demo-1.1-py3-none-any.whl"
    assert second.core_metadata == {"sha256": sha("m")}
    assert second.upload_time == NOW - timedelta(days=30)
    assert third.url == "http://up.test/simple/demo/demo-1.2.tar.gz"
    assert third.hashes == {"md5": "0123"}
    assert third.yanked == "bad <release>"
    assert page.last_serial == 7
    assert page.missing_upload_times


def test_html_base_href_is_honoured() -> None:
    raw = b'<html><head><base href="http://files.test/base/"></head><body>'
    raw += b'<a href="demo-1.0.tar.gz">demo-1.0.tar.gz</a></body></html>'
    page = simple.parse_project_page(raw, "demo", UPSTREAM, HOSTS)
    assert page.files[0].url == "http://files.test/base/demo-1.0.tar.gz"


# filter and render JSON ----------------------------------------------------------------------


def test_filter_hides_each_file_by_its_own_upload_time() -> None:
    view, body = json_view(parse())
    shown = [item["filename"] for item in body["files"]]
    assert shown == [
        "demo-1.0.tar.gz",
        "demo-1.0-py3-none-any.whl",
        "demo-1.1-py3-none-any.whl",
        "demo-1.2-py3-none-any.whl",
        "demo-0.1.win32.exe",
    ]
    assert body["versions"] == ["0.1", "1.0", "1.1", "1.2"]
    assert [held.filename for held in view.quarantined] == [
        "demo-1.1-cp313-cp313-manylinux_2_17_x86_64.whl",
        "demo-2.0-py3-none-any.whl",
        "demo-0.9.tar.gz",
    ]
    assert view.unattributed == ("demo-2004d.tar.gz",)
    assert view.valid_until == NOW - timedelta(hours=5) + AGE


def test_json_render_keeps_every_field_and_rewrites_urls() -> None:
    _view, body = json_view(parse())
    assert body["meta"] == {"api-version": "1.1"}
    assert body["name"] == "demo"
    sdist = body["files"][0]
    assert sdist == {
        "filename": "demo-1.0.tar.gz",
        "url": f"{BASE}/files/demo/demo-1.0.tar.gz",
        "hashes": {"sha256": sha("demo-1.0.tar.gz")},
        "requires-python": ">=3.8",
        "yanked": "broken build",
        "core-metadata": {"sha256": sha("demo-1.0.tar.gz.metadata")},
        "dist-info-metadata": {"sha256": sha("demo-1.0.tar.gz.metadata")},
        "size": 1234,
        "upload-time": ts(OLD),
    }
    exe = body["files"][-1]
    assert "core-metadata" not in exe
    assert "dist-info-metadata" not in exe


def test_blocked_version_is_hidden_with_all_its_files() -> None:
    view, body = json_view(parse(), rules(block("==1.0")))
    assert all(not item["filename"].startswith("demo-1.0") for item in body["files"])
    assert "1.0" not in body["versions"]
    assert sorted(str(held.filename) for held in view.blocked) == [
        "demo-1.0-py3-none-any.whl",
        "demo-1.0.tar.gz",
    ]
    notice = simple.render_notice("demo", view)
    assert notice is not None
    assert (
        "2 files blocked by block b1: compromised release (demo-1.0.tar.gz, "
        "demo-1.0-py3-none-any.whl)" in notice
    )


def test_all_files_hidden_gives_an_empty_page() -> None:
    doc = {"files": [entry("demo-3.0-py3-none-any.whl", NOW - timedelta(minutes=1))]}
    view, body = json_view(parse(doc))
    assert body["files"] == []
    assert body["versions"] == []
    assert simple.render_notice("demo", view) == (
        "demo: 1 file held in quarantine (newest demo-3.0-py3-none-any.whl, available "
        "2026-11-25T09:59Z)"
    )


def test_unknown_upload_time_is_allowed_only_when_configured() -> None:
    view, _body = json_view(parse(), rules(unknown="allow"))
    assert "demo-0.9.tar.gz" in [item.filename for item in view.visible]


def test_api_version_drops_to_1_0_without_sizes() -> None:
    page = simple.parse_project_page(UPSTREAM_HTML, "demo", UPSTREAM, HOSTS)
    _view, body = json_view(page, rules(unknown="allow"))
    assert body["meta"]["api-version"] == "1.0"
    assert "size" not in body["files"][0]


# render HTML ---------------------------------------------------------------------------------


def test_html_render_escapes_and_keeps_pep_503_658_592_fields() -> None:
    page = parse()
    view = simple.filter_page(page, rules(), NOW)
    body = simple.render_html(page, view, BASE)
    assert b"&lt;4,&gt;=3.9" in body
    parsed = anchors(body)
    assert parsed.meta == {"name": "pypi:repository-version", "content": "1.1"}
    by_name = {str(a["href"]).split("#")[0].rsplit("/", 1)[-1]: a for a in parsed.anchors}
    sdist = by_name["demo-1.0.tar.gz"]
    assert sdist["href"] == f"{BASE}/files/demo/demo-1.0.tar.gz#sha256={sha('demo-1.0.tar.gz')}"
    assert sdist["data-yanked"] == "broken build"
    assert sdist["data-requires-python"] == ">=3.8"
    metadata = f"sha256={sha('demo-1.0.tar.gz.metadata')}"
    assert sdist["data-core-metadata"] == sdist["data-dist-info-metadata"] == metadata
    assert by_name["demo-1.2-py3-none-any.whl"]["data-requires-python"] == "<4,>=3.9"
    assert "data-yanked" not in by_name["demo-1.1-py3-none-any.whl"]
    assert "demo-2.0-py3-none-any.whl" not in by_name


def test_html_render_of_hostile_attributes_is_escaped() -> None:
    doc = {"files": [entry("demo-1.0-py3-none-any.whl", OLD, yanked='"><script>x</script>')]}
    page = parse(doc)
    body = simple.render_html(page, simple.filter_page(page, rules(), NOW), BASE)
    assert b"<script>" not in body
    assert anchors(body).anchors[0]["data-yanked"] == '"><script>x</script>'


# project list --------------------------------------------------------------------------------


def test_root_in_both_forms() -> None:
    raw = orjson.dumps({"meta": {}, "projects": [{"name": "Foo_Bar"}, {"name": "bad name"}]})
    projects = simple.parse_root(raw)
    assert projects == ("Foo_Bar",)
    html_names = simple.parse_root(b'<a href="/simple/foo/">foo</a><a href="x">Zed</a>')
    assert html_names == ("foo", "Zed")
    body = simple.render_root(projects, "text-html", BASE)
    assert anchors(body).anchors == [{"href": f"{BASE}/simple/foo-bar/"}]
    assert orjson.loads(simple.render_root(projects, "json", BASE))["projects"] == [
        {"name": "Foo_Bar"}
    ]


def test_large_page_filters_and_renders() -> None:
    doc = {
        "files": [
            entry(f"demo-{major}.{minor}-py3-none-any.whl", OLD + timedelta(hours=minor))
            for major in range(50)
            for minor in range(60)
        ]
    }
    page = parse(doc)
    _view, body = json_view(page)
    assert len(body["files"]) == 3000
    assert body["versions"][:3] == ["0.0", "0.1", "0.2"]
    assert body["versions"][-1] == "49.59"


# hostile links -------------------------------------------------------------------------------


def test_hostile_links_on_an_html_page_are_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="mirror.ecosystems.pypi.links"):
        page = simple.parse_project_html(hostile_html(), "demo", UPSTREAM, HOSTS)
    assert [(item.filename, item.url) for item in page.files] == [
        ("demo-1.0.tar.gz", f"{FILES}/packages/demo-1.0.tar.gz"),
        ("demo-1.1.tar.gz", "http://up.test/packages/demo-1.1.tar.gz"),
    ]
    assert len(page.dropped) == len(HOSTILE_HREFS)
    records = [record for record in caplog.records if "skipped" in record.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "skipped 8 file link(s) on the upstream page of 'demo'" in message
    assert "'http://[::1/demo-0.5.tar.gz': its URL cannot be resolved" in message
    assert "\n" not in message
    assert "\x1b" not in message


@pytest.mark.parametrize("base", ["file:///", "http://[::1/", "javascript:x"])
def test_a_hostile_base_href_never_makes_a_file_fetchable(base: str) -> None:
    page = simple.parse_project_html(hostile_html(base), "demo", UPSTREAM, HOSTS)
    assert all(links.link_problem(item.url, HOSTS) is None for item in page.files)
    assert "demo-1.0.tar.gz" in page.by_filename  # absolute links still serve


def test_hostile_links_on_a_json_page_are_skipped() -> None:
    doc = {
        "files": [
            {**entry(f"demo-0.{number}.tar.gz", OLD), "url": href}
            for number, href in enumerate(HOSTILE_HREFS)
        ]
        + [entry("demo-1.0.tar.gz", OLD)]
    }
    page = parse(doc)
    assert [item.filename for item in page.files] == ["demo-1.0.tar.gz"]
    assert len(page.dropped) == len(HOSTILE_HREFS)


# nothing visible -----------------------------------------------------------------------------


def test_no_visible_file_message_says_why() -> None:
    doc = {"files": [entry("demo-3.0-py3-none-any.whl", NOW - timedelta(minutes=1))]}
    page = parse(doc)
    view = simple.filter_page(page, rules(), NOW)
    assert simple.no_visible_file_message("demo", view) == (
        "no file of demo is available from this mirror yet: demo: 1 file held in quarantine "
        "(newest demo-3.0-py3-none-any.whl, available 2026-11-25T09:59Z)"
    )
    empty = simple.filter_page(parse({"files": []}), rules(), NOW)
    assert simple.no_visible_file_message("demo", empty) == (
        "the upstream index lists no files for demo"
    )


# parse details: what a client is later shown ----------------------------------------------


def page_json(files: list[Any], **extra: Any) -> simple.ProjectPage:
    return simple.parse_project_page(
        orjson.dumps({"files": files, **extra}), "demo", UPSTREAM, HOSTS
    )


def shown(page: simple.ProjectPage) -> dict[str, Any]:
    """The PEP 691 page of `page`, every file allowed."""
    view = simple.filter_page(page, rules(unknown="allow"), NOW)
    body: dict[str, Any] = orjson.loads(simple.render_json(page, view, BASE))
    return body


def test_json_page_fields_are_checked_one_by_one() -> None:
    files = [
        ["not", "an", "object"],
        {"filename": "", "url": f"{FILES}/a/x"},
        {"filename": "demo-1.4.tar.gz"},
        {"filename": "demo-1.0.tar.gz", "url": f"{FILES}/a/demo-1.0.tar.gz",
         "hashes": {"SHA256": "AB" * 32, "md5": "xyz", "blake2b": "", "sha1": 5,
                    "sha512": "ABX"},
         "requires-python": "  ", "yanked": "", "core-metadata": {"sha256": "CD" * 32},
         "size": True, "upload-time": "yesterday"},
        {"filename": "demo-1.1.tar.gz", "url": f"{FILES}/a/demo-1.1.tar.gz", "hashes": [1],
         "requires-python": 3, "yanked": 1, "dist-info-metadata": True, "size": 0,
         "upload-time": "2025-01-02T03:04:05Z"},
        {"filename": "demo-1.2.tar.gz", "url": f"{FILES}/a/demo-1.2.tar.gz",
         "core-metadata": "yes", "dist-info-metadata": {"sha256": "ef"}},
        {"filename": "demo-1.3.tar.gz", "url": f"{FILES}/a/demo-1.3.tar.gz",
         "core-metadata": {"md5": ""}},
    ]  # fmt: skip
    page = page_json(files)
    first, second, third, fourth = page.files
    assert first.hashes == {"sha256": "ab" * 32}
    assert first.requires_python is None
    assert first.yanked is True  # an empty reason still yanks
    assert first.core_metadata == {"sha256": "cd" * 32}
    assert first.size is None
    assert first.upload_time is None
    assert first.upload_time_text is None
    assert second.hashes == {}
    assert second.requires_python is None
    assert second.yanked is True
    assert second.core_metadata is True
    assert second.size == 0
    assert second.upload_time_text == "2025-01-02T03:04:05Z"
    assert third.core_metadata is False  # core-metadata wins, and "yes" is not a boolean
    assert fourth.core_metadata is True  # a dict without a usable hash: present, no digest
    assert fourth.metadata_digests() == ()
    assert [item["filename"] for item in shown(page)["files"]] == [
        "demo-1.0.tar.gz", "demo-1.1.tar.gz", "demo-1.2.tar.gz", "demo-1.3.tar.gz"
    ]  # fmt: skip


def test_json_page_serial_and_duplicates() -> None:
    twice = [entry("demo-1.0.tar.gz", OLD, size=1), entry("demo-1.0.tar.gz", OLD, size=2),
             entry("demo-1.1.tar.gz", OLD, size=3)]  # fmt: skip
    page = page_json(twice, meta={"_last-serial": "7"})
    assert page.last_serial is None
    assert [item.size for item in page.files] == [1, 3]
    assert page_json([], meta=[1]).last_serial is None
    assert page_json([entry("demo-1.0.tar.gz", OLD)]).missing_upload_times is False
    assert page_json([], meta={"_last-serial": 0}).last_serial == 0


def test_json_page_without_files_is_empty_and_unresolvable_urls_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert simple.parse_project_page(b'  {"name": "demo"}', "demo", UPSTREAM, HOSTS).files == ()
    spaced = b"\n  " + orjson.dumps({"files": [entry("demo-1.0.tar.gz", OLD)]})
    assert len(simple.parse_project_page(spaced, "demo", UPSTREAM, HOSTS).files) == 1
    with caplog.at_level("WARNING", logger="mirror.ecosystems.pypi.links"):
        page = page_json([{**entry("demo-1.0.tar.gz", OLD), "url": "http://[::1/x"}])
    assert page.files == ()
    assert page.dropped == ("demo-1.0.tar.gz",)
    assert [record.getMessage() for record in caplog.records] == [
        "skipped 1 file link(s) on the upstream page of 'demo': 'demo-1.0.tar.gz': "
        "its URL cannot be resolved"
    ]


def test_an_empty_hash_is_no_digest() -> None:
    item = simple.DistFile(
        filename="demo-1.0.tar.gz", url=f"{FILES}/demo-1.0.tar.gz", version="1.0",
        hashes={"sha256": "", "sha512": "AB"}, core_metadata={"sha256": ""},
    )  # fmt: skip
    assert [(digest.algorithm, digest.hexdigest) for digest in item.digests()] == [("sha512", "ab")]
    assert item.metadata_digests() == ()


def test_digests_prefer_sha512_and_skip_empty_ones() -> None:
    page = page_json([
        entry("demo-1.0.tar.gz", OLD, hashes={"sha256": "AA", "sha512": "BB"},
              **{"core-metadata": {"sha256": "cc"}}),
        entry("demo-1.1.tar.gz", OLD, hashes={"md5": "aa"}, **{"core-metadata": False}),
    ])  # fmt: skip
    first, second = page.files
    assert [(d.algorithm, d.hexdigest) for d in first.digests()] == [
        ("sha512", "bb"), ("sha256", "aa")
    ]  # fmt: skip
    assert [(d.algorithm, d.hexdigest) for d in first.metadata_digests()] == [("sha256", "cc")]
    assert second.digests() == ()
    assert second.sha256 is None
    assert first.has_metadata
    assert not second.has_metadata
    assert second.metadata_digests() == ()


HTML_FIELDS = f"""<html><body>
<a>no href</a><a href="">empty</a><a href="{FILES}/dir/">a directory</a>
<a href="{FILES}/demo-1.0.tar.gz#SHA256=ABCD" data-yanked data-core-metadata
   data-requires-python=" ">demo-1.0.tar.gz</a>
<a href="{FILES}/demo-1.1.tar.gz" data-dist-info-metadata="true">x</a>
<a href="{FILES}/demo-1.2.tar.gz" data-core-metadata="sha256=EF"
   data-dist-info-metadata="sha256=00">x</a>
<a href="{FILES}/demo-1.3.tar.gz" data-core-metadata="md5=">x</a>
<a href="{FILES}/demo-1.4.tar.gz#sha256=" data-yanked="">x</a>
<a href="{FILES}/some%20dir/demo-1.5.tar.gz" data-upload-time="2025-01-02T03:04:05Z">x</a>
<a href="{FILES}/demo-1.6.tar.gz#sha256=ab=cd" data-core-metadata="sha256=ab=cd">x</a>
<a href="{FILES}/demo-1.7.tar.gz#=ab" data-dist-info-metadata="sha256=12">x</a>
<!-- SERIAL 12a --><!--SERIAL 9-->
</body></html>""".encode()


def test_html_page_fields() -> None:
    page = simple.parse_project_page(HTML_FIELDS, "demo", UPSTREAM, HOSTS)
    assert page.last_serial == 9
    names = [item.filename for item in page.files]
    assert names == [f"demo-1.{minor}.tar.gz" for minor in range(8)]
    first, second, third, fourth, fifth, sixth, seventh, eighth = page.files
    assert first.hashes == {"sha256": "abcd"}
    assert first.yanked is True
    assert first.core_metadata is True
    assert first.requires_python is None
    assert second.core_metadata is True
    assert second.yanked is False
    assert third.core_metadata == {"sha256": "ef"}
    assert fourth.core_metadata is True
    assert fifth.hashes == {}
    assert fifth.yanked is True
    assert sixth.url == f"{FILES}/some%20dir/demo-1.5.tar.gz"
    assert shown(page)["files"][5]["upload-time"] == "2025-01-02T03:04:05Z"  # as written
    assert seventh.hashes == {}  # not one algorithm=digest pair
    assert seventh.core_metadata is True
    assert eighth.hashes == {}  # no algorithm
    assert eighth.core_metadata == {"sha256": "12"}  # the older attribute alone


def test_html_that_the_parser_refuses_is_a_bad_upstream_document() -> None:
    with pytest.raises(BadUpstreamDocument) as caught:
        simple.parse_project_page(b"<![foo]>", "demo", UPSTREAM, HOSTS)
    assert str(caught.value) == (
        "the upstream page of demo is not HTML: unknown status keyword 'foo' in marked section"
    )


def test_html_that_is_not_utf_8_is_read_anyway() -> None:
    raw = b'<a href="http://files.test/demo-1.0.tar.gz">\xff</a>'
    page = simple.parse_project_page(raw, "demo", UPSTREAM, HOSTS)
    assert [item.filename for item in page.files] == ["demo-1.0.tar.gz"]
    assert simple.parse_root(b"<a>\xff</a><a>ok</a>") == ("ok",)


def test_html_legacy_files_and_bad_upload_times() -> None:
    raw = (
        f'<a href="{FILES}/demo-0.1.win32.exe" data-upload-time="yesterday">x</a>'
        f'<a href="{FILES}/other-0.2.win32.exe">x</a>'
    ).encode()
    page = simple.parse_project_page(raw, "demo", UPSTREAM, HOSTS)
    assert [item.version for item in page.files] == ["0.1", None]  # by the project's name
    assert page.files[0].upload_time is None
    assert "upload-time" not in shown(page)["files"][0]  # never an unreadable time


def test_html_serial_comment_must_be_a_number() -> None:
    raw = b'<a href="http://files.test/demo-1.0.tar.gz">x</a><!--SERIAL x-->'
    assert simple.parse_project_page(raw, "demo", UPSTREAM, HOSTS).last_serial is None
    raw = b"<!-- SERIAL 5 -->"
    assert simple.parse_project_page(raw, "demo", UPSTREAM, HOSTS).last_serial == 5


def test_html_first_base_href_wins_and_anchor_text_is_kept_for_the_root() -> None:
    raw = (
        b'<base href="http://files.test/one/"><base href="http://files.test/two/">'
        b'<a href="demo-1.0.tar.gz">x</a>'
    )
    page = simple.parse_project_page(raw, "demo", UPSTREAM, HOSTS)
    assert page.files[0].url == "http://files.test/one/demo-1.0.tar.gz"
    raw = b'<base><base href="http://files.test/two/"><a href="demo-1.0.tar.gz">x</a>'
    page = simple.parse_project_page(raw, "demo", UPSTREAM, HOSTS)
    assert page.files[0].url == "http://files.test/two/demo-1.0.tar.gz"
    assert simple.parse_root(b"<a href='/a/'> Foo <b>Bar</b> </a>x<a>b</a>") == ("b",)
    assert simple.parse_root(b"<a href='/a/'> spaced </a>") == ("spaced",)
    assert simple.parse_root(b"<a>foo<b>bar</b>baz</a>") == ("foobarbaz",)
    assert simple.parse_root(b"<a>foo&#46;bar</a>") == ("foo.bar",)  # references resolved
    assert simple.parse_root(b"stray</a><a>ok</a>after</a>") == ("ok",)


# yanked files: shown, and said to be yanked ------------------------------------------------


def test_yanked_is_rendered_in_both_forms() -> None:
    page = page_json([
        entry("demo-1.0.tar.gz", OLD, yanked="bad build"),
        entry("demo-1.1.tar.gz", OLD, yanked=True),
        entry("demo-1.2.tar.gz", OLD, yanked=False),
    ])  # fmt: skip
    assert [item["yanked"] for item in shown(page)["files"]] == ["bad build", True, False]
    view = simple.filter_page(page, rules(), NOW)
    found = anchors(simple.render_html(page, view, BASE)).anchors
    assert [item.get("data-yanked", "absent") for item in found] == ["bad build", "", "absent"]


# render details ----------------------------------------------------------------------------


def test_json_render_leaves_out_what_is_unknown() -> None:
    files = [{"filename": "demo-1.0.tar.gz", "url": f"{FILES}/demo-1.0.tar.gz"}]
    body = shown(page_json(files))
    assert body == {
        "meta": {"api-version": "1.0"},
        "name": "demo",
        "files": [
            {
                "filename": "demo-1.0.tar.gz",
                "url": f"{BASE}/files/demo/demo-1.0.tar.gz",
                "hashes": {},
                "yanked": False,
            }
        ],
        "versions": ["1.0"],
    }


def test_json_render_of_metadata_true() -> None:
    page = page_json([entry("demo-1.0.tar.gz", OLD, **{"core-metadata": True})])
    item = shown(page)["files"][0]
    assert item["core-metadata"] is True
    assert item["dist-info-metadata"] is True


def test_html_render_of_a_file_without_hash_or_metadata() -> None:
    page = page_json([{"filename": "demo-1.0.tar.gz", "url": f"{FILES}/demo-1.0.tar.gz",
                       "core-metadata": True}])  # fmt: skip
    view = simple.filter_page(page, rules(unknown="allow"), NOW)
    body = simple.render_html(page, view, BASE)
    assert anchors(body).anchors == [
        {
            "href": f"{BASE}/files/demo/demo-1.0.tar.gz",
            "data-dist-info-metadata": "true",
            "data-core-metadata": "true",
        }
    ]
    assert anchors(body).meta == {"name": "pypi:repository-version", "content": "1.0"}
    assert b"<title>Links for demo</title>" in body
    assert b"<h1>Links for demo</h1>" in body


def test_html_render_of_a_sha512_only_metadata() -> None:
    page = page_json([entry("demo-1.0.tar.gz", OLD, **{"core-metadata": {"sha512": "AB"}})])
    view = simple.filter_page(page, rules(), NOW)
    (anchor,) = anchors(simple.render_html(page, view, BASE)).anchors
    assert anchor["data-core-metadata"] == "sha512=ab"


def test_render_page_picks_the_form() -> None:
    page = parse()
    view = simple.filter_page(page, rules(), NOW)
    assert simple.render_page(page, view, "json", BASE) == simple.render_json(page, view, BASE)
    assert simple.render_page(page, view, "v1-html", BASE) == simple.render_html(page, view, BASE)
    assert simple.render_page(page, view, "text-html", BASE) == simple.render_html(page, view, BASE)


# the notice --------------------------------------------------------------------------------


def test_notice_names_the_file_that_is_free_last_and_the_last_three_blocked() -> None:
    page = page_json([
        entry("demo-1.1.tar.gz", NOW - timedelta(hours=3)),
        entry("demo-1.0.tar.gz", NOW - timedelta(hours=1)),
        entry("demo-1.2.tar.gz", NOW - timedelta(hours=2)),
        entry("demo-1.3.tar.gz", NOW - timedelta(hours=1)),  # as late: the first one is named
        entry("demo-0.1.tar.gz", OLD), entry("demo-0.2.tar.gz", OLD),
        entry("demo-0.3.tar.gz", OLD), entry("demo-0.4.tar.gz", OLD),
        entry("demo-1.5.tar.gz", None),
        entry("demo-2004d.tar.gz", OLD), entry("demo-2004e.tar.gz", OLD),
    ])  # fmt: skip
    view = simple.filter_page(page, rules(block("<1")), NOW)
    assert simple.render_notice("demo", view) == (
        "demo: 5 files held in quarantine (newest demo-1.0.tar.gz, available "
        "2026-11-25T09:00Z); 4 files blocked by block b1: compromised release (demo-0.2.tar.gz, "
        "demo-0.3.tar.gz, demo-0.4.tar.gz and 1 more); 2 files with no recognisable version "
        "not served"
    )
    only_blocked = simple.filter_page(page_json([entry("demo-0.1.tar.gz", OLD)]),
                                      rules(block("<1")), NOW)  # fmt: skip
    assert simple.render_notice("demo", only_blocked) == (
        "demo: 1 file blocked by block b1: compromised release (demo-0.1.tar.gz)"
    )
    three = page_json([entry(f"demo-0.{minor}.tar.gz", OLD) for minor in range(1, 4)])
    three_blocked = simple.filter_page(three, rules(block("<1")), NOW)
    assert simple.render_notice("demo", three_blocked) == (
        "demo: 3 files blocked by block b1: compromised release (demo-0.1.tar.gz, demo-0.2.tar.gz, "
        "demo-0.3.tar.gz)"
    )
    unknown = simple.filter_page(page_json([entry("demo-1.5.tar.gz", None)]), rules(), NOW)
    assert simple.render_notice("demo", unknown) == (
        "demo: 1 file held in quarantine (publish time unknown: demo-1.5.tar.gz)"
    )
    clear = simple.filter_page(page_json([entry("demo-0.1.tar.gz", OLD)]), rules(), NOW)
    assert simple.render_notice("demo", clear) is None


def test_notice_is_ascii() -> None:
    page = page_json([entry("demo-0.1.tar.gz", OLD)])
    view = simple.filter_page(page, rules(block("<1")), NOW)
    assert (
        simple.render_notice("démo", view)
        == "d?mo: 1 file blocked by block b1: compromised release (demo-0.1.tar.gz)"
    )


def test_unattributed_file_is_refused_with_a_reason() -> None:
    assert simple.unattributed_detail("demo", "demo-2004d.tar.gz") == (
        "demo-2004d.tar.gz of demo is not served: the mirror cannot tell which version it "
        "belongs to from its name, so a block could not apply to it"
    )


def test_versions_are_sorted_by_pep_440() -> None:
    page = page_json([entry(f"demo-{version}.tar.gz", OLD) for version in
                      ("1.10", "1.9", "1.0rc1", "1.0", "0.9.post1")])  # fmt: skip
    assert shown(page)["versions"] == ["0.9.post1", "1.0rc1", "1.0", "1.9", "1.10"]


def test_parser_objects_parse_what_they_were_built_for() -> None:
    parser = simple.PageParser("demo", UPSTREAM, HOSTS)
    relative = {**entry("demo-1.0.tar.gz", OLD), "url": "../../f/demo-1.0.tar.gz"}
    page = parser(orjson.dumps({"files": [relative]}))
    assert [item.url for item in page.files] == ["http://up.test/f/demo-1.0.tar.gz"]
    assert simple.RootParser()(b'<a href="/x/">foo</a>') == ("foo",)


# project list ------------------------------------------------------------------------------


def test_root_skips_duplicates_by_normalized_name_and_bad_entries() -> None:
    raw = orjson.dumps({"projects": [{"name": "Foo.Bar"}, {"name": "foo-bar"}, {"name": 5},
                                     "x", {"name": "Zed"}]})  # fmt: skip
    assert simple.parse_root(raw) == ("Foo.Bar", "Zed")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{nope", "^the upstream project list is not JSON: "),
        (b'{"projects": 5}', "^the upstream project list has no `projects` list$"),
        (b' {"name": "x"}', "^the upstream project list has no `projects` list$"),
        pytest.param(
            b'{"projects": ' + DEEP + b"}", "^the upstream project list nests ", id="deep"
        ),
    ],
)
def test_root_refuses_a_broken_json_list(raw: bytes, message: str) -> None:
    with pytest.raises(BadUpstreamDocument, match=message):
        simple.parse_root(raw)


def test_root_names_that_are_not_project_names_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("DEBUG", logger="mirror.ecosystems.pypi.simple"):
        assert simple.parse_root(b"<a>bad name</a>") == ()
    assert [record.getMessage() for record in caplog.records] == [
        "skipping 'bad name' in the upstream project list: not a project name"
    ]


def test_a_page_nested_too_deep_is_refused() -> None:
    raw = b'{"files": ' + DEEP + b"}"
    with pytest.raises(BadUpstreamDocument, match=r"^the upstream page of demo nests "):
        simple.parse_project_page(raw, "demo", UPSTREAM, HOSTS)


def test_root_html_as_a_client_sees_it() -> None:
    assert simple.render_root(["Foo_Bar", "zed"], "text-html", BASE).decode() == (
        "<!DOCTYPE html>\n"
        "<html>\n"
        "  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        "    <title>Simple index</title>\n"
        "  </head>\n"
        "  <body>\n"
        f'    <a href="{BASE}/simple/foo-bar/">Foo_Bar</a>\n'
        f'    <a href="{BASE}/simple/zed/">zed</a>\n'
        "  </body>\n"
        "</html>\n"
    )


def test_page_html_as_a_client_sees_it() -> None:
    page = page_json([
        entry("demo-1.0.tar.gz", OLD, hashes={"sha256": "ab"}, yanked="old <b>",
              **{"core-metadata": {"sha256": "cd"}}),
    ])  # fmt: skip
    view = simple.filter_page(page, rules(), NOW)
    assert simple.render_html(page, view, BASE).decode() == (
        "<!DOCTYPE html>\n"
        "<html>\n"
        "  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        "    <title>Links for demo</title>\n"
        "  </head>\n"
        "  <body>\n"
        "    <h1>Links for demo</h1>\n"
        f'    <a href="{BASE}/files/demo/demo-1.0.tar.gz#sha256=ab" '
        'data-requires-python="&gt;=3.8" data-yanked="old &lt;b&gt;" '
        'data-dist-info-metadata="sha256=cd" data-core-metadata="sha256=cd">'
        "demo-1.0.tar.gz</a><br />\n"
        "  </body>\n"
        "</html>\n"
    )


def test_root_render_html_escapes_and_json_has_the_api_version() -> None:
    body = simple.render_root(["a<b"], "v1-html", BASE)
    assert b"a&lt;b" in body
    assert b'<meta name="pypi:repository-version" content="1.1">' in body
    assert b"<title>Simple index</title>" in body
    assert orjson.loads(simple.render_root(["x"], "json", BASE)) == {
        "meta": {"api-version": "1.1"},
        "projects": [{"name": "x"}],
    }


# metadata the mirror derived from cached wheels (PEP 658/714) -------------------------------


def _undeclared_page() -> simple.ProjectPage:
    files = [
        {k: v for k, v in entry(name, OLD).items() if "metadata" not in k}
        for name in ("demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl", "demo-1.1-py3-none-any.whl")
    ]
    files.append(entry("demo-1.2-py3-none-any.whl", OLD))  # declared upstream
    return parse({"files": files})


def test_derived_metadata_is_declared_for_the_wheel_with_that_sha256_only() -> None:
    page = _undeclared_page()
    view = simple.filter_page(page, rules(), NOW)
    derived = {
        sha("demo-1.0-py3-none-any.whl"): "ab" * 32,
        sha("demo-1.0.tar.gz"): "cd" * 32,  # an sdist never gets derived metadata
        sha("demo-1.2-py3-none-any.whl"): "ef" * 32,  # the upstream's declaration wins
    }
    body = orjson.loads(simple.render_json(page, view, BASE, derived))
    by_name = {item["filename"]: item for item in body["files"]}
    wheel = by_name["demo-1.0-py3-none-any.whl"]
    assert wheel["core-metadata"] == wheel["dist-info-metadata"] == {"sha256": "ab" * 32}
    assert "core-metadata" not in by_name["demo-1.0.tar.gz"]
    assert "core-metadata" not in by_name["demo-1.1-py3-none-any.whl"]
    upstream = {"sha256": sha("demo-1.2-py3-none-any.whl.metadata")}
    assert by_name["demo-1.2-py3-none-any.whl"]["core-metadata"] == upstream
    html_body = simple.render_page(page, view, "html", BASE, derived)
    parsed = {
        str(a["href"]).split("#")[0].rsplit("/", 1)[-1]: a for a in anchors(html_body).anchors
    }
    html_wheel = parsed["demo-1.0-py3-none-any.whl"]
    assert (
        html_wheel["data-core-metadata"]
        == html_wheel["data-dist-info-metadata"]
        == ("sha256=" + "ab" * 32)
    )
    assert "data-core-metadata" not in parsed["demo-1.1-py3-none-any.whl"]
    assert simple.render_page(page, view, "json", BASE) == simple.render_json(page, view, BASE)


def test_a_page_lacks_metadata_only_with_an_undeclared_wheel() -> None:
    assert simple.lacks_metadata(_undeclared_page())
    assert not simple.lacks_metadata(parse())
    sdist_only = parse({"files": [{"filename": "demo-1.0.tar.gz", "url": f"{FILES}/d.tar.gz"}]})
    assert not simple.lacks_metadata(sdist_only)
