"""Per-task scores and the suite's average, as the suite declares them (Open LLM Leaderboard v2 rules).

normalized = max(0, (raw - lower) / (1 - lower)) x 100; a task with subtask bounds (BBH, MuSR) normalizes each
subtask and averages them; a task listing several metrics (IFEval) takes their mean; the average is the mean
of the tasks. Standard errors propagate as for independent means (sqrt of the summed variances over n) and
scale with the normalization; where a part has none, the aggregate has none.
"""

import math
from collections.abc import Iterable
from typing import Any

from app.suites.schemas import SuiteDefinition, SuiteTask

Key = tuple[str, str, str]  # task, metric, filter


def _normalize(raw: float, lower: float) -> float:
    return max(0.0, (raw - lower) / (1.0 - lower)) * 100.0


def _mean_stderr(errors: list[float | None]) -> float | None:
    if not errors or any(error is None for error in errors):
        return None
    return math.sqrt(sum(error * error for error in errors if error is not None)) / len(errors)


def _task_summary(task: SuiteTask, index: dict[Key, tuple[float, float | None]]) -> dict[str, Any] | None:
    if task.subtask_lower_bounds:
        parts = []
        for subtask, lower in task.subtask_lower_bounds.items():
            found = index.get((subtask, task.metrics[0], task.filter))
            if found is None:
                return None
            raw, stderr = found
            parts.append((raw, stderr, _normalize(raw, lower), None if stderr is None else stderr * 100 / (1 - lower)))
        own = index.get((task.name, task.metrics[0], task.filter))  # the group's own aggregate, when lm-eval made one
        raw = own[0] if own else sum(part[0] for part in parts) / len(parts)
        raw_stderr = own[1] if own else _mean_stderr([part[1] for part in parts])
        return {
            "raw": raw,
            "raw_stderr": raw_stderr,
            "normalized": sum(part[2] for part in parts) / len(parts),
            "stderr": _mean_stderr([part[3] for part in parts]),
            "subtasks": len(parts),
        }
    values = [index.get((task.name, metric, task.filter)) for metric in task.metrics]
    if any(value is None for value in values):
        return None
    raws = [value[0] for value in values if value is not None]
    raw = sum(raws) / len(raws)
    raw_stderr = _mean_stderr([value[1] for value in values if value is not None])
    lower = task.lower_bound or 0.0
    return {
        "raw": raw,
        "raw_stderr": raw_stderr,
        "normalized": _normalize(raw, lower),
        "stderr": None if raw_stderr is None else raw_stderr * 100 / (1 - lower),
    }


def summarize(suite: SuiteDefinition, scores: Iterable[tuple[str, str, str, float, float | None]]) -> dict[str, Any]:
    """{"tasks": {name: {raw, raw_stderr, normalized, stderr}}, "average", "average_stderr", "complete"}."""
    index = {(task, metric, filter_): (value, stderr) for task, metric, filter_, value, stderr in scores}
    tasks = {task.name: _task_summary(task, index) for task in suite.tasks}
    present = [summary for summary in tasks.values() if summary is not None]
    complete = len(present) == len(tasks)
    return {
        "tasks": {name: summary for name, summary in tasks.items() if summary is not None},
        "average": sum(s["normalized"] for s in present) / len(present) if complete else None,
        "average_stderr": _mean_stderr([s["stderr"] for s in present]) if complete else None,
        "complete": complete,
    }
