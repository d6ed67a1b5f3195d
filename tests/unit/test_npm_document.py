"""The pure npm packument functions: parse → filter → render on realistic documents."""

from __future__ import annotations

import base64
import copy
import gc
import hashlib
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from mirror import policy
from mirror.config import QuarantineConfig
from mirror.ecosystems.npm import document
from mirror.ecosystems.npm.names import PackageName
from mirror.errors import BadUpstreamDocument
from mirror.model import RuleRecord

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
AGE = timedelta(days=3)
BASE = "http://mirror.test:8080/npm"
UPSTREAM = "http://upstream.test/"
OLD = NOW - timedelta(days=400)


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def make_doc(
    name: str,
    published: dict[str, datetime | None],
    tags: dict[str, str],
    *,
    deprecated: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A full packument shaped like the public registry's, with fake but well-formed dist."""
    versions: dict[str, Any] = {}
    time: dict[str, str] = {}
    known = [moment for moment in published.values() if moment is not None]
    if known:
        time["created"] = ts(min(known))
        time["modified"] = ts(max(known))
    unscoped = name.rsplit("/", 1)[-1]
    for version, moment in published.items():
        digest = hashlib.sha512(f"{name}@{version}".encode()).digest()
        manifest: dict[str, Any] = {
            "name": name,
            "version": version,
            "description": "a package",
            "license": "MIT",
            "dependencies": {"dep": "^1.0.0"},
            "scripts": {"test": "node test.js"},
            "_id": f"{name}@{version}",
            "gitHead": "abc123",
            "dist": {
                "tarball": f"{UPSTREAM}{name}/-/{unscoped}-{version}.tgz",
                "shasum": hashlib.sha1(version.encode()).hexdigest(),  # noqa: S324
                "integrity": "sha512-" + base64.b64encode(digest).decode(),
                "signatures": [{"keyid": "SHA256:k", "sig": f"sig-{version}"}],
            },
        }
        if deprecated and version in deprecated:
            manifest["deprecated"] = deprecated[version]
        versions[version] = manifest
        if moment is not None:
            time[version] = ts(moment)
    return {
        "_id": name,
        "_rev": "12-abcdef",
        "name": name,
        "description": "a package",
        "dist-tags": tags,
        "versions": versions,
        "time": time,
        "maintainers": [{"name": "someone", "email": "someone@example.com"}],
        "readme": "# readme",
        "users": {"fan": True},
        "_attachments": {},
    }


def parse(doc: dict[str, Any]) -> document.Packument:
    return document.parse_packument(orjson.dumps(doc), PackageName(doc["name"]))


def rules(*records: RuleRecord, unknown: str = "quarantine") -> policy.Rules:
    config = QuarantineConfig(default=AGE, unknown=unknown)  # type: ignore[arg-type]
    return policy.compile_rules(list(records), config, NOW)


def block(package: str, versions: str) -> RuleRecord:
    return RuleRecord(
        id="b1",
        kind="block",
        ecosystem="npm",
        package=package,
        versions=versions,
        reason="compromised release",
        created_at=NOW - timedelta(hours=1),
        created_by="security",
    )


def render(
    packument: document.Packument, form: document.Form, compiled: policy.Rules | None = None
) -> tuple[document.PackumentView, dict[str, Any]]:
    view = document.filter_packument(packument, compiled or rules(), NOW)
    return view, orjson.loads(document.render_packument(packument, view, form, BASE))


LEFT_PAD = make_doc(
    "left-pad",
    {
        "1.0.0": OLD,
        "1.1.0": OLD + timedelta(days=10),
        "1.9.0": NOW - timedelta(days=30),
        "1.10.0": NOW - timedelta(days=10),  # sorts above 1.9.0 numerically
        "1.3.1": NOW - timedelta(days=20),
        "1.4.0-beta.1": NOW - timedelta(days=5),
        "1.11.0": NOW - timedelta(days=1),  # young
        "1.12.0": NOW - timedelta(hours=2),  # young, latest
        "2.0.0-beta.1": NOW - timedelta(days=9),
        "2.0.0-beta.2": NOW - timedelta(hours=1),  # young, next
    },
    {"latest": "1.12.0", "next": "2.0.0-beta.2", "legacy": "1.0.0", "gone": "9.9.9"},
    deprecated={"1.0.0": "use 1.1.0 — it fixes \u201cthe bug\u201d"},
)


# parse ---------------------------------------------------------------------------------------


def test_parse_orders_versions_by_semver_and_indexes_tarball_files() -> None:
    packument = parse(LEFT_PAD)
    assert list(packument.versions) == [
        "1.0.0", "1.1.0", "1.3.1", "1.4.0-beta.1", "1.9.0", "1.10.0", "1.11.0", "1.12.0",
        "2.0.0-beta.1", "2.0.0-beta.2",
    ]  # fmt: skip
    assert packument.versions["2.0.0-beta.1"].prerelease
    assert not packument.versions["1.10.0"].prerelease
    assert packument.versions["1.9.0"].published_at == (NOW - timedelta(days=30)).replace(
        microsecond=0
    )
    assert packument.version_of_file("left-pad-1.10.0.tgz") == "1.10.0"
    assert packument.version_of_file("left-pad-1.10.tgz") is None
    assert packument.modified == LEFT_PAD["time"]["modified"]


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", b'{"versions": []}', b'{"dist-tags": "x"}', b'{"time": 5}'],
    ids=["not-json", "array", "versions-list", "tags-string", "time-number"],
)
def test_parse_refuses_broken_documents(raw: bytes) -> None:
    with pytest.raises(BadUpstreamDocument):
        document.parse_packument(raw, PackageName("x"))


def test_tarball_digests_come_from_integrity_and_shasum() -> None:
    data = b"tarball bytes"
    manifest = {
        "dist": {
            "integrity": "sha512-"
            + base64.b64encode(hashlib.sha512(data).digest()).decode()
            + " sha1-bogus md5-x sha512-!!notbase64",
            "shasum": hashlib.sha1(data).hexdigest(),  # noqa: S324
        }
    }
    digests = document.tarball_digests(manifest)
    assert [(digest.algorithm, digest.hexdigest) for digest in digests] == [
        ("sha512", hashlib.sha512(data).hexdigest()),
        ("sha1", hashlib.sha1(data).hexdigest()),  # noqa: S324
    ]
    assert document.tarball_digests({"dist": {"shasum": "short"}}) == ()
    assert document.tarball_digests({}) == ()


def _sri(algorithm: str, digest: bytes) -> str:
    return f"{algorithm}-{base64.b64encode(digest).decode()}"


@pytest.mark.parametrize(
    "skipped",
    [
        ["md5-AAAA"],  # an algorithm npm does not verify with
        ["sha1-AAAA", "sha384-AAAA"],
        ["sha512-!!notbase64"],
        ["sha512-"],  # no value
        ["nodash"],
    ],
    ids=["unknown", "two-unknown", "bad-base64", "empty", "no-dash"],
)
def test_integrity_entries_after_a_skipped_one_still_count(skipped: list[str]) -> None:
    # A `break` instead of `continue` would lose every digest after the first bad entry.
    data = b"tarball bytes"
    good = [
        _sri("sha256", hashlib.sha256(data).digest()),
        _sri("SHA512", hashlib.sha512(data).digest()) + "?opt=1",  # case and SRI options
    ]
    manifest = {"dist": {"integrity": " ".join([*skipped, *good, *skipped])}}
    digests = document.tarball_digests(manifest)
    assert [(digest.algorithm, digest.hexdigest) for digest in digests] == [
        ("sha256", hashlib.sha256(data).hexdigest()),
        ("sha512", hashlib.sha512(data).hexdigest()),
    ]


@pytest.mark.parametrize(
    ("shasum", "kept"),
    [
        ("AB" * 20, "ab" * 20),  # upper case hex: kept, lower-cased
        ("zz" * 20, None),  # 40 characters, not hex
        ("ab" * 19, None),  # too short
        ("ab" * 21, None),  # too long
        (12, None),
    ],
)
def test_shasum_is_kept_only_as_40_hex_digits(shasum: object, kept: str | None) -> None:
    digests = document.tarball_digests({"dist": {"shasum": shasum}})
    assert [(digest.algorithm, digest.hexdigest) for digest in digests] == (
        [("sha1", kept)] if kept else []
    )


# filter --------------------------------------------------------------------------------------


def test_young_versions_are_hidden_and_tags_recomputed() -> None:
    view = document.filter_packument(parse(LEFT_PAD), rules(), NOW)
    assert view.visible == (
        "1.0.0", "1.1.0", "1.3.1", "1.4.0-beta.1", "1.9.0", "1.10.0", "2.0.0-beta.1",
    )  # fmt: skip
    assert [held.version for held in view.quarantined] == ["1.11.0", "1.12.0", "2.0.0-beta.2"]
    # latest: highest allowed non-prerelease below the original; next: same for prereleases;
    # a tag naming a version the document lacks is dropped.
    assert view.dist_tags == {"latest": "1.10.0", "next": "2.0.0-beta.1", "legacy": "1.0.0"}
    # The view changes by the clock when 1.11.0 comes of age.
    assert view.valid_until == (NOW - timedelta(days=1) + AGE).replace(microsecond=0)
    assert view.blocked == ()


def test_latest_hidden_with_only_prereleases_below_is_dropped() -> None:
    doc = make_doc(
        "x",
        {"1.0.0-rc.1": OLD, "1.0.0": NOW - timedelta(hours=5)},
        {"latest": "1.0.0", "rc": "1.0.0-rc.1"},
    )
    view = document.filter_packument(parse(doc), rules(), NOW)
    assert view.visible == ("1.0.0-rc.1",)
    assert view.dist_tags == {"rc": "1.0.0-rc.1"}  # never a stable tag moved to a prerelease


def test_prerelease_only_package_keeps_a_prerelease_latest() -> None:
    doc = make_doc(
        "@next/thing",
        {"0.1.0-alpha.1": OLD, "0.1.0-alpha.2": OLD, "0.1.0-alpha.3": NOW - timedelta(hours=1)},
        {"latest": "0.1.0-alpha.3"},
    )
    view, body = render(parse(doc), "corgi")
    assert view.dist_tags == {"latest": "0.1.0-alpha.2"}
    assert list(body["versions"]) == ["0.1.0-alpha.1", "0.1.0-alpha.2"]


def test_all_versions_hidden() -> None:
    doc = make_doc(
        "fresh",
        {"1.0.0": NOW - timedelta(hours=3), "1.0.1": NOW - timedelta(minutes=5)},
        {"latest": "1.0.1"},
    )
    packument = parse(doc)
    view = document.filter_packument(packument, rules(), NOW)
    assert view.visible == ()
    assert view.dist_tags == {}
    message = document.no_visible_version_message(packument.package, view)
    assert message == (
        "no version of fresh is available from this mirror yet: fresh: 2 versions held in "
        "quarantine (newest 1.0.1, available 2026-11-25T09:55Z)"
    )


def test_missing_time_entries_count_as_quarantined_by_default() -> None:
    doc = make_doc("old-thing", {"0.1.0": None, "0.2.0": OLD}, {"latest": "0.2.0"})
    packument = parse(doc)
    view, body = render(packument, "full")
    assert view.visible == ("0.2.0",)
    assert [(held.version, held.until) for held in view.quarantined] == [("0.1.0", None)]
    assert view.valid_until is None  # an unknown time does not expire by the clock
    assert set(body["time"]) == {"created", "modified", "0.2.0"}


def test_missing_time_allowed_keeps_full_truthful_and_corgi_without_partial_time() -> None:
    doc = make_doc("old-thing", {"0.1.0": None, "0.2.0": OLD}, {"latest": "0.2.0"})
    packument = parse(doc)
    compiled = rules(unknown="allow")
    view, full = render(packument, "full", compiled)
    assert view.visible == ("0.1.0", "0.2.0")
    assert "0.1.0" not in full["time"]  # never invent a publish time
    _, corgi = render(packument, "corgi", compiled)
    # pnpm drops a time map that misses a listed version and then fails; so send none.
    assert "time" not in corgi
    assert corgi["modified"] == doc["time"]["modified"]


def test_blocked_versions_are_hidden_even_when_old() -> None:
    view = document.filter_packument(parse(LEFT_PAD), rules(block("left-pad", "1.10.0")), NOW)
    assert "1.10.0" not in view.visible
    assert [held.version for held in view.blocked] == ["1.10.0"]
    assert view.dist_tags["latest"] == "1.9.0"
    notice = document.render_notice(PackageName("left-pad"), view)
    assert notice == (
        "left-pad: 3 versions held in quarantine (newest 2.0.0-beta.2, available "
        "2026-11-25T09:00Z); 1 version blocked by block b1: compromised release (1.10.0)"
    )


def test_no_notice_when_nothing_is_held() -> None:
    doc = make_doc("calm", {"1.0.0": OLD}, {"latest": "1.0.0"})
    view = document.filter_packument(parse(doc), rules(), NOW)
    assert document.render_notice(PackageName("calm"), view) is None


# render --------------------------------------------------------------------------------------


def test_full_form_keeps_visible_versions_byte_for_byte_and_rewrites_tarballs() -> None:
    view, body = render(parse(LEFT_PAD), "full")
    assert body["_id"] == "left-pad"
    assert "_attachments" not in body
    assert body["dist-tags"] == dict(view.dist_tags)
    assert list(body["versions"]) == list(view.visible)
    assert set(body["time"]) == {"created", "modified", *view.visible}
    for version, manifest in body["versions"].items():
        original = LEFT_PAD["versions"][version]
        assert manifest["dist"]["tarball"] == f"{BASE}/left-pad/-/left-pad-{version}.tgz"
        for key in ("integrity", "shasum", "signatures"):
            assert manifest["dist"][key] == original["dist"][key]
        assert manifest["scripts"] == original["scripts"]
    assert body["versions"]["1.0.0"]["deprecated"] == LEFT_PAD["versions"]["1.0.0"]["deprecated"]


def test_nothing_held_keeps_the_upstream_top_level() -> None:
    doc = make_doc("calm", {"1.0.0": OLD, "1.1.0": OLD + timedelta(days=1)}, {"latest": "1.1.0"})
    view, body = render(parse(doc), "full")
    assert not document.holds_back(view)
    assert body["readme"] == "# readme"
    assert body["users"] == {"fan": True}
    assert body["_rev"] == "12-abcdef"
    assert body["time"] == doc["time"]
    _, corgi = render(parse(doc), "corgi")
    assert corgi["modified"] == doc["time"]["modified"]


def test_corgi_form_is_abbreviated_and_carries_modified_and_time() -> None:
    view, body = render(parse(LEFT_PAD), "corgi")
    assert set(body) == {"name", "modified", "dist-tags", "versions", "time"}
    # Versions are held: `modified` is the newest visible publish, not the upstream's.
    newest_visible = max(view.visible, key=lambda version: LEFT_PAD["time"][version])
    assert newest_visible == "1.4.0-beta.1"
    assert body["modified"] == LEFT_PAD["time"][newest_visible]
    assert set(body["time"]) == {"created", "modified", *view.visible}
    assert body["time"]["1.9.0"] == LEFT_PAD["time"]["1.9.0"]
    manifest = body["versions"]["1.0.0"]
    assert not {"scripts", "description", "_id"} & set(manifest)
    assert manifest["deprecated"] == LEFT_PAD["versions"]["1.0.0"]["deprecated"]
    assert manifest["dependencies"] == {"dep": "^1.0.0"}
    assert manifest["dist"]["integrity"] == LEFT_PAD["versions"]["1.0.0"]["dist"]["integrity"]
    assert manifest["dist"]["tarball"] == f"{BASE}/left-pad/-/left-pad-1.0.0.tgz"


SECRET = "HELD-SECRET-5f1c"
PACKAGE_TEXT = {
    "description": f"desc {SECRET}",
    "readme": f"# {SECRET}",
    "readmeFilename": f"{SECRET}.md",
    "homepage": f"https://example.com/{SECRET}",
    "keywords": [SECRET],
    "repository": {"type": "git", "url": f"git+https://example.com/{SECRET}.git"},
    "bugs": {"url": f"https://example.com/{SECRET}/issues"},
    "license": SECRET,
    "author": {"name": SECRET},
    "contributors": [{"name": SECRET}],
    "maintainers": [{"name": SECRET, "email": f"{SECRET}@example.com"}],
}


def hostile_doc(held_published: datetime | None) -> dict[str, Any]:
    """`sly`: 1.0.0 visible, 2.0.0 (latest, young) carries the secret in every text field,
    and the upstream copied it to the top level along with keys of its own."""
    doc = make_doc("sly", {"1.0.0": OLD, "2.0.0": held_published}, {"latest": "2.0.0"})
    doc["versions"]["1.0.0"].update(
        {"readme": "# one", "homepage": "https://example.com/one", "maintainers": [{"name": "a"}]}
    )
    doc["versions"]["2.0.0"].update(PACKAGE_TEXT)
    doc.update(PACKAGE_TEXT)
    doc["x-extra"] = SECRET
    doc["_rev"] = f"2-{SECRET}"
    doc["time"]["modified"] = SECRET
    doc["time"]["created"] = SECRET
    return doc


@pytest.mark.parametrize(
    "held_published", [NOW - timedelta(hours=1), None], ids=["young", "no-time"]
)
@pytest.mark.parametrize("form", ["full", "corgi"])
def test_package_level_fields_never_come_from_a_held_version(
    form: document.Form, held_published: datetime | None
) -> None:
    doc = hostile_doc(held_published)
    packument = parse(doc)
    view, body = render(packument, form)
    assert view.visible == ("1.0.0",)
    raw = document.render_packument(packument, view, form, BASE)
    assert SECRET.encode() not in raw
    assert b"2.0.0" not in raw
    assert body["time"]["modified"] == body["time"]["created"] == doc["time"]["1.0.0"]
    if form == "full":
        # From the manifest `latest` now points at; no upstream key beyond the known set.
        assert body["readme"] == "# one"
        assert body["homepage"] == "https://example.com/one"
        assert body["maintainers"] == [{"name": "a"}]
        assert body["description"] == "a package"
        assert not {"x-extra", "_rev", "users"} & set(body)
        assert body["name"] == body["_id"] == "sly"
    else:
        assert body["modified"] == doc["time"]["1.0.0"]


def test_same_text_from_every_held_form_also_under_a_block() -> None:
    doc = hostile_doc(OLD + timedelta(days=1))  # old, but blocked
    packument = parse(doc)
    compiled = rules(block("sly", "2.0.0"))
    for form in ("full", "corgi"):
        view = document.filter_packument(packument, compiled, NOW)
        raw = document.render_packument(packument, view, form, BASE)  # type: ignore[arg-type]
        assert SECRET.encode() not in raw
    assert SECRET.encode() not in document.render_dist_tags(view)
    assert SECRET.encode() not in document.render_manifest(packument, "1.0.0", BASE)


def test_summary_version_prefers_latest_then_stable_then_highest() -> None:
    young = NOW - timedelta(hours=1)
    doc = make_doc(
        "tags",
        {"1.0.0": OLD, "1.1.0": OLD, "2.0.0-rc.1": OLD},
        {"latest": "1.0.0", "next": "2.0.0-rc.1"},
    )
    packument = parse(doc)
    view = document.filter_packument(packument, rules(), NOW)
    assert document.summary_version(packument, view) == "1.0.0"
    view = document.filter_packument(packument, rules(block("tags", "1.0.0")), NOW)
    assert "latest" not in view.dist_tags  # nothing lower to move to
    assert document.summary_version(packument, view) == "1.1.0"
    doc = make_doc("tags", {"1.0.0": young, "2.0.0-rc.1": OLD}, {"latest": "1.0.0"})
    packument = parse(doc)
    view = document.filter_packument(packument, rules(), NOW)
    assert document.summary_version(packument, view) == "2.0.0-rc.1"
    assert (
        document.summary_version(
            packument, document.filter_packument(packument, rules(block("tags", "*")), NOW)
        )
        is None
    )


def test_upstream_top_level_is_kept_when_it_can_only_describe_visible_versions() -> None:
    # An old version is blocked; `latest` is visible and newer than everything held.
    doc = make_doc(
        "older-held", {"1.0.0": OLD, "1.1.0": OLD + timedelta(days=1)}, {"latest": "1.1.0"}
    )
    packument = parse(doc)
    view, body = render(packument, "full", rules(block("older-held", "1.0.0")))
    assert view.visible == ("1.1.0",)
    assert body["readme"] == "# readme"  # the upstream's, published with 1.1.0
    assert "users" not in body  # unknown keys still go when anything is held


def test_version_unavailable_message_names_the_reason() -> None:
    packument = parse(hostile_doc(NOW - timedelta(hours=1)))
    view = document.filter_packument(packument, rules(), NOW)
    message = document.version_unavailable_message(packument.package, "2.0.0", view)
    assert message.startswith("sly@2.0.0 is not available from this mirror: ")
    assert "quarantine" in message
    assert document.version_unavailable_message(packument.package, "7.0.0", view) == (
        "sly@7.0.0 is not available from this mirror"
    )


def test_scoped_package_tarballs_use_the_literal_scope_slash() -> None:
    doc = make_doc("@acme/widget", {"3.1.4": OLD}, {"latest": "3.1.4"})
    _, body = render(parse(doc), "corgi")
    assert body["versions"]["3.1.4"]["dist"]["tarball"] == (
        f"{BASE}/@acme/widget/-/widget-3.1.4.tgz"
    )
    assert parse(doc).version_of_file("widget-3.1.4.tgz") == "3.1.4"


def test_rendering_never_changes_the_parsed_packument() -> None:
    packument = parse(LEFT_PAD)
    time_before = copy.deepcopy(dict(packument.time))
    first = {form: render(packument, form)[1] for form in ("full", "corgi")}
    render(packument, "full", rules(block("left-pad", "*")))
    render(packument, "corgi", rules(block("left-pad", "1.3.0")))
    assert {form: render(packument, form)[1] for form in ("full", "corgi")} == first
    assert dict(packument.time) == time_before


def test_kept_fields_go_out_byte_for_byte() -> None:
    # Nothing the mirror does not change is re-encoded: escapes, number spellings and key
    # order inside a manifest reach the client as the upstream wrote them.
    raw = (
        rb'{"name":"esc","dist-tags":{"latest":"1.0.0"},"time":{"1.0.0":"2020-01-01T00:00:00Z"},'
        rb'"versions":{"1.0.0":{"name":"esc","version":"1.0.0","description":"caf\u00e9 \"q\"",'
        rb'"zeta":1.50,"alpha":[1e2],"dist":{"tarball":"http://u.test/esc-1.0.0.tgz",'
        rb'"integrity":"sha512-AA=="}}}}'
    )
    packument = document.parse_packument(raw, PackageName("esc"))
    view = document.filter_packument(packument, rules(), NOW)
    body = document.render_packument(packument, view, "full", BASE)
    assert rb'"description":"caf\u00e9 \"q\""' in body
    assert b'"zeta":1.50,"alpha":[1e2]' in body
    assert orjson.loads(body)["versions"]["1.0.0"]["dist"] == {
        "tarball": f"{BASE}/esc/-/esc-1.0.0.tgz",
        "integrity": "sha512-AA==",
    }


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name":"x","versions":{"1.0.0":{"readme":"\xff\xfe"}}}',
        b'{"name":"x","versions":{"1.0.0":{"readme":"a"',
        b'{"name":"x","versions":{"1.0.0":{"scripts":[1,2,}}}',
        b'{"name":"x","versions":{"1.0.0":{"readme":"\x01"}}}',
    ],
    ids=["not-utf8", "truncated", "broken-inside-a-manifest", "control-character"],
)
def test_a_broken_manifest_anywhere_refuses_the_whole_document(raw: bytes) -> None:
    # Manifests are kept undecoded and written out verbatim: the parse must have checked
    # every byte of them.
    with pytest.raises(BadUpstreamDocument):
        document.parse_packument(raw, PackageName("x"))


def test_two_thousand_versions() -> None:
    published = {
        f"{major}.{minor}.0": OLD + timedelta(hours=major * 100 + minor)
        for major in range(20)
        for minor in range(100)
    }
    young = {f"20.{minor}.0": NOW - timedelta(hours=minor + 1) for minor in range(5)}
    doc = make_doc("huge", published | young, {"latest": "20.0.0", "stable": "19.99.0"})
    packument = parse(doc)
    assert len(packument.versions) == 2005
    view, body = render(packument, "full")
    assert len(body["versions"]) == 2000
    assert body["dist-tags"] == {"latest": "19.99.0", "stable": "19.99.0"}
    assert all(
        manifest["dist"]["tarball"].startswith(f"{BASE}/huge/-/huge-")
        for manifest in body["versions"].values()
    )
    # The oldest young version comes of age first: that decides how long the view lives.
    assert view.valid_until == NOW - timedelta(hours=5) + AGE
    _, corgi = render(packument, "corgi")
    assert len(corgi["time"]) == 2002


@pytest.mark.parametrize(
    ("accept", "form"),
    [
        (None, "full"),
        ("", "full"),
        ("*/*", "full"),
        ("application/json", "full"),
        ("application/json; q=1.0, */*", "full"),
        ("application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*", "corgi"),
        ("application/vnd.npm.install-v1+json", "corgi"),
        ("application/vnd.npm.install-v1+json; q=0.5, application/json", "full"),
        ("application/vnd.npm.install-v1+json; q=0", "full"),
        ("Application/Vnd.Npm.Install-V1+Json;q=1", "corgi"),
    ],
)
def test_choose_form(accept: str | None, form: str) -> None:
    assert document.choose_form(accept) == form


def test_unpublished_package_has_nothing_to_show() -> None:
    raw = orjson.dumps(
        {
            "_id": "gone",
            "name": "gone",
            "time": {"created": ts(OLD), "modified": ts(OLD), "unpublished": {"time": ts(OLD)}},
        }
    )
    packument = document.parse_packument(raw, PackageName("gone"))
    view = document.filter_packument(packument, rules(), NOW)
    assert view.visible == ()
    assert document.no_visible_version_message(packument.package, view) == (
        "gone has no published versions"
    )


# what the mutation run found unpinned ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[1, 2]", "the upstream packument of x is not an object"),
        (b"{", "the upstream packument of x is not JSON: "),
        (b'{"a": "\xff"}', "the upstream packument of x is not UTF-8"),
        (b'{"versions": []}', "the upstream packument of x has a versions that is not an object"),
        (b'{"versions": 1234}', "the upstream packument of x has a versions that is not an "),
        (b'{"versions": "ab"}', "the upstream packument of x has a versions that is not an "),
        (b'{"dist-tags": "x"}', "the upstream packument of x has a dist-tags that is not an "),
        (b'{"time": 5}', "the upstream packument of x has a time that is not an object"),
    ],
    ids=[
        "array",
        "not-json",
        "not-utf8",
        "versions-list",
        "four-digits",
        "four-bytes",
        "tags",
        "time",
    ],
)
def test_a_refused_packument_says_which_package_and_which_field(raw: bytes, message: str) -> None:
    with pytest.raises(BadUpstreamDocument) as caught:
        document.parse_packument(raw, PackageName("x"))
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("field", ["versions", "dist-tags", "time"])
def test_a_null_field_is_an_empty_one(field: str) -> None:
    doc = make_doc("nully", {"1.0.0": OLD}, {"latest": "1.0.0"})
    doc[field] = None
    packument = parse(doc)
    view = document.filter_packument(packument, rules(unknown="allow"), NOW)
    expected = () if field == "versions" else ("1.0.0",)
    assert view.visible == expected


def test_packument_parser_parses_the_package_it_names() -> None:
    raw = orjson.dumps(LEFT_PAD)
    parsed = document.PackumentParser(PackageName("left-pad"))(raw)
    assert parsed.package == PackageName("left-pad")
    assert list(parsed.versions) == list(parse(LEFT_PAD).versions)


def test_a_manifest_is_decoded_on_demand() -> None:
    packument = parse(LEFT_PAD)
    assert packument.manifest("1.3.1") == LEFT_PAD["versions"]["1.3.1"]


def test_a_parsed_packument_is_charged_at_least_what_it_holds() -> None:
    # The metadata cache's budget counts this estimate: too low and the cache outgrows it.
    for count in (0, 1, 2000):
        published: dict[str, datetime | None] = {
            f"1.{minor}.0": OLD + timedelta(hours=minor) for minor in range(count)
        }
        raw = orjson.dumps(make_doc("sized", published, {}))
        document.parse_packument(raw, PackageName("sized"))  # version caches warmed first
        gc.collect()
        tracemalloc.start()
        try:
            packument = document.parse_packument(raw, PackageName("sized"))
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        charged = packument.memory_bytes()
        assert held <= charged <= 5 * held + 16 * 1024, (count, held, charged)


def test_an_sri_option_is_not_part_of_the_digest() -> None:
    data = b"tarball bytes"
    entry = _sri("sha512", hashlib.sha512(data).digest())
    for suffix in ("?opt-with-dash", "?one?two"):
        digests = document.tarball_digests({"dist": {"integrity": entry + suffix}})
        assert [digest.hexdigest for digest in digests] == [hashlib.sha512(data).hexdigest()]


def test_an_integrity_value_with_a_stray_character_is_not_trusted() -> None:
    # Lenient base64 would drop the `!` and decode the rest: a malformed entry is skipped.
    good = base64.b64encode(hashlib.sha512(b"tarball bytes").digest()).decode()
    manifest = {"dist": {"integrity": f"sha512-{good[:10]}!{good[10:]}"}}
    assert document.tarball_digests(manifest) == ()


def test_every_tag_is_recomputed_whatever_comes_before_it() -> None:
    # A kept tag and a tag naming a missing version come first: later tags are still moved.
    doc = make_doc(
        "tagged",
        {"1.0.0": OLD, "1.1.0": OLD, "2.0.0": NOW - timedelta(hours=1)},
        {"legacy": "1.0.0", "gone": "9.9.9", "latest": "2.0.0"},
    )
    view = document.filter_packument(parse(doc), rules(), NOW)
    assert view.dist_tags == {"legacy": "1.0.0", "latest": "1.1.0"}
    assert orjson.loads(document.render_dist_tags(view)) == {"legacy": "1.0.0", "latest": "1.1.0"}


@pytest.mark.parametrize("dist", [None, "not an object"], ids=["no-dist", "string-dist"])
@pytest.mark.parametrize("form", ["full", "corgi"])
def test_a_manifest_without_a_dist_object_goes_out_as_it_came(
    dist: str | None, form: document.Form
) -> None:
    doc = make_doc("distless", {"1.0.0": OLD}, {"latest": "1.0.0"})
    if dist is None:
        del doc["versions"]["1.0.0"]["dist"]
    else:
        doc["versions"]["1.0.0"]["dist"] = dist
    packument = parse(doc)
    _, body = render(packument, form)
    assert body["versions"]["1.0.0"].get("dist") == dist
    manifest = orjson.loads(document.render_manifest(packument, "1.0.0", BASE))
    assert manifest.get("dist") == dist


def test_a_version_manifest_points_its_tarball_at_the_mirror() -> None:
    packument = parse(LEFT_PAD)
    manifest = orjson.loads(document.render_manifest(packument, "1.3.1", BASE))
    expected = dict(LEFT_PAD["versions"]["1.3.1"])
    expected["dist"] = {**expected["dist"], "tarball": f"{BASE}/left-pad/-/left-pad-1.3.1.tgz"}
    assert manifest == expected


def _describing_doc(published: dict[str, datetime | None]) -> dict[str, Any]:
    """`said`: `latest` is 1.0.0; the upstream's top level describes something else than any
    manifest, so the test sees where the package-level text came from."""
    doc = make_doc("said", published, {"latest": "1.0.0"})
    for version, manifest in doc["versions"].items():
        manifest["readme"] = f"# manifest {version}"
    doc["readme"] = "# top level"
    return doc


@pytest.mark.parametrize(
    ("published", "held", "readme"),
    [
        # latest is newer than everything held: the upstream's top level can only describe it
        ({"1.0.0": OLD + timedelta(days=1), "0.9.0": OLD}, "0.9.0", "# top level"),
        # held published with latest, after it, or at an unknown time: it may be described
        ({"1.0.0": OLD, "0.9.0": OLD}, "0.9.0", "# manifest 1.0.0"),
        ({"1.0.0": OLD, "2.0.0": OLD + timedelta(days=1)}, "2.0.0", "# manifest 1.0.0"),
        ({"1.0.0": OLD, "2.0.0": None}, "2.0.0", "# manifest 1.0.0"),
        # latest's own time is unknown (allowed): nothing to compare, so its manifest
        ({"1.0.0": None, "0.9.0": OLD}, "0.9.0", "# manifest 1.0.0"),
    ],
    ids=["latest-newest", "same-moment", "held-newer", "held-untimed", "latest-untimed"],
)
def test_package_text_comes_from_the_top_level_only_when_it_cannot_describe_a_held_version(
    published: dict[str, datetime | None], held: str, readme: str
) -> None:
    doc = _describing_doc(published)
    view, body = render(parse(doc), "full", rules(block("said", held), unknown="allow"))
    assert [decision.version for decision in view.blocked] == [held]
    assert body["readme"] == readme


def test_package_text_of_a_view_with_only_prereleases_visible() -> None:
    doc = make_doc(
        "pre", {"1.0.0-rc.1": OLD, "1.0.0": NOW - timedelta(hours=5)}, {"latest": "1.0.0"}
    )
    doc["versions"]["1.0.0-rc.1"]["readme"] = "# rc"
    doc["versions"]["1.0.0"]["readme"] = "# final"
    view, body = render(parse(doc), "full")
    assert "latest" not in view.dist_tags
    assert body["readme"] == "# rc"


def test_an_unreadable_publish_time_is_left_out_of_created_and_modified() -> None:
    doc = make_doc("stamp", {"1.0.0": OLD, "1.1.0": OLD + timedelta(days=1), "2.0.0": OLD}, {})
    doc["time"]["1.1.0"] = "not a time"
    packument = parse(doc)
    view, body = render(packument, "full", rules(block("stamp", "2.0.0"), unknown="allow"))
    assert view.visible == ("1.0.0", "1.1.0")
    assert body["time"] == {
        "created": doc["time"]["1.0.0"],
        "modified": doc["time"]["1.0.0"],
        "1.0.0": doc["time"]["1.0.0"],
        "1.1.0": "not a time",
    }


def test_nothing_held_corgi_keeps_the_upstream_name_and_modified() -> None:
    # The top-level `modified` is the upstream's when `time` has none.
    doc = make_doc("calm", {"1.0.0": OLD}, {"latest": "1.0.0"})
    doc["name"] = "Calm-Upstream"
    del doc["time"]["modified"]
    doc["modified"] = "2025-01-01T00:00:00.000Z"
    packument = document.parse_packument(orjson.dumps(doc), PackageName("calm"))
    view, corgi = render(packument, "corgi")
    assert not document.holds_back(view)
    assert corgi["name"] == "Calm-Upstream"
    assert corgi["modified"] == "2025-01-01T00:00:00.000Z"
    assert corgi["dist-tags"] == {"latest": "1.0.0"}
    # With a version held, the name is the one asked for.
    _, held = render(packument, "corgi", rules(block("calm", "1.0.0")))
    assert held["name"] == "calm"
    assert held["dist-tags"] == {}


def test_nothing_held_corgi_without_an_upstream_name_names_the_package() -> None:
    doc = make_doc("calm", {"1.0.0": OLD}, {"latest": "1.0.0"})
    del doc["name"]
    packument = document.parse_packument(orjson.dumps(doc), PackageName("calm"))
    _, corgi = render(packument, "corgi")
    assert corgi["name"] == "calm"


def test_nothing_held_full_form_still_filters_tags_time_and_attachments() -> None:
    doc = make_doc("calm", {"1.0.0": OLD}, {"latest": "1.0.0", "gone": "9.9.9"})
    doc["time"]["0.0.1"] = ts(OLD)  # a version the document no longer lists
    doc["_attachments"] = {"calm-1.0.0.tgz": {"data": "AAAA"}}
    view, body = render(parse(doc), "full")
    assert not document.holds_back(view)
    assert body["dist-tags"] == {"latest": "1.0.0"}
    assert set(body["time"]) == {"created", "modified", "1.0.0"}
    assert "_attachments" not in body
    assert body["readme"] == "# readme"


def test_a_full_packument_always_has_dist_tags_and_versions() -> None:
    packument = document.parse_packument(b'{"name": "bare"}', PackageName("bare"))
    _, body = render(packument, "full")
    assert body == {"name": "bare", "dist-tags": {}, "versions": {}}


@pytest.mark.parametrize(
    ("blocked", "shown"),
    [
        (
            ["1.0.0", "1.1.0", "1.2.0"],
            "3 versions blocked by block b1: compromised release (1.0.0, 1.1.0, 1.2.0)",
        ),
        (
            ["1.0.0", "1.1.0", "1.2.0", "1.3.0"],
            "4 versions blocked by block b1: compromised release (1.1.0, 1.2.0, 1.3.0 and 1 more)",
        ),
    ],
)
def test_the_notice_names_the_three_newest_blocked_versions(blocked: list[str], shown: str) -> None:
    doc = make_doc("many", dict.fromkeys([*blocked, "0.1.0"], OLD), {})
    records = [block("many", version) for version in blocked]
    view = document.filter_packument(parse(doc), rules(*records), NOW)
    assert document.render_notice(PackageName("many"), view) == f"many: {shown}"


def test_the_notice_is_ascii_whatever_the_upstream_calls_a_version() -> None:
    doc = make_doc("accents", {"1.0.0-b\u00e9ta": OLD, "0.1.0": OLD}, {})
    view = document.filter_packument(parse(doc), rules(block("accents", "*")), NOW)
    notice = document.render_notice(PackageName("accents"), view)
    assert (
        notice == "accents: 2 versions blocked by block b1: compromised release (0.1.0, 1.0.0-b?ta)"
    )


@pytest.mark.parametrize(
    ("tarball", "upstream_file"),
    [
        ("http://u.test/x/-/Odd-Name-1.0.0.tgz", "Odd-Name-1.0.0.tgz"),
        ("Bare-1.0.0.tgz", "Bare-1.0.0.tgz"),  # a file name without a path
        ("http://u.test/x/-/x-1.0.0.tar.gz", None),  # not a .tgz: not a name clients ask for
        (None, None),
    ],
)
def test_a_tarball_is_found_by_its_canonical_and_its_upstream_file_name(
    tarball: str | None, upstream_file: str | None
) -> None:
    doc = make_doc("x", {"1.0.0": OLD, "2.0.0": OLD}, {})
    doc["versions"]["1.0.0"]["dist"]["tarball"] = tarball
    packument = parse(doc)
    assert packument.version_of_file("x-1.0.0.tgz") == "1.0.0"
    assert packument.version_of_file("x-2.0.0.tgz") == "2.0.0"
    if upstream_file is not None:
        assert packument.version_of_file(upstream_file) == "1.0.0"
    assert packument.version_of_file("x-1.0.0.tar.gz") is None
    assert packument.version_of_file("None") is None


@pytest.mark.parametrize(
    "raw",
    [b'\x80{"a": 1}', b'{"a": "x"}\xc3'],
    ids=["first-byte", "truncated-at-the-end"],
)
def test_invalid_utf8_at_either_end_is_named_as_such(raw: bytes) -> None:
    with pytest.raises(BadUpstreamDocument, match="is not UTF-8"):
        document.parse_packument(raw, PackageName("x"))


def test_utf8_split_across_the_check_chunks_is_accepted() -> None:
    # The check reads a megabyte at a time: a character across a chunk edge is still UTF-8.
    pad = "a" * (1024 * 1024 - len('{"readme": "') - 1)
    raw = ('{"readme": "' + pad + "\u00e9\u00e9" + '"}').encode()
    packument = document.parse_packument(raw, PackageName("x"))
    assert packument.versions == {}
