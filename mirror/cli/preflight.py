"""`mirror preflight FILE...`: will the versions these lockfiles pin install through the
mirror? Every pin is explained by the API; exit 1 if any would be refused."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from mirror.cli.client import AdminError, Endpoint, UsageError, call, emit, expect
from mirror.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from mirror.cli.tables import format_table, show
from mirror.lockfiles import LockfileError, Pin, read_lockfile

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
        emit(args, answer, preflight_text, sys.stdout)
    except AdminError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if refused else EXIT_OK
