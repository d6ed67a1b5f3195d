"""What changed between two versions of a package, for a reviewer: files added, removed and
changed between two archive listings (`mirror.archives`), unified text diffs (bounded), the
manifest and install-script diffs of each ecosystem, and the signals a reviewer should look
at first. Pure: listings in, a `VersionDiff` out.

The signals are a plain list of sentences: later risk signals join the same list.

Bounded whatever the files hold: difflib is quadratic in the worst case, so one text is
compared only up to MAX_COMPARED_LINES lines, and one comparison up to MAX_COMPARED_TOTAL
lines in all (later files say "too large to diff"); what is shown is at most MAX_DIFF_LINES
lines a diff, MAX_SHOWN_LINES lines in all, each cut at MAX_LINE_CHARS characters. A caller's
`expired` is asked between files: once True the rest is listed, not diffed, and the review
says it was cut short."""

from __future__ import annotations

import difflib
import email.parser
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mirror.archives import Entry, Expired, Listing
from mirror.errors import BadUpstreamDocument
from mirror.jsondepth import check_depth

# A diff longer than this many lines is not shown ("diff too large").
MAX_DIFF_LINES: Final = 2_000
# Lines of one text compared at most (difflib is quadratic in the worst case: 5,000 hostile
# lines take about 0.15 s), and lines compared by one review in all (so about 1 s at worst).
MAX_COMPARED_LINES: Final = 5_000
MAX_COMPARED_TOTAL: Final = 40_000
# Diff lines shown by one review in all, and the characters of one shown line (minified
# code is one long line).
MAX_SHOWN_LINES: Final = 10_000
MAX_LINE_CHARS: Final = 500
CUT_SHORT: Final = "review cut short: out of time; not diffed"
# Changed files whose text diff is shown, at most (the others are listed).
MAX_DIFFED_FILES: Final = 50
# A size jump worth a signal: at least this factor and this many bytes more.
SIZE_JUMP_FACTOR: Final = 2.0
SIZE_JUMP_BYTES: Final = 256 * 1024
NPM_INSTALL_SCRIPTS: Final = ("preinstall", "install", "postinstall")
# A token of an install command that names a file in the package (`node install.js`).
_SCRIPT_FILE: Final = re.compile(r"^(?:\./)?[\w@.+-][\w@./+-]*\.(?:js|cjs|mjs|ts|sh|py|node)$")

Change = Literal["added", "removed", "changed"]


@dataclass(frozen=True, slots=True)
class TextDiff:
    """A unified diff's lines, or why there are none (`note`)."""

    lines: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class FileChange:
    name: str
    change: Change
    old: Entry | None
    new: Entry | None
    diff: TextDiff | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """One titled diff the page shows (the manifest, an install script)."""

    title: str
    diff: TextDiff


@dataclass(frozen=True, slots=True)
class Side:
    """One version's artifact as read: its file name, its listing, and the manifest text when
    it lives outside the archive (a Maven `.pom`)."""

    filename: str
    listing: Listing
    manifest: str | None = None
    manifest_name: str = ""


@dataclass(frozen=True, slots=True)
class VersionDiff:
    changes: tuple[FileChange, ...]
    sections: tuple[Section, ...]
    signals: tuple[str, ...]
    problems: tuple[str, ...] = ()
    old_size: int = 0
    new_size: int = 0
    unchanged: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)


class DiffBudget:
    """What one comparison may still compare and show (see the module's bounds)."""

    def __init__(self, expired: Expired | None = None) -> None:
        self.expired = expired
        self.compared = MAX_COMPARED_TOTAL
        self.shown = MAX_SHOWN_LINES
        self.cut_short = False

    def out_of_time(self) -> bool:
        if not self.cut_short and self.expired is not None and self.expired():
            self.cut_short = True
        return self.cut_short


def unified(
    old: str | None,
    new: str | None,
    old_name: str,
    new_name: str,
    budget: DiffBudget | None = None,
) -> TextDiff:
    """A unified diff of two texts (None: absent), bounded (`budget`: shared by the diffs of
    one comparison; without it, this diff alone)."""
    budget = budget or DiffBudget()
    if budget.out_of_time():
        return TextDiff(note=CUT_SHORT)
    old_lines = (old or "").splitlines()
    new_lines = (new or "").splitlines()
    longest = max(len(old_lines), len(new_lines))
    if longest > MAX_COMPARED_LINES:
        return TextDiff(note=f"too large to diff: more than {MAX_COMPARED_LINES} lines to compare")
    if len(old_lines) + len(new_lines) > budget.compared:
        return TextDiff(
            note=f"too large to diff: this review compared {MAX_COMPARED_TOTAL} lines already"
        )
    budget.compared -= len(old_lines) + len(new_lines)
    lines = list(difflib.unified_diff(old_lines, new_lines, old_name, new_name, lineterm="", n=3))
    if len(lines) > MAX_DIFF_LINES:
        return TextDiff(note=f"diff too large: {len(lines)} lines (at most {MAX_DIFF_LINES})")
    if not lines:
        return TextDiff(note="no change")
    if len(lines) > budget.shown:
        return TextDiff(note=f"diff not shown: this review showed {MAX_SHOWN_LINES} lines already")
    budget.shown -= len(lines)
    return TextDiff(lines=tuple(_cut(line) for line in lines))


def _cut(line: str) -> str:
    if len(line) <= MAX_LINE_CHARS:
        return line
    return f"{line[:MAX_LINE_CHARS]}… ({len(line) - MAX_LINE_CHARS} more characters)"


def _entry_diff(
    name: str, old: Entry | None, new: Entry | None, budget: DiffBudget | None = None
) -> TextDiff:
    for entry in (old, new):
        if entry is None:
            continue
        if entry.kind == "link":
            return TextDiff(note=f"a link to {entry.target!r} (never followed)")
        if entry.kind != "file":
            return TextDiff(note=f"a {entry.kind}: not compared")
        if entry.binary:
            return TextDiff(note="binary: compared by size and sha256 only")
        if entry.text is None:
            return TextDiff(note="too large to diff: compared by size and sha256 only")
    return unified(
        old.text if old else None, new.text if new else None, f"a/{name}", f"b/{name}", budget
    )


def _same(old: Entry, new: Entry) -> bool:
    return (old.kind, old.size, old.sha256, old.target) == (
        new.kind,
        new.size,
        new.sha256,
        new.target,
    )


def file_changes(
    old: Listing, new: Listing, budget: DiffBudget | None = None
) -> tuple[list[FileChange], int]:
    """The entries added, removed and changed from `old` to `new` (by name, sorted), the
    first MAX_DIFFED_FILES text changes with their diff; and how many are unchanged."""
    budget = budget or DiffBudget()
    changes: list[FileChange] = []
    unchanged = 0
    diffed = 0
    for name in sorted(set(old.entries) | set(new.entries)):
        before, after = old.entries.get(name), new.entries.get(name)
        if before is not None and after is not None and _same(before, after):
            unchanged += 1
            continue
        change: Change = "added" if before is None else "removed" if after is None else "changed"
        diff: TextDiff | None = None
        kinds = {entry.kind for entry in (before, after) if entry is not None}
        if kinds != {"directory"}:
            if diffed < MAX_DIFFED_FILES:
                diff = _entry_diff(name, before, after, budget)
                diffed += 1
            else:
                diff = TextDiff(note=f"not diffed: only the first {MAX_DIFFED_FILES} are")
        changes.append(FileChange(name=name, change=change, old=before, new=after, diff=diff))
    return changes, unchanged


def _unpacked_size(listing: Listing) -> int:
    return sum(entry.size for entry in listing.entries.values() if entry.kind == "file")


def compare(
    ecosystem: str, old: Side | None, new: Side, *, expired: Expired | None = None
) -> VersionDiff:
    """What changed from `old` (None: no baseline, so everything is new) to `new`: the files,
    the manifest and install-script diffs, and the signals (`expired`: see the module)."""
    empty = Side(filename="", listing=Listing())
    base = old or empty
    budget = DiffBudget(expired)
    sections: list[Section] = []
    signals: list[str] = []
    # The manifest and install scripts first: they matter most and are small.
    if ecosystem == "npm":
        _npm(base, new, sections, signals, budget)
    elif ecosystem == "pypi":
        _pypi(base, new, sections, signals, budget)
    elif ecosystem == "maven":
        _maven(base, new, sections, signals, budget)
    changes, unchanged = file_changes(base.listing, new.listing, budget)
    old_size, new_size = _unpacked_size(base.listing), _unpacked_size(new.listing)
    if (
        old is not None
        and new_size - old_size >= SIZE_JUMP_BYTES
        and new_size >= old_size * SIZE_JUMP_FACTOR
    ):
        signals.append(f"big size jump: {old_size} → {new_size} bytes unpacked")
    problems = [f"{new.filename}: {problem}" for problem in new.listing.problems]
    if old is not None:
        problems += [f"{old.filename}: {problem}" for problem in old.listing.problems]
    if budget.cut_short:
        problems.append("review cut short: out of time; the files after it were not diffed")
    counts = {
        kind: sum(1 for c in changes if c.change == kind)
        for kind in ("added", "removed", "changed")
    }
    return VersionDiff(
        changes=tuple(changes),
        sections=tuple(sections),
        signals=tuple(signals),
        problems=tuple(problems),
        old_size=old_size,
        new_size=new_size,
        unchanged=unchanged,
        counts=counts,
    )


def _text(listing: Listing, name: str) -> str | None:
    entry = listing.entries.get(name)
    return entry.text if entry is not None and entry.kind == "file" else None


def _new_names(old: Sequence[str], new: Sequence[str]) -> list[str]:
    known = set(old)
    return sorted({name for name in new if name not in known})


# npm --------------------------------------------------------------------------------------


def package_json(text: str | None) -> Mapping[str, Any]:
    """A package.json's object ({} when absent or not a JSON object)."""
    if text is None:
        return {}
    try:
        check_depth(text.encode(), "package.json")
        parsed = json.loads(text)
    except (ValueError, RecursionError, BadUpstreamDocument):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def install_scripts(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The preinstall, install and postinstall commands of a package.json."""
    scripts = manifest.get("scripts")
    if not isinstance(scripts, dict):
        return {}
    return {
        name: scripts[name]
        for name in NPM_INSTALL_SCRIPTS
        if isinstance(scripts.get(name), str) and scripts[name].strip()
    }


def script_files(command: str) -> list[str]:
    """The files of the package an install command names (`node install.js` → install.js)."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    named = []
    for token in tokens:
        if _SCRIPT_FILE.match(token) and ".." not in token.split("/"):
            named.append(token.removeprefix("./"))
    return named


def _dependencies(manifest: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for key in ("dependencies", "optionalDependencies", "peerDependencies"):
        value = manifest.get(key)
        if isinstance(value, dict):
            names.extend(str(name) for name in value)
    return names


def _npm(
    old: Side, new: Side, sections: list[Section], signals: list[str], budget: DiffBudget
) -> None:
    old_text, new_text = _text(old.listing, "package.json"), _text(new.listing, "package.json")
    sections.append(
        Section(
            "package.json",
            unified(old_text, new_text, "a/package.json", "b/package.json", budget),
        )
    )
    old_manifest, new_manifest = package_json(old_text), package_json(new_text)
    old_scripts, new_scripts = install_scripts(old_manifest), install_scripts(new_manifest)
    if new_scripts and not old_scripts:
        listed = ", ".join(f"{name}: {command}" for name, command in new_scripts.items())
        signals.append(f"install script added ({listed})")
    elif new_scripts != old_scripts and new_scripts:
        signals.append("install script changed")
    if old_scripts or new_scripts:
        sections.append(
            Section(
                "install scripts (package.json)",
                unified(_script_lines(old_scripts), _script_lines(new_scripts), "a", "b", budget),
            )
        )
    files = sorted(
        {
            name
            for command in (*old_scripts.values(), *new_scripts.values())
            for name in script_files(command)
        }
    )
    for name in files:
        if name in old.listing.entries or name in new.listing.entries:
            sections.append(
                Section(
                    f"install script file {name}",
                    _entry_diff(
                        name,
                        old.listing.entries.get(name),
                        new.listing.entries.get(name),
                        budget,
                    ),
                )
            )
    added = _new_names(_dependencies(old_manifest), _dependencies(new_manifest))
    if added:
        signals.append("new dependencies: " + ", ".join(added))


def _script_lines(scripts: Mapping[str, str]) -> str:
    return "".join(f"{name}: {command}\n" for name, command in scripts.items())


# PyPI -------------------------------------------------------------------------------------

_REQUIREMENT_NAME: Final = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _pypi_manifest(listing: Listing) -> tuple[str, str | None]:
    """The name and text of a wheel's `*.dist-info/METADATA` or an sdist's `PKG-INFO`."""
    for name in sorted(listing.entries):
        if name.count("/") == 1 and name.endswith(".dist-info/METADATA"):
            return name, _text(listing, name)
    return "PKG-INFO", _text(listing, "PKG-INFO")


def requirements(metadata: str | None) -> list[str]:
    """The distribution names of a core metadata's `Requires-Dist` (normalised, PEP 503)."""
    if metadata is None:
        return []
    message = email.parser.Parser().parsestr(metadata, headersonly=True)
    names = []
    for value in message.get_all("Requires-Dist") or []:
        match = _REQUIREMENT_NAME.match(str(value))
        if match:
            names.append(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def _pypi(
    old: Side, new: Side, sections: list[Section], signals: list[str], budget: DiffBudget
) -> None:
    old_name, old_text = _pypi_manifest(old.listing)
    new_name, new_text = _pypi_manifest(new.listing)
    sections.append(
        Section(
            f"metadata ({new_name})",
            unified(old_text, new_text, f"a/{old_name}", f"b/{new_name}", budget),
        )
    )
    old_setup, new_setup = old.listing.entries.get("setup.py"), new.listing.entries.get("setup.py")
    if old_setup is not None or new_setup is not None:
        sections.append(Section("setup.py", _entry_diff("setup.py", old_setup, new_setup, budget)))
    if new_setup is not None and old_setup is None:
        signals.append("install script added (setup.py)")
    added = _new_names(requirements(old_text), requirements(new_text))
    if added:
        signals.append("new dependencies: " + ", ".join(added))


# Maven ------------------------------------------------------------------------------------

_DEPENDENCY: Final = re.compile(r"<dependency>(.*?)</dependency>", re.DOTALL)
_TAG: Final = r"<{0}>\s*([^<]*?)\s*</{0}>"


def pom_dependencies(pom: str | None) -> list[str]:
    """`group:artifact` of each `<dependency>` of a pom (read as text: no XML parser sees
    untrusted entities)."""
    if pom is None:
        return []
    found = []
    for block in _DEPENDENCY.findall(pom):
        group = re.search(_TAG.format("groupId"), block)
        artifact = re.search(_TAG.format("artifactId"), block)
        if artifact:
            found.append(f"{group.group(1) if group else ''}:{artifact.group(1)}")
    return found


def _maven(
    old: Side, new: Side, sections: list[Section], signals: list[str], budget: DiffBudget
) -> None:
    name = new.manifest_name or "pom"
    sections.append(
        Section(
            f"manifest ({name})",
            unified(
                old.manifest, new.manifest, f"a/{old.manifest_name or name}", f"b/{name}", budget
            ),
        )
    )
    added = _new_names(pom_dependencies(old.manifest), pom_dependencies(new.manifest))
    if added:
        signals.append("new dependencies: " + ", ".join(added))
