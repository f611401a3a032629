"""What the API shows of evaluations: one with its jobs and attempts, a listing, and the queue with what each
queued job waits for."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from corral.clock import SYSTEM_CLOCK, Clock
from corral.documents import is_sample
from corral.evaluations import repository
from corral.evaluations.schemas import (
    AttemptRead,
    EvaluationRead,
    EvaluationRequirements,
    EvaluationSummary,
    JobRead,
    QueueEntry,
    QueueView,
)
from corral.pagination import PageRequest, paginate
from corral.runners.matching import Capacity, Need, gib
from corral.runners.repository import capable, registered_runners
from corral.runners.schemas import ONLINE_WITHIN_SECONDS
from corral.tables import Evaluation, EvaluationJob, JobAttempt, Runner
from corral.wire.enums import EvaluationState, JobState, RunnerState

SORT_COLUMNS = {"created_at": Evaluation.created_at}


class EvaluationViews:
    def __init__(self, session: AsyncSession, clock: Clock = SYSTEM_CLOCK) -> None:
        self.session = session
        self.clock = clock

    async def read(self, evaluation_id: uuid.UUID) -> EvaluationRead:
        evaluation = await repository.load_evaluation(self.session, evaluation_id)
        model, revision, suite = await repository.identity(self.session, evaluation)
        jobs = await repository.jobs_with_attempts(self.session, [evaluation.id])
        runners = await registered_runners(self.session)
        busy = await repository.running_by_runner(self.session)
        now = self.clock.now()
        return EvaluationRead(
            id=evaluation.id,
            model=model.repo_id,
            revision=revision.sha,
            suite=suite.name,
            suite_version=suite.version,
            config_hash=evaluation.config_hash,
            config=evaluation.config,
            sample=is_sample(evaluation.config),
            batch_size=evaluation.batch_size,
            priority=evaluation.priority,
            state=evaluation.state,
            requirements=_requirements(evaluation, runners),
            failure_category=evaluation.failure_category,
            failure_message=evaluation.failure_message,
            requested_by=evaluation.requested_by,
            source=evaluation.source,
            average=evaluation.average,
            summary=evaluation.summary,
            created_at=evaluation.created_at,
            started_at=evaluation.started_at,
            finished_at=evaluation.finished_at,
            jobs=[await self._job_read(job, runners, busy, now) for job in jobs],
        )

    async def list_page(
        self,
        *,
        model: str | None,
        suite: str | None,
        state: EvaluationState | None,
        sort: str,
        page: PageRequest,
    ) -> tuple[list[EvaluationSummary], str | None]:
        rows, cursor = await paginate(
            self.session,
            repository.listing(model, suite, state),
            sort=sort,
            columns=SORT_COLUMNS,
            id_column=Evaluation.id,
            page=page,
        )
        items = [
            EvaluationSummary(
                id=evaluation.id,
                model=evaluation.config["model"],
                revision=evaluation.config["revision"],
                suite=evaluation.config["suite"],
                suite_version=evaluation.config["suite_version"],
                config_hash=evaluation.config_hash,
                sample=is_sample(evaluation.config),
                state=evaluation.state,
                priority=evaluation.priority,
                created_at=evaluation.created_at,
                finished_at=evaluation.finished_at,
            )
            for evaluation in rows
        ]
        return items, cursor

    async def queue(self, *, limit: int) -> QueueView:
        """Queued jobs in claim order, each with what it waits for."""
        rows = await repository.queued_jobs(self.session, limit)
        depth = await repository.count_jobs(self.session, JobState.QUEUED)
        running = await repository.count_jobs(self.session, JobState.RUNNING)
        runners = await registered_runners(self.session)
        busy = await repository.running_by_runner(self.session)
        now = self.clock.now()
        entries = [
            QueueEntry(
                position=position,
                job_id=job.id,
                evaluation_id=job.evaluation_id,
                model=config["model"],
                suite=config["suite"],
                shard_index=job.shard_index,
                priority=job.priority,
                required_memory_bytes=job.required_memory_bytes,
                queued_at=job.queued_at,
                available_at=job.available_at,
                waiting_for=waiting_for(job, runners, busy, now) or "a capable runner to ask for work",
            )
            for position, (job, config) in enumerate(rows, start=1)
        ]
        return QueueView(depth=depth, running=running, entries=entries)

    async def _job_read(
        self, job: EvaluationJob, runners: Sequence[Runner], busy: dict[uuid.UUID, int], now: datetime
    ) -> JobRead:
        latest = job.attempts[-1] if job.attempts else None
        return JobRead(
            id=job.id,
            shard_index=job.shard_index,
            tasks=job.tasks,
            state=job.state,
            required_memory_bytes=job.required_memory_bytes,
            attempt_count=job.attempt_count,
            cancel_requested=job.cancel_requested,
            available_at=job.available_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            attempts=[_attempt_read(attempt) for attempt in job.attempts],
            log_tail=await repository.log_tail(self.session, latest) if latest is not None else None,
            waiting_for=waiting_for(job, runners, busy, now) if job.state == JobState.QUEUED else None,
        )


def _requirements(evaluation: Evaluation, runners: Sequence[Runner]) -> EvaluationRequirements:
    config, sized = evaluation.config, evaluation.requirements
    need = Need(
        sized["memory_bytes"],
        sized["device_bytes"],
        config["backend"],
        config["harness_version"],
        tuple(evaluation.labels),
    )
    placements = [Capacity.of(runner).fitting(need)[1] for runner in capable(runners, need)]
    nodes = min((placed.pipeline_parallel for placed in placements if placed is not None), default=None)
    return EvaluationRequirements(
        nodes=nodes,
        memory_bytes=need.memory_bytes,
        device_bytes=need.device_bytes,
        context_tokens=sized["context_tokens"],
        backend=need.backend,
        harness_version=need.harness_version,
        labels=list(need.labels),
        notes=sized.get("notes", []),
        capable_runners=sorted(runner.name for runner in capable(runners, need)),
    )


def _attempt_read(attempt: JobAttempt) -> AttemptRead:
    return AttemptRead(
        id=attempt.id,
        number=attempt.number,
        runner=attempt.runner.name,
        state=attempt.state,
        claimed_at=attempt.claimed_at,
        lease_expires_at=attempt.lease_expires_at,
        last_heartbeat_at=attempt.last_heartbeat_at,
        finished_at=attempt.finished_at,
        progress=attempt.progress,
        external_ref=attempt.external_ref,
        log_bytes=attempt.log_bytes,
        failure_category=attempt.failure_category,
        failure_message=attempt.failure_message,
    )


def waiting_for(job: EvaluationJob, runners: Sequence[Runner], busy: dict[uuid.UUID, int], now: datetime) -> str | None:
    """Why a queued job has not been claimed, in the order an operator would look."""
    if job.available_at > now:
        return f"retry backoff until {job.available_at.isoformat()}"
    holders = capable(runners, Need.of(job))
    if not holders:
        return "no registered runner can hold it: " + closest_miss(runners, Need.of(job))
    active = [runner for runner in holders if runner.state == RunnerState.ACTIVE]
    if not active:
        return f"capable runners are paused or draining ({', '.join(sorted(r.name for r in holders))})"
    online = [
        runner
        for runner in active
        if runner.last_contact_at is not None
        and (now - runner.last_contact_at).total_seconds() <= ONLINE_WITHIN_SECONDS
    ]
    if not online:
        return f"no capable runner is online ({', '.join(sorted(r.name for r in active))} offline)"
    if all(busy.get(runner.id, 0) >= runner.max_concurrent_jobs for runner in online):
        return f"capable runners are busy ({', '.join(sorted(r.name for r in online))})"
    return None


def closest_miss(runners: Sequence[Runner], need: Need) -> str:
    if not runners:
        return "no runners are registered."
    best = max(runners, key=lambda runner: Capacity.of(runner).total_bytes)
    reasons = Capacity.of(best).shortfalls(need)
    return (
        f"it needs {gib(need.memory_bytes)} ({gib(need.device_bytes)} on one device), backend {need.backend}, "
        f"lm-eval {need.harness_version}"
        + (f", labels {', '.join(need.labels)}" if need.labels else "")
        + f"; the largest runner, {best.name}, "
        + ("; ".join(reasons) if reasons else "matches but others differ")
        + "."
    )
