"""The exit codes of every `mirror` command, written once."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0  # done; for preflight: every pinned version would install
EXIT_FAILED: Final = 1  # refused, unreachable, unexpected answer, degraded state
EXIT_USAGE: Final = 2  # a usage error or a bad setting
