"""The agent's own copy of the runner protocol's documents (it never imports the server), and the job spec it
hands to the lm-eval worker. Unknown fields are ignored: a newer server may send more than this agent reads."""

from pydantic import BaseModel, ConfigDict, Field


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ClaimedTask(Wire):
    name: str
    num_fewshot: int


class JobSettings(Wire):
    precision: str
    backend: str
    batch_size: str
    apply_chat_template: bool
    fewshot_as_multiturn: bool
    num_fewshot: int | None
    limit: int | float | None
    seed: int
    gen_kwargs: dict[str, bool | int | float | str] | None
    harness_version: str


class JobPlacement(Wire):
    """How the server's fit rule spreads the job over this runner's devices."""

    tensor_parallel: int = 1
    pipeline_parallel: int = 1


class ClaimedJob(Wire):
    """What a claim hands over: the job, and the lease the agent keeps alive."""

    attempt_id: str
    attempt_number: int
    lease_token: str
    heartbeat_seconds: float
    job_id: str
    evaluation_id: str
    shard_index: int
    model: str
    revision: str
    suite: str
    suite_version: str
    include_path: str | None
    tasks: list[ClaimedTask]
    settings: JobSettings
    required_memory_bytes: int
    placement: JobPlacement = Field(default_factory=JobPlacement)


class JobSpec(Wire):
    """One job as the lm-eval worker runs it (`spec.json`): the claim without its lease token, with where this
    runner keeps the weights and task files."""

    attempt_id: str
    job_id: str
    model: str
    revision: str
    tasks: list[ClaimedTask]
    settings: JobSettings
    placement: JobPlacement = Field(default_factory=JobPlacement)
    include_path: str | None = Field(default=None, description="Absolute: the task files on this machine.")
    local_path: str | None = Field(default=None, description="The weights in a local directory, not the Hub.")
    device: str | None = None

    @classmethod
    def of(cls, job: ClaimedJob, *, include_path: str | None, local_path: str | None, device: str | None) -> "JobSpec":
        return cls(
            attempt_id=job.attempt_id,
            job_id=job.job_id,
            model=job.model,
            revision=job.revision,
            tasks=job.tasks,
            settings=job.settings,
            placement=job.placement,
            include_path=include_path,
            local_path=local_path,
            device=device,
        )


class Outcome(Wire):
    """Why a job ended without results, as the worker saw it (`outcome.json`)."""

    category: str = "harness_error"
    message: str | None = None
