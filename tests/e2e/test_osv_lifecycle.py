"""`mirror import-osv` over a feed (the OSV malicious-packages layout) as a directory and as a
zip, against a real `mirror serve` with npm, PyPI and Maven upstreams: the first import
blocks what the advisories list; a second one, after the feed withdrew one advisory and
widened another, lifts and updates exactly those, and leaves hand-made blocks alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.conftest import StartMirror
from tests.e2e.test_cli import TOKEN, Cli
from tests.fakes.maven import FakeMavenRepository
from tests.fakes.npm import FakeNpmRegistry
from tests.fakes.osvfeed import FEED, malicious, pypi_range, write_feed
from tests.fakes.pypi import FakePypiIndex

pytestmark = pytest.mark.e2e


@pytest.fixture
async def cli(aiohttp_server: AiohttpServer, start_mirror: StartMirror) -> Cli:
    old = datetime.now(UTC) - timedelta(days=100)
    npm = FakeNpmRegistry()
    npm.add_version("evil-npm", "1.0.0", published=old)
    npm.add_version("hand-pkg", "1.0.0", published=old)
    await npm.start(aiohttp_server)
    pypi = FakePypiIndex()
    for version in ("0.5", "1.5", "2.5"):
        pypi.add_wheel("evil-py", version, uploaded=old)
    await pypi.start(aiohttp_server)
    maven = FakeMavenRepository()
    maven.add_version("org.evil", "lib", "1.0", published=old)
    await maven.start(aiohttp_server)
    mirror = await start_mirror(
        {
            "MIRROR_NPM_UPSTREAM": npm.url,
            "MIRROR_PYPI_UPSTREAM": pypi.url,
            "MIRROR_MAVEN_UPSTREAM": maven.url,
            "MIRROR_QUARANTINE": "3d",
            "MIRROR_ADMIN_TOKENS": f"ops:{TOKEN}",
            "MIRROR_ACCESS_LOG": "false",
        }
    )
    return Cli(mirror)


async def blocks(cli: Cli) -> dict[tuple[str, str], tuple[str, str]]:
    """(ecosystem, package) → (versions, id) of every block the mirror holds."""
    listed = (await cli("blocks", "--json")).json()["blocks"]
    return {(b["ecosystem"], b["package"]): (b["versions"], b["id"]) for b in listed}


@pytest.mark.parametrize("form", ["directory", "zip"])
async def test_a_feed_imported_twice_lifts_the_withdrawn_and_updates_the_widened(
    cli: Cli, tmp_path: Path, form: str
) -> None:
    hand = await cli("block", "npm", "hand-pkg", "1.0.0", "--reason", "MAL-2026-3 looked bad")
    assert hand.code == 0, hand.err
    feed = write_feed(tmp_path, FEED, form)

    first = await cli("import-osv", str(feed), "--json")
    assert first.code == 0, first.err
    answer = first.json()
    assert answer["advisories"] == 4
    assert answer["unsupported"] == 1
    assert "MAL-2026-4: crates.io is not served here" in answer["notes"]
    assert answer["outcomes"] == {
        "MAL-2026-1": "new", "MAL-2026-2": "new", "MAL-2026-3": "new", "MAL-2026-4": "skipped",
    }  # fmt: skip
    before = await blocks(cli)
    assert {key: versions for key, (versions, _) in before.items()} == {
        ("npm", "evil-npm"): "1.0.0",
        ("pypi", "evil-py"): "<1.0",
        ("maven", "org.evil:lib"): "[1.0]",
        ("npm", "hand-pkg"): "1.0.0",
    }
    assert (await cli("explain", "pypi", "evil-py==1.5", "--json")).json()["verdict"] == "allowed"

    # The feed withdraws the Maven advisory and widens the PyPI one.
    changed = dict(FEED)
    changed["maven/org.evil:lib/MAL-2026-3.json"] = {
        **FEED["maven/org.evil:lib/MAL-2026-3.json"], "withdrawn": "2026-11-30T00:00:00Z",
    }  # fmt: skip
    changed["pypi/evil-py/MAL-2026-2.json"] = malicious(
        "MAL-2026-2", "PyPI", "evil-py", **pypi_range("2.0")
    )
    feed = write_feed(tmp_path, changed, form)

    # Without the write token nothing can be created or deleted: the old range is kept
    # rather than removed without its replacement, and the command fails.
    refused = await cli("import-osv", str(feed), "--json", token=None)
    assert refused.code == 1
    actions = {(row["action"], row["package"]) for row in refused.json()["blocks"]}
    assert ("kept", "evil-py") in actions
    assert ("failed", "org.evil:lib") in actions
    assert await blocks(cli) == before

    dry = await cli("import-osv", str(feed), "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert sorted((row["action"], row["package"]) for row in dry.json()["blocks"]) == [
        ("exists", "evil-npm"),
        ("would create", "evil-py"),
        ("would lift", "org.evil:lib"),
        ("would remove", "evil-py"),
    ]
    assert await blocks(cli) == before  # a dry run changes nothing

    second = await cli("import-osv", str(feed))
    assert second.code == 0, second.err
    assert "advisories: 1 lifted, 1 skipped, 1 unchanged, 1 updated" in second.out
    assert "1 unsupported ecosystem entry(ies) skipped" in second.out
    after = await blocks(cli)
    assert {key: versions for key, (versions, _) in after.items()} == {
        ("npm", "evil-npm"): "1.0.0",
        ("pypi", "evil-py"): "<2.0",
        ("npm", "hand-pkg"): "1.0.0",
    }
    assert after[("npm", "evil-npm")] == before[("npm", "evil-npm")]  # untouched, same id
    assert after[("npm", "hand-pkg")] == before[("npm", "hand-pkg")]
    assert (await cli("explain", "pypi", "evil-py==1.5", "--json")).json()["verdict"] == "blocked"
    lifted = await cli("explain", "maven", "org.evil:lib:1.0", "--json")
    assert lifted.json()["verdict"] == "allowed", lifted.out

    audit = (await cli("audit", "--json", "--actor", "ops")).json()["entries"]
    deletions = {entry["target"] for entry in audit if entry["action"] == "block.delete"}
    assert deletions == {before[("maven", "org.evil:lib")][1], before[("pypi", "evil-py")][1]}

    again = await cli("import-osv", str(feed), "--json")
    assert again.json()["outcomes"] == {
        "MAL-2026-1": "unchanged", "MAL-2026-2": "unchanged", "MAL-2026-3": "withdrawn",
        "MAL-2026-4": "skipped",
    }  # fmt: skip
    assert await blocks(cli) == after
