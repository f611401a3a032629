"""The states, categories, kinds and scopes the server stores and both sides of the wire speak: the one definition
of each, for the tables (as column values), the API documents and the runner agent."""

from enum import StrEnum


class Scope(StrEnum):
    """What a token may do. `admin` includes `publish`, which includes `read`; `runner` stands apart."""

    ADMIN = "admin"
    PUBLISH = "publish"
    RUNNER = "runner"
    READ = "read"


class EvaluationState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # every job finished, but some of the suite's scores are missing from the results
    FAILED = "failed"
    CANCELED = "canceled"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class AttemptState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"  # the lease lapsed: the runner stopped heart-beating
    CANCELED = "canceled"
    RELEASED = "released"  # the runner handed the job back unfinished (it was asked to stop)


class FailureCategory(StrEnum):
    INFRASTRUCTURE = "infrastructure"  # retried up to a bound
    OUT_OF_MEMORY = "out_of_memory"  # retried with a larger memory requirement
    MODEL_ERROR = "model_error"  # fails the evaluation
    HARNESS_ERROR = "harness_error"  # fails the evaluation
    LEASE_EXPIRED = "lease_expired"  # set by the reaper, counted as infrastructure


class ModelKind(StrEnum):
    BASE = "base"
    INSTRUCT = "instruct"
    CODE = "code"
    VISION = "vision"
    GUARD = "guard"


class ModelStatus(StrEnum):
    ANNOUNCED = "announced"
    RELEASED = "released"
    DEPRECATED = "deprecated"
    WITHDRAWN = "withdrawn"


class Lineage(StrEnum):
    """How a model derives from its base model."""

    FINETUNE = "finetune"
    QUANTIZED = "quantized"
    ADAPTER = "adapter"
    MERGE = "merge"
    DISTILLED = "distilled"
    PRUNED = "pruned"


class RunnerState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # takes no new jobs
    DRAINING = "draining"  # finishes what it runs, then takes no new jobs
