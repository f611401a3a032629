"""Score tables: leaderboards per suite, comparisons, a model's history, and importing outside results."""

import asyncio
import base64
import binascii
import csv
import io
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from huggingface_hub import EvalResult, EvalResultEntry, ModelCardData, eval_result_entries_to_yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.errors import BadRequest, Conflict, NotFound, UnprocessableEntity
from app.evaluations.identity import EvaluationConfig, config_hash
from app.evaluations.repository import load_evaluation
from app.hardware import estimator
from app.hardware.catalog import accelerators
from app.hub.client import HubClient, HubError
from app.hub.errors import hub_problem
from app.registry.repository import model_by_repo_id
from app.registry.revisions.service import RevisionService
from app.results import changes
from app.results.ingest import ResultsError, finite_document, parse_scores, task_tree
from app.results.repository import canonical_json, new_result, record_scores, summarize_evaluation
from app.scores import cache
from app.scores.schemas import (
    Comparison,
    ResultsImport,
    ScoreHistoryEntry,
    TaskDelta,
    TaskScore,
)
from app.suites.schemas import SuiteDefinition
from app.tables import (
    Evaluation,
    EvaluationJob,
    EvaluationState,
    Family,
    JobResult,
    JobState,
    License,
    Model,
    Revision,
    SuiteVersion,
)
from app.tables.base import utcnow
from app.tables.types import json_array_contains

SIGNIFICANCE = 1.96  # two-sided 95 %
# A partial evaluation has scores for some tasks: it can be compared and exported, never ranked.
SCORED_STATES = (EvaluationState.SUCCEEDED, EvaluationState.PARTIAL)
FIXED_SORTS = {"average", "parameters", "model", "evaluated_at"}
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


@dataclass(frozen=True)
class Board:
    """A ranked leaderboard: its rows as plain dicts (pages and exports) and each row's JSON (the API)."""

    tasks: list[str]
    rows: list[dict[str, Any]]
    row_json: list[bytes]


@dataclass(frozen=True)
class LeaderboardFilters:
    family: str | None = None
    license: str | None = None
    kind: str | None = None
    precision: str | None = None
    chat_template: bool | None = None
    tag: str | None = None
    min_parameters: int | None = None
    max_parameters: int | None = None
    fits_on: str | None = None
    fits_count: int = 1


def _task_scores(summary: dict[str, Any] | None) -> dict[str, TaskScore]:
    tasks = (summary or {}).get("tasks", {})
    return {
        name: TaskScore(
            raw=values["raw"],
            raw_stderr=values["raw_stderr"],
            normalized=values["normalized"],
            stderr=values["stderr"],
        )
        for name, values in tasks.items()
    }


class ScoreService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def suite_tasks(self, suite: str) -> list[str]:
        definition = await self.session.scalar(
            select(SuiteVersion.definition).where(SuiteVersion.name == suite, SuiteVersion.latest.is_(True))
        )
        if definition is None:
            known = (await self.session.execute(select(SuiteVersion.name).distinct())).scalars().all()
            raise NotFound(f"No suite {suite!r}; known suites: {', '.join(sorted(known)) or 'none'}.")
        return [task.name for task in SuiteDefinition.model_validate(definition).tasks]

    async def leaderboard(self, suite: str, filters: LeaderboardFilters, sort: str, cache_seconds: float) -> Board:
        """The ranked leaderboard, from the per-process cache when fresh (see app/scores/cache.py)."""
        bind = self.session.get_bind()
        key = (str(bind.engine.url), suite, filters, sort)
        board: Board | None = cache.cached(key)
        if board is not None:
            return board
        async with cache.building(key):
            board = cache.cached(key)  # built by the request we waited for
            if board is None:
                seen = changes.generation()
                tasks = await self.suite_tasks(suite)
                rows = await self._ranked_rows(suite, tasks, filters, sort)
                row_json = [json.dumps(row, allow_nan=False).encode() for row in rows]
                board = Board(tasks=tasks, rows=rows, row_json=row_json)
                cache.keep(key, board, cache_seconds, seen)
        return board

    async def _ranked_rows(
        self, suite: str, tasks: list[str], filters: LeaderboardFilters, sort: str
    ) -> list[dict[str, Any]]:
        """Every row, ranked: the latest successful evaluation per revision, precision and chat template."""
        descending = sort.startswith("-")
        key = sort.lstrip("-")
        if key not in FIXED_SORTS and key not in tasks:
            raise UnprocessableEntity(
                f"cannot sort by {key!r}: use {', '.join(sorted(FIXED_SORTS))} or a task of {suite}",
                field="sort",
                location="query",
            )
        model_license, family_license = aliased(License), aliased(License)
        # Columns, not entities: the whole suite is read, so ORM identity bookkeeping would dominate.
        statement = (
            select(
                Evaluation.id,
                Evaluation.revision_id,
                Evaluation.config,
                Evaluation.summary,
                Evaluation.average,
                Evaluation.finished_at,
                Model.repo_id,
                Model.kind,
                Model.parameter_count,
                Revision.sha,
                SuiteVersion.version,
                Family.slug,
                model_license.slug,
                family_license.slug,
            )
            .join(Model, Model.id == Evaluation.model_id)
            .join(Revision, Revision.id == Evaluation.revision_id)
            .join(SuiteVersion, SuiteVersion.id == Evaluation.suite_version_id)
            .outerjoin(Family, Family.id == Model.family_id)
            .outerjoin(model_license, model_license.id == Model.license_id)
            .outerjoin(family_license, family_license.id == Family.license_id)
            .where(SuiteVersion.name == suite, Evaluation.state == EvaluationState.SUCCEEDED)
            .order_by(Evaluation.finished_at.desc(), Evaluation.id)
        )
        if filters.family is not None:
            statement = statement.where(Family.slug == filters.family)
        if filters.kind is not None:
            statement = statement.where(Model.kind == filters.kind)
        if filters.tag is not None:
            statement = statement.where(json_array_contains(Model.tags, filters.tag))
        if filters.min_parameters is not None:
            statement = statement.where(Model.parameter_count >= filters.min_parameters)
        if filters.max_parameters is not None:
            statement = statement.where(Model.parameter_count <= filters.max_parameters)
        device_bytes = None
        if filters.fits_on is not None:
            device = accelerators().get(filters.fits_on)
            if device is None:
                raise UnprocessableEntity(f"no accelerator {filters.fits_on!r}", field="fits_on", location="query")
            device_bytes = device.memory_bytes * filters.fits_count
        rows: list[dict[str, Any]] = []
        seen: set[tuple[uuid.UUID, str, bool]] = set()
        for (
            evaluation_id,
            revision_id,
            config,
            summary,
            average,
            finished_at,
            repo_id,
            kind,
            parameters,
            sha,
            suite_version,
            family,
            own_license,
            inherited_license,
        ) in (await self.session.execute(statement)).all():
            chat = bool(config["apply_chat_template"])
            settings_class = (revision_id, config["precision"], chat)
            if settings_class in seen:
                continue  # an older run of the same revision and settings: the latest one stands
            seen.add(settings_class)
            licence = own_license or inherited_license
            if filters.license is not None and licence != filters.license:
                continue
            if filters.precision is not None and config["precision"] != filters.precision:
                continue
            if filters.chat_template is not None and chat != filters.chat_template:
                continue
            if device_bytes is not None:
                if parameters is None:
                    continue
                weights = estimator.weight_bytes(parameters, config["precision"])
                if estimator.with_overhead(weights) > device_bytes:
                    continue
            summary = summary or {}
            rows.append(
                {
                    "rank": 0,
                    "model": repo_id,
                    "revision": sha,
                    "family": family,
                    "license": licence,
                    "kind": kind.value,
                    "parameters": parameters,
                    "precision": config["precision"],
                    "chat_template": chat,
                    "average": average,
                    "average_stderr": summary.get("average_stderr"),
                    "tasks": {
                        name: {field: values[field] for field in ("raw", "raw_stderr", "normalized", "stderr")}
                        for name, values in summary.get("tasks", {}).items()
                    },
                    "evaluation_id": str(evaluation_id),
                    "harness_version": config["harness_version"],
                    "suite_version": suite_version,
                    "evaluated_at": finished_at.isoformat() if finished_at else None,
                    "links": {
                        "evaluation": f"/v1/evaluations/{evaluation_id}",
                        "provenance": f"/v1/evaluations/{evaluation_id}/provenance",
                    },
                }
            )

        def value(row: dict[str, Any]) -> Any:
            if key == "model":
                return row["model"].lower()
            if key in FIXED_SORTS:
                return row[key]
            task = row["tasks"].get(key)
            return task["normalized"] if task else None

        present = [row for row in rows if value(row) is not None]
        missing = [row for row in rows if value(row) is None]
        present.sort(key=value, reverse=descending)  # stable: ties keep the newest first
        ranked = present + missing  # rows without the sorted value go last, whatever the direction
        for position, row in enumerate(ranked, start=1):
            row["rank"] = position
        return ranked

    async def compare(self, base_id: uuid.UUID, candidate_id: uuid.UUID) -> Comparison:
        base = await load_evaluation(self.session, base_id)
        candidate = await load_evaluation(self.session, candidate_id)
        for name, evaluation in (("base", base), ("candidate", candidate)):
            if evaluation.state not in SCORED_STATES or evaluation.summary is None:
                raise UnprocessableEntity(
                    f"evaluation {evaluation.id} has no scores ({evaluation.state.value})", field=name, location="query"
                )
        if base.config["suite"] != candidate.config["suite"]:
            raise UnprocessableEntity(
                f"the runs are of different suites ({base.config['suite']} and {candidate.config['suite']}): "
                "their scores cannot be compared",
                field="candidate",
                location="query",
            )
        base_tasks, candidate_tasks = _task_scores(base.summary), _task_scores(candidate.summary)
        names = list(dict.fromkeys([*base_tasks, *candidate_tasks]))
        deltas = [_delta(name, base_tasks.get(name), candidate_tasks.get(name)) for name in names]
        assert base.summary is not None
        assert candidate.summary is not None
        average = _delta_values(
            "average",
            base.summary.get("average"),
            base.summary.get("average_stderr"),
            candidate.summary.get("average"),
            candidate.summary.get("average_stderr"),
        )
        differences = {
            setting: {"base": base.config.get(setting), "candidate": candidate.config.get(setting)}
            for setting in COMPARED_SETTINGS
            if base.config.get(setting) != candidate.config.get(setting)
        }
        return Comparison(
            suite=base.config["suite"],
            base=base.id,
            candidate=candidate.id,
            tasks=deltas,
            average=average,
            config_differences=differences,
        )

    async def hub_export(self, evaluation_id: uuid.UUID, export_format: str, base_url: str) -> str:
        """`base_url`: where people reach this service; the export links back to the evaluation there."""
        evaluation = await load_evaluation(self.session, evaluation_id)
        if evaluation.state not in SCORED_STATES or evaluation.summary is None:
            raise Conflict(f"Evaluation {evaluation_id} has no scores yet ({evaluation.state.value}).")
        definition = await self.session.scalar(
            select(SuiteVersion.definition).where(SuiteVersion.id == evaluation.suite_version_id)
        )
        source_url = f"{base_url.rstrip('/')}/v1/evaluations/{evaluation.id}"
        return hub_exports(evaluation, SuiteDefinition.model_validate(definition), export_format, source_url)

    async def hub_pull_request(
        self, evaluation_id: uuid.UUID, client: HubClient, has_token: bool, base_url: str
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
        try:
            return await asyncio.get_running_loop().run_in_executor(
                client.executor, client.open_pull_request, config["model"], files, title, description
            )
        except HubError as error:
            raise hub_problem(error) from None

    async def history(self, repo_id: str, suite: str | None) -> list[ScoreHistoryEntry]:
        model = await model_by_repo_id(self.session, repo_id)
        if model is None:
            raise NotFound(f"No model {repo_id!r}.")
        statement = (
            select(Evaluation, Revision.sha, SuiteVersion.name, SuiteVersion.version)
            .join(Revision, Revision.id == Evaluation.revision_id)
            .join(SuiteVersion, SuiteVersion.id == Evaluation.suite_version_id)
            .where(Evaluation.model_id == model.id, Evaluation.state == EvaluationState.SUCCEEDED)
            .order_by(Evaluation.finished_at.desc())
        )
        if suite is not None:
            statement = statement.where(SuiteVersion.name == suite)
        return [
            ScoreHistoryEntry(
                evaluation_id=evaluation.id,
                revision=sha,
                suite=name,
                suite_version=version,
                precision=evaluation.config["precision"],
                chat_template=bool(evaluation.config["apply_chat_template"]),
                average=evaluation.average,
                tasks=_task_scores(evaluation.summary),
                finished_at=evaluation.finished_at,
                source=evaluation.source,
            )
            for evaluation, sha, name, version in (await self.session.execute(statement)).all()
        ]

    async def import_results(self, body: ResultsImport, requested_by: str | None) -> tuple[uuid.UUID, bool]:
        """Record lm-eval output made elsewhere as a finished evaluation; the same document again is a no-op."""
        model = await model_by_repo_id(self.session, body.model)
        if model is None:
            raise UnprocessableEntity(f"No model {body.model!r} is registered.", field="model")
        revision = await RevisionService(self.session).by_sha(model, body.revision)
        if revision is None:
            raise UnprocessableEntity(f"{body.model} has no recorded revision {body.revision}.", field="revision")
        suite_row = await self.session.scalar(
            select(SuiteVersion).where(SuiteVersion.name == body.suite, SuiteVersion.latest.is_(True))
        )
        if suite_row is None:
            raise UnprocessableEntity(f"No suite {body.suite!r}.", field="suite")
        suite = SuiteDefinition.model_validate(suite_row.definition)
        try:
            document = finite_document(body.results)  # lm-eval's NaN standard errors read "N/A"
            parsed = parse_scores(document, task_tree(suite))
        except ResultsError as error:
            raise UnprocessableEntity(error.message, field=error.path) from None
        _, digest = canonical_json(document)
        earlier = await self.session.scalar(
            select(JobResult.evaluation_id)
            .join(Evaluation, Evaluation.id == JobResult.evaluation_id)
            .where(JobResult.content_sha256 == digest, Evaluation.revision_id == revision.id)
        )
        if earlier is not None:
            return earlier, False
        raw_config = body.results.get("config")
        document_config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
        version = body.harness_version or str(body.results.get("lm_eval_version") or "unknown")[:32]
        limit = document_config.get("limit")
        seed = document_config.get("random_seed")
        config = EvaluationConfig(
            model=model.repo_id,
            revision=revision.sha,
            suite=suite_row.name,
            suite_version=suite_row.version,
            harness_version=version,
            backend=body.backend,
            precision=body.precision,
            apply_chat_template=body.apply_chat_template,
            fewshot_as_multiturn=body.fewshot_as_multiturn,
            num_fewshot=None,
            limit=limit if isinstance(limit, int | float) and not isinstance(limit, bool) else None,
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            gen_kwargs=None,
        )
        now = utcnow()
        evaluation = Evaluation(
            model_id=model.id,
            revision_id=revision.id,
            suite_version_id=suite_row.id,
            config_hash=config_hash(config),
            config=config,
            batch_size=str(document_config.get("batch_size", "unknown"))[:16],
            priority=0,
            labels=[],
            state=EvaluationState.SUCCEEDED,
            requirements={"memory_bytes": 0, "device_bytes": 0, "context_tokens": suite.context_tokens, "notes": []},
            requested_by=requested_by,
            started_at=now,
            finished_at=now,
            source="import",
        )
        self.session.add(evaluation)
        await self.session.flush()
        job = EvaluationJob(
            evaluation_id=evaluation.id,
            shard_index=0,
            tasks=[task.name for task in suite.tasks],
            state=JobState.SUCCEEDED,
            priority=0,
            backend=body.backend,
            harness_version=version,
            labels=[],
            required_memory_bytes=0,
            required_device_bytes=0,
            queued_at=now,
            available_at=now,
            finished_at=now,
        )
        self.session.add(job)
        await self.session.flush()
        self.session.add(new_result(job_id=job.id, evaluation_id=evaluation.id, attempt_id=None, document=document))
        await self.session.flush()
        await record_scores(self.session, evaluation.id, job.id, parsed)
        await summarize_evaluation(self.session, evaluation)
        return evaluation.id, True


def hub_exports(evaluation: Evaluation, suite: SuiteDefinition, export_format: str, source_url: str) -> str:
    """The evaluation's scores for the Hub, built with huggingface_hub's own helpers and labelled as each format
    means them. `.eval_results/*.yaml` entries are results on a Hub benchmark's own task (`dataset.task_id` from
    the benchmark's eval.yaml): only tasks whose suite entry names one, with the raw metric as a percentage. A
    model card's `model-index` carries every task with a Hub dataset id, normalized 0-100 and labelled as the
    Open LLM Leaderboard labels its own entries. Both link back to the evaluation (`source_url`)."""
    summary = evaluation.summary or {}
    config = evaluation.config
    scored = [
        (task, summary.get("tasks", {}).get(task.name))
        for task in suite.tasks
        if task.dataset and summary.get("tasks", {}).get(task.name) is not None
    ]
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


def _delta(name: str, base: TaskScore | None, candidate: TaskScore | None) -> TaskDelta:
    return _delta_values(
        name,
        base.normalized if base else None,
        base.stderr if base else None,
        candidate.normalized if candidate else None,
        candidate.stderr if candidate else None,
    )


def _delta_values(
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


def encode_cursor(sort: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"sort": sort, "offset": offset}).encode()).decode()


def decode_cursor(cursor: str | None, sort: str) -> int:
    if cursor is None:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        offset = data["offset"]
        if data["sort"] != sort or not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("The cursor is not valid for this listing (or its sort changed).") from None
    return offset


def to_csv(tasks: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head = ["rank", "model", "revision", "precision", "chat_template", "parameters", "family", "license", "average"]
    writer.writerow(head + [f"{task}" for task in tasks] + [f"{task}_raw" for task in tasks] + ["evaluation_id"])
    for row in rows:
        scores = [row["tasks"].get(task) for task in tasks]
        writer.writerow(
            [
                row["rank"],
                row["model"],
                row["revision"],
                row["precision"],
                row["chat_template"],
                row["parameters"] or "",
                row["family"] or "",
                row["license"] or "",
                _fmt(row["average"]),
            ]
            + [_fmt(score["normalized"] if score else None) for score in scores]
            + [_fmt(score["raw"] if score else None, 4) for score in scores]
            + [row["evaluation_id"]]
        )
    return out.getvalue()


def to_markdown(tasks: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    head = ["#", "model", "revision", "precision", "chat", "average", *tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [
            str(row["rank"]),
            row["model"],
            row["revision"][:7],
            row["precision"],
            "yes" if row["chat_template"] else "no",
            _fmt(row["average"]),
        ]
        for task in tasks:
            score = row["tasks"].get(task)
            if score is None:
                cells.append("—")
            else:
                stderr = score["stderr"]
                cells.append(_fmt(score["normalized"]) + (f" ± {stderr:.2f}" if stderr is not None else ""))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"
