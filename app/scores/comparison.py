"""Comparisons of two runs of one suite, and a model's scores across its revisions and settings."""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from corral.documents import EvaluationConfig, ScoreSummary, is_sample
from corral.errors import NotFound, UnprocessableEntity
from corral.evaluations.repository import load_evaluation
from corral.registry.repository import model_by_repo_id
from corral.scores import repository
from corral.scores.schemas import Comparison, ScoreHistoryEntry, SettingDifference, TaskDelta, TaskScore
from corral.wire.enums import EvaluationState

SIGNIFICANCE = 1.96  # two-sided 95 %
# A partial evaluation has scores for some tasks: it can be compared and exported, never ranked.
SCORED_STATES = (EvaluationState.SUCCEEDED, EvaluationState.PARTIAL)
# Settings that tell two runs apart; the model and revision are shown separately.
COMPARED_SETTINGS = (
    "suite_version",
    "harness_version",
    "backend",
    "precision",
    "apply_chat_template",
    "fewshot_as_multiturn",
    "num_fewshot",
    "limit",
    "seed",
    "gen_kwargs",
)


def task_scores(summary: ScoreSummary | None) -> dict[str, TaskScore]:
    tasks = summary["tasks"] if summary else {}
    return {
        name: TaskScore(
            raw=values["raw"],
            raw_stderr=values["raw_stderr"],
            normalized=values["normalized"],
            stderr=values["stderr"],
        )
        for name, values in tasks.items()
    }


class ComparisonService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def compare(self, base_id: uuid.UUID, candidate_id: uuid.UUID) -> Comparison:
        base = await load_evaluation(self.session, base_id)
        candidate = await load_evaluation(self.session, candidate_id)
        summaries: list[ScoreSummary] = []
        for name, evaluation in (("base", base), ("candidate", candidate)):
            if evaluation.state not in SCORED_STATES or evaluation.summary is None:
                raise UnprocessableEntity(
                    f"evaluation {evaluation.id} has no scores ({evaluation.state.value})", field=name, location="query"
                )
            summaries.append(evaluation.summary)
        if base.config["suite"] != candidate.config["suite"]:
            raise UnprocessableEntity(
                f"the runs are of different suites ({base.config['suite']} and {candidate.config['suite']}): "
                "their scores cannot be compared",
                field="candidate",
                location="query",
            )
        base_summary, candidate_summary = summaries
        base_tasks, candidate_tasks = task_scores(base_summary), task_scores(candidate_summary)
        names = list(dict.fromkeys([*base_tasks, *candidate_tasks]))
        deltas = [_delta(name, base_tasks.get(name), candidate_tasks.get(name)) for name in names]
        average = delta_values(
            "average",
            base_summary["average"],
            base_summary["average_stderr"],
            candidate_summary["average"],
            candidate_summary["average_stderr"],
        )
        return Comparison(
            suite=base.config["suite"],
            base=base.id,
            candidate=candidate.id,
            tasks=deltas,
            average=average,
            config_differences=setting_differences(base.config, candidate.config),
        )

    async def history(self, repo_id: str, suite: str | None) -> list[ScoreHistoryEntry]:
        model = await model_by_repo_id(self.session, repo_id)
        if model is None:
            raise NotFound(f"No model {repo_id!r}.")
        return [
            ScoreHistoryEntry(
                evaluation_id=evaluation.id,
                revision=sha,
                suite=name,
                suite_version=version,
                precision=evaluation.config["precision"],
                chat_template=bool(evaluation.config["apply_chat_template"]),
                sample=is_sample(evaluation.config),
                average=evaluation.average,
                tasks=task_scores(evaluation.summary),
                finished_at=evaluation.finished_at,
                source=evaluation.source,
            )
            for evaluation, sha, name, version in await repository.succeeded_history(self.session, model.id, suite)
        ]


def setting_differences(base: EvaluationConfig, candidate: EvaluationConfig) -> dict[str, SettingDifference]:
    differences = {}
    for setting in COMPARED_SETTINGS:
        ours, theirs = base.get(setting), candidate.get(setting)
        if ours != theirs:
            differences[setting] = SettingDifference(base=ours, candidate=theirs)
    return differences


def _delta(name: str, base: TaskScore | None, candidate: TaskScore | None) -> TaskDelta:
    return delta_values(
        name,
        base.normalized if base else None,
        base.stderr if base else None,
        candidate.normalized if candidate else None,
        candidate.stderr if candidate else None,
    )


def delta_values(
    name: str, base: float | None, base_stderr: float | None, candidate: float | None, candidate_stderr: float | None
) -> TaskDelta:
    if base is None or candidate is None:
        return TaskDelta(task=name, base=base, candidate=candidate, delta=None, stderr=None, significant=None)
    delta = candidate - base
    stderr = None
    if base_stderr is not None and candidate_stderr is not None:
        stderr = (base_stderr**2 + candidate_stderr**2) ** 0.5
    significant = None if stderr is None else abs(delta) > SIGNIFICANCE * stderr
    return TaskDelta(task=name, base=base, candidate=candidate, delta=delta, stderr=stderr, significant=significant)
