"""Evaluations and the queue: an evaluation splits into jobs (one per suite shard); each claim is an attempt."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from corral.documents import AttemptProgress, EvaluationConfig, ScoreSummary, StoredRequirements
from corral.tables.base import Base, IdMixin, TimestampMixin, checked_enum
from corral.tables.runner import Runner
from corral.tables.types import JsonDocument
from corral.wire.enums import AttemptState, EvaluationState, JobState


class Evaluation(IdMixin, TimestampMixin, Base):
    """A request to run one suite version on one model revision with one set of settings."""

    __tablename__ = "evaluations"
    __table_args__ = (
        Index("ix_evaluations_config_hash", "config_hash"),
        Index("ix_evaluations_revision_id", "revision_id"),
        # An Idempotency-Key names one request of one caller.
        UniqueConstraint("requested_by_token_id", "idempotency_key"),
    )

    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    revision_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("revisions.id", ondelete="RESTRICT"))
    suite_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("suite_versions.id", ondelete="RESTRICT"))
    config_hash: Mapped[str] = mapped_column(String(64))
    config: Mapped[EvaluationConfig] = mapped_column(JsonDocument)  # everything the hash covers
    batch_size: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int]
    labels: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    state: Mapped[EvaluationState] = mapped_column(checked_enum(EvaluationState, "evaluation_state"))
    requirements: Mapped[StoredRequirements] = mapped_column(JsonDocument, default=dict)
    failure_category: Mapped[str | None] = mapped_column(String(32))
    failure_message: Mapped[str | None] = mapped_column(Text)
    requested_by_token_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="SET NULL"), default=None
    )
    requested_by: Mapped[str | None] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Filled when the last result is in: normalized per-task scores and their average, as the suite says.
    summary: Mapped[ScoreSummary | None] = mapped_column(JsonDocument, default=None)
    average: Mapped[float | None] = mapped_column(default=None)
    source: Mapped[str] = mapped_column(String(16), default="queue", server_default=text("'queue'"))

    jobs: Mapped[list["EvaluationJob"]] = relationship(
        lazy="raise", order_by="EvaluationJob.shard_index", back_populates="evaluation"
    )


class EvaluationJob(IdMixin, TimestampMixin, Base):
    """One suite shard of an evaluation: the unit a runner claims."""

    __tablename__ = "evaluation_jobs"
    __table_args__ = (UniqueConstraint("evaluation_id", "shard_index"),)

    evaluation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"))
    shard_index: Mapped[int]
    tasks: Mapped[list[str]] = mapped_column(JsonDocument)
    state: Mapped[JobState] = mapped_column(checked_enum(JobState, "job_state"))
    priority: Mapped[int]
    backend: Mapped[str] = mapped_column(String(16))
    harness_version: Mapped[str] = mapped_column(String(32))
    labels: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    required_memory_bytes: Mapped[int] = mapped_column(BigInteger)
    required_device_bytes: Mapped[int] = mapped_column(BigInteger)
    queued_at: Mapped[datetime]
    available_at: Mapped[datetime]  # not claimable before: the backoff after a retryable failure
    attempt_count: Mapped[int] = mapped_column(default=0)
    infrastructure_failures: Mapped[int] = mapped_column(default=0)
    oom_failures: Mapped[int] = mapped_column(default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    evaluation: Mapped[Evaluation] = relationship(lazy="raise", back_populates="jobs")
    attempts: Mapped[list["JobAttempt"]] = relationship(lazy="raise", order_by="JobAttempt.number")


# The claim reads queued jobs only, in its own order (priority first, then age): its LIMIT 1 stops at the first
# job the runner can hold instead of sorting the whole queue.
Index(
    "ix_evaluation_jobs_claim_order",
    EvaluationJob.priority.desc(),
    EvaluationJob.queued_at,
    EvaluationJob.shard_index,
    EvaluationJob.id,
    postgresql_where=text("state = 'queued'"),
    sqlite_where=text("state = 'queued'"),
)


class JobAttempt(IdMixin, Base):
    """One claim of a job by a runner, under a lease the runner keeps alive with heartbeats."""

    __tablename__ = "job_attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "number"),
        # At most one live attempt per job, whatever races happen above it.
        Index(
            "uq_job_attempts_one_running",
            "job_id",
            unique=True,
            postgresql_where=text("state = 'running'"),
            sqlite_where=text("state = 'running'"),
        ),
        Index("ix_job_attempts_runner_id", "runner_id"),
        Index(
            "ix_job_attempts_lease",
            "lease_expires_at",
            postgresql_where=text("state = 'running'"),
            sqlite_where=text("state = 'running'"),
        ),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evaluation_jobs.id", ondelete="CASCADE"))
    runner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runners.id", ondelete="RESTRICT"))
    number: Mapped[int]
    lease_token_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[AttemptState] = mapped_column(checked_enum(AttemptState, "attempt_state"))
    claimed_at: Mapped[datetime]
    lease_expires_at: Mapped[datetime]
    last_heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    progress: Mapped[AttemptProgress] = mapped_column(JsonDocument, default=dict)
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Where a cluster runs it (`slurm:1234`, `k8s:namespace/corral-<attempt>`), as the runner reports it.
    external_ref: Mapped[str | None] = mapped_column(String(200), default=None)
    failure_category: Mapped[str | None] = mapped_column(String(32))
    failure_message: Mapped[str | None] = mapped_column(Text)

    runner: Mapped[Runner] = relationship(lazy="raise")


class AttemptLogChunk(Base):
    """A piece of an attempt's log at a byte offset; appends are offset-checked, like Content-Range."""

    __tablename__ = "attempt_log_chunks"

    attempt_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job_attempts.id", ondelete="CASCADE"), primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class JobResult(IdMixin, TimestampMixin, Base):
    """The lm-eval results document of a job, kept compressed and forever; one per job."""

    __tablename__ = "job_results"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evaluation_jobs.id", ondelete="CASCADE"), unique=True)
    # None for imported results: they were produced outside Corral, by no attempt.
    attempt_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("job_attempts.id", ondelete="CASCADE"))
    evaluation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), index=True)
    content_sha256: Mapped[str] = mapped_column(String(64))
    results_gzip: Mapped[bytes] = mapped_column(LargeBinary)
    results_bytes: Mapped[int] = mapped_column(BigInteger)
    samples_gzip: Mapped[bytes | None] = mapped_column(LargeBinary)
    lm_eval_version: Mapped[str | None] = mapped_column(String(32))
    tasks: Mapped[list[str]] = mapped_column(JsonDocument, default=list)


class Score(IdMixin, Base):
    """One number of an lm-eval result: (evaluation, task, metric, filter) with its stderr and sample count."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("evaluation_id", "task", "metric", "filter"),)

    evaluation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evaluation_jobs.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(100))
    filter: Mapped[str] = mapped_column(String(100))
    value: Mapped[float]
    stderr: Mapped[float | None]
    samples: Mapped[int | None]
    higher_is_better: Mapped[bool | None]
    is_group: Mapped[bool] = mapped_column(default=False)
