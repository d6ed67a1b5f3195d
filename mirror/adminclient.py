"""The admin commands of the `mirror` CLI: a small HTTP client for `/api/v1/` (stdlib urllib:
one request per command, so no event loop is needed) and the table / JSON output.

Each `run_*` function takes the parsed arguments and the environment and returns an exit
code: 0 on success, 1 when the mirror refused, could not be reached or answered something
unexpected (a message is printed, never a traceback), 2 on a usage error the parser could
not catch.

Two rules for what comes back from the network: every text from an answer (reasons, package
names, advisory summaries, error messages) goes through `show()` before it reaches the
terminal, so no control character or escape sequence is printed; and the token never
leaves the origin it was given for (a redirect to another scheme, host or port is refused)."""

from __future__ import annotations

import argparse
import http.client
import json
import shlex
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TextIO

from mirror import safetext
from mirror.lockfiles import LockfileError, Pin, read_lockfile
from mirror.osv import ProposedBlock, blocks_from_advisory

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_URL: Final = "http://127.0.0.1:8080"
TIMEOUT_SECONDS: Final = 60.0
API: Final = "/api/v1"
# How much of a non-JSON error body is quoted in a message.
MAX_QUOTED: Final = 200
COVERED_IN_TABLE: Final = 5  # versions a table row shows before "(+N)"


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


def show(value: object) -> str:
    """Text from an answer as it may reach the terminal: unsafe characters escaped."""
    return "" if value is None else safetext.escape(value)


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
    url = endpoint.url + API + path
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
            f"the mirror at {show(endpoint.url)} answered {method} {API}{path} with something "
            f"that is not the API's JSON ({show(content_type) or 'no Content-Type'}, "
            f"{len(raw)} bytes): is --url / MIRROR_URL the mirror?"
        ) from None
    if not isinstance(answer, dict):
        raise unexpected(f"{method} {API}{path}", f"a JSON {type(answer).__name__}")
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


# output ----------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned on two spaces; the last column is never padded. Every cell goes
    through `show()`."""
    if not rows:
        return "(none)"
    cells = [[show(value) for value in headers], *[[show(v) for v in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = []
    for row in cells:
        padded = [value.ljust(width) for value, width in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def _expiry(rule: Mapping[str, Any]) -> str:
    expires = rule.get("expires_at") or "never"
    return f"{expires} (expired)" if rule.get("expired") else str(expires)


def covers_cell(rule: Mapping[str, Any]) -> str:
    """What a rule covers now, in a table cell: a few versions, NONE, or ? (unknown)."""
    covers = rule.get("covers")
    if not isinstance(covers, Mapping):
        return ""
    if covers.get("warning"):
        return "NONE (covers no version the upstream lists)"
    listed = covers.get("versions")
    if not isinstance(listed, list):
        return "?"
    declared = covers.get("count")
    count = declared if isinstance(declared, int) else len(listed)
    shown = ", ".join(show(version) for version in listed[:COVERED_IN_TABLE])
    return shown + (f" (+{count - COVERED_IN_TABLE})" if count > COVERED_IN_TABLE else "")


def coverage_lines(rule: Mapping[str, Any]) -> list[str]:
    """What a new rule or an explained one covers now, said in full (warning first)."""
    covers = rule.get("covers")
    if not isinstance(covers, Mapping):
        return []
    if covers.get("warning"):
        return [f"WARNING: {show(covers['warning'])}"]
    listed = covers.get("versions")
    if not isinstance(listed, list):
        return [f"covers: unknown ({show(covers.get('note'))})"]
    count, total = covers.get("count"), covers.get("listed")
    line = f"covers now: {', '.join(show(version) for version in listed)}"
    line += f" ({show(count)} of {show(total)} versions upstream lists)"
    lines = [line]
    if covers.get("note"):
        lines.append(f"note: {show(covers['note'])}")
    return lines


def rules_table(kind: str, rules: Sequence[Mapping[str, Any]]) -> str:
    if kind == "freeze":
        return format_table(
            ("ID", "ECOSYSTEM", "PACKAGE", "PUBLISHED AFTER", "UNTIL", "BY", "REASON"),
            [
                (r["id"], r["ecosystem"], r["package"], r.get("published_after"), _expiry(r),
                 r["created_by"], r["reason"])
                for r in rules
            ],
        )  # fmt: skip
    return format_table(
        ("ID", "ECOSYSTEM", "PACKAGE", "VERSIONS", "EXPIRES", "BY", "COVERS NOW", "REASON"),
        [
            (r["id"], r["ecosystem"], r["package"], r["versions"], _expiry(r), r["created_by"],
             covers_cell(r), r["reason"])
            for r in rules
        ],
    )  # fmt: skip


def impact_text(impact: Mapping[str, Any]) -> str:
    if "error" in impact:
        return f"impact unknown: {show(impact['error'])}"
    downloads = impact.get("downloads", [])
    lines = []
    more = impact.get("next_cursor")
    if downloads:
        lines.append(
            f"already downloaded by {len(impact['clients'])} client(s) "
            f"({len(downloads)} client/file row(s){' on this page' if more else ''}):"
        )
        lines.append(
            format_table(
                ("CLIENT", "PACKAGE", "VERSION", "FILE", "FIRST SEEN", "LAST SEEN", "COUNT"),
                [
                    (d["client"], d.get("package", ""), d["version"], d["filename"],
                     d["first_seen"], d["last_seen"], str(d["count"]))
                    for d in downloads
                ],
            )
        )  # fmt: skip
    elif more:
        lines.append("no recorded downloads of matching versions on this page")
    else:
        lines.append("no recorded downloads of matching versions")
    if more:
        words = [impact.get("ecosystem"), impact.get("package"), impact.get("versions") or "*"]
        words += ["--cursor", more, "--limit", impact.get("limit") or ""]
        hint = " ".join(shlex.quote(show(word)) for word in words if word != "")
        lines.append(f"more downloads: mirror impact {hint}")
    return "\n".join(lines)


def explain_text(answer: Mapping[str, Any]) -> str:
    rule = answer.get("rule") or {}
    lines = [
        f"{show(answer['ecosystem'])} {show(answer['package'])} {show(answer['version'])}: "
        f"{show(answer['verdict'])}",
        f"  {show(answer['detail'])}",
        f"  published: {show(answer.get('published_at') or 'unknown')}",
    ]
    if answer.get("until"):
        lines.append(f"  until:     {show(answer['until'])}")
    if rule:
        lines.append(
            f"  rule:      {show(rule.get('id'))} ({show(rule.get('kind'))}: "
            f"{show(rule.get('reason'))})"
        )
        lines.extend(f"  {line}" for line in coverage_lines(rule))
    files = answer.get("files") or []
    if files:
        lines.append(
            format_table(
                ("  FILE", "VERDICT", "PUBLISHED", "UNTIL"),
                [
                    (f"  {f.get('filename', '')}", f.get("verdict", ""),
                     f.get("published_at") or "", f.get("until") or "")
                    for f in files
                ],
            )
        )  # fmt: skip
    return "\n".join(lines)


def audit_table(entries: Sequence[Mapping[str, Any]]) -> str:
    def summary(entry: Mapping[str, Any]) -> str:
        rule = entry.get("after") or entry.get("before") or {}
        if not isinstance(rule, Mapping):
            return show(rule)
        parts = [rule.get("ecosystem"), rule.get("package"), rule.get("versions")]
        text = " ".join(show(part) for part in parts if part)
        return f"{text} ({show(rule['reason'])})" if rule.get("reason") else text

    return format_table(
        ("AT", "ACTOR", "CLIENT", "ACTION", "TARGET", "WHAT"),
        [(e["at"], e["actor"], e["client"], e["action"], e["target"], summary(e)) for e in entries],
    )


# commands --------------------------------------------------------------------------------------

COLLECTION: Final = {"block": "blocks", "exemption": "exemptions", "freeze": "freezes"}


def _emit(args: argparse.Namespace, answer: Any, text: Callable[[Any], str], out: TextIO) -> int:
    """Print the answer (JSON as received: json.dumps escapes every control character), or
    its text; an answer of the wrong shape is an AdminError, never a traceback."""
    if args.json:
        print(json.dumps(answer, indent=2), file=out)
        return EXIT_OK
    try:
        rendered = text(answer)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        what = f"mirror {getattr(args, 'command', None) or 'command'}"
        raise unexpected(what, f"{type(exc).__name__}: {exc}") from None
    print(rendered, file=out)
    return EXIT_OK


def run(
    command: Callable[[argparse.Namespace, Endpoint], tuple[Any, Callable[[Any], str]]],
) -> Callable[[argparse.Namespace, dict[str, str]], int]:
    """Wrap a command: build the endpoint, turn refusals into exit 1 and usage into exit 2."""

    def runner(args: argparse.Namespace, environ: dict[str, str]) -> int:
        try:
            answer, text = command(args, Endpoint.from_args(args, environ))
            return _emit(args, answer, text, sys.stdout)
        except UsageError as exc:
            print(f"mirror: usage: {show(exc)}", file=sys.stderr)
            return EXIT_USAGE
        except AdminError as exc:
            print(f"mirror: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return runner


def _created(kind: str) -> Callable[[Any], str]:
    def text(answer: Mapping[str, Any]) -> str:
        rule = answer[kind]
        verb = {"block": "blocked", "exemption": "exempted", "freeze": "froze"}[kind]
        if kind == "freeze":
            head = (
                f"{verb} {show(rule['ecosystem'])} {show(rule['package'])}: nothing published "
                f"after {show(rule['published_after'])} until {show(rule['expires_at'])} "
                f"(id {show(rule['id'])})"
            )
        else:
            until = f" until {show(rule['expires_at'])}" if rule.get("expires_at") else ""
            head = (
                f"{verb} {show(rule['ecosystem'])} {show(rule['package'])} "
                f"{show(rule['versions'])}{until} (id {show(rule['id'])})"
            )
        lines = [head, *coverage_lines(rule)]
        if "impact" in answer:
            lines.append(impact_text(answer["impact"]))
        return "\n".join(lines)

    return text


def create_rule(kind: str) -> Callable[[argparse.Namespace, Endpoint], tuple[Any, Any]]:
    def command(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
        if kind == "freeze":
            body = {
                "ecosystem": args.ecosystem,
                "package": args.package,
                "published_after": args.published_after,
                "until": args.until,
                "reason": args.reason,
            }
        else:
            body = {
                "ecosystem": args.ecosystem,
                "package": args.package,
                "versions": args.versions,
                "reason": args.reason,
                "expires": args.expires,
            }
        answer = call(endpoint, "POST", f"/{COLLECTION[kind]}", body=body)
        return expect(answer, f"mirror {args.command}", **{kind: dict}), _created(kind)

    return command


def delete_rule(kind: str) -> Callable[[argparse.Namespace, Endpoint], tuple[Any, Any]]:
    def command(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
        rule_id = urllib.parse.quote(args.id, safe="")
        answer = call(endpoint, "DELETE", f"/{COLLECTION[kind]}/{rule_id}")
        expect(answer, f"mirror {args.command}", deleted=dict)
        return answer, lambda a: f"removed {kind} {show(a['deleted']['id'])}"

    return command


def list_rules(kind: str) -> Callable[[argparse.Namespace, Endpoint], tuple[Any, Any]]:
    def command(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
        answer = call(endpoint, "GET", f"/{COLLECTION[kind]}", query={"ecosystem": args.ecosystem})
        expect(answer, f"mirror {args.command}", **{COLLECTION[kind]: list})
        return answer, lambda a: rules_table(kind, a[COLLECTION[kind]])

    return command


def split_subject(ecosystem: str, text: str) -> tuple[str, str]:
    """`axios@1.14.1`, `@scope/name@1.0.0`, `requests==2.31.0`, `org.example:lib:1.0`."""
    if ecosystem == "npm":
        package, at, version = text.rpartition("@")
        if not at or not package:
            raise UsageError(f"write the npm version as name@version, got {text!r}")
    elif ecosystem == "pypi":
        package, sep, version = text.partition("==")
        if not sep:
            raise UsageError(f"write the PyPI version as project==version, got {text!r}")
    elif ecosystem == "maven":
        package, sep, version = text.rpartition(":")
        if not sep or ":" not in package:
            raise UsageError(f"write the Maven version as group:artifact:version, got {text!r}")
    else:
        raise UsageError(f"unknown ecosystem {ecosystem!r} (expected npm, pypi or maven)")
    if not package.strip() or not version.strip():
        raise UsageError(f"both a package and a version are needed, got {text!r}")
    return package.strip(), version.strip()


def explain(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
    if args.version is not None:
        package, version = args.subject, args.version
    else:
        package, version = split_subject(args.ecosystem, args.subject)
    query = {"ecosystem": args.ecosystem, "package": package, "version": version}
    if getattr(args, "file", None):
        query["file"] = args.file
    answer = call(endpoint, "GET", "/explain", query=query)
    return expect(answer, "mirror explain", verdict=str, detail=str), explain_text


def impact(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
    query = {
        "ecosystem": args.ecosystem,
        "package": args.package,
        "versions": args.versions,
        "since": args.since,
        "limit": None if args.limit is None else str(args.limit),
        "cursor": args.cursor,
    }
    answer = call(endpoint, "GET", "/impact", query=query)
    return expect(answer, "mirror impact", downloads=list, clients=tuple), impact_text


def audit(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
    query = {
        "limit": str(args.limit),
        "target": getattr(args, "target", None),
        "actor": getattr(args, "actor", None),
        "since": getattr(args, "since", None),
        "until": getattr(args, "until", None),
        "cursor": getattr(args, "cursor", None),
    }
    answer = call(endpoint, "GET", "/audit", query=query)
    expect(answer, "mirror audit", entries=list)
    return answer, audit_text


def audit_text(answer: Mapping[str, Any]) -> str:
    """The entries, then where older ones went: pruned, or on the next page."""
    lines = [audit_table(answer["entries"]) if answer["entries"] else "no matching entries"]
    if answer.get("pruned_before"):
        lines.append(
            f"entries up to {show(answer['pruned_before'])} were pruned (older than the "
            "audit retention; the entry that created a rule still stored is kept)"
        )
    if answer.get("next_cursor"):
        cursor = shlex.quote(show(answer["next_cursor"]))
        lines.append(f"older entries: mirror audit --cursor {cursor} (with the same filters)")
    return "\n".join(lines)


# preflight ----------------------------------------------------------------------------------

PREFLIGHT_PARALLEL: Final = 8
ACCEPTED_VERDICTS: Final = frozenset({"allowed", "exempted"})


def _check_pin(endpoint: Endpoint, pin: Pin) -> dict[str, Any]:
    query = {"ecosystem": pin.ecosystem, "package": pin.package, "version": pin.version}
    try:
        answer = expect(
            call(endpoint, "GET", "/explain", query=query), "mirror preflight", verdict=str
        )
    except AdminError as exc:
        return {**query, "verdict": "error", "until": None, "detail": str(exc)}
    return {
        **query,
        "verdict": answer.get("verdict"),
        "until": answer.get("until"),
        "detail": answer.get("detail"),
    }


def preflight_text(answer: Mapping[str, Any]) -> str:
    refused = answer["refused"]
    lines = []
    if refused:
        lines.append(
            format_table(
                ("PACKAGE", "VERSION", "VERDICT", "UNTIL", "WHY"),
                [
                    (r["package"], r["version"], r["verdict"], r["until"] or "", r["detail"])
                    for r in refused
                ],
            )
        )
    lines.append(
        f"{answer['checked']} pinned version(s) checked: "
        + (f"{len(refused)} would be refused" if refused else "all would install")
    )
    if answer["unpinned"]:
        unpinned = ", ".join(show(name) for name in answer["unpinned"])
        lines.append(f"not checked (no exact version): {unpinned}")
    return "\n".join(lines)


def run_preflight(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """`mirror preflight FILE...`: ask the mirror about every version the lockfiles pin;
    exit 1 if any would be refused (held, blocked, unknown), so CI can stop early."""
    try:
        endpoint = Endpoint.from_args(args, environ)
        pins: set[Pin] = set()
        unpinned: list[str] = []
        for path in args.files:
            try:
                with open(path, encoding="utf-8") as handle:
                    lockfile = read_lockfile(path, handle.read())
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror}") from None
            except LockfileError as exc:
                raise UsageError(str(exc)) from None
            pins.update(lockfile.pins)
            unpinned.extend(lockfile.unpinned)
    except UsageError as exc:
        print(f"mirror: usage: {show(exc)}", file=sys.stderr)
        return EXIT_USAGE
    with ThreadPoolExecutor(max_workers=PREFLIGHT_PARALLEL) as pool:
        results = list(pool.map(lambda pin: _check_pin(endpoint, pin), sorted(pins)))
    refused = [result for result in results if result["verdict"] not in ACCEPTED_VERDICTS]
    answer = {"checked": len(results), "refused": refused, "unpinned": unpinned}
    try:
        _emit(args, answer, preflight_text, sys.stdout)
    except AdminError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if refused else EXIT_OK


# OSV import -----------------------------------------------------------------------------------


def _read_advisories(paths: Sequence[str]) -> list[Mapping[str, Any]]:
    advisories: list[Mapping[str, Any]] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} is not JSON: {exc}") from None
        items = document if isinstance(document, list) else [document]
        if not all(isinstance(item, dict) for item in items):
            raise UsageError(f"{path}: expected an OSV advisory object or a list of them")
        advisories.extend(items)
    return advisories


def import_osv_text(answer: Mapping[str, Any]) -> str:
    rows = [
        (row["action"], row["ecosystem"], row["package"], row["versions"], row.get("id") or "")
        for row in answer["blocks"]
    ]
    lines = []
    if rows:
        lines.append(format_table(("ACTION", "ECOSYSTEM", "PACKAGE", "VERSIONS", "ID"), rows))
    lines.extend(f"skipped: {show(note)}" for note in answer["notes"])
    created = sum(1 for row in answer["blocks"] if row["action"] == "created")
    lines.append(f"{len(rows)} block(s) from {answer['advisories']} advisory(ies); {created} new")
    return "\n".join(lines)


def run_import_osv(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """`mirror import-osv FILE...`: a block per affected range of each advisory, unless an
    identical block exists already (so re-importing a feed is harmless)."""
    try:
        endpoint = Endpoint.from_args(args, environ)
        advisories = _read_advisories(args.files)
    except UsageError as exc:
        print(f"mirror: usage: {show(exc)}", file=sys.stderr)
        return EXIT_USAGE
    proposed: list[ProposedBlock] = []
    notes: list[str] = []
    for advisory in advisories:
        blocks, skipped = blocks_from_advisory(advisory)
        proposed.extend(blocks)
        notes.extend(skipped)
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        existing = _existing_blocks(endpoint)
        for block in sorted(set(proposed)):
            row: dict[str, Any] = {
                "ecosystem": block.ecosystem,
                "package": block.package,
                "versions": block.versions,
                "reason": block.reason,
            }
            if (block.ecosystem, block.package, block.versions) in existing:
                row["action"] = "exists"
            elif args.dry_run:
                row["action"] = "would create"
            else:
                try:
                    created = call(endpoint, "POST", "/blocks", body=dict(row))
                except AdminError as exc:
                    row["action"], row["error"] = "failed", str(exc)
                    notes.append(f"{block.ecosystem} {block.package} {block.versions}: {exc}")
                    failed = True
                else:
                    row["action"], row["id"] = "created", _created_id(created)
                    existing.add((block.ecosystem, block.package, block.versions))
                    if isinstance(created.get("warning"), str):
                        row["warning"] = created["warning"]
                        notes.append(f"warning: {created['warning']}")
            rows.append(row)
        answer = {"advisories": len(advisories), "blocks": rows, "notes": notes}
        _emit(args, answer, import_osv_text, sys.stdout)
    except AdminError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


def _existing_blocks(endpoint: Endpoint) -> set[tuple[str, str, str]]:
    listed = expect(call(endpoint, "GET", "/blocks"), "GET /api/v1/blocks", blocks=list)["blocks"]
    try:
        return {
            (rule["ecosystem"], rule["package"], rule["versions"])
            for rule in listed
            if not rule.get("expired")
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise unexpected("GET /api/v1/blocks", f"{type(exc).__name__}: {exc}") from None


def _created_id(created: Mapping[str, Any]) -> str:
    block = created.get("block")
    if not isinstance(block, Mapping) or not isinstance(block.get("id"), str):
        raise unexpected("POST /api/v1/blocks", "no block id")
    return str(block["id"])
