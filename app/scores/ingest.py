"""Reading lm-eval results JSON (0.4.x) defensively into one score per (task, metric, filter).

Keys are `metric,filter` with `metric_stderr,filter` beside them ("N/A" when lm-eval could not compute one);
groups that aggregate appear in `groups` (and, in some versions, in `results` too). A document that is not
lm-eval output, or holds a task the suite does not run, or a score outside its metric's range, is refused
with the path of the first offending value.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Metrics that are proportions: a value outside [0, 1] is a broken document, not a score.
PROPORTIONS = frozenset(
    {
        "acc",
        "acc_norm",
        "exact_match",
        "exact_match_original",
        "prompt_level_strict_acc",
        "inst_level_strict_acc",
        "prompt_level_loose_acc",
        "inst_level_loose_acc",
        "mc1",
        "mc2",
        "f1",
        "em",
        "contains",
    }
)


class ResultsError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class ParsedScore:
    task: str
    metric: str
    filter: str
    value: float
    stderr: float | None
    samples: int | None
    higher_is_better: bool | None
    is_group: bool


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_scores(document: Any, task_allowed: Callable[[str], bool]) -> list[ParsedScore]:
    if not isinstance(document, dict):
        raise ResultsError("results", "not lm-eval results: expected a JSON object")
    results = document.get("results")
    if not isinstance(results, dict) or not results:
        raise ResultsError("results.results", "not lm-eval results: no `results` object with tasks")
    groups = document.get("groups") or {}
    if not isinstance(groups, dict):
        raise ResultsError("results.groups", "`groups` must be an object")
    higher = _object(document.get("higher_is_better"))
    counts = _object(document.get("n-samples"))
    seen: dict[tuple[str, str, str], ParsedScore] = {}
    for section in ("results", "groups"):
        entries = document.get(section) or {}
        for task, entry in entries.items():
            path = f"results.{section}.{task}"
            if not isinstance(entry, dict):
                raise ResultsError(path, "each task's results must be an object")
            if not task_allowed(task):
                raise ResultsError(path, f"task {task!r} is not part of this suite (or job)")
            samples = _object(counts.get(task)).get("effective")
            for key, raw in entry.items():
                if "," not in key:
                    continue  # alias, samples, name
                metric, filter_name = key.split(",", 1)
                if metric.endswith("_stderr"):
                    continue
                value = _number(raw)
                if value is None:
                    raise ResultsError(f"{path}.{key}", "a metric value must be a finite number")
                if metric in PROPORTIONS and not 0.0 <= value <= 1.0:
                    raise ResultsError(f"{path}.{key}", f"{metric} is a proportion; {value} is outside [0, 1]")
                stderr = _number(entry.get(f"{metric}_stderr,{filter_name}"))
                if stderr is not None and stderr < 0:
                    raise ResultsError(f"{path}.{metric}_stderr,{filter_name}", "a standard error cannot be negative")
                direction = _object(higher.get(task)).get(metric)
                score = ParsedScore(
                    task=task,
                    metric=metric,
                    filter=filter_name,
                    value=value,
                    stderr=stderr,
                    samples=samples if isinstance(samples, int) and not isinstance(samples, bool) else None,
                    higher_is_better=direction if isinstance(direction, bool) else None,
                    is_group=section == "groups" or task in groups,
                )
                seen.setdefault((task, metric, filter_name), score)
    if not seen:
        raise ResultsError("results.results", "not lm-eval results: no `metric,filter` values")
    return list(seen.values())


def task_matcher(tasks: list[str]) -> Callable[[str], bool]:
    """A task, or one of its subtasks (lm-eval names them `<task>_<subtask>`)."""
    names = tuple(tasks)
    prefixes = tuple(f"{name}_" for name in names)
    return lambda task: task in names or task.startswith(prefixes)
