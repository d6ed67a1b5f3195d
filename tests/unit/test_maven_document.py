"""maven-metadata.xml: hostile XML, filtering, latest/release, deterministic bytes and their
checksums, and the lazy publish-time planner (counting look-ups)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from mirror import policy
from mirror.config import QuarantineConfig, QuarantineRule
from mirror.ecosystems.maven import document
from mirror.errors import BadUpstreamDocument
from mirror.model import RuleRecord

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
AGE = timedelta(days=3)
WINDOW = NOW - AGE
OLD = NOW - timedelta(days=30)

METADATA = b"""<?xml version="1.0" encoding="UTF-8"?>
<metadata modelVersion="1.1.0">
  <groupId>org.example</groupId>
  <artifactId>lib</artifactId>
  <versioning>
    <latest>2.0.0-alpha-1</latest>
    <release>2.0.0-alpha-1</release>
    <versions>
      <version>1.0</version>
      <version>1.10.0</version>
      <version>1.2.0</version>
      <version>1.4.0</version>
      <version>1.5.0-SNAPSHOT</version>
      <version>2.0.0-alpha-1</version>
    </versions>
    <lastUpdated>20261121093000</lastUpdated>
  </versioning>
</metadata>
"""


def rules(records: tuple[RuleRecord, ...] = ()) -> policy.Rules:
    return policy.compile_rules(list(records), QuarantineConfig(default=AGE), NOW)


def block(versions: str) -> RuleRecord:
    return RuleRecord(
        id="b1", kind="block", ecosystem="maven", package="org.example:lib", versions=versions,
        reason="compromised", created_at=OLD, created_by="test",
    )  # fmt: skip


def published(young: Mapping[str, datetime]) -> dict[str, datetime | None]:
    meta = document.parse_metadata(METADATA)
    return {version: young.get(version, OLD) for version in meta.versions}


# parse -------------------------------------------------------------------------------------------


def test_parse_orders_versions_the_maven_way() -> None:
    meta = document.parse_metadata(METADATA)
    assert meta.is_artifact
    assert (meta.group_id, meta.artifact_id) == ("org.example", "lib")
    assert meta.versions == ("1.0", "1.2.0", "1.4.0", "1.5.0-SNAPSHOT", "1.10.0", "2.0.0-alpha-1")
    assert meta.last_updated == datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<metadata><groupId>&lol3;</groupId></metadata>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE metadata [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<metadata><groupId>&xxe;</groupId></metadata>
"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE metadata SYSTEM "http://127.0.0.1:9/evil.dtd">
<metadata><groupId>x</groupId></metadata>
"""


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(BILLION_LAUGHS, "DTD, entities", id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, "DTD, entities", id="external-entity"),
        pytest.param(EXTERNAL_DTD, "DTD, entities", id="external-dtd"),
        pytest.param(b"<metadata><versioning>", "not well-formed", id="truncated"),
        pytest.param(b"<project/>", "expected <metadata>", id="wrong-root"),
        pytest.param(b"<metadata>" + b" " * document.MAX_METADATA_BYTES + b"</metadata>",
                     "limit", id="oversized"),
    ],
)  # fmt: skip
def test_hostile_or_broken_metadata_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(BadUpstreamDocument) as raised:
        document.parse_metadata(raw)
    assert message in raised.value.message
    assert raised.value.status == 502


def test_group_metadata_is_not_artifact_metadata_and_renders_unchanged_content() -> None:
    raw = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<metadata><plugins><plugin><name>Dep</name>'
        b"<prefix>dependency</prefix><artifactId>maven-dependency-plugin</artifactId>"
        b"</plugin></plugins></metadata>"
    )
    meta = document.parse_metadata(raw)
    assert not meta.is_artifact
    assert b"<prefix>dependency</prefix>" in document.render_metadata(meta, None)


@pytest.mark.parametrize(
    ("raw", "algorithm", "expected"),
    [
        (b"0123456789abcdef0123456789abcdef01234567", "sha1",
         "0123456789abcdef0123456789abcdef01234567"),
        (b"0123456789ABCDEF0123456789ABCDEF01234567  lib-1.0.jar\n", "sha1",
         "0123456789abcdef0123456789abcdef01234567"),
        (b"MD5 (lib-1.0.jar) = 0123456789abcdef0123456789abcdef\n", "md5",
         "0123456789abcdef0123456789abcdef"),
    ],
)  # fmt: skip
def test_parse_checksum_takes_the_digest_token(raw: bytes, algorithm: str, expected: str) -> None:
    assert document.parse_checksum(raw, algorithm) == expected


def test_parse_checksum_without_a_digest_is_bad_upstream() -> None:
    with pytest.raises(BadUpstreamDocument):
        document.parse_checksum(b"<html>not found</html>", "sha1")


def metadata_xml(
    listed: tuple[str, ...] | None,
    last_updated: datetime | None,
    *,
    latest: str | None = None,
    release: str | None = None,
    extra: str = "",
) -> bytes:
    """An artifact-level document; `listed=None` leaves `<versions>` out."""
    parts = ["<groupId>org.example</groupId><artifactId>lib</artifactId>", extra, "<versioning>"]
    if listed:
        latest = latest or listed[-1]
        release = release or listed[-1]
    if latest:
        parts.append(f"<latest>{latest}</latest>")
    if release:
        parts.append(f"<release>{release}</release>")
    if listed is not None:
        parts.append(
            "<versions>" + "".join(f"<version>{v}</version>" for v in listed) + "</versions>"
        )
    if last_updated is not None:
        parts.append(f"<lastUpdated>{last_updated:%Y%m%d%H%M%S}</lastUpdated>")
    return ("<metadata>" + "".join(parts) + "</versioning></metadata>").encode()


# filter + render ---------------------------------------------------------------------------------


def test_young_versions_are_dropped_and_latest_release_recomputed() -> None:
    meta = document.parse_metadata(METADATA)
    young = {"2.0.0-alpha-1": NOW - timedelta(hours=5), "1.10.0": NOW - timedelta(days=1)}
    view = document.filter_metadata(meta, "org.example:lib", published(young), rules(), NOW)
    assert view.visible == ("1.0", "1.2.0", "1.4.0", "1.5.0-SNAPSHOT")
    assert view.latest == "1.5.0-SNAPSHOT"
    assert view.release == "1.4.0"
    assert view.valid_until == NOW - timedelta(days=1) + AGE
    assert {held.version for held in view.held} == {"2.0.0-alpha-1", "1.10.0"}

    body = document.render_metadata(meta, view)
    assert b"<version>2.0.0-alpha-1</version>" not in body
    assert b"<version>1.10.0</version>" not in body
    assert b"<latest>1.5.0-SNAPSHOT</latest>" in body
    assert b"<release>1.4.0</release>" in body
    # The newest publish time of a visible version, not the upstream's (a held deploy).
    assert f"<lastUpdated>{OLD:%Y%m%d%H%M%S}</lastUpdated>".encode() in body
    assert b'modelVersion="1.1.0"' in body
    reparsed = document.parse_metadata(body)
    assert reparsed.versions == view.visible


def test_blocked_version_is_dropped_and_does_not_bound_the_view() -> None:
    meta = document.parse_metadata(METADATA)
    view = document.filter_metadata(
        meta, "org.example:lib", published({}), rules((block("[1.4.0]"),)), NOW
    )
    assert "1.4.0" not in view.visible
    assert view.release == "2.0.0-alpha-1"
    assert view.valid_until is None
    assert [held.verdict for held in view.held] == ["blocked"]


def test_nothing_visible_drops_latest_and_release_and_keeps_an_empty_list() -> None:
    meta = document.parse_metadata(METADATA)
    view = document.filter_metadata(meta, "org.example:lib", {}, rules(), NOW)  # all unknown
    assert view.visible == ()
    body = document.render_metadata(meta, view)
    assert b"<latest>" not in body
    assert b"<release>" not in body
    assert b"<versions />" in body
    assert document.parse_metadata(body).versions == ()


def test_rendering_is_deterministic_and_checksums_match_the_bytes() -> None:
    meta = document.parse_metadata(METADATA)
    # The same document reformatted upstream: same visible set, same bytes.
    compact = document.parse_metadata(b"".join(line.strip() for line in METADATA.splitlines()))
    young = {"2.0.0-alpha-1": NOW - timedelta(hours=5)}
    view = document.filter_metadata(meta, "org.example:lib", published(young), rules(), NOW)
    first = document.render_metadata(meta, view)
    assert first == document.render_metadata(meta, view)
    assert first == document.render_metadata(compact, view)
    assert first != METADATA
    sums = document.checksums(first)
    assert sums["sha1"] == hashlib.sha1(first).hexdigest()  # noqa: S324 -- Maven's own algorithm
    assert sums["md5"] == hashlib.md5(first).hexdigest()  # noqa: S324 -- Maven's own algorithm
    assert sums["sha256"] == hashlib.sha256(first).hexdigest()
    assert sums["sha512"] == hashlib.sha512(first).hexdigest()
    assert document.checksum_headers(first) == {
        "X-Checksum-Sha1": sums["sha1"],
        "X-Checksum-Md5": sums["md5"],
    }
    # The upstream document must not be changed by filtering or rendering.
    assert document.parse_metadata(METADATA).versions == meta.versions
    listed = meta.root.find("versioning/versions")
    assert listed is not None
    assert len(listed) == 6


def test_default_namespace_renders_without_prefixes() -> None:
    raw = (
        b'<metadata xmlns="http://maven.apache.org/METADATA/1.1.0" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        b'xsi:schemaLocation="http://maven.apache.org/METADATA/1.1.0 x.xsd">'
        b"<groupId>g</groupId><artifactId>a</artifactId><versioning><versions>"
        b"<version>1.0</version></versions></versioning></metadata>"
    )
    meta = document.parse_metadata(raw)
    assert meta.versions == ("1.0",)
    body = document.render_metadata(meta, document.filter_metadata(meta, "g:a", {"1.0": OLD},
                                                                   rules(), NOW))  # fmt: skip
    assert b"ns0:" not in body
    assert b'<metadata xmlns="http://maven.apache.org/METADATA/1.1.0"' in body
    assert document.parse_metadata(body).versions == ("1.0",)


# lazy publish times ------------------------------------------------------------------------------


def run_planner(
    ordered: tuple[str, ...],
    last_updated: datetime | None,
    times: Mapping[str, datetime | None],
    **options: int,
) -> tuple[dict[str, datetime | None], list[str]]:
    """Drive the planner as the adapter does; return the result and the look-ups made."""
    known: dict[str, datetime | None] = {}
    lookups: list[str] = []
    for _ in range(len(ordered) + 1):
        plan = document.plan_publish_times(ordered, last_updated, WINDOW, known, **options)
        if plan.lookup is None:
            return dict(plan.published), lookups
        lookups.append(plan.lookup)
        known[plan.lookup] = times[plan.lookup]
    raise AssertionError("the planner did not finish")


VERSIONS = tuple(f"1.{minor}.0" for minor in range(10))


def test_old_last_updated_needs_one_lookup_of_the_newest_only() -> None:
    times = {version: OLD + timedelta(days=index) for index, version in enumerate(VERSIONS)}
    result, lookups = run_planner(VERSIONS, OLD, times)
    assert lookups == ["1.9.0"]
    # Older versions are at least as old as the newest: never younger than they are.
    assert result == dict.fromkeys(VERSIONS, times["1.9.0"])


def test_old_last_updated_with_the_newest_known_needs_no_lookup() -> None:
    plan = document.plan_publish_times(VERSIONS, OLD, WINDOW, {"1.9.0": OLD})
    assert plan.lookup is None
    assert plan.published == dict.fromkeys(VERSIONS, OLD)


def test_a_lying_old_last_updated_does_not_hide_a_young_newest() -> None:
    times = dict.fromkeys(VERSIONS, OLD)
    times["1.9.0"] = NOW - timedelta(hours=1)
    result, lookups = run_planner(VERSIONS, OLD, times)
    assert lookups == ["1.9.0", "1.8.0"]
    assert result["1.9.0"] == NOW - timedelta(hours=1)
    view = document.filter_metadata(
        document.parse_metadata(metadata_xml(VERSIONS, OLD)),
        "org.example:lib",
        result,
        rules(),
        NOW,
    )
    assert view.latest == view.release == "1.8.0"


def test_lookups_stop_at_the_first_old_version_newest_first() -> None:
    times = dict.fromkeys(VERSIONS, OLD)
    times["1.9.0"] = NOW - timedelta(hours=1)
    times["1.8.0"] = NOW - timedelta(days=2)
    times["1.7.0"] = NOW - timedelta(days=10)
    result, lookups = run_planner(VERSIONS, NOW - timedelta(hours=1), times)
    assert lookups == ["1.9.0", "1.8.0", "1.7.0"]
    assert result["1.9.0"] == times["1.9.0"]
    assert result["1.0.0"] == times["1.7.0"]  # never looked up: at least as old as 1.7.0
    assert len(result) == len(VERSIONS)


def test_cached_times_are_not_looked_up_again() -> None:
    known: dict[str, datetime | None] = {"1.9.0": NOW - timedelta(hours=1), "1.8.0": OLD}
    plan = document.plan_publish_times(VERSIONS, None, WINDOW, known)
    assert plan.lookup is None
    assert plan.published["1.0.0"] == OLD


def test_unknown_times_do_not_end_the_walk() -> None:
    times: dict[str, datetime | None] = dict.fromkeys(VERSIONS, OLD)
    times["1.9.0"] = None
    result, lookups = run_planner(VERSIONS, None, times)
    assert lookups == ["1.9.0", "1.8.0"]
    assert result["1.9.0"] is None
    assert result["1.8.0"] == OLD


def test_a_young_maintenance_release_below_an_old_newest_is_found() -> None:
    ordered = ("1.0.0", "1.1.0", "1.1.1", "2.0.0")
    young = NOW - timedelta(hours=3)
    times = {"1.0.0": OLD, "1.1.0": OLD, "1.1.1": young, "2.0.0": OLD}
    result, lookups = run_planner(ordered, young, times)
    assert lookups == ["2.0.0", "1.1.1", "1.1.0"]
    assert result == {"2.0.0": OLD, "1.1.1": young, "1.1.0": OLD, "1.0.0": OLD}


def test_the_search_for_a_young_version_is_bounded() -> None:
    # lastUpdated is young but every version is old (upstream rewrote the metadata).
    times = dict.fromkeys(VERSIONS, OLD)
    result, lookups = run_planner(VERSIONS, NOW, times, max_backport_lookups=2)
    assert lookups == ["1.9.0", "1.8.0", "1.7.0"]
    assert set(result) == set(VERSIONS)
    assert set(result.values()) == {OLD}


def test_all_young_looks_up_every_version_once() -> None:
    young = NOW - timedelta(hours=2)
    result, lookups = run_planner(VERSIONS, young, dict.fromkeys(VERSIONS, young))
    assert sorted(lookups) == sorted(VERSIONS)
    assert lookups[0] == "1.9.0"
    assert set(result.values()) == {young}


def test_the_window_start_comes_from_the_policy() -> None:
    ordered = ("1.0", "1.1")
    assert document.quarantine_window_start("org.example:lib", ordered, rules(), NOW) == WINDOW
    # The newest is blocked: the next one still tells the age.
    blocked = rules((block("[1.1]"),))
    assert document.quarantine_window_start("org.example:lib", ordered, blocked, NOW) == WINDOW
    no_age = policy.compile_rules([], QuarantineConfig(default=timedelta(0)), NOW)
    assert document.quarantine_window_start("org.example:lib", ordered, no_age, NOW) == NOW
    assert document.quarantine_window_start("org.example:lib", (), rules(), NOW) == NOW


# nothing of a held version ----------------------------------------------------------------------

SECRET = "HELD-SECRET-a71b"


def test_metadata_without_versions_still_decides_latest_and_release() -> None:
    raw = metadata_xml(None, OLD, latest="2.0", release="1.9")
    meta = document.parse_metadata(raw)
    assert meta.is_artifact
    assert meta.versions == ("1.9", "2.0")
    times = {"1.9": OLD, "2.0": NOW - timedelta(hours=1)}
    view = document.filter_metadata(meta, "org.example:lib", times, rules(), NOW)
    body = document.render_metadata(meta, view)
    assert b"2.0" not in body
    assert b"<latest>1.9</latest>" in body
    assert b"<release>1.9</release>" in body
    assert b"<versions>" in body


def test_only_known_elements_survive_filtering() -> None:
    extra = (
        f"<version>3.0</version><description>{SECRET}</description>"
        f"<plugins><plugin><name>p</name><prefix>p</prefix><artifactId>p</artifactId></plugin>"
        f"</plugins>"
    )
    raw = metadata_xml(("1.0", "3.0"), OLD, extra=extra).replace(
        b"<lastUpdated>",
        f"<snapshot><timestamp>{SECRET}</timestamp></snapshot><x>{SECRET}</x><lastUpdated>".encode(),
    )
    meta = document.parse_metadata(raw)
    view = document.filter_metadata(
        meta, "org.example:lib", {"1.0": OLD, "3.0": NOW - timedelta(hours=1)}, rules(), NOW
    )
    body = document.render_metadata(meta, view)
    assert SECRET.encode() not in body
    assert b"3.0" not in body
    assert b"<prefix>p</prefix>" in body
    assert document.parse_metadata(body).versions == ("1.0",)


def test_last_updated_is_omitted_when_no_visible_time_is_known() -> None:
    meta = document.parse_metadata(metadata_xml(("1.0",), OLD))
    allow = policy.compile_rules([], QuarantineConfig(default=AGE, unknown="allow"), NOW)
    view = document.filter_metadata(meta, "org.example:lib", {"1.0": None}, allow, NOW)
    assert view.visible == ("1.0",)
    assert b"lastUpdated" not in document.render_metadata(meta, view)


def test_group_metadata_needs_plugins_and_no_versioning() -> None:
    assert not document.parse_metadata(b"<metadata><plugins/></metadata>").is_artifact
    assert document.parse_metadata(b"<metadata><versioning/><plugins/></metadata>").is_artifact
    assert document.parse_metadata(b"<metadata><groupId>g</groupId></metadata>").is_artifact
    empty = document.parse_metadata(b"<metadata><artifactId>a</artifactId><plugins/></metadata>")
    assert empty.is_artifact


def test_nothing_visible_message() -> None:
    meta = document.parse_metadata(metadata_xml(("1.0",), OLD))
    view = document.filter_metadata(meta, "org.example:lib", {"1.0": NOW}, rules(), NOW)
    assert document.nothing_visible_message("org.example:lib", view) == (
        "no version of org.example:lib is available from this mirror yet: org.example:lib: "
        "1 version held in quarantine (newest 1.0, available 2026-11-25T10:00Z)"
    )
    none = document.filter_metadata(
        document.parse_metadata(b"<metadata/>"), "g:a", {}, rules(), NOW
    )
    assert document.nothing_visible_message("g:a", none) == (
        "the upstream metadata of g:a lists no versions"
    )


@pytest.mark.parametrize(
    "version", ["../../../etc", "1.0/../2.0", "1.0 beta", "1.0&#x9;x", "%2e%2e", ".", "a\\b"]
)
def test_versions_that_cannot_be_a_path_segment_are_dropped(version: str) -> None:
    listed = f"<versions><version>1.0</version><version>{version}</version></versions>"
    raw = (
        "<metadata><groupId>g</groupId><artifactId>a</artifactId><versioning>"
        f"<latest>{version}</latest>{listed}</versioning></metadata>"
    ).encode()
    meta = document.parse_metadata(raw)
    assert meta.versions == ("1.0",)
    plan = document.plan_publish_times(meta.versions, None, WINDOW, {})
    assert plan.lookup == "1.0"


# what the mutation run found unpinned ------------------------------------------------------------


def test_a_document_of_exactly_the_size_limit_is_parsed() -> None:
    head = b"<metadata><groupId>g</groupId><artifactId>a</artifactId><versioning><versions>"
    tail = b"<version>1.0</version></versions></versioning></metadata>"
    padding = b" " * (document.MAX_METADATA_BYTES - len(head) - len(tail))
    assert document.parse_metadata(head + padding + tail).versions == ("1.0",)
    with pytest.raises(BadUpstreamDocument) as raised:
        document.parse_metadata(head + padding + b" " + tail)
    assert raised.value.message == (
        f"upstream maven-metadata.xml is {document.MAX_METADATA_BYTES + 1} bytes, over the "
        f"{document.MAX_METADATA_BYTES}-byte limit"
    )


def test_a_refused_dtd_is_named_in_the_message() -> None:
    with pytest.raises(BadUpstreamDocument) as raised:
        document.parse_metadata(EXTERNAL_DTD)
    assert raised.value.message.endswith("(DTDForbidden)")


@pytest.mark.parametrize(
    ("raw", "algorithm"),
    [
        (hashlib.sha256(b"jar").hexdigest().encode(), "sha1"),  # a digest of another length
        (b"0123abcd  lib-1.0.jar", "sha1"),  # hex, but not a sha1
    ],
)
def test_a_checksum_file_without_a_digest_of_its_own_length_is_refused(
    raw: bytes, algorithm: str
) -> None:
    with pytest.raises(BadUpstreamDocument) as raised:
        document.parse_checksum(raw, algorithm)
    assert raised.value.message == f"the upstream .{algorithm} file holds no {algorithm} digest"


def test_a_checksum_file_naming_a_non_ascii_file_still_gives_its_digest() -> None:
    digest = hashlib.sha1(b"jar").hexdigest()  # noqa: S324 -- Maven's own algorithm
    raw = f"{digest}  caf\u00e9-1.0.jar\n".encode()
    assert document.parse_checksum(raw, "sha1") == digest


def test_the_window_start_uses_the_maven_age_rule_of_the_coordinates() -> None:
    config = QuarantineConfig(
        default=AGE,
        rules=(QuarantineRule(ecosystem="maven", package="org.example:*", age=timedelta(days=10)),),
    )
    compiled = policy.compile_rules([], config, NOW)
    start = document.quarantine_window_start("org.example:lib", ("1.0",), compiled, NOW)
    assert start == NOW - timedelta(days=10)


def test_an_open_ended_freeze_starts_the_window_now() -> None:
    freeze = RuleRecord(
        id="f1", kind="freeze", ecosystem="maven", package="org.example:lib", versions="*",
        reason="incident", created_at=OLD, created_by="test", data={"published_after": OLD},
    )  # fmt: skip
    compiled = rules((freeze,))
    assert document.quarantine_window_start("org.example:lib", ("1.0",), compiled, NOW) == NOW


def test_a_version_published_exactly_at_the_window_start_is_young() -> None:
    ordered = ("1.0", "1.1")
    times = {"1.0": OLD, "1.1": WINDOW}
    # lastUpdated old: the walk ends at the first old version, and 1.1 is not one.
    result, lookups = run_planner(ordered, OLD, times)
    assert lookups == ["1.1", "1.0"]
    assert result == times
    # lastUpdated exactly at the window start is young: the walk looks past an old newest.
    ordered = ("1.0", "1.0.1", "2.0")
    times = {"1.0": OLD, "1.0.1": NOW - timedelta(hours=1), "2.0": OLD}
    result, lookups = run_planner(ordered, WINDOW, times)
    assert lookups == ["2.0", "1.0.1", "1.0"]
    assert result == times


def test_artifact_metadata_without_versioning_gets_one() -> None:
    raw = (
        b"<metadata><groupId>g</groupId><artifactId>a</artifactId><version>1.0</version></metadata>"
    )
    meta = document.parse_metadata(raw)
    # No <lastUpdated> to trust: the planner looks the version up.
    plan = document.plan_publish_times(meta.versions, meta.last_updated, WINDOW, {})
    assert plan.lookup == "1.0"
    view = document.filter_metadata(meta, "g:a", {"1.0": OLD}, rules(), NOW)
    body = document.render_metadata(meta, view)
    assert body == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b"<metadata>\n"
        b"  <groupId>g</groupId>\n"
        b"  <artifactId>a</artifactId>\n"
        b"  <versioning>\n"
        b"    <latest>1.0</latest>\n"
        b"    <release>1.0</release>\n"
        b"    <versions>\n"
        b"      <version>1.0</version>\n"
        b"    </versions>\n"
        + f"    <lastUpdated>{OLD:%Y%m%d%H%M%S}</lastUpdated>\n".encode()
        + b"  </versioning>\n"
        b"</metadata>\n"
    )


def test_a_namespaced_document_renders_exactly_with_its_root_attributes() -> None:
    # The xsi attribute comes first: the attributes after it must not be lost.
    raw = (
        b'<metadata xsi:schemaLocation="http://maven.apache.org/METADATA/1.1.0 x.xsd" '
        b'xmlns="http://maven.apache.org/METADATA/1.1.0" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" modelVersion="1.1.0">'
        b"<groupId>g</groupId><artifactId>a</artifactId><versioning><versions>"
        b"<version>1.0</version><version>1.1</version><version>2.0</version></versions>"
        b"<lastUpdated>20261121093000</lastUpdated></versioning></metadata>"
    )
    meta = document.parse_metadata(raw)
    times = {
        "1.0": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "1.1": datetime(2026, 2, 2, 3, 4, 5, tzinfo=UTC),
        "2.0": NOW,
    }
    view = document.filter_metadata(meta, "g:a", times, rules(), NOW)
    assert document.render_metadata(meta, view) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<metadata xmlns="http://maven.apache.org/METADATA/1.1.0" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        b'xsi:schemaLocation="http://maven.apache.org/METADATA/1.1.0 x.xsd" modelVersion="1.1.0">\n'
        b"  <groupId>g</groupId>\n"
        b"  <artifactId>a</artifactId>\n"
        b"  <versioning>\n"
        b"    <latest>1.1</latest>\n"
        b"    <release>1.1</release>\n"
        b"    <versions>\n"
        b"      <version>1.0</version>\n"
        b"      <version>1.1</version>\n"
        b"    </versions>\n"
        b"    <lastUpdated>20260202030405</lastUpdated>\n"
        b"  </versioning>\n"
        b"</metadata>\n"
    )


def test_last_updated_is_written_in_utc_whatever_the_local_zone() -> None:
    meta = document.parse_metadata(metadata_xml(("1.0",), OLD))
    published = {"1.0": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}
    view = document.filter_metadata(meta, "org.example:lib", published, rules(), NOW)
    before = os.environ.get("TZ")
    os.environ["TZ"] = "KIR-14"  # POSIX: fourteen hours east of UTC, no zone database needed
    time.tzset()
    try:
        body = document.render_metadata(meta, view)
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()
    assert b"<lastUpdated>20260102030405</lastUpdated>" in body


def test_group_metadata_keeps_its_text_content() -> None:
    raw = (
        b"<metadata><plugins><plugin><name>Dep</name>note<prefix>dependency</prefix>"
        b"<artifactId>maven-dependency-plugin</artifactId></plugin></plugins></metadata>"
    )
    meta = document.parse_metadata(raw)
    rendered = document.parse_metadata(document.render_metadata(meta, None))

    def text(metadata: document.MavenMetadata) -> list[str]:
        return [piece.strip() for piece in metadata.root.itertext() if piece.strip()]

    assert text(rendered) == text(meta) == ["Dep", "note", "dependency", "maven-dependency-plugin"]


@pytest.mark.parametrize(
    ("held", "summary"),
    [
        (3, "3 versions held in quarantine (publish time unknown: 1.0, 1.1, 1.2)"),
        (4, "4 versions held in quarantine (publish time unknown: 1.1, 1.2, 1.3 and 1 more)"),
        (8, "8 versions held in quarantine (publish time unknown: 1.5, 1.6, 1.7 and 5 more)"),
    ],
)
def test_the_held_summary_names_the_three_newest_versions_and_counts_the_rest(
    held: int, summary: str
) -> None:
    listed = tuple(f"1.{minor}" for minor in range(held))
    meta = document.parse_metadata(metadata_xml(listed, OLD))
    view = document.filter_metadata(meta, "org.example:lib", {}, rules(), NOW)  # all unknown
    assert document.held_summary("org.example:lib", view) == f"org.example:lib: {summary}"


def test_maven_order_is_comparable_version_order() -> None:
    given = ["1.10", "1.2", "1.0", "1.0-alpha-1", "1.0-SNAPSHOT", "1.0-sp-1", "1"]
    assert document.maven_order(given) == [
        "1.0-alpha-1", "1.0-SNAPSHOT", "1.0", "1", "1.0-sp-1", "1.2", "1.10",
    ]  # fmt: skip


SHA1 = "0123456789abcdef0123456789abcdef01234567"
SHA256 = hashlib.sha256(b"jar").hexdigest()


@pytest.mark.parametrize(
    ("raw", "algorithm", "expected"),
    [
        (SHA1.encode() + b"\r\n", "sha1", SHA1),  # Central, Nexus: the digest alone
        (SHA1.encode() + b" *lib-1.0.jar", "sha1", SHA1),  # sha1sum --binary
        (f"SHA1(lib-1.0.jar)= {SHA1}\n".encode(), "sha1", SHA1),  # openssl dgst
        (f"SHA256 (lib-1.0.jar) = {SHA256}".encode(), "sha256", SHA256),  # BSD --tag
    ],
)
def test_the_checksum_file_forms_repositories_publish_are_read(
    raw: bytes, algorithm: str, expected: str
) -> None:
    assert document.parse_checksum(raw, algorithm) == expected


@pytest.mark.parametrize(
    "raw",
    [
        # An error or captive-portal page answered with 200 that holds a 40-hex request id.
        f"<html><body><h1>Service unavailable</h1><p>Request id {SHA1} </p></body></html>".encode(),
        f"Request id: {SHA1}".encode(),
        f"{SHA1}\n<html>more</html>".encode(),  # a digest, then something else
        SHA1.encode() + b" " + b"x" * document.MAX_CHECKSUM_BYTES,  # too big to be one
    ],
)
def test_a_body_that_merely_contains_a_digest_is_not_a_checksum_file(raw: bytes) -> None:
    with pytest.raises(BadUpstreamDocument):
        document.parse_checksum(raw, "sha1")


SIGNATURE = (
    b"-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n"
)


def test_a_signature_needs_its_armor_end_line_and_a_bounded_size() -> None:
    assert document.parse_signature(SIGNATURE) == SIGNATURE
    for raw in (
        SIGNATURE.replace(b"-----END PGP SIGNATURE-----\n", b""),  # cut short
        b"-----BEGIN PGP SIGNATURE-----\n<html>proxy error</html>",
        SIGNATURE + b" " * document.MAX_COMPANION_BYTES,
    ):
        with pytest.raises(BadUpstreamDocument):
            document.parse_signature(raw)
