"""The suite file format (evals/suites/*.yaml) and the API's views of it. Plain pydantic: the runner may use it."""

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corral.schemas import JsonField, ReadModel
from corral.wire.protocol import TaskName

Bound = Annotated[float, Field(ge=0.0, lt=1.0)]


class HubLabel(BaseModel):
    """How a task's score is named when published to the Hub (`.eval_results/*.yaml` and `model-index`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        description="The benchmark dataset's own task id, where the dataset declares one.",
    )
    metric: str = Field(min_length=1, max_length=200, description="What the published value measures.")
    name: str = Field(min_length=1, max_length=200, description="The benchmark's display name, e.g. `IFEval (0-shot)`.")


class SuiteTask(BaseModel):
    """One lm-eval task (or group) as lm-eval names it, the tree below it, and how its score is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: TaskName = Field(description="lm-eval task or group name.")
    title: str | None = Field(default=None, max_length=100, description="The benchmark's display name.")
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
    hub: HubLabel | None = Field(default=None, description="Labels for publishing to the Hub.")
    subtasks: list[TaskName] = Field(
        default_factory=list, description="For a group: every leaf task below it, as lm-eval names them."
    )
    subgroups: list[TaskName] = Field(
        default_factory=list, description="For a group: the groups between it and its leaves (kept, not scored)."
    )
    raw: Literal["group", "mean"] | None = Field(
        default=None,
        description="For a group: `group` = lm-eval's sample-weighted group value; `mean` = the unweighted mean "
        "of its subtasks. Default: `mean` with subtask bounds, else `group`.",
    )
    lower_bound: Bound | None = Field(default=None, description="Random baseline: rescaled to 0.")
    subtask_lower_bounds: dict[TaskName, Bound] = Field(
        default_factory=dict, description="Per subtask: each normalized on its own, then averaged."
    )

    @model_validator(mode="before")
    @classmethod
    def _subtasks_from_bounds(cls, data: Any) -> Any:
        # Subtasks normalized one by one name themselves in their bounds; the file need not list them twice.
        if isinstance(data, dict) and data.get("subtask_lower_bounds") and not data.get("subtasks"):
            return {**data, "subtasks": list(data["subtask_lower_bounds"])}
        return data

    @model_validator(mode="after")
    def _one_normalization(self) -> "SuiteTask":
        if (self.lower_bound is None) == (not self.subtask_lower_bounds):
            raise ValueError(f"task {self.name}: give exactly one of lower_bound or subtask_lower_bounds")
        if self.subtask_lower_bounds and sorted(self.subtask_lower_bounds) != sorted(self.subtasks):
            raise ValueError(f"task {self.name}: subtask_lower_bounds must name exactly its subtasks")
        if (self.raw is not None or self.subgroups) and not self.subtasks:
            raise ValueError(f"task {self.name}: raw and subgroups are for groups, which list their subtasks")
        if self.raw == "group" and self.subtask_lower_bounds:
            raise ValueError(f"task {self.name}: subtasks normalized one by one are averaged (raw: mean)")
        if len({self.name, *self.subtasks, *self.subgroups}) != 1 + len(self.subtasks) + len(self.subgroups):
            raise ValueError(f"task {self.name}: a name appears twice in its tree")
        return self

    @property
    def raw_rule(self) -> Literal["leaf", "group", "mean"]:
        """How the raw score is read: a leaf's own metrics, lm-eval's group value, or the subtasks' mean."""
        if not self.subtasks:
            return "leaf"
        return self.raw or ("mean" if self.subtask_lower_bounds else "group")

    @property
    def tree(self) -> frozenset[str]:
        """The task and every name lm-eval reports below it."""
        return frozenset({self.name, *self.subtasks, *self.subgroups})

    @property
    def display_name(self) -> str:
        return self.title or self.name


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
    groups: list[TaskName] = Field(
        default_factory=list,
        description="Parent groups lm-eval reports around the suite's tasks (e.g. `leaderboard`): kept, not scored.",
    )
    extra_tasks: list[TaskName] = Field(
        default_factory=list,
        description="Other tasks those parent groups ran in some lm-eval versions: kept in the raw document, "
        "not scored.",
    )
    notes: str | None = None

    @model_validator(mode="after")
    def _shards_cover_tasks_once(self) -> "SuiteDefinition":
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"suite {self.name}: a task is listed twice")
        sharded = [name for shard in self.shards for name in shard]
        if sorted(sharded) != sorted(names):
            raise ValueError(f"suite {self.name}: shards must list every task exactly once")
        trees = [name for task in self.tasks for name in task.tree] + [*self.groups, *self.extra_tasks]
        if len(set(trees)) != len(trees):
            raise ValueError(f"suite {self.name}: a task name appears in two places of its tree")
        return self

    def task(self, name: str) -> SuiteTask:
        return next(task for task in self.tasks if task.name == name)

    def scored_names(self, tasks: Iterable[str] | None = None) -> frozenset[str]:
        """Every name lm-eval reports for these tasks (default: all of them) and their subtrees."""
        wanted = set(tasks) if tasks is not None else {task.name for task in self.tasks}
        return frozenset(name for task in self.tasks if task.name in wanted for name in task.tree)

    def kept_names(self) -> frozenset[str]:
        """Names a results document may carry beside the scored ones: parent groups and their extra tasks."""
        return frozenset({*self.groups, *self.extra_tasks})


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
    definition: JsonField
    created_at: datetime


class SuiteRead(SuiteVersionRead):
    versions: list[str] = Field(description="Every version kept, newest first.")


SuiteSort = Literal["name", "-name"]
