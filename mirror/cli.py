"""The `mirror` command: one small function per subcommand; `main(argv) -> exit code`
(0 ok, 1 failed, 2 usage or bad settings)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirror import __version__
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
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The access log is one JSON object per line, nothing around it.
    access = logging.getLogger("mirror.access")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


def _show_config(args: argparse.Namespace, environ: dict[str, str]) -> int:
    config = _load(args, environ)
    data = dataclasses.asdict(config)
    data["admin"]["tokens"] = sorted(data["admin"]["tokens"])  # names only, never secrets
    print(json.dumps(data, indent=2, default=str))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirror",
        description="quarantine-mirror: a caching npm/PyPI/Maven mirror with release quarantine",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve_parser(commands)
    _add_config_parser(commands)
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
