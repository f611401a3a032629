"""Responses kept per process as the bytes sent, for reads of data that changes rarely (the registry, pages).

A kept response serves every caller of the same URL (its access rule is checked before, as for any request)
until a domain it was built from changes (app/changes.py: at once in this process, through NOTIFY in the others
on PostgreSQL) or `CORRAL_VIEW_CACHE_SECONDS` pass, which bounds what another process's writes can leave
unseen where no NOTIFY carries them (the embedded SQLite written by the CLI). Its ETag is computed once, when
it is built. The service's middleware serves a kept view before the framework's routing when the caller's
token is verified already and the view's route admits it (app/fastpath.py).
"""

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel, TypeAdapter

from corral import changes
from corral.state import state_of

MAX_VIEWS = 2048  # beyond this the oldest half goes
REGISTRY = ("registry",)
REGISTRY_AND_RUNNERS = ("registry", "runners")
PAGES = ("registry", "runners", "scores")


@dataclass(frozen=True)
class KeptView:
    expires: float
    domains: tuple[str, ...]
    generations: tuple[int, ...]
    body: bytes
    media_type: str
    etag: str
    route: Any  # the route that built it: whose access rule a caller must pass to be served it

    def fresh(self) -> bool:
        return self.expires > time.monotonic() and self.generations == changes.generations(self.domains)

    def response(self) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": "no-cache"} if self.media_type == "application/json" else {}
        return Response(self.body, media_type=self.media_type, headers=headers)


_views: dict[tuple[str, bytes], KeptView] = {}


def kept(scope: Mapping[str, Any]) -> KeptView | None:
    """The fresh view kept for this request's URL, if any (its access rule is the caller's to check)."""
    view = _views.get((scope["path"], scope["query_string"]))
    return view if view is not None and view.fresh() else None


async def view(request: Request, domains: tuple[str, ...], build: Callable[[], Awaitable[Response]]) -> Response:
    """The response `build` makes for this URL, from the cache while none of `domains` changed."""
    key = (request.scope["path"], request.scope["query_string"])  # not request.url: costly to build
    existing = _views.get(key)
    if existing is not None and existing.fresh():
        return existing.response()
    seen = changes.generations(domains)  # before the reads: a change committed meanwhile makes the view stale
    built = await build()
    seconds: float = state_of(request).settings.view_cache_seconds
    if built.status_code != 200 or seconds <= 0:
        return built
    view = KeptView(
        expires=time.monotonic() + seconds,
        domains=domains,
        generations=seen,
        body=bytes(built.body),
        media_type=built.media_type or "application/octet-stream",
        etag='"' + hashlib.sha256(built.body).hexdigest()[:32] + '"',
        route=request.scope.get("route"),
    )
    if len(_views) >= MAX_VIEWS:
        for old in list(_views)[: MAX_VIEWS // 2]:
            del _views[old]
    _views[key] = view
    return view.response()


async def json_view(
    request: Request, domains: tuple[str, ...], build: Callable[[], Awaitable[BaseModel | Sequence[BaseModel]]]
) -> Response:
    """`view` for a JSON read: the model (or list of models) serialized once, as FastAPI would."""

    async def serialized() -> Response:
        value = await build()
        if isinstance(value, BaseModel):
            body = value.model_dump_json(by_alias=True)
        else:
            body = _LISTS.dump_json(list(value), by_alias=True).decode()
        return Response(body, media_type="application/json")

    return await view(request, domains, serialized)


_LISTS: TypeAdapter[list[Any]] = TypeAdapter(list[Any])  # Any: each model serialized as its own class
