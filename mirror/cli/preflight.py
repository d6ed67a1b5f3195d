"""`mirror preflight FILE...`: will the versions these lockfiles pin install through the
mirror? Every pin is explained by the API; exit 1 if any would be refused."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from mirror.cli.client import AdminError, Endpoint, UsageError, call, emit, expect
from mirror.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from mirror.cli.tables import format_table, show
from mirror.lockfiles.formats import read_lockfile
from mirror.lockfiles.pins import MAX_LOCKFILE_CHARS, Lockfile, LockfileError, Pin
from mirror.lockfiles.report import PINS_AT_ONCE, all_pins, pin_result, preflight_answer

PREFLIGHT_PARALLEL: Final = PINS_AT_ONCE
SKIPPED_SHOWN: Final = 5  # the text report names a few skipped entries, then counts the rest


def check_pin(endpoint: Endpoint, pin: Pin) -> dict[str, Any]:
    query = {"ecosystem": pin.ecosystem, "package": pin.package, "version": pin.version}
    try:
        answer = expect(
            call(endpoint, "GET", "/explain", query=query), "mirror preflight", verdict=str
        )
    except AdminError as exc:
        return pin_result(pin, "error", None, str(exc))
    return pin_result(pin, answer.get("verdict"), answer.get("until"), answer.get("detail"))


def preflight_text(answer: Mapping[str, Any]) -> str:
    refused = answer["refused"]
    lines = []
    if refused:
        # With several files, which of them pins each refused version (which build has it).
        several = len(answer.get("files") or ()) > 1
        header = ("PACKAGE", "VERSION", "VERDICT", "UNTIL", *(("IN",) if several else ()), "WHY")
        rows = [
            (
                r["package"], r["version"], r["verdict"], r["until"] or "",
                *((", ".join(r.get("in") or ()),) if several else ()), r["detail"],
            )
            for r in refused
        ]  # fmt: skip
        lines.append(format_table(header, rows))
    lines.append(
        f"{answer['checked']} pinned version(s) checked: "
        + (f"{len(refused)} would be refused" if refused else "all would install")
    )
    if answer["unpinned"]:
        unpinned = ", ".join(show(name) for name in answer["unpinned"])
        lines.append(f"not checked (no exact version): {unpinned}")
    skipped = answer.get("skipped") or []
    if skipped:
        named = ", ".join(show(entry) for entry in skipped[:SKIPPED_SHOWN])
        more = f" and {len(skipped) - SKIPPED_SHOWN} more" if len(skipped) > SKIPPED_SHOWN else ""
        lines.append(
            f"not checked (not from a registry the mirror serves, or not read): {named}{more}"
        )
    return "\n".join(lines)


def read_files(paths: Sequence[str], format_name: str | None) -> list[tuple[str, Lockfile]]:
    """Each named file read as a lockfile (its format from the content unless
    `format_name`); UsageError naming the first that cannot be read."""
    files: list[tuple[str, Lockfile]] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read(MAX_LOCKFILE_CHARS + 1)
            files.append((path, read_lockfile(text, name=path, format_name=format_name)))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text; not a lockfile") from None
        except LockfileError as exc:
            raise UsageError(str(exc)) from None
    return files


def run_preflight(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """`mirror preflight FILE...`: ask the mirror about every version the lockfiles pin;
    exit 1 if any would be refused (held, blocked, unknown), so CI can stop early."""
    try:
        endpoint = Endpoint.from_args(args, environ)
        files = read_files(args.files, args.format)
    except UsageError as exc:
        print(f"mirror: usage: {show(exc)}", file=sys.stderr)
        return EXIT_USAGE
    with ThreadPoolExecutor(max_workers=PREFLIGHT_PARALLEL) as pool:
        results = list(pool.map(lambda pin: check_pin(endpoint, pin), all_pins(files)))
    answer = preflight_answer(files, results)
    try:
        emit(args, answer, preflight_text, sys.stdout)
    except AdminError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if answer["refused"] else EXIT_OK
