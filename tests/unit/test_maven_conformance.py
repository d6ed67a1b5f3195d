"""Our Maven order against Maven's own: maven-artifact's ComparableVersion (its jar has a main
that prints how consecutive arguments compare), on thousands of generated pairs. The order
decides `<latest>`/`<release>` in served metadata and what a Maven range block covers, so it
must agree with Maven on every pair where Maven's order is consistent. Maven 3.8's order has
cycles (`1 < 1.foo.2 < 1-alpha < 1`) and ours is a total order, so on a pair of such a cycle
the two can differ: each pair where they do must be shown, by Maven's jar, to be on a cycle
of Maven's own order (through a shorter version), or the test fails."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from mirror import versions

MAVEN_ARTIFACT_JAR = Path("/usr/share/maven/lib/maven-artifact-3.x.jar")
MAIN = "org.apache.maven.artifact.versioning.ComparableVersion"
BATCH = 1500  # versions per java run: one run answers BATCH - 1 consecutive comparisons

_OPERATORS = {"<": -1, "==": 0, ">": 1}


def _jar_version() -> str:
    with zipfile.ZipFile(MAVEN_ARTIFACT_JAR) as jar:
        properties = jar.read("META-INF/maven/org.apache.maven/maven-artifact/pom.properties")
    for line in properties.decode().splitlines():
        if line.startswith("version="):
            return line.partition("=")[2].strip()
    return "unknown"


def _skip_reason() -> str | None:
    if shutil.which("java") is None:
        return "java is not installed (CI installs maven, which brings it)"
    if not MAVEN_ARTIFACT_JAR.is_file():
        return f"{MAVEN_ARTIFACT_JAR} is missing (CI installs maven, which brings it)"
    # The order followed is maven-artifact 3.8's; 3.9 changed it on some inputs (`a1`).
    if not _jar_version().startswith("3.8."):
        return f"the installed maven-artifact is {_jar_version()}, the order followed is 3.8's"
    return None


needs_maven = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def maven_comparisons(ordered: list[str]) -> list[int]:
    """How Maven compares each version with the next one: -1, 0 or 1, from one java run."""
    environment = {**os.environ, "LC_ALL": "C.UTF-8"}
    completed = subprocess.run(
        ["java", "-cp", str(MAVEN_ARTIFACT_JAR), MAIN, *ordered],
        capture_output=True, text=True, check=True, timeout=120, env=environment,
    )  # fmt: skip
    lines = iter(completed.stdout.splitlines())
    results: list[int] = []
    for left, right in itertools.pairwise(ordered):
        for line in lines:
            found = [
                sign
                for operator, sign in _OPERATORS.items()
                if line == f"   {left} {operator} {right}"
            ]
            if found:
                results.append(found[0])
                break
        else:
            raise AssertionError(f"no comparison of {left!r} and {right!r} in java's output")
    return results


def ours(left: str, right: str) -> int:
    a, b = versions.sort_key("maven", left), versions.sort_key("maven", right)
    return (a > b) - (a < b)


_QUALIFIERS = [
    "alpha", "beta", "milestone", "rc", "cr", "snapshot", "ga", "final", "release", "sp",
    "a", "b", "m", "c", "x", "foo", "jre", "android", "Final", "RELEASE", "SNAPSHOT", "M",
    "RC", "incubating", "z",
]  # fmt: skip
_NUMBERS = ["0", "00", "1", "01", "2", "9", "10", "123", "1000000000", "999999999",
            "0000000001", "12345678901234567890", "123456789012345678", "007"]  # fmt: skip


def generated_versions(seed: int, count: int) -> list[str]:
    """Versions in the shapes that matter to ComparableVersion: numbers of every width,
    qualifiers known, aliased, short (`a1`) and unknown, in any case, joined by `.`, `-` or
    nothing, with empty segments and separators at the ends now and then. Most share a
    prefix with the one before, so consecutive pairs differ late, where the rules are."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    made: list[str] = []
    while len(made) < count:
        previous = made[-1] if made else ""
        if previous and rng.random() < 0.7:
            parts = [previous[: rng.randrange(1, len(previous) + 1)]]
        else:
            parts = [rng.choice(_NUMBERS) if rng.random() < 0.85 else rng.choice(_QUALIFIERS)]
        for _ in range(rng.randrange(0, 5)):
            separator = rng.choices([".", "-", "", "..", "-."], weights=[10, 6, 4, 1, 1])[0]
            part = rng.choice(_NUMBERS) if rng.random() < 0.5 else rng.choice(_QUALIFIERS)
            parts.append(separator + part)
        text = "".join(parts)
        if rng.random() < 0.03:
            text = rng.choice([".", "-"]) + text
        if rng.random() < 0.03:
            text += rng.choice([".", "-"])
        if len(text) > 60:
            text = text[-60:]
        made.append(text)
    return made


# Pairs that went wrong before, and the corners of the rules.
KNOWN_PAIRS = [
    ("1", "1.foo"), ("1.foo", "1-alpha"), ("1-alpha", "1"), ("1.foo.2", "1-alpha"),
    ("1.0.0.beta", "1.0-SNAPSHOT"), ("1.0.beta", "1.0-beta"), ("1.0.beta1", "1.0-beta-1"),
    ("1.0.RELEASE", "1.0"), ("1.0.Final", "1.0-final"), ("1.0-sp", "1.0.sp"),
    ("1.ga.1", "1-alpha"), ("1--alpha", "1-sp.1"), ("1-1.foo-bar1baz-.1", "1-1.foo-bar-1-baz-0.1"),
    ("1.0.0", "1"), ("1-0", "1"), ("1a1", "1-alpha-1"), ("1m1", "1-milestone-1"), ("1x1", "1-x-1"),
    ("2147483647", "2147483648"), ("999999999", "1000000000"), ("0000000001", "2"),
    ("12345678901234567890", "123456789012345678901"), ("1.0", "1.0.0-SNAPSHOT"),
]  # fmt: skip


def _shorter_versions(*texts: str) -> list[str]:
    """Each version cut before a separator or a digit/letter change, as it is and followed by
    `.0` (which keeps a last qualifier in its list: `a.b` is `a-b`, `a.b.0` is not), and `0`:
    where a cycle of Maven's order goes through (`1.foo.2` and `1-alpha` through `1`)."""
    cuts = {
        text[:index]
        for text in texts
        for index in range(1, len(text))
        if text[index] in ".-" or text[index - 1].isdigit() != text[index].isdigit()
    }
    return sorted({"0"} | cuts | {cut + ".0" for cut in cuts})


def disagreements_off_maven_cycles(ordered: list[str], theirs: list[int]) -> list[object]:
    """The consecutive pairs of `ordered` where our order differs from Maven's (`theirs`),
    less those shown by one more java run to be on a 3-cycle of Maven's own order: Maven has
    low < high, we have high < low, and Maven has high < shorter < low for some shorter
    version of the two. What is left is a real disagreement."""
    differing: list[tuple[str, str]] = []
    unexplained: list[object] = []
    for (left, right), sign in zip(itertools.pairwise(ordered), theirs, strict=True):
        if ours(left, right) == sign:
            continue
        if sign == 0 or ours(left, right) == 0:
            unexplained.append((left, right, ours(left, right), sign))  # equality must agree
            continue
        differing.append((left, right) if sign < 0 else (right, left))
    # For each pair, the shorter versions our order puts between the two: Maven must too.
    chains = [
        (low, high, shorter)
        for low, high in differing
        for shorter in _shorter_versions(low, high)
        if ours(high, shorter) < 0 and ours(shorter, low) < 0
    ]
    answers = maven_comparisons([text for chain in chains for text in chain[1:] + chain[:1]])
    on_cycles = {
        (low, high)
        for index, (low, high, _) in enumerate(chains)
        # [high, shorter, low] compared consecutively: high < shorter, shorter < low
        if answers[3 * index] == -1 and answers[3 * index + 1] == -1
    }
    unexplained += [(low, high, "differs, not on a cycle") for low, high in differing
                    if (low, high) not in on_cycles]  # fmt: skip
    return unexplained


@needs_maven
def test_known_pairs_compare_as_maven_compares_them() -> None:
    ordered = [version for pair in KNOWN_PAIRS for version in pair]
    assert not disagreements_off_maven_cycles(ordered, maven_comparisons(ordered))


@needs_maven
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_pairs_compare_as_maven_compares_them(seed: int) -> None:
    ordered = generated_versions(seed, BATCH)
    expected = maven_comparisons(ordered)
    unexplained = disagreements_off_maven_cycles(ordered, expected)
    assert not unexplained, f"{len(unexplained)} of {len(expected)}: {unexplained[:10]}"
    # and the pairs skipped are few: Maven is consistent on almost every pair generated
    differing = [pair for pair, sign in zip(itertools.pairwise(ordered), expected, strict=True)
                 if ours(*pair) != sign]  # fmt: skip
    assert len(differing) < len(expected) // 20


@needs_maven
def test_equal_versions_hash_alike() -> None:
    ordered = generated_versions(4, BATCH)
    expected = maven_comparisons(ordered)
    for (left, right), theirs in zip(itertools.pairwise(ordered), expected, strict=True):
        if theirs == 0:
            assert hash(versions.MavenVersion(left)) == hash(versions.MavenVersion(right))


@needs_maven
@pytest.mark.parametrize(
    ("cycle", "ours_between"),
    [
        (["1", "1.foo.2", "1-alpha", "1"], 1),  # a qualifier above 1 against a list below
        (["0", "0.foo", "0.alpha.0", "0"], 1),
        (["1", "1.sp-SNAPSHOT", "1-SNAPSHOT", "1"], 1),
        (["1", "1-sp", "1.0.alpha.1", "1"], 1),  # a list above 1 against a 0 followed by less
        (["1", "1.sp", "1.0.alpha.1", "1"], 1),  # a qualifier against a number
    ],
)
def test_maven_itself_is_not_transitive_and_we_break_its_cycles_in_the_middle(
    cycle: list[str], ours_between: int
) -> None:
    # No transitive order agrees with Maven on all three pairs: ours agrees on the two through
    # the shorter version and orders the middle pair by content, as Maven 4 does.
    assert maven_comparisons(cycle) == [-1, -1, -1]
    assert [ours(a, b) for a, b in itertools.pairwise(cycle)] == [-1, ours_between, -1]
    assert disagreements_off_maven_cycles(cycle, [-1, -1, -1]) == []
