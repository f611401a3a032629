"""The queue's data access: the conditions every runner write rests on, ending attempts, the claimed job's
document, and the small per-process caches that keep hot paths short."""

import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Conflict, Forbidden, NotFound, ProblemError
from app.protocol.schemas import ClaimedJob, ClaimedTask, JobSettings, ResultStored
from app.suites.schemas import SuiteDefinition
from app.tables import (
    AttemptState,
    Evaluation,
    EvaluationJob,
    FailureCategory,
    JobAttempt,
    JobResult,
    Revision,
    Runner,
    SuiteVersion,
)
from app.tokens.credentials import hash_token, secret_matches

CONTACT_WRITE_SECONDS = 10  # last_contact_at is written at most this often per runner
_last_touch: dict[uuid.UUID, float] = {}  # runner id -> when this process last wrote its last_contact_at
_suites: dict[uuid.UUID, SuiteDefinition] = {}  # suite versions are immutable: parsed once per process


def live(attempt_id: uuid.UUID, runner_id: uuid.UUID, lease_token: str, now: datetime) -> list[ColumnElement[bool]]:
    """The condition of every runner write: this attempt, this runner, this lease, running, lease not lapsed."""
    return [
        JobAttempt.id == attempt_id,
        JobAttempt.runner_id == runner_id,
        JobAttempt.lease_token_hash == hash_token(lease_token),
        JobAttempt.state == AttemptState.RUNNING,
        JobAttempt.lease_expires_at > now,
    ]


async def end_attempt(
    session: AsyncSession,
    attempt_id: uuid.UUID,
    state: AttemptState,
    now: datetime,
    *,
    message: str | None,
    holder: tuple[uuid.UUID, str] | None = None,
    category: FailureCategory | None = None,
) -> bool:
    """End the attempt; with `holder` (runner id, lease token) only if that runner still holds its lease."""
    conditions = live(attempt_id, *holder, now) if holder else [JobAttempt.id == attempt_id]
    result = await session.execute(
        update(JobAttempt)
        .where(*conditions)
        .values(
            state=state,
            finished_at=now,
            failure_category=category.value if category else None,
            failure_message=message,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def attempt_of(
    session: AsyncSession, attempt_id: uuid.UUID, runner_id: uuid.UUID, lease_token: str
) -> JobAttempt:
    attempt = await session.get(JobAttempt, attempt_id)
    if attempt is None:
        raise NotFound(f"No attempt with id {attempt_id}.")
    if attempt.runner_id != runner_id:
        raise Forbidden(f"Attempt {attempt_id} belongs to another runner.")
    if not secret_matches(attempt.lease_token_hash, lease_token):
        raise Conflict(f"The lease token does not match attempt {attempt_id}.")
    return attempt


async def refusal(
    session: AsyncSession, attempt_id: uuid.UUID, runner_id: uuid.UUID, lease_token: str, now: datetime
) -> ProblemError | None:
    """Why a conditional write to an attempt changed nothing; None if the attempt is live after all."""
    try:
        attempt = await attempt_of(session, attempt_id, runner_id, lease_token)
    except ProblemError as problem:
        return problem
    await session.refresh(attempt)
    if attempt.state != AttemptState.RUNNING:
        return Conflict(f"Attempt {attempt_id} is {attempt.state.value}: its lease is over.")
    if attempt.lease_expires_at <= now:
        return Conflict(f"The lease of attempt {attempt_id} lapsed at {attempt.lease_expires_at.isoformat()}.")
    return None


async def refused(
    session: AsyncSession, attempt_id: uuid.UUID, runner_id: uuid.UUID, lease_token: str, now: datetime
) -> ProblemError:
    """The refusal to raise when a conditional write changed nothing."""
    return await refusal(session, attempt_id, runner_id, lease_token, now) or Conflict("The attempt changed.")


async def touch_runner(session: AsyncSession, runner_id: uuid.UUID, now: datetime) -> None:
    # Remembered per process, so that most heartbeats and polls skip the statement altogether; the
    # condition below still keeps several processes to about one write per interval.
    if time.monotonic() - _last_touch.get(runner_id, -1e9) < CONTACT_WRITE_SECONDS:
        return
    _last_touch[runner_id] = time.monotonic()
    stale = now - timedelta(seconds=CONTACT_WRITE_SECONDS)
    await session.execute(
        update(Runner)
        .where(Runner.id == runner_id, or_(Runner.last_contact_at.is_(None), Runner.last_contact_at < stale))
        .values(last_contact_at=now)
        .execution_options(synchronize_session=False)
    )


async def claimed_job(
    session: AsyncSession, settings: Settings, job_id: uuid.UUID, attempt: JobAttempt, lease_token: str
) -> ClaimedJob:
    row = (
        await session.execute(
            select(
                EvaluationJob.tasks,
                EvaluationJob.shard_index,
                EvaluationJob.required_memory_bytes,
                Evaluation.id,
                Evaluation.config,
                Evaluation.batch_size,
                Evaluation.suite_version_id,
                Revision.sha,
            )
            .join(Evaluation, Evaluation.id == EvaluationJob.evaluation_id)
            .join(Revision, Revision.id == Evaluation.revision_id)
            .where(EvaluationJob.id == job_id)
        )
    ).one()
    tasks, shard_index, required_memory, evaluation_id, config, batch_size, suite_version_id, sha = row
    suite = _suites.get(suite_version_id)
    if suite is None:
        definition = await session.scalar(select(SuiteVersion.definition).where(SuiteVersion.id == suite_version_id))
        suite = _suites[suite_version_id] = SuiteDefinition.model_validate(definition)
    fewshot = {task.name: task.num_fewshot for task in suite.tasks}
    return ClaimedJob(
        attempt_id=attempt.id,
        attempt_number=attempt.number,
        lease_token=lease_token,
        lease_expires_at=attempt.lease_expires_at,
        heartbeat_seconds=settings.heartbeat_seconds,
        job_id=job_id,
        evaluation_id=evaluation_id,
        shard_index=shard_index,
        model=config["model"],
        revision=sha,
        suite=config["suite"],
        suite_version=config["suite_version"],
        include_path=suite.include_path,
        tasks=[
            ClaimedTask(
                name=name,
                num_fewshot=config["num_fewshot"] if config["num_fewshot"] is not None else fewshot[name],
            )
            for name in tasks
        ],
        settings=JobSettings(
            precision=config["precision"],
            backend=config["backend"],
            batch_size=batch_size,
            apply_chat_template=config["apply_chat_template"],
            fewshot_as_multiturn=config["fewshot_as_multiturn"],
            num_fewshot=config["num_fewshot"],
            limit=config["limit"],
            seed=config["seed"],
            gen_kwargs=config["gen_kwargs"],
            harness_version=config["harness_version"],
        ),
        required_memory_bytes=required_memory,
    )


async def stored(session: AsyncSession, result: JobResult) -> ResultStored:
    # Both rows exist: the result was just stored for them.
    job = select(EvaluationJob.state).where(EvaluationJob.id == result.job_id)
    evaluation = select(Evaluation.state).where(Evaluation.id == result.evaluation_id)
    job_state = (await session.execute(job)).scalar_one()
    evaluation_state = (await session.execute(evaluation)).scalar_one()
    return ResultStored(
        result_id=result.id,
        content_sha256=result.content_sha256,
        job_state=job_state.value,
        evaluation_state=evaluation_state.value,
    )
