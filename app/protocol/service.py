"""The runner protocol: claim, heartbeat, log, result, fail, release, and expiring lapsed leases.

Every write for an attempt is one conditional statement on (attempt, runner, lease token, state, lease not
lapsed); when it changes no row, the caller is told why (404, 403 or 409) and nothing is written. State changes
go through app/evaluations/state.py, in its lock order.
"""

import contextlib
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from corral.clock import SYSTEM_CLOCK, Clock
from corral.config import Settings
from corral.db import serialize, sqlite_writer_lock
from corral.documents import AcceleratorRecord
from corral.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, RangeNotSatisfiable, UnprocessableEntity
from corral.evaluations import state
from corral.evaluations.state import Settled
from corral.evaluations.wakeups import QueueSignal
from corral.hardware import fit
from corral.hardware.fit import MemoryNeed
from corral.protocol import repository
from corral.protocol.repository import attempt_of, live, refusal, refused, touch_runner
from corral.protocol.schemas import LmEvalResults
from corral.results.ingest import ResultsError, finite_document, parse_scores, task_tree
from corral.results.repository import canonical_json, new_result, record_scores
from corral.runners.matching import Capacity
from corral.tables import Evaluation, EvaluationJob, JobAttempt
from corral.tokens.credentials import hash_token
from corral.wire.enums import AttemptState, EvaluationState, FailureCategory, RunnerState
from corral.wire.protocol import (
    ClaimedJob,
    Failure,
    FailureReply,
    Heartbeat,
    HeartbeatReply,
    Release,
    ResultStored,
    ResultUpload,
)

CONTENT_RANGE = re.compile(r"^(?:bytes )?(\d{1,15})-(\d{1,15})(?:/(?:\d{1,15}|\*))?$")


@dataclass(frozen=True)
class Claim:
    job: ClaimedJob
    waited_seconds: float  # from the job becoming claimable to this claim


async def claim_once(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    signal: QueueSignal,
    runner_id: uuid.UUID,
    clock: Clock = SYSTEM_CLOCK,
    free: Sequence[AcceleratorRecord] | None = None,
) -> Claim | None:
    """One claim in its own unit of work (a long-poll tries many times and must hold nothing in between)."""
    writer = sqlite_writer_lock() if settings.is_sqlite else contextlib.nullcontext()
    async with writer, sessionmaker() as session:
        claim = await ProtocolService(session, settings, signal, clock).claim(runner_id, free)
        await session.commit()
    return claim


def _reply(settled: Settled) -> FailureReply:
    return FailureReply(
        job_state=settled.job_state.value,
        retried=settled.retried,
        available_at=settled.available_at,
        evaluation_state=settled.evaluation_state.value,
    )


class ProtocolService:
    def __init__(
        self, session: AsyncSession, settings: Settings, signal: QueueSignal | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.session = session
        self.settings = settings
        self.signal = signal or QueueSignal()
        self.clock = clock

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    async def claim(self, runner_id: uuid.UUID, free: Sequence[AcceleratorRecord] | None = None) -> Claim | None:
        """One atomic claim of the best job this runner can hold (with `free`: on what it has free now), or None."""
        now = self.clock.now()
        runner = await repository.lock_runner(self.session, runner_id)
        if runner is None or runner.deleted_at is not None:
            raise NotFound("This runner has been deleted.")
        await touch_runner(self.session, runner_id, now)
        if runner.state != RunnerState.ACTIVE:
            return None  # paused and draining runners take nothing new
        if await repository.running_attempts(self.session, runner_id) >= runner.max_concurrent_jobs:
            return None
        capacity = Capacity.of(runner, free)
        lease_token = secrets.token_urlsafe(32)
        attempt = state.NewAttempt(uuid.uuid4(), runner_id, hash_token(lease_token), now + self.lease)
        claimed = await state.claim(self.session, capacity, attempt, now)
        if claimed is None:
            return None
        _, placement = fit.best_shape(
            capacity.shapes, MemoryNeed(claimed.required_memory_bytes, claimed.required_device_bytes), claimed.backend
        )
        job = await repository.claimed_job(
            self.session, self.settings, claimed, attempt.id, attempt.lease_expires_at, lease_token, placement
        )
        return Claim(job=job, waited_seconds=max(0.0, (now - claimed.available_at).total_seconds()))

    async def heartbeat(
        self, runner_id: uuid.UUID, attempt_id: uuid.UUID, lease_token: str, body: Heartbeat
    ) -> HeartbeatReply:
        now = self.clock.now()
        expires = now + self.lease
        progress = body.progress.model_dump(mode="json", exclude_none=True)
        renewed = await repository.renew_lease(
            self.session, attempt_id, runner_id, lease_token, now, expires, progress, body.external_ref
        )
        if renewed is None:
            raise await refused(self.session, attempt_id, runner_id, lease_token, now)
        job_id, canceled = renewed
        await touch_runner(self.session, runner_id, now)
        if canceled:
            await state.canceled_at_heartbeat(self.session, attempt_id, job_id, now)
            return HeartbeatReply(
                lease_expires_at=None, cancel_requested=True, heartbeat_seconds=self.settings.heartbeat_seconds
            )
        return HeartbeatReply(
            lease_expires_at=expires, cancel_requested=False, heartbeat_seconds=self.settings.heartbeat_seconds
        )

    async def append_log(
        self, runner_id: uuid.UUID, attempt_id: uuid.UUID, lease_token: str, content_range: str | None, data: bytes
    ) -> int:
        """Append at the offset the Content-Range names; the wrong offset gets 416 with where the log ends."""
        match = CONTENT_RANGE.match(content_range or "")
        if match is None:
            raise BadRequest("Send Content-Range: bytes START-END (inclusive) for the appended bytes.")
        start, end = int(match.group(1)), int(match.group(2))
        if not data or end != start + len(data) - 1:
            raise BadRequest(f"Content-Range {start}-{end} does not match a body of {len(data)} bytes.")
        now = self.clock.now()
        size = await repository.grow_log(
            self.session,
            attempt_id,
            live(attempt_id, runner_id, lease_token, now),
            start,
            data,
            self.settings.max_log_bytes,
        )
        if size is None:
            problem = await refusal(self.session, attempt_id, runner_id, lease_token, now)
            if problem is not None:
                raise problem
            stored = await repository.log_size(self.session, attempt_id)
            if stored != start:
                raise RangeNotSatisfiable(
                    f"The log of attempt {attempt_id} holds {stored} bytes; append from there.",
                    headers={"Range": f"0-{stored}"},
                    log_bytes=stored,
                )
            raise PayloadTooLarge(f"An attempt's log is capped at {self.settings.max_log_bytes} bytes.")
        return size

    async def upload_result(
        self, runner_id: uuid.UUID, attempt_id: uuid.UUID, lease_token: str, body: ResultUpload
    ) -> tuple[ResultStored, bool]:
        """Store a job's lm-eval results; the same document again is answered as stored (by content hash)."""
        try:
            document = LmEvalResults.model_validate(body.results)
        except ValidationError as exc:
            first = exc.errors()[0]
            path = ".".join(str(part) for part in ("results", *first["loc"]))
            raise UnprocessableEntity(f"not lm-eval results: {first['msg']}", field=path) from None
        try:
            results = finite_document(body.results)  # lm-eval's NaN standard errors read "N/A"
            samples = finite_document(body.samples, "samples")
        except ResultsError as error:
            raise UnprocessableEntity(error.message, field=error.path) from None
        _, digest = canonical_json(results)
        await serialize(self.session)  # SQLite: from here on, alone among writers (PostgreSQL: row locks below)
        attempt = await attempt_of(self.session, attempt_id, runner_id, lease_token)
        job = await self.session.get(EvaluationJob, attempt.job_id)
        assert job is not None
        present = set(document.results) | set(document.groups)
        missing = [task for task in job.tasks if task not in present]
        if missing:
            raise UnprocessableEntity(
                f"the results lack this job's tasks: {', '.join(missing)}", field="results.results"
            )
        suite = await repository.suite_of_evaluation(self.session, job.evaluation_id)
        try:
            parsed = parse_scores(results, task_tree(suite, job.tasks))
        except ResultsError as error:
            raise UnprocessableEntity(error.message, field=error.path) from None
        evaluation = await state.lock(self.session, job.evaluation_id)
        # Looked up under the lock: a retried upload racing the first one is answered as stored, not 409.
        earlier = await repository.result_of_job(self.session, attempt.job_id)
        if earlier is not None:
            if earlier.attempt_id == attempt.id and earlier.content_sha256 == digest:
                return await repository.stored(self.session, earlier), False
            raise Conflict(f"Job {attempt.job_id} has a result already (sha256 {earlier.content_sha256}).")
        if evaluation.state in (EvaluationState.CANCELED, EvaluationState.FAILED):
            raise Conflict(f"Evaluation {evaluation.id} was {evaluation.state.value}; the result is not taken.")
        now = self.clock.now()
        held = live(attempt_id, runner_id, lease_token, now)
        if not await state.end_attempt(self.session, attempt_id, AttemptState.SUCCEEDED, now, message=None, held=held):
            raise await refused(self.session, attempt_id, runner_id, lease_token, now)
        result = new_result(
            job_id=job.id, evaluation_id=evaluation.id, attempt_id=attempt_id, document=results, samples=samples
        )
        self.session.add(result)
        await self.session.flush()
        await record_scores(self.session, evaluation.id, job.id, parsed)
        await state.job_succeeded(self.session, job, evaluation, suite, now)
        return await repository.stored(self.session, result), True

    async def fail(self, runner_id: uuid.UUID, attempt_id: uuid.UUID, lease_token: str, body: Failure) -> FailureReply:
        attempt, evaluation = await self._attempt_and_evaluation(attempt_id, runner_id, lease_token)
        now = self.clock.now()
        category = FailureCategory(body.category)
        held = live(attempt_id, runner_id, lease_token, now)
        ended = await state.end_attempt(
            self.session, attempt_id, AttemptState.FAILED, now, message=body.message, category=category, held=held
        )
        if not ended:
            raise await refused(self.session, attempt_id, runner_id, lease_token, now)
        settled = await state.failed(
            self.session, attempt.job_id, evaluation, category, body.message, now, self.settings, self.signal
        )
        return _reply(settled)

    async def release(
        self, runner_id: uuid.UUID, attempt_id: uuid.UUID, lease_token: str, body: Release
    ) -> FailureReply:
        """The runner hands the job back unfinished (it is going away): queued again at once, nothing counted."""
        attempt, evaluation = await self._attempt_and_evaluation(attempt_id, runner_id, lease_token)
        now = self.clock.now()
        held = live(attempt_id, runner_id, lease_token, now)
        ended = await state.end_attempt(
            self.session, attempt_id, AttemptState.RELEASED, now, message=body.reason, held=held
        )
        if not ended:
            raise await refused(self.session, attempt_id, runner_id, lease_token, now)
        return _reply(await state.released(self.session, attempt.job_id, evaluation, now, self.signal))

    async def _attempt_and_evaluation(
        self, attempt_id: uuid.UUID, runner_id: uuid.UUID, lease_token: str
    ) -> tuple[JobAttempt, Evaluation]:
        """The attempt (its runner and lease checked) and its evaluation, locked, in the lock order."""
        await serialize(self.session)
        attempt = await attempt_of(self.session, attempt_id, runner_id, lease_token)
        evaluation_id = await repository.evaluation_of_job(self.session, attempt.job_id)
        return attempt, await state.lock(self.session, evaluation_id)

    async def expire_leases(self, *, limit: int = 100) -> int:
        """Expire attempts whose lease lapsed and settle their jobs; safe to run in every replica at once."""
        return await state.expire_lapsed(
            self.session, self.clock.now(), self.settings.lease_seconds, self.settings, self.signal, limit
        )
