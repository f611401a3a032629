"""The score tables' SQL: a suite's scored runs for ranking, a model's history, suite definitions."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from corral.documents import EvaluationConfig, ScoreSummary
from corral.errors import NotFound
from corral.suites import repository as suites
from corral.suites.schemas import SuiteDefinition
from corral.tables import Evaluation, Family, License, Model, Revision, SuiteVersion
from corral.tables.types import json_array_contains
from corral.wire.enums import EvaluationState, ModelKind


@dataclass(frozen=True)
class LeaderboardQuery:
    """The filters the database applies; the rest (settings class, licence, fit) are decided per row."""

    suite: str
    family: str | None = None
    kind: str | None = None
    tag: str | None = None
    min_parameters: int | None = None
    max_parameters: int | None = None


@dataclass(frozen=True)
class ScoredRun:
    """One succeeded evaluation of the suite with what a leaderboard row shows of its model."""

    evaluation_id: uuid.UUID
    revision_id: uuid.UUID
    config: EvaluationConfig
    summary: ScoreSummary | None
    average: float | None
    finished_at: datetime | None
    repo_id: str
    kind: ModelKind
    parameter_count: int | None
    context_length: int | None
    hidden_size: int | None
    num_layers: int | None
    num_attention_heads: int | None
    num_kv_heads: int | None
    intermediate_size: int | None
    vocab_size: int | None
    head_dim: int | None
    tied_embeddings: bool | None
    moe_experts_total: int | None
    default_dtype: str | None
    stored_weight_bytes: int | None
    sha: str
    suite_version: str
    family: str | None
    own_license: str | None
    inherited_license: str | None


async def latest_suite(session: AsyncSession, name: str) -> SuiteDefinition:
    definition = await suites.latest_definition(session, name)
    if definition is None:
        known = await suites.names(session)
        raise NotFound(f"No suite {name!r}; known suites: {', '.join(known) or 'none'}.")
    return SuiteDefinition.model_validate(definition)


async def suite_of(session: AsyncSession, suite_version_id: uuid.UUID) -> SuiteDefinition:
    return SuiteDefinition.model_validate(await suites.definition(session, suite_version_id))


async def scored_runs(session: AsyncSession, query: LeaderboardQuery) -> list[ScoredRun]:
    """Every succeeded run of the suite that passes the database-side filters, newest first."""
    model_license, family_license = aliased(License), aliased(License)
    # Columns, not entities: the whole suite is read, so ORM identity bookkeeping would dominate.
    statement = (
        select(
            Evaluation.id.label("evaluation_id"),
            Evaluation.revision_id,
            Evaluation.config,
            Evaluation.summary,
            Evaluation.average,
            Evaluation.finished_at,
            Model.repo_id,
            Model.kind,
            Model.parameter_count,
            Model.context_length,
            Model.hidden_size,
            Model.num_layers,
            Model.num_attention_heads,
            Model.num_kv_heads,
            Model.intermediate_size,
            Model.vocab_size,
            Model.head_dim,
            Model.tied_embeddings,
            Model.moe_experts_total,
            Model.default_dtype,
            Model.stored_weight_bytes,
            Revision.sha,
            SuiteVersion.version.label("suite_version"),
            Family.slug.label("family"),
            model_license.slug.label("own_license"),
            family_license.slug.label("inherited_license"),
        )
        .join(Model, Model.id == Evaluation.model_id)
        .join(Revision, Revision.id == Evaluation.revision_id)
        .join(SuiteVersion, SuiteVersion.id == Evaluation.suite_version_id)
        .outerjoin(Family, Family.id == Model.family_id)
        .outerjoin(model_license, model_license.id == Model.license_id)
        .outerjoin(family_license, family_license.id == Family.license_id)
        .where(SuiteVersion.name == query.suite, Evaluation.state == EvaluationState.SUCCEEDED)
        .order_by(Evaluation.finished_at.desc(), Evaluation.id)
    )
    if query.family is not None:
        statement = statement.where(Family.slug == query.family)
    if query.kind is not None:
        statement = statement.where(Model.kind == query.kind)
    if query.tag is not None:
        statement = statement.where(json_array_contains(Model.tags, query.tag))
    if query.min_parameters is not None:
        statement = statement.where(Model.parameter_count >= query.min_parameters)
    if query.max_parameters is not None:
        statement = statement.where(Model.parameter_count <= query.max_parameters)
    return [ScoredRun(**row._mapping) for row in (await session.execute(statement)).all()]


async def succeeded_history(
    session: AsyncSession, model_id: uuid.UUID, suite: str | None
) -> list[tuple[Evaluation, str, str, str]]:
    """A model's succeeded evaluations, newest first: (evaluation, revision sha, suite name, suite version)."""
    statement = (
        select(Evaluation, Revision.sha, SuiteVersion.name, SuiteVersion.version)
        .join(Revision, Revision.id == Evaluation.revision_id)
        .join(SuiteVersion, SuiteVersion.id == Evaluation.suite_version_id)
        .where(Evaluation.model_id == model_id, Evaluation.state == EvaluationState.SUCCEEDED)
        .order_by(Evaluation.finished_at.desc())
    )
    if suite is not None:
        statement = statement.where(SuiteVersion.name == suite)
    return [(evaluation, sha, name, version) for evaluation, sha, name, version in (await session.execute(statement))]
