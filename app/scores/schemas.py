import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field
from typing_extensions import TypedDict  # pydantic reads it on Python 3.11

from corral.schemas import AS_OBJECT, AS_WRITTEN, ConfigField, ReadModel

LeaderboardFormat = Literal["json", "csv", "markdown"]


class TaskScore(ReadModel):
    raw: float = Field(description="The metric as lm-eval reports it (mean of the listed metrics).")
    raw_stderr: float | None
    normalized: float = Field(description="0-100 after subtracting the random baseline (per subtask where set).")
    stderr: float | None = Field(description="Of the normalized score.")


class LeaderboardRow(ReadModel):
    rank: int
    model: str
    revision: str
    family: str | None
    license: str | None
    kind: str
    parameters: int | None
    precision: str
    chat_template: bool
    average: float | None
    average_stderr: float | None
    tasks: dict[str, TaskScore]
    evaluation_id: uuid.UUID
    harness_version: str
    suite_version: str
    evaluated_at: datetime | None
    links: dict[str, str] = Field(description="`evaluation` and `provenance`: where the row's numbers come from.")


class Leaderboard(ReadModel):
    suite: str
    tasks: list[str]
    items: list[LeaderboardRow]
    next_cursor: str | None


class TaskDelta(ReadModel):
    task: str
    base: float | None
    candidate: float | None
    delta: float | None = Field(description="candidate - base, normalized points.")
    stderr: float | None = Field(description="sqrt(base stderr^2 + candidate stderr^2).")
    significant: bool | None = Field(description="|delta| > 1.96 x stderr; null without stderr.")


class SettingDifference(TypedDict):
    base: object
    candidate: object


class Comparison(ReadModel):
    suite: str
    base: uuid.UUID
    candidate: uuid.UUID
    tasks: list[TaskDelta]
    average: TaskDelta
    config_differences: dict[str, Annotated[SettingDifference, AS_WRITTEN, AS_OBJECT]] = Field(
        description="Settings that differ between the two runs: {setting: {base, candidate}}."
    )


class ScoreHistoryEntry(ReadModel):
    evaluation_id: uuid.UUID
    revision: str
    suite: str
    suite_version: str
    precision: str
    chat_template: bool
    sample: bool = Field(description="Read only a `limit` of each task: never ranked.")
    average: float | None
    tasks: dict[str, TaskScore]
    finished_at: datetime | None
    source: str


class Seeds(ReadModel):
    random: int | None
    numpy: int | None
    torch: int | None
    fewshot: int | None


class JobProvenance(ReadModel):
    """What produced one job's results: harness, tasks, seeds, model, software and hardware."""

    shard_index: int
    tasks: list[str]
    source: Literal["runner", "import"]
    runner: str | None = Field(description="The runner that ran the attempt (none for imports).")
    runner_accelerators: list[str] = Field(description="What the runner registered, e.g. `nvidia-h100 x 8 (80 GB)`.")
    attempt_id: uuid.UUID | None
    content_sha256: str = Field(description="Of the stored results document (canonical JSON).")
    results_url: str = Field(description="The lm-eval results document, as uploaded.")
    samples_url: str | None = Field(description="The logged samples, where they were uploaded.")
    lm_eval_version: str | None
    lm_eval_commit: str | None = Field(description="lm-eval's `git_hash` (null for a release from the index).")
    task_versions: dict[str, str]
    task_hashes: dict[str, str]
    n_shot: dict[str, int]
    seeds: Seeds
    model_args: str | None
    model_sha: str | None
    model_revision: str | None
    dtype: str | None
    batch_size: str | None
    limit: int | float | None
    chat_template: str | None
    chat_template_sha: str | None
    system_instruction_sha: str | None
    fewshot_as_multiturn: bool | None
    torch_version: str | None
    transformers_version: str | None
    cuda_version: str | None
    gpu: str | None
    gpu_count: int | None
    driver_version: str | None
    evaluated_at: str | None = Field(description="lm-eval's `date` (a Unix time).")
    evaluation_seconds: str | None


class Provenance(ReadModel):
    """The reproducibility record of an evaluation: its settings and, per job, what made the results."""

    evaluation_id: uuid.UUID
    model: str
    revision: str
    suite: str
    suite_version: str
    state: str
    config_hash: str
    config: ConfigField
    jobs: list[JobProvenance]
