"""npm risk signals, each against the package's own established releases, from packuments as the
upstream writes them (and as a hostile one might), through `parse_packument`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mirror import policy
from mirror.clock import parse_iso_time
from mirror.config import QuarantineConfig
from mirror.ecosystems.npm import document
from mirror.ecosystems.npm.names import parse_name
from mirror.ecosystems.npm.signals import Release, compute
from mirror.risk import DETAIL_CHARS, Signal

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def packument(versions: dict[str, dict[str, Any]], times: dict[str, datetime | Any]) -> bytes:
    return json.dumps(
        {
            "name": "left-pad",
            "dist-tags": {"latest": list(versions)[-1]} if versions else {},
            "versions": {
                version: {"name": "left-pad", "version": version, **manifest}
                for version, manifest in versions.items()
            },
            "time": {
                version: iso(moment) if isinstance(moment, datetime) else moment
                for version, moment in times.items()
            },
        }
    ).encode()


def signals(versions: dict[str, dict[str, Any]], times: dict[str, Any]) -> dict[str, list[str]]:
    """What each version shows: `name: detail` lines."""
    parsed = document.parse_packument(packument(versions, times), parse_name("left-pad"))
    return {
        version: [f"{signal.name}: {signal.detail}" for signal in shown]
        for version, shown in parsed.signals.items()
    }


def two(old: dict[str, Any], new: dict[str, Any], gap: timedelta = DAY) -> dict[str, list[str]]:
    """4.2.0 (`old`) then 4.2.1 (`new`) published `gap` later."""
    return signals(
        {"4.2.0": old, "4.2.1": new}, {"4.2.0": NOW - 10 * DAY - gap, "4.2.1": NOW - 10 * DAY}
    )


def test_a_postinstall_script_added_is_named_with_the_release_before() -> None:
    assert two({}, {"scripts": {"postinstall": "node steal.js", "test": "jest"}}) == {
        "4.2.1": ["install-script-added: postinstall script added in 4.2.1; 4.2.0 had none"]
    }


def test_several_install_scripts_and_has_install_script() -> None:
    both = {"scripts": {"preinstall": "a", "postinstall": "b"}}
    assert two({}, both) == {
        "4.2.1": [
            "install-script-added: preinstall and postinstall scripts added in 4.2.1; "
            "4.2.0 had none"
        ]
    }
    assert two({}, {"hasInstallScript": True}) == {
        "4.2.1": ["install-script-added: install script added in 4.2.1; 4.2.0 had none"]
    }


def test_an_install_script_the_release_before_had_too_is_no_signal() -> None:
    assert (
        two({"scripts": {"install": "node-gyp rebuild"}}, {"scripts": {"postinstall": "x"}}) == {}
    )
    assert two({"hasInstallScript": True}, {"scripts": {"install": "x"}}) == {}
    # Other scripts and empty ones run nothing at install.
    assert two({}, {"scripts": {"test": "jest", "postinstall": " "}}) == {}


def test_provenance_dropped() -> None:
    attested = {"dist": {"attestations": {"url": "/x", "provenance": {}}}}
    assert two(attested, {"dist": {"shasum": "0" * 40}}) == {
        "4.2.1": ["provenance-dropped: 4.2.1 has no provenance (dist.attestations); 4.2.0 had it"]
    }
    assert two(attested, attested) == {}
    assert two({}, {}) == {}


def test_a_new_publisher_is_named_with_the_last_one() -> None:
    assert two({"_npmUser": {"name": "alice"}}, {"_npmUser": {"name": "mallory"}}) == {
        "4.2.1": [
            "new-publisher: 4.2.1 was published by mallory, who never published left-pad "
            "before (4.2.0 by alice)"
        ]
    }
    # Any earlier release counts, not only the one before.
    shown = signals(
        {
            "1.0.0": {"_npmUser": {"name": "alice"}},
            "1.0.1": {"_npmUser": {"name": "bob"}},
            "1.0.2": {"_npmUser": {"name": "alice"}},
        },
        {"1.0.0": NOW - 30 * DAY, "1.0.1": NOW - 20 * DAY, "1.0.2": NOW - 10 * DAY},
    )
    assert list(shown) == ["1.0.1"]
    # Nothing to compare with: no earlier release names a publisher.
    assert two({}, {"_npmUser": {"name": "mallory"}}) == {}


def test_a_major_jump_past_every_earlier_major() -> None:
    shown = signals(
        {"1.4.2": {}, "1.0.0": {}, "2.0.0": {}, "4.0.0": {}},
        {
            "1.0.0": NOW - 160 * DAY,
            "1.4.2": NOW - 120 * DAY,
            "2.0.0": NOW - 80 * DAY,
            "4.0.0": NOW - 10 * DAY,
        },
    )
    assert shown == {"4.0.0": ["major-jump: 4.0.0 skips from major 2 (highest before: 2.0.0)"]}
    assert signals({"1.4.2": {}, "3.0.0": {}}, {"1.4.2": NOW - 9 * DAY, "3.0.0": NOW}) == {
        "3.0.0": ["major-jump: 3.0.0 skips from major 1 (highest before: 1.4.2)"]
    }
    # A backport to an old line is no jump; neither is the next major.
    assert signals({"3.0.0": {}, "1.0.1": {}}, {"3.0.0": NOW - 9 * DAY, "1.0.1": NOW}) == {}


def test_a_dormant_package_revived() -> None:
    assert two({}, {}, gap=timedelta(days=2 * 365 + 20)) == {
        "4.2.1": [
            "dormant-revived: 4.2.1 is the first release in 2 years "
            "(4.2.0 was published 2024-11-01)"
        ]
    }
    assert two({}, {}, gap=timedelta(days=365))["4.2.1"] == [
        "dormant-revived: 4.2.1 is the first release in a year (4.2.0 was published 2025-11-21)"
    ]
    assert two({}, {}, gap=timedelta(days=364)) == {}


def test_the_first_release_and_versions_without_a_publish_time_show_nothing() -> None:
    assert signals({"1.0.0": {"scripts": {"postinstall": "x"}}}, {"1.0.0": NOW}) == {}
    # 4.2.0 has no publish time: no basis, and 4.2.1 has no release before it.
    untimed = signals(
        {"4.2.0": {}, "4.2.1": {"scripts": {"postinstall": "x"}}}, {"4.2.1": NOW - DAY}
    )
    assert untimed == {}
    # The baseline is the release published last at least BASELINE_AGE before it, not the
    # next lower version.
    by_time = signals(
        {
            "1.0.0": {"scripts": {"install": "x"}},
            "2.0.0": {},
            "1.0.1": {"scripts": {"install": "x"}},
        },
        {"1.0.0": NOW - 100 * DAY, "2.0.0": NOW - 60 * DAY, "1.0.1": NOW - 10 * DAY},
    )
    assert by_time == {
        "1.0.1": ["install-script-added: install script added in 1.0.1; 2.0.0 had none"]
    }


@pytest.mark.parametrize(
    "hostile",
    [
        {"scripts": "postinstall", "_npmUser": "mallory", "dist": "x", "hasInstallScript": "yes"},
        {"scripts": {"postinstall": 5}, "_npmUser": {"name": 7}, "dist": {"attestations": []}},
        {"scripts": [], "_npmUser": [], "dist": None, "hasInstallScript": 1},
        {"scripts": None, "_npmUser": None, "dist": {"attestations": None}},
    ],
)
def test_fields_of_the_wrong_type_count_as_absent(hostile: dict[str, Any]) -> None:
    assert two({"_npmUser": {"name": "alice"}}, hostile) == {}
    assert two(hostile, {}) == {}


def test_upstream_text_is_escaped_and_bounded() -> None:
    name = "mal\x1b[31mory\u202e" + "x" * 500
    version = "4.2.1-" + "\n" * 300
    shown = signals(
        {"4.2.0": {"_npmUser": {"name": "alice"}}, version: {"_npmUser": {"name": name}}},
        {"4.2.0": NOW - 2 * DAY, version: NOW - DAY},
    )
    (detail,) = shown[version]
    assert not any(char in detail for char in "\x1b\n\u202e")
    assert "mal\\x1b[31mory\\u202e" in detail
    assert len(detail) <= len("new-publisher: ") + DETAIL_CHARS


def test_bad_versions_and_times_never_raise() -> None:
    shown = signals(
        {"not-semver": {}, "99999999999999999999.0.0": {}, "1.0.0": {}},
        {"not-semver": NOW - 3 * DAY, "1.0.0": "yesterday", "99999999999999999999.0.0": NOW},
    )
    assert list(shown) == []  # no major before the huge one: nothing to jump from
    assert compute("x", []) == {}
    assert compute("x", [Release.of("1.0.0", None, scripts={"install": "x"})]) == {}


def test_filter_packument_decides_with_the_signals() -> None:
    """A version adding a postinstall script is held 14 days by the built-in rule: the
    packument offers the release before it, and the decision names the signal."""
    raw = packument(
        {"4.2.0": {}, "4.2.1": {"scripts": {"postinstall": "x"}}},
        {"4.2.0": NOW - 30 * DAY, "4.2.1": NOW - 5 * DAY},
    )
    parsed = document.parse_packument(raw, parse_name("left-pad"))
    rules = policy.compile_rules((), QuarantineConfig(default=timedelta(days=3)), NOW)
    view = document.filter_packument(parsed, rules, NOW)
    assert view.visible == ("4.2.0",)
    assert view.dist_tags == {"latest": "4.2.0"}
    (held,) = view.quarantined
    assert held.risk is not None
    assert held.risk.signal == Signal.of(
        "install-script-added", "postinstall script added in 4.2.1; 4.2.0 had none"
    )
    assert held.until == parse_iso_time(iso(NOW - 5 * DAY + 14 * DAY))


# Laundering: a decoy published first must not become the payload's baseline. ----------------

SCRIPT = {"scripts": {"postinstall": "node steal.js"}}


def test_two_suspicious_releases_in_a_row_are_both_compared_with_the_established_one() -> None:
    """4.2.1 (a decoy postinstall, held by the signal) then 4.2.2 (the payload) a minute later:
    both are compared with 4.2.0, the newest release published BASELINE_AGE before them."""
    moment = NOW - DAY
    shown = signals(
        {
            "4.1.0": {"_npmUser": {"name": "alice"}},
            "4.2.0": {"_npmUser": {"name": "alice"}},
            "4.2.1": {**SCRIPT, "_npmUser": {"name": "mallory"}},
            "4.2.2": {**SCRIPT, "_npmUser": {"name": "mallory"}},
        },
        {
            "4.1.0": NOW - 200 * DAY,
            "4.2.0": NOW - 40 * DAY,
            "4.2.1": moment,
            "4.2.2": moment + timedelta(minutes=1),
        },
    )
    assert shown["4.2.2"] == [
        "install-script-added: postinstall script added in 4.2.2; 4.2.0 had none",
        "new-publisher: 4.2.2 was published by mallory, who never published left-pad before "
        "(4.2.0 by alice)",
    ]
    assert [line.split(":")[0] for line in shown["4.2.1"]] == [
        "install-script-added",
        "new-publisher",
    ]


def test_a_prerelease_decoy_is_no_baseline() -> None:
    """The decoy is a prerelease nobody installs; the first release is the baseline while no
    release is BASELINE_AGE old. Provenance and the major follow the same rule."""
    attested = {"dist": {"attestations": {"url": "/x", "provenance": {}}}}
    shown = signals(
        {
            "1.0.0": attested,
            "4.2.2-beta.0": {**SCRIPT, "dist": {}},
            "4.2.2": {**SCRIPT, "dist": {}},
        },
        {"1.0.0": NOW - 10 * DAY, "4.2.2-beta.0": NOW - 2 * DAY, "4.2.2": NOW - DAY},
    )
    assert shown["4.2.2"] == [
        "install-script-added: postinstall script added in 4.2.2; 1.0.0 had none",
        "provenance-dropped: 4.2.2 has no provenance (dist.attestations); 1.0.0 had it",
        "major-jump: 4.2.2 skips from major 1 (highest before: 1.0.0)",
    ]
    assert "4.2.2-beta.0" in shown


def test_a_release_established_long_enough_is_the_baseline() -> None:
    """Once the script release is BASELINE_AGE old it is the baseline; until then a release
    after it is still compared with the one before it (and held by the same signal)."""
    times = {"4.2.0": NOW - 100 * DAY, "4.2.1": NOW - 31 * DAY, "4.2.2": NOW}
    assert signals({"4.2.0": {}, "4.2.1": SCRIPT, "4.2.2": SCRIPT}, times) == {
        "4.2.1": ["install-script-added: postinstall script added in 4.2.1; 4.2.0 had none"]
    }
    times["4.2.1"] = NOW - 29 * DAY
    assert signals({"4.2.0": {}, "4.2.1": SCRIPT, "4.2.2": SCRIPT}, times)["4.2.2"] == [
        "install-script-added: postinstall script added in 4.2.2; 4.2.0 had none"
    ]


def test_a_decoy_does_not_clear_a_dormant_package_revived() -> None:
    """Every release within BASELINE_AGE after the first one in a year is signalled, naming
    the release that revived the package and the baseline."""
    shown = signals(
        {"4.2.0": {}, "4.2.1": {}, "4.2.2": {}},
        {"4.2.0": NOW - 800 * DAY, "4.2.1": NOW - 2 * DAY, "4.2.2": NOW - DAY},
    )
    assert shown == {
        "4.2.1": [
            "dormant-revived: 4.2.1 is the first release in 2 years (4.2.0 was published "
            "2024-09-22)"
        ],
        "4.2.2": [
            "dormant-revived: 4.2.2 follows the first release in 2 years, 4.2.1 (4.2.0 was "
            "published 2024-09-22)"
        ],
    }
