"""The runner protocol's documents: what a runner reports of itself, what a claim hands over, heartbeats,
failures, hand-backs and uploads. The server's routes answer with these and the agent reads them with these
(tests/test_wire.py holds them to the OpenAPI document); the agent never needs anything else of the server's.

A claim is held to the same shapes the server's request schema gave its fields: a runner reading one checks
every field that reaches lm-eval (the model and revision go into lm-eval's `key=value,` model arguments, the task
folder is where `!function` code is loaded from), and `settings.gen_kwargs` against the allow-list
(app/wire/generation.py), so that neither a server bug nor a compromised server can hand a runner anything else.
"""

import uuid
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StringConstraints, field_validator

from corral.wire.base import AS_OBJECT, Integer, JsonObject, Reply, Request
from corral.wire.enums import RunnerState
from corral.wire.generation import Backend, GenerationArguments

LEASE_HEADER = "Corral-Lease-Token"
# The label an admin gives runners that may run a trusted revision's own code; such evaluations need it.
TRUSTED_CODE_LABEL = "trusted-code"

_SEGMENT = r"[A-Za-z0-9_]+(?:[.-][A-Za-z0-9_]+)*"
REPO_ID_PATTERN = rf"^{_SEGMENT}/{_SEGMENT}$"  # the Hub's rule (no ',' or '=': lm-eval splits model_args on them)
COMMIT_SHA_PATTERN = r"^[0-9a-f]{40}$"
TASK_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
BATCH_SIZE_PATTERN = r"^([1-9][0-9]{0,3}|auto(:[1-9][0-9]{0,2})?)$"
HARNESS_VERSION_PATTERN = r"^[0-9A-Za-z.+-]{1,32}$"

Precision = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"]
ReportedCategory = Literal["infrastructure", "out_of_memory", "model_error", "harness_error"]
TaskName = Annotated[str, Field(pattern=TASK_NAME_PATTERN)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
FewShot = Annotated[StrictInt, Field(ge=0, le=64)]
HarnessVersion = Annotated[str, StringConstraints(pattern=HARNESS_VERSION_PATTERN)]
Tag = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._:+-]{0,63}$")]


# -- what a runner sends ------------------------------------------------------------------------------------------


class Accelerator(Request):
    """One shape of device a runner has (or, in a claim, has free): what kind, how much memory, how many."""

    kind: str = Field(
        min_length=1,
        max_length=64,
        examples=["nvidia-h100-80gb"],
        description="Accelerator catalog slug or the device's own name.",
    )
    memory_bytes: Integer = Field(ge=1, le=10**13, description="Per device.")
    count: Integer = Field(default=1, ge=1, le=1024, description="Per node (per machine).")
    nodes: Integer = Field(
        default=1,
        ge=1,
        le=100_000,
        description="Nodes of this shape (a cluster runner: Slurm nodes, Kubernetes nodes).",
    )


class RunnerReport(Request):
    """What a runner reports of itself when it checks in: hardware and software, not its labels or limits."""

    accelerators: list[Accelerator] = Field(default_factory=list, max_length=64)
    backends: list[Backend] = Field(default_factory=lambda: ["hf"], min_length=1)  # type: ignore[arg-type]
    lm_eval_version: str | None = Field(default=None, max_length=32, pattern=r"^[0-9A-Za-z.+-]+$")


class Capabilities(Request):
    """What the machine offers; the runner reports these itself on registration and on verify."""

    labels: list[Tag] = Field(default_factory=list, max_length=50)
    accelerators: list[Accelerator] = Field(default_factory=list, max_length=64)
    backends: list[Backend] = Field(default_factory=lambda: ["hf"], min_length=1)  # type: ignore[arg-type]
    lm_eval_version: str | None = Field(default=None, max_length=32, pattern=r"^[0-9A-Za-z.+-]+$")
    max_concurrent_jobs: Integer = Field(default=1, ge=1, le=1024)
    max_nodes_per_job: Integer = Field(
        default=1, ge=1, le=1024, description="Nodes one job may span (vLLM pipeline parallel over Ray): a cluster's."
    )


class RunnerCreate(Capabilities):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "gpu-node-01",
                    "labels": ["datacenter-a"],
                    "accelerators": [{"kind": "nvidia-h100-80gb", "memory_bytes": 85899345920, "count": 8}],
                    "backends": ["hf", "vllm"],
                    "lm_eval_version": "0.4.13",
                    "max_concurrent_jobs": 2,
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RunnerRegister(RunnerCreate):
    registration_token: str = Field(min_length=1, max_length=200, description="The single-use `crlreg_...` token.")


class ClaimRequest(Request):
    """Optional: what a cluster runner has free now (from its scheduler); the job is matched against it, by the
    same rule as against what the runner registered."""

    free: list[Accelerator] | None = Field(default=None, max_length=64, description="Devices free now, by shape.")


class Progress(Request):
    overall: Fraction | None = None
    tasks: dict[TaskName, Fraction] = Field(default_factory=dict, max_length=500)
    stage: Annotated[str, StringConstraints(max_length=200)] | None = Field(default=None, examples=["loading weights"])


class Heartbeat(Request):
    progress: Progress = Field(default_factory=Progress)
    external_ref: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="Where a cluster runs the attempt (`slurm:1234`, `k8s:namespace/corral-<attempt>`).",
        examples=["slurm:1234"],
    )


class Failure(Request):
    category: ReportedCategory
    message: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


class Release(Request):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = Field(
        examples=["The runner was asked to stop (SIGTERM) and handed the job back."]
    )


class ResultUpload(Request):
    results: Annotated[JsonObject, AS_OBJECT] = Field(
        description="lm-eval's results JSON, as `simple_evaluate` returns it."
    )
    samples: dict[str, list[Annotated[JsonObject, AS_OBJECT]]] | None = Field(
        default=None, description="Logged samples per task."
    )


# -- what the server answers --------------------------------------------------------------------------------------


class VerifiedRunner(Reply):
    """What a runner reads of its own record when it checks in (the server answers with all of `RunnerRead`)."""

    id: uuid.UUID
    name: str
    state: RunnerState
    max_concurrent_jobs: int


class RunnerToken(Reply):
    """What a runner reads of its registration (the server answers with all of `RunnerWithToken`)."""

    token: str = Field(description="The runner's own `crlrun_...` token, shown this once.")


class JobSettings(Reply):
    precision: Precision
    backend: Backend
    batch_size: Annotated[str, StringConstraints(pattern=BATCH_SIZE_PATTERN)]
    apply_chat_template: StrictBool
    fewshot_as_multiturn: StrictBool
    num_fewshot: FewShot | None
    limit: Annotated[StrictInt, Field(ge=1, le=10**7)] | Annotated[StrictFloat, Field(gt=0, lt=1)] | None
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
    gen_kwargs: Annotated[GenerationArguments, AS_OBJECT] | None = Field(
        description="As the evaluation stored it: within the allow-list of `EvaluationCreate.gen_kwargs`, which the "
        "runner checks again."
    )
    harness_version: HarnessVersion
    trust_remote_code: StrictBool = Field(
        default=False, description="An admin trusted this revision's own code (and still does)."
    )
    needs_hub_token: StrictBool = Field(
        default=True, description="The weights may need the runner's Hub token (gated, private, unknown)."
    )


class ClaimedTask(Reply):
    name: TaskName
    num_fewshot: FewShot


class JobPlacement(Reply):
    """How the job spreads over the claiming runner's devices (app/hardware/fit.py decides)."""

    tensor_parallel: Annotated[StrictInt, Field(ge=1, le=1024)] = Field(
        default=1,
        description="Devices of one machine the model is spread over (on hf, the GPUs accelerate places layers on).",
    )
    pipeline_parallel: Annotated[StrictInt, Field(ge=1, le=1024)] = Field(
        default=1, description="Nodes the model is spread over (vLLM on Ray); 1 on one machine."
    )


class ClaimedJob(Reply):
    """Everything a runner needs to run one job, and the lease it must keep alive."""

    attempt_id: uuid.UUID
    attempt_number: int
    lease_token: str = Field(description=f"Send it back in `{LEASE_HEADER}` on every write for this attempt.")
    lease_expires_at: datetime
    heartbeat_seconds: int
    job_id: uuid.UUID
    evaluation_id: uuid.UUID
    shard_index: int
    model: Annotated[str, StringConstraints(max_length=193, pattern=REPO_ID_PATTERN)]
    revision: Annotated[str, StringConstraints(pattern=COMMIT_SHA_PATTERN)]
    suite: str
    suite_version: str
    include_path: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        description="Custom task definitions, relative to the evals/ directory (a folder under tasks/)."
    )
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


class ClaimEnvelope(Reply):
    """The part of a claim the runner needs to answer it, even when it refuses the rest."""

    attempt_id: uuid.UUID
    lease_token: str
    job_id: uuid.UUID


class HeartbeatReply(Reply):
    lease_expires_at: datetime | None
    cancel_requested: bool = Field(description="Stop the job: the evaluation was canceled. The attempt is over.")
    heartbeat_seconds: int


class FailureReply(Reply):
    job_state: str
    retried: bool = Field(description="The job went back to the queue.")
    available_at: datetime | None = Field(description="When a retried job can be claimed again.")
    evaluation_state: str


class LogAppended(Reply):
    log_bytes: int


class ResultStored(Reply):
    result_id: uuid.UUID
    content_sha256: str
    job_state: str
    evaluation_state: str
