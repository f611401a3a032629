import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StringConstraints, model_validator

from corral.fields import AliasName, CommitSha, RepoId, Slug, Tag
from corral.schemas import ConfigField, Integer, JsonField, ProgressField, ReadModel, SummaryField, WriteModel
from corral.wire.enums import AttemptState, EvaluationState, JobState
from corral.wire.generation import Backend, GenerationSettings, backend_refusal

EvaluationPrecision = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"]
HubRef = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\w./-]+$")]
BatchSize = (
    Annotated[Integer, Field(ge=1, le=4096)] | Annotated[str, StringConstraints(pattern=r"^auto(:[1-9][0-9]{0,2})?$")]
)
EvaluationSort = Literal["created_at", "-created_at"]


class EvaluationCreate(WriteModel):
    """What to evaluate and how; everything that changes scores goes into the config hash."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "meta-llama/Llama-3.1-8B-Instruct",
                    "revision": "0e9e39f249a16976918f6564b8830bc894c89659",
                    "suite": "openllm-v2",
                    "precision": "bf16",
                    "apply_chat_template": True,
                    "fewshot_as_multiturn": True,
                }
            ]
        }
    )

    model: RepoId
    revision: CommitSha | None = Field(default=None, description="A recorded revision. Give one of revision/ref/alias.")
    ref: HubRef | None = Field(default=None, description="A Hub branch or tag, resolved to its sha now (Hub sync).")
    alias: AliasName | None = Field(default=None, description="A Corral alias of the model (`champion`).")
    suite: Slug
    suite_version: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{12}$")] | None = Field(
        default=None,
        description="A kept version of the suite (as `GET /v1/suites/{name}` lists them); default the latest.",
    )
    precision: EvaluationPrecision = "bf16"
    backend: Backend = "hf"
    batch_size: BatchSize = Field(default="auto", description="An integer, `auto` or `auto:N`; not in the hash.")
    apply_chat_template: StrictBool = False
    fewshot_as_multiturn: StrictBool = Field(default=False, description="Needs apply_chat_template.")
    num_fewshot: Annotated[Integer, Field(ge=0, le=64)] | None = Field(
        default=None, description="Overrides every task's few-shot count (the suite's own when absent)."
    )
    limit: Annotated[Integer, Field(ge=1, le=10**7)] | Annotated[StrictFloat, Field(gt=0, lt=1)] | None = Field(
        default=None, description="Samples per task (or a fraction); for tests, never for published scores."
    )
    seed: Annotated[Integer, Field(ge=0, le=2**31 - 1)] = 1234
    gen_kwargs: GenerationSettings | None = Field(
        default=None,
        description="Generation settings for the suite's generative tasks, from a fixed allow-list: data, never "
        "code (a key that names or loads code is refused by name).",
    )
    harness_version: Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z.+-]{1,32}$")] | None = Field(
        default=None, description="lm-eval version to run with; default the server's. Runners must match."
    )
    priority: Annotated[Integer, Field(ge=0, le=100)] = Field(default=50, description="Higher runs first.")
    labels: list[Tag] = Field(default_factory=list, max_length=20, description="Labels the runner must have.")
    force: StrictBool = Field(default=False, description="Run again even if an identical evaluation exists.")
    queue_without_runner: StrictBool = Field(
        default=False, description="Queue even when no registered runner could hold it (instead of 409)."
    )

    @model_validator(mode="after")
    def _one_revision_and_coherent_settings(self) -> "EvaluationCreate":
        given = [name for name in ("revision", "ref", "alias") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of revision, ref or alias")
        if self.fewshot_as_multiturn and not self.apply_chat_template:
            raise ValueError("fewshot_as_multiturn needs apply_chat_template")
        if self.backend == "hf" and self.precision == "fp8":
            raise ValueError("the hf backend has no fp8 weights; use vllm or another precision")
        if self.gen_kwargs is not None and (refused := backend_refusal(self.gen_kwargs, self.backend)):
            raise ValueError(refused)
        if self.backend == "vllm" and self.precision == "int8":
            # vLLM quantizes unquantized weights in flight to fp8 or to 4 bits (bitsandbytes), never to 8 bits.
            raise ValueError("the vllm backend cannot quantize to int8; use hf for int8, or fp8 or int4 on vllm")
        return self


class EvaluationRequirements(ReadModel):
    memory_bytes: int = Field(description="Accelerator memory over all devices: weights + KV cache + 20 %.")
    device_bytes: int = Field(description="The most any one device must hold (largest layer or embedding).")
    context_tokens: int
    backend: str
    harness_version: str
    labels: list[str]
    notes: list[str]
    capable_runners: list[str] = Field(description="Registered runners that could hold it (any state).")
    nodes: int | None = Field(
        description="Nodes it spans on the capable runner that needs the fewest (more than 1: vLLM pipeline "
        "parallel over Ray); null when no registered runner holds it."
    )


class AttemptRead(ReadModel):
    id: uuid.UUID
    number: int
    runner: str
    state: AttemptState
    claimed_at: datetime
    lease_expires_at: datetime
    last_heartbeat_at: datetime | None
    finished_at: datetime | None
    progress: ProgressField
    external_ref: str | None = Field(description="Where a cluster runs it: `slurm:1234`, `k8s:namespace/name`.")
    log_bytes: int
    failure_category: str | None
    failure_message: str | None


class JobRead(ReadModel):
    id: uuid.UUID
    shard_index: int
    tasks: list[str]
    state: JobState
    required_memory_bytes: int
    attempt_count: int
    cancel_requested: bool
    available_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: list[AttemptRead]
    log_tail: str | None = Field(description="The end of the latest attempt's log.")
    waiting_for: str | None = Field(description="Why a queued job is not running yet.")


SAMPLE = "True when the run read only a `limit` of each task: its numbers are a sample, never ranked, never a baseline."


class EvaluationRead(ReadModel):
    id: uuid.UUID
    model: str
    revision: str
    suite: str
    suite_version: str
    config_hash: str = Field(description="SHA-256 over everything that changes scores; identical requests share it.")
    config: ConfigField
    sample: bool = Field(description=SAMPLE)
    batch_size: str
    priority: int
    state: EvaluationState
    requirements: EvaluationRequirements
    failure_category: str | None
    failure_message: str | None
    requested_by: str | None
    source: str = Field(description="`queue` (run by a runner) or `import` (results produced elsewhere).")
    average: float | None = Field(description="The suite's average of normalized task scores, once all are in.")
    summary: SummaryField | None = Field(description="Per task: raw and normalized score with stderr.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    jobs: list[JobRead]


class EvaluationSummary(ReadModel):
    id: uuid.UUID
    model: str
    revision: str
    suite: str
    suite_version: str
    config_hash: str
    sample: bool = Field(description=SAMPLE)
    state: EvaluationState
    priority: int
    created_at: datetime
    finished_at: datetime | None


class QueueEntry(ReadModel):
    position: int = Field(description="1 = next in claim order (priority, then age).")
    job_id: uuid.UUID
    evaluation_id: uuid.UUID
    model: str
    suite: str
    shard_index: int
    priority: int
    required_memory_bytes: int
    queued_at: datetime
    available_at: datetime
    waiting_for: str


class QueueView(ReadModel):
    depth: int
    running: int
    entries: list[QueueEntry]


class ResultsImport(WriteModel):
    """lm-eval output produced elsewhere, recorded as a finished evaluation of a recorded revision."""

    model: RepoId
    revision: CommitSha
    suite: Slug
    precision: EvaluationPrecision = "bf16"
    backend: Backend = "hf"
    apply_chat_template: StrictBool = False
    fewshot_as_multiturn: StrictBool = False
    harness_version: Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z.+-]{1,32}$")] | None = Field(
        default=None, description="Default: the document's lm_eval_version."
    )
    results: JsonField = Field(description="lm-eval's results JSON (results_*.json).")
