"""Pure ASGI middleware: request id + access log + metrics, a request-size cap, and ETags on JSON GETs."""

import hashlib
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem_response
from app.logging import bind_request_id, reset_request_id
from app.metrics import Metrics

access_log = logging.getLogger("corral.access")
error_log = logging.getLogger("corral.errors")

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A caller's X-Request-ID is kept only if it is short and plain, so it cannot forge log lines.
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")


class RequestContextMiddleware:
    """Gives each request an id (X-Request-ID), logs one access line and records route-level metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _CLIENT_REQUEST_ID.match(offered) else uuid.uuid4().hex
        context = bind_request_id(request_id)
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Handled here rather than in Starlette's outermost error middleware, so the 500 still carries
            # the request id. The traceback goes to the log only; the client gets a plain problem document.
            error_log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            await internal_error_response(scope)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            # The route template (/v1/tokens/{token_id}), never the raw path: bounded label cardinality.
            template = getattr(route, "path_format", None) or "unmatched"
            # Only known methods become label values: a client inventing methods must not grow the series.
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.observe(method, template, status, elapsed)
            # The path without its query string: nothing a client typed into a query reaches the log.
            access_log.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            reset_request_id(context)


def internal_error_response(scope: Scope) -> Response:
    return problem_response(
        Request(scope), 500, "An unexpected error occurred; quote the request id when reporting it."
    )


class NulCharacterMiddleware:
    """400 for a NUL (%00) in the path or query: no database stores or compares it, so refuse it up front."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode()
            if b"%00" in raw or b"\x00" in raw or b"%00" in scope.get("query_string", b""):
                response = problem_response(Request(scope), 400, "The URL contains a NUL (%00) character.")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestSizeLimitMiddleware:
    """Refuses bodies over the limit with 413 before the application reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server enforces a declared length
            return
        # No declared length (chunked): read up to the limit first, then hand the body on in one piece.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            Request(scope),
            413,
            f"The request body is over the limit of {self.max_bytes} bytes.",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class ETagMiddleware:
    """Adds a strong ETag to successful JSON GET responses and answers If-None-Match with 304.

    The body is hashed after it is built, so every JSON GET gets one without per-endpoint code; the query
    still runs, but clients that poll (CI waiting on an evaluation) save the transfer and the parsing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []
        passthrough = False

        async def buffering_send(message: Message) -> None:
            nonlocal start, passthrough
            if message["type"] == "http.response.start":
                headers = Headers(raw=message["headers"])
                cacheable = (
                    message["status"] == 200
                    and headers.get("content-type", "").startswith("application/json")
                    and "etag" not in headers
                )
                if not cacheable:
                    passthrough = True
                    await send(message)
                    return
                start = message
                return
            if passthrough or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            headers = MutableHeaders(scope=start)
            headers["ETag"] = etag
            headers.setdefault("Cache-Control", "no-cache")
            if _matches(Headers(scope=scope).get("if-none-match"), etag):
                del headers["content-length"]
                if "content-type" in headers:
                    del headers["content-type"]
                await send({**start, "status": 304})
                await send({"type": "http.response.body", "body": b""})
                return
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffering_send)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    candidates = {candidate.strip().removeprefix("W/") for candidate in if_none_match.split(",")}
    return etag in candidates


# Pages may load nothing from another origin: the docs (and the web pages) must work air-gapped, and a
# CDN reference that slips in is blocked in the browser instead of leaking requests (Redoc's bundle, for
# one, fetches its logo from a CDN). Only the docs run scripts (Swagger UI and ReDoc start from an inline
# script); the web pages have none, so theirs may run none at all.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; font-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)
PAGE_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'none'; "
    "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeadersMiddleware:
    """nosniff on every response; a same-origin-only Content-Security-Policy on HTML pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if headers.get("content-type", "").startswith("text/html"):
                    docs = scope["path"] in DOCS_PATHS or scope["path"].startswith("/docs/")
                    policy = DOCS_CONTENT_SECURITY_POLICY if docs else PAGE_CONTENT_SECURITY_POLICY
                    headers.setdefault("Content-Security-Policy", policy)
            await send(message)

        await self.app(scope, receive, send_with_headers)
