"""The SQL of evaluations, their jobs and attempts: loading, the conditional updates state changes are made of
(app/evaluations/state.py decides which), the queue in claim order, and logs."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from corral.documents import EvaluationConfig, StoredRequirements
from corral.errors import NotFound
from corral.runners.matching import Capacity
from corral.tables import (
    AttemptLogChunk,
    Evaluation,
    EvaluationJob,
    JobAttempt,
    JobResult,
    Model,
    Revision,
    SuiteVersion,
)
from corral.wire.enums import AttemptState, EvaluationState, FailureCategory, JobState

# The claim order: priority first, then age (and a fixed order among equals).
CLAIM_ORDER = (EvaluationJob.priority.desc(), EvaluationJob.queued_at, EvaluationJob.shard_index, EvaluationJob.id)


@dataclass(frozen=True)
class ClaimedRow:
    """What the claim statement returns: the job and what the claimed document needs of its evaluation."""

    job_id: uuid.UUID
    attempt_number: int
    evaluation_id: uuid.UUID
    available_at: datetime
    required_memory_bytes: int
    required_device_bytes: int
    backend: str
    tasks: list[str]
    shard_index: int
    config: EvaluationConfig
    batch_size: str
    suite_version_id: uuid.UUID
    requirements: StoredRequirements
    sha: str
    code_trusted_at: datetime | None


async def add_attempt(session: AsyncSession, values: dict[str, object]) -> None:
    """The claim's attempt, as one INSERT (nothing of the ORM's unit of work is needed for it)."""
    await session.execute(insert(JobAttempt).values(**values))


async def claim_next(session: AsyncSession, capacity: Capacity, now: datetime) -> ClaimedRow | None:
    """The claim: one statement moves the best claimable job this capacity holds from queued to running."""
    candidate = (
        select(EvaluationJob.id)
        .where(EvaluationJob.state == JobState.QUEUED, EvaluationJob.available_at <= now, *capacity.job_filter())
        .order_by(*CLAIM_ORDER)
        .limit(1)  # inside the subquery: the UPDATE can never take more than one row
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer at a time anyway
        .scalar_subquery()
    )
    claimed = (
        await session.execute(
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
                EvaluationJob.required_memory_bytes,
                EvaluationJob.required_device_bytes,
                EvaluationJob.backend,
                EvaluationJob.tasks,
                EvaluationJob.shard_index,
            )
            .execution_options(synchronize_session=False)
        )
    ).first()
    if claimed is None:
        return None
    # What the claimed document needs of the job's evaluation (SQLite's RETURNING cannot carry a correlated
    # subquery, so it is one more read, by primary key).
    evaluation = (
        await session.execute(
            select(
                Evaluation.config,
                Evaluation.batch_size,
                Evaluation.suite_version_id,
                Evaluation.requirements,
                Revision.sha,
                Revision.code_trusted_at,
            )
            .join(Revision, Revision.id == Evaluation.revision_id)
            .where(Evaluation.id == claimed.evaluation_id)
        )
    ).one()
    return ClaimedRow(*claimed, *evaluation)


async def load_evaluation(session: AsyncSession, evaluation_id: uuid.UUID, *, lock: bool = False) -> Evaluation:
    statement = select(Evaluation).where(Evaluation.id == evaluation_id)
    if lock:
        statement = statement.with_for_update()
    evaluation = (await session.execute(statement)).scalar_one_or_none()
    if evaluation is None:
        raise NotFound(f"No evaluation with id {evaluation_id}.")
    return evaluation


async def lock_unless_locked(session: AsyncSession, evaluation_id: uuid.UUID) -> Evaluation | None:
    """The evaluation, locked, or None when another transaction holds it (SKIP LOCKED)."""
    return await session.scalar(
        select(Evaluation).where(Evaluation.id == evaluation_id).with_for_update(skip_locked=True)
    )


async def identity(session: AsyncSession, evaluation: Evaluation) -> tuple[Model, Revision, SuiteVersion]:
    model = await session.get(Model, evaluation.model_id)
    revision = await session.get(Revision, evaluation.revision_id)
    suite = await session.get(SuiteVersion, evaluation.suite_version_id)
    assert model is not None
    assert revision is not None
    assert suite is not None
    return model, revision, suite


async def by_idempotency_key(session: AsyncSession, token_id: uuid.UUID | None, key: str) -> Evaluation | None:
    statement = select(Evaluation).where(
        Evaluation.requested_by_token_id == token_id, Evaluation.idempotency_key == key
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def newest_with_config(
    session: AsyncSession, digest: str, states: Sequence[EvaluationState]
) -> Evaluation | None:
    statement = (
        select(Evaluation)
        .where(Evaluation.config_hash == digest, Evaluation.state.in_(states))
        .order_by(Evaluation.created_at.desc())
        .limit(1)
    )
    return (await session.execute(statement)).scalar_one_or_none()


def listing(model: str | None, suite: str | None, state: EvaluationState | None) -> Select[Evaluation]:
    statement: Select[Evaluation] = select(Evaluation)
    if model is not None:
        statement = statement.join(Model, Model.id == Evaluation.model_id).where(Model.repo_id == model)
    if suite is not None:
        statement = statement.join(SuiteVersion, SuiteVersion.id == Evaluation.suite_version_id).where(
            SuiteVersion.name == suite
        )
    if state is not None:
        statement = statement.where(Evaluation.state == state)
    return statement


async def jobs_with_attempts(session: AsyncSession, evaluation_ids: Sequence[uuid.UUID]) -> list[EvaluationJob]:
    statement = (
        select(EvaluationJob)
        .where(EvaluationJob.evaluation_id.in_(evaluation_ids))
        .options(selectinload(EvaluationJob.attempts).selectinload(JobAttempt.runner))
        .order_by(EvaluationJob.shard_index)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())


async def job_states(session: AsyncSession, evaluation_id: uuid.UUID) -> list[JobState]:
    rows = await session.execute(select(EvaluationJob.state).where(EvaluationJob.evaluation_id == evaluation_id))
    return list(rows.scalars())


async def fresh_job(session: AsyncSession, job_id: uuid.UUID) -> EvaluationJob:
    """The job as the database has it now (another transaction may have moved it)."""
    job = await session.get(EvaluationJob, job_id, populate_existing=True)
    assert job is not None
    return job


async def queued_jobs(session: AsyncSession, limit: int) -> list[tuple[EvaluationJob, EvaluationConfig]]:
    """Queued jobs in claim order, each with its evaluation's config."""
    statement = (
        select(EvaluationJob, Evaluation.config)
        .join(Evaluation, Evaluation.id == EvaluationJob.evaluation_id)
        .where(EvaluationJob.state == JobState.QUEUED)
        .order_by(*CLAIM_ORDER)
        .limit(limit)
    )
    return [(job, config) for job, config in (await session.execute(statement)).all()]


async def count_jobs(session: AsyncSession, state: JobState) -> int:
    return int((await session.execute(select(func.count()).where(EvaluationJob.state == state))).scalar_one())


async def running_by_runner(session: AsyncSession) -> dict[uuid.UUID, int]:
    rows = await session.execute(
        select(JobAttempt.runner_id, func.count())
        .where(JobAttempt.state == AttemptState.RUNNING)
        .group_by(JobAttempt.runner_id)
    )
    return {runner_id: int(count) for runner_id, count in rows.all()}


async def jobs_by_state(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(EvaluationJob.state, func.count()).group_by(EvaluationJob.state))
    counts = {state.value: 0 for state in JobState}
    counts.update({state.value: count for state, count in rows})
    return counts


async def cancel_queued_jobs(session: AsyncSession, evaluation_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(EvaluationJob)
        .where(EvaluationJob.evaluation_id == evaluation_id, EvaluationJob.state == JobState.QUEUED)
        .values(state=JobState.CANCELED, finished_at=now, updated_at=now)
    )


async def ask_running_jobs_to_stop(session: AsyncSession, evaluation_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(EvaluationJob)
        .where(EvaluationJob.evaluation_id == evaluation_id, EvaluationJob.state == JobState.RUNNING)
        .values(cancel_requested=True, updated_at=now)
    )


async def cancel_running_job(session: AsyncSession, job_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(EvaluationJob)
        .where(EvaluationJob.id == job_id, EvaluationJob.state == JobState.RUNNING)
        .values(state=JobState.CANCELED, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def start_unless_locked(session: AsyncSession, evaluation_id: uuid.UUID, now: datetime) -> None:
    """A queued evaluation becomes running, unless another transaction holds its lock (it is being decided)."""
    unlocked = (
        select(Evaluation.id)
        .where(Evaluation.id == evaluation_id, Evaluation.state == EvaluationState.QUEUED)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    await session.execute(
        update(Evaluation)
        .where(Evaluation.id == unlocked)
        .values(state=EvaluationState.RUNNING, started_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def end_attempt(
    session: AsyncSession,
    conditions: Sequence[object],
    state: AttemptState,
    now: datetime,
    *,
    message: str | None,
    category: FailureCategory | None = None,
) -> bool:
    """End the attempt the conditions name (one row); whether a row changed."""
    result = await session.execute(
        update(JobAttempt)
        .where(*conditions)  # type: ignore[arg-type]
        .values(
            state=state,
            finished_at=now,
            failure_category=category.value if category else None,
            failure_message=message,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def lapsed_attempts(
    session: AsyncSession, now: datetime, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]:
    """Running attempts whose lease has lapsed: (attempt, job, evaluation)."""
    rows = await session.execute(
        select(JobAttempt.id, JobAttempt.job_id, EvaluationJob.evaluation_id)
        .join(EvaluationJob, EvaluationJob.id == JobAttempt.job_id)
        .where(JobAttempt.state == AttemptState.RUNNING, JobAttempt.lease_expires_at <= now)
        .limit(limit)
    )
    return [(attempt_id, job_id, evaluation_id) for attempt_id, job_id, evaluation_id in rows.all()]


async def log_tail(session: AsyncSession, attempt: JobAttempt, max_bytes: int = 4096) -> str:
    """The last `max_bytes` of an attempt's log (whole chunks read from the end)."""
    chunks: list[bytes] = []
    size = 0
    rows = await session.execute(
        select(AttemptLogChunk.data)
        .where(AttemptLogChunk.attempt_id == attempt.id)
        .order_by(AttemptLogChunk.offset.desc())
        .limit(64)
    )
    for data in rows.scalars():
        chunks.append(data)
        size += len(data)
        if size >= max_bytes:
            break
    return b"".join(reversed(chunks))[-max_bytes:].decode("utf-8", errors="replace")


async def full_log(session: AsyncSession, attempt_id: uuid.UUID) -> bytes:
    rows = await session.execute(
        select(AttemptLogChunk.data).where(AttemptLogChunk.attempt_id == attempt_id).order_by(AttemptLogChunk.offset)
    )
    return b"".join(rows.scalars())


async def evaluation_with_result(session: AsyncSession, digest: str, revision_id: uuid.UUID) -> uuid.UUID | None:
    """The evaluation of this revision that holds a results document with this content hash."""
    return await session.scalar(
        select(JobResult.evaluation_id)
        .join(Evaluation, Evaluation.id == JobResult.evaluation_id)
        .where(JobResult.content_sha256 == digest, Evaluation.revision_id == revision_id)
    )
