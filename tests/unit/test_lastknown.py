"""The last-known policy copy: when a state is trusted, what a degraded worker enforces, and
the file (round trip, atomic replacement, damage)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mirror import lastknown
from mirror.lastknown import LastKnown, LastKnownError
from mirror.model import AuditEntry, RuleKind, RuleRecord
from mirror.state.base import StateIdentity

T0 = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


def rule(
    rule_id: str, kind: RuleKind = "block", *, at: datetime = T0, **extra: object
) -> RuleRecord:
    fields: dict[str, object] = {
        "id": rule_id,
        "kind": kind,
        "ecosystem": "npm",
        "package": "left-pad",
        "versions": "1.3.0",
        "reason": "compromised",
        "created_at": at,
        "created_by": "secops",
        **extra,
    }
    return RuleRecord(**fields)  # type: ignore[arg-type]


KNOWN = LastKnown(
    identity="epoch-a",
    version=7,
    rules=(
        rule("b1"),
        rule("f1", "freeze", expires_at=T0 + timedelta(days=2), data={"published_after": "x"}),
    ),
    digests={"npm": {"left-pad/1.3.0.tgz": "sha512-abc"}},
    audit=(
        AuditEntry(at=T0, actor="secops", client="192.0.2.1", action="block.create", target="b1",
                   after={"id": "b1", "tags": ["a"]}),
    ),
)  # fmt: skip


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (StateIdentity(identity="epoch-a", version=7), None),
        (StateIdentity(identity="epoch-a", version=9), None),
        (StateIdentity(identity="epoch-b", version=9, restored_from=frozenset({"epoch-a"})), None),
        (StateIdentity(identity=None, version=0), "has no identity"),
        (StateIdentity(identity=None, version=12), "has no identity"),
        (StateIdentity(identity="epoch-b", version=40), "is another one"),
        (StateIdentity(identity="epoch-a", version=6), "went back from 7 to 6"),
    ],
)
def test_assess_trusts_only_the_same_state_not_older(
    seen: StateIdentity, expected: str | None
) -> None:
    reason = lastknown.assess(KNOWN, seen)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None
        assert expected in reason


def test_without_a_copy_every_state_is_trusted() -> None:
    assert lastknown.assess(None, StateIdentity(identity=None, version=0)) is None


def test_merged_rules_never_drop_a_known_rule() -> None:
    newer = rule("b2", at=T0 + timedelta(hours=1))
    changed_b1 = rule("b1", reason="edited")
    merged = lastknown.merged_rules(KNOWN.rules, [newer, changed_b1])
    assert [(r.kind, r.id) for r in merged] == [("block", "b1"), ("freeze", "f1"), ("block", "b2")]
    assert merged[0].reason == "edited"
    # The same id in another kind is another rule.
    assert len(lastknown.merged_rules(KNOWN.rules, [rule("b1", "exemption")])) == 3


def test_file_round_trip(tmp_path: Path) -> None:
    path = lastknown.path_in(tmp_path)
    assert lastknown.load(path) is None
    lastknown.save(path, lastknown.encode(KNOWN))
    assert lastknown.load(path) == KNOWN
    assert KNOWN.counts() == {
        "block": 1,
        "exemption": 0,
        "freeze": 1,
        "digest pins": 1,
        "audit entries": 1,
    }


def test_save_replaces_atomically_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = lastknown.path_in(tmp_path)
    lastknown.save(path, lastknown.encode(KNOWN))

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)  # a full disk cannot be made here portably
    with pytest.raises(OSError, match="No space"):
        lastknown.save(path, b"{}")
    assert lastknown.load(path) == KNOWN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lastknown.json"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"format": 99}',
        b'{"format": 1, "identity": "x"}',
        lastknown.encode(KNOWN).replace(b"+00:00", b""),
    ],
)
def test_a_damaged_file_is_an_error_not_an_empty_policy(tmp_path: Path, data: bytes) -> None:
    path = lastknown.path_in(tmp_path)
    path.write_bytes(data)
    with pytest.raises(LastKnownError):
        lastknown.load(path)


# the digest pins, indexed ---------------------------------------------------------------------


def _copy_with_pins(pins: dict[str, dict[str, str]]) -> LastKnown:
    return LastKnown(identity="one", version=3, rules=(), digests=pins)


def test_pin_index_finds_every_pin_and_nothing_else(tmp_path: Path) -> None:
    pins = {
        "npm": {f"npm/p{i}/1.0.0/p{i}-1.0.0.tgz": f"sha512:{i:0128x}" for i in range(5000)},
        "pypi": {"pypi/x/x-1.0.tar.gz": "sha256:" + "ab" * 32},
        "maven": {"org.example:lib:1.0/lib-1.0.jar": "sha1:" + "cd" * 20},
    }
    lastknown.save(lastknown.path_in(tmp_path), lastknown.encode(_copy_with_pins(pins)))
    index = lastknown.open_pins(tmp_path)
    assert index is not None
    try:
        assert len(index) == 5002
        for ecosystem, keys in pins.items():
            for key, digest in keys.items():
                assert index.get(ecosystem, key) == digest
        assert index.get("npm", "npm/never/1.0.0/never-1.0.0.tgz") is None
        assert index.get("pypi", "npm/p1/1.0.0/p1-1.0.0.tgz") is None  # per ecosystem
    finally:
        index.close()


def test_pin_index_follows_the_copy_it_was_built_from(tmp_path: Path) -> None:
    path = lastknown.path_in(tmp_path)
    assert lastknown.open_pins(tmp_path) is None  # no copy: no pins
    lastknown.save(path, lastknown.encode(_copy_with_pins({"npm": {"k": "sha512:01"}})))
    first = lastknown.open_pins(tmp_path)
    assert first is not None
    assert first.get("npm", "k") == "sha512:01"
    first.close()
    # A newer copy (another size or time): the index is built again, not read stale.
    lastknown.save(path, lastknown.encode(_copy_with_pins({"npm": {"k": "sha512:0202"}})))
    os.utime(path, ns=(1, 1))
    second = lastknown.open_pins(tmp_path)
    assert second is not None
    assert second.get("npm", "k") == "sha512:0202"
    second.close()
    # An index damaged on disk is rebuilt, never trusted.
    (tmp_path / lastknown.PINS_FILENAME).write_bytes(b"QMPINS1 {\n")
    third = lastknown.open_pins(tmp_path)
    assert third is not None
    assert third.get("npm", "k") == "sha512:0202"
    third.close()
    # No pins at all is an empty index, not an error.
    lastknown.save(path, lastknown.encode(_copy_with_pins({})))
    os.utime(path, ns=(2, 2))
    empty = lastknown.open_pins(tmp_path)
    assert empty is not None
    assert len(empty) == 0
    assert empty.get("npm", "k") is None
    empty.close()
