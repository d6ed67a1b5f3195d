"""The `mirror` CLI's client of the admin API `/api/v1/`: the endpoint (URL and token), one
request per call (stdlib urllib, so no event loop is needed), the errors, and `run`/`emit`,
which turn a command's answer into output and its errors into exit codes: 1 when the mirror
refused, could not be reached or answered something unexpected (a message is printed, never
a traceback), 2 on a usage error the parser could not catch.

The token never leaves the origin it was given for (a redirect to another scheme, host or
port is refused), and every text from an answer is escaped (`tables.show`) before it
reaches the terminal."""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TextIO

from mirror.admin.parse import PREFIX
from mirror.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from mirror.cli.tables import show

DEFAULT_URL: Final = "http://127.0.0.1:8080"
TIMEOUT_SECONDS: Final = 60.0
# How much of a non-JSON error body is quoted in a message.
MAX_QUOTED: Final = 200


class AdminError(Exception):
    """The mirror refused (its message), or could not be reached."""


class UsageError(Exception):
    """The command line names something the parser could not check (e.g. `pkg@version`)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    token: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> Endpoint:
        url = (args.url or environ.get("MIRROR_URL") or DEFAULT_URL).rstrip("/")
        token = args.token or environ.get("MIRROR_TOKEN") or None
        if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
            raise UsageError(f"the mirror URL must start with http:// or https://, got {url!r}")
        return cls(url=url, token=token)


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port or default


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only within the origin the request went to: urllib would carry
    the Authorization header to any host (and from https to http) otherwise."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if origin(newurl) != origin(req.full_url):
            raise AdminError(
                f"the mirror answered HTTP {code} redirecting to another origin "
                f"({show(newurl)[:MAX_QUOTED]}); the CLI does not follow it, because it would "
                "send the admin token there: check --url / MIRROR_URL"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER: Final = urllib.request.build_opener(SameOriginRedirects)


def call(
    endpoint: Endpoint,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | None] | None = None,
    body: Mapping[str, Any] | None = None,
) -> Any:
    """One API request; the decoded JSON answer, or AdminError with the server's message
    (escaped) or a sentence saying what was wrong with the answer."""
    url = endpoint.url + PREFIX + path
    params = {key: value for key, value in (query or {}).items() if value is not None}
    if params:
        url += "?" + urllib.parse.urlencode(params)
    headers = {"Accept": "application/json", "User-Agent": "mirror-cli"}
    data = None
    if body is not None:
        data = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
        headers["Content-Type"] = "application/json"
    if endpoint.token:
        headers["Authorization"] = f"Bearer {endpoint.token}"
    # The scheme was checked in Endpoint.from_args: only http(s) reaches urllib.
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with _OPENER.open(request, timeout=TIMEOUT_SECONDS) as response:
            raw = response.read()
            content_type = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        raise AdminError(_error_message(exc)) from None
    except urllib.error.URLError as exc:
        raise AdminError(
            f"cannot reach the mirror at {show(endpoint.url)}: {show(exc.reason)}"
        ) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise AdminError(
            f"talking to the mirror at {show(endpoint.url)} failed: {show(exc)}"
        ) from None
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):
        raise AdminError(
            f"the mirror at {show(endpoint.url)} answered {method} {PREFIX}{path} with something "
            f"that is not the API's JSON ({show(content_type) or 'no Content-Type'}, "
            f"{len(raw)} bytes): is --url / MIRROR_URL the mirror?"
        ) from None
    if not isinstance(answer, dict):
        raise unexpected(f"{method} {PREFIX}{path}", f"a JSON {type(answer).__name__}")
    return answer


def unexpected(what: str, detail: str) -> AdminError:
    return AdminError(
        f"the mirror's answer to {what} is not what this CLI expects ({show(detail)}): is "
        "--url / MIRROR_URL a quarantine-mirror of the same version?"
    )


def expect(answer: Mapping[str, Any], what: str, **fields: type) -> Mapping[str, Any]:
    """`answer` if each named field has the given type (`list`: a list of objects; `tuple`:
    a list of anything); AdminError naming the first that does not."""
    for name, kind in fields.items():
        value = answer.get(name)
        if kind is tuple:
            valid = isinstance(value, list)
        elif kind is list:
            valid = isinstance(value, list) and all(isinstance(item, dict) for item in value)
        else:
            valid = isinstance(value, kind)
        if not valid:
            expected = "list" if kind is tuple else kind.__name__
            raise unexpected(what, f"{name!r} is not a JSON {expected}")
    return answer


def _error_message(exc: urllib.error.HTTPError) -> str:
    raw = exc.read() if exc.fp is not None else b""
    try:
        message = json.loads(raw)["error"]
        if not isinstance(message, str):
            raise TypeError(message)
    except (ValueError, KeyError, TypeError, RecursionError):
        content_type = exc.headers.get("Content-Type", "") if exc.headers else ""
        if "json" in content_type or "text/plain" in content_type:
            message = raw.decode("utf-8", "replace").strip()[:MAX_QUOTED] or str(exc.reason)
        else:
            message = f"{exc.reason} ({content_type or 'no Content-Type'}, not the API's JSON)"
    return f"{show(message)} (HTTP {exc.code})"


# running a command ------------------------------------------------------------------------


def emit(
    args: argparse.Namespace, answer: Any, text: Callable[[Any], str | Iterable[str]], out: TextIO
) -> int:
    """Print the answer (JSON as received: json.dumps escapes every control character), or
    its text: a string, or chunks written as they are made (`mirror impact --format csv`
    writes each page as it arrives); an answer of the wrong shape is an AdminError, never a
    traceback."""
    if args.json:
        print(json.dumps(answer, indent=2), file=out)
        return EXIT_OK
    try:
        rendered = text(answer)
        if isinstance(rendered, str):
            print(rendered, file=out)
            return EXIT_OK
        for chunk in rendered:
            out.write(chunk)
        out.flush()
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        what = f"mirror {getattr(args, 'command', None) or 'command'}"
        raise unexpected(what, f"{type(exc).__name__}: {exc}") from None
    return EXIT_OK


def run(
    command: Callable[[argparse.Namespace, Endpoint], tuple[Any, Callable[[Any], str]]],
) -> Callable[[argparse.Namespace, dict[str, str]], int]:
    """Wrap a command: build the endpoint, turn refusals into exit 1 and usage into exit 2."""

    def runner(args: argparse.Namespace, environ: dict[str, str]) -> int:
        try:
            answer, text = command(args, Endpoint.from_args(args, environ))
            return emit(args, answer, text, sys.stdout)
        except UsageError as exc:
            print(f"mirror: usage: {show(exc)}", file=sys.stderr)
            return EXIT_USAGE
        except AdminError as exc:
            print(f"mirror: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return runner
