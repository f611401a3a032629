"""Storing parsed scores and an evaluation's summary."""

import gzip
import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.documents import JsonObject, ScoreSummary
from corral.results.ingest import ParsedScore, json_object
from corral.results.normalize import summarize
from corral.suites.schemas import SuiteDefinition
from corral.tables import EvaluationJob, JobAttempt, JobResult, Runner, Score


async def record_scores(
    session: AsyncSession, evaluation_id: uuid.UUID, job_id: uuid.UUID, parsed: Sequence[ParsedScore]
) -> None:
    await session.execute(
        insert(Score),
        [
            {
                "id": uuid.uuid4(),
                "evaluation_id": evaluation_id,
                "job_id": job_id,
                "task": score.task,
                "metric": score.metric,
                "filter": score.filter,
                "value": score.value,
                "stderr": score.stderr,
                "samples": score.samples,
                "higher_is_better": score.higher_is_better,
                "is_group": score.is_group,
            }
            for score in parsed
        ],
    )


async def summarize_scores(session: AsyncSession, evaluation_id: uuid.UUID, suite: SuiteDefinition) -> ScoreSummary:
    """Normalized per-task scores and the average, from every score stored for the evaluation."""
    rows = await session.execute(
        select(Score.task, Score.metric, Score.filter, Score.value, Score.stderr, Score.samples).where(
            Score.evaluation_id == evaluation_id
        )
    )
    return summarize(suite, [(row.task, row.metric, row.filter, row.value, row.stderr, row.samples) for row in rows])


def canonical_json(document: Any) -> tuple[bytes, str]:
    """The stored form of a results document and its content hash (key order does not matter)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return canonical, hashlib.sha256(canonical).hexdigest()


def new_result(
    *,
    job_id: uuid.UUID,
    evaluation_id: uuid.UUID,
    attempt_id: uuid.UUID | None,
    document: JsonObject,
    samples: Any = None,
) -> JobResult:
    """The raw document, compressed and kept forever; scores are derived from it and can be recomputed."""
    canonical, digest = canonical_json(document)
    version = document.get("lm_eval_version")
    return JobResult(
        job_id=job_id,
        attempt_id=attempt_id,
        evaluation_id=evaluation_id,
        content_sha256=digest,
        results_gzip=gzip.compress(canonical),
        results_bytes=len(canonical),
        samples_gzip=gzip.compress(json.dumps(samples, allow_nan=False).encode()) if samples is not None else None,
        lm_eval_version=version if isinstance(version, str) else None,
        tasks=sorted(json_object(document.get("results"))),
    )


async def results_of(
    session: AsyncSession, evaluation_id: uuid.UUID
) -> list[tuple[JobResult, EvaluationJob, Runner | None]]:
    """Each job's stored result with its job and the runner of the attempt that produced it, by shard."""
    rows = await session.execute(
        select(JobResult, EvaluationJob, Runner)
        .join(EvaluationJob, EvaluationJob.id == JobResult.job_id)
        .outerjoin(JobAttempt, JobAttempt.id == JobResult.attempt_id)
        .outerjoin(Runner, Runner.id == JobAttempt.runner_id)
        .where(JobResult.evaluation_id == evaluation_id)
        .order_by(EvaluationJob.shard_index)
    )
    return [(result, job, runner) for result, job, runner in rows.all()]


async def result_of_shard(session: AsyncSession, evaluation_id: uuid.UUID, shard_index: int) -> JobResult | None:
    return await session.scalar(
        select(JobResult)
        .join(EvaluationJob, EvaluationJob.id == JobResult.job_id)
        .where(JobResult.evaluation_id == evaluation_id, EvaluationJob.shard_index == shard_index)
    )
