"""The suite file format (evals/suites/*.yaml) and the API's views of it. Plain pydantic: the runner may use it."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas import ReadModel

TaskName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
Bound = Annotated[float, Field(ge=0.0, lt=1.0)]


class SuiteTask(BaseModel):
    """One lm-eval task (or group) and how its score is read and normalized."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: TaskName = Field(description="lm-eval task or group name.")
    num_fewshot: int = Field(ge=0, le=64)
    metrics: list[Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]] = Field(
        min_length=1, description="Metric keys read from the results; several are averaged (IFEval)."
    )
    filter: str = Field(default="none", pattern=r"^[a-z0-9_-]{1,64}$", description="lm-eval filter name.")
    dataset: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
        description="The benchmark's Hub dataset id, for publishing scores to the Hub.",
    )
    lower_bound: Bound | None = Field(default=None, description="Random baseline: rescaled to 0.")
    subtask_lower_bounds: dict[TaskName, Bound] = Field(
        default_factory=dict, description="Per subtask: each normalized on its own, then averaged."
    )

    @model_validator(mode="after")
    def _one_normalization(self) -> "SuiteTask":
        if (self.lower_bound is None) == (not self.subtask_lower_bounds):
            raise ValueError(f"task {self.name}: give exactly one of lower_bound or subtask_lower_bounds")
        return self


class SuiteDefinition(BaseModel):
    """A declarative suite: its tasks, their settings and bounds, and how it splits into shards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(max_length=2000)
    include_path: str | None = Field(default=None, description="Custom task definitions, relative to evals/.")
    context_tokens: int = Field(ge=1, le=10_000_000, description="Context its tasks need: sizes the KV cache.")
    tasks: list[SuiteTask] = Field(min_length=1)
    shards: list[list[TaskName]] = Field(min_length=1, description="Task groups that can run on separate runners.")
    notes: str | None = None

    @model_validator(mode="after")
    def _shards_cover_tasks_once(self) -> "SuiteDefinition":
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"suite {self.name}: a task is listed twice")
        sharded = [name for shard in self.shards for name in shard]
        if sorted(sharded) != sorted(names):
            raise ValueError(f"suite {self.name}: shards must list every task exactly once")
        return self


class SuiteSummary(ReadModel):
    name: str
    version: str = Field(description="Content hash of the definition: a changed file is a new version.")
    title: str
    description: str
    tasks: list[str]
    shards: int
    context_tokens: int
    created_at: datetime


class SuiteVersionRead(ReadModel):
    name: str
    version: str
    latest: bool
    definition: dict[str, Any]
    created_at: datetime


class SuiteRead(SuiteVersionRead):
    versions: list[str] = Field(description="Every version kept, newest first.")


SuiteSort = Literal["name", "-name"]
