"""`/ui/explain?q=npm axios@1.14.1`: one version's decision and why, as the admin API's
explain answers it (`mirror.admin.routes.explanation_json`)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from mirror.admin.parse import ecosystem_param, safe_text, split_subject
from mirror.admin.routes import explanation_json
from mirror.errors import BadRequest, MirrorError
from mirror.services import ECOSYSTEM_ADAPTERS
from mirror.ui import guard
from mirror.ui.render import render

MAX_QUERY_CHARS = 600


def routes() -> list[web.RouteDef]:
    return [web.get("/explain", explain_page, allow_head=False)]


def parse_query(text: str) -> tuple[str, str, str]:
    """`npm axios@1.14.1` → ("npm", "axios", "1.14.1"); BadRequest with how to write it."""
    if len(text) > MAX_QUERY_CHARS:
        raise BadRequest(f"the query is longer than {MAX_QUERY_CHARS} characters")
    ecosystem, _, subject = safe_text(text, "q").strip().partition(" ")
    ecosystem = ecosystem_param(ecosystem.lower())
    package, version = split_subject(ecosystem, subject.strip())
    return ecosystem, package, version


async def explain_page(request: web.Request) -> web.StreamResponse:
    guard.reader(request)
    query = request.query.get("q", "").strip()
    answer: dict[str, Any] | None = None
    problem: str | None = None
    status = 200
    review_query = ""
    if query:
        try:
            ecosystem, package, version = parse_query(query)
            adapter = request.config_dict[ECOSYSTEM_ADAPTERS].get(ecosystem)
            if adapter is None:
                raise BadRequest(f"{ecosystem} is not enabled on this mirror")
            answer = explanation_json(await adapter.explain(package, version))
            review_query = urllib.parse.urlencode(
                {"ecosystem": ecosystem, "package": package, "version": version}
            )
        except MirrorError as exc:
            problem, status = exc.message, exc.status
    return render(
        request,
        "explain.html",
        status=status,
        query=query,
        answer=answer,
        problem=problem,
        review_query=review_query,
    )
