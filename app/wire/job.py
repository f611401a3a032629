"""A claimed job as the runner checks it before anything of it reaches lm-eval: every field that does is held to
the same shape the server's request schema gives it (app/evaluations/schemas.py), so that a server bug or a
compromised server cannot hand the runner a model argument, a task path or a setting it would not accept."""

from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from app.wire.generation import Backend, GenerationSettings, backend_refusal

# The label an admin gives runners that may run a trusted revision's own code; such evaluations need it.
TRUSTED_CODE_LABEL = "trusted-code"

_SEGMENT = r"[A-Za-z0-9_]+(?:[.-][A-Za-z0-9_]+)*"
REPO_ID_PATTERN = rf"^{_SEGMENT}/{_SEGMENT}$"  # the Hub's rule (no ',' or '=': lm-eval splits model_args on them)
COMMIT_SHA_PATTERN = r"^[0-9a-f]{40}$"
TASK_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
BATCH_SIZE_PATTERN = r"^([1-9][0-9]{0,3}|auto(:[1-9][0-9]{0,2})?)$"
HARNESS_VERSION_PATTERN = r"^[0-9A-Za-z.+-]{1,32}$"

Precision = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"]
RepoIdText = Annotated[str, StringConstraints(max_length=193, pattern=REPO_ID_PATTERN)]
CommitShaText = Annotated[str, StringConstraints(pattern=COMMIT_SHA_PATTERN)]
TaskNameText = Annotated[str, StringConstraints(pattern=TASK_NAME_PATTERN)]


class Wire(BaseModel):
    # A newer server may send more than this agent reads; what it reads is held to its shape.
    model_config = ConfigDict(extra="ignore", frozen=True)


class JobSettings(Wire):
    precision: Precision
    backend: Backend
    batch_size: Annotated[str, StringConstraints(pattern=BATCH_SIZE_PATTERN)]
    apply_chat_template: StrictBool
    fewshot_as_multiturn: StrictBool
    num_fewshot: Annotated[StrictInt, Field(ge=0, le=64)] | None
    limit: Annotated[StrictInt, Field(ge=1, le=10**7)] | Annotated[StrictFloat, Field(gt=0, lt=1)] | None
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
    gen_kwargs: GenerationSettings | None
    harness_version: Annotated[str, StringConstraints(pattern=HARNESS_VERSION_PATTERN)]
    trust_remote_code: StrictBool = Field(
        default=False, description="An admin trusted this revision's own code; runs only where the runner allows it."
    )
    needs_hub_token: StrictBool = Field(
        default=True, description="The weights may need the runner's Hub token (gated, private or not known)."
    )

    @field_validator("gen_kwargs")
    @classmethod
    def _within_the_backend(cls, value: GenerationSettings | None, info: ValidationInfo) -> GenerationSettings | None:
        backend = info.data.get("backend")
        if value is not None and backend is not None and (refused := backend_refusal(value, backend)):
            raise ValueError(refused)
        return value


class ClaimedTask(Wire):
    name: TaskNameText
    num_fewshot: Annotated[StrictInt, Field(ge=0, le=64)]


class JobPlacement(Wire):
    """How the server's fit rule spreads the job over this runner's devices."""

    tensor_parallel: Annotated[StrictInt, Field(ge=1, le=1024)] = 1
    pipeline_parallel: Annotated[StrictInt, Field(ge=1, le=1024)] = 1


class ClaimedJob(Wire):
    """What a claim hands over: the job, and the lease the agent keeps alive."""

    attempt_id: str
    attempt_number: int
    lease_token: str
    heartbeat_seconds: float
    job_id: str
    evaluation_id: str
    shard_index: int
    model: RepoIdText
    revision: CommitShaText
    suite: str
    suite_version: str
    include_path: Annotated[str, StringConstraints(max_length=200)] | None
    tasks: Annotated[list[ClaimedTask], Field(min_length=1, max_length=500)]
    settings: JobSettings
    required_memory_bytes: int
    placement: JobPlacement = Field(default_factory=JobPlacement)

    @field_validator("include_path")
    @classmethod
    def _the_runners_own_task_files(cls, value: str | None) -> str | None:
        # Under evals/tasks/ only: a path elsewhere would have lm-eval load (and, through `!function`, run)
        # whatever lies there.
        if value is None:
            return None
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or path.parts[:1] != ("tasks",) or "\\" in value:
            raise ValueError("include_path must name a folder under the runner's evals/tasks/")
        return value


class ClaimEnvelope(Wire):
    """The part of a claim the runner needs to answer it, even when it refuses the rest."""

    attempt_id: str
    lease_token: str
    job_id: str
