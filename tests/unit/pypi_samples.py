"""Sample PyPI documents shared by the unit tests of `mirror.ecosystems.pypi`: a realistic
project page (PEP 691 JSON and PEP 503 HTML), a JSON API document, hostile links, and the
rules they are filtered under."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import orjson

from mirror import policy
from mirror.config import QuarantineConfig
from mirror.ecosystems.pypi import simple
from mirror.model import RuleRecord

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
AGE = timedelta(days=3)
OLD = NOW - timedelta(days=700)
UPSTREAM = "http://up.test/simple/demo/"
FILES = "http://files.test"
HOSTS = frozenset({"up.test", "files.test"})
BASE = "http://mirror.test:8080/pypi"


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


def parse(doc: dict[str, Any] = DEMO) -> simple.ProjectPage:
    return simple.parse_project_page(orjson.dumps(doc), "demo", UPSTREAM, HOSTS)


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
    page: simple.ProjectPage, compiled: policy.Rules | None = None
) -> tuple[simple.PageView, dict[str, Any]]:
    view = simple.filter_page(page, compiled or rules(), NOW)
    return view, orjson.loads(simple.render_json(page, view, BASE))


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
