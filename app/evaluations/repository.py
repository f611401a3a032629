"""Loading evaluations and moving their state; shared by the request side and the runner protocol.

Lock order, everywhere: evaluation row, then attempt, then job. The claim alone locks a job first, and it never
waits for an evaluation lock (it skips a locked one), so no two paths can wait on each other.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.errors import NotFound
from app.tables import AttemptLogChunk, Evaluation, EvaluationJob, EvaluationState, JobAttempt, JobState
from app.tables.base import utcnow

TERMINAL_EVALUATION_STATES = (
    EvaluationState.SUCCEEDED,
    EvaluationState.PARTIAL,
    EvaluationState.FAILED,
    EvaluationState.CANCELED,
)


async def load_evaluation(session: AsyncSession, evaluation_id: uuid.UUID, *, lock: bool = False) -> Evaluation:
    statement = select(Evaluation).where(Evaluation.id == evaluation_id)
    if lock:
        statement = statement.with_for_update()
    evaluation = (await session.execute(statement)).scalar_one_or_none()
    if evaluation is None:
        raise NotFound(f"No evaluation with id {evaluation_id}.")
    return evaluation


async def jobs_with_attempts(session: AsyncSession, evaluation_ids: Sequence[uuid.UUID]) -> list[EvaluationJob]:
    statement = (
        select(EvaluationJob)
        .where(EvaluationJob.evaluation_id.in_(evaluation_ids))
        .options(selectinload(EvaluationJob.attempts).selectinload(JobAttempt.runner))
        .order_by(EvaluationJob.shard_index)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())


async def refresh_state(session: AsyncSession, evaluation: Evaluation, now: datetime | None = None) -> None:
    """Derive the evaluation's state from its jobs' (call with the evaluation locked)."""
    if evaluation.state in TERMINAL_EVALUATION_STATES:
        return
    now = now or utcnow()
    states = list(
        (
            await session.execute(select(EvaluationJob.state).where(EvaluationJob.evaluation_id == evaluation.id))
        ).scalars()
    )
    if all(state == JobState.SUCCEEDED for state in states):
        evaluation.state, evaluation.finished_at = EvaluationState.SUCCEEDED, now
    elif any(state != JobState.QUEUED for state in states):
        evaluation.state = EvaluationState.RUNNING
        evaluation.started_at = evaluation.started_at or now
    await session.flush()


async def stop_jobs(session: AsyncSession, evaluation_id: uuid.UUID, now: datetime) -> None:
    """Queued jobs cancel at once; running ones are told to stop by their next heartbeat."""
    await session.execute(
        update(EvaluationJob)
        .where(EvaluationJob.evaluation_id == evaluation_id, EvaluationJob.state == JobState.QUEUED)
        .values(state=JobState.CANCELED, finished_at=now, updated_at=now)
    )
    await session.execute(
        update(EvaluationJob)
        .where(EvaluationJob.evaluation_id == evaluation_id, EvaluationJob.state == JobState.RUNNING)
        .values(cancel_requested=True, updated_at=now)
    )


async def finish_evaluation(
    session: AsyncSession, evaluation: Evaluation, state: EvaluationState, *, category: str | None, message: str
) -> None:
    """End an evaluation early (failure or cancel) and stop its other jobs (call with it locked)."""
    if evaluation.state in TERMINAL_EVALUATION_STATES:
        return
    now = utcnow()
    evaluation.state, evaluation.finished_at = state, now
    evaluation.failure_category, evaluation.failure_message = category, message[:4000]
    await stop_jobs(session, evaluation.id, now)
    await session.flush()


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


async def jobs_by_state(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(EvaluationJob.state, func.count()).group_by(EvaluationJob.state))
    counts = {state.value: 0 for state in JobState}
    counts.update({state.value: count for state, count in rows})
    return counts
