"""`AsyncCorral`: the same client for asyncio code (notebooks, services); the calls are shared with `Corral`."""

import asyncio
from collections.abc import AsyncIterator
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


class AsyncCorral:
    """`async with AsyncCorral(server, token) as corral: await corral.model("meta-llama/Llama-3.1-8B")`."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        token: str | None = None,
        *,
        timeout: float = TIMEOUT_SECONDS,
        retries: int = RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.retries = retries
        self.http = httpx.AsyncClient(
            base_url=self.server, headers=headers(token), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> "AsyncCorral":
        return self

    async def __aexit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self.http.send(call.request(self.http))
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ConnectError) and should_retry(call, None, attempt, self.retries):
                    await asyncio.sleep(connect_backoff(attempt))
                    attempt += 1
                    continue
                raise unreachable(self.server, exc) from None
            if response.status_code < 400:
                return call.answer(response)
            if not should_retry(call, response, attempt, self.retries):
                raise failure(self.server, response)
            await asyncio.sleep(retry_after(response, attempt))
            attempt += 1

    async def pages(self, call: Call[Page[ItemT]]) -> AsyncIterator[ItemT]:
        while True:
            page = await self.send(call)
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            call = calls.with_cursor(call, page.next_cursor)

    async def whoami(self) -> TokenRead:
        return await self.send(calls.current_token())

    def models(self, **filters: Any) -> AsyncIterator[ModelRead]:
        return self.pages(calls.models(filters))

    async def model(self, repo_id: str) -> ModelRead:
        return await self.send(calls.model(repo_id))

    async def revision(self, repo_id: str, ref: str) -> RevisionRead:
        return await self.send(calls.revision(repo_id, ref))

    async def requirements(self, repo_id: str, **params: Any) -> HardwareRequirements:
        return await self.send(calls.requirements(repo_id, params))

    async def leaderboard(self, suite: str, **filters: Any) -> Leaderboard:
        first = await self.send(calls.leaderboard(suite, filters))
        rows = list(first.items)
        cursor = first.next_cursor
        while cursor:
            page = await self.send(calls.with_cursor(calls.leaderboard(suite, filters), cursor))
            rows += page.items
            cursor = page.next_cursor
        return first.model_copy(update={"items": rows, "next_cursor": None})

    async def leaderboard_text(self, suite: str, text_format: Literal["csv", "markdown"], **filters: Any) -> str:
        return await self.send(calls.leaderboard_text(suite, text_format, filters))

    async def request_evaluation(self, body: EvaluationCreate, idempotency_key: str | None = None) -> EvaluationRead:
        return await self.send(calls.request_evaluation(body, idempotency_key))

    def evaluations(self, **filters: Any) -> AsyncIterator[EvaluationSummary]:
        return self.pages(calls.evaluations(filters))

    async def evaluation(self, evaluation_id: str) -> EvaluationRead:
        return await self.send(calls.evaluation(evaluation_id))

    async def cancel_evaluation(self, evaluation_id: str) -> EvaluationRead:
        return await self.send(calls.cancel_evaluation(evaluation_id))

    async def compare(self, base: str, candidate: str) -> Comparison:
        return await self.send(calls.compare(base, candidate))

    async def attempt_log(self, attempt_id: str, offset: int = 0) -> bytes:
        return await self.send(calls.attempt_log(attempt_id, offset))

    async def queue(self, limit: int | None = None) -> QueueView:
        return await self.send(calls.queue(limit))

    def runners(self, **filters: Any) -> AsyncIterator[RunnerRead]:
        return self.pages(calls.runners(filters))

    async def runner(self, runner_id: str) -> RunnerRead:
        return await self.send(calls.runner(runner_id))

    async def update_runner(self, runner_id: str, body: RunnerUpdate) -> RunnerRead:
        return await self.send(calls.update_runner(runner_id, body))

    async def registration_token(self, body: RegistrationTokenCreate) -> RegistrationTokenCreated:
        """A short-lived, single-use token a machine registers itself with (`corral-runner register`)."""
        return await self.send(calls.registration_token(body))

    def tokens(self, **filters: Any) -> AsyncIterator[TokenRead]:
        return self.pages(calls.tokens(filters))

    async def create_token(self, body: TokenCreate) -> TokenCreated:
        return await self.send(calls.create_token(body))

    async def revoke_token(self, token_id: str) -> None:
        await self.send(calls.revoke_token(token_id))
