"""Errors as RFC 9457 problem details (application/problem+json), for ours and for FastAPI's/Starlette's own.

ProblemError                 status, slug and title travel with the exception
 ├── BadRequest              400  e.g. an invalid cursor
 ├── Unauthorized            401  no/invalid/expired/revoked token (with WWW-Authenticate)
 ├── Forbidden               403  a valid token without the needed scope
 ├── NotFound                404
 ├── Conflict                409
 ├── UnprocessableEntity     422  a body naming something that does not exist (unknown licence slug)
 └── ServiceUnavailable      503  e.g. database unreachable or schema behind
"""

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import JsonValue
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.logging import current_request_id
from corral.routing import allowed_methods
from corral.schemas import FieldError, Problem

log = logging.getLogger("corral.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:corral:problem:"


class ProblemError(Exception):
    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extensions = extensions


class BadRequest(ProblemError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(ProblemError):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str, *, error: str = "invalid_token") -> None:
        # RFC 6750: a missing token gets a bare challenge; a bad one names the error.
        challenge = 'Bearer realm="corral"' if error == "" else f'Bearer realm="corral", error="{error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(ProblemError):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(ProblemError):
    status, slug, title = 409, "conflict", "Conflict"


class UnprocessableEntity(ProblemError):
    """A well-formed request naming something that does not exist or cannot be used (422)."""

    status, slug, title = 422, "validation-error", "Invalid request"

    def __init__(self, detail: str, *, field: str, location: str = "body") -> None:
        # Worded like the schema's own validation errors: "body license: no licence with slug 'x'".
        error = {
            "location": location,
            "pointer": f"/{field}",
            "field": field,
            "message": detail,
            "code": "invalid_reference",
        }
        super().__init__(f"{location} {field}: {detail}", errors=[error])


class PayloadTooLarge(ProblemError):
    status, slug, title = 413, "request-too-large", "Request too large"


class RangeNotSatisfiable(ProblemError):
    """An append at the wrong offset: the `Range` header says where the stored content ends."""

    status, slug, title = 416, "range-not-satisfiable", "Range not satisfiable"


class ServiceUnavailable(ProblemError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5, **extensions: Any) -> None:
        # Every 503 says when to come back: clients (and runners) retry on it, and must not hammer.
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extensions)


# Slugs for the statuses Starlette/FastAPI raise themselves, so clients can switch on `type` alone.
_STATUS_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "request-too-large",
    415: "unsupported-media-type",
    416: "range-not-satisfiable",
    422: "validation-error",
    500: "internal-error",
    503: "service-unavailable",
}


def problem_response(
    request: Request | None,
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[FieldError] | None = None,
    extensions: dict[str, JsonValue] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=PROBLEM_TYPE_BASE + (slug or _STATUS_SLUGS.get(status, "error")),
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path if request is not None else None,
        request_id=current_request_id(),
        errors=errors,
    )
    body = problem.model_dump(mode="json", exclude_none=True) | (extensions or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _location(loc: tuple[Any, ...]) -> tuple[str, str]:
    """('body', 'limits', 0, 'name') -> ('body', '/limits/0/name'): where, and a JSON pointer within it."""
    where = str(loc[0]) if loc else "request"
    return where, "/" + "/".join(str(part) for part in loc[1:]) if len(loc) > 1 else ""


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    fields = []
    for error in exc.errors():
        where, pointer = _location(tuple(error.get("loc", ())))
        # Pydantic repeats the rejected input in `input`; it is never echoed (it may be a secret).
        fields.append(
            FieldError(
                location=where,
                pointer=pointer,
                field=pointer.lstrip("/").replace("/", ".") or where,
                message=str(error.get("msg", "invalid")),
                code=str(error.get("type", "invalid")),
            )
        )
    return fields


async def _handle_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    content_type = request.headers.get("content-type", "")
    body_unreadable = any(e.location == "body" and e.pointer == "" and e.code != "missing" for e in errors)
    if body_unreadable and "json" not in content_type:
        return problem_response(
            request,
            415,
            "Send the body as JSON with 'Content-Type: application/json'.",
            title="Unsupported media type",
        )
    if any(error.code == "json_invalid" for error in errors):
        return problem_response(
            request,
            400,
            "The request body is not valid JSON.",
            slug="malformed-json",
            title="Malformed JSON",
            errors=errors,
        )
    summary = "; ".join(f"{error.location} {error.field}: {error.message}" for error in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return problem_response(request, 422, summary + more, title="Invalid request", errors=errors)


async def _handle_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request,
        exc.status,
        exc.detail,
        slug=exc.slug,
        title=exc.title,
        headers=exc.headers,
        extensions=exc.extensions,
    )


async def _handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route matches {request.method} {request.url.path}."
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = allowed_methods(request.app, request.url.path)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}."
    return problem_response(request, exc.status_code, detail, headers=headers)


async def _handle_integrity(request: Request, exc: Exception) -> JSONResponse:
    # A unique key taken between our check and our insert (two identical creates at once). The exception
    # text holds the SQL parameters, so none of it reaches the client or the log.
    return problem_response(
        request,
        409,
        "Another request wrote a conflicting record at the same time; fetch it, or retry.",
        slug="conflict",
        title="Conflict",
    )


# PostgreSQL's SQLSTATEs and SQLite's messages for a database that answers but cannot take writes.
DISK_FULL = ("53100", "database or disk is full", "No space left on device")
READ_ONLY = ("25006", "attempt to write a readonly database", "readonly database")
# Why, in words a person can act on, with how long to wait.
UNAVAILABLE: dict[str, tuple[str, int]] = {
    "busy": ("The database is busy with other writes; retry shortly.", 1),
    "unavailable": ("The database is unreachable or restarting; retry shortly.", 5),
    "disk full": (
        "The database cannot take writes: the disk it writes to is full. Reads still work; an operator must free "
        "space on the database's volume.",
        60,
    ),
    "read-only": (
        "The database cannot take writes: it is read-only (a standby, read-only transactions by default, or a file "
        "or volume mounted read-only). Reads still work; an operator must point Corral at a writable database.",
        60,
    ),
}


def database_unavailable(exc: BaseException) -> str | None:
    """Why the database cannot serve this request now (unreachable or restarting, out of connections, SQLite
    busy, its disk full, read-only), or None when the error is of another kind (a bug: 500)."""
    if isinstance(exc, SQLAlchemyTimeoutError):
        return "busy"  # no pooled connection came free in time
    if not isinstance(exc, DBAPIError):
        return None
    said = f"{getattr(exc.orig, 'sqlstate', '')} {exc.orig}"
    if any(sign in said for sign in DISK_FULL):
        return "disk full"
    if any(sign in said for sign in READ_ONLY):
        return "read-only"
    if "database is locked" in said or "database table is locked" in said:
        return "busy"
    if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
        return "unavailable"
    return None


async def _handle_database(request: Request, exc: Exception) -> JSONResponse:
    reason = database_unavailable(exc)
    if reason is None:
        raise exc  # not an outage: the request-context middleware logs it and answers 500
    # One line, no traceback and no parameters: outages come in bursts, and the cause is outside this process.
    first_line = str(getattr(exc, "orig", exc)).strip().splitlines()[:1]
    log.warning(
        "database %s on %s %s: %s: %s",
        reason,
        request.method,
        request.url.path,
        type(exc).__name__,
        first_line[0][:200] if first_line else "",
    )
    detail, seconds = UNAVAILABLE[reason]
    return problem_response(
        request,
        503,
        detail,
        slug="service-unavailable",
        title="Service unavailable",
        headers={"Retry-After": str(seconds)},
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(ProblemError, _handle_problem)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(IntegrityError, _handle_integrity)
    app.add_exception_handler(DBAPIError, _handle_database)
    app.add_exception_handler(SQLAlchemyTimeoutError, _handle_database)
