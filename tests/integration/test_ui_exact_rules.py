""" "Exactly this version" rules through the whole app: the queue's Exempt button and the review
page's forms write `===V`, which lets through (or blocks) the version reviewed and never one
its ecosystem merely counts as equal (Maven `1.0.0` next to `1.0`, published later by whoever
controls the package); the admin API takes the same spec; the dashboard reads it as words."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.services import SERVICES
from tests.fakes.maven import FakeMavenRepository
from tests.integration.conftest import NOW, OLD, Client, MakeClient
from tests.integration.dashboard import ADMIN, DASHBOARD_TOKENS, form_post, log_in, page

FRESH = NOW - timedelta(hours=5)
JAR = "/maven/org/example/lib/{0}/lib-{0}.jar"


@pytest.fixture
async def repo(aiohttp_server: AiohttpServer) -> FakeMavenRepository:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "0.9", published=OLD)
    repo.add_version("org.example", "lib", "1.0", published=FRESH)
    # Maven counts these equal to 1.0: separate directories anyone publishing may add later.
    repo.add_version("org.example", "lib", "1.0.0", published=FRESH)
    repo.add_version("org.example", "lib", "1-ga", published=FRESH)
    await repo.start(aiohttp_server)
    return repo


@pytest.fixture
def make_mirror(make_mirror: MakeClient, repo: FakeMavenRepository) -> MakeClient:
    return partial(
        make_mirror, MIRROR_MAVEN_UPSTREAM=repo.url, MIRROR_UPSTREAM_RETRIES="0", **DASHBOARD_TOKENS
    )


async def test_the_queue_exempts_maven_1_0_and_not_1_0_0(client: Client) -> None:
    for version in ("1.0", "1.0.0", "1-ga"):
        assert (await client.get(JAR.format(version))).status == 403, version
    await log_in(client)
    fields = {
        "ecosystem": "maven",
        "package": "org.example:lib",
        "version": "1.0",
        "reason": "reviewed 1.0",
    }
    status, text, location = await form_post(
        client, "/ui/queue/exempt", fields, csrf_from="/ui/queue"
    )
    assert (status, location) == (303, "/ui/queue"), text
    assert (await client.get(JAR.format("1.0"))).status == 200
    assert (await client.get(JAR.format("1.0.0"))).status == 403  # never reviewed
    assert (await client.get(JAR.format("1-ga"))).status == 403
    [rule] = await client.app[SERVICES].state.list_rules("exemption")
    assert rule.versions == "===1.0"
    assert rule.expires_at == FRESH + timedelta(days=3)  # the default: 1.0's own maturity
    rules_page = await page(client, "/ui/rules?kind=exemption")
    assert "<td>exactly 1.0</td>" in rules_page
    assert "1 of 4 listed version(s): 1.0" in rules_page


async def test_the_review_forms_block_or_exempt_exactly_the_version(client: Client) -> None:
    await log_in(client)
    review = await page(client, "/ui/review?ecosystem=maven&package=org.example:lib&version=1.0")
    assert review.count('name="versions" value="===1.0"') == 2
    preview = await form_post(
        client,
        "/ui/rules/block/preview",
        {
            "ecosystem": "maven",
            "package": "org.example:lib",
            "versions": "===1.0",
            "reason": "bad",
        },
        csrf_from="/ui/review?ecosystem=maven&package=org.example:lib&version=1.0",
    )
    status, text, _ = preview
    assert status == 200, text
    assert "exactly 1.0" in text
    assert 'name="versions" value="===1.0"' in text  # what the confirmation stores


async def test_the_admin_api_takes_an_exact_spec(client: Client) -> None:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    body = {"ecosystem": "maven", "package": "org.example:lib", "reason": "reviewed"}
    response = await client.post(
        "/api/v1/exemptions", json={**body, "versions": "===1.0"}, headers=headers
    )
    assert response.status == 201, await response.text()
    created = (await response.json())["exemption"]
    assert created["versions"] == "===1.0"
    assert created["covers"]["versions"] == ["1.0"]
    assert created["expires_at"] is not None  # an exact version gets the default expiry
    assert (await client.get(JAR.format("1.0"))).status == 200
    assert (await client.get(JAR.format("1.0.0"))).status == 403
    response = await client.post(
        "/api/v1/blocks", json={**body, "versions": "===1.0.0"}, headers=headers
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["block"]["covers"]["versions"] == ["1.0.0"]
    response = await client.post(
        "/api/v1/blocks", json={**body, "versions": "===1.0 1.1"}, headers=headers
    )
    assert response.status == 400
    assert "===" in await response.text()
