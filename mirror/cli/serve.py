"""`mirror serve`: run the mirror with the settings, logging one escaped line per event."""

from __future__ import annotations

import argparse
import logging
import sys

from mirror.cli.settings import load_settings
from mirror.config import Config


def serve(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from mirror.server import serve as run_server

    config = load_settings(args, environ)
    configure_logging(config)
    return run_server(config, announce=lambda line: print(line, file=sys.stderr, flush=True))


def configure_logging(config: Config) -> None:
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
