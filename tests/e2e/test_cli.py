"""The admin commands of the `mirror` CLI as a real subprocess against `mirror serve` (with a
fake npm upstream): tables, `--json`, exit codes and the server's messages on refusal."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from mirror.cli import client, queries, tables
from mirror.config import load_config
from mirror.model import ImpactRow
from mirror.state import create_state
from mirror.takedowns import Takedown, event_of
from tests.conftest import empty_redis_db, free_port
from tests.e2e.conftest import RunningMirror, StartMirror
from tests.fakes.npm import FakeNpmRegistry

pytestmark = pytest.mark.e2e

TOKEN = "cli-token-0123456789abcdef"
CLI_TIMEOUT = 60


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    mirror: RunningMirror

    async def __call__(self, *args: str, token: str | None = TOKEN, url: str | None = None) -> Run:
        env = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
        env["MIRROR_URL"] = url or self.mirror.url
        if token is not None:
            env["MIRROR_TOKEN"] = token
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mirror", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(CLI_TIMEOUT):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail(f"mirror {' '.join(args)} did not finish in {CLI_TIMEOUT} s")
        return Run(process.returncode or 0, out.decode(), err.decode())


@pytest.fixture
async def cli(aiohttp_server: AiohttpServer, start_mirror: StartMirror) -> Cli:
    now = datetime.now(UTC)
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=now - timedelta(days=200))
    registry.add_version("left-pad", "1.3.0", published=now - timedelta(days=30))
    registry.add_version("left-pad", "1.4.0", published=now - timedelta(hours=5))
    await registry.start(aiohttp_server)
    mirror = await start_mirror(
        {
            "MIRROR_NPM_UPSTREAM": registry.url,
            "MIRROR_QUARANTINE": "3d",
            "MIRROR_ADMIN_TOKENS": f"ops:{TOKEN}",
            "MIRROR_ACCESS_LOG": "false",
        }
    )
    return Cli(mirror)


async def test_block_list_explain_unblock(cli: Cli) -> None:
    blocked = await cli("block", "npm", "left-pad", "1.3.0", "--reason", "compromised release")
    assert blocked.code == 0, blocked.err
    match = re.match(r"blocked npm left-pad 1\.3\.0 \(id (b-[0-9a-f]{12})\)", blocked.out)
    assert match, blocked.out
    block_id = match.group(1)
    assert "covers now: 1.3.0 (1 of 3 versions upstream lists)" in blocked.out
    assert "no recorded downloads" in blocked.out

    table = await cli("blocks")
    assert table.code == 0
    header, row = table.out.splitlines()
    assert header.split() == [
        "ID", "ECOSYSTEM", "PACKAGE", "VERSIONS", "EXPIRES", "BY", "COVERS", "NOW", "REASON",
    ]  # fmt: skip
    assert row.split()[:7] == [block_id, "npm", "left-pad", "1.3.0", "never", "ops", "1.3.0"]
    assert row.endswith("compromised release")

    explained = await cli("explain", "npm", "left-pad@1.3.0")
    assert explained.code == 0, explained.err
    assert explained.out.startswith("npm left-pad 1.3.0: blocked")
    assert block_id in explained.out
    assert "covers now: 1.3.0" in explained.out
    as_json = (await cli("explain", "npm", "left-pad", "1.3.0", "--json")).json()
    assert as_json["verdict"] == "blocked"
    assert as_json["rule"]["id"] == block_id
    assert (as_json["signals"], as_json["risk"]) == ([], None)  # no risk signal: none listed
    assert "signals:" not in explained.out

    removed = await cli("unblock", block_id)
    assert removed.code == 0
    assert removed.out.strip() == f"removed block {block_id}"
    assert (await cli("blocks", "--json")).json() == {"blocks": []}
    assert (await cli("blocks")).out.strip() == "(none)"
    allowed = await cli("explain", "npm", "left-pad@1.3.0", "--json")
    assert allowed.json()["verdict"] == "allowed"


async def test_blocks_in_each_ecosystems_syntax(cli: Cli) -> None:
    for args in (
        ("pypi", "requests", ">=2.99"),
        ("maven", "org.example:lib", "[1.0,1.2)"),
        ("npm", "@evilscope/*", "*"),
    ):
        result = await cli("block", *args, "--reason", "bad", "--expires", "7d", "--json")
        assert result.code == 0, result.err
        block = result.json()["block"]
        assert (block["ecosystem"], block["package"], block["versions"]) == args
        assert block["expires_at"] is not None
    maven = (await cli("blocks", "--ecosystem", "maven", "--json")).json()["blocks"]
    assert [block["versions"] for block in maven] == ["[1.0,1.2)"]


async def test_exempt_and_unexempt(cli: Cli) -> None:
    result = await cli("exempt", "npm", "left-pad", "1.4.0", "--reason", "hotfix")
    assert result.code == 0, result.err
    match = re.match(
        r"exempted npm left-pad 1\.4\.0 until (\S+) \(id (e-[0-9a-f]{12})\)", result.out
    )
    assert match, result.out
    until = datetime.fromisoformat(match.group(1))
    assert timedelta(days=2, hours=18) < until - datetime.now(UTC) <= timedelta(days=2, hours=19)
    assert (await cli("explain", "npm", "left-pad@1.4.0", "--json")).json()["verdict"] == "exempted"
    listed = await cli("exemptions")
    assert match.group(2) in listed.out
    assert (await cli("unexempt", match.group(2))).code == 0
    explained = (await cli("explain", "npm", "left-pad@1.4.0", "--json")).json()
    assert explained["verdict"] == "quarantined"

    explicit = await cli("exempt", "npm", "left-pad", "^1.0.0", "--reason", "r", "--until", "2d")
    assert explicit.code == 0, explicit.err


async def test_freeze_and_unfreeze(cli: Cli) -> None:
    cutoff = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%dT%H:%MZ")
    result = await cli(
        "freeze", "npm", "--published-after", cutoff, "--until", "3d", "--reason", "worm",
        "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    freeze = result.json()["freeze"]
    assert freeze["package"] == "*"
    explained = (await cli("explain", "npm", "left-pad@1.3.0", "--json")).json()
    assert explained["verdict"] == "quarantined"
    assert "worm" in explained["detail"]
    table = await cli("freezes")
    assert table.out.splitlines()[0].split()[:5] == [
        "ID",
        "ECOSYSTEM",
        "PACKAGE",
        "PUBLISHED",
        "AFTER",
    ]
    assert freeze["id"] in table.out
    assert (await cli("unfreeze", freeze["id"])).code == 0
    assert (await cli("freezes", "--json")).json() == {"freezes": []}


async def test_impact_and_audit(cli: Cli) -> None:
    async with aiohttp.ClientSession() as session:
        tarball = f"{cli.mirror.url}/npm/left-pad/-/left-pad-1.3.0.tgz"
        async with session.get(tarball) as response:
            assert response.status == 200
    impact: dict[str, Any] = {}
    for _ in range(50):  # the ledger is written just after the response
        result = await cli("impact", "npm", "left-pad", "1.3.0", "--json")
        assert result.code == 0, result.err
        impact = result.json()
        if impact["downloads"]:
            break
        await asyncio.sleep(0.1)
    assert impact["clients"] == ["127.0.0.1"]
    table = await cli("impact", "npm", "left-pad", "--since", "1h")
    assert "already downloaded by 1 client(s)" in table.out
    assert "left-pad-1.3.0.tgz" in table.out

    blocked = await cli("block", "npm", "left-pad", "<1.4.0", "--reason", "bad")
    assert "already downloaded by 1 client(s)" in blocked.out
    audit = await cli("audit")
    assert audit.code == 0, audit.err
    header, row = audit.out.splitlines()
    assert header.split() == ["AT", "ACTOR", "CLIENT", "ACTION", "TARGET", "WHAT"]
    assert row.split()[1:4] == ["ops", "127.0.0.1", "block.create"]
    entries = (await cli("audit", "--json", "--limit", "1")).json()["entries"]
    assert entries[0]["after"]["versions"] == "<1.4.0"
    rule_id = entries[0]["target"]
    await cli("block", "npm", "other", "1.0.0", "--reason", "churn")
    found = (await cli("audit", "--json", "--target", rule_id, "--actor", "ops")).json()
    assert [(e["action"], e["target"]) for e in found["entries"]] == [("block.create", rule_id)]
    window = await cli("audit", "--since", "1h", "--until", "2000-01-01")
    assert window.code == 1
    assert "until: must be later than since" in window.err
    paged = await cli("audit", "--limit", "1")
    assert "older entries: mirror audit --cursor " in paged.out


async def test_refusals_exit_1_with_the_servers_message(cli: Cli) -> None:
    no_token = await cli("block", "npm", "left-pad", "1.3.0", "--reason", "x", token=None)
    assert no_token.code == 1
    assert "needs an admin token" in no_token.err
    assert "HTTP 401" in no_token.err
    wrong = await cli("block", "npm", "left-pad", "1.3.0", "--reason", "x", token="w" * 30)
    assert wrong.code == 1
    assert "not valid" in wrong.err
    bad_spec = await cli("block", "npm", "left-pad", ">=>1", "--reason", "x")
    assert bad_spec.code == 1
    assert bad_spec.err.startswith("mirror: versions:")
    blank_reason = await cli("block", "npm", "left-pad", "1.0.0", "--reason", " ")
    assert blank_reason.code == 1
    assert "reason:" in blank_reason.err
    bad_time = await cli("block", "npm", "left-pad", "1.0.0", "--reason", "x", "--expires", "soon")
    assert bad_time.code == 1
    assert "expires:" in bad_time.err
    missing = await cli("unblock", "b-000000000000")
    assert missing.code == 1
    assert "b-000000000000" in missing.err
    audit = await cli("audit", token=None)
    assert audit.code == 1
    unknown = await cli("explain", "npm", "left-pad@9.9.9")
    assert unknown.code == 1
    assert "9.9.9" in unknown.err
    down = await cli("blocks", url=f"http://127.0.0.1:{free_port()}")
    assert down.code == 1
    assert "cannot reach the mirror" in down.err
    assert (await cli("blocks", "--json")).json() == {"blocks": []}


async def test_flags_override_the_environment(cli: Cli) -> None:
    result = await cli(
        "block", "npm", "left-pad", "1.0.0", "--reason", "x", "--url", cli.mirror.url,
        "--token", TOKEN, token="w" * 30, url=f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert result.code == 0, result.err


@pytest.mark.parametrize(
    "args",
    [
        ("block", "npm", "left-pad", "1.0.0"),  # no --reason
        ("block", "cargo", "serde", "1.0", "--reason", "x"),
        ("explain", "npm", "left-pad"),
        ("explain", "maven", "lib:1.0"),
        ("freeze", "npm", "--until", "1d", "--reason", "x"),
        ("unblock",),
        ("audit", "--limit", "many"),
        ("blocks", "--url", "ftp://127.0.0.1/"),
    ],
)
async def test_usage_errors_exit_2(cli: Cli, args: tuple[str, ...]) -> None:
    result = await cli(*args)
    assert result.code == 2, result
    assert "usage" in result.err


# pure parts of the client ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ecosystem", "text", "expected"),
    [
        ("npm", "axios@1.14.1", ("axios", "1.14.1")),
        ("npm", "@scope/name@1.0.0-rc.1", ("@scope/name", "1.0.0-rc.1")),
        ("pypi", "requests==2.31.0", ("requests", "2.31.0")),
        ("maven", "org.example:lib:1.0", ("org.example:lib", "1.0")),
    ],
)
def test_split_subject(ecosystem: str, text: str, expected: tuple[str, str]) -> None:
    assert queries.split_subject(ecosystem, text) == expected


@pytest.mark.parametrize(
    ("ecosystem", "text"),
    [("npm", "@scope/name"), ("npm", "axios@"), ("pypi", "requests"), ("maven", "lib:1.0")],
)
def test_split_subject_refuses(ecosystem: str, text: str) -> None:
    with pytest.raises(client.UsageError):
        queries.split_subject(ecosystem, text)


def test_format_table_aligns_columns() -> None:
    table = tables.format_table(("ID", "WHO", "WHY"), [("b-1", "alice", "x"), ("b-22", None, "y")])
    assert table.splitlines() == ["ID    WHO    WHY", "b-1   alice  x", "b-22         y"]
    assert tables.format_table(("ID",), []) == "(none)"


async def test_preflight_says_which_pins_would_be_refused(cli: Cli, tmp_path: Path) -> None:
    lock = {
        "name": "app",
        "lockfileVersion": 3,
        "packages": {
            "": {"name": "app", "version": "1.0.0"},
            "node_modules/left-pad": {"version": "1.3.0"},
            "node_modules/a/node_modules/left-pad": {"version": "1.4.0"},
        },
    }
    lockfile = tmp_path / "package-lock.json"
    lockfile.write_text(json.dumps(lock), encoding="utf-8")
    refused = await cli("preflight", str(lockfile))
    assert refused.code == 1, refused.err
    header, row, summary = refused.out.splitlines()
    assert header.split()[:4] == ["PACKAGE", "VERSION", "VERDICT", "UNTIL"]
    assert row.split()[:3] == ["left-pad", "1.4.0", "quarantined"]
    assert "in quarantine until" in row
    assert summary == "2 pinned version(s) checked: 1 would be refused"
    as_json = (await cli("preflight", str(lockfile), "--json")).json()
    assert [r["version"] for r in as_json["refused"]] == ["1.4.0"]
    # The API answers a CI system without the CLI with the same report.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{cli.mirror.url}/api/v1/preflight",
            data=lockfile.read_bytes(),
            params={"name": str(lockfile)},
        ) as response,
    ):
        assert response.status == 200
        assert await response.json() == as_json

    lock["packages"].pop("node_modules/a/node_modules/left-pad")
    lockfile.write_text(json.dumps(lock), encoding="utf-8")
    fine = await cli("preflight", str(lockfile), token=None)
    assert fine.code == 0, fine.err
    assert fine.out.strip() == "1 pinned version(s) checked: all would install"

    unknown = await cli("preflight", str(tmp_path / "Cargo.lock"))
    assert unknown.code == 2
    assert "cannot read" in unknown.err

    # Any file name: the format is read from the content, and named in --json.
    renamed = tmp_path / "lock-from-prod.json"
    renamed.write_text(json.dumps(lock), encoding="utf-8")
    detected = (await cli("preflight", str(renamed), "--json")).json()
    assert detected["files"] == [{"file": str(renamed), "format": "package-lock.json", "pins": 1}]

    notes = tmp_path / "notes.txt"
    notes.write_text("Install the app with pip.\n", encoding="utf-8")
    unreadable = await cli("preflight", str(notes))
    assert unreadable.code == 2
    assert f"{notes}: not a lockfile, dependency list or SBOM this command reads" in unreadable.err
    assert "formats: package-lock.json, yarn.lock, pnpm-lock.yaml, requirements" in unreadable.err
    forced = await cli("preflight", "--format", "cyclonedx", str(renamed))
    assert forced.code == 2
    assert "a CycloneDX document is a JSON object" in forced.err


async def test_import_osv_blocks_what_an_advisory_lists_once(cli: Cli, tmp_path: Path) -> None:
    advisory = {
        "id": "GHSA-demo-0001",
        "summary": "credential theft in left-pad",
        "affected": [
            {
                "package": {"ecosystem": "npm", "name": "left-pad"},
                "ranges": [
                    {"type": "SEMVER", "events": [{"introduced": "1.1.0"}, {"fixed": "1.4.0"}]}
                ],
            },
            {"package": {"ecosystem": "crates.io", "name": "serde"}},
        ],
    }
    path = tmp_path / "GHSA-demo-0001.json"
    path.write_text(json.dumps(advisory), encoding="utf-8")

    dry = await cli("import-osv", str(path), "--dry-run")
    assert dry.code == 0, dry.err
    assert "would create" in dry.out
    assert (await cli("blocks", "--json")).json() == {"blocks": []}

    imported = await cli("import-osv", str(path))
    assert imported.code == 0, imported.err
    header, row, *rest = imported.out.splitlines()
    assert header.split() == ["ACTION", "ECOSYSTEM", "PACKAGE", "VERSIONS", "ID"]
    assert row.split()[:5] == ["created", "npm", "left-pad", ">=1.1.0", "<1.4.0"]
    assert "skipped: GHSA-demo-0001: crates.io is not served here" in rest
    explained = (await cli("explain", "npm", "left-pad@1.3.0", "--json")).json()
    assert explained["verdict"] == "blocked"
    assert "GHSA-demo-0001" in explained["detail"]
    assert (await cli("explain", "npm", "left-pad@1.0.0", "--json")).json()["verdict"] == "allowed"

    again = await cli("import-osv", str(path), "--json")
    assert again.code == 0, again.err
    assert [row["action"] for row in again.json()["blocks"]] == ["exists"]
    assert len((await cli("blocks", "--json")).json()["blocks"]) == 1

    no_token = await cli("import-osv", str(path), token=None)
    assert no_token.code == 0  # nothing new to create: reads need no token
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    assert (await cli("import-osv", str(broken))).code == 2


# what a rule covers, pages of impact, secrets -------------------------------------------------


async def test_a_block_covering_no_listed_version_says_so(cli: Cli) -> None:
    blocked = await cli("block", "npm", "left-pad", "9.9.9", "--reason", "typo")
    assert blocked.code == 0, blocked.err
    assert "WARNING: left-pad 9.9.9 covers no version the upstream lists" in blocked.out
    table = await cli("blocks")
    assert "NONE (covers no version the upstream lists)" in table.out
    as_json = (await cli("blocks", "--json")).json()
    assert as_json["blocks"][0]["covers"]["versions"] == []


async def test_impact_prints_where_the_next_page_is(cli: Cli) -> None:
    async with aiohttp.ClientSession() as session:
        for version in ("1.0.0", "1.3.0"):
            tarball = f"{cli.mirror.url}/npm/left-pad/-/left-pad-{version}.tgz"
            async with session.get(tarball) as response:
                assert response.status == 200
    first: dict[str, Any] = {}
    for _ in range(50):  # the ledger is written just after the response
        first = (await cli("impact", "npm", "left-pad", "--limit", "1", "--json")).json()
        if first["next_cursor"]:
            break
        await asyncio.sleep(0.1)
    assert len(first["downloads"]) == 1
    text = await cli("impact", "npm", "left-pad", "--limit", "1")
    hint = text.out.splitlines()[-1]
    assert hint.startswith("more downloads: mirror impact npm left-pad '*' --cursor ")
    cursor = hint.split("--cursor ")[1].split()[0]
    rest = await cli("impact", "npm", "left-pad", "--limit", "1", "--cursor", cursor, "--json")
    second = rest.json()
    assert second["next_cursor"] is None
    assert {first["downloads"][0]["version"], second["downloads"][0]["version"]} == {
        "1.0.0",
        "1.3.0",
    }
    anonymous = await cli("impact", "npm", "left-pad", token=None)
    assert anonymous.code == 1
    assert "needs an admin token" in anonymous.err


async def record_takedowns(data_dir: Path, *found: tuple[str, str, Takedown, datetime]) -> None:
    """Record takedown events in the state of the running mirror at `data_dir` (the SQLite file
    its workers share), as its takedown watcher would: each downloaded by one CI client."""
    config = load_config(None, {"MIRROR_DATA_DIR": str(data_dir), "MIRROR_MAVEN_UPSTREAM": "off"})
    state = create_state(config)
    await state.open()
    try:
        for ecosystem, package, takedown, at in found:
            row = ImpactRow(
                client="10.1.2.3", token="ci", ci="jenkins", count=4,
                first_at=at - timedelta(days=1), last_at=at - timedelta(hours=1),
            )  # fmt: skip
            event = event_of(ecosystem, package, takedown, at, (row,), clients=1, downloads=4)
            assert await state.add_event(event)
    finally:
        await state.close()


async def test_events_table_json_csv_and_paging(cli: Cli) -> None:
    now = datetime.now(UTC)
    await record_takedowns(
        cli.mirror.data_dir,
        ("npm", "@evil/pkg", Takedown("2.0.0", "", "removed"), now - timedelta(hours=2)),
        ("npm", "left-pad", Takedown("1.4.0", "", "removed"), now - timedelta(hours=1)),
        (
            "pypi",
            "evil-pkg",
            Takedown("1.0", "evil_pkg-1.0.tar.gz", "yanked", "=cmd|' /C calc'!A0"),
            now - timedelta(minutes=5),
        ),
        ("npm", "left-pad", Takedown("0.1.0", "", "removed"), now - timedelta(days=30)),
    )
    table = await cli("events", "--since", "7d")
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == [
        "WHEN", "KIND", "ECOSYSTEM", "PACKAGE", "VERSION/FILE", "CLIENTS", "DOWNLOADS",
    ]  # fmt: skip
    assert len(rows) == 3  # the month-old one is older than --since
    assert "yanked (=cmd|' /C calc'!A0)" in rows[0]
    assert "1.0 evil_pkg-1.0.tar.gz" in rows[0]
    assert rows[1].split()[2:] == ["npm", "left-pad", "1.4.0", "1", "4"]

    only = (await cli("events", "--ecosystem", "pypi", "--package", "Evil_Pkg", "--json")).json()
    (event,) = only["events"]
    assert event["impact"][0]["client"] == "10.1.2.3"
    assert only["next"] is None

    as_csv = await cli("events", "--ecosystem", "npm", "--csv")
    assert as_csv.code == 0, as_csv.err
    head, *lines = list(csv.reader(io.StringIO(as_csv.out)))
    assert head == ["detected_at", "kind", "ecosystem", "package", "version", "filename",
                    "reason", "clients", "downloads", "id"]  # fmt: skip
    # A scoped name would start a formula in a spreadsheet: written as text.
    assert [line[3] for line in lines] == ["left-pad", "'@evil/pkg", "left-pad"]
    yanked = await cli("events", "--ecosystem", "pypi", "--csv")
    assert list(csv.reader(io.StringIO(yanked.out)))[1][6] == "'=cmd|' /C calc'!A0"

    paged = await cli("events", "--limit", "2")
    hint = paged.out.splitlines()[-1]
    assert hint.startswith("older events: mirror events --after ")
    cursor = hint.split("--after ")[1].split()[0]
    rest = (await cli("events", "--limit", "2", "--after", cursor, "--json")).json()
    assert [e["version"] for e in rest["events"]] == ["2.0.0", "0.1.0"]

    refused = await cli("events", "--after", "nonsense")
    assert refused.code == 1
    assert "after: not a cursor" in refused.err
    assert (await cli("events", "--package", "left-pad")).code == 1  # needs --ecosystem
    assert (await cli("events", "--csv", "--json")).code == 2
    anonymous = await cli("events", token=None)
    assert anonymous.code == 1
    assert "needs an admin token" in anonymous.err


REDIS_DB = 11  # a database of its own in the session's redis-server, flushed per test
SCOPED = ("@evil/a", "@evil/b", "@evil/c")
FORMULA_AGENT = '=HYPERLINK("http://127.0.0.1/x","y"), npm/10'


@pytest.fixture
async def scoped_cli(
    aiohttp_server: AiohttpServer, start_mirror: StartMirror, redis_url: str
) -> Cli:
    """A mirror (state on Redis) whose ledger holds six downloads of three scoped packages,
    each pulled with a user agent that would be a spreadsheet formula."""
    registry = FakeNpmRegistry()
    old = datetime.now(UTC) - timedelta(days=200)
    for name in SCOPED:
        for version in ("1.0.0", "2.0.0"):
            registry.add_version(name, version, published=old)
    await registry.start(aiohttp_server)
    url = await empty_redis_db(redis_url, REDIS_DB)
    mirror = await start_mirror(
        {
            "MIRROR_NPM_UPSTREAM": registry.url,
            "MIRROR_QUARANTINE": "3d",
            "MIRROR_ADMIN_TOKENS": f"ops:{TOKEN}",
            "MIRROR_ACCESS_LOG": "false",
            "MIRROR_REDIS_URL": url,
        }
    )
    async with aiohttp.ClientSession(headers={"User-Agent": FORMULA_AGENT}) as session:
        for name in SCOPED:
            async with session.get(f"{mirror.url}/npm/{name.replace('/', '%2f')}") as response:
                assert response.status == 200, await response.text()
                packument = await response.json()
            for entry in packument["versions"].values():
                async with session.get(entry["dist"]["tarball"]) as response:
                    assert response.status == 200
    scoped = Cli(mirror)
    for _ in range(50):  # the ledger is written just after the response
        page = (await scoped("impact", "npm", "@evil/*", "--json")).json()
        if len(page["downloads"]) == 6:
            break
        await asyncio.sleep(0.1)
    assert len(page["downloads"]) == 6, page
    return scoped


async def test_impact_csv_and_json_follow_every_page(scoped_cli: Cli) -> None:
    expected = {(name, version) for name in SCOPED for version in ("1.0.0", "2.0.0")}
    first = (await scoped_cli("impact", "npm", "@evil/*", "--limit", "2", "--json")).json()
    assert len(first["downloads"]) == 2  # so the walks below read three pages or more
    assert first["next_cursor"]

    result = await scoped_cli("impact", "npm", "@evil/*", "--format", "csv", "--limit", "2")
    assert result.code == 0, result.err
    header, *lines = list(csv.reader(io.StringIO(result.out)))
    assert header == list(tables.DOWNLOAD_COLUMNS)
    rows = [dict(zip(header, line, strict=True)) for line in lines]
    # Every download once: a scoped name would start a formula, so it is written '@evil/a.
    assert sorted((row["package"], row["version"]) for row in rows) == sorted(
        ("'" + name, version) for name, version in expected
    )
    for row in rows:
        assert row["ecosystem"] == "npm"
        assert row["client"] == "127.0.0.1"
        assert row["filename"].endswith(f"-{row['version']}.tgz")
        assert row["count"] == "1"
        assert row["user_agent"] in ("", "'" + FORMULA_AGENT)  # "" from a mirror without it

    as_json = await scoped_cli("impact", "npm", "@evil/*", "--format", "json", "--limit", "1")
    assert as_json.code == 0, as_json.err
    document = as_json.json()
    assert document["query"]["package"] == "@evil/*"
    downloads = document["downloads"]
    assert sorted((d["package"], d["version"]) for d in downloads) == sorted(expected)
    assert {d["user_agent"] for d in downloads} <= {"", FORMULA_AGENT}
    assert [(i["token"], i["clients"], i["downloads"]) for i in document["identities"]] == [
        ("", 1, 6)
    ]

    # Starting at a cursor: the pages from there on, none before.
    rest = await scoped_cli(
        "impact", "npm", "@evil/*", "--format", "json", "--limit", "2",
        "--cursor", first["next_cursor"],
    )  # fmt: skip
    assert len(rest.json()["downloads"]) == 4

    capped = await scoped_cli("impact", "npm", "@evil/*", "--format", "csv", "--max-rows", "5")
    assert capped.code == 1
    assert "more than 5 downloads match" in capped.err
    both = await scoped_cli("impact", "npm", "@evil/*", "--format", "csv", "--json")
    assert both.code == 2
    assert "choose one" in both.err


def test_config_shows_no_secret(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
    env.update(
        {
            "MIRROR_REDIS_URL": "redis://default:r3dis-pass@127.0.0.1:6379/0",
            "MIRROR_NPM_UPSTREAM": "https://npm.internal.example/?access_token=qu3ry-tok",
            "MIRROR_PYPI_UPSTREAM": "https://ci:upstr3am-pass@pypi.internal.example/simple/",
            "MIRROR_ADMIN_TOKENS": "alice:s3cret-s3cret-s3cret",
            "MIRROR_DATA_DIR": str(tmp_path / "data"),
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "mirror", "config"],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for secret in ("r3dis-pass", "qu3ry-tok", "upstr3am-pass", "s3cret"):
        assert secret not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["state"]["redis_url"] == "redis://default:<set>@127.0.0.1:6379/0"
    assert shown["npm"]["upstream"] == "https://npm.internal.example/?access_token=<set>"
    assert shown["pypi"]["upstream_auth"] == "<set>"
    assert shown["admin"]["tokens"] == ["alice"]


# the CLI against a server that is not (or not only) the mirror --------------------------------


@dataclass
class Recorded:
    """What a test server saw: each request's path and Authorization header."""

    seen: list[tuple[str, str | None]]


async def start_server(aiohttp_server: AiohttpServer, handler: Any) -> tuple[str, Recorded]:
    recorded = Recorded(seen=[])

    async def record(request: web.Request) -> web.StreamResponse:
        recorded.seen.append((request.path_qs, request.headers.get("Authorization")))
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}", recorded


async def test_the_token_never_follows_a_redirect_to_another_origin(
    aiohttp_server: AiohttpServer, cli: Cli
) -> None:
    async def elsewhere(request: web.Request) -> web.StreamResponse:
        return web.json_response({"blocks": []})

    other_url, other = await start_server(aiohttp_server, elsewhere)

    for status in (301, 302, 303, 307, 308):

        async def redirect(request: web.Request, status: int = status) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": other_url + request.path_qs})

        url, first = await start_server(aiohttp_server, redirect)
        result = await cli("blocks", url=url)
        assert result.code == 1, (status, result)
        assert "another origin" in result.err or f"HTTP {status}" in result.err
        assert "Traceback" not in result.err
        assert first.seen[0][1] == f"Bearer {TOKEN}"  # the mirror's own origin got it
    assert other.seen == []  # the other port never saw a request, let alone the token

    async def same_origin(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/moved/"):
            return web.json_response({"blocks": []})
        return web.Response(status=302, headers={"Location": "/moved" + request.path_qs})

    url, same = await start_server(aiohttp_server, same_origin)
    followed = await cli("blocks", url=url)
    assert followed.code == 0, followed.err
    assert [auth for _, auth in same.seen] == [f"Bearer {TOKEN}"] * 2


UNEXPECTED = [
    (200, "text/html", b"<html><body>Welcome to nginx!</body></html>"),
    (200, "application/json", b"not json at all"),
    (200, "application/json", b"[1, 2, 3]"),
    (200, "application/json", b'{"entries": "nope", "blocks": {"a": 1}, "verdict": 3}'),
    (200, "application/json", b'{"entries": [{"at": 1}], "blocks": [{"id": "b-1"}]}'),
    (200, "application/json", b"[" * 100_000 + b"]" * 100_000),
    (500, "text/html", b"<html>Internal Server Error</html>"),
    (502, "application/json", b'{"error": ["not", "a", "string"]}'),
    (503, "text/plain", b"upstream down"),
    (204, "application/json", b""),
]


@pytest.mark.parametrize(("status", "content_type", "body"), UNEXPECTED, ids=range(10))
async def test_an_unexpected_answer_is_a_clear_error_not_a_traceback(
    aiohttp_server: AiohttpServer, cli: Cli, tmp_path: Path, status: int, content_type: str,
    body: bytes,
) -> None:  # fmt: skip
    async def answer(request: web.Request) -> web.StreamResponse:
        if status == 204:
            return web.Response(status=204)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    url, _ = await start_server(aiohttp_server, answer)
    lockfile = tmp_path / "requirements.txt"
    lockfile.write_text("requests==2.31.0\n", encoding="utf-8")
    advisory = tmp_path / "osv.json"
    advisory.write_text(json.dumps(OSV_ADVISORY), encoding="utf-8")
    for args in (
        ("audit",), ("blocks",), ("exemptions",), ("freezes",),
        ("explain", "npm", "left-pad@1.0.0"), ("impact", "npm", "left-pad"),
        ("block", "npm", "left-pad", "1.0.0", "--reason", "x"), ("unblock", "b-1"),
        ("preflight", str(lockfile)), ("import-osv", str(advisory)),
    ):  # fmt: skip
        result = await cli(*args, url=url)
        assert result.code == 1, (args, result)
        assert "Traceback" not in result.err, (args, result.err)
        if args[0] == "preflight":  # each pin's error is a row of the report
            assert "1 would be refused" in result.out
        else:
            assert result.err.startswith("mirror: "), (args, result)


OSV_ADVISORY = {
    "id": "GHSA-\x1b[31mdemo",
    "summary": "evil \x1b]0;pwned\x07 summary\nsecond line",
    "affected": [
        {
            "package": {"ecosystem": "npm", "name": "left-\x1b[2Jpad"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.4.0"}]}],
        },
        {"package": {"ecosystem": "crates.io\x1b[5m", "name": "serde"}},
    ],
}
HOSTILE = "evil\x1b[2J\x1b]0;title\x07\r\nFORGED line\u202e\x9b31m"


def hostile_answer(path: str) -> Any:
    """The mirror's answers with terminal escapes and control characters in every text."""
    rule = {
        "id": "b-" + HOSTILE, "kind": "block", "ecosystem": "npm", "package": HOSTILE,
        "versions": HOSTILE, "reason": HOSTILE, "created_by": HOSTILE,
        "expires_at": HOSTILE, "expired": False, "published_after": HOSTILE,
        "covers": {"versions": [HOSTILE], "count": 1, "listed": 2, "note": HOSTILE},
    }  # fmt: skip
    if path.endswith("/explain"):
        return {
            "ecosystem": "npm", "package": HOSTILE, "version": HOSTILE, "verdict": HOSTILE,
            "detail": HOSTILE, "published_at": HOSTILE, "until": HOSTILE, "rule": rule,
            "files": [{"filename": HOSTILE, "verdict": HOSTILE}],
        }  # fmt: skip
    if path.endswith("/impact"):
        download = {
            "client": HOSTILE, "package": HOSTILE, "version": HOSTILE, "filename": HOSTILE,
            "first_seen": HOSTILE, "last_seen": HOSTILE, "count": HOSTILE,
        }  # fmt: skip
        return {
            "clients": [HOSTILE], "downloads": [download], "next_cursor": HOSTILE,
            "ecosystem": HOSTILE, "package": HOSTILE, "versions": HOSTILE, "limit": 1,
        }  # fmt: skip
    if path.endswith("/audit"):
        entry = {
            "at": HOSTILE, "actor": HOSTILE, "client": HOSTILE, "action": HOSTILE,
            "target": HOSTILE, "before": None, "after": rule,
        }  # fmt: skip
        return {"entries": [entry], "pruned_before": HOSTILE, "next_cursor": HOSTILE}
    if path.endswith("/events"):
        event = {
            "id": HOSTILE, "ecosystem": HOSTILE, "package": HOSTILE, "version": HOSTILE,
            "filename": HOSTILE, "kind": HOSTILE, "reason": HOSTILE, "detected_at": HOSTILE,
            "clients": HOSTILE, "downloads": HOSTILE, "impact": [],
        }  # fmt: skip
        return {"events": [event], "next": HOSTILE}
    return {
        "blocks": [rule], "exemptions": [rule], "freezes": [rule], "block": rule,
        "exemption": rule, "freeze": rule, "warning": HOSTILE, "deleted": rule,
        "impact": {"clients": [HOSTILE], "downloads": [], "next_cursor": None},
    }  # fmt: skip


def assert_clean(text: str) -> None:
    """Nothing a terminal would act on: only printable characters and newlines."""
    bad = [char for char in text if not char.isprintable() and char != "\n"]
    assert bad == [], repr(text)


async def test_no_answer_text_reaches_the_terminal_raw(
    aiohttp_server: AiohttpServer, cli: Cli, tmp_path: Path
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/exemptions") and request.method == "POST":
            return web.json_response({"error": HOSTILE}, status=400)
        created = request.method == "POST"
        return web.json_response(hostile_answer(request.path), status=201 if created else 200)

    url, _ = await start_server(aiohttp_server, answer)
    lockfile = tmp_path / "requirements.txt"
    lockfile.write_text("requests==2.31.0\n", encoding="utf-8")
    advisory = tmp_path / "osv.json"
    advisory.write_text(json.dumps(OSV_ADVISORY), encoding="utf-8")
    for args in (
        ("audit",), ("blocks",), ("exemptions",), ("freezes",),
        ("explain", "npm", "left-pad@1.0.0"), ("impact", "npm", "left-pad"),
        ("block", "npm", "left-pad", "1.0.0", "--reason", "x"), ("unblock", "b-1"),
        ("exempt", "npm", "left-pad", "1.0.0", "--reason", "x"),
        ("freeze", "npm", "--published-after", "1d", "--until", "1d", "--reason", "x"),
        ("preflight", str(lockfile)), ("import-osv", str(advisory)),
        ("import-osv", str(advisory), "--dry-run"), ("events",), ("events", "--csv"),
    ):  # fmt: skip
        result = await cli(*args, url=url)
        assert "Traceback" not in result.err, (args, result.err)
        assert_clean(result.out)
        assert_clean(result.err)
        lines = (result.out + result.err).splitlines()
        assert not any(line.startswith("FORGED") for line in lines), args


# shadow mode: --dry-run ---------------------------------------------------------------------


async def downloaded_by_this_test(cli: Cli, version: str) -> None:
    """A real tarball download through the mirror, then wait until the ledger has it."""
    async with aiohttp.ClientSession() as session:
        tarball = f"{cli.mirror.url}/npm/left-pad/-/left-pad-{version}.tgz"
        async with session.get(tarball) as response:
            assert response.status == 200
    for _ in range(50):  # bounded: the ledger is written just after the response
        impact = (await cli("impact", "npm", "left-pad", version, "--json")).json()
        if impact["downloads"]:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"the download of left-pad {version} was not recorded")


async def test_block_dry_run_prints_who_downloaded_it_and_creates_nothing(cli: Cli) -> None:
    await downloaded_by_this_test(cli, "1.3.0")
    dry = await cli("block", "npm", "left-pad", "<1.4.0", "--reason", "bad", "--dry-run")
    assert dry.code == 0, dry.err
    lines = dry.out.splitlines()
    assert lines[0] == "would block npm left-pad <1.4.0 (dry run, nothing created)"
    assert "covers now: 1.0.0, 1.3.0 (2 of 3 versions upstream lists)" in lines
    assert "already downloaded by 1 client(s) (1 client/file row(s)):" in lines
    header = next(line for line in lines if line.startswith("CLIENT"))
    assert header.split()[:4] == ["CLIENT", "PACKAGE", "VERSION", "FILE"]
    assert any(line.split()[:4] == ["127.0.0.1", "left-pad", "1.3.0", "left-pad-1.3.0.tgz"]
               for line in lines)  # fmt: skip
    as_json = (await cli("block", "npm", "left-pad", "<1.4.0", "--reason", "x", "--dry-run",
                         "--json")).json()  # fmt: skip
    assert as_json["dry_run"] is True
    assert "id" not in as_json["block"]
    assert as_json["impact"]["clients"] == ["127.0.0.1"]
    assert (await cli("blocks", "--json")).json() == {"blocks": []}
    assert (await cli("audit", "--json")).json()["entries"] == []
    refused = await cli("block", "npm", "left-pad", ">=>1", "--reason", "x", "--dry-run")
    assert refused.code == 1
    assert "versions:" in refused.err


async def test_import_osv_dry_run_shows_each_advisorys_blocks_and_who_downloaded_them(
    cli: Cli, tmp_path: Path
) -> None:
    await downloaded_by_this_test(cli, "1.3.0")
    advisories = [
        {
            "id": "GHSA-demo-0002",
            "summary": "credential theft",
            "affected": [
                {
                    "package": {"ecosystem": "npm", "name": "left-pad"},
                    "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.1.0"},
                                                             {"fixed": "1.4.0"}]}],
                }
            ],
        },
        {
            "id": "GHSA-demo-0003",
            "affected": [
                {"package": {"ecosystem": "npm", "name": "left-pad"}, "versions": ["1.4.0"]}
            ],
        },
    ]  # fmt: skip
    path = tmp_path / "advisories.json"
    path.write_text(json.dumps(advisories), encoding="utf-8")
    dry = await cli("import-osv", str(path), "--dry-run")
    assert dry.code == 0, dry.err
    sections = dry.out.split("\n\n")
    first = next(s for s in sections if s.startswith("GHSA-demo-0002: would block npm left-pad"))
    assert "covers now: 1.3.0 (1 of 3 versions upstream lists)" in first
    assert "already downloaded by 1 client(s)" in first
    assert "127.0.0.1" in first
    second = next(s for s in sections if s.startswith("GHSA-demo-0003: would block npm left-pad"))
    assert "covers now: 1.4.0" in second
    assert "no recorded downloads of matching versions" in second
    rows = (await cli("import-osv", str(path), "--dry-run", "--json")).json()["blocks"]
    assert {row["advisory"]: row["impact"]["clients"] for row in rows} == {
        "GHSA-demo-0002": ["127.0.0.1"],
        "GHSA-demo-0003": [],
    }
    assert (await cli("blocks", "--json")).json() == {"blocks": []}
    assert (await cli("audit", "--json")).json()["entries"] == []
    # The preview needs the write token, like a real import.
    no_token = await cli("import-osv", str(path), "--dry-run", token=None)
    assert no_token.code == 1
    assert "failed" in no_token.out


async def test_no_dry_run_answer_text_reaches_the_terminal_raw(
    aiohttp_server: AiohttpServer, cli: Cli, tmp_path: Path
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(hostile_answer(request.path))

    url, _ = await start_server(aiohttp_server, answer)
    advisory = tmp_path / "osv.json"
    advisory.write_text(json.dumps(OSV_ADVISORY), encoding="utf-8")
    for args in (
        ("block", "npm", "left-pad", "1.0.0", "--reason", "x", "--dry-run"),
        ("import-osv", str(advisory), "--dry-run"),
    ):
        result = await cli(*args, url=url)
        assert "Traceback" not in result.err, (args, result.err)
        assert_clean(result.out)
        assert_clean(result.err)
