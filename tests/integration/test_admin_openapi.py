"""`GET /api/v1/openapi.json` through the whole app (fake npm upstream on 127.0.0.1,
FixedClock, SQLite state): the document names exactly the routes the app registers under
`/api/v1/`, it is OpenAPI 3.1 in structure, and every answer a real request gets (one happy
request per operation, a 400, a 401) matches the schema it documents for that status."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from mirror.model import ImpactRow, TakedownEvent
from mirror.services import SERVICES
from mirror.takedowns import Takedown, event_of
from tests.fakes.npm import FakeNpmRegistry
from tests.integration.conftest import NOW, OLD, Client, MakeClient

TOKEN = "ops-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREFIX = "/api/v1"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture
async def registry(aiohttp_server: AiohttpServer) -> FakeNpmRegistry:
    registry = FakeNpmRegistry()
    registry.add_version("left-pad", "1.0.0", published=OLD)
    registry.add_version("left-pad", "1.4.0", published=NOW - timedelta(hours=5))
    await registry.start(aiohttp_server)
    return registry


@pytest.fixture
def make_mirror(make_mirror: MakeClient, registry: FakeNpmRegistry) -> MakeClient:
    return partial(
        make_mirror, MIRROR_NPM_UPSTREAM=registry.url, MIRROR_ADMIN_TOKENS=f"ops:{TOKEN}"
    )


async def the_document(client: Client) -> dict[str, Any]:
    response = await client.get(f"{PREFIX}/openapi.json")  # no token
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-cache"
    document: dict[str, Any] = await response.json()
    return document


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path template) → operation."""
    return {
        (method.upper(), path): item[method]
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    }


# the JSON-schema subset the document uses ----------------------------------------------------

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
KEYWORDS = {
    "$ref", "type", "properties", "required", "items", "enum", "anyOf", "additionalProperties",
    "format", "description", "maxLength", "pattern", "contentMediaType",
}  # fmt: skip


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def violations(
    document: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$"
) -> list[str]:
    """Where `value` breaks `schema` (type, properties, required, items, enum, anyOf,
    additionalProperties: false, format date-time, maxLength, pattern); [] when it fits."""
    schema = resolve(document, schema)
    unknown = set(schema) - KEYWORDS
    assert not unknown, f"the validator does not know {unknown} (at {where})"
    if "anyOf" in schema:
        branches = [violations(document, branch, value, where) for branch in schema["anyOf"]]
        if all(branches):
            return [f"{where}: matches no branch of anyOf: {branches}"]
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_TYPES[name](value) for name in names):
            return [f"{where}: {value!r} is not of type {types}"]
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if schema.get("format") == "date-time":
            try:
                assert datetime.fromisoformat(value).tzinfo is not None
            except (ValueError, AssertionError):
                found.append(f"{where}: {value!r} is not a date-time with a zone")
        if len(value) > schema.get("maxLength", len(value)):
            found.append(f"{where}: longer than {schema['maxLength']}")
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                found.append(f"{where}: {name!r} is required")
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                found += violations(document, properties[name], item, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{where}: {name!r} is not documented")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += violations(document, schema["items"], item, f"{where}[{index}]")
    return found


def test_the_validator_sees_what_breaks_a_schema() -> None:
    document = {"components": {"schemas": {"T": _TIME_SCHEMA}}}
    schema = {
        "type": "object",
        "required": ["a", "t"],
        "additionalProperties": False,
        "properties": {
            "a": {"type": ["integer", "null"]},
            "e": {"type": "string", "enum": ["x"]},
            "l": {"type": "array", "items": {"type": "string"}},
            "t": {"$ref": "#/components/schemas/T"},
            "u": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        },
    }
    assert violations(document, schema, {"a": None, "t": "2026-11-22T10:00:00Z"}) == []
    assert violations(document, schema, {"a": 1, "t": "2026-11-22T10:00:00Z", "u": "x"}) == []
    for bad in (
        [],
        {"t": "2026-11-22T10:00:00Z"},
        {"a": True, "t": "2026-11-22T10:00:00Z"},
        {"a": 1, "t": "yesterday"},
        {"a": 1, "t": "2026-11-22T10:00:00Z", "e": "y"},
        {"a": 1, "t": "2026-11-22T10:00:00Z", "l": ["x", 2]},
        {"a": 1, "t": "2026-11-22T10:00:00Z", "u": None},
        {"a": 1, "t": "2026-11-22T10:00:00Z", "extra": 1},
    ):
        assert violations(document, schema, bad) != [], bad


_TIME_SCHEMA = {"type": "string", "format": "date-time"}


# the document against the app ------------------------------------------------------------------


async def test_the_document_names_exactly_the_registered_routes(client: Client) -> None:
    document = await the_document(client)
    registered = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None
        and (route.resource.canonical + "/").startswith(PREFIX + "/")
        and route.method != "HEAD"
    }
    assert ("POST", f"{PREFIX}/blocks") in registered  # the router is read, not empty
    assert set(operations(document)) == registered


async def test_the_document_is_openapi_3_1_in_structure(client: Client) -> None:
    document = await the_document(client)
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"]
    assert document["info"]["version"]
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"adminToken": {**schemes["adminToken"], "type": "http", "scheme": "bearer"}}
    for path, item in document["paths"].items():
        assert path.startswith(f"{PREFIX}/")
        assert set(item) <= {*METHODS, "parameters"}, path
    ids = [operation["operationId"] for operation in operations(document).values()]
    assert len(ids) == len(set(ids))
    for (method, path), operation in operations(document).items():
        names = {
            parameter["name"]
            for parameter in [
                *document["paths"][path].get("parameters", ()),
                *operation.get("parameters", ()),
            ]
            if parameter["in"] == "path"
        }
        assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path
        for parameter in operation.get("parameters", ()):
            assert parameter["in"] in {"query", "path", "header"}
            assert "schema" in parameter
        for requirement in operation["security"]:
            assert set(requirement) <= set(schemes), (method, path)
        assert operation["responses"], (method, path)
        for status, response in operation["responses"].items():
            assert status == "default" or 100 <= int(status) < 600
            assert response["description"]
            for media in response.get("content", {}).values():
                assert resolve(document, media["schema"])["type"]  # it resolves to a schema
    # every $ref anywhere points into the document
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        resolve(document, {"$ref": ref})


def documented(document: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    responses = operations(document)[(method, path)]["responses"]
    response = responses.get(str(status), responses.get("default"))
    assert response is not None, f"{method} {path} documents no {status}"
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


async def check_answer(
    client: Client,
    document: dict[str, Any],
    template: str,
    method: str,
    url: str,
    status: int,
    **kwargs: Any,
) -> Any:
    response = await client.request(method, url, **kwargs)
    assert response.status == status, (method, url, await response.text())
    body = await response.json()
    problems = violations(document, documented(document, method, template, status), body)
    assert problems == [], (method, url, json.dumps(body)[:2000])
    return body


async def test_every_operation_answers_what_it_documents(make_mirror: MakeClient) -> None:
    client = await make_mirror(MIRROR_ADMIN_OPEN_IMPACT="true")
    document = await the_document(client)
    answered: set[tuple[str, str]] = set()

    async def check(template: str, method: str, url: str, status: int, **kwargs: Any) -> Any:
        operation = operations(document)[(method, template)]
        # An operation whose security allows no token is called without one.
        if {} not in operation["security"]:
            kwargs["headers"] = {**AUTH, **kwargs.get("headers", {})}
        answered.add((method, template))
        return await check_answer(client, document, template, method, url, status, **kwargs)

    # one real download for impact's ledger (written in the background)
    assert (await client.get("/npm/left-pad/-/left-pad-1.0.0.tgz")).status == 200
    state = client.app[SERVICES].state
    for _ in range(250):  # bounded: about 5 s; the ledger flushes every half second
        if await state.downloads("npm", "left-pad"):
            break
        await asyncio.sleep(0.02)
    bodies = {
        "blocks": {"ecosystem": "npm", "package": "left-pad", "versions": "1.0.0", "reason": "x"},
        "exemptions": {
            "ecosystem": "npm",
            "package": "left-pad",
            "versions": "1.4.0",
            "reason": "x",
        },
        "freezes": {"ecosystem": "npm", "published_after": "2d", "until": "7d", "reason": "x"},
    }
    for collection, body in bodies.items():
        base, item = f"{PREFIX}/{collection}", f"{PREFIX}/{collection}/{{id}}"
        # Dry runs first (both forms): documented answers, and nothing stored by them.
        previewed = await check(base, "POST", f"{base}?dry_run=true", 200, json=body)
        assert previewed["dry_run"] is True
        await check(base, "POST", base, 200, json={**body, "dry_run": True})
        created = await check(base, "POST", base, 201, json=body)
        (rule,) = (value for key, value in created.items() if key not in {"impact", "warning"})
        if collection == "blocks":
            assert created["impact"]["downloads"], created  # a real page, not an empty one
        listed = await check(base, "GET", f"{base}?ecosystem=npm", 200)
        assert [shown["id"] for shown in listed[collection]] == [rule["id"]]
        await check(item, "GET", f"{base}/{rule['id']}", 200)
    explained = await check(
        f"{PREFIX}/explain",
        "GET",
        f"{PREFIX}/explain?ecosystem=npm&package=left-pad&version=1.0.0",
        200,
    )
    assert explained["verdict"] == "blocked"
    assert explained["rule"]["covers"]
    impact = await check(
        f"{PREFIX}/impact", "GET", f"{PREFIX}/impact?ecosystem=npm&package=left-pad&limit=1", 200
    )
    assert impact["downloads"]
    assert impact["identities"]  # validated too: a real total, not an empty list
    for minutes in (1, 2):  # two takedown events, so that a page of one has a next
        await state.add_event(a_takedown(f"1.0.{minutes}", NOW - timedelta(minutes=minutes)))
    events = await check(f"{PREFIX}/events", "GET", f"{PREFIX}/events?ecosystem=npm&limit=1", 200)
    assert events["events"][0]["impact"]  # validated too: a real row, not an empty list
    assert events["next"]
    audit = await check(f"{PREFIX}/audit", "GET", f"{PREFIX}/audit?limit=2", 200)
    assert audit["entries"]
    assert audit["next"]
    lock = {"lockfileVersion": 3, "packages": {"node_modules/left-pad": {"version": "1.0.0"}}}
    report = await check(
        f"{PREFIX}/preflight",
        "POST",
        f"{PREFIX}/preflight?name=package-lock.json",
        200,
        data=json.dumps(lock).encode(),
    )
    assert report["refused"]
    await check_warm(check, lock)
    for collection in bodies:
        base, item = f"{PREFIX}/{collection}", f"{PREFIX}/{collection}/{{id}}"
        (rule,) = (await (await client.get(base)).json())[collection]
        await check(item, "DELETE", f"{base}/{rule['id']}", 200)
    await check(f"{PREFIX}/openapi.json", "GET", f"{PREFIX}/openapi.json", 200)
    assert answered == set(operations(document))


def a_takedown(version: str, detected_at: datetime) -> TakedownEvent:
    row = ImpactRow(client="10.0.0.7", token="", ci="", count=2, first_at=OLD, last_at=detected_at)
    found = Takedown(version=version, filename="", kind="removed")
    return event_of("npm", "left-pad", found, detected_at, (row,), clients=1, downloads=2)


async def check_warm(check: Any, lock: dict[str, Any]) -> None:
    """The warm routes' real answers: a finished job (200), one answered at once (202, while
    the job may still run) and its status."""
    warm, status = f"{PREFIX}/warm", f"{PREFIX}/warm/{{id}}"
    body = json.dumps(lock).encode()
    finished = await check(warm, "POST", f"{warm}?wait=30&name=package-lock.json", 200, data=body)
    assert finished["warm"]["summary"]["pins"] == 1
    started = await check(warm, "POST", warm, 202, data=body)
    shown = await check(status, "GET", f"{warm}/{started['warm']['id']}", 200)
    assert shown["warm"]["id"] == started["warm"]["id"]


async def test_warm_answers_what_it_documents(client: Client) -> None:
    document = await the_document(client)

    async def check(template: str, method: str, url: str, status: int, **kwargs: Any) -> Any:
        kwargs["headers"] = AUTH
        return await check_answer(client, document, template, method, url, status, **kwargs)

    lock = {"lockfileVersion": 3, "packages": {"node_modules/left-pad": {"version": "1.0.0"}}}
    await check_warm(check, lock)
    warm = f"{PREFIX}/warm"
    await check_answer(client, document, warm, "POST", warm, 401, data=b"{}")
    await check_answer(client, document, warm, "POST", warm, 400, data=b"{}", headers=AUTH)
    missing = f"{warm}/{'0' * 24}"
    await check_answer(client, document, f"{warm}/{{id}}", "GET", missing, 404, headers=AUTH)


async def test_errors_answer_the_documented_error_body(client: Client) -> None:
    document = await the_document(client)
    blocks = f"{PREFIX}/blocks"
    refused = await check_answer(
        client, document, blocks, "POST", blocks, 400, json={"ecosystem": "npm"}, headers=AUTH
    )
    assert refused["field"] == "package"
    await check_answer(client, document, blocks, "POST", blocks, 401, json={})
    audit = f"{PREFIX}/audit"
    await check_answer(client, document, audit, "GET", audit, 401)
    await check_answer(client, document, audit, "GET", f"{audit}?limit=0", 400, headers=AUTH)
    events = f"{PREFIX}/events"
    await check_answer(client, document, events, "GET", events, 401)
    bad = f"{events}?after=not-a-cursor"
    refused = await check_answer(client, document, events, "GET", bad, 400, headers=AUTH)
    assert refused["field"] == "after"
    item = f"{PREFIX}/freezes/{{id}}"
    await check_answer(
        client, document, item, "DELETE", f"{PREFIX}/freezes/f-000000000000", 404, headers=AUTH
    )


async def test_the_documented_security_is_what_the_mirror_enforces(client: Client) -> None:
    """Operations documented as always needing a token answer 401 without one; those
    documented as open answer something else (with the default settings: impact closed)."""
    document = await the_document(client)
    for (method, path), operation in operations(document).items():
        url = path.replace("{id}", "b-000000000000")
        response = await client.request(method, url)
        needs_token = {} not in operation["security"] or path in (
            f"{PREFIX}/impact",
            f"{PREFIX}/events",
        )
        assert (response.status == 401) == needs_token, (method, path, response.status)
