"""What goes wrong when talking to a Corral server, said in one line that names the server and the fix."""

from typing import Any


class CorralError(Exception):
    """Any failure of a client call."""


class ServerUnreachable(CorralError):
    """No answer: the server is not running there, or the network is in the way."""

    def __init__(self, server: str, reason: str) -> None:
        self.server = server
        super().__init__(
            f"cannot reach Corral at {server} ({reason}): is the server running? "
            "Pass --server or run `corral login --server URL`"
        )


class ApiError(CorralError):
    """The server answered with a problem (4xx/5xx, application/problem+json)."""

    def __init__(self, server: str, method: str, path: str, status: int, problem: dict[str, Any]) -> None:
        self.server = server
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title") or "")
        self.detail = str(problem.get("detail") or "")
        said = self.detail or self.title or "no detail"
        errors = [error for error in problem.get("errors") or [] if str(error.get("message")) not in said]
        if errors:  # a 422: which fields, and why (unless the detail already says it)
            said += ": " + "; ".join(f"{error.get('field')}: {error.get('message')}" for error in errors[:5])
        super().__init__(f"{method} {server}{path}: {status} {said}{hint(status)}")


def hint(status: int) -> str:
    """The fix, where there is one that fits every case of the status."""
    if status == 401:
        return " (run `corral login` with a valid token, or set CORRAL_TOKEN)"
    if status == 403:
        return " (this token's scope does not allow it: use a token with the scope named above)"
    return ""
