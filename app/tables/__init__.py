"""Every ORM model, imported here so Alembic and relationships see the whole schema."""

from app.tables.api_token import ApiToken, Scope
from app.tables.base import Base
from app.tables.evaluation import (
    AttemptLogChunk,
    AttemptState,
    Evaluation,
    EvaluationJob,
    EvaluationState,
    FailureCategory,
    JobAttempt,
    JobResult,
    JobState,
    Score,
)
from app.tables.registry import (
    Alias,
    Family,
    License,
    Lineage,
    Model,
    ModelKind,
    ModelStatus,
    Revision,
)
from app.tables.runner import RegistrationToken, Runner, RunnerState
from app.tables.suite import SuiteVersion

__all__ = [
    "Alias",
    "ApiToken",
    "AttemptLogChunk",
    "AttemptState",
    "Base",
    "Evaluation",
    "EvaluationJob",
    "EvaluationState",
    "FailureCategory",
    "Family",
    "JobAttempt",
    "JobResult",
    "JobState",
    "License",
    "Lineage",
    "Model",
    "ModelKind",
    "ModelStatus",
    "RegistrationToken",
    "Revision",
    "Runner",
    "RunnerState",
    "Scope",
    "Score",
    "SuiteVersion",
]
