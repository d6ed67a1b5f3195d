"""The part of pre-warming `mirror warm` and `POST /api/v1/warm` share (pure): what a verdict
means for a pin, a Maven pin's files, pom packaging, and the summary."""

from __future__ import annotations

import pytest

from mirror.errors import BadRequest
from mirror.lockfiles.pins import Pin
from mirror.lockfiles.warming import (
    OUTCOMES,
    is_pom_packaging,
    maven_paths,
    refusal,
    warm_summary,
)


@pytest.mark.parametrize(
    ("verdict", "outcome"),
    [
        ("allowed", None),
        ("exempted", None),
        ("quarantined", "held"),
        ("blocked", "blocked"),
        ("unknown", "failed"),
        ("error", "failed"),
        (None, "failed"),
    ],
)
def test_what_a_verdict_means_for_a_pin(verdict: str | None, outcome: str | None) -> None:
    assert refusal(verdict) == outcome


def test_a_maven_pin_names_its_pom_and_jar() -> None:
    pin = Pin("maven", "org.example.deep:lib", "1.5.0")
    assert maven_paths(pin) == (
        "org/example/deep/lib/1.5.0/lib-1.5.0.pom",
        "org/example/deep/lib/1.5.0/lib-1.5.0.jar",
    )


@pytest.mark.parametrize(
    ("package", "version"),
    [("org.example:lib", "../../x"), ("org.example:lib", "1/2"), ("lib", "1")],
)
def test_a_maven_pin_that_is_no_path_is_refused(package: str, version: str) -> None:
    with pytest.raises(BadRequest):
        maven_paths(Pin("maven", package, version))


def test_pom_packaging_is_read_whatever_the_whitespace() -> None:
    assert is_pom_packaging(b"<project>\n  <packaging>\n    pom\n  </packaging>\n</project>")
    assert not is_pom_packaging(b"<project><packaging>jar</packaging></project>")
    assert not is_pom_packaging(b"<project/>")


def test_the_summary_lists_each_pin_under_its_outcome() -> None:
    results = [
        {"ecosystem": "npm", "package": "b", "version": "1", "outcome": "fetched", "bytes": 5},
        {"ecosystem": "npm", "package": "a", "version": "1", "outcome": "fetched", "bytes": 7},
        {"ecosystem": "npm", "package": "c", "version": "1", "outcome": "cached", "bytes": 100},
        {"ecosystem": "npm", "package": "d", "version": "1", "outcome": "held"},
    ]
    summary = warm_summary(results, [Pin("pypi", "e", "2")], why="time ran out")
    assert summary["pins"] == 5
    assert summary["bytes"] == 12  # fetched only: the cached were there already
    assert [r["package"] for r in summary["fetched"]] == ["a", "b"]
    assert [r["package"] for r in summary["cached"]] == ["c"]
    assert summary["blocked"] == []
    (failed,) = summary["failed"]
    assert (failed["package"], failed["outcome"], failed["detail"]) == (
        "e",
        "failed",
        "time ran out",
    )
    assert set(summary) == {"pins", "bytes", *OUTCOMES}
