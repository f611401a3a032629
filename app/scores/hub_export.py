"""Scores for the Hugging Face Hub: `.eval_results` entries and a model card's `model-index`, and pull requests."""

import uuid

import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from corral.db import release_connection
from corral.documents import is_sample
from corral.errors import Conflict
from corral.evaluations.repository import load_evaluation
from corral.hub.client import HubClient, HubError
from corral.hub.errors import hub_problem
from corral.scores import repository
from corral.scores.comparison import SCORED_STATES
from corral.suites.schemas import SuiteDefinition
from corral.tables import Evaluation


class HubExportService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def hub_export(self, evaluation_id: uuid.UUID, export_format: str, base_url: str) -> str:
        """`base_url`: where people reach this service; the export links back to the evaluation there."""
        evaluation = await load_evaluation(self.session, evaluation_id)
        if evaluation.state not in SCORED_STATES or evaluation.summary is None:
            raise Conflict(f"Evaluation {evaluation_id} has no scores yet ({evaluation.state.value}).")
        if is_sample(evaluation.config):
            raise Conflict(
                f"Evaluation {evaluation_id} ran with limit={evaluation.config['limit']} (a sample of each task): "
                "only complete runs are exported to the Hub."
            )
        suite = await repository.suite_of(self.session, evaluation.suite_version_id)
        source_url = f"{base_url.rstrip('/')}/v1/evaluations/{evaluation.id}"
        return hub_exports(evaluation, suite, export_format, source_url)

    async def hub_pull_request(
        self, evaluation_id: uuid.UUID, client: HubClient, has_token: bool, base_url: str, deadline_seconds: float
    ) -> str:
        """Open a pull request on the model repo adding `.eval_results/corral-<suite>.yaml`; returns its URL."""
        if not has_token:
            raise Conflict("No Hub token is configured (CORRAL_HUB_TOKEN): the server cannot open pull requests.")
        content = await self.hub_export(evaluation_id, "eval-results", base_url)
        if not yaml.safe_load(content):
            raise Conflict(
                f"Evaluation {evaluation_id} has no score on a Hub benchmark's own task (no task of its suite names "
                "a `hub.task_id`): there is nothing to publish as `.eval_results`; use the model-index export."
            )
        evaluation = await load_evaluation(self.session, evaluation_id)
        config = evaluation.config
        title = f"Add {config['suite']} scores from Corral"
        description = (
            f"Scores of revision {config['revision']} on {config['suite']} ({config['precision']}, chat template "
            f"{'on' if config['apply_chat_template'] else 'off'}, lm-eval {config['harness_version']}), "
            f"Corral evaluation {evaluation.id}."
        )
        files = {f".eval_results/corral-{config['suite']}.yaml": content.encode()}
        await release_connection(self.session)  # no connection held while the Hub takes its time
        try:
            return await client.ask(
                client.open_pull_request,
                config["model"],
                files,
                title,
                description,
                deadline_seconds=deadline_seconds,
            )
        except HubError as error:
            raise hub_problem(error) from None


def hub_exports(evaluation: Evaluation, suite: SuiteDefinition, export_format: str, source_url: str) -> str:
    """The evaluation's scores for the Hub, built with huggingface_hub's own helpers and labelled as each format
    means them. `.eval_results/*.yaml` entries are results on a Hub benchmark's own task (`dataset.task_id` from
    the benchmark's eval.yaml): only tasks whose suite entry names one, with the raw metric as a percentage. A
    model card's `model-index` carries every task with a Hub dataset id, normalized 0-100 and labelled as the
    Open LLM Leaderboard labels its own entries. Both link back to the evaluation (`source_url`)."""
    from huggingface_hub import EvalResult, EvalResultEntry, ModelCardData, eval_result_entries_to_yaml

    tasks = evaluation.summary["tasks"] if evaluation.summary else {}
    config = evaluation.config
    scored = [(task, tasks[task.name]) for task in suite.tasks if task.dataset and task.name in tasks]
    described = (
        f"lm-eval {config['harness_version']}, {config['precision']}, chat template "
        f"{'on' if config['apply_chat_template'] else 'off'}, Corral suite {config['suite']} {config['suite_version']}"
    )
    if export_format == "eval-results":
        entries = [
            EvalResultEntry(
                dataset_id=task.dataset or "",
                task_id=task.hub.task_id,
                value=round(scores["raw"] * 100, 2),
                date=evaluation.finished_at.isoformat() if evaluation.finished_at else None,
                source_url=source_url,
                source_name="Corral",
                notes=(
                    f"{task.hub.name}: {task.hub.metric} in percent; {described}; "
                    f"normalized (Open LLM Leaderboard) {scores['normalized']:.2f}"
                ),
            )
            for task, scores in scored
            if task.hub is not None and task.hub.task_id is not None
        ]
        return yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False)
    card = ModelCardData(
        model_name=config["model"],
        eval_results=[
            EvalResult(
                task_type="text-generation",
                task_name="Text Generation",
                dataset_type=task.dataset or "",
                dataset_name=task.hub.name if task.hub else task.display_name,
                dataset_args={
                    "num_few_shot": config["num_fewshot"] if config["num_fewshot"] is not None else task.num_fewshot
                },
                metric_type=task.hub.metric if task.hub else " and ".join(task.metrics),
                metric_value=round(scores["normalized"], 2),
                metric_name="normalized score (0-100)",
                source_name="Corral",
                source_url=source_url,
            )
            for task, scores in scored
        ],
    )
    return str(card.to_yaml())
