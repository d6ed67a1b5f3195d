"""What the dashboard's report pages share: links that keep a form's filters, and CSV files
streamed as their rows are read (bounded in rows, with the security headers every `/ui/`
answer carries)."""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from mirror.errors import MirrorError
from mirror.reportcells import csv_line
from mirror.ui.render import PAGE_CACHE_CONTROL, SECURITY_HEADERS

MAX_FILENAME: Final = 120  # characters of a download's file name


def link(path: str, filters: Mapping[str, str], **extra: str) -> str:
    """`path` with the filters given (empty ones left out) and `extra` as its query."""
    params = {field: value for field, value in filters.items() if value}
    query = urllib.parse.urlencode({**params, **extra})
    return f"{path}?{query}" if query else path


def filters_of(params: Mapping[str, str], fields: Sequence[str]) -> dict[str, str]:
    """A filter form's fields as given, to show them again in the form."""
    return {field: params.get(field, "").strip() for field in fields}


async def start_download(
    request: web.Request, filename: str, content_type: str
) -> web.StreamResponse:
    """A streamed file download (`Content-Disposition: attachment`), its headers sent now:
    the security headers and `no-store` set here, since the UI middleware's come too late for
    a response already started. The file name keeps only letters, digits, `.`, `_` and `-`
    (it is built from package names)."""
    shown_name = re.sub(r"[^A-Za-z0-9._-]+", "_", filename)[:MAX_FILENAME]
    response = web.StreamResponse(
        headers={
            **SECURITY_HEADERS,
            "Cache-Control": PAGE_CACHE_CONTROL,
            "Content-Disposition": f'attachment; filename="{shown_name}"',
        }
    )
    response.content_type = content_type
    response.charset = "utf-8"
    await response.prepare(request)
    return response


async def stream_csv(
    request: web.Request,
    filename: str,
    header: Sequence[str],
    lines: AsyncGenerator[str, None],
    *,
    max_rows: int,
    what: str,
) -> web.StreamResponse:
    """A CSV download: `header`, then the `lines` as they come, at most `max_rows`. Past
    them, or on an error once the download has started, a last line starting with `#` says
    the rows above are incomplete (the status is sent already). Whatever must be refused
    with an error page (a bad filter) must be refused before calling this."""
    response = await start_download(request, filename, "text/csv")
    await response.write(csv_line(header).encode())
    rows = 0
    try:
        async with contextlib.aclosing(lines):
            async for line in lines:
                if rows == max_rows:
                    cut = f"# cut: more than {max_rows} {what} match; narrow the filters"
                    await response.write(csv_line([cut]).encode())
                    break
                await response.write(line.encode())
                rows += 1
    except MirrorError as exc:
        incomplete = f"# error: {exc.message} (the rows above are incomplete)"
        await response.write(csv_line([incomplete]).encode())
    await response.write_eof()
    return response


async def paged_lines(
    first: Mapping[str, Any],
    rows: str,
    cursor: str,
    line: Callable[[Mapping[str, Any]], str],
    page_after: Callable[[str], Awaitable[Mapping[str, Any]]],
) -> AsyncGenerator[str, None]:
    """The CSV lines of a report's `first` answer (its `rows` list) and of every page after
    it, each asked with the `cursor` the one before gave (`page_after`), until a page gives
    none or one given before: what every report's download reads."""
    page, seen = first, set[str]()
    while True:
        for row in page[rows]:
            yield line(row)
        following = page[cursor]
        if not following or following in seen:
            return
        seen.add(following)
        page = await page_after(following)
