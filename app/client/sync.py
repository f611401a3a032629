"""`Corral`: the typed, blocking client (the CLI and the CI gate use it; so can a notebook)."""

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from corral.client import calls
from corral.client.calls import Call, retry_after
from corral.client.transport import (
    DEFAULT_SERVER,
    RETRIES,
    TIMEOUT_SECONDS,
    connect_backoff,
    failure,
    headers,
    should_retry,
    unreachable,
)
from corral.evaluations.schemas import EvaluationCreate, EvaluationRead, EvaluationSummary, QueueView
from corral.hardware.schemas import HardwareRequirements
from corral.registry.models.schemas import ModelRead
from corral.registry.revisions.schemas import RevisionRead
from corral.runners.schemas import RegistrationTokenCreate, RegistrationTokenCreated, RunnerRead, RunnerUpdate
from corral.schemas import Page
from corral.scores.schemas import Comparison, Leaderboard
from corral.tokens.schemas import TokenCreate, TokenCreated, TokenRead

T = TypeVar("T")
ItemT = TypeVar("ItemT")


class Corral:
    """A Corral server: `Corral("http://127.0.0.1:8000", token="crl_…")`. Errors are `app.client.CorralError`."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        token: str | None = None,
        *,
        timeout: float = TIMEOUT_SECONDS,
        retries: int = RETRIES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.retries = retries
        self.http = httpx.Client(base_url=self.server, headers=headers(token), timeout=timeout, transport=transport)

    def __enter__(self) -> "Corral":
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call[T]) -> T:
        """Sends one call, retrying what is safe to retry (Retry-After honoured), and reads its answer."""
        attempt = 0
        while True:
            try:
                response = self.http.send(call.request(self.http))
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ConnectError) and should_retry(call, None, attempt, self.retries):
                    time.sleep(connect_backoff(attempt))
                    attempt += 1
                    continue
                raise unreachable(self.server, exc) from None
            if response.status_code < 400:
                return call.answer(response)
            if not should_retry(call, response, attempt, self.retries):
                raise failure(self.server, response)
            time.sleep(retry_after(response, attempt))
            attempt += 1

    def pages(self, call: Call[Page[ItemT]]) -> Iterator[ItemT]:
        """Every item of a list, page after page (keyset cursors: stable while rows are added)."""
        while True:
            page = self.send(call)
            yield from page.items
            if not page.next_cursor:
                return
            call = calls.with_cursor(call, page.next_cursor)

    def whoami(self) -> TokenRead:
        return self.send(calls.current_token())

    def models(self, **filters: Any) -> Iterator[ModelRead]:
        return self.pages(calls.models(filters))

    def model(self, repo_id: str) -> ModelRead:
        return self.send(calls.model(repo_id))

    def revision(self, repo_id: str, ref: str) -> RevisionRead:
        return self.send(calls.revision(repo_id, ref))

    def requirements(self, repo_id: str, **params: Any) -> HardwareRequirements:
        return self.send(calls.requirements(repo_id, params))

    def leaderboard(self, suite: str, **filters: Any) -> Leaderboard:
        """The whole leaderboard (every page's rows in one document)."""
        first = self.send(calls.leaderboard(suite, filters))
        rows = list(first.items)
        cursor = first.next_cursor
        while cursor:
            page = self.send(calls.with_cursor(calls.leaderboard(suite, filters), cursor))
            rows += page.items
            cursor = page.next_cursor
        return first.model_copy(update={"items": rows, "next_cursor": None})

    def leaderboard_text(self, suite: str, text_format: Literal["csv", "markdown"], **filters: Any) -> str:
        return self.send(calls.leaderboard_text(suite, text_format, filters))

    def request_evaluation(self, body: EvaluationCreate, idempotency_key: str | None = None) -> EvaluationRead:
        return self.send(calls.request_evaluation(body, idempotency_key))

    def evaluations(self, **filters: Any) -> Iterator[EvaluationSummary]:
        return self.pages(calls.evaluations(filters))

    def evaluation(self, evaluation_id: str) -> EvaluationRead:
        return self.send(calls.evaluation(evaluation_id))

    def cancel_evaluation(self, evaluation_id: str) -> EvaluationRead:
        return self.send(calls.cancel_evaluation(evaluation_id))

    def compare(self, base: str, candidate: str) -> Comparison:
        return self.send(calls.compare(base, candidate))

    def attempt_log(self, attempt_id: str, offset: int = 0) -> bytes:
        return self.send(calls.attempt_log(attempt_id, offset))

    def queue(self, limit: int | None = None) -> QueueView:
        return self.send(calls.queue(limit))

    def runners(self, **filters: Any) -> Iterator[RunnerRead]:
        return self.pages(calls.runners(filters))

    def runner(self, runner_id: str) -> RunnerRead:
        return self.send(calls.runner(runner_id))

    def update_runner(self, runner_id: str, body: RunnerUpdate) -> RunnerRead:
        return self.send(calls.update_runner(runner_id, body))

    def registration_token(self, body: RegistrationTokenCreate) -> RegistrationTokenCreated:
        """A short-lived, single-use token a machine registers itself with (`corral-runner register`)."""
        return self.send(calls.registration_token(body))

    def tokens(self, **filters: Any) -> Iterator[TokenRead]:
        return self.pages(calls.tokens(filters))

    def create_token(self, body: TokenCreate) -> TokenCreated:
        return self.send(calls.create_token(body))

    def revoke_token(self, token_id: str) -> None:
        self.send(calls.revoke_token(token_id))
