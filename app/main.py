"""The application factory: settings → engine → middleware → problem handlers → routers → offline docs."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from corral import changes
from corral.clock import SYSTEM_CLOCK, Clock
from corral.config import Settings, load_settings
from corral.db import create_engine, create_sessionmaker
from corral.errors import install_problem_handlers
from corral.evaluations.router import router as evaluations_router
from corral.evaluations.wakeups import QueueSignal
from corral.fastpath import kept_response
from corral.hardware.router import router as hardware_router
from corral.hub.client import HubClient
from corral.hub.router import registration as hub_registration_router
from corral.hub.router import router as hub_router
from corral.hub.sync import background_sync
from corral.listener import Listener
from corral.metrics import Metrics
from corral.middleware import ServiceMiddleware
from corral.ops.router import router as ops_router
from corral.protocol.reaper import reap_forever
from corral.protocol.router import router as queue_router
from corral.registry.families.router import router as families_router
from corral.registry.licenses.router import router as licenses_router
from corral.registry.models.router import router as models_router
from corral.registry.revisions.router import router as revisions_router
from corral.routing import api_routes
from corral.runners.router import router as runners_router
from corral.schemas import Problem
from corral.scores.router import router as scores_router
from corral.security.access import ACCESS_EXTENSION, route_access
from corral.security.router import router as tokens_router
from corral.state import AppState
from corral.suites.router import router as suites_router
from corral.web.router import router as web_router

DESCRIPTION = """\
Corral records open-weight model releases — licences with their real terms, the exact Hub weights
(repo + commit) and what it takes to run them — schedules lm-evaluation-harness runs on registered
runner machines, and publishes score tables.

**Authentication**: `Authorization: Bearer crl_...`. Reads are public unless the server turns that off;
every write needs a token with the right scope (`admin` ⊃ `publish` ⊃ `read`; `runner` for runner machines).

**Errors** are RFC 9457 `application/problem+json` documents; switch on `type`.

**Lists** are cursor-paginated: pass `next_cursor` back as `cursor`. GETs carry an `ETag`; send it back in
`If-None-Match` to get `304 Not Modified`.
"""

TAGS = [
    {"name": "licenses", "description": "Licences with their real terms, and a check of a described use."},
    {"name": "families", "description": "Release trains (Llama 2, Llama 3.1, ...): vendor, date, licence."},
    {"name": "models", "description": "One model per Hub repo id: architecture, lineage, requirements, search."},
    {"name": "revisions", "description": "Immutable commit-pinned snapshots of a model, and movable aliases."},
    {"name": "hub", "description": "Syncing models from the Hugging Face Hub (or a mirror): metadata only."},
    {"name": "suites", "description": "Declarative evaluation suites (evals/suites/*.yaml), versioned by content."},
    {"name": "runners", "description": "Runner machines: registration, tokens, capabilities, state."},
    {"name": "evaluations", "description": "Evaluation requests, their jobs and attempts, and the queue."},
    {
        "name": "runner protocol",
        "description": "What runner machines call: claim (long-poll), heartbeat, log, result, fail.",
    },
    {"name": "scores", "description": "Leaderboards per suite, comparisons, score history, imports."},
    {"name": "hardware", "description": "The accelerator catalog and memory estimates for any architecture."},
    {"name": "tokens", "description": "API tokens and their scopes. Admin only, but for `current`."},
    {"name": "operations", "description": "Health, readiness and Prometheus metrics."},
]


def _operation_id(route: APIRoute) -> str:
    # Stable, readable ids (`list_tokens`) for generated clients, instead of FastAPI's path-derived ones.
    return route.name


def create_app(settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> FastAPI:
    """`clock`: where the queue reads the time (leases, the reaper, backoff); tests pass one they move."""
    settings = settings or load_settings()
    engine = create_engine(settings)
    hub_client, queue_signal = HubClient(settings), QueueSignal()
    state = AppState(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        metrics=Metrics(),
        clock=clock,
        parts={HubClient: hub_client, QueueSignal: queue_signal},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        background = []
        if settings.hub_sync_interval_seconds > 0:
            background.append(
                asyncio.create_task(background_sync(state.sessionmaker, settings, hub_client), name="hub-sync")
            )
        if settings.reaper_interval_seconds > 0:
            background.append(
                asyncio.create_task(reap_forever(state.sessionmaker, settings, queue_signal, clock), name="reaper")
            )
        if not settings.is_sqlite:
            listener = Listener()
            queue_signal.subscribe(listener)
            listener.subscribe(changes.CHANNEL, lambda domain: changes.bump(domain), on_connect=changes.bump)
            background.append(asyncio.create_task(listener.run(settings), name="listener"))
        yield
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await engine.dispose()

    app = FastAPIOffline(
        title="Corral",
        version="0.1.0",
        summary="Open-model release and evaluation registry.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
    )
    app.state.corral = state

    install_problem_handlers(app)
    # Matched in this order, one route after another: the runner protocol (most requests by far) and the probes
    # first. No two routers share a path, so the order changes nothing else.
    app.include_router(queue_router)
    app.include_router(ops_router)
    app.include_router(tokens_router)
    app.include_router(licenses_router)
    app.include_router(families_router)
    app.include_router(models_router)
    app.include_router(hub_registration_router)
    app.include_router(revisions_router)
    app.include_router(hardware_router)
    app.include_router(hub_router)
    app.include_router(suites_router)
    app.include_router(runners_router)
    app.include_router(evaluations_router)
    app.include_router(scores_router)
    app.include_router(web_router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "web" / "static"), name="static")

    app.add_middleware(
        ServiceMiddleware,
        metrics=state.metrics,
        max_bytes=settings.max_request_bytes,
        fast=kept_response(settings),
    )

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus: errors documented only as problem+json, and optional auth on public reads."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    schema["components"]["schemas"].setdefault(
        "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    settings = app.state.corral.settings
    operations = {
        (mounted.path_format, method.lower()): mounted.route
        for mounted in api_routes(app)
        for method in mounted.route.methods or ()
    }
    for path, path_item in schema["paths"].items():
        for method, operation in path_item.items():
            # The endpoint's one-line docstring is the best summary; FastAPI would use the function name.
            if operation.get("description") and "\n" not in operation["description"].strip():
                operation["summary"] = operation["description"].strip().rstrip(".")
            operation.pop(ACCESS_EXTENSION, None)  # read by route_access, not a thing for clients
            rule = route_access(operations[(path, method)])
            if rule is not None and rule.scope is not None:
                operation["x-required-scope"] = rule.scope.value
            if rule is not None and rule.anonymous_allowed(settings) and "security" in operation:
                operation["security"] = [{}, *operation["security"]]  # {} = no credentials needed
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if code[0] in "45" and "application/problem+json" in content:
                    content.pop("application/json", None)
    _drop_unreferenced_schemas(schema)
    json_schema_bounds(schema)
    app.openapi_schema = schema
    return schema


# Pydantic writes a bound it cannot fold into the type (a constrained type behind a validator, such as `Integer`)
# under its own names; JSON Schema, and so every generated client and validator, knows only these.
JSON_SCHEMA_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
# Keywords whose values are data (examples, defaults), not schemas: their keys are left alone.
DATA_KEYWORDS = frozenset({"examples", "example", "default", "const", "enum"})


def json_schema_bounds(node: Any) -> None:
    """Rename pydantic's bound keywords to JSON Schema's, in every schema of the document."""
    if isinstance(node, list):
        for item in node:
            json_schema_bounds(item)
        return
    if not isinstance(node, dict):
        return
    for keyword, standard in JSON_SCHEMA_BOUNDS.items():
        value = node.get(keyword)
        if isinstance(value, int | float) and not isinstance(value, bool):
            node[standard] = node.pop(keyword)
    for key, value in node.items():
        if key not in DATA_KEYWORDS:
            json_schema_bounds(value)


def _drop_unreferenced_schemas(schema: dict[str, Any]) -> None:
    """Pydantic lists every type it met among the components, also those a field documents as a plain JSON
    object (the typed documents of app/documents.py): keep only what the paths reach."""
    components = schema["components"]["schemas"]
    reached: set[str] = set()
    pending = [schema["paths"]]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/components/schemas/"):
                name = reference.rsplit("/", 1)[1]
                if name not in reached and name in components:
                    reached.add(name)
                    pending.append(components[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    for name in set(components) - reached:
        del components[name]


def create_served_app() -> FastAPI:
    """The factory `corral serve --workers N` names: each worker process sets up its own logging."""
    from corral.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)
