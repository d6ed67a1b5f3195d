"""The `mirror` command: one small function per subcommand; `main(argv) -> exit code`
(0 ok, 1 failed, 2 usage or bad settings)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirror import __version__, adminclient
from mirror.config import Config, load_config
from mirror.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (default: $MIRROR_CONFIG, else config/mirror.toml if present)",
    )


def _add_serve_parser(commands: Any) -> None:
    parser = commands.add_parser("serve", help="run the mirror")
    _add_config_argument(parser)
    parser.add_argument("--listen", help="HOST:PORT (overrides MIRROR_LISTEN / listen)")
    parser.add_argument("--workers", help="worker processes (overrides MIRROR_WORKERS)")
    parser.add_argument("--data-dir", help="data directory (overrides MIRROR_DATA_DIR)")
    parser.set_defaults(run=_serve)


def _add_config_parser(commands: Any) -> None:
    parser = commands.add_parser("config", help="validate the settings and print them as JSON")
    _add_config_argument(parser)
    parser.set_defaults(run=_show_config)


def _load(args: argparse.Namespace, environ: dict[str, str]) -> Config:
    overrides = {
        "MIRROR_LISTEN": getattr(args, "listen", None),
        "MIRROR_WORKERS": getattr(args, "workers", None),
        "MIRROR_DATA_DIR": getattr(args, "data_dir", None),
    }
    environ = {**environ, **{key: value for key, value in overrides.items() if value}}
    path = args.config
    if path is None and not environ.get("MIRROR_CONFIG"):
        path = Path("config/mirror.toml")
    elif path is not None and not path.is_file():
        raise ConfigError(f"--config: no such file {str(path)!r}")
    return load_config(path, environ)


def _serve(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from mirror.server import serve

    config = _load(args, environ)
    _configure_logging(config)
    return serve(config, announce=lambda line: print(line, file=sys.stderr, flush=True))


def _configure_logging(config: Config) -> None:
    from mirror.logs import MalformedRequestFilter, SafeFormatter

    # Messages carry client paths, upstream text and admins' reasons: every handler writes
    # one escaped line per event (mirror.logs), so none can forge a line or reach a terminal.
    events = logging.StreamHandler(sys.stderr)
    events.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=config.log_level, handlers=[events])
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    # The access log is one JSON object per line, nothing around it (already escaped by
    # json.dumps; the formatter guards it all the same).
    access = logging.getLogger("mirror.access")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(SafeFormatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


HIDDEN_VALUE = "<set>"
# Settings whose value is a secret wherever they appear (matched on the key's last word).
_SECRET_KEYS = ("auth", "password", "secret", "token", "credentials")


def _add_state_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "state",
        help="the shared state against the last-known rules: status, restore",
        description=(
            "Work on the state backend of these settings directly (no server needed). "
            "Exit 1 when the state is degraded (status) or cannot be restored."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text, run in (
        ("status", "identity, policy version and rule counts of the state and the copy", "status"),
        (
            "restore",
            "re-seed an emptied, replaced or rolled-back state from the last-known copy",
            "restore",
        ),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        _add_config_argument(action)
        action.add_argument("--data-dir", help="data directory (overrides MIRROR_DATA_DIR)")
        action.set_defaults(run=_state_command, state_action=run)


def _state_command(args: argparse.Namespace, environ: dict[str, str]) -> int:
    import asyncio

    from mirror import stateadmin
    from mirror.errors import StateUnavailable
    from mirror.lastknown import LastKnownError

    config = _load(args, environ)
    try:
        if args.state_action == "status":
            report = asyncio.run(stateadmin.status(config))
        else:
            report = asyncio.run(stateadmin.restore(config))
            print("restored: rules, digest pins and audit are back in the state")
    except stateadmin.RestoreRefused as exc:
        print(f"mirror state restore: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (StateUnavailable, LastKnownError) as exc:
        print(f"mirror state {args.state_action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(report.lines(config)))
    return EXIT_OK if report.problem is None else EXIT_FAILED


def _show_config(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """The settings as JSON with no secret in them: tokens by name only; credentials,
    passwords and URL user info or query values shown as `<set>`."""
    config = _load(args, environ)
    data = dataclasses.asdict(config)
    data["admin"]["tokens"] = sorted(data["admin"]["tokens"])  # names only, never secrets
    print(json.dumps(redact_settings(data), indent=2, default=str))
    return EXIT_OK


def redact_settings(value: Any, key: str = "") -> Any:
    """`value` (the settings as plain data) with every secret replaced by `<set>`: values of
    secret-named keys, and the password (or lone user name, often a token), and query
    values of every URL."""
    if isinstance(value, dict):
        return {name: redact_settings(item, str(name)) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_settings(item, key) for item in value]
    if key.lower().rsplit("_", 1)[-1] in _SECRET_KEYS and key != "tokens" and value:
        return HIDDEN_VALUE
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def redact_url(url: str) -> str:
    """`redis://user:<set>@host:6379/0`, `https://<set>@host/`, `…?key=<set>`."""
    try:
        parts = urllib.parse.urlsplit(url)
        hostinfo = parts.netloc.rpartition("@")[2]
    except ValueError:
        return HIDDEN_VALUE
    netloc = parts.netloc
    if "@" in parts.netloc:
        user, has_password, _ = parts.netloc.rpartition("@")[0].partition(":")
        userinfo = f"{user}:{HIDDEN_VALUE}" if has_password else HIDDEN_VALUE
        netloc = f"{userinfo}@{hostinfo}"
    query = "&".join(
        f"{name}={HIDDEN_VALUE}" if sep else name
        for name, sep, _ in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


ECOSYSTEM_CHOICES = ("npm", "pypi", "maven")
TIME_HELP = "ISO 8601 (2026-11-22T00:00Z), a date (2026-11-29) or a duration (7d)"


def _admin_options() -> argparse.ArgumentParser:
    """Options every admin command takes (a parent parser, so they go after the command)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url",
        help=f"the mirror's base URL (default: $MIRROR_URL, else {adminclient.DEFAULT_URL})",
    )
    options.add_argument("--token", help="admin token (default: $MIRROR_TOKEN)")
    options.add_argument("--json", action="store_true", help="print the API's JSON answer")
    return options


def _add_admin_parsers(commands: Any) -> None:
    common = [_admin_options()]
    run = adminclient.run

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=help_text, parents=common
        )
        return parser

    block = add("block", "block versions of a package on every replica")
    block.add_argument("ecosystem", choices=ECOSYSTEM_CHOICES)
    block.add_argument("package", help="name or glob (@evilscope/*, org.example:*)")
    block.add_argument("versions", help="version or range in the ecosystem's syntax; * for all")
    block.add_argument("--reason", required=True, help="why (kept in the audit log)")
    block.add_argument("--expires", help=f"when the block ends (default: never); {TIME_HELP}")
    block.set_defaults(run=run(adminclient.create_rule("block")))

    exempt = add("exempt", "let versions through quarantine (never through a block)")
    exempt.add_argument("ecosystem", choices=ECOSYSTEM_CHOICES)
    exempt.add_argument("package")
    exempt.add_argument("versions")
    exempt.add_argument("--reason", required=True)
    exempt.add_argument(
        "--until",
        "--expires",
        dest="expires",
        help=f"when it ends (default: when the version matures anyway); {TIME_HELP}",
    )
    exempt.set_defaults(run=run(adminclient.create_rule("exemption")))

    freeze = add("freeze", "hold back everything published after a cutoff, until a time")
    freeze.add_argument("ecosystem", choices=ECOSYSTEM_CHOICES)
    freeze.add_argument("--published-after", required=True, help=f"the cutoff; {TIME_HELP}")
    freeze.add_argument("--until", required=True, help=f"when the freeze ends; {TIME_HELP}")
    freeze.add_argument("--reason", required=True)
    freeze.add_argument("--package", default="*", help="name or glob (default: every package)")
    freeze.set_defaults(run=run(adminclient.create_rule("freeze")))

    for kind, remove, listing in (
        ("block", "unblock", "blocks"),
        ("exemption", "unexempt", "exemptions"),
        ("freeze", "unfreeze", "freezes"),
    ):
        parser = add(remove, f"remove {'an' if kind == 'exemption' else 'a'} {kind} by its id")
        parser.add_argument("id")
        parser.set_defaults(run=run(adminclient.delete_rule(kind)))
        parser = add(listing, f"list {listing} (expired ones are marked)")
        parser.add_argument("--ecosystem", choices=ECOSYSTEM_CHOICES)
        parser.set_defaults(run=run(adminclient.list_rules(kind)))

    explain = add("explain", "why a version is allowed, held, blocked or exempted")
    explain.add_argument("ecosystem", choices=ECOSYSTEM_CHOICES)
    explain.add_argument(
        "subject", help="axios@1.14.1, requests==2.31.0, org.example:lib:1.0 (or PACKAGE)"
    )
    explain.add_argument("version", nargs="?", help="the version, if SUBJECT is a bare package")
    explain.add_argument("--file", help="PyPI: explain this one file of the version")
    explain.set_defaults(run=run(adminclient.explain))

    preflight = add("preflight", "will these lockfiles install through the mirror? (exit 1 if not)")
    preflight.add_argument(
        "files",
        nargs="+",
        help="package-lock.json, npm-shrinkwrap.json, yarn.lock or requirements*.txt files",
    )
    preflight.set_defaults(run=adminclient.run_preflight)

    osv = add("import-osv", "block what OSV advisories list as affected (skips existing blocks)")
    osv.add_argument("files", nargs="+", help="OSV JSON files (an advisory or a list of them)")
    osv.add_argument("--dry-run", action="store_true", help="show the blocks, create nothing")
    osv.set_defaults(run=adminclient.run_import_osv)

    impact = add("impact", "which clients downloaded matching versions")
    impact.add_argument("ecosystem", choices=ECOSYSTEM_CHOICES)
    impact.add_argument("package")
    impact.add_argument("versions", nargs="?", default=None, help="spec (default: *)")
    impact.add_argument("--since", help=f"only downloads since; {TIME_HELP}")
    impact.add_argument(
        "--limit", type=int, default=None, help="downloads per page (1-1000, default 100)"
    )
    impact.add_argument("--cursor", help="the page to show (printed after the previous one)")
    impact.set_defaults(run=run(adminclient.impact))

    audit = add("audit", "the newest admin changes (needs a token)")
    audit.add_argument("--limit", type=int, default=50, help="entries (1-1000, default 50)")
    audit.add_argument("--target", help="only changes of this rule id (b-…, e-…, f-…)")
    audit.add_argument("--actor", help="only changes by this token name")
    audit.add_argument("--since", help=f"only changes at or after; {TIME_HELP}")
    audit.add_argument("--until", help=f"only changes before; {TIME_HELP}")
    audit.add_argument("--cursor", help="the page to show (printed after the previous one)")
    audit.set_defaults(run=run(adminclient.audit))


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
