"""The PyPI adapter through the whole app: `create_app` with a FixedClock against a fake
index upstream (a real aiohttp server on 127.0.0.1 with real wheels and sdists)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.model import RuleRecord
from mirror.services import ECOSYSTEM_ADAPTERS, SERVICES
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, Client, MakeClient

OLD = NOW - timedelta(days=700)
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def populate(index: FakePypiIndex) -> None:
    index.add_sdist("demo", "1.0", uploaded=OLD)
    index.add_wheel("demo", "1.0", uploaded=OLD, yanked="broken")
    index.add_wheel("demo", "1.1", uploaded=NOW - timedelta(days=30), requires_python=">=3.8")
    # A wheel added today to the old 1.1 release: held on its own.
    index.add_wheel(
        "demo", "1.1", uploaded=NOW - timedelta(hours=2), tag="cp311-cp311-linux_x86_64"
    )
    index.add_wheel("demo", "2.0", uploaded=NOW - timedelta(hours=5))
    index.add_wheel("Brand_New", "0.1", uploaded=NOW - timedelta(minutes=10))


@pytest.fixture
async def index(aiohttp_server: AiohttpServer) -> FakePypiIndex:
    index = FakePypiIndex()
    populate(index)
    await index.start(aiohttp_server)
    return index


@pytest.fixture
async def client(make_mirror: MakeClient, index: FakePypiIndex) -> Client:
    return await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)


async def block(client: Client, versions: str, package: str = "demo") -> None:
    services = client.app[SERVICES]
    await services.state.add_rule(
        RuleRecord(
            id="block-1",
            kind="block",
            ecosystem="pypi",
            package=package,
            versions=versions,
            reason="compromised release",
            created_at=NOW,
            created_by="security",
        )
    )
    await services.policy.reload()


# simple pages --------------------------------------------------------------------------------


async def test_json_page_is_filtered_per_file_and_rewritten(
    client: Client, index: FakePypiIndex
) -> None:
    response = await client.get("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    assert response.status == 200
    assert response.headers["Content-Type"] == JSON_TYPE
    assert response.headers["Vary"].startswith("Accept")
    body = await response.json(content_type=None)
    assert [item["filename"] for item in body["files"]] == [
        "demo-1.0.tar.gz",
        "demo-1.0-py3-none-any.whl",
        "demo-1.1-py3-none-any.whl",
    ]
    assert body["versions"] == ["1.0", "1.1"]
    base = str(client.make_url("/pypi")).rstrip("/")
    wheel = body["files"][2]
    assert wheel["url"] == f"{base}/files/demo/demo-1.1-py3-none-any.whl"
    assert wheel["hashes"] == {"sha256": index.file("demo-1.1-py3-none-any.whl").sha256}
    assert wheel["requires-python"] == ">=3.8"
    assert body["files"][1]["yanked"] == "broken"
    notice = response.headers["X-Mirror-Notice"]
    assert notice.startswith("demo: 2 files held in quarantine")
    assert "available 2026-11-25T08:00Z" in notice
    # The mirror asked the upstream for PEP 691 JSON first.
    assert index.upstream.last("/simple/demo/").headers["Accept"].startswith(JSON_TYPE)


async def test_html_and_json_have_distinct_etags_and_304(client: Client) -> None:
    json_response = await client.get("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    html_response = await client.get("/pypi/simple/demo/")
    assert html_response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert json_response.headers["ETag"] != html_response.headers["ETag"]
    text = await html_response.text()
    assert "demo-2.0-py3-none-any.whl" not in text
    assert 'data-requires-python="&gt;=3.8"' in text
    again = await client.get(
        "/pypi/simple/demo/", headers={"If-None-Match": html_response.headers["ETag"]}
    )
    assert again.status == 304


async def test_406_only_when_every_form_is_refused(client: Client) -> None:
    refused = await client.get(
        "/pypi/simple/demo/",
        headers={"Accept": "text/html;q=0, application/vnd.pypi.simple.v1+json;q=0"},
    )
    assert refused.status == 406
    other = await client.get("/pypi/simple/demo/", headers={"Accept": "application/json"})
    assert other.status == 200
    assert other.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/pypi/simple/Demo/", "/pypi/simple/demo/"),
        ("/pypi/simple/Brand_New", "/pypi/simple/brand-new/"),
        ("/pypi/simple/demo", "/pypi/simple/demo/"),
        ("/pypi/simple", "/pypi/simple/"),
    ],
)
async def test_non_normalized_names_redirect(
    client: Client, index: FakePypiIndex, path: str, location: str
) -> None:
    response = await client.get(path, allow_redirects=False)
    assert response.status == 301
    assert response.headers["Location"] == str(client.make_url(location))
    assert index.requests == []


@pytest.mark.parametrize("accept", [PIP_ACCEPT, "text/html", None])
async def test_project_with_nothing_visible_is_404_saying_why(
    client: Client, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}
    response = await client.get("/pypi/simple/brand-new/", headers=headers)
    assert response.status == 404
    body = await response.json()
    assert body["error"].startswith("no file of brand-new is available from this mirror yet: ")
    assert "1 file held in quarantine" in body["error"]


async def test_unknown_project_is_404(client: Client) -> None:
    response = await client.get("/pypi/simple/no-such-project/")
    assert response.status == 404


async def test_second_fetch_makes_no_upstream_request(client: Client, index: FakePypiIndex) -> None:
    await client.get("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    before = len(index.requests)
    for accept in (PIP_ACCEPT, "text/html", PIP_ACCEPT):
        response = await client.get("/pypi/simple/demo/", headers={"Accept": accept})
        assert response.status == 200
    assert len(index.requests) == before


async def test_the_view_changes_by_the_clock_alone(client: Client, clock: FixedClock) -> None:
    before = await client.get("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    assert int(before.headers["Cache-Control"].rsplit("=", 1)[1]) <= 300
    clock.advance(timedelta(days=3))
    after = await client.get("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    body = await after.json(content_type=None)
    assert body["versions"] == ["1.0", "1.1", "2.0"]
    assert "X-Mirror-Notice" not in after.headers


async def test_root_lists_projects_in_both_forms(client: Client) -> None:
    html_response = await client.get("/pypi/simple/")
    text = await html_response.text()
    base = str(client.make_url("/pypi")).rstrip("/")
    assert f'href="{base}/simple/brand-new/"' in text
    json_response = await client.get("/pypi/simple/", headers={"Accept": PIP_ACCEPT})
    names = [item["name"] for item in (await json_response.json(content_type=None))["projects"]]
    assert names == ["brand-new", "demo"]


async def test_blocked_version_disappears(client: Client) -> None:
    await block(client, "==1.0")
    response = await client.get("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    body = await response.json(content_type=None)
    assert body["versions"] == ["1.1"]
    assert "2 files blocked" in response.headers["X-Mirror-Notice"]


# HTML-only upstream --------------------------------------------------------------------------


async def test_html_only_upstream_takes_upload_times_from_the_json_api(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    index = FakePypiIndex(mode="html")
    populate(index)
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    response = await client.get("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    body = await response.json(content_type=None)
    assert body["versions"] == ["1.0", "1.1"]
    assert body["files"][0]["upload-time"].startswith(OLD.strftime("%Y-%m-%dT%H:%M:%S"))
    assert body["files"][0]["size"] == len(index.file("demo-1.0.tar.gz").data)
    assert index.upstream.count("/pypi/demo/json") == 1


async def test_html_only_upstream_without_json_api_holds_files_of_unknown_age(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    index = FakePypiIndex(mode="html", json_api=False)
    populate(index)
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    held = await client.get("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    assert held.status == 404
    assert "5 files held in quarantine" in (await held.json())["error"]
    allowing = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url, MIRROR_QUARANTINE_UNKNOWN="allow")
    shown = await allowing.get("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})
    assert len((await shown.json(content_type=None))["files"]) == 5


# files ---------------------------------------------------------------------------------------


async def test_file_is_served_verified_and_cached(client: Client, index: FakePypiIndex) -> None:
    item = index.file("demo-1.1-py3-none-any.whl")
    for _ in range(2):
        response = await client.get("/pypi/files/demo/demo-1.1-py3-none-any.whl")
        assert response.status == 200
        assert await response.read() == item.data
    assert index.upstream.count(item.path) == 1


async def test_metadata_file_is_served_against_its_own_hash(
    client: Client, index: FakePypiIndex
) -> None:
    item = index.file("demo-1.1-py3-none-any.whl")
    response = await client.get("/pypi/files/demo/demo-1.1-py3-none-any.whl.metadata")
    assert response.status == 200
    data = await response.read()
    assert data == item.metadata
    assert data is not None
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(item.metadata or b"").hexdigest()
    sdist_meta = await client.get("/pypi/files/demo/demo-1.0.tar.gz.metadata")
    assert sdist_meta.status == 404


async def test_quarantined_file_is_403_with_the_json_body(
    client: Client, index: FakePypiIndex
) -> None:
    name = "demo-1.1-cp311-cp311-linux_x86_64.whl"
    for path in (name, name + ".metadata"):
        response = await client.get(f"/pypi/files/demo/{path}")
        assert response.status == 403
        body = await response.json()
        assert body["reason"] == "quarantined"
        assert body["until"].startswith("2026-11-25T08:00")
        assert name in body["error"]
    assert index.upstream.count(index.file(name).path) == 0


async def test_blocked_file_is_403(client: Client, index: FakePypiIndex) -> None:
    await block(client, "1.0")
    response = await client.get("/pypi/files/demo/demo-1.0.tar.gz")
    assert response.status == 403
    body = await response.json()
    assert body["reason"] == "blocked"
    assert body["block"]["reason"] == "compromised release"
    assert index.upstream.count(index.file("demo-1.0.tar.gz").path) == 0


async def test_unknown_file_refreshes_the_page_once_then_404(
    client: Client, index: FakePypiIndex, clock: FixedClock
) -> None:
    await client.get("/pypi/simple/demo/")
    clock.advance(timedelta(seconds=30))  # cache.refresh_interval since the page came
    response = await client.get("/pypi/files/demo/demo-9.9-py3-none-any.whl")
    assert response.status == 404
    assert index.upstream.count("/simple/demo/") == 2


async def test_tampered_upstream_file_is_refused(client: Client, index: FakePypiIndex) -> None:
    item = index.file("demo-1.1-py3-none-any.whl")
    index.upstream.add(item.path, b"not the published bytes")
    response = await client.get("/pypi/files/demo/demo-1.1-py3-none-any.whl")
    assert response.status == 502
    assert (await response.json())["reason"] == "integrity"


@pytest.mark.parametrize(
    "path",
    [
        "/pypi/files/demo/..%2f..%2fetc%2fpasswd",
        "/pypi/files/demo/a%00.whl",
        "/pypi/files/-demo-/demo-1.0.tar.gz",
        "/pypi/simple/bad%20name/",
        "/pypi/simple/a/b/c",
        "/pypi/pypi/demo/../json",
    ],
)
async def test_bad_paths_are_400_without_upstream_requests(
    client: Client, index: FakePypiIndex, path: str
) -> None:
    response = await client.get(path)
    assert response.status == 400
    assert (await response.json())["reason"] == "bad-request"
    assert index.requests == []


async def test_writes_are_not_allowed(client: Client) -> None:
    response = await client.post("/pypi/simple/demo/", data=b"x")
    assert response.status == 405


# JSON API ------------------------------------------------------------------------------------


async def test_json_api_is_filtered(client: Client, index: FakePypiIndex) -> None:
    response = await client.get("/pypi/pypi/demo/json")
    assert response.status == 200
    body = await response.json()
    assert body["info"]["version"] == "1.1"
    assert body["info"]["summary"] == "demo 1.1"  # the info of the release now called latest
    assert sorted(body["releases"]) == ["1.0", "1.1"]
    assert [item["filename"] for item in body["releases"]["1.1"]] == ["demo-1.1-py3-none-any.whl"]
    base = str(client.make_url("/pypi")).rstrip("/")
    assert body["urls"][0]["url"] == f"{base}/files/demo/demo-1.1-py3-none-any.whl"


async def test_json_api_version(client: Client) -> None:
    shown = await client.get("/pypi/pypi/demo/1.1/json")
    assert shown.status == 200
    assert [item["filename"] for item in (await shown.json())["urls"]] == [
        "demo-1.1-py3-none-any.whl"
    ]
    held = await client.get("/pypi/pypi/demo/2.0/json")
    assert held.status == 403
    body = await held.json()
    assert body["reason"] == "quarantined"
    assert "demo-2.0-py3-none-any.whl" in body["error"]


async def test_explain_lists_each_file(client: Client) -> None:
    adapter = client.app[ECOSYSTEM_ADAPTERS]["pypi"]
    explained = await adapter.explain("Demo", "1.1")
    assert explained.verdict == "allowed"
    verdicts = {entry["filename"]: entry["verdict"] for entry in explained.files}
    assert verdicts == {
        "demo-1.1-py3-none-any.whl": "allowed",
        "demo-1.1-cp311-cp311-linux_x86_64.whl": "quarantined",
    }
    held = await adapter.explain("demo", "2.0")
    assert held.verdict == "quarantined"
    assert held.until == NOW - timedelta(hours=5) + timedelta(days=3)


async def test_explain_api_answers_for_one_file(client: Client) -> None:
    params = {"ecosystem": "pypi", "package": "demo", "version": "1.1"}
    young = "demo-1.1-cp311-cp311-linux_x86_64.whl"
    response = await client.get("/api/v1/explain", params={**params, "file": young})
    assert response.status == 200
    answer = await response.json()
    assert answer["verdict"] == "quarantined"
    assert young in answer["detail"]
    assert [entry["filename"] for entry in answer["files"]] == [young]
    # Each file's risk signals are its own (none here): the answer for one file is its.
    assert (answer["signals"], answer["risk"]) == ([], None)
    assert (answer["files"][0]["signals"], answer["files"][0]["risk"]) == ([], None)
    whole = await (await client.get("/api/v1/explain", params=params)).json()
    assert whole["verdict"] == "allowed"  # the version as a whole still installs
    assert [(entry["signals"], entry["risk"]) for entry in whole["files"]] == [([], None)] * 2
    missing = await client.get("/api/v1/explain", params={**params, "file": "nope.whl"})
    assert missing.status == 404
    assert "nope.whl" in (await missing.json())["error"]


# hostile links and held releases in documents ------------------------------------------------

HOSTILE_LINKS = [
    ("file:///etc/passwd", "demo-0.2.tar.gz"),
    ("javascript:alert(1)", "demo-0.3.tar.gz"),
    ("data:text/plain,demo-0.4.tar.gz", "demo-0.4.tar.gz"),
    ("http://[::1/demo-0.5.tar.gz", "demo-0.5.tar.gz"),
    ("http://evil.test/demo-0.6.tar.gz", "demo-0.6.tar.gz"),
    ("../../../../../etc/demo-0.7.tar.gz", "demo-0.7.tar.gz"),
]


@pytest.mark.parametrize("mode", ["json", "html"])
async def test_hostile_links_are_skipped_and_the_rest_of_the_page_serves(
    aiohttp_server: AiohttpServer,
    make_mirror: MakeClient,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    index = FakePypiIndex(mode=mode)  # type: ignore[arg-type]
    populate(index)
    for href, filename in HOSTILE_LINKS:
        index.add_raw_link("demo", href, filename, filename.split("-")[1][:-7])
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    with caplog.at_level("WARNING", logger="mirror.ecosystems.pypi.links"):
        for accept in (PIP_ACCEPT, "text/html", PIP_ACCEPT):
            response = await client.get("/pypi/simple/demo/", headers={"Accept": accept})
            assert response.status == 200
        body = await (await client.get("/pypi/simple/demo/", headers={"Accept": PIP_ACCEPT})).json(
            content_type=None
        )
        api = await client.get("/pypi/pypi/demo/json")
        assert api.status == 200
        api_files = {
            item["filename"] for items in (await api.json())["releases"].values() for item in items
        }
    names = {item["filename"] for item in body["files"]}
    assert "demo-1.1-py3-none-any.whl" in names
    # A relative link resolves on the index host: allowed, and it is fetched from there.
    hostile = {filename for _href, filename in HOSTILE_LINKS} - {"demo-0.7.tar.gz"}
    assert not hostile & names
    assert not hostile & api_files
    for filename in hostile:
        refused = await client.get(f"/pypi/files/demo/{filename}")
        assert refused.status == 404
    page_logs = [r for r in caplog.records if "on the upstream page of" in r.getMessage()]
    assert len(page_logs) == 1  # parsed once, logged once
    assert not [seen for seen in index.requests if "evil" in seen.path or "etc/passwd" in seen.path]


async def test_json_api_with_nothing_visible_is_404_saying_why(client: Client) -> None:
    response = await client.get("/pypi/pypi/brand-new/json")
    assert response.status == 404
    body = await response.json()
    assert body["error"].startswith("no release of brand-new is available from this mirror yet")
    assert "1 file held in quarantine" in body["error"]


SECRET = "HELD-SECRET-7c41"


async def test_json_api_without_per_version_documents_builds_info(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    index = FakePypiIndex(version_api=False)
    populate(index)
    index.set_release_info(
        "demo", "2.0", summary=SECRET, requires_dist=[f"{SECRET}>=1"], home_page=SECRET
    )
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    response = await client.get("/pypi/pypi/demo/json")
    assert response.status == 200
    raw = await response.read()
    assert SECRET.encode() not in raw
    body = await response.json()
    assert body["info"]["version"] == "1.1"
    assert body["info"]["requires_dist"] is None
    assert index.upstream.count("/pypi/demo/1.1/json") == 1  # asked once, 404, not fatal
    version = await client.get("/pypi/pypi/demo/1.1/json")
    assert version.status == 200
    assert [item["filename"] for item in (await version.json())["urls"]] == [
        "demo-1.1-py3-none-any.whl"
    ]
    held = await client.get("/pypi/pypi/demo/2.0/json")
    assert held.status == 403
    assert SECRET.encode() not in await held.read()
