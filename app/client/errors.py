"""What goes wrong when talking to a Corral server, said in one line that names the server and the fix."""

from pydantic import BaseModel, ConfigDict, ValidationError


class ProblemField(BaseModel):
    """One refused field of a 422 problem."""

    model_config = ConfigDict(extra="ignore")
    field: str = ""
    message: str = ""


class ProblemDocument(BaseModel):
    """An error answer as the client reads it: problem+json (RFC 9457), or what a proxy's page lets be said."""

    model_config = ConfigDict(extra="allow")  # a server's own extensions (`retry_after`…) stay readable
    title: str = ""
    detail: str = ""
    errors: list[ProblemField] = []

    @classmethod
    def read(cls, body: bytes, reason: str) -> "ProblemDocument":
        try:
            return cls.model_validate_json(body)
        except ValidationError:  # not a problem document: a proxy's HTML page, an empty body
            return cls(title=reason, detail=body.decode("utf-8", errors="replace").strip()[:200])


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

    def __init__(self, server: str, method: str, path: str, status: int, problem: ProblemDocument) -> None:
        self.server = server
        self.status = status
        self.problem = problem
        self.title = problem.title
        self.detail = problem.detail
        said = self.detail or self.title or "no detail"
        errors = [error for error in problem.errors if error.message not in said]
        if errors:  # a 422: which fields, and why (unless the detail already says it)
            said += ": " + "; ".join(f"{error.field}: {error.message}" for error in errors[:5])
        super().__init__(f"{method} {server}{path}: {status} {said}{hint(status)}")


def hint(status: int) -> str:
    """The fix, where there is one that fits every case of the status."""
    if status == 401:
        return " (run `corral login` with a valid token, or set CORRAL_TOKEN)"
    if status == 403:
        return " (this token's scope does not allow it: use a token with the scope named above)"
    return ""
