"""Responses kept per process as the bytes sent, for reads of data that changes rarely (the registry, pages).

A kept response serves every caller of the same URL (its access rule is checked before, as for any request)
until a domain it was built from changes (app/changes.py: at once in this process, through NOTIFY in the others
on PostgreSQL) or `CORRAL_VIEW_CACHE_SECONDS` pass, which bounds what another process's writes can leave
unseen where no NOTIFY carries them (the embedded SQLite written by the CLI). Its ETag is computed once, when
it is built.
"""

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel, TypeAdapter

from app import changes

MAX_VIEWS = 2048  # beyond this the oldest half goes
REGISTRY = ("registry",)
REGISTRY_AND_RUNNERS = ("registry", "runners")
PAGES = ("registry", "runners", "scores")


@dataclass(frozen=True)
class KeptView:
    expires: float
    generations: tuple[int, ...]
    body: bytes
    media_type: str
    etag: str


_views: dict[tuple[str, bytes, tuple[str, ...]], KeptView] = {}


async def view(request: Request, domains: tuple[str, ...], build: Callable[[], Awaitable[Response]]) -> Response:
    """The response `build` makes for this URL, from the cache while none of `domains` changed."""
    key = (request.scope["path"], request.scope["query_string"], domains)  # not request.url: costly to build
    kept = _views.get(key)
    if kept is not None and kept.expires > time.monotonic() and kept.generations == changes.generations(domains):
        return _response(kept)
    seen = changes.generations(domains)  # before the reads: a change committed meanwhile makes the view stale
    built = await build()
    seconds: float = request.app.state.settings.view_cache_seconds
    if built.status_code != 200 or seconds <= 0:
        return built
    kept = KeptView(
        expires=time.monotonic() + seconds,
        generations=seen,
        body=bytes(built.body),
        media_type=built.media_type or "application/octet-stream",
        etag='"' + hashlib.sha256(built.body).hexdigest()[:32] + '"',
    )
    if len(_views) >= MAX_VIEWS:
        for old in list(_views)[: MAX_VIEWS // 2]:
            del _views[old]
    _views[key] = kept
    return _response(kept)


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


def _response(kept: KeptView) -> Response:
    headers = {"ETag": kept.etag, "Cache-Control": "no-cache"} if kept.media_type == "application/json" else {}
    return Response(kept.body, media_type=kept.media_type, headers=headers)
