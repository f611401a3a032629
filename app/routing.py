"""Finding the app's routes, through included routers, whichever way this FastAPI version stores them."""

import re
from functools import cache
from typing import NamedTuple

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.routing import compile_path

from corral.state import state_of


class MountedRoute(NamedTuple):
    path: str  # as routed, convertors included: /v1/tokens/{token_id:uuid}
    path_format: str  # as documented: /v1/tokens/{token_id}
    route: APIRoute


def api_routes(app: FastAPI) -> list[MountedRoute]:
    """Every API route of the app with its full path."""
    try:
        # FastAPI >= 0.16x keeps included routers as nodes instead of copying their routes into app.routes.
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        return [MountedRoute(r.path, r.path_format, r) for r in app.routes if isinstance(r, APIRoute)]
    return [
        MountedRoute(str(context.path), str(context.path_format), context.original_route)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
    ]


@cache
def _method_table(app: FastAPI) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    return [(compile_path(mounted.path)[0], frozenset(mounted.route.methods or ())) for mounted in api_routes(app)]


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """All methods any route offers at `path`: Starlette's 405 names only the first route's."""
    methods: set[str] = set()
    for pattern, route_methods in _method_table(app):
        if pattern.match(path):
            methods |= route_methods
    return sorted(methods)


def public_url(request: Request) -> str:
    """Where people reach this service (CORRAL_PUBLIC_URL behind a proxy, else the request's own base URL)."""
    configured: str | None = state_of(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")
