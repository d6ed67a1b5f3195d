"""PEP 658/714 metadata the mirror reads from wheels it has cached, for an upstream index that
declares none: nothing declared (and `.metadata` 404, no wheel download) until a client has
fetched the wheel; then every page form, in every worker process, declares the METADATA's
sha256 and `.metadata` serves exactly the wheel's METADATA bytes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.ecosystems.pypi import derivedmeta
from mirror.ecosystems.pypi.derivedmeta import DerivedMetadata
from mirror.ecosystems.pypi.routes import PypiIndex
from mirror.model import ArtifactRef, RuleRecord
from mirror.services import ECOSYSTEM_ADAPTERS, SERVICES
from tests.conftest import wait_until
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


def adapter_of(client: Client) -> PypiIndex:
    adapter = client.app[ECOSYSTEM_ADAPTERS]["pypi"]
    assert isinstance(adapter, PypiIndex)
    return adapter


def derived_of(client: Client) -> DerivedMetadata:
    return adapter_of(client)._derived


async def settled(client: Client) -> None:
    """Every background derivation of `client`'s worker has ended (bounded wait)."""
    derived = derived_of(client)
    assert await wait_until(lambda: not derived._deriving, 10)


async def wheel_ref(client: Client, filename: str, project: str = "demo") -> ArtifactRef:
    adapter = adapter_of(client)
    page = (await adapter._page(project)).page
    item = page.file(filename)
    assert item is not None
    assert item.version is not None
    return adapter._file_ref(project, item, item.version, metadata=False)


def generation_of(tmp_path: Path) -> str:
    return (tmp_path / "data" / "pypi-metadata" / "demo" / "generation").read_text()


async def test_a_restarted_worker_changes_no_page_for_metadata_already_declared(
    make_mirror: MakeClient, client: Client, index: FakePypiIndex, tmp_path: Path
) -> None:
    await (await client.get(f"/pypi/files/demo/{WHEEL}")).read()
    assert await declared(client, WHEEL) is not None
    generation = generation_of(tmp_path)
    restarted = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)  # same data dir
    await (await restarted.get(f"/pypi/files/demo/{WHEEL}")).read()
    await settled(restarted)
    response = await restarted.get(f"/pypi/files/demo/{WHEEL}.metadata")
    assert await response.read() == metadata_of(index, WHEEL)
    await settled(restarted)
    assert generation_of(tmp_path) == generation


async def cache_only(client: Client, filename: str) -> Path:
    """Cache the wheel `filename` as a download does, without deriving its METADATA; the
    path of its blob."""
    ref = await wheel_ref(client, filename)
    entry, _ = await client.app[SERVICES].artifacts.store(ref)
    return entry.path


async def test_a_wheel_damaged_on_disk_yields_no_metadata_and_is_fetched_again(
    client: Client, index: FakePypiIndex
) -> None:
    blob = await cache_only(client, WHEEL)
    # One byte of another member's data flipped: the METADATA member still reads cleanly.
    damaged = bytearray(blob.read_bytes())
    damaged[40] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    response = await client.get(f"/pypi/files/demo/{WHEEL}.metadata")
    assert response.status == 404
    assert "core-metadata" not in (await json_files(client))[WHEEL]
    # The damaged copy is gone: the wheel is fetched again, whole and right.
    wheel = await client.get(f"/pypi/files/demo/{WHEEL}")
    assert await wheel.read() == index.file(WHEEL).data
    assert index.upstream.count(index.file(WHEEL).path) == 2


async def test_shutting_down_cancels_a_derivation_under_way(
    make_mirror: MakeClient, client: Client, index: FakePypiIndex
) -> None:
    ref = await wheel_ref(client, WHEEL)
    derived = derived_of(client)
    index.upstream.hold(index.file(WHEEL).path)
    derived.derive_soon(ref, wait_for_download=True)
    await index.upstream.wait_for(index.file(WHEEL).path)
    (running,) = derived._deriving.values()
    await client.close()  # the app's cleanup
    assert running.task.cancelled()
    index.upstream.release(index.file(WHEEL).path)
    derived.derive_soon(ref, wait_for_download=True)
    assert not derived._deriving
    assert await derived.metadata(ref, fetch=True) is None
    assert not derived._deriving


async def test_a_project_name_that_is_not_normalised_is_refused(client: Client) -> None:
    derived = derived_of(client)
    for name in ("../demo", "Demo", "demo/..", "", "demo-", "a_b"):
        with pytest.raises(ValueError, match="not a normalised"):
            await derived.declared(name)
        with pytest.raises(ValueError, match="not a normalised"):
            await derived.generation(name)


def add_copy(index: FakePypiIndex, project: str, filename: str) -> None:
    """The bytes of WHEEL again, under another project's file name."""
    index.add_file(
        FakeFile(
            project=project,
            version="1.0",
            filename=filename,
            data=index.file(WHEEL).data,
            uploaded=OLD,
        )
    )


async def other_metadata(client: Client, filename: str) -> tuple[int, object]:
    await (await client.get(f"/pypi/files/other/{filename}")).read()
    await settled(client)
    response = await client.get(f"/pypi/files/other/{filename}.metadata")
    page = await client.get("/pypi/simple/other/", headers={"Accept": JSON_TYPE})
    files = {entry["filename"]: entry for entry in (await page.json(content_type=None))["files"]}
    return response.status, files[filename].get("core-metadata")


async def test_the_same_bytes_under_another_project_s_name_get_no_metadata(
    client: Client, index: FakePypiIndex
) -> None:
    add_copy(index, "other", "other-1.0-py3-none-any.whl")
    await (await client.get(f"/pypi/files/demo/{WHEEL}")).read()
    assert await declared(client, WHEEL) is not None
    # Its dist-info names demo 1.0, not other 1.0: nothing to declare or serve.
    assert await other_metadata(client, "other-1.0-py3-none-any.whl") == (404, None)


async def test_a_refusal_under_another_name_does_not_hide_the_right_one(
    client: Client, index: FakePypiIndex
) -> None:
    add_copy(index, "other", "other-1.0-py3-none-any.whl")
    assert await other_metadata(client, "other-1.0-py3-none-any.whl") == (404, None)
    await (await client.get(f"/pypi/files/demo/{WHEEL}")).read()
    digest = hashlib.sha256(metadata_of(index, WHEEL)).hexdigest()
    assert await declared(client, WHEEL) == {"sha256": digest}
    response = await client.get(f"/pypi/files/demo/{WHEEL}.metadata")
    assert await response.read() == metadata_of(index, WHEEL)


async def test_a_data_dir_that_cannot_record_declarations_still_serves_the_metadata(
    client: Client, index: FakePypiIndex, tmp_path: Path
) -> None:
    # A file where the project's directory of declarations belongs: every record fails.
    directory = tmp_path / "data" / "pypi-metadata"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "demo").write_bytes(b"")
    await cache_only(client, WHEEL)
    response = await client.get(f"/pypi/files/demo/{WHEEL}.metadata")
    assert response.status == 200
    assert await response.read() == metadata_of(index, WHEEL)
    assert "core-metadata" not in (await json_files(client))[WHEEL]


async def test_metadata_requests_extract_at_most_max_deriving_wheels_at_once(
    make_mirror: MakeClient, index: FakePypiIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spy around the real read, counting the extraction threads running at once.
    running = [0, 0]  # now, most
    lock = threading.Lock()
    real_read = derivedmeta.read_wheel_metadata

    def counted_read(file: BinaryIO, filename: str) -> bytes:
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.2)
        try:
            return real_read(file, filename)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(derivedmeta, "read_wheel_metadata", counted_read)
    monkeypatch.setattr(derivedmeta, "MAX_DERIVING", 1)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    for filename in (WHEEL, OTHER_WHEEL):
        await cache_only(client, filename)
    responses = await asyncio.gather(
        *(client.get(f"/pypi/files/demo/{name}.metadata") for name in (WHEEL, OTHER_WHEEL))
    )
    assert [await response.read() for response in responses] == [
        metadata_of(index, WHEEL),
        metadata_of(index, OTHER_WHEEL),
    ]
    assert running == [0, 1]


async def test_a_declared_metadata_request_fetches_after_a_derivation_that_may_not(
    make_mirror: MakeClient,
    client: Client,
    index: FakePypiIndex,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await (await client.get(f"/pypi/files/demo/{WHEEL}")).read()
    assert await declared(client, WHEEL) is not None
    shutil.rmtree(tmp_path / "data" / "artifacts" / "sha256")  # wheel and METADATA evicted
    fresh = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    derived = derived_of(fresh)
    ref = await wheel_ref(fresh, WHEEL)
    # A derivation that may not download (after a ranged GET) is under way, held at its
    # look-up of the cached wheel until the `.metadata` request waits for it.
    gate = asyncio.Event()
    real_wheel_entry = derived._wheel_entry

    async def held_wheel_entry(wheel: ArtifactRef, *, fetch: bool) -> object:
        if not fetch:
            await gate.wait()
        return await real_wheel_entry(wheel, fetch=fetch)

    monkeypatch.setattr(derived, "_wheel_entry", held_wheel_entry)
    derived.derive_soon(ref, wait_for_download=False)
    # As the `.metadata` route asks for metadata its page declares.
    request = asyncio.ensure_future(derived.metadata(ref, fetch=True))
    await asyncio.sleep(0.5)  # the request reaches the running derivation
    assert not request.done()
    gate.set()
    found = await asyncio.wait_for(request, 10)
    assert found is not None
    assert found.data == metadata_of(index, WHEEL)
    assert index.upstream.count(index.file(WHEEL).path) == 2
