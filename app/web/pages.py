"""What every page shares: the templates, the page router (READ, GET and HEAD), and errors drawn as HTML.

A browser (Accept: text/html) that asks for an unknown model, suite or evaluation gets an HTML page with the
status and the problem's detail; any other client gets the same problem as application/problem+json, as from
every API route (app/errors.py)."""

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import ProblemError
from corral.security.access import READ
from corral.suites import repository as suites
from corral.web import formatting

templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))
templates.env.filters.update(
    parameters=formatting.parameters,
    score=formatting.score,
    gib=formatting.gib,
    tokens=formatting.tokens,
    moment=formatting.moment,
    percent=formatting.percent,
)
HUB = "/hub"  # app/web/hub.py redirects to the configured Hub, so the pages name no other origin
templates.env.globals["hub"] = HUB
# Pages answer HEAD as GET (link checkers and monitors ask HEAD); Starlette sends the headers alone.
PAGE_METHODS = ["GET", "HEAD"]


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def error_page(request: Request, status: int, title: str, detail: str, headers: dict[str, str] | None) -> Response:
    context = {"status": status, "title": title, "detail": detail, "suites": []}
    return templates.TemplateResponse(request, "error.html", context, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "The request is not valid."


class PageRoute(APIRoute):
    """A page route: problems raised anywhere in it (the access rule included) become an HTML page for browsers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ProblemError as exc:
                if not wants_html(request):
                    raise  # the app's problem+json handler answers API clients
                return error_page(request, exc.status, exc.title, exc.detail, exc.headers)
            except RequestValidationError as exc:
                if not wants_html(request):
                    raise
                return error_page(request, 422, HTTPStatus(422).phrase, _validation_detail(exc), None)

        return page_handler


def page_router() -> APIRouter:
    """A router for one group of pages: hidden from the API document, READ on every route, HTML by default."""
    return APIRouter(
        include_in_schema=False,
        dependencies=[Depends(READ)],
        default_response_class=HTMLResponse,
        route_class=PageRoute,
    )


async def suite_names(session: AsyncSession) -> list[str]:
    """The suites the header links to, on every page."""
    return await suites.names(session)


def render(request: Request, name: str, context: dict[str, object]) -> Response:
    return templates.TemplateResponse(request, name, context)
