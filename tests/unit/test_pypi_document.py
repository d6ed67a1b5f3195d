"""The pure PyPI index functions: negotiate, parse → filter → render on realistic pages."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest

from mirror import policy
from mirror.config import QuarantineConfig
from mirror.ecosystems.pypi import document
from mirror.errors import BadUpstreamDocument
from mirror.state.base import RuleRecord

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
AGE = timedelta(days=3)
OLD = NOW - timedelta(days=700)
UPSTREAM = "http://up.test/simple/demo/"
FILES = "http://files.test"
HOSTS = frozenset({"up.test", "files.test"})
BASE = "http://mirror.test:8080/pypi"

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
POETRY_ACCEPT = "application/vnd.pypi.simple.v1+json, */*;q=0.1"


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def entry(filename: str, uploaded: datetime | None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "filename": filename,
        "url": f"{FILES}/packages/ab/cd/{filename}",
        "hashes": {"sha256": sha(filename)},
        "requires-python": ">=3.8",
        "core-metadata": {"sha256": sha(filename + ".metadata")},
        "data-dist-info-metadata": {"sha256": sha(filename + ".metadata")},
        "yanked": False,
        "size": 1234,
    }
    if uploaded is not None:
        item["upload-time"] = ts(uploaded)
    item.update(extra)
    return item


DEMO: dict[str, Any] = {
    "meta": {"api-version": "1.4", "_last-serial": 42},
    "name": "demo",
    "versions": ["1.0", "1.1", "1.2", "2.0"],
    "files": [
        entry("demo-1.0.tar.gz", OLD, yanked="broken build"),
        entry("demo-1.0-py3-none-any.whl", OLD),
        entry("demo-1.1-py3-none-any.whl", NOW - timedelta(days=30)),
        # A wheel added today to an old release: held on its own.
        entry("demo-1.1-cp313-cp313-manylinux_2_17_x86_64.whl", NOW - timedelta(hours=2)),
        entry(
            "demo-1.2-py3-none-any.whl", NOW - timedelta(days=10), **{"requires-python": "<4,>=3.9"}
        ),
        entry("demo-2.0-py3-none-any.whl", NOW - timedelta(hours=5)),
        entry("demo-0.1.win32.exe", OLD, **{"core-metadata": False}),
        entry("demo-2004d.tar.gz", OLD),  # not PEP 440: never served
        entry("demo-0.9.tar.gz", None),  # upload time unknown
        {**entry("demo-0.8.tar.gz", OLD), "url": "http://evil.test/demo-0.8.tar.gz"},
    ],
}


def parse(doc: dict[str, Any] = DEMO) -> document.ProjectPage:
    return document.parse_project_page(orjson.dumps(doc), "demo", UPSTREAM, HOSTS)


def rules(*records: RuleRecord, unknown: str = "quarantine") -> policy.Rules:
    config = QuarantineConfig(default=AGE, unknown=unknown)  # type: ignore[arg-type]
    return policy.compile_rules(list(records), config, NOW)


def block(versions: str, package: str = "demo") -> RuleRecord:
    return RuleRecord(
        id="b1",
        kind="block",
        ecosystem="pypi",
        package=package,
        versions=versions,
        reason="compromised release",
        created_at=NOW - timedelta(hours=1),
        created_by="security",
    )


def json_view(
    page: document.ProjectPage, compiled: policy.Rules | None = None
) -> tuple[document.PageView, dict[str, Any]]:
    view = document.filter_page(page, compiled or rules(), NOW)
    return view, orjson.loads(document.render_json(page, view, BASE))


class Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []
        self.meta: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))
        if tag == "meta":
            self.meta = dict(attrs)


def anchors(body: bytes) -> Anchors:
    parser = Anchors()
    parser.feed(body.decode())
    return parser


# negotiation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "form"),
    [
        (PIP_ACCEPT, "json"),
        (UV_ACCEPT, "json"),
        (POETRY_ACCEPT, "json"),
        (None, "text-html"),
        ("", "text-html"),
        ("*/*", "text-html"),
        ("text/html", "text-html"),
        ("application/json", "text-html"),  # nothing we offer: PyPI answers HTML
        ("application/vnd.pypi.simple.v1+html", "v1-html"),
        ("application/vnd.pypi.simple.latest+json", "json"),
        ("application/vnd.pypi.simple.v1+json;q=0.5, text/html", "text-html"),
        ("application/vnd.pypi.simple.v1+json;q=0, */*", "text-html"),
        ("application/vnd.pypi.simple.v1+json;q=0, text/html;q=0", None),
        ("*/*;q=0", None),
    ],
)
def test_choose_form(accept: str | None, form: str | None) -> None:
    assert document.choose_form(accept) == form


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


@pytest.mark.parametrize("raw", [b"{not json", b'{"files": 5}'])
def test_parse_refuses_broken_json(raw: bytes) -> None:
    with pytest.raises(BadUpstreamDocument):
        document.parse_project_page(raw, "demo", UPSTREAM, HOSTS)


UPSTREAM_HTML = f"""<!DOCTYPE html>
<html><head><meta name="pypi:repository-version" content="1.4"><title>Links for demo</title>
</head><body><h1>Links for demo</h1>
<a href="{FILES}/packages/ab/demo-1.0.tar.gz#sha256={sha("a")}" data-requires-python="&gt;=3.8"
   data-yanked="">demo-1.0.tar.gz</a><br />
<a href="/packages/cd/demo-1.1-py3-none-any.whl#sha256={sha("b")}"
   data-dist-info-metadata="sha256={sha("m")}" data-core-metadata="sha256={sha("m")}"
   data-upload-time="{ts(NOW - timedelta(days=30))}">demo-1.1-py3-none-any.whl</a><br />
<a href="demo-1.2.tar.gz#md5=0123" data-yanked="bad &lt;release&gt;">demo-1.2.tar.gz</a>
<script>alert("x")</script>
</body></html>
<!--SERIAL 7-->
""".encode()


def test_parse_html_page() -> None:
    page = document.parse_project_page(UPSTREAM_HTML, "demo", UPSTREAM, HOSTS)
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
    page = document.parse_project_page(raw, "demo", UPSTREAM, HOSTS)
    assert page.files[0].url == "http://files.test/base/demo-1.0.tar.gz"


def test_upload_times_and_sizes_come_from_the_json_api_for_html_pages() -> None:
    page = document.parse_project_page(UPSTREAM_HTML, "demo", UPSTREAM, HOSTS)
    api = document.parse_api_document(
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
    merged = document.with_api_details(page, api)
    first = merged.file("demo-1.0.tar.gz")
    assert first is not None
    assert first.upload_time == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert first.size == 99
    # Only an md5 on the page, another sha256 in the API: the time is still taken by name.
    third = merged.file("demo-1.2.tar.gz")
    assert third is not None
    assert third.upload_time is not None


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
    assert sorted(held.filename for held in view.blocked) == [
        "demo-1.0-py3-none-any.whl",
        "demo-1.0.tar.gz",
    ]
    notice = document.render_notice("demo", view)
    assert notice is not None
    assert "2 files blocked (demo-1.0.tar.gz, demo-1.0-py3-none-any.whl)" in notice


def test_all_files_hidden_gives_an_empty_page() -> None:
    doc = {"files": [entry("demo-3.0-py3-none-any.whl", NOW - timedelta(minutes=1))]}
    view, body = json_view(parse(doc))
    assert body["files"] == []
    assert body["versions"] == []
    assert document.render_notice("demo", view) == (
        "demo: 1 file held in quarantine (newest demo-3.0-py3-none-any.whl, available "
        "2026-11-25T09:59Z)"
    )


def test_unknown_upload_time_is_allowed_only_when_configured() -> None:
    view, _body = json_view(parse(), rules(unknown="allow"))
    assert "demo-0.9.tar.gz" in [item.filename for item in view.visible]


def test_api_version_drops_to_1_0_without_sizes() -> None:
    page = document.parse_project_page(UPSTREAM_HTML, "demo", UPSTREAM, HOSTS)
    _view, body = json_view(page, rules(unknown="allow"))
    assert body["meta"]["api-version"] == "1.0"
    assert "size" not in body["files"][0]


# render HTML ---------------------------------------------------------------------------------


def test_html_render_escapes_and_keeps_pep_503_658_592_fields() -> None:
    page = parse()
    view = document.filter_page(page, rules(), NOW)
    body = document.render_html(page, view, BASE)
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
    body = document.render_html(page, document.filter_page(page, rules(), NOW), BASE)
    assert b"<script>" not in body
    assert anchors(body).anchors[0]["data-yanked"] == '"><script>x</script>'


# project list --------------------------------------------------------------------------------


def test_root_in_both_forms() -> None:
    raw = orjson.dumps({"meta": {}, "projects": [{"name": "Foo_Bar"}, {"name": "bad name"}]})
    projects = document.parse_root(raw)
    assert projects == ("Foo_Bar",)
    html_names = document.parse_root(b'<a href="/simple/foo/">foo</a><a href="x">Zed</a>')
    assert html_names == ("foo", "Zed")
    body = document.render_root(projects, "text-html", BASE)
    assert anchors(body).anchors == [{"href": f"{BASE}/simple/foo-bar/"}]
    assert orjson.loads(document.render_root(projects, "json", BASE))["projects"] == [
        {"name": "Foo_Bar"}
    ]


# JSON API ------------------------------------------------------------------------------------


def api_file(filename: str, uploaded: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "filename": filename,
        "url": f"{FILES}/packages/{filename}",
        "packagetype": "bdist_wheel",
        "digests": {"sha256": sha(filename), "md5": "00"},
        "size": 10,
        "upload_time": uploaded.strftime("%Y-%m-%dT%H:%M:%S"),
        "upload_time_iso_8601": ts(uploaded),
        "yanked": False,
        "yanked_reason": None,
        **extra,
    }


API = {
    "info": {"name": "demo", "version": "2.0", "summary": "demo 2.0"},
    "last_serial": 42,
    "releases": {
        "1.0": [api_file("demo-1.0-py3-none-any.whl", OLD)],
        "1.1": [
            api_file("demo-1.1-py3-none-any.whl", NOW - timedelta(days=30)),
            api_file("demo-1.1-cp313-cp313-win_amd64.whl", NOW - timedelta(hours=1)),
        ],
        "1.2b1": [api_file("demo-1.2b1-py3-none-any.whl", NOW - timedelta(days=20))],
        "2.0": [api_file("demo-2.0-py3-none-any.whl", NOW - timedelta(hours=5))],
    },
    "urls": [api_file("demo-2.0-py3-none-any.whl", NOW - timedelta(hours=5))],
    "vulnerabilities": [],
}


def test_json_api_project_is_filtered_and_info_version_recomputed() -> None:
    api = document.parse_api_document(orjson.dumps(API), "demo", "http://up.test/pypi/demo/json")
    view = document.filter_api(api, rules(), NOW)
    assert view.latest == "1.1"
    body = orjson.loads(document.render_api_project(api, view, BASE))
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
    api = document.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")
    visible, hidden = document.decide_api_version(api, rules(), NOW)
    assert [item.filename for item in visible] == ["demo-1.1-py3-none-any.whl"]
    assert len(hidden) == 1
    assert hidden[0].verdict == "quarantined"
    body = orjson.loads(document.render_api_version(api, "1.1", visible, BASE))
    assert [item["url"] for item in body["urls"]] == [
        f"{BASE}/files/demo/demo-1.1-py3-none-any.whl"
    ]
    blocked_visible, blocked = document.decide_api_version(api, rules(block("1.1")), NOW)
    assert blocked_visible == []
    assert all(item.verdict == "blocked" for item in blocked)


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

HOSTILE_HREFS = [
    "file:///etc/passwd/demo-0.2.tar.gz",
    "javascript:alert(1)//demo-0.3.tar.gz",
    "data:text/plain,demo-0.4.tar.gz",
    "http://[::1/demo-0.5.tar.gz",  # a broken IPv6 literal: urljoin raises
    "http://up.test:99999/demo-0.6.tar.gz",  # port out of range
    "//evil.test/demo-0.7.tar.gz",  # scheme-relative, another host
    "ftp://files.test/demo-0.8.tar.gz",
    "http://evil.test/\x1b[31mdemo-0.9.tar.gz\nWARNING forged",
]


def hostile_html(base: str | None = None) -> bytes:
    links = "".join(f'<a href="{href}">x</a>' for href in HOSTILE_HREFS)
    good = f'<a href="{FILES}/packages/demo-1.0.tar.gz#sha256={sha("a")}">demo-1.0.tar.gz</a>'
    relative = '<a href="../../packages/demo-1.1.tar.gz">demo-1.1.tar.gz</a>'
    head = f'<base href="{base}">' if base else ""
    return f"<html><head>{head}</head><body>{links}{good}{relative}</body></html>".encode()


def test_hostile_links_on_an_html_page_are_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="mirror.ecosystems.pypi.document"):
        page = document.parse_project_html(hostile_html(), "demo", UPSTREAM, HOSTS)
    assert [(item.filename, item.url) for item in page.files] == [
        ("demo-1.0.tar.gz", f"{FILES}/packages/demo-1.0.tar.gz"),
        ("demo-1.1.tar.gz", "http://up.test/packages/demo-1.1.tar.gz"),
    ]
    assert len(page.dropped) == len(HOSTILE_HREFS)
    records = [record for record in caplog.records if "skipped" in record.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "skipped 8 file link(s) on the upstream page of 'demo'" in message
    assert "\n" not in message
    assert "\x1b" not in message


@pytest.mark.parametrize("base", ["file:///", "http://[::1/", "javascript:x"])
def test_a_hostile_base_href_never_makes_a_file_fetchable(base: str) -> None:
    page = document.parse_project_html(hostile_html(base), "demo", UPSTREAM, HOSTS)
    assert all(document.link_problem(item.url, HOSTS) is None for item in page.files)
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


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://files.test/a.whl", None),
        ("HTTPS://FILES.TEST/a.whl", None),
        ("file:///a.whl", "scheme 'file' is not http(s)"),
        ("data:,a", "scheme 'data' is not http(s)"),
        ("relative/a.whl", "scheme '(none)' is not http(s)"),
        ("http:///a.whl", "its URL names no host"),
        ("http://evil.test/a.whl", "host 'evil.test' is not an allowed file host"),
        ("http://files.test:8443/a.whl", "host 'files.test:8443' is not an allowed file host"),
    ],
)
def test_link_problem(url: str, problem: str | None) -> None:
    assert document.link_problem(url, HOSTS) == problem


def test_hostile_links_in_the_json_api_are_left_out() -> None:
    raw = {
        **API,
        "releases": {
            **API["releases"],  # type: ignore[dict-item]
            "0.5": [{**api_file("demo-0.5.tar.gz", OLD), "url": "file:///etc/demo-0.5.tar.gz"}],
        },
        "urls": [{**api_file("demo-2.0-py3-none-any.whl", OLD), "url": "http://[::1/x"}],
    }
    api = document.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/", HOSTS)
    assert api.releases["0.5"] == ()
    assert api.urls == ()
    assert "demo-1.0-py3-none-any.whl" in api.files_by_name()


# nothing visible -----------------------------------------------------------------------------


def test_no_visible_file_message_says_why() -> None:
    doc = {"files": [entry("demo-3.0-py3-none-any.whl", NOW - timedelta(minutes=1))]}
    page = parse(doc)
    view = document.filter_page(page, rules(), NOW)
    assert document.no_visible_file_message("demo", view) == (
        "no file of demo is available from this mirror yet: demo: 1 file held in quarantine "
        "(newest demo-3.0-py3-none-any.whl, available 2026-11-25T09:59Z)"
    )
    empty = document.filter_page(parse({"files": []}), rules(), NOW)
    assert document.no_visible_file_message("demo", empty) == (
        "the upstream index lists no files for demo"
    )


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
    api = document.parse_api_document(orjson.dumps(secret_api()), "demo", "http://up.test/")
    view = document.filter_api(api, rules(), NOW)
    assert view.latest == "1.1"
    assert document.info_for(api, "1.1") is None
    raw = document.render_api_project(api, view, BASE)
    assert SECRET.encode() not in raw
    body = orjson.loads(raw)
    assert set(body) == {"info", "last_serial", "releases", "urls"}
    info = body["info"]
    assert info["version"] == "1.1"
    assert info["name"] == "demo"
    assert info["requires_dist"] is None  # unknown, not "no dependencies" from another release
    assert set(document.INFO_KEYS) <= set(info)


def test_api_info_comes_from_the_release_document_only_when_it_is_of_that_release() -> None:
    api = document.parse_api_document(orjson.dumps(secret_api()), "demo", "http://up.test/")
    view = document.filter_api(api, rules(), NOW)
    own = {"info": {"name": "demo", "version": "1.1", "summary": "one one"}, "vulnerabilities": []}
    body = orjson.loads(document.render_api_project(api, view, BASE, own))
    assert body["info"]["summary"] == "one one"
    assert body["vulnerabilities"] == []
    # A per-version document that describes another release (a hostile or broken upstream).
    other = {"info": {"name": "demo", "version": "2.0", "summary": SECRET}}
    assert SECRET.encode() not in document.render_api_project(api, view, BASE, other)


def test_api_info_of_the_visible_latest_is_kept() -> None:
    api = document.parse_api_document(orjson.dumps(secret_api()), "demo", "http://up.test/")
    view = document.filter_api(api, rules(), NOW + timedelta(days=4))
    assert view.latest == "2.0"
    body = orjson.loads(document.render_api_project(api, view, BASE))
    assert body["info"]["summary"] == SECRET  # 2.0 is visible now: its own info
    assert "x-extra" not in body


def test_api_with_nothing_visible_says_why() -> None:
    api = document.parse_api_document(orjson.dumps(secret_api()), "demo", "http://up.test/")
    view = document.filter_api(api, rules(block("<2")), NOW)
    assert view.latest is None
    with pytest.raises(ValueError, match="visible"):
        document.render_api_project(api, view, BASE)
    assert document.api_nothing_visible_message("demo", view) == (
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
    api = document.parse_api_document(orjson.dumps(raw), "demo", "http://up.test/")
    visible, hidden = document.decide_api_version(api, rules(), NOW, "1.1")
    assert [item.filename for item in visible] == ["demo-1.1-py3-none-any.whl"]
    assert hidden == []
    body = document.render_api_version(api, "1.1", visible, BASE)
    assert SECRET.encode() not in body
    assert orjson.loads(body)["info"]["version"] == "1.1"
