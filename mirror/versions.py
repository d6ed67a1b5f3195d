"""Version parsing, ordering and range matching in each ecosystem's own syntax. Pure.

- npm: semver 2 versions; ranges in npm's grammar (`^1.2.0`, `~1.2`, `1.x`, `>=1 <2`,
  `1.2.3 - 1.4`, `||`, exact, `*`) via node-semver, prereleases included (a block on `>=1.0.0`
  must also catch `2.0.0-rc.1`).
- PyPI: PEP 440 versions and specifier sets via `packaging`; a bare version means `==`.
- Maven: Maven's ComparableVersion order (qualifiers alpha < beta < milestone < rc < snapshot
  < release < sp, numeric padding) and version ranges (`[1.0,2.0)`, `(,1.5]`, `[1.5]`,
  unions `[1,2),[3,)`; a bare version means exactly that version).

A version a spec cannot parse is matched only by `*` or by the identical string: we never
guess what an unparseable version is, and blocks on such versions are written exactly.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import nodesemver
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

ECOSYSTEM_NAMES: Final = ("npm", "pypi", "maven")
ANY_VERSION: Final = "*"
MAX_SPEC_LENGTH: Final = 1024


class InvalidSpec(ValueError):
    """A version spec that does not parse in its ecosystem's syntax."""


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """A parsed version spec: `contains(version)` says whether it matches."""

    ecosystem: str
    text: str
    _test: Callable[[str], bool]

    def contains(self, version: str) -> bool:
        if self.text == ANY_VERSION or version == self.text:
            return True
        return self._test(version)


def parse_spec(ecosystem: str, text: str) -> VersionSpec:
    """Parse `text` in the ecosystem's own range syntax; raise InvalidSpec with a message."""
    spec = text.strip()
    if not spec:
        raise InvalidSpec("a version spec is required (use * for every version)")
    if len(spec) > MAX_SPEC_LENGTH:
        raise InvalidSpec(f"a version spec is at most {MAX_SPEC_LENGTH} characters")
    if spec == ANY_VERSION:
        return VersionSpec(ecosystem, spec, lambda _version: True)
    parser = _SPEC_PARSERS.get(ecosystem)
    if parser is None:
        raise InvalidSpec(f"unknown ecosystem {ecosystem!r} (expected one of npm, pypi, maven)")
    return VersionSpec(ecosystem, spec, parser(spec))


def sort_key(ecosystem: str, version: str) -> Any:
    """A key giving the ecosystem's own version order. Unparseable versions sort first,
    among themselves by their text."""
    if ecosystem == "npm":
        return _npm_key(version)
    if ecosystem == "pypi":
        return _pypi_key(version)
    if ecosystem == "maven":
        return MavenVersion(version)
    raise ValueError(f"unknown ecosystem {ecosystem!r}")


def is_prerelease(ecosystem: str, version: str) -> bool:
    if ecosystem == "npm":
        parsed = _npm_version(version)
        return parsed is not None and bool(parsed.prerelease)
    if ecosystem == "pypi":
        try:
            return Version(version).is_prerelease
        except InvalidVersion:
            return False
    if ecosystem == "maven":
        return MavenVersion(version).is_prerelease
    raise ValueError(f"unknown ecosystem {ecosystem!r}")


_PYPI_SEPARATORS = re.compile(r"[-_.]+")


def normalize_package(ecosystem: str, name: str) -> str:
    """The canonical form names are compared in: PEP 503 for PyPI; npm and Maven names are
    compared as written (npm names are case-sensitive for legacy packages)."""
    name = name.strip()
    if ecosystem == "pypi":
        return _PYPI_SEPARATORS.sub("-", name).lower()
    return name


# npm ----------------------------------------------------------------------------------------


def _npm_version(version: str) -> Any:
    try:
        return nodesemver.make_semver(version, loose=True)
    except (ValueError, TypeError):
        return None


def _npm_key(version: str) -> tuple[Any, ...]:
    parsed = _npm_version(version)
    if parsed is None:
        return (0, version)
    prerelease = tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, str(part)) for part in parsed.prerelease
    )
    # A release sorts after all of its prereleases.
    return (1, parsed.major, parsed.minor, parsed.patch, 0 if prerelease else 1, prerelease)


def _npm_spec(spec: str) -> Callable[[str], bool]:
    try:
        compiled = nodesemver.make_range(spec, loose=True)
    except (ValueError, TypeError) as exc:
        raise InvalidSpec(f"{spec!r} is not an npm version range: {exc}") from None

    # node-semver's own include_prerelease flag also stops ordering prereleases (so
    # 1.0.0-rc.1 would satisfy >=1.0.0); test each comparator set without the prerelease
    # filter instead, as npm's includePrerelease does.
    comparator_sets = [tuple(comparators) for comparators in compiled.set]

    def test(version: str) -> bool:
        parsed = _npm_version(version)
        if parsed is None:
            return False
        return any(
            all(comparator.test(parsed) for comparator in comparators)
            for comparators in comparator_sets
        )

    return test


# PyPI ---------------------------------------------------------------------------------------


def _pypi_key(version: str) -> tuple[Any, ...]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


_BARE_PEP440 = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.!+_-]*$")


def _pypi_spec(spec: str) -> Callable[[str], bool]:
    bare = bool(_BARE_PEP440.match(spec))
    try:
        specifiers = SpecifierSet(f"=={spec}" if bare else spec)
    except InvalidSpecifier:
        if bare:
            # A legacy, non-PEP 440 version (`2004d`): matched by its exact text only.
            return lambda _version: False
        raise InvalidSpec(f"{spec!r} is not a PEP 440 specifier set (e.g. >=2.0,<2.3)") from None

    def test(version: str) -> bool:
        try:
            parsed = Version(version)
        except InvalidVersion:
            return False
        return specifiers.contains(parsed, prereleases=True)

    return test


# Maven --------------------------------------------------------------------------------------

# ComparableVersion's qualifier order; "" is the release itself.
_QUALIFIERS: Final = ("alpha", "beta", "milestone", "rc", "snapshot", "", "sp")
_RELEASE_INDEX: Final = _QUALIFIERS.index("")
_ALIASES: Final = {"ga": "", "final": "", "release": "", "cr": "rc"}
_SHORT: Final = {"a": "alpha", "b": "beta", "m": "milestone"}

# Items: ("i", int) numbers, ("s", comparable) qualifiers, ("l", tuple) sub-lists.
_Item = tuple[str, Any]


def _qualifier_rank(value: str) -> tuple[int, str]:
    if value in _QUALIFIERS:
        return (_QUALIFIERS.index(value), "")
    # Unknown qualifiers come after every known one, among themselves by text.
    return (len(_QUALIFIERS), value)


def _string_item(value: str, followed_by_digit: bool) -> _Item:
    if followed_by_digit and len(value) == 1:
        value = _SHORT.get(value, value)
    return ("s", _qualifier_rank(_ALIASES.get(value, value)))


def _is_null(item: _Item) -> bool:
    kind, value = item
    if kind == "i":
        return value == 0
    if kind == "s":
        return value == (_RELEASE_INDEX, "")
    return not value


def _normalize(items: list[_Item]) -> list[_Item]:
    # Trailing null items (0, "", "ga", empty sub-lists) do not count: 1 == 1.0 == 1.0.0.
    index = len(items) - 1
    while index >= 0:
        if _is_null(items[index]):
            del items[index]
        elif items[index][0] != "l":
            break
        index -= 1
    return items


def _parse_maven(version: str) -> _Item:
    text = version.lower()
    root: list[Any] = []
    stack: list[list[Any]] = [root]
    current = root
    is_digit = False
    start = 0

    def item(digit: bool, chunk: str) -> _Item:
        return ("i", int(chunk)) if digit else _string_item(chunk, False)

    def open_sublist() -> None:
        nonlocal current
        sub: list[Any] = []
        current.append(sub)
        current = sub
        stack.append(sub)

    for index, char in enumerate(text):
        if char == ".":
            current.append(("i", 0) if index == start else item(is_digit, text[start:index]))
            start = index + 1
        elif char == "-":
            current.append(("i", 0) if index == start else item(is_digit, text[start:index]))
            start = index + 1
            open_sublist()
        elif char.isdigit() and char.isascii():
            if not is_digit and index > start:
                current.append(_string_item(text[start:index], True))
                start = index
                open_sublist()
            is_digit = True
        else:
            if is_digit and index > start:
                current.append(("i", int(text[start:index])))
                start = index
                open_sublist()
            is_digit = False
    if len(text) > start:
        current.append(item(is_digit, text[start:]))

    def freeze(items: list[Any]) -> _Item:
        frozen = [freeze(entry) if isinstance(entry, list) else entry for entry in items]
        return ("l", tuple(_normalize(frozen)))

    return freeze(root)


def _compare(left: _Item | None, right: _Item | None) -> int:
    """ComparableVersion's item comparison; None is padding (a missing item)."""
    if left is None:
        return 0 if right is None else -_compare(right, None)
    kind, value = left
    if right is None:
        if kind == "i":
            return 1 if value else 0
        if kind == "s":
            return _sign(value, (_RELEASE_INDEX, ""))
        # Every item counts against padding, not just the first (MNG-6964).
        for entry in value:
            result = _compare(entry, None)
            if result:
                return result
        return 0
    other_kind, other = right
    if kind == "i":
        return _sign(value, other) if other_kind == "i" else 1
    if kind == "s":
        if other_kind == "i":
            return -1
        return _sign(value, other) if other_kind == "s" else -1
    if other_kind == "i":
        return -1
    if other_kind == "s":
        return 1
    for index in range(max(len(value), len(other))):
        mine = value[index] if index < len(value) else None
        theirs = other[index] if index < len(other) else None
        result = _compare(mine, theirs)
        if result:
            return result
    return 0


def _sign(left: Any, right: Any) -> int:
    return (left > right) - (left < right)


@functools.total_ordering
class MavenVersion:
    """A Maven version with ComparableVersion's order, equality and hash."""

    __slots__ = ("_items", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._items = _parse_maven(text)

    def __repr__(self) -> str:
        return f"MavenVersion({self.text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MavenVersion):
            return NotImplemented
        return _compare(self._items, other._items) == 0

    def __lt__(self, other: MavenVersion) -> bool:
        return _compare(self._items, other._items) < 0

    def __hash__(self) -> int:
        # Equal versions can differ in structure (padding), but never in their leading
        # numbers once trailing zeros are dropped: hash those.
        numbers: list[int] = []
        for kind, value in self._items[1]:
            if kind != "i":
                break
            numbers.append(value)
        while numbers and numbers[-1] == 0:
            numbers.pop()
        return hash(tuple(numbers))

    @property
    def is_prerelease(self) -> bool:
        return _has_prerelease_qualifier(self._items)


def _has_prerelease_qualifier(item: _Item) -> bool:
    kind, value = item
    if kind == "s":
        return bool(value[0] < _RELEASE_INDEX)
    if kind == "l":
        return any(_has_prerelease_qualifier(entry) for entry in value)
    return False


_MAVEN_RANGE = re.compile(r"\s*([\[(])([^\[\]()]*)([\])])\s*(,|$)")
_MAVEN_BARE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True, slots=True)
class _MavenRange:
    low: MavenVersion | None
    low_inclusive: bool
    high: MavenVersion | None
    high_inclusive: bool

    def contains(self, version: MavenVersion) -> bool:
        if self.low is not None and (
            version < self.low or (version == self.low and not self.low_inclusive)
        ):
            return False
        return not (
            self.high is not None
            and (version > self.high or (version == self.high and not self.high_inclusive))
        )


def _maven_ranges(spec: str) -> list[_MavenRange]:
    if _MAVEN_BARE.match(spec):
        exact = MavenVersion(spec)
        return [_MavenRange(exact, True, exact, True)]
    ranges: list[_MavenRange] = []
    position = 0
    while position < len(spec):
        match = _MAVEN_RANGE.match(spec, position)
        if match is None or match.end() == position:
            raise InvalidSpec(
                f"{spec!r} is not a Maven version or range (e.g. [1.0,2.0), (,1.5], [1.5])"
            )
        ranges.append(_maven_range(spec, *match.group(1, 2, 3)))
        position = match.end()
        if match.group(4) == "," and position >= len(spec):
            raise InvalidSpec(f"{spec!r} ends with a comma")
    return ranges


def _maven_range(spec: str, opening: str, inner: str, closing: str) -> _MavenRange:
    bounds = [part.strip() for part in inner.split(",")]
    if len(bounds) == 1:
        if opening != "[" or closing != "]" or not bounds[0]:
            raise InvalidSpec(f"{spec!r}: a single version must be written [1.5]")
        exact = MavenVersion(bounds[0])
        return _MavenRange(exact, True, exact, True)
    if len(bounds) != 2:
        raise InvalidSpec(f"{spec!r}: a range has at most two bounds")
    low = MavenVersion(bounds[0]) if bounds[0] else None
    high = MavenVersion(bounds[1]) if bounds[1] else None
    if low is not None and high is not None and high < low:
        raise InvalidSpec(f"{spec!r}: the upper bound is below the lower bound")
    if (low is None and opening == "[") or (high is None and closing == "]"):
        raise InvalidSpec(f"{spec!r}: an open bound must use ( or )")
    return _MavenRange(low, opening == "[", high, closing == "]")


def _maven_spec(spec: str) -> Callable[[str], bool]:
    ranges = _maven_ranges(spec)

    def test(version: str) -> bool:
        parsed = MavenVersion(version)
        return any(candidate.contains(parsed) for candidate in ranges)

    return test


_SPEC_PARSERS: Final[dict[str, Callable[[str], Callable[[str], bool]]]] = {
    "npm": _npm_spec,
    "pypi": _pypi_spec,
    "maven": _maven_spec,
}
