"""The framework's ceiling for the benchmark: bare aiohttp on uvloop answering the same bytes
from memory, with no routing, policy, cache or metrics. `python -m bench.bare PORT DIR`;
several copies share PORT (SO_REUSEPORT) like the mirror's worker processes do."""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

TYPES = {".json": "application/json", ".tgz": "application/octet-stream", ".html": "text/html"}
INDEX = "index.html"


def build(directory: Path) -> web.Application:
    """Every file below `directory` at its path; a directory's `index.html` also at the
    directory's path (ending in `/`), as nginx serves it."""
    files: dict[str, tuple[bytes, str]] = {}
    for path in directory.rglob("*"):
        if path.is_file():
            served = (path.read_bytes(), TYPES.get(path.suffix, "text/plain"))
            relative = "/" + path.relative_to(directory).as_posix()
            files[relative] = served
            if path.name == INDEX:
                files[relative.removesuffix(INDEX)] = served

    async def answer(request: web.Request) -> web.Response:
        found = files.get(request.path)
        if found is None:
            raise web.HTTPNotFound
        body, content_type = found
        return web.Response(body=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/{path:.*}", answer)
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
