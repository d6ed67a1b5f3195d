"""PyPI risk signals through the whole app against the fake index (real wheels and sdists):
a release whose files drop the PEP 740 provenance its predecessor had is held (14 days by
default) and says so on the simple page (X-Mirror-Notice), the JSON API, the file's 403 and
explain; `note` only reports, an exemption lifts a `hold`, a block still wins; a wheel added
long after an sdist-only release is noted."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.clock import FixedClock
from mirror.model import RuleRecord
from mirror.services import SERVICES
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, Client, MakeClient

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
HTML_ACCEPT = "text/html"
DROPPED = "signed-1.1-py3-none-any.whl"
DROPPED_SDIST = "signed-1.1.tar.gz"
PUBLISHED = NOW - timedelta(days=10)  # past the tests' 3-day quarantine


def populate(index: FakePypiIndex) -> None:
    index.add_sdist("signed", "1.0", uploaded=NOW - timedelta(days=60), provenance=True)
    index.add_wheel("signed", "1.0", uploaded=NOW - timedelta(days=60), provenance=True)
    index.add_sdist("signed", "1.1", uploaded=PUBLISHED)
    index.add_wheel("signed", "1.1", uploaded=PUBLISHED)
    # An sdist-only release that gets a wheel 400 days later.
    index.add_sdist("late", "1.0", uploaded=NOW - timedelta(days=410))
    index.add_wheel("late", "1.0", uploaded=NOW - timedelta(days=10))


@pytest.fixture(params=["json", "html"])
async def index(request: pytest.FixtureRequest, aiohttp_server: AiohttpServer) -> FakePypiIndex:
    index = FakePypiIndex(mode=request.param)
    populate(index)
    await index.start(aiohttp_server)
    return index


async def mirror(
    make_mirror: MakeClient, index: FakePypiIndex, tmp_path: Path, rules: str = ""
) -> Client:
    settings = tmp_path / "mirror.toml"
    settings.write_text(rules, encoding="utf-8")
    return await make_mirror(MIRROR_PYPI_UPSTREAM=index.url, MIRROR_CONFIG=str(settings))


async def add_rule(client: Client, kind: str, versions: str, package: str = "signed") -> None:
    services = client.app[SERVICES]
    await services.state.add_rule(
        RuleRecord(
            id=f"{kind}-1",
            kind=kind,  # type: ignore[arg-type]
            ecosystem="pypi",
            package=package,
            versions=versions,
            reason="checked by security" if kind == "exemption" else "compromised release",
            created_at=NOW,
            created_by="security",
        )
    )
    await services.policy.reload()


async def page_files(client: Client, project: str) -> list[str]:
    response = await client.get(
        f"/pypi/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    assert response.status == 200
    body = await response.json(content_type=None)
    return sorted(item["filename"] for item in body["files"])


async def test_a_release_that_dropped_provenance_is_held_14_days_and_says_why(
    make_mirror: MakeClient, index: FakePypiIndex, tmp_path: Path, clock: FixedClock
) -> None:
    client = await mirror(make_mirror, index, tmp_path)
    # The simple page, in both forms: 1.1's files are held, the notice names the signal.
    for accept in (PIP_ACCEPT, HTML_ACCEPT):
        response = await client.get("/pypi/simple/signed/", headers={"Accept": accept})
        assert response.status == 200
        text = await response.text()
        assert "signed-1.0" in text
        assert "signed-1.1" not in text
        assert "provenance" not in text  # the upstream's provenance URLs are not relayed
        notice = response.headers["X-Mirror-Notice"]
        assert "2 files held for risk signal provenance-dropped" in notice
        assert "has no provenance (PEP 740); 1.0 had it" in notice
    # The file: 403 with the signal in the body, until 14 days after its upload.
    response = await client.get(f"/pypi/files/signed/{DROPPED}")
    assert response.status == 403
    body = await response.json()
    assert body["reason"] == "quarantined"
    assert body["until"].startswith((PUBLISHED + timedelta(days=14)).date().isoformat())
    assert "(risk signal provenance-dropped: quarantine extended to 14d)" in body["error"]
    assert [(s["signal"], s["action"], s["age"]) for s in body["signals"]] == [
        ("provenance-dropped", "extend", "14d")
    ]
    assert body["signals"][0]["detail"] == f"{DROPPED} has no provenance (PEP 740); 1.0 had it"
    assert index.upstream.count(index.file(DROPPED).path) == 0
    # The JSON API decides the files as the page does (its provenance comes from the page).
    api = await (await client.get("/pypi/pypi/signed/json")).json()
    assert list(api["releases"]) == ["1.0"]
    assert api["info"]["version"] == "1.0"
    release = await client.get("/pypi/pypi/signed/1.1/json")
    assert release.status == 403
    assert (await release.json())["signals"][0]["signal"] == "provenance-dropped"
    # explain, for the version and for one file.
    params = {"ecosystem": "pypi", "package": "signed", "version": "1.1"}
    explained = await (await client.get("/api/v1/explain", params=params)).json()
    assert explained["verdict"] == "quarantined"
    assert [entry["signal"] for entry in explained["signals"]] == ["provenance-dropped"]
    assert "provenance-dropped" in explained["detail"]
    one = await (await client.get("/api/v1/explain", params={**params, "file": DROPPED})).json()
    assert [entry["signal"] for entry in one["signals"]] == ["provenance-dropped"]
    assert "provenance-dropped" in one["detail"]
    # After its 14 days it is served.
    clock.advance(timedelta(days=5))
    assert await page_files(client, "signed") == sorted(
        ["signed-1.0.tar.gz", "signed-1.0-py3-none-any.whl", DROPPED, DROPPED_SDIST]
    )


async def test_note_only_reports(
    make_mirror: MakeClient, index: FakePypiIndex, tmp_path: Path
) -> None:
    client = await mirror(
        make_mirror,
        index,
        tmp_path,
        '[[risk.rules]]\nsignal = "provenance-dropped"\naction = "note"\n',
    )
    assert DROPPED in await page_files(client, "signed")
    response = await client.get(f"/pypi/files/signed/{DROPPED}")
    assert response.status == 200
    params = {"ecosystem": "pypi", "package": "signed", "version": "1.1", "file": DROPPED}
    one = await (await client.get("/api/v1/explain", params=params)).json()
    assert one["verdict"] == "allowed"
    assert [(s["signal"], s["action"]) for s in one["signals"]] == [("provenance-dropped", "note")]


async def test_an_exemption_lifts_a_hold_and_a_block_still_wins(
    make_mirror: MakeClient, index: FakePypiIndex, tmp_path: Path
) -> None:
    client = await mirror(
        make_mirror,
        index,
        tmp_path,
        '[[risk.rules]]\nsignal = "provenance-dropped"\npackage = "signed"\naction = "hold"\n',
    )
    response = await client.get(f"/pypi/files/signed/{DROPPED}")
    assert response.status == 403
    body = await response.json()
    assert body["until"] is None
    assert "is held until an admin exempts it" in body["error"]
    assert body["signals"][0]["action"] == "hold"
    await add_rule(client, "exemption", "==1.1")
    assert DROPPED in await page_files(client, "signed")
    assert (await client.get(f"/pypi/files/signed/{DROPPED}")).status == 200
    await add_rule(client, "block", "==1.1")
    refused = await client.get(f"/pypi/files/signed/{DROPPED_SDIST}")
    assert refused.status == 403
    body = await refused.json()
    assert body["reason"] == "blocked"
    assert body["signals"][0]["signal"] == "provenance-dropped"
    assert await page_files(client, "signed") == [
        "signed-1.0-py3-none-any.whl",
        "signed-1.0.tar.gz",
    ]


async def test_a_wheel_added_long_after_the_release_is_noted(
    make_mirror: MakeClient, index: FakePypiIndex, tmp_path: Path
) -> None:
    client = await mirror(make_mirror, index, tmp_path)
    wheel = "late-1.0-py3-none-any.whl"
    assert wheel in await page_files(client, "late")
    params = {"ecosystem": "pypi", "package": "late", "version": "1.0", "file": wheel}
    one = await (await client.get("/api/v1/explain", params=params)).json()
    assert [(s["signal"], s["action"]) for s in one["signals"]] == [("new-file-type", "note")]
    assert one["signals"][0]["detail"].startswith("wheel added to 1.0 on ")
    assert "400 days after its first file (sdist only before)" in one["signals"][0]["detail"]


async def test_the_json_api_made_without_the_page_is_not_kept(
    make_mirror: MakeClient, index: FakePypiIndex, tmp_path: Path, clock: FixedClock
) -> None:
    """Provenance is only on the simple page: while the page cannot be had, the JSON API
    answers from its own document (the release that dropped provenance shows), but that
    answer is not kept, so once the page is back the release is held there too."""
    client = await mirror(make_mirror, index, tmp_path)
    page = index.page_path("signed")
    index.upstream.fail(page, 500)
    api = await (await client.get("/pypi/pypi/signed/json")).json()
    assert sorted(api["releases"]) == ["1.0", "1.1"]
    index.upstream.heal(page)
    clock.advance(timedelta(minutes=5))  # past the failure back-off
    response = await client.get("/pypi/pypi/signed/json")
    assert response.status == 200
    api = await response.json()
    assert list(api["releases"]) == ["1.0"]
    assert "provenance-dropped" in response.headers["X-Mirror-Notice"]
    # The per-version answer decides with the page fetched once per request, as the file.
    before = index.upstream.count(page)
    release = await client.get("/pypi/pypi/signed/1.1/json")
    assert release.status == 403
    assert (await release.json())["signals"][0]["signal"] == "provenance-dropped"
    assert index.upstream.count(page) == before


async def test_an_exemption_of_a_release_with_one_file_on_hold_has_no_end(
    make_mirror: MakeClient, index: FakePypiIndex, tmp_path: Path
) -> None:
    """1.2's sdist keeps its provenance and is served; its wheel dropped it and a `hold`
    rule holds it: the release's exemption is the person's decision, for good."""
    index.add_sdist("signed", "1.2", uploaded=PUBLISHED, provenance=True)
    index.add_wheel("signed", "1.2", uploaded=PUBLISHED)
    settings = tmp_path / "mirror.toml"
    settings.write_text(
        '[[risk.rules]]\nsignal = "provenance-dropped"\npackage = "signed"\naction = "hold"\n',
        encoding="utf-8",
    )
    token = "alice-token-0123456789"
    client = await make_mirror(
        MIRROR_PYPI_UPSTREAM=index.url,
        MIRROR_CONFIG=str(settings),
        MIRROR_ADMIN_TOKENS=f"alice:{token}",
    )
    params = {"ecosystem": "pypi", "package": "signed", "version": "1.2"}
    explained = await (await client.get("/api/v1/explain", params=params)).json()
    assert explained["verdict"] == "allowed"  # the sdist is served
    assert sorted(item["verdict"] for item in explained["files"]) == ["allowed", "quarantined"]
    exempted = await client.post(
        "/api/v1/exemptions",
        json={"ecosystem": "pypi", "package": "signed", "versions": "1.2", "reason": "built by us"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert exempted.status == 201, await exempted.text()
    assert (await exempted.json())["exemption"]["expires_at"] is None
    assert "signed-1.2-py3-none-any.whl" in await page_files(client, "signed")
