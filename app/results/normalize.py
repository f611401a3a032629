"""Per-task scores and the suite's average, as the Open LLM Leaderboard v2 publishes them.

Raw (0-1), per task, by the suite's `raw` rule: a leaf task's metric (several metrics, as IFEval's prompt- and
instruction-level strict accuracy, are averaged); a `group` task's lm-eval group value, which is weighted by
sample counts (GPQA, MATH, MMLU); a `mean` task's unweighted mean of its subtasks (BBH, MuSR).
Normalized (0-100) = max(0, (raw - lower) / (1 - lower)) x 100, per subtask where the suite gives subtask bounds
(then averaged); the average is the mean of the tasks' normalized scores.

Standard errors: lm-eval's where it gives one. A proportion metric lm-eval gives none for (IFEval's
instruction-level accuracy) gets the binomial sqrt(p(1-p)/(n-1)) over the task's sample count n (from
`n-samples`, or implied by a sibling metric's binomial stderr); for instruction-level accuracy n is the prompt
count, at most the instruction count, so the estimate errs large. Several metrics of one task are measured on
the same samples, so their mean's stderr is the mean of theirs (the bound for fully correlated parts). Means of
independent parts (subtasks, the suite's tasks) take sqrt(sum of variances) / n; a weighted group without
lm-eval's own value takes sqrt(sum((n_i se_i)^2)) / sum(n_i). Normalization scales a stderr by 100 / (1 - lower).
Where a part has none, the aggregate has none. Nothing here can produce a non-finite number.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass

from corral.documents import ScoreSummary, TaskSummary
from corral.results.ingest import PROPORTIONS
from corral.suites.schemas import SuiteDefinition, SuiteTask


@dataclass(frozen=True)
class Measured:
    value: float
    stderr: float | None
    samples: int | None


Key = tuple[str, str, str]  # task, metric, filter
Index = dict[Key, Measured]


def _normalize(raw: float, lower: float) -> float:
    return max(0.0, (raw - lower) / (1.0 - lower)) * 100.0


def _root_sum_of_squares(errors: list[float | None]) -> float | None:
    """sqrt(sum of squares) of independent errors; None when any is unknown."""
    if any(error is None for error in errors):
        return None
    return math.sqrt(sum(error * error for error in errors if error is not None))


def _mean_stderr(errors: list[float | None]) -> float | None:
    """Of the mean of independent parts."""
    spread = _root_sum_of_squares(errors) if errors else None
    return None if spread is None else spread / len(errors)


def _scaled(stderr: float | None, lower: float) -> float | None:
    return None if stderr is None else stderr * 100.0 / (1.0 - lower)


def _implied_samples(index: Index, task: str) -> int | None:
    """The sample count a task's binomial standard errors imply (n = p(1-p)/se^2 + 1), from any proportion."""
    for (name, metric, _), measured in index.items():
        if name == task and metric in PROPORTIONS and measured.stderr and 0.0 < measured.value < 1.0:
            return round(measured.value * (1.0 - measured.value) / measured.stderr**2 + 1.0)
    return None


def _with_stderr(index: Index, key: Key) -> Measured | None:
    """The measured value, its missing stderr estimated binomially where it is a proportion and n is known."""
    measured = index.get(key)
    if measured is None or measured.stderr is not None or key[1] not in PROPORTIONS:
        return measured
    n = measured.samples or _implied_samples(index, key[0])
    if n is None or n < 2:
        return measured
    p = measured.value
    return Measured(p, math.sqrt(p * (1.0 - p) / (n - 1)), n)


def _metrics(task: SuiteTask, name: str, index: Index) -> Measured | None:
    """A task's (or subtask's) value over the suite's metrics: their mean, with the correlated-parts stderr."""
    parts = [_with_stderr(index, (name, metric, task.filter)) for metric in task.metrics]
    if any(part is None for part in parts):
        return None
    found = [part for part in parts if part is not None]
    errors = [part.stderr for part in found]
    stderr = None if any(error is None for error in errors) else sum(e for e in errors if e is not None) / len(errors)
    return Measured(sum(part.value for part in found) / len(found), stderr, found[0].samples)


def _weighted(task: SuiteTask, index: Index) -> Measured | None:
    """lm-eval's group value, or the same sample-weighted mean computed from the leaves' sample counts."""
    own = _metrics(task, task.name, index)
    if own is not None:
        return own
    leaves = [_metrics(task, name, index) for name in task.subtasks]
    counted = [(leaf, leaf.samples) for leaf in leaves if leaf is not None and leaf.samples]
    if len(counted) < len(leaves):
        return None  # a leaf is missing, or its sample count is: no weight to give it
    total = sum(samples for _, samples in counted)
    spread = _root_sum_of_squares([None if leaf.stderr is None else samples * leaf.stderr for leaf, samples in counted])
    stderr = None if spread is None else spread / total
    return Measured(sum(leaf.value * samples for leaf, samples in counted) / total, stderr, total)


def _task_summary(task: SuiteTask, index: Index) -> TaskSummary | None:
    rule = task.raw_rule
    if rule == "mean":
        parts = []
        for name in task.subtasks:
            measured = _metrics(task, name, index)
            if measured is None:
                return None
            lower = task.subtask_lower_bounds.get(name, task.lower_bound or 0.0)
            parts.append((measured, _normalize(measured.value, lower), _scaled(measured.stderr, lower)))
        return _finite(
            TaskSummary(
                raw=sum(part[0].value for part in parts) / len(parts),
                raw_stderr=_mean_stderr([part[0].stderr for part in parts]),
                normalized=sum(part[1] for part in parts) / len(parts),
                stderr=_mean_stderr([part[2] for part in parts]),
                subtasks=len(parts),
            )
        )
    measured = _weighted(task, index) if rule == "group" else _metrics(task, task.name, index)
    if measured is None:
        return None
    lower = task.lower_bound or 0.0
    summary = TaskSummary(
        raw=measured.value,
        raw_stderr=measured.stderr,
        normalized=_normalize(measured.value, lower),
        stderr=_scaled(measured.stderr, lower),
    )
    if rule == "group":
        summary["subtasks"] = len(task.subtasks)
    return _finite(summary)


def _finite(summary: TaskSummary) -> TaskSummary | None:
    """Belt and braces: a number that is not finite never leaves this module. A task whose raw or normalized
    value is not finite has no score (it is missing); a standard error that is not finite is unknown."""
    if not (math.isfinite(summary["raw"]) and math.isfinite(summary["normalized"])):
        return None
    for name in ("raw_stderr", "stderr"):
        value = summary[name]
        if value is not None and not math.isfinite(value):
            summary[name] = None
    return summary


def summarize(
    suite: SuiteDefinition, scores: Iterable[tuple[str, str, str, float, float | None, int | None]]
) -> ScoreSummary:
    """Every task's summary, the average and its stderr; `complete` when every task of the suite has its score."""
    index = {
        (task, metric, filter_): Measured(value, stderr, samples)
        for task, metric, filter_, value, stderr, samples in scores
    }
    tasks = {task.name: _task_summary(task, index) for task in suite.tasks}
    present = {name: summary for name, summary in tasks.items() if summary is not None}
    missing = [name for name, summary in tasks.items() if summary is None]
    complete = not missing
    average = sum(s["normalized"] for s in present.values()) / len(present) if complete else None
    average_stderr = _mean_stderr([s["stderr"] for s in present.values()]) if complete else None
    return ScoreSummary(
        tasks=present,
        average=average if average is None or math.isfinite(average) else None,
        average_stderr=average_stderr if average_stderr is None or math.isfinite(average_stderr) else None,
        complete=complete,
        missing=missing,
    )
