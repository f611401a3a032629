"""Every ORM model, imported here so Alembic and relationships see the whole schema."""

from app.tables.api_token import ApiToken
from app.tables.base import Base
from app.tables.evaluation import (
    AttemptLogChunk,
    Evaluation,
    EvaluationJob,
    JobAttempt,
    JobResult,
    Score,
)
from app.tables.registry import (
    Alias,
    Family,
    License,
    Model,
    Revision,
)
from app.tables.runner import RegistrationToken, Runner
from app.tables.suite import SuiteVersion

__all__ = [
    "Alias",
    "ApiToken",
    "AttemptLogChunk",
    "Base",
    "Evaluation",
    "EvaluationJob",
    "Family",
    "JobAttempt",
    "JobResult",
    "License",
    "Model",
    "RegistrationToken",
    "Revision",
    "Runner",
    "Score",
    "SuiteVersion",
]
