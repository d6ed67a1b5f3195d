"""npm ranges mean what npm's own node-semver says they mean, with `includePrerelease` (the
reading in which prereleases count, as they must for a block): checked against the
node-semver that ships with npm, on a generated corpus of ranges and a grid of versions
(releases and prereleases). Every range the mirror accepts matches exactly the versions
node-semver matches; every range it refuses is one node-semver rejects or that has an
alternative matching nothing (`<0.0.0`, which only 0.0.0's own prereleases satisfy, counts
as nothing). Skipped where node or npm is not installed."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from mirror import versions

PROBE = """
const semver = require(process.argv[1]);
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = {};
for (const spec of input.specs) {
  let range;
  try { range = new semver.Range(spec, {includePrerelease: true}); }
  catch (e) { out[spec] = null; continue; }
  out[spec] = input.versions.filter(v => range.test(v));
}
process.stdout.write(JSON.stringify(out));
"""
VERSIONS = [f"{a}.{b}.{c}" for a in range(4) for b in range(4) for c in range(4)]
VERSIONS += [f"{v}-{tag}" for v in VERSIONS for tag in ("0", "alpha", "beta.2", "rc.1")]
OPERATORS = ["", "=", "<", "<=", ">", ">=", "^", "~", "~>", "v", "> ", "~ ", "^ "]


def node_semver() -> Path | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    root = subprocess.run(
        [npm, "root", "-g"], capture_output=True, text=True, timeout=60, check=False
    ).stdout.strip()
    module = Path(root) / "npm" / "node_modules" / "semver"
    return module if (module / "package.json").is_file() else None


def corpus(seed: int, size: int) -> list[str]:
    pick = random.Random(seed)  # noqa: S311 -- a reproducible corpus, not a secret

    def partial() -> str:
        count = pick.choice([1, 2, 3, 3, 3])
        numbers = ["0", "1", "2"]
        parts = [pick.choice([*numbers, "x", "*"] if pick.random() < 0.2 else numbers)]
        parts += [pick.choice([*numbers, "x"] if pick.random() < 0.2 else numbers)]
        parts += [pick.choice(numbers)]
        text = ".".join(parts[:count])
        if count == 3 and "x" not in text and "*" not in text and pick.random() < 0.25:
            text += "-" + pick.choice(["0", "rc.1", "alpha", "beta.2", "01"])
        return text

    def alternative() -> str:
        if pick.random() < 0.15:
            return f"{partial()} - {partial()}"
        count = pick.choice([1, 1, 2, 3])
        return " ".join(pick.choice(OPERATORS) + partial() for _ in range(count))

    return sorted(
        {" || ".join(alternative() for _ in range(pick.choice([1, 1, 2]))) for _ in range(size)}
    )


def test_npm_ranges_mean_what_node_semver_says_with_include_prerelease() -> None:
    module = node_semver()
    if module is None:
        pytest.skip("node and npm's node-semver are not installed here")
    specs = corpus(seed=9, size=2500)
    alternatives = sorted({part.strip() for spec in specs for part in spec.split("||")})
    answer = subprocess.run(
        ["node", "-e", PROBE, str(module)],
        input=json.dumps({"specs": specs + alternatives, "versions": VERSIONS}),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    expected: dict[str, list[str] | None] = json.loads(answer.stdout)
    accepted = 0
    mismatches: list[str] = []
    for spec in specs:
        try:
            parsed = versions.parse_spec("npm", spec)
        except versions.InvalidSpec:
            parts = [part.strip() for part in spec.split("||")]
            if expected[spec] is not None and all(
                expected[part] and not part.startswith("<0.0.0") for part in parts
            ):
                mismatches.append(f"refused, but node-semver matches every part: {spec!r}")
            continue
        accepted += 1
        ours = [version for version in VERSIONS if parsed.contains(version)]
        if expected[spec] is None:
            mismatches.append(f"accepted, but node-semver rejects: {spec!r}")
        elif ours != expected[spec]:
            extra = sorted(set(ours) - set(expected[spec] or ()))[:4]
            missing = sorted(set(expected[spec] or ()) - set(ours))[:4]
            mismatches.append(f"{spec!r}: only here {extra}, only in node-semver {missing}")
    assert mismatches == []
    assert accepted > len(specs) // 4  # the corpus exercises acceptance, not just refusals
