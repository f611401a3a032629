"""The one pure-ASGI middleware every request passes: request id, access log and metrics, URL and size checks,
ETags, security headers."""

import hashlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.errors import problem_response
from corral.logging import bind_request_id, reset_request_id
from corral.metrics import Metrics

access_log = logging.getLogger("corral.access")
error_log = logging.getLogger("corral.errors")

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A caller's X-Request-ID is kept only if it is short and plain, so it cannot forge log lines.
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")


class ServiceMiddleware:
    """Everything a request passes through, in one pure-ASGI layer (each layer of its own cost a call and a send
    wrapper per message): a request id (X-Request-ID) and one access line and route metrics per request; 400
    for a NUL in the URL and 413 for a body over the limit, before the application reads it; a strong ETag on
    successful JSON GETs, with 304 for a matching If-None-Match; nosniff everywhere and a same-origin-only
    Content-Security-Policy on HTML pages. A response that sets its own ETag (a cached body) is not hashed again.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_bytes: int,
        fast: Callable[[Scope, Headers], Awaitable[Response | None]] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.fast = fast  # answers a request from what is kept, or None (app/fastpath.py, composed in main)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        offered = headers.get("x-request-id", "")
        request_id = offered if offered and _CLIENT_REQUEST_ID.match(offered) else os.urandom(16).hex()
        context = bind_request_id(request_id)
        started = time.perf_counter()
        method = scope["method"]
        tagged = _Response(scope, send, request_id, method in ("GET", "HEAD"), headers.get("if-none-match"))
        try:
            refusal = self._refusal(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, tagged.send)
                return
            if self.fast is not None and (kept := await self.fast(scope, headers)) is not None:
                await kept(scope, receive, tagged.send)
                return
            if headers.get("content-length") is None and method not in ("GET", "HEAD"):
                receive = await self._buffered(receive)  # no declared length (chunked): read up to the limit
                if receive is _TOO_LARGE:
                    await self._too_large(scope)(scope, receive, tagged.send)
                    return
            await self.app(scope, receive, tagged.send)
        except Exception:
            # Handled here rather than in Starlette's outermost error middleware, so the 500 still carries
            # the request id. The traceback goes to the log only; the client gets a plain problem document.
            error_log.exception("unhandled error on %s %s", method, scope["path"])
            if tagged.started:
                raise
            await internal_error_response(scope)(scope, receive, tagged.send)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            # The route template (/v1/tokens/{token_id}), never the raw path: bounded label cardinality; only
            # known methods become label values: a client inventing methods must not grow the series.
            template = getattr(route, "path_format", None) or "unmatched"
            self.metrics.observe(method if method in KNOWN_METHODS else "other", template, tagged.status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                # The path without its query string: nothing a client typed into a query reaches the log.
                access_log.info(
                    "%s %s %d %.1fms",
                    method,
                    scope["path"],
                    tagged.status,
                    elapsed * 1000,
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "route": template,
                        "status": tagged.status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            reset_request_id(context)

    def _refusal(self, scope: Scope, headers: Headers) -> Response | None:
        raw = scope.get("raw_path") or scope["path"].encode()
        if b"%00" in raw or b"\x00" in raw or b"%00" in scope.get("query_string", b""):
            # No database stores or compares a NUL: refused up front.
            return problem_response(Request(scope), 400, "The URL contains a NUL (%00) character.")
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return self._too_large(scope)  # the server itself holds a client to a declared length
        return None

    async def _buffered(self, receive: Receive) -> Receive:
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_bytes:
                return _TOO_LARGE
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return replay

    def _too_large(self, scope: Scope) -> Response:
        return problem_response(
            Request(scope),
            413,
            f"The request body is over the limit of {self.max_bytes} bytes.",
            headers={"Connection": "close"},
        )


async def _TOO_LARGE() -> Message:  # a marker: the body was over the limit
    raise AssertionError("never received")


class _Response:
    """The send side of one request: the headers every response gets, and the ETag of a JSON GET."""

    def __init__(self, scope: Scope, send: Send, request_id: str, tags: bool, if_none_match: str | None) -> None:
        self.scope = scope
        self.downstream = send
        self.request_id = request_id
        self.tags = tags  # a GET or HEAD: its successful JSON answer gets an ETag
        self.if_none_match = if_none_match
        self.status = 500
        self.started = False
        self.held: Message | None = None  # a JSON GET's start, held until its body is hashed
        self.answered = False  # 304 sent: the body that follows is dropped
        self.chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.started = message["status"], True
            headers = MutableHeaders(scope=message)
            headers.append("X-Request-ID", self.request_id)
            headers.setdefault("X-Content-Type-Options", "nosniff")
            content_type = headers.get("content-type", "")
            if content_type.startswith("text/html"):
                path = self.scope["path"]
                docs = path in DOCS_PATHS or path.startswith("/docs/")
                headers.setdefault(
                    "Content-Security-Policy", DOCS_CONTENT_SECURITY_POLICY if docs else PAGE_CONTENT_SECURITY_POLICY
                )
            if self.tags and message["status"] == 200:
                if "etag" in headers:  # the body's ETag is known already (a cached response)
                    if _matches(self.if_none_match, headers["etag"]):
                        await self._not_modified(message, headers)
                        self.answered = True
                        return
                elif content_type.startswith("application/json"):
                    self.held = message
                    return
            await self.downstream(message)
            return
        if self.answered:
            return
        if self.held is None:
            await self.downstream(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.chunks)
        start, self.held = self.held, None
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = MutableHeaders(scope=start)
        headers["ETag"] = etag
        headers.setdefault("Cache-Control", "no-cache")
        if _matches(self.if_none_match, etag):
            await self._not_modified(start, headers)
            return
        await self.downstream(start)
        await self.downstream({"type": "http.response.body", "body": body})

    async def _not_modified(self, start: Message, headers: MutableHeaders) -> None:
        for name in ("content-length", "content-type"):
            if name in headers:
                del headers[name]
        self.status = 304
        await self.downstream({**start, "status": 304})
        await self.downstream({"type": "http.response.body", "body": b""})


def internal_error_response(scope: Scope) -> Response:
    return problem_response(
        Request(scope), 500, "An unexpected error occurred; quote the request id when reporting it."
    )


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
