"""The composition root: `create_app` builds the aiohttp `Application` from the services
(`mirror.services`), opened and closed in one `cleanup_ctx`, with one adapter per enabled
ecosystem and the admin API; the middlewares (the path gate and errors → responses, access
log, metrics); the health, readiness and metrics routes. No request logic lives here. Only
the entry points (`mirror serve`, through `mirror.server`) and tests import this module:
its parts take what they need from `mirror.services`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from mirror import __version__, requestbody, responses
from mirror.admin.routes import add_routes as add_admin_routes
from mirror.clock import Clock
from mirror.config import AccessConfig, Config
from mirror.directories import probe_writable, writable_directories
from mirror.ecosystems import maven, npm, pypi
from mirror.ecosystems.base import Ecosystem
from mirror.errors import (
    EcosystemDisabled,
    Held,
    MirrorError,
    NotFound,
    StateUnavailable,
)
from mirror.feeds import FeedSync
from mirror.forwarded import READ_TOKEN
from mirror.holds import HeldSubject
from mirror.hotpath import log_access, note_held
from mirror.identity import read_token
from mirror.model import ECOSYSTEMS
from mirror.pathgate import check_request_path
from mirror.responses import HELD_VERSIONS
from mirror.risk import RiskVerdict
from mirror.services import (
    ECOSYSTEM_ADAPTERS,
    REQUEST_KIND,
    SERVICES,
    SUPERVISOR_STATUS,
    Services,
    build_services,
)
from mirror.state.base import StateStore
from mirror.ui.routes import add_routes as add_dashboard_routes

log = logging.getLogger("mirror")
access_log = logging.getLogger("mirror.access")

# Each ecosystem's adapter factory. The packages import nothing of aiohttp: `create` loads
# an adapter's routes when the app builds it, for an enabled ecosystem only.
ADAPTER_FACTORIES: Mapping[str, Callable[[Services], Ecosystem]] = {
    "npm": npm.create,
    "pypi": pypi.create,
    "maven": maven.create,
}


def create_app(
    config: Config, *, clock: Clock | None = None, metrics_dir: Path | None = None
) -> web.Application:
    services = build_services(config, clock=clock, metrics_dir=metrics_dir)
    # The read-token check runs only where read tokens are configured or required: without
    # them a package read pays nothing for it.
    access = [_access_middleware(config.access)] if _access_checked(config.access) else []
    app = web.Application(
        middlewares=[observe_middleware, error_middleware, *access],
        # Bodies are counted and inflated by `requestbody.read_body`, never by aiohttp on
        # the event loop: `client_max_size` bounds the bytes on the wire.
        client_max_size=requestbody.MAX_WIRE_BYTES,
        handler_args=requestbody.HANDLER_ARGS,
    )
    app[SERVICES] = services
    app.cleanup_ctx.append(_lifetime)
    app.on_response_prepare.append(_finish_headers)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    adapters: dict[str, Ecosystem] = {}
    for name in ECOSYSTEMS:
        if config.ecosystem(name).enabled:
            adapter = ADAPTER_FACTORIES[name](services)
            adapters[name] = adapter
            app.router.add_routes(list(adapter.routes()))
        else:
            app.router.add_route("*", f"/{name}", _disabled(name))
            app.router.add_route("*", f"/{name}/{{tail:.*}}", _disabled(name))
    app[ECOSYSTEM_ADAPTERS] = adapters
    add_admin_routes(app)
    add_dashboard_routes(app, config)
    return app


def _disabled(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    env = f"MIRROR_{name.upper()}_UPSTREAM"

    async def handler(request: web.Request) -> web.Response:
        raise EcosystemDisabled(
            f"{name} is not enabled on this mirror: set {env} (or {name}.upstream in "
            "config/mirror.toml) to the upstream registry URL and restart"
        )

    return handler


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    for directory in writable_directories(services.config).values():
        directory.mkdir(parents=True, exist_ok=True)
    await services.state.open()
    await services.upstream.start()
    await services.blobs.open()
    try:
        await services.policy.start()
    except StateUnavailable as exc:
        log.error("could not load policy rules at start-up: %s (serving fails closed)", exc)
    await _warn_if_not_durable(services.state)
    services.traffic.start()
    services.metrics.start()
    services.policy.on_change(lambda _version: services.rendered.clear())
    background = [
        asyncio.create_task(services.policy.run(), name="policy-watch"),
        asyncio.create_task(_housekeeping(services), name="housekeeping"),
        asyncio.create_task(FeedSync(services).run(), name="feed-sync"),
    ]
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for adapter in app[ECOSYSTEM_ADAPTERS].values():
            await adapter.close()
        await services.artifacts.close()
        await services.traffic.close()
        await services.metrics.close()
        await services.holds.close()
        await services.blobs.close()
        await services.metacache.close()
        await services.takedowns.close()
        await services.upstream.close()
        await services.state.close()


async def _warn_if_not_durable(state: StateStore) -> None:
    """A state that forgets everything on a restart is survivable (the last-known copy) but
    not a way to run: say so at start."""
    try:
        warning = await state.durability_warning()
    except StateUnavailable:
        return  # the state is unreachable: readiness and the policy watch report that
    if warning:
        log.warning("%s", warning)


HOUSEKEEPING_INTERVAL = 3600.0  # seconds


async def _housekeeping(services: Services) -> None:
    """Hourly: drop metadata copies too old to ever be served again."""
    while True:
        try:
            removed = await services.metacache.prune()
            if removed:
                log.info("pruned %d metadata copies older than cache.stale_max", removed)
        except Exception:
            log.exception("metadata housekeeping failed; trying again in an hour")
        await asyncio.sleep(HOUSEKEEPING_INTERVAL)


# middlewares -------------------------------------------------------------------------------


async def _finish_headers(request: web.Request, response: web.StreamResponse) -> None:
    # A hook, not a middleware: it also sees 304s, file responses and aiohttp's own errors.
    responses.finish_headers(request, response, request.config_dict[SERVICES].config)


def _ecosystem_of(path: str) -> str:
    head = path.split("/", 2)[1] if path.count("/") >= 1 else ""
    if head in ECOSYSTEMS:
        return head
    if head == "api":
        return "admin"
    return "none"


# The requests the overview counts (`mirror.traffic`): package reads, not admin or health.
_PACKAGE_KINDS = frozenset({"metadata", "artifact"})


@web.middleware
async def observe_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """One JSON access-log line and the request metrics for every request."""
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - started
        services = request.app[SERVICES]
        ecosystem = _ecosystem_of(request.path)
        kind = str(request.get(REQUEST_KIND, "other"))
        size = _body_size(request, response)
        services.metrics.observe_request(ecosystem, kind, status, elapsed, size)
        if kind in _PACKAGE_KINDS:
            services.metrics.traffic.request(ecosystem)
        if services.config.access_log and access_log.isEnabledFor(logging.INFO):
            log_access(request, services, status, size, elapsed, ecosystem, kind)


def _body_size(request: web.Request, response: web.StreamResponse | None) -> int:
    """Body bytes sent: the declared length (aiohttp's own counter includes headers and is
    reset as it drains); 0 for HEAD, 304 and bodies of unknown length."""
    if response is None or request.method == "HEAD" or response.status == 304:
        return 0
    return response.content_length or 0


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one place errors become responses: the DESIGN.md JSON body for MirrorError, a
    JSON 404/405 for unknown routes, and a logged 500 without internals for anything else.
    First of all, the path gate: hostile path spellings (dot segments, encoded slashes,
    backslashes, control characters, in any encoding) are a 400 before any handler runs
    (`mirror.pathgate`); checked here rather than in a middleware of its own, one layer fewer
    on every request."""
    held: tuple[HeldSubject, ...] = ()
    withheld: tuple[object, ...] = ()
    try:
        check_request_path(request.raw_path)
        response = await handler(request)
        held = request.get(HELD_VERSIONS, ())
    except MirrorError as exc:
        if isinstance(exc, Held):
            ecosystem = _ecosystem_of(request.path)
            metrics = request.app[SERVICES].metrics
            metrics.policy_refusals.labels(ecosystem, exc.reason).inc()
            for decision in exc.withheld:
                risk = getattr(decision, "risk", None)
                if isinstance(risk, RiskVerdict):
                    metrics.risk_refusals.labels(ecosystem, risk.signal.name, risk.action).inc()
        withheld = exc.withheld
        response = error_response(exc)
    except web.HTTPNotFound:
        return error_response(NotFound(f"nothing is served at {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        body = {"error": f"{request.method} is not allowed here", "reason": "method-not-allowed"}
        return web.json_response(body, status=405, headers={"Allow": ",".join(exc.allowed_methods)})
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.raw_path)
        body = {"error": "internal error; the mirror logged the details", "reason": "internal"}
        return web.json_response(body, status=500)
    # Outside the `try`: the answer is built, nothing the queue does may change it.
    if held or withheld:
        note_held(request, request.app[SERVICES], held, withheld)
    return response


def _access_checked(settings: AccessConfig) -> bool:
    return bool(settings.tokens) or settings.required


def _access_middleware(settings: AccessConfig) -> Middleware:
    """Package reads (the npm, PyPI and Maven routes, metadata and artifacts) present a valid
    read token when one is `required`, and a valid one whenever they present any
    (`mirror.identity.read_token`); its name is kept for the ledger (`READ_TOKEN`). Health,
    readiness, metrics, the index and the admin API (its own tokens) are not package reads."""
    tokens, required = settings.tokens, settings.required

    @web.middleware
    async def check_read_token(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if _ecosystem_of(request.path) in ECOSYSTEMS:
            name = read_token(request.headers.get("Authorization"), tokens, required=required)
            if name:
                request[READ_TOKEN] = name
        return await handler(request)

    return check_read_token


def error_response(exc: MirrorError) -> web.Response:
    """Render a MirrorError; the HTTP reason phrase carries the message's first clause
    because Maven and pip print it ("status code: 403, reason phrase: …")."""
    return web.json_response(
        exc.body(),
        status=exc.status,
        reason=exc.phrase,
        headers=list(exc.headers),  # a list: a header may repeat (two challenges)
        dumps=_dumps,
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


# operational routes --------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    return web.json_response(
        {
            "name": "quarantine-mirror",
            "version": __version__,
            "ecosystems": {
                name: {"enabled": name in request.app[ECOSYSTEM_ADAPTERS], "path": f"/{name}/"}
                for name in ECOSYSTEMS
            },
            "quarantine": str(services.config.quarantine.default),
        }
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready only when the data and state dirs are writable, the state backend answers, the state is
    the one the last-known rules came from (`policy`: else `mirror state restore`), and
    under `mirror serve`, the supervisor is not backing off restarting a crashing worker
    (`workers`: whichever worker answers says so)."""
    services = request.app[SERVICES]
    checks: dict[str, str] = {}
    supervisor = request.app.get(SUPERVISOR_STATUS)
    if supervisor is not None:
        backoff = await asyncio.to_thread(supervisor.backoff)
        checks["workers"] = "; ".join(backoff) if backoff else "ok"
    for key, directory in writable_directories(services.config).items():
        try:
            await asyncio.to_thread(probe_writable, directory)
            checks[key] = "ok"
        except OSError as exc:
            checks[key] = f"not writable: {exc.strerror or exc}"
    try:
        async with asyncio.timeout(2):
            await services.state.ping()
        checks["state"] = "ok"
    except (StateUnavailable, TimeoutError) as exc:
        checks["state"] = f"unavailable: {exc}" if str(exc) else "unavailable: timed out"
    degraded, settling = services.policy.degraded, services.policy.settling
    if degraded is not None:
        checks["policy"] = f"last-known rules only: {degraded}"
    elif settling is not None:
        checks["policy"] = f"not serving yet: {settling}"
    else:
        checks["policy"] = "ok"
    ready = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics_view(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(request.app[SERVICES].metrics.render)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
