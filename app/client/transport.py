"""What both clients share besides the calls: the defaults, the headers, and how an answer becomes a result or
an error (retried or not)."""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx

from corral.client.calls import RETRIED_STATUSES, Call
from corral.client.errors import ApiError, ProblemDocument, ServerUnreachable

DEFAULT_SERVER = "http://127.0.0.1:8000"
TIMEOUT_SECONDS = 60.0
RETRIES = 4


def client_version() -> str:
    try:
        return version("corral")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def headers(token: str | None) -> dict[str, str]:
    sent = {"User-Agent": f"corral-client/{client_version()}", "Accept": "application/json"}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return sent


def should_retry(call: "Call[Any]", response: httpx.Response | None, attempt: int, retries: int) -> bool:
    """Retried: a refused connection (nothing was sent) always; 429 and 5xx gateway answers when the call is safe
    to repeat."""
    if attempt >= retries:
        return False
    if response is None:
        return True
    return response.status_code in RETRIED_STATUSES and (call.retry_safe or response.status_code == 429)


def connect_backoff(attempt: int) -> float:
    """Seconds before connecting again: 0.5, 1, 2, 4 … (a server restarting is back within seconds)."""
    return min(0.5 * 2.0**attempt, 8.0)


def unreachable(server: str, exc: httpx.TransportError) -> ServerUnreachable:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in reason.lower():
        reason = "connection refused"
    return ServerUnreachable(server, reason)


def failure(server: str, response: httpx.Response) -> ApiError:
    request = response.request
    problem = ProblemDocument.read(response.read(), response.reason_phrase)
    return ApiError(server, request.method, request.url.path, response.status_code, problem)
