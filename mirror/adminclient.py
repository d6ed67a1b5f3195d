"""The admin commands of the `mirror` CLI: a small HTTP client for `/api/v1/` (stdlib urllib:
one request per command, so no event loop is needed) and the table / JSON output.

Each `run_*` function takes the parsed arguments and the environment and returns an exit
code: 0 on success, 1 when the mirror refused or could not be reached (its message is
printed), 2 on a usage error the parser could not catch."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TextIO

from mirror.lockfiles import LockfileError, Pin, read_lockfile
from mirror.osv import ProposedBlock, blocks_from_advisory

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_URL: Final = "http://127.0.0.1:8080"
TIMEOUT_SECONDS: Final = 60.0
API: Final = "/api/v1"


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


def call(
    endpoint: Endpoint,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | None] | None = None,
    body: Mapping[str, Any] | None = None,
) -> Any:
    """One API request; the decoded JSON answer, or AdminError with the server's message."""
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
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise AdminError(_error_message(exc)) from None
    except urllib.error.URLError as exc:
        raise AdminError(f"cannot reach the mirror at {endpoint.url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise AdminError(f"talking to the mirror at {endpoint.url} failed: {exc}") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    raw = exc.read()
    try:
        message = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        message = raw.decode("utf-8", "replace").strip() or exc.reason
    return f"{message} (HTTP {exc.code})"


# output ----------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned on two spaces; the last column is never padded."""
    if not rows:
        return "(none)"
    cells = [
        [str(value) for value in headers],
        *[["" if v is None else str(v) for v in row] for row in rows],
    ]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = []
    for row in cells:
        padded = [value.ljust(width) for value, width in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def _expiry(rule: Mapping[str, Any]) -> str:
    expires = rule.get("expires_at") or "never"
    return f"{expires} (expired)" if rule.get("expired") else str(expires)


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
        ("ID", "ECOSYSTEM", "PACKAGE", "VERSIONS", "EXPIRES", "BY", "REASON"),
        [
            (r["id"], r["ecosystem"], r["package"], r["versions"], _expiry(r), r["created_by"],
             r["reason"])
            for r in rules
        ],
    )  # fmt: skip


def impact_text(impact: Mapping[str, Any]) -> str:
    if "error" in impact:
        return f"impact unknown: {impact['error']}"
    downloads = impact.get("downloads", [])
    lines = []
    if downloads:
        lines.append(
            f"already downloaded by {len(impact['clients'])} client(s) "
            f"({len(downloads)} download(s)):"
        )
        lines.append(
            format_table(
                ("CLIENT", "PACKAGE", "VERSION", "FILE", "AT"),
                [
                    (d["client"], d.get("package", ""), d["version"], d["filename"], d["at"])
                    for d in downloads
                ],
            )
        )
    else:
        lines.append("no recorded downloads of matching versions")
    if impact.get("note"):
        lines.append(f"note: {impact['note']}")
    return "\n".join(lines)


def explain_text(answer: Mapping[str, Any]) -> str:
    rule = answer.get("rule") or {}
    lines = [
        f"{answer['ecosystem']} {answer['package']} {answer['version']}: {answer['verdict']}",
        f"  {answer['detail']}",
        f"  published: {answer.get('published_at') or 'unknown'}",
    ]
    if answer.get("until"):
        lines.append(f"  until:     {answer['until']}")
    if rule:
        lines.append(f"  rule:      {rule.get('id')} ({rule.get('kind')}: {rule.get('reason')})")
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
        parts = [rule.get("ecosystem"), rule.get("package"), rule.get("versions")]
        text = " ".join(str(part) for part in parts if part)
        return f"{text} ({rule['reason']})" if rule.get("reason") else text

    return format_table(
        ("AT", "ACTOR", "CLIENT", "ACTION", "TARGET", "WHAT"),
        [(e["at"], e["actor"], e["client"], e["action"], e["target"], summary(e)) for e in entries],
    )


# commands --------------------------------------------------------------------------------------

COLLECTION: Final = {"block": "blocks", "exemption": "exemptions", "freeze": "freezes"}


def _emit(args: argparse.Namespace, answer: Any, text: Callable[[Any], str], out: TextIO) -> int:
    if args.json:
        print(json.dumps(answer, indent=2), file=out)
    else:
        print(text(answer), file=out)
    return EXIT_OK


def run(
    command: Callable[[argparse.Namespace, Endpoint], tuple[Any, Callable[[Any], str]]],
) -> Callable[[argparse.Namespace, dict[str, str]], int]:
    """Wrap a command: build the endpoint, turn refusals into exit 1 and usage into exit 2."""

    def runner(args: argparse.Namespace, environ: dict[str, str]) -> int:
        try:
            answer, text = command(args, Endpoint.from_args(args, environ))
        except UsageError as exc:
            print(f"mirror: usage: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except AdminError as exc:
            print(f"mirror: {exc}", file=sys.stderr)
            return EXIT_FAILED
        return _emit(args, answer, text, sys.stdout)

    return runner


def _created(kind: str) -> Callable[[Any], str]:
    def text(answer: Mapping[str, Any]) -> str:
        rule = answer[kind]
        verb = {"block": "blocked", "exemption": "exempted", "freeze": "froze"}[kind]
        if kind == "freeze":
            head = (
                f"{verb} {rule['ecosystem']} {rule['package']}: nothing published after "
                f"{rule['published_after']} until {rule['expires_at']} (id {rule['id']})"
            )
        else:
            until = f" until {rule['expires_at']}" if rule.get("expires_at") else ""
            head = (
                f"{verb} {rule['ecosystem']} {rule['package']} {rule['versions']}{until} "
                f"(id {rule['id']})"
            )
        if "impact" in answer:
            return head + "\n" + impact_text(answer["impact"])
        return head

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
        return call(endpoint, "POST", f"/{COLLECTION[kind]}", body=body), _created(kind)

    return command


def delete_rule(kind: str) -> Callable[[argparse.Namespace, Endpoint], tuple[Any, Any]]:
    def command(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
        rule_id = urllib.parse.quote(args.id, safe="")
        answer = call(endpoint, "DELETE", f"/{COLLECTION[kind]}/{rule_id}")
        return answer, lambda a: f"removed {kind} {a['deleted']['id']}"

    return command


def list_rules(kind: str) -> Callable[[argparse.Namespace, Endpoint], tuple[Any, Any]]:
    def command(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
        answer = call(endpoint, "GET", f"/{COLLECTION[kind]}", query={"ecosystem": args.ecosystem})
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
    return call(endpoint, "GET", "/explain", query=query), explain_text


def impact(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
    query = {
        "ecosystem": args.ecosystem,
        "package": args.package,
        "versions": args.versions,
        "since": args.since,
    }
    return call(endpoint, "GET", "/impact", query=query), impact_text


def audit(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Any, Any]:
    answer = call(endpoint, "GET", "/audit", query={"limit": str(args.limit)})
    return answer, lambda a: audit_table(a["entries"])


# preflight ----------------------------------------------------------------------------------

PREFLIGHT_PARALLEL: Final = 8
ACCEPTED_VERDICTS: Final = frozenset({"allowed", "exempted"})


def _check_pin(endpoint: Endpoint, pin: Pin) -> dict[str, Any]:
    query = {"ecosystem": pin.ecosystem, "package": pin.package, "version": pin.version}
    try:
        answer = call(endpoint, "GET", "/explain", query=query)
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
        lines.append(f"not checked (no exact version): {', '.join(answer['unpinned'])}")
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
        print(f"mirror: usage: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with ThreadPoolExecutor(max_workers=PREFLIGHT_PARALLEL) as pool:
        results = list(pool.map(lambda pin: _check_pin(endpoint, pin), sorted(pins)))
    refused = [result for result in results if result["verdict"] not in ACCEPTED_VERDICTS]
    answer = {"checked": len(results), "refused": refused, "unpinned": unpinned}
    _emit(args, answer, preflight_text, sys.stdout)
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
    lines.extend(f"skipped: {note}" for note in answer["notes"])
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
        print(f"mirror: usage: {exc}", file=sys.stderr)
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
        existing = {
            (rule["ecosystem"], rule["package"], rule["versions"])
            for rule in call(endpoint, "GET", "/blocks")["blocks"]
            if not rule.get("expired")
        }
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
                    row["action"], row["id"] = "created", created["block"]["id"]
                    existing.add((block.ecosystem, block.package, block.versions))
            rows.append(row)
    except AdminError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    answer = {"advisories": len(advisories), "blocks": rows, "notes": notes}
    _emit(args, answer, import_osv_text, sys.stdout)
    return EXIT_FAILED if failed else EXIT_OK
