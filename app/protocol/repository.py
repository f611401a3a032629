"""The runner protocol's SQL: the claim statement, the lease condition every runner write rests on, the claimed
job's document, and the small per-process caches that keep hot paths short."""

import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.changes import UNTRACKED
from corral.config import Settings
from corral.errors import Conflict, Forbidden, NotFound, ProblemError
from corral.evaluations.repository import ClaimedRow
from corral.hardware.fit import Placement
from corral.suites import repository as suites
from corral.suites.schemas import SuiteDefinition
from corral.tables import AttemptLogChunk, Evaluation, EvaluationJob, JobAttempt, JobResult, Runner
from corral.tokens.credentials import hash_token, secret_matches
from corral.wire.enums import AttemptState
from corral.wire.protocol import ClaimedJob, ClaimedTask, JobPlacement, JobSettings, ResultStored

CONTACT_WRITE_SECONDS = 10  # last_contact_at is written at most this often per runner
_last_touch: dict[uuid.UUID, float] = {}  # runner id -> when this process last wrote its last_contact_at
_suites: dict[uuid.UUID, SuiteDefinition] = {}  # suite versions are immutable: parsed once per process


def lease_conditions(attempt_id: Any, runner_id: Any, lease_hash: Any, now: Any) -> list[ColumnElement[bool]]:
    """The condition of every runner write: this attempt, this runner, this lease, running, lease not lapsed;
    over values, or over bound parameters for a statement built once."""
    return [
        JobAttempt.id == attempt_id,
        JobAttempt.runner_id == runner_id,
        JobAttempt.lease_token_hash == lease_hash,
        JobAttempt.state == AttemptState.RUNNING,
        JobAttempt.lease_expires_at > now,
    ]


def live(attempt_id: uuid.UUID, runner_id: uuid.UUID, lease_token: str, now: datetime) -> list[ColumnElement[bool]]:
    return lease_conditions(attempt_id, runner_id, hash_token(lease_token), now)


# The heartbeat, built once: renew a live lease and say in the same statement whether the job was canceled.
_RENEW_LEASE = (
    update(JobAttempt)
    .where(*lease_conditions(bindparam("p_attempt"), bindparam("p_runner"), bindparam("p_lease"), bindparam("p_now")))
    .values(
        lease_expires_at=bindparam("p_expires"),
        last_heartbeat_at=bindparam("p_now"),
        progress=bindparam("p_progress"),
        external_ref=func.coalesce(bindparam("p_ref", type_=String()), JobAttempt.external_ref),
    )
    .returning(
        JobAttempt.job_id,
        select(EvaluationJob.cancel_requested).where(EvaluationJob.id == JobAttempt.job_id).scalar_subquery(),
    )
)


async def lock_runner(session: AsyncSession, runner_id: uuid.UUID) -> Runner | None:
    """The runner's row lock keeps its own concurrent claims (one per long-poll) within max_concurrent_jobs."""
    return await session.scalar(select(Runner).where(Runner.id == runner_id).with_for_update())


async def running_attempts(session: AsyncSession, runner_id: uuid.UUID) -> int:
    """Counted after the runner's lock is taken, by a statement of its own: a statement that waited for the lock
    reads with the snapshot it started with (PostgreSQL), and would miss the attempt of the claim it waited for."""
    count = await session.scalar(
        select(func.count()).where(JobAttempt.runner_id == runner_id, JobAttempt.state == AttemptState.RUNNING)
    )
    return int(count or 0)


async def renew_lease(
    session: AsyncSession,
    attempt_id: uuid.UUID,
    runner_id: uuid.UUID,
    lease_token: str,
    now: datetime,
    expires: datetime,
    progress: object,
    external_ref: str | None = None,
) -> tuple[uuid.UUID, bool] | None:
    """Extend a live lease and record progress in one statement: (the job, whether it was canceled), or None
    when the lease is not live."""
    parameters = {
        "p_attempt": attempt_id,
        "p_runner": runner_id,
        "p_lease": hash_token(lease_token),
        "p_now": now,
        "p_expires": expires,
        "p_progress": progress,
        "p_ref": external_ref,
    }
    row = (await (await session.connection()).execute(_RENEW_LEASE, parameters)).first()
    return None if row is None else (row[0], bool(row[1]))


async def grow_log(
    session: AsyncSession,
    attempt_id: uuid.UUID,
    conditions: list[ColumnElement[bool]],
    start: int,
    data: bytes,
    max_bytes: int,
) -> int | None:
    """Append at `start` when the log ends there and stays within `max_bytes`; the new size, or None."""
    row = (
        await session.execute(
            update(JobAttempt)
            .where(*conditions, JobAttempt.log_bytes == start, JobAttempt.log_bytes + len(data) <= max_bytes)
            .values(log_bytes=JobAttempt.log_bytes + len(data))
            .returning(JobAttempt.log_bytes)
            .execution_options(synchronize_session=False)
        )
    ).first()
    if row is None:
        return None
    session.add(AttemptLogChunk(attempt_id=attempt_id, offset=start, data=data))
    await session.flush()
    return int(row.log_bytes)


async def log_size(session: AsyncSession, attempt_id: uuid.UUID) -> int | None:
    return await session.scalar(select(JobAttempt.log_bytes).where(JobAttempt.id == attempt_id))


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
        .execution_options(synchronize_session=False, **{UNTRACKED: True})  # no view shows a runner's last contact
    )


async def suite_definition(session: AsyncSession, suite_version_id: uuid.UUID) -> SuiteDefinition:
    suite = _suites.get(suite_version_id)
    if suite is None:
        definition = await suites.definition(session, suite_version_id)
        suite = _suites[suite_version_id] = SuiteDefinition.model_validate(definition)
    return suite


async def suite_of_evaluation(session: AsyncSession, evaluation_id: uuid.UUID) -> SuiteDefinition:
    suite_version_id = await session.scalar(select(Evaluation.suite_version_id).where(Evaluation.id == evaluation_id))
    assert suite_version_id is not None
    return await suite_definition(session, suite_version_id)


async def evaluation_of_job(session: AsyncSession, job_id: uuid.UUID) -> uuid.UUID:
    evaluation_id = await session.scalar(select(EvaluationJob.evaluation_id).where(EvaluationJob.id == job_id))
    assert evaluation_id is not None
    return evaluation_id


async def result_of_job(session: AsyncSession, job_id: uuid.UUID) -> JobResult | None:
    return await session.scalar(select(JobResult).where(JobResult.job_id == job_id))


async def claimed_job(
    session: AsyncSession,
    settings: Settings,
    claimed: ClaimedRow,
    attempt_id: uuid.UUID,
    lease_expires_at: datetime,
    lease_token: str,
    placement: Placement | None,
) -> ClaimedJob:
    config = claimed.config
    assert config["seed"] is not None  # every request carries a seed; only imports (never claimed) may lack one
    suite = await suite_definition(session, claimed.suite_version_id)
    fewshot = {task.name: task.num_fewshot for task in suite.tasks}
    return ClaimedJob(
        attempt_id=attempt_id,
        attempt_number=claimed.attempt_number,
        lease_token=lease_token,
        lease_expires_at=lease_expires_at,
        heartbeat_seconds=settings.heartbeat_seconds,
        job_id=claimed.job_id,
        evaluation_id=claimed.evaluation_id,
        shard_index=claimed.shard_index,
        model=config["model"],
        revision=claimed.sha,
        suite=config["suite"],
        suite_version=config["suite_version"],
        include_path=suite.include_path,
        tasks=[
            ClaimedTask(
                name=name,
                num_fewshot=config["num_fewshot"] if config["num_fewshot"] is not None else fewshot[name],
            )
            for name in claimed.tasks
        ],
        settings=JobSettings(
            precision=config["precision"],
            backend=config["backend"],
            batch_size=claimed.batch_size,
            apply_chat_template=config["apply_chat_template"],
            fewshot_as_multiturn=config["fewshot_as_multiturn"],
            num_fewshot=config["num_fewshot"],
            limit=config["limit"],
            seed=config["seed"],
            gen_kwargs=config["gen_kwargs"],
            harness_version=config["harness_version"],
            # Trusted when requested and still trusted now: an admin's withdrawal reaches jobs not yet claimed.
            trust_remote_code=config.get("trust_remote_code", False) and claimed.code_trusted_at is not None,
            needs_hub_token=claimed.requirements.get("needs_hub_token", True),
        ),
        required_memory_bytes=claimed.required_memory_bytes,
        placement=JobPlacement(
            tensor_parallel=placement.tensor_parallel if placement else 1,
            pipeline_parallel=placement.pipeline_parallel if placement else 1,
        ),
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
