"""Every change of state of evaluations, jobs and attempts, in one place, and the order their rows are locked in.

    evaluation  queued -> running -> succeeded | partial | failed | canceled    (queued -> failed | canceled too)
    job         queued -> running -> succeeded | failed | canceled;  running -> queued (a retry, a hand-back)
    attempt     running -> succeeded | failed | lost | canceled | released

Lock order, everywhere: the evaluation row, then the attempt, then the job. The claim alone locks a job first
(and its runner), and it never waits for an evaluation lock (it skips a locked one), so no two paths can wait on
each other. Functions that take an `evaluation` expect it locked (`lock`); the runner protocol, the reaper,
cancel and imports all change state through here. What a failure leads to is a pure rule (app/evaluations/retry.py).
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from corral import changes
from corral.config import Settings
from corral.db import serialize
from corral.errors import Conflict
from corral.evaluations import repository
from corral.evaluations.retry import after_failure
from corral.evaluations.wakeups import QueueSignal, announce_work
from corral.results.repository import summarize_scores
from corral.runners.matching import Capacity, Need
from corral.runners.repository import registered_runners
from corral.suites.schemas import SuiteDefinition
from corral.tables import Evaluation, EvaluationJob, JobAttempt
from corral.wire.enums import AttemptState, EvaluationState, FailureCategory, JobState

TERMINAL_EVALUATION_STATES = (
    EvaluationState.SUCCEEDED,
    EvaluationState.PARTIAL,
    EvaluationState.FAILED,
    EvaluationState.CANCELED,
)


@dataclass(frozen=True)
class Settled:
    """Where a job stands after an attempt ended without a result."""

    job_state: JobState
    retried: bool
    available_at: datetime | None
    evaluation_state: EvaluationState


async def lock(session: AsyncSession, evaluation_id: uuid.UUID) -> Evaluation:
    """The evaluation, locked: the first lock of the order (SQLite: its writers are serialized as a whole)."""
    await serialize(session)
    return await repository.load_evaluation(session, evaluation_id, lock=True)


async def refresh(session: AsyncSession, evaluation: Evaluation, now: datetime) -> None:
    """Derive a live evaluation's state from its jobs'."""
    if evaluation.state in TERMINAL_EVALUATION_STATES:
        return
    states = await repository.job_states(session, evaluation.id)
    if all(state == JobState.SUCCEEDED for state in states):
        evaluation.state, evaluation.finished_at = EvaluationState.SUCCEEDED, now
    elif any(state != JobState.QUEUED for state in states):
        evaluation.state = EvaluationState.RUNNING
        evaluation.started_at = evaluation.started_at or now
    await session.flush()


async def finish(
    session: AsyncSession,
    evaluation: Evaluation,
    state: EvaluationState,
    now: datetime,
    *,
    category: str | None,
    message: str,
) -> None:
    """End an evaluation early (failed or canceled): queued jobs cancel at once, running ones are told to stop
    by their next heartbeat."""
    if evaluation.state in TERMINAL_EVALUATION_STATES:
        return
    evaluation.state, evaluation.finished_at = state, now
    evaluation.failure_category, evaluation.failure_message = category, message[:4000]
    await repository.cancel_queued_jobs(session, evaluation.id, now)
    await repository.ask_running_jobs_to_stop(session, evaluation.id, now)
    await session.flush()


async def cancel(session: AsyncSession, evaluation_id: uuid.UUID, by: str, now: datetime) -> None:
    evaluation = await lock(session, evaluation_id)
    if evaluation.state in (EvaluationState.SUCCEEDED, EvaluationState.PARTIAL, EvaluationState.FAILED):
        raise Conflict(f"Evaluation {evaluation_id} has {evaluation.state.value} already; nothing to cancel.")
    await finish(session, evaluation, EvaluationState.CANCELED, now, category=None, message=f"Canceled by {by}.")


async def scored(session: AsyncSession, evaluation: Evaluation, suite: SuiteDefinition) -> None:
    """Every job's result is in: the summary and average from all its scores; an evaluation that misses some of
    its suite's scores is `partial`, never `succeeded`."""
    summary = await summarize_scores(session, evaluation.id, suite)
    evaluation.summary, evaluation.average = summary, summary["average"]
    changes.note(session.sync_session, "scores")
    if evaluation.state == EvaluationState.SUCCEEDED and not summary["complete"]:
        evaluation.state = EvaluationState.PARTIAL
        evaluation.failure_message = "Scores are missing for " + ", ".join(summary["missing"]) + "."
    await session.flush()


@dataclass(frozen=True, slots=True)
class NewAttempt:
    """The attempt a claim starts: its id, its runner, its lease token's hash and when the lease lapses."""

    id: uuid.UUID
    runner_id: uuid.UUID
    lease_token_hash: str
    lease_expires_at: datetime


async def claim(
    session: AsyncSession, capacity: Capacity, attempt: NewAttempt, now: datetime
) -> repository.ClaimedRow | None:
    """The claim: the best claimable job this capacity holds moves from queued to running with its new running
    attempt, and a queued evaluation starts, unless its lock is held (whoever holds it decides its state, and
    `refresh` derives it from the jobs then)."""
    claimed = await repository.claim_next(session, capacity, now)
    if claimed is None:
        return None
    await repository.add_attempt(
        session,
        {
            "id": attempt.id,
            "job_id": claimed.job_id,
            "runner_id": attempt.runner_id,
            "number": claimed.attempt_number,
            "lease_token_hash": attempt.lease_token_hash,
            "state": AttemptState.RUNNING,
            "claimed_at": now,
            "lease_expires_at": attempt.lease_expires_at,
            "progress": {},
            "log_bytes": 0,
        },
    )
    await repository.start_unless_locked(session, claimed.evaluation_id, now)
    return claimed


async def end_attempt(
    session: AsyncSession,
    attempt_id: uuid.UUID,
    state: AttemptState,
    now: datetime,
    *,
    message: str | None,
    category: FailureCategory | None = None,
    held: Sequence[object] = (),
) -> bool:
    """End a running attempt; with `held` (the runner protocol's lease conditions) only if they still hold.
    Whether it ended."""
    conditions = [JobAttempt.id == attempt_id, JobAttempt.state == AttemptState.RUNNING, *held]
    return await repository.end_attempt(session, conditions, state, now, message=message, category=category)


async def canceled_at_heartbeat(session: AsyncSession, attempt_id: uuid.UUID, job_id: uuid.UUID, now: datetime) -> None:
    """The runner heard of the cancel: its attempt and the job end."""
    await end_attempt(session, attempt_id, AttemptState.CANCELED, now, message="Canceled on request.")
    await repository.cancel_running_job(session, job_id, now)


async def job_succeeded(
    session: AsyncSession, job: EvaluationJob, evaluation: Evaluation, suite: SuiteDefinition, now: datetime
) -> None:
    """The job's result is stored: the job succeeded, and with the last one the evaluation is scored."""
    await session.refresh(job)
    job.state, job.finished_at = JobState.SUCCEEDED, now
    await session.flush()
    await refresh(session, evaluation, now)
    if evaluation.state == EvaluationState.SUCCEEDED:
        await scored(session, evaluation, suite)


async def released(
    session: AsyncSession, job_id: uuid.UUID, evaluation: Evaluation, now: datetime, signal: QueueSignal
) -> Settled:
    """The runner handed the job back unfinished: queued again at once, nothing counted (unless it is no longer
    wanted)."""
    job = await repository.fresh_job(session, job_id)
    if job.cancel_requested or evaluation.state in TERMINAL_EVALUATION_STATES:
        job.state, job.finished_at = JobState.CANCELED, now
    else:
        job.state, job.available_at = JobState.QUEUED, now
        await session.flush()
        await announce_work(session, signal, 1)
    await session.flush()
    requeued = job.state == JobState.QUEUED
    return Settled(job.state, requeued, now if requeued else None, evaluation.state)


async def failed(
    session: AsyncSession,
    job_id: uuid.UUID,
    evaluation: Evaluation,
    category: FailureCategory,
    message: str,
    now: datetime,
    settings: Settings,
    signal: QueueSignal,
) -> Settled:
    """After a failed or lost attempt: retry the job (the retry rule decides when), or fail it and its
    evaluation."""
    job = await repository.fresh_job(session, job_id)
    retry_at: datetime | None = None
    reason = message
    if job.cancel_requested or evaluation.state in TERMINAL_EVALUATION_STATES:
        job.state, job.finished_at = JobState.CANCELED, now
    else:
        # Only the out-of-memory rule asks which runners could hold a bigger need: the reaper settles many
        # lapsed attempts per pass and should not read every runner for each.
        oom = category == FailureCategory.OUT_OF_MEMORY
        runners = await registered_runners(session) if oom else []
        settlement = after_failure(
            Need.of(job),
            job.infrastructure_failures,
            job.oom_failures,
            category,
            message,
            settings,
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
        await session.flush()
        await announce_work(session, signal, 1)
    elif job.state == JobState.RUNNING:
        job.state, job.finished_at = JobState.FAILED, now
        await session.flush()
        await finish(session, evaluation, EvaluationState.FAILED, now, category=category.value, message=reason)
    await session.flush()
    return Settled(job.state, retry_at is not None, retry_at, evaluation.state)


async def expire_lapsed(
    session: AsyncSession, now: datetime, lease_seconds: int, settings: Settings, signal: QueueSignal, limit: int
) -> int:
    """Attempts whose lease lapsed are lost and their jobs settled; safe to run in every replica at once."""
    await serialize(session)
    expired = 0
    message = f"No heartbeat for {lease_seconds} s: the runner is presumed lost."
    for attempt_id, job_id, evaluation_id in await repository.lapsed_attempts(session, now, limit):
        evaluation = await repository.lock_unless_locked(session, evaluation_id)
        if evaluation is None:
            continue  # another replica is on it
        lapsed = JobAttempt.lease_expires_at <= now
        lost = await end_attempt(
            session,
            attempt_id,
            AttemptState.LOST,
            now,
            message=message,
            category=FailureCategory.LEASE_EXPIRED,
            held=[lapsed],
        )
        if not lost:
            continue  # a heartbeat or another replica got there first
        await failed(session, job_id, evaluation, FailureCategory.LEASE_EXPIRED, message, now, settings, signal)
        expired += 1
    return expired
