"""Maven `mvn dependency:list` output: one `group:artifact:type[:classifier]:version:scope`
line per resolved artifact, as printed on the console (`[INFO]    …`) or written with
`-DoutputFile=` (no prefix); Maven 3.9 adds ` -- module name` and `(optional)` after it. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from mirror.lockfiles.pins import Lockfile, Pin, collect, maven_pin

_PART: Final = r"[A-Za-z0-9_.\-]+"
_LINE: Final = re.compile(
    rf"^(?:\[INFO\])?\s*({_PART}):({_PART}):{_PART}(?::{_PART})?:([A-Za-z0-9_.\-+~]+)"
    r":(compile|runtime|test|provided|system|import)(?:[\s:].*)?$"
)


# Colour codes Maven prints with `-Dstyle.color=always` (`[\x1b[1;34mINFO\x1b[m]`).
_COLOUR: Final = re.compile(r"\x1b\[[0-9;]*m")


def dependency_lines(text: str) -> Iterator[re.Match[str]]:
    for line in text.splitlines():
        match = _LINE.match(_COLOUR.sub("", line).rstrip())
        if match:
            yield match


def dependency_list(text: str) -> Lockfile:
    pins: set[Pin] = set()
    skipped: list[str] = []
    for match in dependency_lines(text):
        group, artifact, version, scope = match.groups()
        if scope == "system":  # a file on the build machine, never fetched from a repository
            skipped.append(f"{group}:{artifact}:{version}")
        else:
            pins.add(maven_pin(group, artifact, version))
    return collect("mvn-dependency-list", pins, skipped=skipped)
