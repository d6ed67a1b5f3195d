"""Version parsing, ordering and range matching in each ecosystem's own syntax. Pure.

- npm: semver 2 versions; ranges in npm's grammar (`^1.2.0`, `~1.2`, `1.x`, `>=1 <2`,
  `1.2.3 - 1.4`, `||`, exact, `*`), accepted as node-semver's strict parser accepts them and
  read as node-semver reads them with `includePrerelease`, since a block must cover
  prereleases too: a comparator compares in SemVer order (`>=1.0.0` catches `2.0.0-rc.1`, not
  `1.0.0-rc.1`); x-ranges, partials, hyphen ranges, `~` and `^` cover the prereleases of their
  own versions and stop before those of the next (`1.x` is `>=1.0.0-0 <2.0.0-0`).
- PyPI: PEP 440 versions and specifier sets via `packaging`; a bare version means `==`.
- Maven: the order of maven-artifact 3.8's ComparableVersion (qualifiers alpha < beta <
  milestone < rc = cr < snapshot < release = ga = final < sp < unknown ones by text, numeric
  padding, `.X` at the end read as `-X`; tested against Maven's jar), made a total order:
  it differs from Maven's only on pairs where Maven's own order has a cycle (`1 < 1.foo.2 <
  1-alpha < 1`), ranking those by content as Maven 4 does (see _list_key), and version
  ranges (`[1.0,2.0)`, `(,1.5]`, `[1.5]`, unions `[1,2),[3,)`; a bare version means exactly
  that version), whose bounds compare in that order as Maven's own ranges do.

Specs are parsed strictly, because a rule must cover exactly what it says: a list is written
only with the ecosystem's own separator (npm `||`, Maven's comma between ranges; PEP 440 has
no "or", its comma is AND), a spec that can never match a version (`0.1.5 0.1.6` in npm, which
ANDs them; `>2 <1`; `[2.0,1.0]`) is refused, and so are moving names (`latest`, a dist-tag,
Maven's `LATEST`/`RELEASE`). Each refusal is one sentence saying what to write instead.

A version a spec cannot parse is matched only by `*` or by the identical string: we never
guess what an unparseable version is, and blocks on such versions are written exactly.

`===V`, in every ecosystem (PEP 440's arbitrary equality), matches exactly the version
spelled `V` and nothing the ecosystem merely counts as equal: Maven `===1.0` is not `1.0.0`,
`1-ga` or `1.0.final`, PyPI `===1.0` is not `1.0+local` or `1.0.0`, npm `===1.0.0` is not
`1.0.0+build`. PyPI versions are compared in the canonical form the mirror keeps them in
(`str(Version(v))`, so `===1.0-beta` is `1.0b0`, the same release); npm and Maven ones as the
upstream spells them. The dashboard's "exactly this version" rules are written this way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import nodesemver
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

ANY_VERSION: Final = "*"
EXACT_PREFIX: Final = "==="
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
    if spec.startswith(EXACT_PREFIX) and "," not in spec:
        # With a comma it is a PEP 440 set (`===1.0,===2.0`), refused by each grammar.
        identical = _exact_form(ecosystem, spec)
        return VersionSpec(
            ecosystem, spec, lambda version: _spelled(ecosystem, version) == identical
        )
    return VersionSpec(ecosystem, spec, parser(spec))


def exact_spec(version: str) -> str:
    """The spec that matches exactly `version` as spelled (`===1.0`), in every ecosystem."""
    return EXACT_PREFIX + version.strip()


def is_exact_version(ecosystem: str, version: str) -> bool:
    """Whether `version` is one version an exact spec (`exact_spec`) names and nothing else:
    strict semver for npm (no `=`/`v` noise a loose parse forgives), one plain path segment
    for Maven, a PEP 440 version for PyPI; never blank, padded or an operator. A block built
    from anything else would not parse, and a block that does not parse applies to every
    version (`policy.compile_rules` fails closed)."""
    if not version or version != version.strip() or len(version) > MAX_SPEC_LENGTH // 2:
        return False
    if any(not char.isprintable() or char.isspace() for char in version):
        return False
    if ecosystem == "npm":
        try:
            nodesemver.make_semver(version, loose=False)
        except (ValueError, TypeError):
            return False
        if version.startswith(("=", "v")):
            return False
    elif ecosystem == "maven":
        if version in {".", ".."} or any(char in version for char in "/\\=<>[](),*:"):
            return False
    elif ecosystem == "pypi":
        try:
            Version(version)
        except InvalidVersion:
            return False
    else:
        return False
    try:
        spec = parse_spec(ecosystem, exact_spec(version))
    except InvalidSpec:
        return False
    return spec.contains(version)


def described(spec: str) -> str:
    """A spec as a person reads it: `===1.0` is "exactly 1.0", any other as written."""
    text = spec.strip()
    if text.startswith(EXACT_PREFIX):
        return f"exactly {text.removeprefix(EXACT_PREFIX).strip()}"
    return text


def _exact_form(ecosystem: str, spec: str) -> str:
    """The version an `===V` spec names, in the form `_spelled` compares (InvalidSpec when it
    names none)."""
    version = spec.removeprefix(EXACT_PREFIX).strip()
    if not version or any(char.isspace() for char in version) or version.startswith("="):
        raise InvalidSpec(
            f"{spec!r}: === names one version exactly as spelled (e.g. ===1.0), with no "
            "space, range or list"
        )
    return _spelled(ecosystem, version)


def _spelled(ecosystem: str, version: str) -> str:
    """A version in the form exact specs compare: PyPI's canonical PEP 440 string (as the
    mirror keeps PyPI versions), npm and Maven as written."""
    if ecosystem == "pypi":
        try:
            return str(Version(version))
        except InvalidVersion:
            return version
    return version


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


def npm_major(version: str) -> int | None:
    """The major version of an npm (semver, loosely parsed) version, or None when it is
    not one."""
    parsed = _npm_version(version)
    if parsed is None:
        return None
    major: int = parsed.major
    return major


def _npm_key(version: str) -> tuple[Any, ...]:
    parsed = _npm_version(version)
    if parsed is None:
        return (0, version)
    return _semver_key(parsed.major, parsed.minor, parsed.patch, parsed.prerelease)


def _semver_key(
    major: int, minor: int, patch: int, prerelease: Iterable[int | str] = ()
) -> tuple[Any, ...]:
    """SemVer precedence as a tuple: numeric identifiers before alphanumeric ones, and a
    release after all of its prereleases."""
    parts = tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, str(part)) for part in prerelease
    )
    return (1, major, minor, patch, 0 if parts else 1, parts)


_NPM_ALTERNATIVES = re.compile(r"\s*\|\|\s*")
# A lone `|`, three or more, or a comma: someone meant "or" and npm would read something else
# (its loose parser drops everything before a comma: `0.1.5, 0.1.6` is `0.1.6` alone).
_NPM_WRONG_OR = re.compile(r"(?<!\|)\|(?!\|)|\|{3,}|,|(?<!\S)or(?!\S)", re.IGNORECASE)
_NPM_WRONG_AND = re.compile(r"&&|(?<!\S)and(?!\S)", re.IGNORECASE)
_NPM_OPERATOR_SPACE = re.compile(r"(<=|>=|[<>=~^]|~>)\s+")
# A word where a version belongs: a dist-tag such as `latest` or `next`.
_NPM_TAG = re.compile(r"^(?![vV]?(?:\d|[xX*](?:\.|$)))[A-Za-z][A-Za-z0-9._-]*$")
_NPM_EXACT = re.compile(r"^=?v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_NPM_RANGE_EXAMPLES = "e.g. 1.2.3, ^1.2.0, >=1.0.0 <1.4.2, 1.0.0 || 2.0.0"


def _npm_alternatives_suggestion(spec: str) -> str:
    # Split only where an "or" was meant: a space inside a part ANDs its comparators.
    parts = [part.strip() for part in re.split(r"\|+|,|(?<!\S)or(?!\S)", spec, flags=re.I)]
    return " || ".join(part for part in parts if part)


def _npm_spec(spec: str) -> Callable[[str], bool]:
    if _NPM_WRONG_OR.search(spec):
        suggestion = _npm_alternatives_suggestion(spec)
        if _npm_parses(suggestion):
            raise InvalidSpec(
                f"npm separates alternatives with ||: write {suggestion!r} (npm would not read "
                f"{spec!r} as a list)"
            )
        raise InvalidSpec(
            f"{spec!r} is not an npm version range: npm separates alternatives with || and "
            f"writes ranges with comparators; {_NPM_RANGE_EXAMPLES}"
        )
    if _NPM_WRONG_AND.search(spec):
        raise InvalidSpec(
            f"npm ANDs comparators separated by a space: write e.g. '>=1.0.0 <2.0.0', not {spec!r}"
        )
    comparator_sets = [
        _check_npm_alternative(spec, alternative) for alternative in _NPM_ALTERNATIVES.split(spec)
    ]

    def test(version: str) -> bool:
        key = _npm_key(version)
        if key[0] == 0:
            return False  # not SemVer: matched only by `*` or its exact text
        return any(
            all(_NPM_OPERATORS[operator](key, bound) for operator, bound in comparators)
            for comparators in comparator_sets
        )

    return test


def _npm_parses(spec: str) -> bool:
    try:
        nodesemver.make_range(spec, loose=False)
    except (ValueError, TypeError):
        return False
    return bool(spec)


def _check_npm_alternative(spec: str, alternative: str) -> list[_Comparator]:
    """One `||` alternative, as its comparators: well-formed in node-semver's strict grammar,
    naming versions (not tags), and matching at least one version."""
    if not alternative:
        raise InvalidSpec(
            f"{spec!r} has an empty alternative, which npm reads as every version: remove the "
            "stray || (or write * to cover every version)"
        )
    tokens = _NPM_OPERATOR_SPACE.sub(r"\1", alternative).split()
    for token in tokens:
        bare = token.lstrip("<>=~^")
        if _NPM_TAG.match(bare):
            raise InvalidSpec(
                f"{bare!r} is a dist-tag, a name that moves to other versions: block the "
                f"versions it points at now (e.g. 1.2.3), or * for every version"
            )
    try:
        nodesemver.make_range(alternative, loose=False)  # the grammar: node-semver's own
        comparators = _npm_comparators(alternative)
    except (ValueError, TypeError) as exc:
        # node-semver names the part it choked on; repr() keeps control characters out.
        culprit = str(exc).rpartition(": ")[2] or alternative
        raise InvalidSpec(
            f"{spec!r} is not an npm version range (at {culprit!r}); {_NPM_RANGE_EXAMPLES}"
        ) from None
    if _npm_satisfiable(comparators):
        return comparators
    if len(tokens) > 1 and all(_NPM_EXACT.match(token) for token in tokens):
        raise InvalidSpec(
            f"npm reads {alternative!r} as {' AND '.join(tokens)}, which no version is: "
            f"to block each of them write {' || '.join(token.lstrip('=') for token in tokens)!r}"
        )
    raise InvalidSpec(
        f"{spec!r} can never match a version: none satisfies every comparator of "
        f"{alternative!r} (npm ANDs comparators separated by a space)"
    )


# A comparator: an operator and a SemVer precedence key (`_semver_key`).
_Comparator = tuple[str, tuple[Any, ...]]
_NPM_OPERATORS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": lambda key, bound: key < bound,
    "<=": lambda key, bound: key <= bound,
    ">": lambda key, bound: key > bound,
    ">=": lambda key, bound: key >= bound,
    "=": lambda key, bound: key == bound,
}
_NPM_LOWEST: Final = _semver_key(0, 0, 0, (0,))  # 0.0.0-0 precedes every version
_NPM_ZERO_KEY: Final = _semver_key(0, 0, 0)
_NPM_HYPHEN = re.compile(r"^(\S+)\s+-\s+(\S+)$")
_NPM_PREFIXES: Final = ("~>", "~", "^", "<=", ">=", "<", ">", "=")  # longest first
_NPM_IDENTIFIER = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_NPM_PARTIAL = re.compile(
    r"^[v=\s]*(0|[1-9]\d*|[xX*])(?:\.(0|[1-9]\d*|[xX*])(?:\.(0|[1-9]\d*|[xX*])"
    rf"(?:-({_NPM_IDENTIFIER}(?:\.{_NPM_IDENTIFIER})*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
    r")?)?$",
    re.ASCII,
)

# A parsed partial version: major, minor, patch (None where written x, X or * or left out)
# and the prerelease identifiers.
_Partial = tuple[int | None, int | None, int | None, tuple[int | str, ...]]


def _npm_partial(text: str) -> _Partial:
    match = _NPM_PARTIAL.match(text)
    if match is None:
        raise ValueError(f"Invalid comparator: {text}")
    major, minor, patch, pre = match.groups()

    def number(part: str | None) -> int | None:
        return None if part is None or part in "xX*" else int(part)

    prerelease = tuple(int(p) if p.isdigit() else p for p in pre.split(".")) if pre else ()
    return number(major), number(minor), number(patch), prerelease


def _npm_comparators(alternative: str) -> list[_Comparator]:
    """The comparators node-semver desugars one alternative into with `includePrerelease`
    (npm's own reading of a range when prereleases count): x-ranges, partials, hyphen
    ranges, `~` and `^` cover the prereleases of their own versions and stop below the
    prereleases of the next one (`1.x` is `>=1.0.0-0 <2.0.0-0`)."""
    text = alternative.strip()
    hyphen = _NPM_HYPHEN.match(text)
    if hyphen is not None:
        return _npm_hyphen(_npm_partial(hyphen.group(1)), _npm_partial(hyphen.group(2)))
    comparators: list[_Comparator] = []
    for token in _NPM_OPERATOR_SPACE.sub(r"\1", text).split():
        operator = next((op for op in _NPM_PREFIXES if token.startswith(op)), "")
        partial = _npm_partial(token[len(operator) :])
        if operator in ("~", "~>"):
            comparators += _npm_tilde(partial)
        elif operator == "^":
            comparators += _npm_caret(partial)
        else:
            comparators += _npm_xrange(operator, partial)
    return comparators


def _lowest(major: int, minor: int, patch: int) -> tuple[Any, ...]:
    """The first prerelease of a version: `1.2.0-0`."""
    return _semver_key(major, minor, patch, (0,))


def _npm_tilde(partial: _Partial) -> list[_Comparator]:
    major, minor, patch, pre = partial
    if major is None:
        return []
    if minor is None:
        return [(">=", _lowest(major, 0, 0)), ("<", _lowest(major + 1, 0, 0))]
    if patch is None:
        return [(">=", _lowest(major, minor, 0)), ("<", _lowest(major, minor + 1, 0))]
    return [(">=", _semver_key(major, minor, patch, pre)), ("<", _lowest(major, minor + 1, 0))]


def _npm_caret(partial: _Partial) -> list[_Comparator]:
    major, minor, patch, pre = partial
    if major is None:
        return []
    if minor is None:
        return [(">=", _lowest(major, 0, 0)), ("<", _lowest(major + 1, 0, 0))]
    if patch is None:
        upper = _lowest(0, minor + 1, 0) if major == 0 else _lowest(major + 1, 0, 0)
        return [(">=", _lowest(major, minor, 0)), ("<", upper)]
    if major == 0 and minor == 0:
        upper = _lowest(0, 0, patch + 1)
    elif major == 0:
        upper = _lowest(0, minor + 1, 0)
    else:
        upper = _lowest(major + 1, 0, 0)
    return [(">=", _semver_key(major, minor, patch, pre)), ("<", upper)]


def _npm_xrange(operator: str, partial: _Partial) -> list[_Comparator]:
    major, minor, patch, pre = partial
    if (major is None and minor is not None) or (minor is None and patch is not None):
        raise ValueError("Invalid comparator: a number after x or *")  # as node-semver says
    if major is not None and minor is not None and patch is not None:
        return [(operator or "=", _semver_key(major, minor, patch, pre))]
    if operator == "=":
        operator = ""
    if major is None:
        # `<*` and `>*` match nothing, anything else with a star everything.
        return [("<", _NPM_LOWEST)] if operator in ("<", ">") else []
    if operator:
        minor_value = 0 if minor is None else minor
        if operator == ">":
            operator = ">="
            if minor is None:
                major, minor_value = major + 1, 0
            else:
                minor_value += 1
        elif operator == "<=":
            operator = "<"
            if minor is None:
                major += 1
            else:
                minor_value += 1
        return [(operator, _lowest(major, minor_value, 0))]
    if minor is None:
        return [(">=", _lowest(major, 0, 0)), ("<", _lowest(major + 1, 0, 0))]
    return [(">=", _lowest(major, minor, 0)), ("<", _lowest(major, minor + 1, 0))]


def _npm_hyphen(start: _Partial, end: _Partial) -> list[_Comparator]:
    comparators: list[_Comparator] = []
    major, minor, patch, pre = start
    if major is not None:
        if minor is None:
            comparators.append((">=", _lowest(major, 0, 0)))
        elif patch is None:
            comparators.append((">=", _lowest(major, minor, 0)))
        elif pre:
            comparators.append((">=", _semver_key(major, minor, patch, pre)))
        else:
            comparators.append((">=", _lowest(major, minor, patch)))
    major, minor, patch, pre = end
    if major is not None:
        if minor is None:
            comparators.append(("<", _lowest(major + 1, 0, 0)))
        elif patch is None:
            comparators.append(("<", _lowest(major, minor + 1, 0)))
        elif pre:
            comparators.append(("<=", _semver_key(major, minor, patch, pre)))
        else:
            comparators.append(("<", _lowest(major, minor, patch + 1)))
    return comparators


def _npm_satisfiable(comparators: list[_Comparator]) -> bool:
    """Whether some version passes every comparator: the highest lower bound must not pass
    the lowest upper bound (versions are totally ordered once prereleases count)."""
    lows = [(bound, op != ">") for op, bound in comparators if op in ("=", ">", ">=")]
    highs = [(bound, op != "<") for op, bound in comparators if op in ("=", "<", "<=")]
    if any(not inclusive and bound <= _NPM_ZERO_KEY for bound, inclusive in highs):
        return False  # below 0.0.0 lie only its own prereleases: `<0.0.0` counts as nothing
    return _bounds_meet(lows, highs, lambda left, right: (left > right) - (left < right))


def _bounds_meet(
    lows: list[tuple[Any, bool]],
    highs: list[tuple[Any, bool]],
    compare: Callable[[Any, Any], int],
) -> bool:
    """Whether some point lies above every lower bound and below every upper bound, each
    given as (version, inclusive), in a total order given by `compare`."""
    if not lows or not highs:
        return True
    low, low_inclusive = lows[0]
    for version, inclusive in lows[1:]:
        order = compare(version, low)
        if order > 0 or (order == 0 and not inclusive):
            low, low_inclusive = version, inclusive
    high, high_inclusive = highs[0]
    for version, inclusive in highs[1:]:
        order = compare(version, high)
        if order < 0 or (order == 0 and not inclusive):
            high, high_inclusive = version, inclusive
    order = compare(low, high)
    return order < 0 or (order == 0 and low_inclusive and high_inclusive)


# PyPI ---------------------------------------------------------------------------------------


def _pypi_key(version: str) -> tuple[Any, ...]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


_BARE_PEP440 = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.!+_-]*$")
_PEP440_WRONG_OR = re.compile(r"\||(?<!\S)or(?!\S)", re.IGNORECASE)
_PEP440_EXAMPLES = "e.g. 2.31.0, ==2.31.0, >=2.0,<2.3, ~=1.4"


def _pypi_spec(spec: str) -> Callable[[str], bool]:
    if _PEP440_WRONG_OR.search(spec):
        raise InvalidSpec(
            f"PEP 440 has no 'or' ({spec!r}): add one rule per version or range (==0.1.5, "
            "then ==0.1.6)"
        )
    if _BARE_PEP440.match(spec):
        try:
            Version(spec)
        except InvalidVersion:
            if not any(char.isdigit() for char in spec):
                raise InvalidSpec(
                    f"{spec!r} is a name, not a version: block the versions it means now "
                    "(e.g. ==2.31.0), or * for every version"
                ) from None
            # A legacy, non-PEP 440 version (`2004d`): matched by its exact text only.
            return lambda _version: False
        spec = f"=={spec}"
    try:
        specifiers = SpecifierSet(spec)
    except InvalidSpecifier:
        parts = [part.strip() for part in re.split(r"[,\s]+", spec) if part.strip()]
        if len(parts) > 1 and all(_BARE_PEP440.match(part) for part in parts):
            raise InvalidSpec(
                f"PEP 440 commas mean AND and it has no 'or', so {spec!r} cannot list "
                f"versions: add one rule per version (=={parts[0]}, then =={parts[1]})"
            ) from None
        raise InvalidSpec(f"{spec!r} is not a PEP 440 specifier set ({_PEP440_EXAMPLES})") from None
    if not _pep440_satisfiable(specifiers):
        raise InvalidSpec(
            f"{spec!r} can never match a version: PEP 440 commas mean AND, and these bounds "
            "exclude each other (PEP 440 has no 'or': add one rule per version or range)"
        )

    def test(version: str) -> bool:
        try:
            parsed = Version(version)
        except InvalidVersion:
            return False
        return specifiers.contains(parsed, prereleases=True)

    return test


def _pep440_satisfiable(specifiers: SpecifierSet) -> bool:
    """Whether the bounds of an AND of PEP 440 specifiers leave room for a version. Ignores
    the finer exclusions of `<`/`>` (prereleases and post-releases of the bound itself), so
    it refuses only what can certainly never match."""
    lows: list[tuple[Version, bool]] = []
    highs: list[tuple[Version, bool]] = []
    arbitrary: set[str] = set()
    for specifier in specifiers:
        operator, text = specifier.operator, specifier.version
        if operator == "===":
            arbitrary.add(text)
            continue
        if operator == "!=":
            continue
        if operator == "==" and text.endswith(".*"):
            prefix = Version(text[:-2])
            if not _plain_release(prefix):
                continue
            lows.append((Version(f"{prefix}.dev0"), True))
            highs.append((_next_release(prefix.release, prefix.epoch), False))
            continue
        version = Version(text)
        if operator in ("==", ">=", ">"):
            lows.append((version, operator != ">"))
        if operator in ("==", "<=", "<"):
            highs.append((version, operator != "<"))
        if operator == "~=":
            lows.append((version, True))
            highs.append((_next_release(version.release[:-1], version.epoch), False))
    if len(arbitrary) > 1:
        return False
    if not _bounds_meet(lows, highs, lambda left, right: (left > right) - (left < right)):
        return False
    # A single point (==1.0 with !=1.0): the point itself must pass.
    points = {low for low, inclusive in lows if inclusive} & {
        high for high, inclusive in highs if inclusive
    }
    return all(specifiers.contains(point, prereleases=True) for point in points)


def _plain_release(version: Version) -> bool:
    return (
        version.pre is None and version.post is None and version.dev is None and not (version.local)
    )


def _next_release(release: tuple[int, ...], epoch: int = 0) -> Version:
    """The first version after every version starting with `release` (`1.4` → `1.5.dev0`)."""
    bumped = [*release[:-1], release[-1] + 1]
    prefix = f"{epoch}!" if epoch else ""
    return Version(prefix + ".".join(str(part) for part in bumped) + ".dev0")


# Maven --------------------------------------------------------------------------------------

# The order of maven-artifact 3.8.x's ComparableVersion, item by item (Maven itself decides
# `<latest>`, ranges and conflicts with it, so ours must agree on every pair; the conformance
# test compares with the jar). Its parse, in short: the lower-cased text splits into items at
# `.`, at `-` (what follows goes into a nested list) and at digit/letter changes (the rest goes
# into a nested list too, as does a trailing qualifier after a dot: `1.0.beta` is `1.0-beta`);
# trailing null items (0, "", ga/final/release, empty lists) of each list are dropped.
# Maven 3.8's order is not transitive everywhere (`1 < 1.foo.2 < 1-alpha < 1`); ours is, and
# differs from Maven's only on pairs that are on such a cycle (see _list_key).

# ComparableVersion's qualifier order; "" is the release itself.
_QUALIFIERS: Final = ("alpha", "beta", "milestone", "rc", "snapshot", "", "sp")
_QUALIFIER_INDEX: Final = {name: index for index, name in enumerate(_QUALIFIERS)}
_RELEASE: Final = (_QUALIFIERS.index(""), b"")
_ALIASES: Final = {"ga": "", "final": "", "release": "", "cr": "rc"}
_SHORT: Final = {"a": "alpha", "b": "beta", "m": "milestone"}
_INT_DIGITS: Final = 9  # up to 9 digits an IntItem, up to 18 a LongItem, then a BigIntegerItem
_LONG_DIGITS: Final = 18

# Items: ("i", (width class, int)) numbers, ("s", (rank, bytes)) qualifiers, ("l", tuple) lists.
_Item = tuple[str, Any]


def _string_item(value: str, followed_by_digit: bool) -> _Item:
    if followed_by_digit and len(value) == 1:
        value = _SHORT.get(value, value)
    value = _ALIASES.get(value, value)
    index = _QUALIFIER_INDEX.get(value)
    if index is not None:
        return ("s", (index, b""))
    # Unknown qualifiers come after every known one, among themselves by Java's string order
    # (UTF-16 code units, which UTF-16-BE bytes compare in).
    return ("s", (len(_QUALIFIERS), value.encode("utf-16-be", "surrogatepass")))


def _number_item(digits: str) -> _Item:
    # Java strips ASCII zeros only, then picks Integer, Long or BigInteger by length: a wider
    # class is greater than any narrower one, whatever the values.
    stripped = digits.lstrip("0") or digits
    width = 0 if len(stripped) <= _INT_DIGITS else 1 if len(stripped) <= _LONG_DIGITS else 2
    return ("i", (width, int(stripped)))


def _is_digit(char: str) -> bool:
    # Java's Character.isDigit on one UTF-16 unit: decimal digits of the BMP.
    return char.isdecimal() and ord(char) < 0x10000


def _is_null(item: _Item) -> bool:
    kind, value = item
    if kind == "i":
        return bool(value[1] == 0)
    if kind == "s":
        return bool(value == _RELEASE)
    return not value


def _normalize(items: list[_Item]) -> list[_Item]:
    # Trailing null items (0, "", "ga", empty sub-lists) do not count: 1 == 1.0 == 1.0.0;
    # null items just before a trailing sub-list go too (1.0-1 == 1-1).
    index = len(items) - 1
    while index >= 0:
        if _is_null(items[index]):
            del items[index]
        elif items[index][0] != "l":
            break
        index -= 1
    return items


@functools.lru_cache(maxsize=8192)  # pure; every document orders the same versions again
def _parse_maven(version: str) -> _Item:
    text = version.lower()
    root: list[Any] = []
    current = root
    is_digit = False
    start = 0

    def item(digit: bool, chunk: str) -> _Item:
        return _number_item(chunk) if digit else _string_item(chunk, False)

    def open_sublist() -> list[Any]:
        sub: list[Any] = []
        current.append(sub)
        return sub

    for index, char in enumerate(text):
        if char in ".-":
            current.append(("i", (0, 0)) if index == start else item(is_digit, text[start:index]))
            start = index + 1
            if char == "-":
                current = open_sublist()
        elif _is_digit(char):
            if not is_digit and index > start:
                # `X1`: a qualifier followed by a number; after other items it starts a list.
                if current:
                    current = open_sublist()
                current.append(_string_item(text[start:index], True))
                start = index
                current = open_sublist()
            is_digit = True
        else:
            if is_digit and index > start:
                current.append(_number_item(text[start:index]))
                start = index
                current = open_sublist()
            is_digit = False
    if len(text) > start:
        if not is_digit and current:
            current = open_sublist()  # a trailing `.X` counts as `-X`
        current.append(item(is_digit, text[start:]))

    def freeze(items: list[Any]) -> _Item:
        frozen = [freeze(entry) if isinstance(entry, list) else entry for entry in items]
        return ("l", tuple(_normalize(frozen)))

    return freeze(root)


# Our order: Maven's, made total. Compared item by item, with a missing item (padding) in
# the middle of the order at each position, items rank in these classes:
#   prerelease qualifiers (alpha < beta < milestone < rc < snapshot)
#   < a release qualifier (`ga`, `""`) whose rest is below padding
#   < a list below padding < a 0 whose rest is below padding
#   < padding
#   < a release qualifier whose rest is above padding < sp < unknown qualifiers
#   < a list above padding < other numbers, by width class (Int < Long < BigInteger, as
#     Maven's item types rank, so `0000000000` is above `1`), then value.
# That is ComparableVersion's order on every pair but one kind: two items on opposite sides
# of padding that Maven 3.8 ranks by their type whatever their content (number > list >
# qualifier, Long > Int): `1.foo.2` against `1-alpha`, `1-sp` against `1.0.alpha.1`,
# `0000000000.alpha.1` against `1`. Each such pair is on a cycle with the shorter version
# (`1 < 1.foo.2 < 1-alpha < 1`), so no transitive order can agree with Maven on it; we rank
# them by their content against padding, as Maven 4 does for lists against qualifiers
# (MNG-6568). test_maven_conformance.py checks every other pair against Maven's
# jar, and that each pair we order differently is on such a cycle in Maven's own order.
_PRERELEASE, _RELEASE_BELOW, _LIST_BELOW, _ZERO_BELOW, _PADDING = 0, 1, 2, 3, 4
_QUALIFIER_ABOVE, _LIST_ABOVE, _NUMBER = 5, 6, 7
_PADDING_KEY: Final = (_PADDING,)


def _list_key(items: tuple[_Item, ...]) -> tuple[Any, ...]:
    """The sort key of a normalized item list: one key per item, then padding's. Walked from
    the end, so that a 0 or release qualifier is placed by the rest of its list (which is
    never empty or equal to padding once trailing null items are gone)."""
    keys: list[Any] = [_PADDING_KEY]
    rest = 0  # the rest of the list against padding: -1, 0 (nothing left) or 1
    for kind, value in reversed(items):
        if kind == "i":
            # A zero followed by less than padding ranks below padding; any other number by
            # width class, then value (a 0 written with 10 digits is a Long: above every Int).
            if value[1] == 0 and rest < 0:
                key: tuple[Any, ...] = (_ZERO_BELOW, value)
            else:
                key, rest = (_NUMBER, value), 1
        elif kind == "s":
            if value < _RELEASE:
                key, rest = (_PRERELEASE, value), -1
            elif value == _RELEASE and rest < 0:
                key = (_RELEASE_BELOW,)
            else:
                key, rest = (_QUALIFIER_ABOVE, value), 1
        else:
            nested = _list_key(value)
            rest = -1 if nested[0] < _PADDING_KEY else 1
            key = (_LIST_BELOW if rest < 0 else _LIST_ABOVE, nested)
        keys.append(key)
    keys.reverse()
    return tuple(keys)


@functools.lru_cache(maxsize=8192)  # pure; every document orders the same versions again
def _maven_key(version: str) -> tuple[Any, ...]:
    return _list_key(_parse_maven(version)[1])


@functools.total_ordering
class MavenVersion:
    """A Maven version with ComparableVersion's parse and equality, in a total order that is
    ComparableVersion's wherever Maven's own order is consistent (see _list_key)."""

    __slots__ = ("_items", "_key", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._items = _parse_maven(text)
        self._key = _maven_key(text)

    def __repr__(self) -> str:
        return f"MavenVersion({self.text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MavenVersion):
            return NotImplemented
        # The key is one-to-one with the normalized items, so this is Maven's equality:
        # ComparableVersion finds two versions equal exactly when their items are.
        return self._key == other._key

    def __lt__(self, other: MavenVersion) -> bool:
        return bool(self._key < other._key)

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def is_prerelease(self) -> bool:
        return _has_prerelease_qualifier(self._items)


def _has_prerelease_qualifier(item: _Item) -> bool:
    kind, value = item
    if kind == "s":
        return bool(value < _RELEASE)
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


# Maven's meta-versions, as a whole version or bound (`4.3.0.RELEASE` is a real version).
_MAVEN_MOVING = re.compile(r"(?:^|[\[(,\s])\s*(latest|release)\s*(?=$|[\]),\s])", re.I)
_MAVEN_LIST_MISTAKE = re.compile(r"\||(?<!\S)or(?!\S)|[\s,]", re.IGNORECASE)


def _maven_ranges(spec: str) -> list[_MavenRange]:
    moving = _MAVEN_MOVING.search(spec)
    if moving:
        raise InvalidSpec(
            f"{moving.group(1)!r} is a name Maven resolves to a different version over time: "
            "block the versions it points at now (e.g. [1.4.2]), or * for every version"
        )
    if _MAVEN_BARE.match(spec):
        exact = MavenVersion(spec)
        return [_MavenRange(exact, True, exact, True)]
    if not spec.startswith(("[", "(")) and _MAVEN_LIST_MISTAKE.search(spec):
        listed = [
            part for part in re.split(r"\|+|(?<!\S)or(?!\S)|[\s,]+", spec, flags=re.I) if part
        ]
        if listed and all(_MAVEN_BARE.match(part) for part in listed):
            written = ",".join(f"[{part}]" for part in listed)
            raise InvalidSpec(f"Maven lists versions as ranges joined by commas: write {written!r}")
    ranges: list[_MavenRange] = []
    position = 0
    while position < len(spec):
        match = _MAVEN_RANGE.match(spec, position)
        if match is None or match.end() == position:
            raise InvalidSpec(
                f"{spec!r} is not a Maven version or range (e.g. [1.0,2.0), (,1.5], [1.5], "
                "[1.0],[1.2] for a list)"
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
        raise InvalidSpec(
            f"{spec!r} can never match a version: the upper bound is below the lower bound"
        )
    if low is not None and high is not None and low == high and opening + closing != "[]":
        raise InvalidSpec(
            f"{spec!r} can never match a version: both bounds are equal and one excludes "
            f"them (write {f'[{bounds[0]}]'!r} for that version)"
        )
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


# Characters that make a PyPI or Maven spec a range rather than one version.
_RANGE_CHARACTERS = frozenset("<>=!~^*|,[]() ")


def exact_version(ecosystem: str, spec: str) -> str | None:
    """The single version a spec names (`1.14.1`, `==2.31.0`, `1.0`, `===1.0`), or None for a
    range."""
    text = spec.strip()
    if text.startswith(EXACT_PREFIX):
        version = text.removeprefix(EXACT_PREFIX).strip()
        one = version and "," not in version and not any(char.isspace() for char in version)
        return version if one else None
    if ecosystem == "npm":
        if not _NPM_EXACT.fullmatch(text):
            return None
        return text.lstrip("=").removeprefix("v")
    if ecosystem == "pypi":
        text = text.removeprefix("===").removeprefix("==").strip()
    if not text or _RANGE_CHARACTERS & set(text):
        return None
    return text
