"""Every API call the client makes, described once: method, path, query, body and what the answer is read as.
The sync and async clients only send these, so both speak the API the same way."""

import dataclasses
import email.utils
import time
import uuid
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from corral.evaluations.schemas import EvaluationCreate, EvaluationRead, EvaluationSummary, QueueView
from corral.hardware.schemas import HardwareRequirements
from corral.registry.models.schemas import ModelRead
from corral.registry.revisions.schemas import RevisionRead
from corral.runners.schemas import RegistrationTokenCreated, RunnerRead
from corral.schemas import Page
from corral.scores.schemas import Comparison, Leaderboard
from corral.tokens.schemas import TokenCreated, TokenRead

T = TypeVar("T")
Query = dict[str, str | int | float | bool | None]
RETRIED_STATUSES = (429, 502, 503, 504)
MAX_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer (a model, text, or nothing)."""

    method: Literal["GET", "POST", "PATCH", "DELETE"]
    path: str
    read: TypeAdapter[T] | Literal["text", "bytes", "none"]
    params: Query = field(default_factory=dict)
    body: BaseModel | None = None
    idempotency_key: str | None = None  # a POST the server deduplicates on this key: safe to send again
    idempotent: bool = False  # doing it twice is doing it once (a cancel)

    @property
    def retry_safe(self) -> bool:
        return self.method in ("GET", "DELETE") or self.idempotent or self.idempotency_key is not None

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else {}
        content = self.body.model_dump_json(exclude_unset=True) if self.body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"
        params = {key: _param(value) for key, value in self.params.items() if value is not None}
        return client.build_request(self.method, self.path, params=params, content=content, headers=headers)

    def answer(self, response: httpx.Response) -> T:
        if self.read == "none":
            return None  # type: ignore[return-value]
        if self.read == "text":
            return response.text  # type: ignore[return-value]
        if self.read == "bytes":
            return response.content  # type: ignore[return-value]
        return self.read.validate_json(response.content)


def _param(value: str | int | float | bool) -> str | int | float:
    return str(value).lower() if isinstance(value, bool) else value


def retry_after(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait before trying again: the server's Retry-After (seconds or a date), else 1, 2, 4 … s."""
    header = response.headers.get("Retry-After")
    if header:
        if header.strip().isdigit():
            return min(float(header), MAX_RETRY_SECONDS)
        try:
            when = email.utils.parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError):
            pass
        else:
            return min(max(when - time.time(), 0.0), MAX_RETRY_SECONDS)
    return min(2.0**attempt, MAX_RETRY_SECONDS)


def _adapter(kind: type[T]) -> TypeAdapter[T]:
    return TypeAdapter(kind)


def _repo(repo_id: str) -> str:
    owner, _, name = repo_id.partition("/")
    return f"{quote(owner, safe='')}/{quote(name, safe='')}"


def current_token() -> Call[TokenRead]:
    return Call("GET", "/v1/tokens/current", _adapter(TokenRead))


def models(params: Query) -> Call[Page[ModelRead]]:
    return Call("GET", "/v1/models", _adapter(Page[ModelRead]), params)


def model(repo_id: str) -> Call[ModelRead]:
    return Call("GET", f"/v1/models/{_repo(repo_id)}", _adapter(ModelRead))


def revision(repo_id: str, ref: str) -> Call[RevisionRead]:
    """A recorded revision by its sha (or a prefix of it) or a Corral alias."""
    return Call("GET", f"/v1/models/{_repo(repo_id)}/revisions/{quote(ref, safe='')}", _adapter(RevisionRead))


def requirements(repo_id: str, params: Query) -> Call[HardwareRequirements]:
    return Call("GET", f"/v1/models/{_repo(repo_id)}/requirements", _adapter(HardwareRequirements), params)


def leaderboard(suite: str, params: Query) -> Call[Leaderboard]:
    return Call("GET", f"/v1/leaderboards/{quote(suite, safe='')}", _adapter(Leaderboard), params)


def leaderboard_text(suite: str, text_format: Literal["csv", "markdown"], params: Query) -> Call[str]:
    query = {**params, "format": text_format}
    return Call("GET", f"/v1/leaderboards/{quote(suite, safe='')}", "text", query)


def request_evaluation(body: EvaluationCreate, idempotency_key: str | None = None) -> Call[EvaluationRead]:
    key = idempotency_key or str(uuid.uuid4())  # one key per request: a retried POST finds the first evaluation
    return Call("POST", "/v1/evaluations", _adapter(EvaluationRead), body=body, idempotency_key=key)


def evaluations(params: Query) -> Call[Page[EvaluationSummary]]:
    return Call("GET", "/v1/evaluations", _adapter(Page[EvaluationSummary]), params)


def evaluation(evaluation_id: uuid.UUID | str) -> Call[EvaluationRead]:
    return Call("GET", f"/v1/evaluations/{evaluation_id}", _adapter(EvaluationRead))


def cancel_evaluation(evaluation_id: uuid.UUID | str) -> Call[EvaluationRead]:
    path = f"/v1/evaluations/{evaluation_id}/cancel"
    return Call("POST", path, _adapter(EvaluationRead), idempotent=True)


def compare(base: uuid.UUID | str, candidate: uuid.UUID | str) -> Call[Comparison]:
    return Call("GET", "/v1/compare", _adapter(Comparison), {"base": str(base), "candidate": str(candidate)})


def attempt_log(attempt_id: uuid.UUID | str, offset: int = 0) -> Call[bytes]:
    """The log from byte `offset` on, as bytes: a follower adds their length to its offset."""
    return Call("GET", f"/v1/attempts/{attempt_id}/log", "bytes", {"offset": offset or None})


def queue(limit: int | None = None) -> Call[QueueView]:
    return Call("GET", "/v1/queue", _adapter(QueueView), {"limit": limit})


def runners(params: Query) -> Call[Page[RunnerRead]]:
    return Call("GET", "/v1/runners", _adapter(Page[RunnerRead]), params)


def runner(runner_id: uuid.UUID | str) -> Call[RunnerRead]:
    return Call("GET", f"/v1/runners/{runner_id}", _adapter(RunnerRead))


def update_runner(runner_id: uuid.UUID | str, body: BaseModel) -> Call[RunnerRead]:
    return Call("PATCH", f"/v1/runners/{runner_id}", _adapter(RunnerRead), body=body)


def registration_token(body: BaseModel) -> Call[RegistrationTokenCreated]:
    return Call("POST", "/v1/runner-registration-tokens", _adapter(RegistrationTokenCreated), body=body)


def tokens(params: Query) -> Call[Page[TokenRead]]:
    return Call("GET", "/v1/tokens", _adapter(Page[TokenRead]), params)


def create_token(body: BaseModel) -> Call[TokenCreated]:
    return Call("POST", "/v1/tokens", _adapter(TokenCreated), body=body)


def revoke_token(token_id: uuid.UUID | str) -> Call[None]:
    return Call("DELETE", f"/v1/tokens/{token_id}", "none")


def with_cursor(call: Call[T], cursor: str) -> Call[T]:
    return dataclasses.replace(call, params={**call.params, "cursor": cursor})
