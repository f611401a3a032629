"""Evaluation requests: resolve the revision and suite, dedupe by config hash, size, match and enqueue."""

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime

from fastapi import Request
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import serialize
from app.errors import Conflict, NotFound, ProblemError, UnprocessableEntity
from app.evaluations import repository
from app.evaluations.identity import EvaluationConfig, config_hash
from app.evaluations.requirements import evaluation_memory
from app.evaluations.schemas import (
    AttemptRead,
    EvaluationCreate,
    EvaluationRead,
    EvaluationRequirements,
    EvaluationSummary,
    JobRead,
    QueueEntry,
    QueueView,
)
from app.evaluations.wakeups import QueueSignal, announce_work
from app.hub.worker import resolve_ref
from app.pagination import PageRequest, paginate
from app.registry.repository import model_by_repo_id
from app.registry.revisions.service import RevisionService
from app.runners.matching import Capacity, Need, gib
from app.runners.repository import capable, registered_runners
from app.runners.schemas import ONLINE_WITHIN_SECONDS
from app.security import Principal
from app.suites.schemas import SuiteDefinition
from app.tables import (
    AttemptState,
    Evaluation,
    EvaluationJob,
    EvaluationState,
    JobAttempt,
    JobState,
    Model,
    Revision,
    Runner,
    RunnerState,
    SuiteVersion,
)
from app.tables.base import utcnow

SORT_COLUMNS = {"created_at": Evaluation.created_at}
# Evaluations an identical request is answered with; failed and canceled ones do not block a new run.
DEDUPE_STATES = (EvaluationState.QUEUED, EvaluationState.RUNNING, EvaluationState.SUCCEEDED)


class EvaluationService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    async def request(
        self,
        body: EvaluationCreate,
        *,
        principal: Principal,
        idempotency_key: str | None,
        request: Request,
        signal: QueueSignal,
    ) -> tuple[EvaluationRead, bool]:
        """Returns the evaluation and whether this request created it."""
        fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
        if idempotency_key is not None and (earlier := await self._replay(principal, idempotency_key, fingerprint)):
            return earlier, False
        model = await model_by_repo_id(self.session, body.model)
        if model is None:
            raise UnprocessableEntity(f"No model {body.model!r} is registered.", field="model")
        suite_row = await self._suite(body.suite, body.suite_version)
        revision = await self._resolve_revision(model, body, request)
        suite = SuiteDefinition.model_validate(suite_row.definition)
        harness_version = body.harness_version or self.settings.harness_version
        config = EvaluationConfig(
            model=model.repo_id,
            revision=revision.sha,
            suite=suite_row.name,
            suite_version=suite_row.version,
            harness_version=harness_version,
            backend=body.backend,
            precision=body.precision,
            apply_chat_template=body.apply_chat_template,
            fewshot_as_multiturn=body.fewshot_as_multiturn,
            num_fewshot=body.num_fewshot,
            limit=body.limit,
            seed=body.seed,
            gen_kwargs=body.gen_kwargs,
        )
        digest = config_hash(config)
        # Concurrent twins (same config, or a CI retry with the same key) must see each other's evaluation.
        if idempotency_key is not None:
            await serialize(self.session, f"idempotency:{principal.token_id}:{idempotency_key}")
            if earlier := await self._replay(principal, idempotency_key, fingerprint):
                return earlier, False
        await serialize(self.session, f"config:{digest}")
        if not body.force:
            existing = await self._same_config(digest)
            if existing is not None:
                return await self.read(existing.id), False

        memory = evaluation_memory(model, precision=body.precision, suite_context_tokens=suite.context_tokens)
        need = Need(memory.total_bytes, memory.device_bytes, body.backend, harness_version, tuple(sorted(body.labels)))
        runners = await registered_runners(self.session)
        if not capable(runners, need) and not body.queue_without_runner:
            raise Conflict(
                "No registered runner could ever hold this evaluation: " + _closest_miss(runners, need),
                requirements={
                    "memory_bytes": need.memory_bytes,
                    "device_bytes": need.device_bytes,
                    "backend": need.backend,
                    "harness_version": need.harness_version,
                    "labels": list(need.labels),
                },
            )
        now = utcnow()
        evaluation = Evaluation(
            model_id=model.id,
            revision_id=revision.id,
            suite_version_id=suite_row.id,
            config_hash=digest,
            config=config,
            batch_size=str(body.batch_size),
            priority=body.priority,
            labels=list(need.labels),
            state=EvaluationState.QUEUED,
            requirements={
                "memory_bytes": memory.total_bytes,
                "device_bytes": memory.device_bytes,
                "context_tokens": memory.context_tokens,
                "notes": memory.notes,
            },
            requested_by_token_id=principal.token_id,
            requested_by=principal.name,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
        )
        self.session.add(evaluation)
        await self.session.flush()
        for index, shard in enumerate(suite.shards):
            self.session.add(
                EvaluationJob(
                    evaluation_id=evaluation.id,
                    shard_index=index,
                    tasks=list(shard),
                    state=JobState.QUEUED,
                    priority=body.priority,
                    backend=body.backend,
                    harness_version=harness_version,
                    labels=list(need.labels),
                    required_memory_bytes=memory.total_bytes,
                    required_device_bytes=memory.device_bytes,
                    queued_at=now,
                    available_at=now,
                )
            )
        await self.session.flush()
        await announce_work(self.session, signal, len(suite.shards))
        return await self.read(evaluation.id), True

    async def read(self, evaluation_id: uuid.UUID) -> EvaluationRead:
        evaluation = await repository.load_evaluation(self.session, evaluation_id)
        model, revision, suite = await self._identity(evaluation)
        jobs = await repository.jobs_with_attempts(self.session, [evaluation.id])
        runners = await registered_runners(self.session)
        busy = await self._running_by_runner()
        return EvaluationRead(
            id=evaluation.id,
            model=model.repo_id,
            revision=revision.sha,
            suite=suite.name,
            suite_version=suite.version,
            config_hash=evaluation.config_hash,
            config=evaluation.config,
            batch_size=evaluation.batch_size,
            priority=evaluation.priority,
            state=evaluation.state,
            requirements=self._requirements(evaluation, runners),
            failure_category=evaluation.failure_category,
            failure_message=evaluation.failure_message,
            requested_by=evaluation.requested_by,
            source=evaluation.source,
            average=evaluation.average,
            summary=evaluation.summary,
            created_at=evaluation.created_at,
            started_at=evaluation.started_at,
            finished_at=evaluation.finished_at,
            jobs=[await self._job_read(job, runners, busy) for job in jobs],
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
        statement: Select[Evaluation] = select(Evaluation)
        if model is not None:
            statement = statement.join(Model, Model.id == Evaluation.model_id).where(Model.repo_id == model)
        if suite is not None:
            statement = statement.join(SuiteVersion, SuiteVersion.id == Evaluation.suite_version_id).where(
                SuiteVersion.name == suite
            )
        if state is not None:
            statement = statement.where(Evaluation.state == state)
        rows, cursor = await paginate(
            self.session, statement, sort=sort, columns=SORT_COLUMNS, id_column=Evaluation.id, page=page
        )
        items = []
        for evaluation in rows:
            config = evaluation.config
            items.append(
                EvaluationSummary(
                    id=evaluation.id,
                    model=config["model"],
                    revision=config["revision"],
                    suite=config["suite"],
                    suite_version=config["suite_version"],
                    config_hash=evaluation.config_hash,
                    state=evaluation.state,
                    priority=evaluation.priority,
                    created_at=evaluation.created_at,
                    finished_at=evaluation.finished_at,
                )
            )
        return items, cursor

    async def cancel(self, evaluation_id: uuid.UUID, principal: Principal) -> EvaluationRead:
        """Queued jobs cancel now; running ones hear it from their next heartbeat."""
        await serialize(self.session)
        evaluation = await repository.load_evaluation(self.session, evaluation_id, lock=True)
        if evaluation.state in (EvaluationState.SUCCEEDED, EvaluationState.PARTIAL, EvaluationState.FAILED):
            raise Conflict(f"Evaluation {evaluation_id} has {evaluation.state.value} already; nothing to cancel.")
        await repository.finish_evaluation(
            self.session, evaluation, EvaluationState.CANCELED, category=None, message=f"Canceled by {principal.name}."
        )
        return await self.read(evaluation_id)

    async def queue(self, *, limit: int) -> QueueView:
        """Queued jobs in claim order, each with what it waits for."""
        order = (EvaluationJob.priority.desc(), EvaluationJob.queued_at, EvaluationJob.shard_index, EvaluationJob.id)
        statement = (
            select(EvaluationJob, Evaluation.config)
            .join(Evaluation, Evaluation.id == EvaluationJob.evaluation_id)
            .where(EvaluationJob.state == JobState.QUEUED)
            .order_by(*order)
            .limit(limit)
        )
        rows = (await self.session.execute(statement)).all()
        depth = await self._count_jobs(JobState.QUEUED)
        running = await self._count_jobs(JobState.RUNNING)
        runners = await registered_runners(self.session)
        busy = await self._running_by_runner()
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
                waiting_for=waiting_for(job, runners, busy) or "a capable runner to ask for work",
            )
            for position, (job, config) in enumerate(rows, start=1)
        ]
        return QueueView(depth=depth, running=running, entries=entries)

    async def _resolve_revision(self, model: Model, body: EvaluationCreate, request: Request) -> Revision:
        revisions = RevisionService(self.session)
        if body.ref is not None:
            state = request.app.state
            try:
                sha = await resolve_ref(state.sessionmaker, self.settings, state.hub_client, model.repo_id, body.ref)
            except ProblemError as problem:
                if problem.status != 404:
                    raise  # the Hub unreachable or failing: 502/503 as for any sync
                raise UnprocessableEntity(problem.detail, field="ref") from None
            revision = await revisions.by_sha(model, sha)
            field, label = "ref", body.ref
        elif body.alias is not None:
            try:
                revision = await revisions.resolve(model, body.alias)
            except NotFound:
                revision = None
            field, label = "alias", body.alias
        else:
            assert body.revision is not None  # the schema asks for exactly one of the three
            revision = await revisions.by_sha(model, body.revision)
            field, label = "revision", body.revision
        if revision is None:
            raise UnprocessableEntity(
                f"{model.repo_id} has no recorded revision {label!r}: sync it from the Hub or record it first.",
                field=field,
            )
        return revision

    async def _suite(self, name: str, version: str | None) -> SuiteVersion:
        statement = select(SuiteVersion).where(SuiteVersion.name == name)
        statement = statement.where(SuiteVersion.version == version if version else SuiteVersion.latest.is_(True))
        row = (await self.session.execute(statement)).scalar_one_or_none()
        if row is None:
            known = (await self.session.execute(select(SuiteVersion.name).distinct())).scalars().all()
            if version is not None and name in known:
                raise UnprocessableEntity(f"Suite {name!r} has no version {version!r}.", field="suite_version")
            raise UnprocessableEntity(
                f"No suite {name!r}; known suites: {', '.join(sorted(known)) or 'none'}.", field="suite"
            )
        return row

    async def _replay(self, principal: Principal, key: str, fingerprint: str) -> EvaluationRead | None:
        """The evaluation this caller's Idempotency-Key created, if any; the key with another body is a 422."""
        statement = select(Evaluation).where(
            Evaluation.requested_by_token_id == principal.token_id, Evaluation.idempotency_key == key
        )
        earlier = (await self.session.execute(statement)).scalar_one_or_none()
        if earlier is None:
            return None
        if earlier.request_fingerprint != fingerprint:
            raise UnprocessableEntity(
                "This Idempotency-Key was used with another request body.", field="Idempotency-Key", location="header"
            )
        return await self.read(earlier.id)

    async def _same_config(self, digest: str) -> Evaluation | None:
        statement = (
            select(Evaluation)
            .where(Evaluation.config_hash == digest, Evaluation.state.in_(DEDUPE_STATES))
            .order_by(Evaluation.created_at.desc())
            .limit(1)
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def _identity(self, evaluation: Evaluation) -> tuple[Model, Revision, SuiteVersion]:
        model = await self.session.get(Model, evaluation.model_id)
        revision = await self.session.get(Revision, evaluation.revision_id)
        suite = await self.session.get(SuiteVersion, evaluation.suite_version_id)
        assert model is not None
        assert revision is not None
        assert suite is not None
        return model, revision, suite

    def _requirements(self, evaluation: Evaluation, runners: Sequence[Runner]) -> EvaluationRequirements:
        config, sized = evaluation.config, evaluation.requirements
        need = Need(
            sized["memory_bytes"],
            sized["device_bytes"],
            config["backend"],
            config["harness_version"],
            tuple(evaluation.labels),
        )
        return EvaluationRequirements(
            memory_bytes=need.memory_bytes,
            device_bytes=need.device_bytes,
            context_tokens=sized["context_tokens"],
            backend=need.backend,
            harness_version=need.harness_version,
            labels=list(need.labels),
            notes=sized.get("notes", []),
            capable_runners=sorted(runner.name for runner in capable(runners, need)),
        )

    async def _job_read(self, job: EvaluationJob, runners: Sequence[Runner], busy: dict[uuid.UUID, int]) -> JobRead:
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
            waiting_for=waiting_for(job, runners, busy) if job.state == JobState.QUEUED else None,
        )

    async def _running_by_runner(self) -> dict[uuid.UUID, int]:
        rows = await self.session.execute(
            select(JobAttempt.runner_id, func.count())
            .where(JobAttempt.state == AttemptState.RUNNING)
            .group_by(JobAttempt.runner_id)
        )
        return dict(rows.all())

    async def _count_jobs(self, state: JobState) -> int:
        return int((await self.session.execute(select(func.count()).where(EvaluationJob.state == state))).scalar_one())


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
        log_bytes=attempt.log_bytes,
        failure_category=attempt.failure_category,
        failure_message=attempt.failure_message,
    )


def waiting_for(
    job: EvaluationJob, runners: Sequence[Runner], busy: dict[uuid.UUID, int], now: datetime | None = None
) -> str | None:
    """Why a queued job has not been claimed, in the order an operator would look."""
    now = now or utcnow()
    if job.available_at > now:
        return f"retry backoff until {job.available_at.isoformat()}"
    holders = capable(runners, Need.of(job))
    if not holders:
        return "no registered runner can hold it: " + _closest_miss(runners, Need.of(job))
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


def _closest_miss(runners: Sequence[Runner], need: Need) -> str:
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
