"""The shapes of the JSON documents kept in table columns, typed once here and read by key everywhere else.

JSON that Corral does not shape itself (lm-eval's results, the Hub's config, a caller's free-form snapshot) is a
`JsonObject`: JSON values all the way down, so a reader has to look at what it got before using it.
"""

from typing import (
    NotRequired,  # pydantic reads these on Python 3.11
    TypeAlias,
)

from pydantic import JsonValue
from typing_extensions import TypedDict

JsonObject: TypeAlias = dict[str, JsonValue]
GenerationArguments: TypeAlias = dict[str, bool | int | float | str]


class EvaluationConfig(TypedDict):
    """The settings an evaluation's scores depend on; stored with the evaluation and hashed into its identity
    (app/evaluations/identity.py)."""

    model: str
    revision: str
    suite: str
    suite_version: str
    harness_version: str
    backend: str
    precision: str
    apply_chat_template: bool
    fewshot_as_multiturn: bool
    num_fewshot: int | None
    limit: int | float | None
    seed: int | None
    gen_kwargs: GenerationArguments | None


class StoredRequirements(TypedDict):
    """What an evaluation was sized at when it was requested (app/hardware/fit.py)."""

    memory_bytes: int
    device_bytes: int
    context_tokens: int
    notes: list[str]


class TaskSummary(TypedDict):
    """One task's score as the suite publishes it: raw (0-1) and normalized (0-100), each with its stderr."""

    raw: float
    raw_stderr: float | None
    normalized: float
    stderr: float | None
    subtasks: NotRequired[int]


class ScoreSummary(TypedDict):
    """An evaluation's per-task scores and the suite's average, once every job's result is in."""

    tasks: dict[str, TaskSummary]
    average: float | None
    average_stderr: float | None
    complete: bool
    missing: list[str]


class AttemptProgress(TypedDict, total=False):
    """What the runner last reported of a running attempt (heartbeats carry it)."""

    overall: float
    tasks: dict[str, float]
    stage: str


class AcceleratorRecord(TypedDict):
    """One kind of accelerator a runner has: memory per device, and how many."""

    kind: str
    memory_bytes: int
    count: NotRequired[int]  # per node
    nodes: NotRequired[int]


class HubDisagreement(TypedDict):
    """A fact on which the Hub and the registry differ; shown, never merged."""

    field: str
    registry: int | str
    hub: int | str
