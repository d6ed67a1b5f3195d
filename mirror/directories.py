"""The directories the mirror writes: the cache (`data_dir`) and the embedded state with the
last-known policy copy (`state_dir`, `data_dir` unless set). `mirror serve` checks them before
it binds or says it listens, so a directory it cannot write stops the start with one line
naming the setting, instead of a traceback from the first worker; `/readyz` probes the same
way while it runs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mirror.config import Config
from mirror.errors import ConfigError


def writable_directories(config: Config) -> dict[str, Path]:
    """Each directory the mirror writes, by the setting that names it."""
    directories = {"data_dir": config.data_dir}
    if config.state_directory != config.data_dir:
        directories["state_dir"] = config.state_directory
    return directories


def probe_writable(directory: Path) -> None:
    """Create and remove a file in `directory`; raises OSError when that cannot be done."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".ready-", delete=True) as handle:
        handle.write(b"ok")
        handle.flush()


def prepare(config: Config) -> None:
    """Create the directories and prove each writable. Raises ConfigError naming the setting,
    the absolute path and the user (`data_dir: /var/lib/mirror is not writable by uid 999`)."""
    for key, directory in writable_directories(config).items():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe_writable(directory)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"{key}: {directory.absolute()} is not writable by uid {os.getuid()} ({reason})"
            ) from None
