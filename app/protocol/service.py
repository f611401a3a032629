"""The runner protocol: claim, heartbeat, log, result, fail, release, and the reaper of lapsed leases.

Every write for an attempt is one conditional statement on (attempt, runner, lease token, state, lease not
lapsed); when it changes no row, the caller is told why (404, 403 or 409) and nothing is written.
"""

import contextlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import serialize, sqlite_writer_lock
from app.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    UnprocessableEntity,
)
from app.evaluations import repository
from app.evaluations.retry import after_failure
from app.evaluations.wakeups import QueueSignal, announce_work
from app.protocol.repository import attempt_of, claimed_job, end_attempt, live, refusal, refused, stored, touch_runner
from app.protocol.schemas import (
    ClaimedJob,
    Failure,
    FailureReply,
    Heartbeat,
    HeartbeatReply,
    LmEvalResults,
    Release,
    ResultStored,
    ResultUpload,
)
from app.results.ingest import ResultsError, finite_document, parse_scores, task_tree
from app.results.repository import canonical_json, new_result, record_scores, summarize_evaluation
from app.runners.matching import Capacity, Need
from app.runners.repository import registered_runners
from app.suites.schemas import SuiteDefinition
from app.tables import (
    AttemptLogChunk,
    AttemptState,
    Evaluation,
    EvaluationJob,
    EvaluationState,
    FailureCategory,
    JobAttempt,
    JobResult,
    JobState,
    Runner,
    RunnerState,
    SuiteVersion,
)
from app.tables.base import utcnow
from app.tokens.credentials import hash_token

CONTENT_RANGE = re.compile(r"^(?:bytes )?(\d{1,15})-(\d{1,15})(?:/(?:\d{1,15}|\*))?$")


@dataclass(frozen=True)
class Claim:
    job: ClaimedJob
    waited_seconds: float  # from the job becoming claimable to this claim


async def claim_once(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, signal: QueueSignal, runner_id: uuid.UUID
) -> Claim | None:
    """One claim in its own unit of work (a long-poll tries many times and must hold nothing in between)."""
    writer = sqlite_writer_lock() if settings.is_sqlite else contextlib.nullcontext()
    async with writer, sessionmaker() as session:
        claim = await QueueService(session, settings, signal).claim(runner_id)
        await session.commit()
    return claim


class QueueService:
    def __init__(self, session: AsyncSession, settings: Settings, signal: QueueSignal | None = None) -> None:
        self.session = session
        self.settings = settings
        self.signal = signal or QueueSignal()

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    async def claim(self, runner_id: uuid.UUID) -> Claim | None:
        """One atomic claim of the best job this runner can hold, or None."""
        now = utcnow()
        # The runner's row lock keeps its own concurrent claims (one per long-poll) within max_concurrent_jobs.
        runner = await self.session.scalar(select(Runner).where(Runner.id == runner_id).with_for_update())
        if runner is None or runner.deleted_at is not None:
            raise NotFound("This runner has been deleted.")
        await touch_runner(self.session, runner_id, now)
        if runner.state != RunnerState.ACTIVE:
            return None  # paused and draining runners take nothing new
        running = await self.session.scalar(
            select(func.count()).where(JobAttempt.runner_id == runner_id, JobAttempt.state == AttemptState.RUNNING)
        )
        if (running or 0) >= runner.max_concurrent_jobs:
            return None
        candidate = (
            select(EvaluationJob.id)
            .where(
                EvaluationJob.state == JobState.QUEUED,
                EvaluationJob.available_at <= now,
                *Capacity.of(runner).job_filter(),
            )
            .order_by(
                EvaluationJob.priority.desc(), EvaluationJob.queued_at, EvaluationJob.shard_index, EvaluationJob.id
            )
            .limit(1)  # inside the subquery: the UPDATE can never take more than one row
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer at a time anyway
            .scalar_subquery()
        )
        claimed = (
            await self.session.execute(
                update(EvaluationJob)
                .where(EvaluationJob.id == candidate, EvaluationJob.state == JobState.QUEUED)
                .values(
                    state=JobState.RUNNING,
                    attempt_count=EvaluationJob.attempt_count + 1,
                    started_at=func.coalesce(EvaluationJob.started_at, now),
                    updated_at=now,
                )
                .returning(
                    EvaluationJob.id,
                    EvaluationJob.attempt_count,
                    EvaluationJob.evaluation_id,
                    EvaluationJob.available_at,
                )
                .execution_options(synchronize_session=False)
            )
        ).first()
        if claimed is None:
            return None
        job_id, number, evaluation_id, available_at = claimed
        lease_token = secrets.token_urlsafe(32)
        attempt = JobAttempt(
            job_id=job_id,
            runner_id=runner_id,
            number=number,
            lease_token_hash=hash_token(lease_token),
            state=AttemptState.RUNNING,
            claimed_at=now,
            lease_expires_at=now + self.lease,
            progress={},
            log_bytes=0,
        )
        self.session.add(attempt)
        await self.session.flush()
        # Mark the evaluation running without ever waiting for its lock (see the lock order in repository).
        unlocked = (
            select(Evaluation.id)
            .where(Evaluation.id == evaluation_id, Evaluation.state == EvaluationState.QUEUED)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        await self.session.execute(
            update(Evaluation)
            .where(Evaluation.id == unlocked)
            .values(state=EvaluationState.RUNNING, started_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        job = await claimed_job(self.session, self.settings, job_id, attempt, lease_token)
        return Claim(job=job, waited_seconds=max(0.0, (now - available_at).total_seconds()))

    async def heartbeat(
        self, runner_id: uuid.UUID, attempt_id: uuid.UUID, lease_token: str, body: Heartbeat
    ) -> HeartbeatReply:
        now = utcnow()
        expires = now + self.lease
        row = (
            await self.session.execute(
                update(JobAttempt)
                .where(*live(attempt_id, runner_id, lease_token, now))
                .values(
                    lease_expires_at=expires,
                    last_heartbeat_at=now,
                    progress=body.progress.model_dump(mode="json", exclude_none=True),
                )
                .returning(JobAttempt.job_id)
                .execution_options(synchronize_session=False)
            )
        ).first()
        if row is None:
            raise await refused(self.session, attempt_id, runner_id, lease_token, now)
        await touch_runner(self.session, runner_id, now)
        cancel = await self.session.scalar(select(EvaluationJob.cancel_requested).where(EvaluationJob.id == row.job_id))
        if cancel:
            await end_attempt(self.session, attempt_id, AttemptState.CANCELED, now, message="Canceled on request.")
            await self.session.execute(
                update(EvaluationJob)
                .where(EvaluationJob.id == row.job_id, EvaluationJob.state == JobState.RUNNING)
                .values(state=JobState.CANCELED, finished_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
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
        now = utcnow()
        row = (
            await self.session.execute(
                update(JobAttempt)
                .where(
                    *live(attempt_id, runner_id, lease_token, now),
                    JobAttempt.log_bytes == start,
                    JobAttempt.log_bytes + len(data) <= self.settings.max_log_bytes,
                )
                .values(log_bytes=JobAttempt.log_bytes + len(data))
                .returning(JobAttempt.log_bytes)
                .execution_options(synchronize_session=False)
            )
        ).first()
        if row is None:
            problem = await refusal(self.session, attempt_id, runner_id, lease_token, now)
            if problem is not None:
                raise problem
            stored = await self.session.scalar(select(JobAttempt.log_bytes).where(JobAttempt.id == attempt_id))
            if stored != start:
                raise RangeNotSatisfiable(
                    f"The log of attempt {attempt_id} holds {stored} bytes; append from there.",
                    headers={"Range": f"0-{stored}"},
                    log_bytes=stored,
                )
            raise PayloadTooLarge(f"An attempt's log is capped at {self.settings.max_log_bytes} bytes.")
        self.session.add(AttemptLogChunk(attempt_id=attempt_id, offset=start, data=data))
        await self.session.flush()
        return int(row.log_bytes)

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
        definition = await self.session.scalar(
            select(SuiteVersion.definition)
            .join(Evaluation, Evaluation.suite_version_id == SuiteVersion.id)
            .where(Evaluation.id == job.evaluation_id)
        )
        try:
            parsed = parse_scores(results, task_tree(SuiteDefinition.model_validate(definition), job.tasks))
        except ResultsError as error:
            raise UnprocessableEntity(error.message, field=error.path) from None
        evaluation = await repository.load_evaluation(self.session, job.evaluation_id, lock=True)
        # Looked up under the lock: a retried upload racing the first one is answered as stored, not 409.
        earlier = await self.session.scalar(select(JobResult).where(JobResult.job_id == attempt.job_id))
        if earlier is not None:
            if earlier.attempt_id == attempt.id and earlier.content_sha256 == digest:
                return await stored(self.session, earlier), False
            raise Conflict(f"Job {attempt.job_id} has a result already (sha256 {earlier.content_sha256}).")
        if evaluation.state in (EvaluationState.CANCELED, EvaluationState.FAILED):
            raise Conflict(f"Evaluation {evaluation.id} was {evaluation.state.value}; the result is not taken.")
        now = utcnow()
        ended = await end_attempt(
            self.session, attempt_id, AttemptState.SUCCEEDED, now, holder=(runner_id, lease_token), message=None
        )
        if not ended:
            raise await refused(self.session, attempt_id, runner_id, lease_token, now)
        await self.session.refresh(job)
        job.state, job.finished_at = JobState.SUCCEEDED, now
        result = new_result(
            job_id=job.id,
            evaluation_id=evaluation.id,
            attempt_id=attempt_id,
            document=results,
            samples=samples,
        )
        self.session.add(result)
        await self.session.flush()
        await record_scores(self.session, evaluation.id, job.id, parsed)
        await repository.refresh_state(self.session, evaluation, now)
        if evaluation.state == EvaluationState.SUCCEEDED:
            await summarize_evaluation(self.session, evaluation)
        return await stored(self.session, result), True

    async def fail(self, runner_id: uuid.UUID, attempt_id: uuid.UUID, lease_token: str, body: Failure) -> FailureReply:
        attempt, evaluation = await self._attempt_and_evaluation(attempt_id, runner_id, lease_token)
        now = utcnow()
        category = FailureCategory(body.category)
        ended = await end_attempt(
            self.session,
            attempt_id,
            AttemptState.FAILED,
            now,
            holder=(runner_id, lease_token),
            message=body.message,
            category=category,
        )
        if not ended:
            raise await refused(self.session, attempt_id, runner_id, lease_token, now)
        return await self._settle(attempt.job_id, evaluation, category, body.message, now)

    async def release(
        self, runner_id: uuid.UUID, attempt_id: uuid.UUID, lease_token: str, body: Release
    ) -> FailureReply:
        """The runner hands the job back unfinished (it is going away): queued again at once, nothing counted."""
        attempt, evaluation = await self._attempt_and_evaluation(attempt_id, runner_id, lease_token)
        now = utcnow()
        ended = await end_attempt(
            self.session, attempt_id, AttemptState.RELEASED, now, holder=(runner_id, lease_token), message=body.reason
        )
        if not ended:
            raise await refused(self.session, attempt_id, runner_id, lease_token, now)
        job = await self.session.get(EvaluationJob, attempt.job_id, populate_existing=True)
        assert job is not None
        if job.cancel_requested or evaluation.state in repository.TERMINAL_EVALUATION_STATES:
            job.state, job.finished_at = JobState.CANCELED, now
        else:
            job.state, job.available_at = JobState.QUEUED, now
            await self.session.flush()
            await announce_work(self.session, self.signal, 1)
        await self.session.flush()
        requeued = job.state == JobState.QUEUED
        return FailureReply(
            job_state=job.state.value,
            retried=requeued,
            available_at=now if requeued else None,
            evaluation_state=evaluation.state.value,
        )

    async def _attempt_and_evaluation(
        self, attempt_id: uuid.UUID, runner_id: uuid.UUID, lease_token: str
    ) -> tuple[JobAttempt, Evaluation]:
        """The attempt (its runner and lease checked) and its evaluation, locked, in the lock order."""
        await serialize(self.session)
        attempt = await attempt_of(self.session, attempt_id, runner_id, lease_token)
        evaluation_id = await self.session.scalar(
            select(EvaluationJob.evaluation_id).where(EvaluationJob.id == attempt.job_id)
        )
        assert evaluation_id is not None
        return attempt, await repository.load_evaluation(self.session, evaluation_id, lock=True)

    async def expire_leases(self, *, limit: int = 100) -> int:
        """Expire attempts whose lease lapsed and settle their jobs; safe to run in every replica at once."""
        await serialize(self.session)
        now = utcnow()
        rows = await self.session.execute(
            select(JobAttempt.id, JobAttempt.job_id, EvaluationJob.evaluation_id)
            .join(EvaluationJob, EvaluationJob.id == JobAttempt.job_id)
            .where(JobAttempt.state == AttemptState.RUNNING, JobAttempt.lease_expires_at <= now)
            .limit(limit)
        )
        expired = 0
        for attempt_id, job_id, evaluation_id in rows.all():
            locked = await self.session.scalar(
                select(Evaluation).where(Evaluation.id == evaluation_id).with_for_update(skip_locked=True)
            )
            if locked is None:
                continue  # another replica is on it
            message = f"No heartbeat for {self.settings.lease_seconds} s: the runner is presumed lost."
            lost = await self.session.execute(
                update(JobAttempt)
                .where(
                    JobAttempt.id == attempt_id,
                    JobAttempt.state == AttemptState.RUNNING,
                    JobAttempt.lease_expires_at <= now,
                )
                .values(
                    state=AttemptState.LOST,
                    finished_at=now,
                    failure_category=FailureCategory.LEASE_EXPIRED.value,
                    failure_message=message,
                )
                .execution_options(synchronize_session=False)
            )
            if lost.rowcount != 1:  # type: ignore[attr-defined]
                continue  # a heartbeat or another replica got there first
            await self._settle(job_id, locked, FailureCategory.LEASE_EXPIRED, message, now)
            expired += 1
        return expired

    async def _settle(
        self, job_id: uuid.UUID, evaluation: Evaluation, category: FailureCategory, message: str, now: datetime
    ) -> FailureReply:
        """After a failed or lost attempt: retry the job, or fail it and its evaluation (evaluation locked)."""
        job = await self.session.get(EvaluationJob, job_id, populate_existing=True)
        assert job is not None
        retry_at: datetime | None = None
        reason = message
        if job.cancel_requested or evaluation.state in repository.TERMINAL_EVALUATION_STATES:
            job.state, job.finished_at = JobState.CANCELED, now
        else:
            # Only the out-of-memory rule asks which runners could hold a bigger need: the reaper settles many
            # lapsed attempts per pass and should not read every runner for each.
            oom = category == FailureCategory.OUT_OF_MEMORY
            runners = await registered_runners(self.session) if oom else []
            settlement = after_failure(
                Need.of(job),
                job.infrastructure_failures,
                job.oom_failures,
                category,
                message,
                self.settings,
                [Capacity.of(runner) for runner in runners],
            )
            job.infrastructure_failures, job.oom_failures = settlement.infrastructure_failures, settlement.oom_failures
            job.required_memory_bytes = settlement.need.memory_bytes
            job.required_device_bytes = settlement.need.device_bytes
            reason = settlement.reason
            if settlement.retry_after is not None:
                retry_at = now + settlement.retry_after
        if retry_at is not None:
            job.state, job.available_at = JobState.QUEUED, retry_at
            await self.session.flush()
            await announce_work(self.session, self.signal, 1)
        elif job.state == JobState.RUNNING:
            job.state, job.finished_at = JobState.FAILED, now
            await self.session.flush()
            await repository.finish_evaluation(
                self.session, evaluation, EvaluationState.FAILED, category=category.value, message=reason
            )
        await self.session.flush()
        return FailureReply(
            job_state=job.state.value,
            retried=retry_at is not None,
            available_at=retry_at,
            evaluation_state=evaluation.state.value,
        )
