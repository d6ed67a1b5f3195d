"""A hostile upstream's publish times (far future, the ends of the calendar, offsets that leave
it in UTC, garbage): every document still serves, the version is held, never a 500."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, MakeClient

# Time texts as an upstream could write them; each must make its version held.
HOSTILE_TEXTS: list[Any] = [
    "9999-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59-23:59",  # past the end of the calendar once in UTC
    "0001-01-01T00:00:00+23:59",  # before its start
    "+275760-09-13T00:00:00.000Z",  # JavaScript's own largest date
    "2026-13-45T99:99:99Z",
    "not a time",
    "",
    12345,
    None,
    ["2020-01-01"],
]


class HostileNpmRegistry(FakeNpmRegistry):
    """Writes `hostile[version]` as the version's `time` entry, exactly as given."""

    def __init__(self) -> None:
        super().__init__()
        self.hostile: dict[str, Any] = {}

    def packument(self, name: str) -> dict[str, Any]:
        document = super().packument(name)
        for version, text in self.hostile.items():
            if version in document["versions"]:
                document["time"][version] = text
        return document


class HostilePypiIndex(FakePypiIndex):
    """Writes `hostile[filename]` as the file's `upload-time` on the simple page and its upload
    times in the JSON API (where the mirror looks when the page lacks one), exactly as given."""

    def __init__(self) -> None:
        super().__init__()
        self.hostile: dict[str, Any] = {}

    def page_json(self, project: str) -> dict[str, Any]:
        page = super().page_json(project)
        for entry in page["files"]:
            if entry["filename"] in self.hostile:
                entry["upload-time"] = self.hostile[entry["filename"]]
        return page

    def _api_file(self, item: Any) -> dict[str, Any]:
        entry = super()._api_file(item)
        if item.filename in self.hostile:
            entry["upload_time"] = entry["upload_time_iso_8601"] = self.hostile[item.filename]
        return entry


class HostileMavenRepository(FakeMavenRepository):
    """Sends `hostile[path]` as the file's `Last-Modified` header, exactly as given."""

    def __init__(self) -> None:
        super().__init__()
        self.hostile: dict[str, str] = {}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await super()._handle(request)
        text = self.hostile.get(request.rel_url.raw_path.lstrip("/"))
        if text is not None:
            response.headers["Last-Modified"] = text
        return response


async def test_npm_packument_with_hostile_times_serves_and_holds_them(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    registry = HostileNpmRegistry()
    registry.add_version("hostile", "1.0.0", published=OLD)
    for index, text in enumerate(HOSTILE_TEXTS):
        version = f"2.0.{index}"
        registry.add_version("hostile", version, published=OLD)
        registry.hostile[version] = text
    # Only hostile versions: nothing visible, a 404 saying so, never a 500.
    registry.add_version("only-hostile", "1.0.0", published=datetime(9999, 12, 31, tzinfo=UTC))
    await registry.start(aiohttp_server)
    client = await make_mirror(MIRROR_NPM_UPSTREAM=registry.url)

    response = await client.get("/npm/hostile")
    assert response.status == 200, await response.text()
    document = await response.json()
    assert sorted(document["versions"]) == ["1.0.0"]
    assert document["dist-tags"]["latest"] == "1.0.0"
    for index in range(len(HOSTILE_TEXTS)):
        tarball = await client.get(f"/npm/hostile/-/hostile-2.0.{index}.tgz")
        assert tarball.status == 403, (HOSTILE_TEXTS[index], await tarball.text())
        explain = await client.get(
            "/api/v1/explain", params={"ecosystem": "npm", "package": "hostile",
                                       "version": f"2.0.{index}"},
        )  # fmt: skip
        assert explain.status < 500, await explain.text()

    nothing = await client.get("/npm/only-hostile")
    assert nothing.status == 404, await nothing.text()
    assert "quarantine" in await nothing.text()


async def test_pypi_page_with_hostile_upload_times_serves_and_holds_them(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    index = HostilePypiIndex()
    index.add_sdist("hostile", "1.0", uploaded=OLD)
    for number, text in enumerate(HOSTILE_TEXTS):
        item = index.add_wheel("hostile", f"2.{number}", uploaded=OLD)
        index.hostile[item.filename] = text
    index.add_wheel("far", "1.0", uploaded=datetime.max.replace(tzinfo=UTC))
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)

    response = await client.get(
        "/pypi/simple/hostile/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    assert response.status == 200, await response.text()
    page = await response.json()
    assert [entry["filename"] for entry in page["files"]] == ["hostile-1.0.tar.gz"]
    for name in index.hostile:
        refused = await client.get(f"/pypi/files/hostile/{name}")
        assert refused.status == 403, (name, await refused.text())

    nothing = await client.get("/pypi/simple/far/")
    assert nothing.status == 404, await nothing.text()  # nothing visible, and it says why
    assert "available 9999-12-31" in (await nothing.json())["error"]
    api = await client.get("/pypi/pypi/far/json")
    assert api.status < 500, await api.text()


@pytest.mark.parametrize(
    ("published", "header"),
    [
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), None),
        (NOW + timedelta(days=365), None),  # "in the future": held until published + age
        (OLD, "Fri, 31 Dec 9999 23:59:59 -2359"),  # past the end of the calendar in UTC
        (OLD, "Fri, 31 Dec 99999 23:59:59 GMT"),
        (OLD, "not a time"),
        (OLD, ""),
    ],
)
async def test_maven_pom_with_a_hostile_last_modified_holds_the_version(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer, published: datetime, header: str | None
) -> None:
    repo = HostileMavenRepository()
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    repo.add_version("org.example", "lib", "2.0.0", published=published)
    if header is not None:
        repo.hostile["org/example/lib/2.0.0/lib-2.0.0.pom"] = header
    await repo.start(aiohttp_server)
    client = await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url, MIRROR_UPSTREAM_RETRIES="0")

    jar = await client.get("/maven/org/example/lib/2.0.0/lib-2.0.0.jar")
    assert jar.status == 403, await jar.text()
    metadata = await client.get("/maven/org/example/lib/maven-metadata.xml")
    assert metadata.status == 200, await metadata.text()
    text = await metadata.text()
    assert "<latest>1.0.0</latest>" in text
    assert "2.0.0" not in text
    old = await client.get("/maven/org/example/lib/1.0.0/lib-1.0.0.jar")
    assert old.status == 200


def test_hostile_texts_are_json() -> None:
    json.dumps(HOSTILE_TEXTS)  # the fakes send them as they are


async def test_a_quarantine_age_of_millennia_saturates_instead_of_a_500(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.0.0", published=OLD)
    await repo.start(aiohttp_server)
    client = await make_mirror(
        MIRROR_MAVEN_UPSTREAM=repo.url,
        MIRROR_UPSTREAM_RETRIES="0",
        MIRROR_QUARANTINE="99999999d",  # past the end of the calendar from any publish time
    )

    metadata = await client.get("/maven/org/example/lib/maven-metadata.xml")
    assert metadata.status == 404, await metadata.text()  # every version held, and it says so
    jar = await client.get("/maven/org/example/lib/1.0.0/lib-1.0.0.jar")
    assert jar.status == 403, await jar.text()
    assert "9999-12-31" in (await jar.json())["error"]


async def test_a_quarantine_age_of_millennia_serves_npm_and_pypi(
    make_mirror: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    registry = FakeNpmRegistry()
    registry.add_version("aged", "1.0.0", published=OLD)
    await registry.start(aiohttp_server)
    index = FakePypiIndex()
    index.add_wheel("aged", "1.0", uploaded=OLD)
    await index.start(aiohttp_server)
    client = await make_mirror(
        MIRROR_NPM_UPSTREAM=registry.url,
        MIRROR_PYPI_UPSTREAM=index.url,
        MIRROR_QUARANTINE="99999999d",
    )

    for path, status in [
        ("/npm/aged", 404),
        ("/npm/aged/-/aged-1.0.0.tgz", 403),
        ("/pypi/simple/aged/", 404),
        ("/pypi/files/aged/aged-1.0-py3-none-any.whl", 403),
        ("/pypi/pypi/aged/json", 404),
    ]:
        response = await client.get(path)
        assert response.status == status, (path, await response.text())
