"""`mirror warm FILE...`: fetch every allowed version the lockfiles pin through the mirror, so
its cache holds them and an offline or flaky-network build can install from the mirror alone.

Each pin is explained first (as `mirror preflight` does); held and blocked ones are listed and
not fetched. An allowed one is fetched through the mirror's own public URLs, exactly as a
client would (never from an upstream): npm the version's `dist.tarball` from the packument;
PyPI every file of the version the simple JSON page lists (pins as read carry no file hashes,
so all of them: the wheels of every platform and the sdist, with their PEP 658 metadata); Maven
the `.pom` and the `.jar` (no jar is fine for a pom-packaging artifact). Bodies are read to
the end in chunks and counted, never kept; the mirror verifies before it caches. Exit 1 if any
pin failed or was refused."""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from packaging.version import InvalidVersion, Version

from mirror.cli.client import AdminError, Endpoint, SameOriginRedirects, UsageError, emit, origin
from mirror.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from mirror.cli.preflight import check_pin, read_files
from mirror.cli.tables import format_table, show
from mirror.ecosystems.pypi.names import file_version
from mirror.errors import BadRequest
from mirror.lockfiles.pins import Pin
from mirror.lockfiles.report import all_pins
from mirror.lockfiles.warming import (
    is_pom_packaging,
    maven_paths,
    refusal,
    warm_summary,
)

MAX_PARALLEL: Final = 64
# The whole run ends after this (default); each read waits at most REQUEST_SECONDS.
WARM_TIMEOUT_SECONDS: Final = 3600.0
REQUEST_SECONDS: Final = 60.0
CHUNK: Final = 256 * 1024
# Documents read to find the artifacts (a packument, a simple page, a pom) are parsed, so
# they are kept; a larger one is refused rather than held in memory.
MAX_DOCUMENT_BYTES: Final = 64 * 1024**2
NPM_ACCEPT: Final = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"
PYPI_ACCEPT: Final = "application/vnd.pypi.simple.v1+json"
USER_AGENT: Final = "mirror-cli warm"
READ_TOKEN_SETTING: Final = "MIRROR_READ_TOKEN"  # noqa: S105 (the env name, not a secret)


class WarmError(Exception):
    """One pin could not be fetched (the message says which URL and why)."""


class Missing(WarmError):
    """The mirror answered 404."""


@dataclass(slots=True)
class Fetcher:
    """GETs through the mirror's public URLs: same origin only, bounded by the deadline."""

    base: str
    deadline: float
    # A read token (`MIRROR_READ_TOKEN`) for a mirror with `access.required`, sent to the
    # mirror's origin only (`_open` checks it; redirects stay on it)
    token: str | None = None
    _opener: urllib.request.OpenerDirector = field(
        default_factory=lambda: urllib.request.build_opener(SameOriginRedirects)
    )

    def url(self, path: str) -> str:
        return self.base + path

    def _open(self, url: str, accept: str) -> Any:
        if origin(url) != origin(self.base):
            # A document that points elsewhere is never followed: warm fills the mirror's
            # cache, it does not download from an upstream.
            raise WarmError(f"{show(url)} is not on the mirror ({show(self.base)})")
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise WarmError("the overall timeout ran out")
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # The origin was checked above: only the mirror's http(s) URL reaches urllib.
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        try:
            return self._opener.open(request, timeout=min(REQUEST_SECONDS, remaining))
        except urllib.error.HTTPError as exc:
            exc.close()
            error = Missing if exc.code == 404 else WarmError
            raise error(f"{show(url)}: HTTP {exc.code} {show(exc.reason)}") from None
        except urllib.error.URLError as exc:
            raise WarmError(f"{show(url)}: {show(exc.reason)}") from None
        except AdminError as exc:
            raise WarmError(str(exc)) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise WarmError(f"{show(url)}: {show(exc)}") from None

    def document(self, url: str, accept: str) -> bytes:
        """A metadata document, whole (bounded)."""
        with self._open(url, accept) as response:
            try:
                body: bytes = response.read(MAX_DOCUMENT_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise WarmError(f"{show(url)}: {show(exc)}") from None
        if len(body) > MAX_DOCUMENT_BYTES:
            raise WarmError(f"{show(url)}: larger than {MAX_DOCUMENT_BYTES} bytes")
        return body

    def drain(self, url: str, counted: Callable[[int], None]) -> int:
        """Read an artifact to the end in chunks; its size. `counted` sees every chunk."""
        size = 0
        with self._open(url, "*/*") as response:
            while True:
                if time.monotonic() > self.deadline:
                    raise WarmError(f"{show(url)}: the overall timeout ran out")
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise WarmError(f"{show(url)}: {show(exc)}") from None
                if not chunk:
                    return size
                size += len(chunk)
                counted(len(chunk))


def _json(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise WarmError(f"{show(url)}: not JSON") from None


# what each ecosystem fetches -------------------------------------------------------------------


def _npm(fetcher: Fetcher, pin: Pin, counted: Callable[[int], None]) -> tuple[int, int]:
    # Scoped names travel as `@scope%2fname`, as npm itself sends them.
    packument_url = fetcher.url("/npm/" + urllib.parse.quote(pin.package, safe="@"))
    packument = _json(fetcher.document(packument_url, NPM_ACCEPT), packument_url)
    try:
        tarball = packument["versions"][pin.version]["dist"]["tarball"]
        if not isinstance(tarball, str):
            raise TypeError(tarball)
    except (KeyError, TypeError):
        raise WarmError(f"{show(packument_url)} lists no tarball for {show(pin.version)}") from None
    return 1, fetcher.drain(tarball, counted)


def _pypi(fetcher: Fetcher, pin: Pin, counted: Callable[[int], None]) -> tuple[int, int]:
    page_url = fetcher.url("/pypi/simple/" + urllib.parse.quote(pin.package) + "/")
    page = _json(fetcher.document(page_url, PYPI_ACCEPT), page_url)
    try:
        wanted = str(Version(pin.version))
    except InvalidVersion:
        raise WarmError(f"{show(pin.version)} is not a PEP 440 version") from None
    files = page.get("files") if isinstance(page, dict) else None
    if not isinstance(files, list):
        raise WarmError(f"{show(page_url)} has no list of files")
    count = size = 0
    for entry in files:
        if not isinstance(entry, dict):
            continue
        filename, href = entry.get("filename"), entry.get("url")
        if not isinstance(filename, str) or not isinstance(href, str):
            continue
        if file_version(filename, pin.package) != wanted:
            continue
        file_url = urllib.parse.urljoin(page_url, href).split("#", 1)[0]
        size += fetcher.drain(file_url, counted)
        count += 1
        if entry.get("core-metadata") or entry.get("dist-info-metadata"):
            # pip reads the PEP 658 metadata before it downloads: an offline build needs it.
            size += fetcher.drain(file_url + ".metadata", counted)
            count += 1
    if not count:
        raise WarmError(f"{show(page_url)} lists no file of version {show(pin.version)}")
    return count, size


def _maven(fetcher: Fetcher, pin: Pin, counted: Callable[[int], None]) -> tuple[int, int]:
    try:
        pom_path, jar_path = (urllib.parse.quote(path) for path in maven_paths(pin))
    except BadRequest as exc:
        raise WarmError(str(exc)) from None
    pom_url = fetcher.url("/maven/" + pom_path)
    pom = fetcher.document(pom_url, "*/*")
    counted(len(pom))
    try:
        jar = fetcher.drain(fetcher.url("/maven/" + jar_path), counted)
    except Missing:
        if is_pom_packaging(pom):
            return 1, len(pom)  # a parent or BOM: no jar to fetch
        raise
    return 2, len(pom) + jar


FETCHERS: Final[Mapping[str, Callable[[Fetcher, Pin, Callable[[int], None]], tuple[int, int]]]] = {
    "npm": _npm,
    "pypi": _pypi,
    "maven": _maven,
}


# progress and the run --------------------------------------------------------------------------


@dataclass(slots=True)
class Progress:
    """One line rewritten in place on a terminal; a plain line per pin otherwise."""

    total: int
    out: TextIO
    done: int = 0
    received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def bytes(self, count: int) -> None:
        with self._lock:
            self.received += count
            if self.out.isatty():
                self._line("")

    def finished(self, pin: Pin, outcome: str) -> None:
        with self._lock:
            self.done += 1
            if self.out.isatty():
                self._line(f" {pin.package} {pin.version}")
            else:
                print(
                    f"warm: {self.done}/{self.total} {pin.ecosystem} {show(pin.package)} "
                    f"{show(pin.version)}: {outcome}",
                    file=self.out,
                )

    def _line(self, last: str) -> None:
        text = f"warm: {self.done}/{self.total} pins, {_size(self.received)}{show(last)}"
        self.out.write("\r" + text[:120].ljust(120))
        self.out.flush()

    def close(self) -> None:
        if self.out.isatty():
            self.out.write("\n")
            self.out.flush()


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024**2:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024**2:.1f} MiB"


def warm_pin(endpoint: Endpoint, fetcher: Fetcher, pin: Pin, progress: Progress) -> dict[str, Any]:
    """Explain `pin`, then fetch it if it installs: one result with its `outcome`."""
    explained = check_pin(endpoint, pin)
    outcome = refusal(explained["verdict"])
    if outcome is not None:
        progress.finished(pin, outcome)
        return {**explained, "outcome": outcome}
    try:
        files, size = FETCHERS[pin.ecosystem](fetcher, pin, progress.bytes)
    except WarmError as exc:
        progress.finished(pin, "failed")
        return {**explained, "outcome": "failed", "detail": str(exc)}
    progress.finished(pin, f"fetched {files} file(s), {size} bytes")
    return {**explained, "outcome": "fetched", "files": files, "bytes": size}


def warm_text(answer: Mapping[str, Any]) -> str:
    lines = []
    for outcome, header in (
        ("held", ("HELD", "VERSION", "VERDICT", "UNTIL", "WHY")),
        ("blocked", ("BLOCKED", "VERSION", "VERDICT", "UNTIL", "WHY")),
        ("failed", ("FAILED", "VERSION", "VERDICT", "UNTIL", "WHY")),
    ):
        if answer[outcome]:
            rows = [
                (
                    f"{r['ecosystem']} {r['package']}", r["version"], r.get("verdict") or "",
                    r.get("until") or "", r.get("detail") or "",
                )
                for r in answer[outcome]
            ]  # fmt: skip
            lines.append(format_table(header, rows))
    fetched = answer["fetched"]
    lines.append(
        f"fetched {len(fetched)} of {answer['pins']} pinned version(s) "
        f"({sum(r['files'] for r in fetched)} file(s), {answer['bytes']} bytes); "
        f"held {len(answer['held'])}, blocked {len(answer['blocked'])}, "
        f"failed {len(answer['failed'])}"
    )
    return "\n".join(lines)


def run_warm(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """`mirror warm FILE...`: fetch every allowed pinned artifact through the mirror."""
    try:
        endpoint = Endpoint.from_args(args, environ)
        if not 1 <= args.parallel <= MAX_PARALLEL:
            raise UsageError(f"--parallel must be 1 to {MAX_PARALLEL}, got {args.parallel}")
        if not args.timeout > 0:
            raise UsageError(f"--timeout must be positive, got {args.timeout}")
        files = read_files(args.files, args.format)
    except UsageError as exc:
        print(f"mirror: usage: {show(exc)}", file=sys.stderr)
        return EXIT_USAGE
    pins = all_pins(files)
    deadline = time.monotonic() + args.timeout
    fetcher = Fetcher(endpoint.url, deadline, token=environ.get(READ_TOKEN_SETTING) or None)
    progress = Progress(len(pins), sys.stderr)
    pool = ThreadPoolExecutor(max_workers=args.parallel)
    futures: dict[Future[dict[str, Any]], Pin] = {
        pool.submit(warm_pin, endpoint, fetcher, pin, progress): pin for pin in pins
    }
    pending = set(futures)
    results: list[dict[str, Any]] = []
    try:
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            done, pending = wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
            results.extend(future.result() for future in done)
    finally:
        # Running fetches stop at their next chunk (they share the deadline).
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
    results.extend(future.result() for future in pending if not future.cancelled())
    timed_out = sorted(futures[future] for future in pending if future.cancelled())
    answer = warm_summary(results, timed_out, why="the overall timeout ran out")
    answer["unpinned"] = [entry for _, lockfile in files for entry in lockfile.unpinned]
    answer["skipped"] = [entry for _, lockfile in files for entry in lockfile.skipped]
    try:
        emit(args, answer, warm_text, sys.stdout)
    except AdminError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    refused = answer["held"] or answer["blocked"] or answer["failed"]
    return EXIT_FAILED if refused else EXIT_OK
