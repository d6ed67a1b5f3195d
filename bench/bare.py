"""The framework's ceiling for the benchmark: bare aiohttp on uvloop answering the same bytes
from memory, with no routing, policy, cache or metrics. `python -m bench.bare PORT DIR`;
several copies share PORT (SO_REUSEPORT) like the mirror's worker processes do."""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

TYPES = {".json": "application/json", ".tgz": "application/octet-stream"}


def build(directory: Path) -> web.Application:
    files = {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}

    async def answer(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = files.get(name)
        if body is None:
            raise web.HTTPNotFound
        return web.Response(body=body, content_type=TYPES.get(Path(name).suffix, "text/plain"))

    app = web.Application()
    app.router.add_get("/{name}", answer)
    return app


def main() -> None:
    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        uvloop = None
    if uvloop is not None:
        uvloop.install()
    web.run_app(
        build(directory), host="127.0.0.1", port=port, reuse_port=True, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
