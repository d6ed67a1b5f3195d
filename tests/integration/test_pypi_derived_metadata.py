"""PEP 658/714 metadata the mirror reads from wheels it has cached, for an upstream index that
declares none: nothing declared (and `.metadata` 404, no wheel download) until a client has
fetched the wheel; then every page form, in every worker process, declares the METADATA's
sha256 and `.metadata` serves exactly the wheel's METADATA bytes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.model import RuleRecord
from mirror.services import SERVICES
from tests.fakes.pypi import FakeFile, FakePypiIndex, make_wheel
from tests.integration.conftest import NOW, Client, MakeClient

OLD = NOW - timedelta(days=700)
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
WHEEL = "demo-1.0-py3-none-any.whl"
OTHER_WHEEL = "demo-1.1-py3-none-any.whl"
DECLARED_WHEEL = "demo-2.0-py3-none-any.whl"


@pytest.fixture
async def index(aiohttp_server: AiohttpServer) -> FakePypiIndex:
    index = FakePypiIndex()
    index.add_wheel("demo", "1.0", uploaded=OLD, metadata=False)
    index.add_wheel("demo", "1.1", uploaded=OLD, metadata=False)
    index.add_wheel("demo", "2.0", uploaded=OLD)  # declared upstream: served from upstream
    index.add_sdist("demo", "1.0", uploaded=OLD)
    await index.start(aiohttp_server)
    return index


@pytest.fixture
async def client(make_mirror: MakeClient, index: FakePypiIndex) -> Client:
    return await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)


def metadata_of(index: FakePypiIndex, filename: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(index.file(filename).data)) as archive:
        stem = filename.split("-py3")[0]
        return archive.read(f"{stem}.dist-info/METADATA")


async def json_files(client: Client) -> dict[str, dict[str, object]]:
    response = await client.get("/pypi/simple/demo/", headers={"Accept": JSON_TYPE})
    assert response.status == 200
    body = await response.json(content_type=None)
    return {entry["filename"]: entry for entry in body["files"]}


async def html_anchor(client: Client, filename: str) -> str:
    response = await client.get("/pypi/simple/demo/", headers={"Accept": "text/html"})
    assert response.status == 200
    text = await response.text()
    return next(line for line in text.splitlines() if f">{filename}</a>" in line)


async def declared(client: Client, filename: str) -> object:
    """The `core-metadata` the JSON page declares for `filename`, waiting (bounded) for a
    derivation in the background to land."""
    for _ in range(100):
        entry = (await json_files(client))[filename]
        if "core-metadata" in entry:
            return entry["core-metadata"]
        await asyncio.sleep(0.05)
    return None


async def test_nothing_is_declared_before_the_wheel_is_cached(
    client: Client, index: FakePypiIndex
) -> None:
    files = await json_files(client)
    assert "core-metadata" not in files[WHEEL]
    assert "dist-info-metadata" not in files[WHEEL]
    assert files[DECLARED_WHEEL]["core-metadata"] == {
        "sha256": hashlib.sha256(index.file(DECLARED_WHEEL).metadata or b"").hexdigest()
    }
    assert "data-core-metadata" not in await html_anchor(client, WHEEL)
    response = await client.get(f"/pypi/files/demo/{WHEEL}.metadata")
    assert response.status == 404
    assert "has not cached the wheel" in (await response.json())["error"]
    # No wheel was downloaded to answer it, and no upstream `.metadata` was asked for.
    assert index.upstream.count(index.file(WHEEL).path) == 0
    assert index.upstream.count(index.file(WHEEL).path + ".metadata") == 0


async def test_a_fetched_wheel_gets_its_metadata_declared_and_served(
    client: Client, index: FakePypiIndex
) -> None:
    await json_files(client)  # views rendered before the wheel is cached
    await html_anchor(client, WHEEL)
    wheel = await client.get(f"/pypi/files/demo/{WHEEL}")
    assert await wheel.read() == index.file(WHEEL).data
    expected = metadata_of(index, WHEEL)
    digest = hashlib.sha256(expected).hexdigest()

    assert await declared(client, WHEEL) == {"sha256": digest}
    files = await json_files(client)
    assert files[WHEEL]["dist-info-metadata"] == {"sha256": digest}
    assert "core-metadata" not in files[OTHER_WHEEL]  # not fetched: not declared
    anchor = await html_anchor(client, WHEEL)
    assert f'data-core-metadata="sha256={digest}"' in anchor
    assert f'data-dist-info-metadata="sha256={digest}"' in anchor

    response = await client.get(f"/pypi/files/demo/{WHEEL}.metadata")
    assert response.status == 200
    assert await response.read() == expected
    assert response.headers["ETag"] == f'"{digest}"'
    again = await client.get(
        f"/pypi/files/demo/{WHEEL}.metadata", headers={"If-None-Match": f'"{digest}"'}
    )
    assert again.status == 304
    head = await client.head(f"/pypi/files/demo/{WHEEL}.metadata")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(expected))
    # One wheel download, no upstream metadata request.
    assert index.upstream.count(index.file(WHEEL).path) == 1
    assert index.upstream.count(index.file(WHEEL).path + ".metadata") == 0


async def test_a_sibling_worker_declares_it_at_its_next_request(
    make_mirror: MakeClient, client: Client, index: FakePypiIndex
) -> None:
    sibling = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)  # same data dir
    assert "core-metadata" not in (await json_files(sibling))[WHEEL]
    await (await client.get(f"/pypi/files/demo/{WHEEL}")).read()
    digest = hashlib.sha256(metadata_of(index, WHEEL)).hexdigest()
    assert await declared(sibling, WHEEL) == {"sha256": digest}
    response = await sibling.get(f"/pypi/files/demo/{WHEEL}.metadata")
    assert await response.read() == metadata_of(index, WHEEL)


async def test_an_unchanged_page_is_not_rendered_again(
    client: Client, index: FakePypiIndex
) -> None:
    await (await client.get(f"/pypi/files/demo/{WHEEL}")).read()
    assert await declared(client, WHEEL) is not None
    first = await client.get("/pypi/simple/demo/", headers={"Accept": JSON_TYPE})
    again = await client.get(
        "/pypi/simple/demo/",
        headers={"Accept": JSON_TYPE, "If-None-Match": first.headers["ETag"]},
    )
    assert again.status == 304


async def test_a_blocked_wheel_s_metadata_is_403(client: Client, index: FakePypiIndex) -> None:
    await (await client.get(f"/pypi/files/demo/{WHEEL}")).read()
    assert await declared(client, WHEEL) is not None
    services = client.app[SERVICES]
    await services.state.add_rule(
        RuleRecord(
            id="block-1",
            kind="block",
            ecosystem="pypi",
            package="demo",
            versions="1.0",
            reason="compromised release",
            created_at=NOW,
            created_by="security",
        )
    )
    await services.policy.reload()
    response = await client.get(f"/pypi/files/demo/{WHEEL}.metadata")
    assert response.status == 403
    assert (await response.json())["reason"] == "blocked"
    assert WHEEL not in await json_files(client)


async def test_evicted_metadata_and_wheel_are_fetched_again_when_declared(
    make_mirror: MakeClient, client: Client, index: FakePypiIndex, tmp_path: Path
) -> None:
    await (await client.get(f"/pypi/files/demo/{WHEEL}")).read()
    assert await declared(client, WHEEL) is not None
    # Every blob gone (evicted), as a fresh worker process sees it.
    shutil.rmtree(tmp_path / "data" / "artifacts" / "sha256")
    fresh = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    assert "core-metadata" in (await json_files(fresh))[WHEEL]
    response = await fresh.get(f"/pypi/files/demo/{WHEEL}.metadata")
    assert response.status == 200
    assert await response.read() == metadata_of(index, WHEEL)
    assert index.upstream.count(index.file(WHEEL).path) == 2  # the wheel, fetched again


async def test_a_wheel_without_readable_metadata_is_served_but_declares_none(
    client: Client, index: FakePypiIndex
) -> None:
    # A wheel with a second dist-info directory: its METADATA is ambiguous.
    filename, data, _meta = make_wheel("demo", "3.0")
    raw = io.BytesIO(data)
    with zipfile.ZipFile(raw, "a") as archive:
        archive.writestr("evil-1.0.dist-info/METADATA", b"Name: evil\nVersion: 1.0\n")
    index.add_file(
        FakeFile(
            project="demo", version="3.0", filename=filename, data=raw.getvalue(), uploaded=OLD
        )
    )
    wheel = await client.get(f"/pypi/files/demo/{filename}")
    assert await wheel.read() == raw.getvalue()
    response = await client.get(f"/pypi/files/demo/{filename}.metadata")
    assert response.status == 404
    assert "core-metadata" not in (await json_files(client))[filename]


async def test_an_sdist_gets_no_metadata(client: Client, index: FakePypiIndex) -> None:
    await (await client.get("/pypi/files/demo/demo-1.0.tar.gz")).read()
    response = await client.get("/pypi/files/demo/demo-1.0.tar.gz.metadata")
    assert response.status == 404
    assert "core-metadata" not in (await json_files(client))["demo-1.0.tar.gz"]
