"""Settings for the commands that read them (`mirror serve`, `mirror config`, `mirror
state`): `--config` and the command-line overrides, and `mirror config`, which prints them
with no secret in them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import urllib.parse
from pathlib import Path
from typing import Any

from mirror.cli.exits import EXIT_OK
from mirror.config import Config, load_config
from mirror.errors import ConfigError


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (default: $MIRROR_CONFIG, else config/mirror.toml if present)",
    )


def add_directory_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="the cache directory (overrides MIRROR_DATA_DIR)")
    parser.add_argument("--state-dir", help="the state directory (overrides MIRROR_STATE_DIR)")


def load_settings(args: argparse.Namespace, environ: dict[str, str]) -> Config:
    overrides = {
        "MIRROR_LISTEN": getattr(args, "listen", None),
        "MIRROR_WORKERS": getattr(args, "workers", None),
        "MIRROR_DATA_DIR": getattr(args, "data_dir", None),
        "MIRROR_STATE_DIR": getattr(args, "state_dir", None),
    }
    environ = {**environ, **{key: value for key, value in overrides.items() if value}}
    path = args.config
    if path is None and not environ.get("MIRROR_CONFIG"):
        path = Path("config/mirror.toml")
    elif path is not None and not path.is_file():
        raise ConfigError(f"--config: no such file {str(path)!r}")
    return load_config(path, environ)


HIDDEN_VALUE = "<set>"
# Settings whose value is a secret wherever they appear (matched on the key's last word): a
# webhook URL carries its secret in its path (Slack-style incoming webhooks).
_SECRET_KEYS = ("auth", "password", "secret", "token", "credentials", "webhook")


def show_config(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """The settings as JSON with no secret in them: tokens by name only; credentials,
    passwords and URL user info or query values shown as `<set>`."""
    config = load_settings(args, environ)
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
