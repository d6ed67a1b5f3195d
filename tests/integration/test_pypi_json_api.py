"""The legacy JSON API through the whole app when the newest release is held: `info` is the
newest allowed release's own (the upstream's per-version document, else composed from the
simple index and that release's core metadata), `/{version}/json` answers for every allowed
version on any index, filtered answers carry `X-Mirror-Notice`, and an upstream's missing
optional documents are asked for and logged once per remembered period."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.model import RuleRecord
from mirror.services import SERVICES
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, Client, MakeClient

OLD = NOW - timedelta(days=700)
SECRET = "HELD-SECRET-5d2e"
# What 1.1's METADATA says (and its per-version JSON document, where the index has one).
REQUIRES = ["idna>=2.5", 'pysocks!=1.5.7,>=1.5.6; extra == "socks"']
METADATA_HEADERS = [
    ("Summary", "Demo, the allowed release"),
    ("Author", "Zoë Example"),
    ("License-Expression", "MIT"),
    ("Classifier", "Programming Language :: Python :: 3"),
    ("Classifier", "License :: OSI Approved :: MIT License"),
    ("Requires-Dist", REQUIRES[0]),
    ("Requires-Dist", REQUIRES[1]),
    ("Provides-Extra", "socks"),
    ("Project-URL", "Source, https://example.com/demo"),
    ("Description-Content-Type", "text/markdown"),
]
DESCRIPTION = "# Demo\n\nAllowed release.\n\n    indented code\n"


def populate(index: FakePypiIndex) -> None:
    index.add_sdist("demo", "1.0", uploaded=OLD)
    index.add_wheel("demo", "1.0", uploaded=OLD)
    index.add_wheel(
        "demo",
        "1.1",
        uploaded=NOW - timedelta(days=30),
        requires_python=">=3.8",
        headers=METADATA_HEADERS,
        description=DESCRIPTION,
    )
    # A wheel added today to 1.1: held on its own, 1.1 still shown.
    index.add_wheel(
        "demo", "1.1", uploaded=NOW - timedelta(hours=2), tag="cp311-cp311-linux_x86_64"
    )
    index.add_wheel(
        "demo",
        "2.0",
        uploaded=NOW - timedelta(hours=5),
        requires_python=">=3.12",
        headers=[("Summary", SECRET), ("Requires-Dist", f"{SECRET.lower()}>=1")],
    )
    index.set_release_info(
        "demo",
        "1.1",
        summary="Demo, the allowed release",
        requires_dist=REQUIRES,
        requires_python=">=3.8",
        release_url="https://index.test/project/demo/1.1/",
    )
    index.set_release_info(
        "demo",
        "2.0",
        summary=SECRET,
        requires_dist=[f"{SECRET.lower()}>=1"],
        requires_python=">=3.12",
        release_url=f"https://index.test/project/demo/2.0/{SECRET}",
    )


async def mirror_of(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient, **switches: Any
) -> tuple[Client, FakePypiIndex]:
    index = FakePypiIndex(**switches)
    populate(index)
    await index.start(aiohttp_server)
    return await make_mirror(MIRROR_PYPI_UPSTREAM=index.url), index


async def block(client: Client, versions: str, rule_id: str = "block-1") -> None:
    services = client.app[SERVICES]
    await services.state.add_rule(
        RuleRecord(
            id=rule_id,
            kind="block",
            ecosystem="pypi",
            package="demo",
            versions=versions,
            reason="compromised release",
            created_at=NOW,
            created_by="security",
        )
    )
    await services.policy.reload()


async def get_json(client: Client, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = await client.get(path)
    raw = await response.read()
    assert SECRET.encode() not in raw
    assert SECRET.lower().encode() not in raw
    return response.status, await response.json(), dict(response.headers)


def mirror_files(client: Client, *filenames: str) -> list[str]:
    base = str(client.make_url("/pypi")).rstrip("/")
    return [f"{base}/files/demo/{name}" for name in filenames]


# `info` when the newest release is held -------------------------------------------------------


async def test_info_is_the_allowed_releases_own_document(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    client, index = await mirror_of(aiohttp_server, make_mirror)
    status, body, headers = await get_json(client, "/pypi/pypi/demo/json")
    assert status == 200
    info = body["info"]
    assert info["version"] == "1.1"
    assert info["summary"] == "Demo, the allowed release"
    assert info["requires_dist"] == REQUIRES
    assert info["requires_python"] == ">=3.8"
    assert info["release_url"] == "https://index.test/project/demo/1.1/"
    assert index.upstream.count("/pypi/demo/1.1/json") == 1
    assert [item["url"] for item in body["urls"]] == mirror_files(
        client, "demo-1.1-py3-none-any.whl"
    )
    assert headers["X-Mirror-Notice"].startswith("demo: 2 files held in quarantine")


async def test_info_is_composed_from_core_metadata_without_per_version_documents(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    client, index = await mirror_of(aiohttp_server, make_mirror, version_api=False)
    status, body, _ = await get_json(client, "/pypi/pypi/demo/json")
    assert status == 200
    info = body["info"]
    assert info["name"] == "demo"
    assert info["version"] == "1.1"
    assert info["summary"] == "Demo, the allowed release"
    assert info["requires_dist"] == REQUIRES
    assert info["requires_python"] == ">=3.8"
    assert info["release_url"] is None  # not the held release's
    assert info["author"] == "Zoë Example"
    assert info["license_expression"] == "MIT"
    assert info["classifiers"] == [
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
    ]
    assert info["provides_extra"] == ["socks"]
    assert info["project_urls"] == {"Source": "https://example.com/demo"}
    assert info["description"] == DESCRIPTION
    assert info["description_content_type"] == "text/markdown"
    assert info["yanked"] is False
    # Read from the allowed wheel's declared `.metadata`, fetched once and cached.
    wheel = index.file("demo-1.1-py3-none-any.whl")
    assert index.upstream.count(wheel.path + ".metadata") == 1
    assert index.upstream.count(index.file("demo-2.0-py3-none-any.whl").path + ".metadata") == 0
    await block(client, "==0.1")  # a new rule set: the view is rendered again
    status, again, _ = await get_json(client, "/pypi/pypi/demo/json")
    assert again["info"] == info
    assert index.upstream.count(wheel.path + ".metadata") == 1


async def test_a_wheels_metadata_is_preferred_over_an_sdists(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    index = FakePypiIndex(version_api=False)
    index.add_sdist("demo", "1.0", uploaded=OLD, metadata=True, headers=[("Summary", "sdist")])
    index.add_wheel("demo", "1.0", uploaded=OLD, headers=[("Summary", "wheel")])
    await index.start(aiohttp_server)
    index.set_release_info("demo", "1.0", summary="upstream")
    index.add_wheel("demo", "2.0", uploaded=NOW - timedelta(hours=1))
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    _, body, _ = await get_json(client, "/pypi/pypi/demo/json")
    assert body["info"]["summary"] == "wheel"
    assert index.upstream.count(index.file("demo-1.0.tar.gz").path + ".metadata") == 0


async def test_without_pep_658_files_info_says_only_what_the_index_knows(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    client, index = await mirror_of(
        aiohttp_server, make_mirror, version_api=False, metadata_files=False
    )
    _, body, _ = await get_json(client, "/pypi/pypi/demo/json")
    info = body["info"]
    assert (info["name"], info["version"], info["requires_python"]) == ("demo", "1.1", ">=3.8")
    assert info["summary"] is None
    assert info["requires_dist"] is None
    assert not [seen for seen in index.requests if seen.path.endswith(".metadata")]


async def test_without_pep_658_files_info_is_read_from_the_cached_wheel(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient, clock: FixedClock
) -> None:
    client, index = await mirror_of(
        aiohttp_server, make_mirror, version_api=False, metadata_files=False
    )
    _, body, _ = await get_json(client, "/pypi/pypi/demo/json")
    assert body["info"]["requires_dist"] is None  # the wheel is not cached: nothing known yet
    wheel = "demo-1.1-py3-none-any.whl"
    assert index.upstream.count(index.file(wheel).path) == 0  # and no wheel was fetched for it
    url = f"/pypi/files/demo/{wheel}"
    response = await client.get(url)
    assert response.status == 200
    await response.read()
    # The mirror now holds the wheel, so it reads the METADATA from it (as it serves it).
    response = await client.get(url + ".metadata")
    assert response.status == 200
    clock.advance(timedelta(seconds=31))
    _, body, _ = await get_json(client, "/pypi/pypi/demo/json")
    info = body["info"]
    assert (info["version"], info["summary"]) == ("1.1", "Demo, the allowed release")
    assert info["requires_dist"] == REQUIRES
    assert index.upstream.count(index.file(wheel).path) == 1


async def test_an_upstream_failure_on_the_metadata_file_is_retried_soon(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient, clock: FixedClock
) -> None:
    client, index = await mirror_of(aiohttp_server, make_mirror, version_api=False)
    path = index.file("demo-1.1-py3-none-any.whl").path + ".metadata"
    index.upstream.fail(path, 503)
    status, body, _ = await get_json(client, "/pypi/pypi/demo/json")
    assert status == 200
    assert body["info"]["version"] == "1.1"
    assert body["info"]["requires_dist"] is None
    index.upstream.heal(path)
    clock.advance(timedelta(seconds=31))
    _, body, _ = await get_json(client, "/pypi/pypi/demo/json")
    assert body["info"]["requires_dist"] == REQUIRES


async def test_tampered_metadata_is_never_used_nor_kept(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient, clock: FixedClock
) -> None:
    client, index = await mirror_of(aiohttp_server, make_mirror, version_api=False)
    path = index.file("demo-1.1-py3-none-any.whl").path + ".metadata"
    forged = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.1\nSummary: " + SECRET.encode()
    index.upstream.add(path, forged + b"\n")
    status, body, _ = await get_json(client, "/pypi/pypi/demo/json")  # no SECRET in it
    assert status == 200
    assert body["info"]["summary"] is None
    status, _, _ = await get_json(client, "/pypi/pypi/demo/1.1/json")
    assert status == 200
    # Not cached: once the upstream serves the declared bytes again, they are used.
    index.upstream.add(path, index.file("demo-1.1-py3-none-any.whl").metadata or b"")
    clock.advance(timedelta(seconds=31))
    _, body, _ = await get_json(client, "/pypi/pypi/demo/json")
    assert body["info"]["summary"] == "Demo, the allowed release"


# `/{version}/json` ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "switches",
    [{"version_api": False}, {"json_api": False}],
    ids=["no-per-version-documents", "no-json-api"],
)
async def test_every_allowed_version_answers_on_any_index(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient, switches: dict[str, bool]
) -> None:
    client, index = await mirror_of(aiohttp_server, make_mirror, **switches)
    status, body, headers = await get_json(client, "/pypi/pypi/demo/1.1/json")
    assert status == 200
    assert body["info"]["version"] == "1.1"
    assert body["info"]["requires_dist"] == REQUIRES
    assert body["info"]["summary"] == "Demo, the allowed release"
    assert [item["url"] for item in body["urls"]] == mirror_files(
        client, "demo-1.1-py3-none-any.whl"
    )
    wheel = index.file("demo-1.1-py3-none-any.whl")
    assert body["urls"][0]["digests"]["sha256"] == wheel.sha256
    assert body["urls"][0]["size"] == len(wheel.data)
    assert headers["X-Mirror-Notice"].startswith("demo: 1 file held in quarantine")
    status, old, headers = await get_json(client, "/pypi/pypi/demo/1.0/json")
    assert status == 200
    assert [item["filename"] for item in old["urls"]] == [
        "demo-1.0.tar.gz",
        "demo-1.0-py3-none-any.whl",
    ]
    assert "X-Mirror-Notice" not in headers
    status, held, _ = await get_json(client, "/pypi/pypi/demo/2.0/json")
    assert status == 403
    assert held["reason"] == "quarantined"
    assert "demo-2.0-py3-none-any.whl" in held["error"]
    await block(client, "==1.0")
    status, blocked, _ = await get_json(client, "/pypi/pypi/demo/1.0/json")
    assert status == 403
    assert blocked["reason"] == "blocked"
    assert blocked["block"]["reason"] == "compromised release"
    status, _, _ = await get_json(client, "/pypi/pypi/demo/9.9/json")
    assert status == 404


async def test_no_json_api_upstream_gets_a_composed_project_document(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    client, index = await mirror_of(aiohttp_server, make_mirror, json_api=False)
    status, body, headers = await get_json(client, "/pypi/pypi/demo/json")
    assert status == 200
    assert sorted(body["releases"]) == ["1.0", "1.1"]
    assert body["info"]["version"] == "1.1"
    assert body["info"]["requires_dist"] == REQUIRES
    released = body["releases"]["1.0"][0]
    item = index.file(released["filename"])
    assert released["digests"] == {"sha256": item.sha256}
    assert released["upload_time_iso_8601"].startswith(OLD.strftime("%Y-%m-%dT%H:%M:%S"))
    assert released["url"] == mirror_files(client, item.filename)[0]
    assert "X-Mirror-Notice" in headers


# the notice -----------------------------------------------------------------------------------


async def test_the_notice_is_on_filtered_answers_only(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient, clock: FixedClock
) -> None:
    client, _ = await mirror_of(aiohttp_server, make_mirror)
    await block(client, "==1.0")
    _, _, headers = await get_json(client, "/pypi/pypi/demo/json")
    notice = headers["X-Mirror-Notice"]
    assert notice.startswith("demo: 2 files held in quarantine (newest ")
    assert notice.endswith(
        "; 2 files blocked by block block-1: compromised release "
        "(demo-1.0.tar.gz, demo-1.0-py3-none-any.whl)"
    )
    assert notice.isascii()
    clock.advance(timedelta(days=4))  # out of quarantine: only the block holds files back
    response = await client.get("/pypi/pypi/demo/json")
    assert (await response.json())["info"]["version"] == "2.0"
    assert response.headers["X-Mirror-Notice"] == (
        "demo: 2 files blocked by block block-1: compromised release "
        "(demo-1.0.tar.gz, demo-1.0-py3-none-any.whl)"
    )


async def test_no_notice_when_nothing_is_held(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient, clock: FixedClock
) -> None:
    index = FakePypiIndex()
    index.add_wheel("plain", "1.0", uploaded=OLD)
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    for path in ("/pypi/pypi/plain/json", "/pypi/pypi/plain/1.0/json"):
        response = await client.get(path)
        assert response.status == 200
        assert "X-Mirror-Notice" not in response.headers


# missing optional documents -------------------------------------------------------------------


async def test_a_missing_per_version_document_is_asked_once_and_not_logged(
    aiohttp_server: AiohttpServer,
    make_mirror: MakeClient,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, index = await mirror_of(aiohttp_server, make_mirror, version_api=False)
    with caplog.at_level(logging.DEBUG, logger="mirror"):
        for round_ in range(3):
            await block(client, f"=={round_}.9", rule_id=f"block-{round_}")  # re-render
            status, body, _ = await get_json(client, "/pypi/pypi/demo/json")
            assert status == 200
            assert body["info"]["requires_dist"] == REQUIRES
            status, _, _ = await get_json(client, "/pypi/pypi/demo/1.1/json")
            assert status == 200
    assert index.upstream.count("/pypi/demo/1.1/json") == 1
    said = [record for record in caplog.records if "1.1/json" in record.getMessage()]
    # Said at most once per upstream request (the upstream client's own line), never per
    # client request, and never as a warning: an index without these documents is normal.
    assert len([record for record in said if record.levelno >= logging.INFO]) <= 1
    assert not [record for record in said if record.levelno >= logging.WARNING]
    # Remembered for cache.negative_ttl (a minute): then asked again, once.
    clock.advance(timedelta(minutes=2))
    await get_json(client, "/pypi/pypi/demo/1.1/json")
    await get_json(client, "/pypi/pypi/demo/1.1/json")
    assert index.upstream.count("/pypi/demo/1.1/json") == 2


async def test_an_html_index_without_json_api_is_said_once_per_period(
    aiohttp_server: AiohttpServer,
    make_mirror: MakeClient,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    index = FakePypiIndex(mode="html", json_api=False)
    populate(index)
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    with caplog.at_level(logging.INFO, logger="mirror"):
        for accept in ("text/html", "application/vnd.pypi.simple.v1+json", "text/html"):
            response = await client.get("/pypi/simple/demo/", headers={"Accept": accept})
            assert response.status == 404  # every file of unknown age: held
        warned = [r for r in caplog.records if "no JSON API document of demo" in r.getMessage()]
        assert len(warned) == 1
        assert warned[0].levelno == logging.WARNING
        assert index.upstream.count("/pypi/demo/json") == 1
        clock.advance(timedelta(minutes=2))
        await client.get("/pypi/simple/demo/")
        warned = [r for r in caplog.records if "no JSON API document of demo" in r.getMessage()]
        assert len(warned) == 2
    assert not [r for r in caplog.records if "no upload times" in r.getMessage()]
