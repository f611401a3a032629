"""The runner protocol's documents: what a claim hands over, heartbeats, failures and result uploads."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas import AS_OBJECT, AS_WRITTEN, JsonField, ReadModel, WriteModel
from app.suites.schemas import TaskName
from app.wire.generation import GenerationArguments

LEASE_HEADER = "Corral-Lease-Token"
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
ReportedCategory = Literal["infrastructure", "out_of_memory", "model_error", "harness_error"]


class JobSettings(ReadModel):
    precision: str
    backend: str
    batch_size: str
    apply_chat_template: bool
    fewshot_as_multiturn: bool
    num_fewshot: int | None
    limit: int | float | None
    seed: int
    gen_kwargs: Annotated[GenerationArguments, AS_WRITTEN, AS_OBJECT] | None = Field(
        description="As the evaluation stored it: within the allow-list of `EvaluationCreate.gen_kwargs`, which the "
        "runner checks again."
    )
    harness_version: str
    trust_remote_code: bool = Field(description="An admin trusted this revision's own code (and still does).")
    needs_hub_token: bool = Field(description="The weights may need the runner's Hub token (gated, private, unknown).")


class ClaimedTask(ReadModel):
    name: str
    num_fewshot: int


class JobPlacement(ReadModel):
    """How the job spreads over the claiming runner's devices (app/hardware/fit.py decides)."""

    tensor_parallel: int = Field(
        description="Devices of one machine the model is spread over (on hf, the GPUs accelerate places layers on)."
    )
    pipeline_parallel: int = Field(description="Nodes the model is spread over (vLLM on Ray); 1 on one machine.")


class ClaimedJob(ReadModel):
    """Everything a runner needs to run one job, and the lease it must keep alive."""

    attempt_id: uuid.UUID
    attempt_number: int
    lease_token: str = Field(description=f"Send it back in `{LEASE_HEADER}` on every write for this attempt.")
    lease_expires_at: datetime
    heartbeat_seconds: int
    job_id: uuid.UUID
    evaluation_id: uuid.UUID
    shard_index: int
    model: str
    revision: str
    suite: str
    suite_version: str
    include_path: str | None = Field(description="Custom task definitions, relative to the evals/ directory.")
    tasks: list[ClaimedTask]
    settings: JobSettings
    required_memory_bytes: int
    placement: JobPlacement


class FreeAccelerator(WriteModel):
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    memory_bytes: int = Field(ge=1, le=10**13, description="Per device.")
    count: int = Field(ge=1, le=1024, description="Free per node.")
    nodes: int = Field(default=1, ge=1, le=100_000, description="Nodes with that many free.")


class ClaimRequest(WriteModel):
    """Optional: what a cluster runner has free now (from its scheduler); the job is matched against it, by the
    same rule as against what the runner registered."""

    free: list[FreeAccelerator] | None = Field(default=None, max_length=64)


class Progress(WriteModel):
    overall: Fraction | None = None
    tasks: dict[TaskName, Fraction] = Field(default_factory=dict, max_length=500)
    stage: Annotated[str, StringConstraints(max_length=200)] | None = Field(default=None, examples=["loading weights"])


class Heartbeat(WriteModel):
    progress: Progress = Field(default_factory=Progress)
    external_ref: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="Where a cluster runs the attempt (`slurm:1234`, `k8s:namespace/corral-<attempt>`).",
        examples=["slurm:1234"],
    )


class HeartbeatReply(ReadModel):
    lease_expires_at: datetime | None
    cancel_requested: bool = Field(description="Stop the job: the evaluation was canceled. The attempt is over.")
    heartbeat_seconds: int


class Failure(WriteModel):
    category: ReportedCategory
    message: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


class Release(WriteModel):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = Field(
        examples=["The runner was asked to stop (SIGTERM) and handed the job back."]
    )


class FailureReply(ReadModel):
    job_state: str
    retried: bool = Field(description="The job went back to the queue.")
    available_at: datetime | None = Field(description="When a retried job can be claimed again.")
    evaluation_state: str


class LogAppended(ReadModel):
    log_bytes: int


class LmEvalResults(BaseModel):
    """The parts of lm-eval's results JSON (0.4.x) that make it one; the rest is kept as sent."""

    model_config = ConfigDict(extra="allow")

    results: dict[str, JsonField] = Field(min_length=1)
    configs: dict[str, JsonField] = Field(default_factory=dict)
    versions: JsonField = Field(default_factory=dict)
    groups: dict[str, JsonField] = Field(default_factory=dict)
    n_shot: JsonField = Field(default_factory=dict, alias="n-shot")
    lm_eval_version: str | None = Field(default=None, max_length=32)


class ResultUpload(WriteModel):
    results: JsonField = Field(description="lm-eval's results JSON, as `simple_evaluate` returns it.")
    samples: dict[str, list[JsonField]] | None = Field(default=None, description="Logged samples per task.")


class ResultStored(ReadModel):
    result_id: uuid.UUID
    content_sha256: str
    job_state: str
    evaluation_state: str
