"""Results produced outside Corral, recorded as a finished evaluation of a recorded revision."""

import uuid

from pydantic import JsonValue, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.documents import StoredRequirements
from corral.errors import UnprocessableEntity
from corral.evaluations import repository, state
from corral.evaluations.identity import EvaluationConfig, config_hash
from corral.evaluations.schemas import ResultsImport
from corral.registry.repository import model_by_repo_id
from corral.registry.revisions.service import RevisionService
from corral.results.ingest import ResultsError, finite_document, parse_scores, task_tree
from corral.results.repository import canonical_json, new_result, record_scores
from corral.suites import repository as suites
from corral.suites.schemas import SuiteDefinition
from corral.tables import Evaluation, EvaluationJob
from corral.tables.base import utcnow
from corral.wire.enums import EvaluationState, JobState
from corral.wire.generation import GenerationSettings


def imported_generation_settings(recorded: JsonValue) -> GenerationSettings | None:
    """The generation settings lm-eval recorded (a dict, or the CLI's `key=value,...` text in older versions),
    held to the same allow-list as a request's: a document that says it ran with code-loading settings is
    refused, not recorded as if it had not."""
    if recorded in (None, "", {}):
        return None
    if isinstance(recorded, str):
        recorded = {key: _cli_value(value) for key, _, value in (part.partition("=") for part in recorded.split(","))}
    try:
        return GenerationSettings.model_validate(recorded)
    except ValidationError as error:
        message = error.errors()[0]["msg"]
        raise UnprocessableEntity(message, field="results/config/gen_kwargs") from None


def _cli_value(text: str) -> JsonValue:
    """lm-eval's reading of a `key=value` value: booleans, numbers, else text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


class ImportService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def import_results(self, body: ResultsImport, requested_by: str | None) -> tuple[uuid.UUID, bool]:
        """Record lm-eval output made elsewhere as a finished evaluation; the same document again is a no-op."""
        model = await model_by_repo_id(self.session, body.model)
        if model is None:
            raise UnprocessableEntity(f"No model {body.model!r} is registered.", field="model")
        revision = await RevisionService(self.session).by_sha(model, body.revision)
        if revision is None:
            raise UnprocessableEntity(f"{body.model} has no recorded revision {body.revision}.", field="revision")
        suite_row = await suites.version(self.session, body.suite, None)
        if suite_row is None:
            raise UnprocessableEntity(f"No suite {body.suite!r}.", field="suite")
        suite = SuiteDefinition.model_validate(suite_row.definition)
        try:
            document = finite_document(body.results)  # lm-eval's NaN standard errors read "N/A"
            parsed = parse_scores(document, task_tree(suite))
        except ResultsError as error:
            raise UnprocessableEntity(error.message, field=error.path) from None
        _, digest = canonical_json(document)
        earlier = await repository.evaluation_with_result(self.session, digest, revision.id)
        if earlier is not None:
            return earlier, False
        raw_config = body.results.get("config")
        run = raw_config if isinstance(raw_config, dict) else {}
        version = body.harness_version or str(body.results.get("lm_eval_version") or "unknown")[:32]
        limit, seed = run.get("limit"), run.get("random_seed")
        generation = imported_generation_settings(run.get("gen_kwargs"))
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
            gen_kwargs=(generation.as_arguments() or None) if generation is not None else None,
        )
        now = utcnow()
        evaluation = Evaluation(
            model_id=model.id,
            revision_id=revision.id,
            suite_version_id=suite_row.id,
            config_hash=config_hash(config),
            config=config,
            batch_size=str(run.get("batch_size", "unknown"))[:16],
            priority=0,
            labels=[],
            state=EvaluationState.SUCCEEDED,
            requirements=StoredRequirements(
                memory_bytes=0, device_bytes=0, context_tokens=suite.context_tokens, notes=[]
            ),
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
        await state.scored(self.session, evaluation, suite)
        return evaluation.id, True
