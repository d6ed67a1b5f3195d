"""The `mirror` command's entry point: the argument parser of every subcommand and the
dispatch, `main(argv) -> exit code` (`mirror.cli.exits`: 0 ok, 1 failed, 2 usage or bad
settings). Each subcommand runs in its own module."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirror import __version__
from mirror.cli import queries, rules
from mirror.cli.client import DEFAULT_URL, run
from mirror.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from mirror.cli.osvimport import run_import_osv
from mirror.cli.preflight import run_preflight
from mirror.cli.serve import serve
from mirror.cli.settings import add_config_argument, add_directory_arguments, show_config
from mirror.cli.warm import WARM_TIMEOUT_SECONDS, run_warm
from mirror.errors import ConfigError
from mirror.lockfiles.formats import ALIASES, FORMATS
from mirror.lockfiles.warming import WARM_PARALLEL
from mirror.model import ECOSYSTEMS, RuleKind


def _add_serve_parser(commands: Any) -> None:
    parser = commands.add_parser("serve", help="run the mirror")
    add_config_argument(parser)
    parser.add_argument("--listen", help="HOST:PORT (overrides MIRROR_LISTEN / listen)")
    parser.add_argument("--workers", help="worker processes (overrides MIRROR_WORKERS)")
    add_directory_arguments(parser)
    parser.set_defaults(run=serve)


def _add_config_parser(commands: Any) -> None:
    parser = commands.add_parser("config", help="validate the settings and print them as JSON")
    add_config_argument(parser)
    parser.set_defaults(run=show_config)


def _add_state_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "state",
        help="the shared state: status, restore, export, import",
        description=(
            "Work on the state backend of these settings directly (no server needed). "
            "Exit 1 when the state is degraded (status), cannot be restored, or a file "
            "cannot be written or read."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text, state_action in (
        ("status", "identity, policy version and rule counts of the state and the copy", "status"),
        (
            "restore",
            "re-seed an emptied, replaced or rolled-back state from the last-known copy",
            "restore",
        ),
        (
            "export",
            "write the rules, digest pins and audit (--ledger: and the download ledger) to "
            "FILE as JSON: a backup, or the way to move to another backend",
            "export",
        ),
        (
            "import",
            "re-seed the state from an export FILE: rules it lacks are added, pins set, the "
            "audit merged; the state continues the exported one",
            "import",
        ),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        add_config_argument(action)
        add_directory_arguments(action)
        if state_action in ("export", "import"):
            action.add_argument("file", type=Path, metavar="FILE", help="the export file")
        if state_action == "export":
            action.add_argument("--ledger", action="store_true", help="include the download ledger")
        action.set_defaults(run=_state_command, state_action=state_action)


TIME_HELP = "ISO 8601 (2026-11-22T00:00Z), a date (2026-11-29) or a duration (7d)"


def _admin_options() -> argparse.ArgumentParser:
    """Options every admin command takes (a parent parser, so they go after the command)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url",
        help=f"the mirror's base URL (default: $MIRROR_URL, else {DEFAULT_URL})",
    )
    options.add_argument("--token", help="admin token (default: $MIRROR_TOKEN)")
    options.add_argument("--json", action="store_true", help="print the API's JSON answer")
    return options


def _add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="show what it would cover and who already downloaded it; create nothing",
    )


def _add_lockfile_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=sorted({*FORMATS, *ALIASES}), help="read every FILE as this format"
    )


def _add_admin_parsers(commands: Any) -> None:
    common = [_admin_options()]

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=help_text, parents=common
        )
        return parser

    block = add("block", "block versions of a package on every replica")
    block.add_argument("ecosystem", choices=ECOSYSTEMS)
    block.add_argument("package", help="name or glob (@evilscope/*, org.example:*)")
    block.add_argument("versions", help="version or range in the ecosystem's syntax; * for all")
    block.add_argument("--reason", required=True, help="why (kept in the audit log)")
    block.add_argument("--expires", help=f"when the block ends (default: never); {TIME_HELP}")
    _add_dry_run(block)
    block.set_defaults(run=run(rules.create_rule("block")))

    exempt = add("exempt", "let versions through quarantine (never through a block)")
    exempt.add_argument("ecosystem", choices=ECOSYSTEMS)
    exempt.add_argument("package")
    exempt.add_argument("versions")
    exempt.add_argument("--reason", required=True)
    exempt.add_argument(
        "--until",
        "--expires",
        dest="expires",
        help=f"when it ends (default: when the version matures anyway); {TIME_HELP}",
    )
    _add_dry_run(exempt)
    exempt.set_defaults(run=run(rules.create_rule("exemption")))

    freeze = add("freeze", "hold back everything published after a cutoff, until a time")
    freeze.add_argument("ecosystem", choices=ECOSYSTEMS)
    freeze.add_argument("--published-after", required=True, help=f"the cutoff; {TIME_HELP}")
    freeze.add_argument("--until", required=True, help=f"when the freeze ends; {TIME_HELP}")
    freeze.add_argument("--reason", required=True)
    freeze.add_argument("--package", default="*", help="name or glob (default: every package)")
    _add_dry_run(freeze)
    freeze.set_defaults(run=run(rules.create_rule("freeze")))

    removals: tuple[tuple[RuleKind, str, str], ...] = (
        ("block", "unblock", "blocks"),
        ("exemption", "unexempt", "exemptions"),
        ("freeze", "unfreeze", "freezes"),
    )
    for kind, remove, listing in removals:
        parser = add(remove, f"remove {'an' if kind == 'exemption' else 'a'} {kind} by its id")
        parser.add_argument("id")
        parser.set_defaults(run=run(rules.delete_rule(kind)))
        parser = add(listing, f"list {listing} (expired ones are marked)")
        parser.add_argument("--ecosystem", choices=ECOSYSTEMS)
        parser.set_defaults(run=run(rules.list_rules(kind)))

    explain = add("explain", "why a version is allowed, held, blocked or exempted")
    explain.add_argument("ecosystem", choices=ECOSYSTEMS)
    explain.add_argument(
        "subject", help="axios@1.14.1, requests==2.31.0, org.example:lib:1.0 (or PACKAGE)"
    )
    explain.add_argument("version", nargs="?", help="the version, if SUBJECT is a bare package")
    explain.add_argument("--file", help="PyPI: explain this one file of the version")
    explain.set_defaults(run=run(queries.explain))

    preflight = add("preflight", "will these lockfiles install through the mirror? (exit 1 if not)")
    preflight.add_argument(
        "files",
        nargs="+",
        help="lockfiles (npm, yarn, pnpm, requirements, poetry, uv, pylock), `mvn "
        "dependency:list` output or CycloneDX/SPDX JSON SBOMs; the format is read from the "
        "content",
    )
    _add_lockfile_format(preflight)
    preflight.set_defaults(run=run_preflight)

    warm = add("warm", "fetch every allowed version these lockfiles pin into the mirror's cache")
    warm.add_argument("files", nargs="+", help="the files `mirror preflight` reads")
    _add_lockfile_format(warm)
    warm.add_argument(
        "--parallel", type=int, default=WARM_PARALLEL,
        help=f"versions fetched at once (default {WARM_PARALLEL})",
    )  # fmt: skip
    warm.add_argument(
        "--timeout", type=float, default=WARM_TIMEOUT_SECONDS,
        help=f"seconds for the whole run (default {WARM_TIMEOUT_SECONDS:.0f})",
    )  # fmt: skip
    warm.set_defaults(run=run_warm)

    osv = add(
        "import-osv",
        "block what OSV advisories list as affected; lift withdrawn ones, update changed ones",
    )
    osv.add_argument(
        "files",
        nargs="+",
        help="OSV JSON files (an advisory or a list of them), directories or zips of them",
    )
    osv.add_argument("--dry-run", action="store_true", help="show the blocks, create nothing")
    osv.set_defaults(run=run_import_osv)

    impact = add("impact", "which clients downloaded matching versions")
    impact.add_argument("ecosystem", choices=ECOSYSTEMS)
    impact.add_argument("package")
    impact.add_argument("versions", nargs="?", default=None, help="spec (default: *)")
    impact.add_argument("--since", help=f"only downloads since; {TIME_HELP}")
    impact.add_argument(
        "--limit",
        type=int,
        default=None,
        help="downloads per page (1-1000, default 100; csv/json: 1000)",
    )
    impact.add_argument(
        "--cursor",
        help="the page to show (printed after the previous one); csv/json: the page to start at",
    )
    impact.add_argument(
        "--format",
        choices=queries.IMPACT_FORMATS,
        default="table",
        help="table (default): one page for people; csv or json: every page, one row per "
        "download, for machines",
    )
    impact.add_argument(
        "--max-rows",
        type=int,
        default=queries.DEFAULT_MAX_ROWS,
        help=f"csv/json: fail past this many rows (default {queries.DEFAULT_MAX_ROWS:,})",
    )
    impact.set_defaults(run=run(queries.impact))

    audit = add("audit", "the newest admin changes (needs a token)")
    audit.add_argument("--limit", type=int, default=50, help="entries (1-1000, default 50)")
    audit.add_argument("--target", help="only changes of this rule id (b-…, e-…, f-…)")
    audit.add_argument("--actor", help="only changes by this token name")
    audit.add_argument("--since", help=f"only changes at or after; {TIME_HELP}")
    audit.add_argument("--until", help=f"only changes before; {TIME_HELP}")
    audit.add_argument("--cursor", help="the page to show (printed after the previous one)")
    audit.set_defaults(run=run(queries.audit))

    events = add("events", "takedown events: what the upstream removed or yanked, and who had it")
    events.add_argument("--ecosystem", choices=ECOSYSTEMS)
    events.add_argument("--package", help="only this package (needs --ecosystem)")
    events.add_argument("--since", help=f"only events detected since; {TIME_HELP}")
    events.add_argument("--limit", type=int, help="events (1-500, default 100)")
    events.add_argument("--after", help="the page to show (printed after the previous one)")
    events.add_argument("--csv", action="store_true", help="print the events as CSV")
    events.set_defaults(run=run(queries.events))


def _state_command(args: argparse.Namespace, environ: dict[str, str]) -> int:
    # The state backends are loaded only for `mirror state`, not for every command.
    from mirror.cli.state import run_state

    return run_state(args, environ)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirror",
        description="quarantine-mirror: a caching npm/PyPI/Maven mirror with release quarantine",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve_parser(commands)
    _add_config_parser(commands)
    _add_state_parser(commands)
    _add_admin_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(args, dict(os.environ))
    except ConfigError as exc:
        print(f"mirror: invalid setting: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    return code
