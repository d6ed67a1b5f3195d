"""The OpenAPI 3.1 document of the admin API under `/api/v1/`, as data, pure (no aiohttp, no
I/O): served at `/api/v1/openapi.json` so incident tooling can generate clients. A test holds
it to the registered routes (every route documented, nothing else) and every real answer to
its schemas, so it cannot drift from what the handlers return."""

from __future__ import annotations

from typing import Any, Final

from mirror import __version__
from mirror.admin.parse import (
    COLLECTIONS,
    DRY_RUN_WORDS,
    MAX_BODY_BYTES,
    MAX_QUERY_LENGTH,
    MAX_REASON_LENGTH,
    PREFIX,
)
from mirror.lockfiles.warming import MAX_KEPT_WARM_JOBS, MAX_WARM_PINS, MAX_WARM_WAIT, OUTCOMES
from mirror.model import ECOSYSTEMS, TAKEDOWN_KINDS, RuleKind

OPENAPI_VERSION: Final = "3.1.0"
SECURITY_SCHEME: Final = "adminToken"

_ALWAYS_PROTECTED: Final = "Always needs an admin token (`Authorization: Bearer <token>`)."
_READ_PROTECTION: Final = (
    "Open without a token unless the mirror sets `admin.protect_reads`; then it needs an "
    "admin token (`Authorization: Bearer <token>`)."
)
_IMPACT_PROTECTION: Final = (
    "Needs an admin token (`Authorization: Bearer <token>`): impact reports name client "
    "addresses. Open without one when the mirror sets `admin.open_impact` (and not "
    "`admin.protect_reads`)."
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema_type: str, **extra: Any) -> dict[str, Any]:
    return {"type": [schema_type, "null"], **extra}


_TIME: Final = {"type": "string", "format": "date-time"}
_TIME_OR_NULL: Final = _nullable("string", format="date-time")
_TEXT_LIST: Final = {"type": "array", "items": {"type": "string"}}


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """An answer's object with exactly the documented properties: a field a handler adds
    fails the test that checks real answers against this document until it is documented."""
    return {**schema, "additionalProperties": False}


def _schemas() -> dict[str, Any]:
    rule_kinds: list[RuleKind] = list(COLLECTIONS)
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "description": "Every error answer: `error` says what went wrong (and what to do), "
            "`reason` is a stable code; bad input names its `field`.",
            "required": ["error", "reason"],
            "properties": {
                "error": {"type": "string"},
                "reason": {"type": "string"},
                "until": _TIME_OR_NULL,
                "block": _nullable("object"),
                "field": {"type": "string", "description": "the input a 400 refuses"},
            },
        },
        "Coverage": {
            "type": "object",
            "description": "Which versions the upstream lists that a block or exemption "
            "covers now; `versions` lists the first 200. null counts: not known.",
            "required": ["versions", "count", "listed"],
            "properties": {
                "versions": _nullable("array", items={"type": "string"}),
                "count": _nullable("integer"),
                "listed": _nullable("integer"),
                "note": {"type": "string"},
                "warning": {"type": "string"},
            },
        },
        "Rule": {
            "type": "object",
            "description": "A stored block, exemption or freeze. `expired`: it no longer "
            "applies. A freeze has `published_after`; listings, show and create add `covers` "
            "(blocks and exemptions).",
            "required": [
                "id",
                "kind",
                "ecosystem",
                "package",
                "versions",
                "reason",
                "created_at",
                "created_by",
                "expires_at",
                "expired",
            ],
            "properties": {
                "id": {"type": "string"},
                "kind": {"type": "string", "enum": rule_kinds},
                "ecosystem": {"type": "string", "enum": list(ECOSYSTEMS)},
                "package": {"type": "string"},
                "versions": {"type": "string"},
                "reason": {"type": "string"},
                "created_at": _TIME,
                "created_by": {"type": "string", "description": "the admin token's name"},
                "expires_at": _TIME_OR_NULL,
                "expired": {"type": "boolean"},
                "published_after": _TIME,
                "covers": _ref("Coverage"),
            },
        },
        "RuleRequest": {
            "type": "object",
            "description": "A new block or exemption. An exemption of one exact version may "
            "leave out `expires`: it then expires when the version would have left "
            "quarantine.",
            "required": ["ecosystem", "package", "versions", "reason"],
            "additionalProperties": False,
            "properties": {
                "ecosystem": {"type": "string", "enum": list(ECOSYSTEMS)},
                "package": {
                    "type": "string",
                    "maxLength": MAX_QUERY_LENGTH,
                    "description": "a name or a glob such as `@scope/*`",
                },
                "versions": {
                    "type": "string",
                    "maxLength": MAX_QUERY_LENGTH,
                    "description": "a version or a range in the ecosystem's own syntax, "
                    "or `===V`: exactly the version spelled V (not Maven 1.0.0 for 1.0)",
                },
                "reason": {
                    "type": "string",
                    "maxLength": MAX_REASON_LENGTH,
                    "description": "why, for the audit log (not empty)",
                },
                "expires": {
                    "type": "string",
                    "description": "ISO 8601, a date (midnight UTC) or a duration from now (`7d`)",
                },
            },
        },
        "FreezeRequest": {
            "type": "object",
            "description": "A new freeze: everything published after `published_after` is "
            "held until `until`.",
            "required": ["ecosystem", "published_after", "until", "reason"],
            "additionalProperties": False,
            "properties": {
                "ecosystem": {"type": "string", "enum": list(ECOSYSTEMS)},
                "package": {
                    "type": "string",
                    "maxLength": MAX_QUERY_LENGTH,
                    "description": "a name or glob; `*` (every package) when left out",
                },
                "published_after": {
                    "type": "string",
                    "description": "ISO 8601, a date or a duration back from now (`2d`)",
                },
                "until": {
                    "type": "string",
                    "description": "ISO 8601, a date or a duration from now (`7d`)",
                },
                "reason": {
                    "type": "string",
                    "maxLength": MAX_REASON_LENGTH,
                    "description": "why, for the audit log (not empty)",
                },
            },
        },
        "ImpactPage": {
            "type": "object",
            "description": "One page of the downloads of the matching versions: one row per "
            "client address, read token and file. `clients` are those on this page; "
            "`identities` totals who pulled per read token and CI system, most downloads "
            "first: on the first page of an exact package every matching row of it "
            "(`identities_cover` = package), on its later pages and for a glob the rows this "
            "page shows (`page`); "
            "`packages` lists the names the query covers (the first 1000; "
            "`packages_total` counts them all). `next` is the path of the following page, "
            "null on the last.",
            "required": [
                "ecosystem",
                "package",
                "versions",
                "since",
                "limit",
                "packages",
                "packages_total",
                "clients",
                "downloads",
                "identities",
                "identities_cover",
                "next_cursor",
                "next",
            ],
            "properties": {
                "ecosystem": {"type": "string", "enum": list(ECOSYSTEMS)},
                "package": {"type": "string"},
                "versions": {"type": "string"},
                "since": _TIME_OR_NULL,
                "limit": {"type": "integer"},
                "packages": _TEXT_LIST,
                "packages_total": {"type": "integer"},
                "clients": _TEXT_LIST,
                "downloads": {"type": "array", "items": _ref("Download")},
                "identities": {"type": "array", "items": _ref("DownloadIdentity")},
                "identities_cover": {"type": "string", "enum": ["package", "page"]},
                "next_cursor": _nullable("string"),
                "next": _nullable("string"),
            },
        },
        "Download": {
            "type": "object",
            "description": "Downloads of one file by one client address with one read token "
            "(`token`: its name, empty = none). `user_agent`, `ci` (the CI system the client "
            "named, `ci` when it only said it runs in CI, empty = not CI), `command` and "
            "`session` (npm's) are what the client said in its latest download.",
            "required": [
                "client",
                "token",
                "package",
                "version",
                "filename",
                "first_seen",
                "last_seen",
                "count",
                "user_agent",
                "ci",
                "command",
                "session",
            ],
            "properties": {
                "client": {"type": "string"},
                "token": {"type": "string"},
                "package": {"type": "string"},
                "version": {"type": "string"},
                "filename": {"type": "string"},
                "first_seen": _TIME,
                "last_seen": _TIME,
                "count": {"type": "integer"},
                "user_agent": {"type": "string"},
                "ci": {"type": "string"},
                "command": {"type": "string"},
                "session": {"type": "string"},
            },
        },
        "DownloadIdentity": {
            "type": "object",
            "description": "Who pulled, by what they presented: one read token (empty = none) "
            "and one CI system (empty = not CI). `clients`: distinct client addresses (summed "
            "per package over several packages), `downloads`: downloads counted.",
            "required": ["token", "ci", "clients", "downloads", "first_seen", "last_seen"],
            "properties": {
                "token": {"type": "string"},
                "ci": {"type": "string"},
                "clients": {"type": "integer"},
                "downloads": {"type": "integer"},
                "first_seen": _TIME,
                "last_seen": _TIME,
            },
        },
        "ImpactUnavailable": {
            "type": "object",
            "description": "In place of an impact page when the download ledger cannot be "
            "read (the block is stored and applied all the same).",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Explanation": {
            "type": "object",
            "description": "Why a version is visible or not. `rule`: the deciding rule (with "
            "`covers` when it is a stored block or exemption); `files`: PyPI's verdict file "
            "by file (each with its own `signals`); `signals`: the risk signals the version "
            "(or, with `file=`, the file) shows, the strongest first, each with what its rule "
            "does; `risk`: the one of them whose rule holds it (null when none does).",
            "required": [
                "ecosystem",
                "package",
                "version",
                "verdict",
                "detail",
                "published_at",
                "until",
                "rule",
                "files",
                "signals",
                "risk",
            ],
            "properties": {
                "ecosystem": {"type": "string", "enum": list(ECOSYSTEMS)},
                "package": {"type": "string"},
                "version": {"type": "string"},
                "verdict": {
                    "type": "string",
                    "description": "allowed, quarantined, blocked, exempted, …",
                },
                "detail": {"type": "string"},
                "published_at": _TIME_OR_NULL,
                "until": _TIME_OR_NULL,
                "rule": _nullable("object"),
                "files": {"type": "array", "items": {"type": "object"}},
                "signals": {"type": "array", "items": _ref("RiskSignal")},
                "risk": {"anyOf": [_ref("RiskSignal"), {"type": "null"}]},
            },
        },
        "RiskSignal": {
            "type": "object",
            "description": "A risk signal of a version and what its rule does: `note` "
            "(reported only), `extend` (held until its publish time plus `age`), `hold` (held "
            "until an admin exempts it); `rule`: `default` (built in) or `settings`.",
            "required": ["signal", "detail", "action", "age", "rule"],
            "properties": {
                "signal": {"type": "string", "description": "e.g. install-script-added"},
                "detail": {"type": "string", "description": "what changed, against which release"},
                "action": {"type": "string", "enum": ["note", "extend", "hold"]},
                "age": {**_nullable("string"), "description": "of `extend`, e.g. 14d"},
                "rule": {"type": "string", "enum": ["default", "settings"]},
            },
        },
        "AuditEntry": {
            "type": "object",
            "required": ["at", "actor", "client", "action", "target", "before", "after"],
            "properties": {
                "at": _TIME,
                "actor": {"type": "string", "description": "the admin token's name"},
                "client": {"type": "string"},
                "action": {"type": "string", "description": "e.g. `block.create`"},
                "target": {"type": "string", "description": "the rule id"},
                "before": _nullable("object"),
                "after": _nullable("object"),
            },
        },
        "TakedownImpactRow": {
            "type": "object",
            "description": "One client that had downloaded what was taken down: its address, "
            "read token (empty = none), CI system (empty = not CI), downloads, first and last.",
            "required": ["client", "token", "ci", "count", "first_at", "last_at"],
            "properties": {
                "client": {"type": "string"},
                "token": {"type": "string"},
                "ci": {"type": "string"},
                "count": {"type": "integer"},
                "first_at": _TIME,
                "last_at": _TIME,
            },
        },
        "TakedownEvent": {
            "type": "object",
            "description": "The upstream stopped offering a version (on PyPI: one file, "
            "`filename`) the mirror had listed: `removed` or `yanked` (`reason`: the yank's). "
            "`impact`: who had downloaded it (a bounded number; `clients` and `downloads` "
            "count them all).",
            "required": [
                "id",
                "ecosystem",
                "package",
                "version",
                "filename",
                "kind",
                "reason",
                "detected_at",
                "clients",
                "downloads",
                "impact",
            ],
            "properties": {
                "id": {"type": "string"},
                "ecosystem": {"type": "string", "enum": list(ECOSYSTEMS)},
                "package": {"type": "string"},
                "version": {"type": "string"},
                "filename": {"type": "string"},
                "kind": {"type": "string", "enum": list(TAKEDOWN_KINDS)},
                "reason": {"type": "string"},
                "detected_at": _TIME,
                "clients": {"type": "integer"},
                "downloads": {"type": "integer"},
                "impact": {"type": "array", "items": _ref("TakedownImpactRow")},
            },
        },
        "EventsPage": {
            "type": "object",
            "description": "Takedown events, newest first. `next`: pass it as `after` for "
            "the next page (null on the last).",
            "required": ["events", "next"],
            "properties": {
                "events": {"type": "array", "items": _ref("TakedownEvent")},
                "next": _nullable("string"),
            },
        },
        "AuditPage": {
            "type": "object",
            "description": "Changes, newest first. `pruned_before`: entries older than this "
            "may have been pruned (`admin.audit_retention`).",
            "required": ["entries", "pruned_before", "next_cursor", "next"],
            "properties": {
                "entries": {"type": "array", "items": _ref("AuditEntry")},
                "pruned_before": _TIME_OR_NULL,
                "next_cursor": _nullable("string"),
                "next": _nullable("string"),
            },
        },
        "PreflightReport": {
            "type": "object",
            "description": "The report `mirror preflight --json` prints; CI fails when "
            "`refused` is not empty.",
            "required": ["checked", "refused", "unpinned", "skipped", "files"],
            "properties": {
                "checked": {"type": "integer"},
                "refused": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": [
                            "ecosystem",
                            "package",
                            "version",
                            "verdict",
                            "until",
                            "detail",
                            "in",
                        ],
                        "properties": {
                            "ecosystem": {"type": "string"},
                            "package": {"type": "string"},
                            "version": {"type": "string"},
                            "verdict": _nullable("string"),
                            "until": _TIME_OR_NULL,
                            "detail": _nullable("string"),
                            "in": {
                                "description": "the files that pin it",
                                **_TEXT_LIST,
                            },
                        },
                    },
                },
                "unpinned": _TEXT_LIST,
                "skipped": _TEXT_LIST,
                "files": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["file", "format", "pins"],
                        "properties": {
                            "file": {"type": "string"},
                            "format": {"type": "string"},
                            "pins": {"type": "integer"},
                        },
                    },
                },
            },
        },
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths", "components"],
            "properties": {
                "openapi": {"type": "string"},
                "info": {"type": "object"},
                "paths": {"type": "object"},
                "components": {"type": "object"},
            },
        },
    }
    for name in _ANSWERS:
        schemas[name] = _closed(schemas[name])
    report = schemas["PreflightReport"]["properties"]
    for listing in ("refused", "files"):
        report[listing]["items"] = _closed(report[listing]["items"])
    # A dry run's rule is the Rule a create would store, without the id it would get.
    rule = schemas["Rule"]
    schemas["RulePreview"] = {
        **rule,
        "description": "A rule as a create would store it (a dry run): no id.",
        "required": [field for field in rule["required"] if field != "id"],
        "properties": {key: value for key, value in rule["properties"].items() if key != "id"},
    }
    for request in ("RuleRequest", "FreezeRequest"):
        schemas[request]["properties"]["dry_run"] = _DRY_RUN_FIELD
    schemas.update(_warm_schemas())
    return schemas


# The answers' objects; Error stays open (an error may carry data of its own).
_ANSWERS: Final = (
    "Coverage",
    "Rule",
    "ImpactPage",
    "Download",
    "DownloadIdentity",
    "ImpactUnavailable",
    "Explanation",
    "RiskSignal",
    "AuditEntry",
    "TakedownImpactRow",
    "TakedownEvent",
    "EventsPage",
    "AuditPage",
    "PreflightReport",
)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: str) -> dict[str, Any]:
    """The error answers an operation documents by status, and `default` for the rest (a
    503 when the state cannot be read, …): all with the Error body."""
    meanings = {
        "400": "bad input: `field` names it",
        "401": "no admin token was sent (`WWW-Authenticate: Bearer`)",
        "403": "the token is not valid, or the admin API is disabled (no tokens configured)",
        "404": "no such rule",
        "413": "the body is too large",
    }
    answers = {status: _json(_ref("Error"), meanings[status]) for status in statuses}
    answers["default"] = _json(_ref("Error"), "any other error")
    return answers


def _query(name: str, description: str, *, required: bool = False, **schema: Any) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string", **schema},
    }


_ECOSYSTEM_QUERY: Final[dict[str, Any]] = {"enum": list(ECOSYSTEMS)}
_DRY_RUN_FIELD: Final[dict[str, Any]] = {
    "type": "boolean",
    "description": "true: a dry run (shadow mode): validated and answered as a create, "
    "nothing stored, audited or applied; the answer is 200 with `dry_run: true`",
}
_AUTH_ERRORS: Final = ("401", "403")
# The `{id}` of a rule or a warm job.
_ID_PARAMETER: Final[dict[str, Any]] = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": MAX_QUERY_LENGTH},
}
# A lockfile, dependency list or SBOM as the body (preflight, warm).
_LOCKFILE_BODY: Final[dict[str, Any]] = {
    "required": True,
    "content": {
        "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "text/plain"}}
    },
}


def _security(*, always: bool) -> list[dict[str, list[str]]]:
    # `{}` first: the operation may be called without a token (when the settings say so).
    return [{SECURITY_SCHEME: []}] if always else [{}, {SECURITY_SCHEME: []}]


def _rule_paths(kind: RuleKind, collection: str) -> dict[str, Any]:
    request = "FreezeRequest" if kind == "freeze" else "RuleRequest"
    created: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": [kind],
        "properties": {kind: _ref("Rule"), "warning": {"type": "string"}},
    }
    create_note = ""
    if kind == "block":
        created["required"] = [kind, "impact"]
        created["properties"]["impact"] = {"anyOf": [_ref("ImpactPage"), _ref("ImpactUnavailable")]}
        create_note = " The answer holds the first impact page of the blocked versions."
    previewed: dict[str, Any] = {
        **created,
        "required": ["dry_run", *created["required"]],
        "properties": {
            **created["properties"],
            "dry_run": {"type": "boolean", "enum": [True]},
            kind: _ref("RulePreview"),
        },
    }
    tag = collection
    listed = {
        "type": "object",
        "additionalProperties": False,
        "required": [collection],
        "properties": {
            collection: {"type": "array", "items": _ref("Rule")},
            "last_known": {
                "type": "object",
                "description": "present when the state was emptied or replaced: the "
                "rules this worker still enforces",
                "required": ["reason", "restore"],
                "additionalProperties": False,
                "properties": {"reason": {"type": "string"}, "restore": {"type": "string"}},
            },
        },
    }
    rule_id = _ID_PARAMETER
    return {
        f"{PREFIX}/{collection}": {
            "post": {
                "operationId": f"create_{kind}",
                "tags": [tag],
                "summary": f"Create a {kind}",
                "description": f"Stores and applies the {kind} at once.{create_note} "
                f"{_ALWAYS_PROTECTED} The body is at most {MAX_BODY_BYTES} bytes.",
                "security": _security(always=True),
                "parameters": [
                    _query(
                        "dry_run",
                        "`true` (or `1`, `yes`): a dry run, as the body's `dry_run`",
                        enum=list(DRY_RUN_WORDS),
                    )
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(request)}},
                },
                "responses": {
                    "200": _json(previewed, f"a dry run: the {kind} a create would store"),
                    "201": _json(created, f"the {kind} as stored"),
                    **_errors("400", *_AUTH_ERRORS, "413"),
                },
            },
            "get": {
                "operationId": f"list_{collection}",
                "tags": [tag],
                "summary": f"List the {collection}",
                "description": f"Every stored {kind}, expired ones included. {_READ_PROTECTION}",
                "security": _security(always=False),
                "parameters": [_query("ecosystem", "only this ecosystem's", **_ECOSYSTEM_QUERY)],
                "responses": {
                    "200": _json(listed, f"the {collection}"),
                    **_errors("400", *_AUTH_ERRORS),
                },
            },
        },
        f"{PREFIX}/{collection}/{{id}}": {
            "parameters": [rule_id],
            "get": {
                "operationId": f"show_{kind}",
                "tags": [tag],
                "summary": f"Show one {kind}",
                "description": _READ_PROTECTION,
                "security": _security(always=False),
                "responses": {
                    "200": _json(
                        _closed(
                            {
                                "type": "object",
                                "required": [kind],
                                "properties": {kind: _ref("Rule")},
                            }
                        ),
                        f"the {kind}",
                    ),
                    **_errors("400", *_AUTH_ERRORS, "404"),
                },
            },
            "delete": {
                "operationId": f"delete_{kind}",
                "tags": [tag],
                "summary": f"Remove a {kind}",
                "description": f"Removes and stops applying it. {_ALWAYS_PROTECTED}",
                "security": _security(always=True),
                "responses": {
                    "200": _json(
                        _closed(
                            {
                                "type": "object",
                                "required": ["deleted"],
                                "properties": {"deleted": _ref("Rule")},
                            }
                        ),
                        f"the {kind} as it was",
                    ),
                    **_errors("400", *_AUTH_ERRORS, "404"),
                },
            },
        },
    }


def _query_paths(
    *,
    max_impact_limit: int,
    max_audit_limit: int,
    max_events_limit: int,
    max_preflight_pins: int,
) -> dict[str, Any]:
    time_text = "ISO 8601, a date (midnight UTC) or a duration back from now (`7d`)"
    cursor = _query("cursor", "`next_cursor` of the previous page, unchanged")
    return {
        f"{PREFIX}/explain": {
            "get": {
                "operationId": "explain",
                "tags": ["queries"],
                "summary": "Why a version is visible or not",
                "description": _READ_PROTECTION,
                "security": _security(always=False),
                "parameters": [
                    _query("ecosystem", "the ecosystem", required=True, **_ECOSYSTEM_QUERY),
                    _query("package", "the package name", required=True),
                    _query("version", "the version", required=True),
                    _query("file", "one file of the version (PyPI decides file by file)"),
                ],
                "responses": {
                    "200": _json(_ref("Explanation"), "the verdict and why"),
                    **_errors("400", *_AUTH_ERRORS, "404"),
                },
            }
        },
        f"{PREFIX}/impact": {
            "get": {
                "operationId": "impact",
                "tags": ["queries"],
                "summary": "Who downloaded the matching versions",
                "description": f"One page of the download ledger. {_IMPACT_PROTECTION}",
                "security": _security(always=False),
                "parameters": [
                    _query("ecosystem", "the ecosystem", required=True, **_ECOSYSTEM_QUERY),
                    _query("package", "a name or a glob (`@scope/*`)", required=True),
                    _query("versions", "a version or range; every version when left out"),
                    _query("since", f"downloads since: {time_text}"),
                    _query("limit", f"rows per page, 1 to {max_impact_limit}", pattern="^[0-9]+$"),
                    cursor,
                ],
                "responses": {
                    "200": _json(_ref("ImpactPage"), "one page"),
                    **_errors("400", *_AUTH_ERRORS),
                },
            }
        },
        f"{PREFIX}/audit": {
            "get": {
                "operationId": "audit",
                "tags": ["queries"],
                "summary": "The audit log of admin changes",
                "description": f"Newest first. {_ALWAYS_PROTECTED}",
                "security": _security(always=True),
                "parameters": [
                    _query("target", "a rule id"),
                    _query("actor", "an admin token's name"),
                    _query("since", f"from (inclusive): {time_text}"),
                    _query("until", f"to (exclusive): {time_text}"),
                    _query(
                        "limit", f"entries per page, 1 to {max_audit_limit}", pattern="^[0-9]+$"
                    ),
                    cursor,
                ],
                "responses": {
                    "200": _json(_ref("AuditPage"), "one page"),
                    **_errors("400", *_AUTH_ERRORS),
                },
            }
        },
        f"{PREFIX}/events": {
            "get": {
                "operationId": "events",
                "tags": ["queries"],
                "summary": "Takedown events: what the upstream removed or yanked, and who had it",
                "description": f"Newest first. {_IMPACT_PROTECTION}",
                "security": _security(always=False),
                "parameters": [
                    _query("ecosystem", "only this ecosystem's", **_ECOSYSTEM_QUERY),
                    _query("package", "only this package (needs `ecosystem`)"),
                    _query("since", f"detected since: {time_text}"),
                    _query(
                        "limit", f"events per page, 1 to {max_events_limit}", pattern="^[0-9]+$"
                    ),
                    _query("after", "`next` of the previous page, unchanged"),
                ],
                "responses": {
                    "200": _json(_ref("EventsPage"), "one page"),
                    **_errors("400", *_AUTH_ERRORS),
                },
            }
        },
        f"{PREFIX}/preflight": {
            "post": {
                "operationId": "preflight",
                "tags": ["queries"],
                "summary": "Check a lockfile, dependency list or SBOM",
                "description": "Every pin explained, as `mirror preflight --json` reports it. "
                "The format is detected by content unless `format` names it. The body is at "
                f"most 16 MiB (gzip or deflate accepted) and pins at most {max_preflight_pins} "
                f"versions. {_READ_PROTECTION}",
                "security": _security(always=False),
                "parameters": [
                    _query("format", "force this format (one `mirror preflight` reads)"),
                    _query("name", "the file name, shown in the report"),
                ],
                "requestBody": _LOCKFILE_BODY,
                "responses": {
                    "200": _json(_ref("PreflightReport"), "the report"),
                    **_errors("400", *_AUTH_ERRORS, "413"),
                },
            }
        },
        f"{PREFIX}/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["meta"],
                "summary": "This document",
                "description": "Never needs a token.",
                "security": [{}],
                "responses": {
                    "200": _json(_ref("OpenApiDocument"), "the OpenAPI 3.1 document"),
                    **_errors(),
                },
            }
        },
    }


# pre-warming (POST /api/v1/warm) ------------------------------------------------------------


def _warm_schemas() -> dict[str, Any]:
    """The closed answers of `POST /api/v1/warm` and `GET /api/v1/warm/{id}`."""
    pin = _closed(
        {
            "type": "object",
            "description": "One pinned version and what the warm did with it. `bytes`: the "
            "size of its files (fetched now, or already in the cache); `until`: when a held "
            "one leaves quarantine; `detail`: why (the block's reason, the failure).",
            "required": ["ecosystem", "package", "version", "verdict", "until", "detail"],
            "properties": {
                "ecosystem": {"type": "string"},
                "package": {"type": "string"},
                "version": {"type": "string"},
                "verdict": _nullable("string"),
                "until": _TIME_OR_NULL,
                "detail": _nullable("string"),
                "outcome": {"type": "string", "enum": list(OUTCOMES)},
                "files": {"type": "integer"},
                "bytes": {"type": "integer"},
            },
        }
    )
    listed = {"type": "array", "items": _ref("WarmPin")}
    counts = _closed(
        {
            "type": "object",
            "required": list(OUTCOMES),
            "properties": {outcome: {"type": "integer"} for outcome in OUTCOMES},
        }
    )
    summary = _closed(
        {
            "type": "object",
            "description": "Every pin under its outcome: `fetched` (at least one file came "
            "from upstream now), `cached` (all were in the cache), `held`, `blocked` (never "
            "fetched), `failed`; `bytes`: the size of the fetched versions' files.",
            "required": ["pins", "bytes", *OUTCOMES, "unpinned", "skipped"],
            "properties": {
                "pins": {"type": "integer"},
                "bytes": {"type": "integer"},
                **dict.fromkeys(OUTCOMES, listed),
                "unpinned": _TEXT_LIST,
                "skipped": _TEXT_LIST,
            },
        }
    )
    status = _closed(
        {
            "type": "object",
            "description": "A warm job. From the server that runs it: its progress (`done` "
            "of `pins`, `counts`) and, once finished, its `summary`. `interrupted`: the "
            "worker running it stopped. From another replica (`note` says so): what the audit "
            "log knows (state and, once finished, counts), no summary.",
            "required": [
                "id",
                "state",
                "started",
                "finished",
                "updated",
                "requested_by",
                "file",
                "format",
                "pins",
                "done",
                "counts",
                "bytes",
                "summary",
            ],
            "properties": {
                "id": {"type": "string"},
                "state": {"type": "string", "enum": ["running", "finished", "interrupted"]},
                "started": _TIME,
                "finished": _TIME_OR_NULL,
                "updated": _TIME,
                "requested_by": {"type": "string", "description": "the admin token's name"},
                "file": {"type": "string"},
                "format": {"type": "string"},
                "pins": {"type": "integer"},
                "done": _nullable("integer"),
                "counts": {"anyOf": [_ref("WarmCounts"), {"type": "null"}]},
                "bytes": _nullable("integer"),
                "summary": {"anyOf": [_ref("WarmSummary"), {"type": "null"}]},
                "note": {"type": "string"},
            },
        }
    )
    answer = _closed(
        {"type": "object", "required": ["warm"], "properties": {"warm": _ref("WarmJob")}}
    )
    return {
        "WarmPin": pin,
        "WarmCounts": counts,
        "WarmSummary": summary,
        "WarmJob": status,
        "WarmAnswer": answer,
    }


def _warm_paths() -> dict[str, Any]:
    return {
        f"{PREFIX}/warm": {
            "post": {
                "operationId": "warm",
                "tags": ["warm"],
                "summary": "Fetch every allowed version a lockfile pins into the cache",
                "description": "The body as for a preflight (a lockfile, dependency list or "
                f"SBOM; at most {MAX_WARM_PINS} pins). A job fetches the files of every pin "
                "the policy allows through the mirror's serving path (verified, single-flight); "
                "held and blocked pins are listed, never fetched. `wait` seconds: the answer "
                "waits that long for the job; 200 with the summary when it finished, else 202 "
                "with its progress and `Location: /api/v1/warm/{id}`. Each worker runs a few "
                "jobs at once (429 `busy` beyond). Audited (`warm.start`, `warm.finish`). "
                f"{_ALWAYS_PROTECTED}",
                "security": _security(always=True),
                "parameters": [
                    _query("format", "force this format (one `mirror preflight` reads)"),
                    _query("name", "the file name, shown in the status"),
                    _query(
                        "wait",
                        f"seconds to wait for the job, 0 to {MAX_WARM_WAIT} (default 0)",
                        pattern="^[0-9]+(\\.[0-9]+)?$",
                    ),
                ],
                "requestBody": _LOCKFILE_BODY,
                "responses": {
                    "200": _json(_ref("WarmAnswer"), "the job, finished: its summary"),
                    "202": _json(_ref("WarmAnswer"), "the job, running: its progress"),
                    **_errors("400", *_AUTH_ERRORS, "413"),
                },
            }
        },
        f"{PREFIX}/warm/{{id}}": {
            "get": {
                "operationId": "warmStatus",
                "tags": ["warm"],
                "summary": "A warm job's progress and summary",
                "description": "From any worker of the server that runs it; from another "
                "replica, what the audit log knows. Statuses are kept for a day (the newest "
                f"{MAX_KEPT_WARM_JOBS}). {_ALWAYS_PROTECTED}",
                "security": _security(always=True),
                "parameters": [_ID_PARAMETER],
                "responses": {
                    "200": _json(_ref("WarmAnswer"), "the job"),
                    **_errors(*_AUTH_ERRORS, "404"),
                },
            }
        },
    }


def openapi_document(
    *,
    max_impact_limit: int,
    max_audit_limit: int,
    max_events_limit: int,
    max_preflight_pins: int,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every `/api/v1/` route; the bounds the handlers enforce
    are passed in by the route module that owns them."""
    paths: dict[str, Any] = {}
    for kind, collection in COLLECTIONS.items():
        paths.update(_rule_paths(kind, collection))
    paths.update(
        _query_paths(
            max_impact_limit=max_impact_limit,
            max_audit_limit=max_audit_limit,
            max_events_limit=max_events_limit,
            max_preflight_pins=max_preflight_pins,
        )
    )
    paths.update(_warm_paths())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "quarantine-mirror admin API",
            "version": __version__,
            "description": "Blocks, exemptions and freezes; explain, impact, audit, takedown "
            "events and preflight. Writes and the audit log always need an admin token "
            "(bearer); reads are open unless `admin.protect_reads`; impact and takedown events "
            "need a token unless "
            "`admin.open_impact`. Every error answers the `Error` body.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An admin token (`admin.tokens`, `MIRROR_ADMIN_TOKENS`); "
                    "changes are attributed to its name.",
                }
            },
        },
    }
