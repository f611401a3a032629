"""Every ORM model, imported here so Alembic and relationships see the whole schema."""

from corral.tables.api_token import ApiToken
from corral.tables.base import Base
from corral.tables.evaluation import (
    AttemptLogChunk,
    Evaluation,
    EvaluationJob,
    JobAttempt,
    JobResult,
    Score,
)
from corral.tables.registry import (
    Alias,
    Family,
    License,
    Model,
    Revision,
)
from corral.tables.runner import RegistrationToken, Runner
from corral.tables.suite import SuiteVersion

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
