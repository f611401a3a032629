"""An evaluation's page (jobs, attempts, failures, log tails, provenance) and the queue (queued and running jobs).

Neither is kept in the view cache: both show live state (heartbeats, progress) that no change notice covers."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from fastapi import Request, Response

from corral.db import SessionDep
from corral.documents import AttemptProgress
from corral.evaluations import repository as evaluations
from corral.evaluations.service import EvaluationService
from corral.pagination import PageRequest
from corral.scores import repository as scores
from corral.scores.provenance import evaluation_provenance
from corral.state import state_of
from corral.web.leaderboard import task_tooltip
from corral.web.pages import PAGE_METHODS, page_router, render, suite_names
from corral.wire.enums import EvaluationState, JobState

router = page_router()
RUNNING_SHOWN = 200


def _service(request: Request, session: SessionDep) -> EvaluationService:
    return EvaluationService(session, state_of(request).settings, state_of(request).clock)


@router.api_route("/evaluations/{evaluation_id}", methods=PAGE_METHODS)
async def evaluation_page(evaluation_id: uuid.UUID, request: Request, session: SessionDep) -> Response:
    """An evaluation: state, settings, scores, jobs and their attempts with failures and log tails, provenance."""
    evaluation = await _service(request, session).views.read(evaluation_id)  # 404 names the id
    provenance = await evaluation_provenance(session, evaluation_id)
    definition = await scores.latest_suite(session, evaluation.suite)
    tasks = {task.name: task for task in definition.tasks}
    titles = {name: (task.display_name, task_tooltip(task)) for name, task in tasks.items()}
    scored = evaluation.summary["tasks"] if evaluation.summary else {}
    # The suite's order, as the leaderboard's columns: the stored summary's key order is the database's.
    score_order = [name for name in tasks if name in scored] + sorted(set(scored) - set(tasks))
    lm_eval_versions = sorted({job.lm_eval_version for job in provenance.jobs if job.lm_eval_version})
    context = {
        "evaluation": evaluation,
        "provenance": provenance,
        "titles": titles,
        "score_order": score_order,
        "lm_eval_versions": lm_eval_versions,
        "suites": await suite_names(session),
    }
    return render(request, "evaluation.html", context)


@dataclass(frozen=True)
class RunningJob:
    evaluation_id: uuid.UUID
    model: str
    suite: str
    shard_index: int
    tasks: list[str]
    runner: str | None
    attempt_number: int | None
    progress: AttemptProgress
    external_ref: str | None
    last_heartbeat_at: datetime | None


@router.api_route("/queue", methods=PAGE_METHODS)
async def queue_page(request: Request, session: SessionDep) -> Response:
    """The queue: jobs waiting in claim order with what each waits for, and the jobs running now."""
    service = _service(request, session)
    queue = await service.views.queue(limit=200)
    running, _ = await service.views.list_page(
        model=None, suite=None, state=EvaluationState.RUNNING, sort="-created_at", page=PageRequest(None, RUNNING_SHOWN)
    )
    by_id = {summary.id: summary for summary in running}
    jobs = []
    for job in await evaluations.jobs_with_attempts(session, list(by_id)):
        if job.state != JobState.RUNNING:
            continue
        summary = by_id[job.evaluation_id]
        latest = job.attempts[-1] if job.attempts else None
        jobs.append(
            RunningJob(
                evaluation_id=job.evaluation_id,
                model=summary.model,
                suite=summary.suite,
                shard_index=job.shard_index,
                tasks=job.tasks,
                runner=latest.runner.name if latest is not None else None,
                attempt_number=latest.number if latest is not None else None,
                progress=latest.progress if latest is not None else {},
                external_ref=latest.external_ref if latest is not None else None,
                last_heartbeat_at=latest.last_heartbeat_at if latest is not None else None,
            )
        )
    context = {"queue": queue, "running": jobs, "suites": await suite_names(session)}
    return render(request, "queue.html", context)
