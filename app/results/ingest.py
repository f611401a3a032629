"""Reading lm-eval results JSON (0.4.x) defensively into one score per (task, metric, filter).

Keys are `metric,filter` with `metric_stderr,filter` beside them ("N/A" when lm-eval could not compute one);
groups that aggregate appear in `results` (and, in some versions, in `groups`). A document is accepted by the
suite's task tree: the names it scores, the parent groups and extra tasks it keeps, and whatever the document's
own `group_subtasks` places below those. A document that is not lm-eval output, holds a task outside that tree,
or a number that is not finite or out of bounds, is refused with the path of the first offending value.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.documents import JsonObject
from corral.suites.schemas import SuiteDefinition

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
# Any number larger than this is refused: squared and summed (standard errors) it stays far from overflow.
MAX_MAGNITUDE = 1e12
# The standard error of a proportion is at most 0.5 x sqrt(n / (n - 1)) <= 0.71; more is a broken document.
MAX_PROPORTION_STDERR = 1.0
NO_STDERR = "N/A"  # lm-eval's own word for a standard error it could not compute


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


@dataclass(frozen=True)
class TaskTree:
    """What a results document may hold: names that are scored, and names kept in the raw document only."""

    scored: frozenset[str]
    kept: frozenset[str] = frozenset()

    def accepting(self, document: Mapping[str, Any]) -> "TaskTree":
        """This tree grown by the document's own `group_subtasks`: what lm-eval ran below a known name is kept."""
        children = document.get("group_subtasks")
        if not isinstance(children, dict):
            return self
        known = set(self.scored | self.kept)
        pending = [name for name in children if name in known]
        while pending:
            members = children.get(pending.pop())
            for member in members if isinstance(members, list) else []:
                if isinstance(member, str) and member not in known:
                    known.add(member)
                    pending.append(member)
        return TaskTree(self.scored, frozenset(known - self.scored))

    def __contains__(self, name: object) -> bool:
        return name in self.scored or name in self.kept


def task_tree(suite: SuiteDefinition, tasks: Iterable[str] | None = None) -> TaskTree:
    """The tree a suite's results (or one job's: `tasks`) are accepted by."""
    return TaskTree(suite.scored_names(tasks), suite.kept_names())


def json_object(value: object) -> JsonObject:
    """The value if it is a JSON object, else an empty one: documents are read defensively."""
    return value if isinstance(value, dict) else {}


def finite_document(document: Any, path: str = "results") -> Any:
    """The document with lm-eval's non-finite standard errors written as "N/A" (lm-eval writes NaN when it
    cannot compute one); any other value that is not a finite number within bounds is refused (422)."""

    def walk(value: Any, where: str, key: str) -> Any:
        if isinstance(value, dict):
            return {name: walk(item, f"{where}.{name}", str(name)) for name, item in value.items()}
        if isinstance(value, list):
            return [walk(item, f"{where}[{index}]", key) for index, item in enumerate(value)]
        if isinstance(value, float) and (not math.isfinite(value) or abs(value) > MAX_MAGNITUDE):
            if math.isnan(value) and "_stderr," in key:
                return NO_STDERR
            raise ResultsError(where, f"{value} is not a finite number within ±{MAX_MAGNITUDE:g}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63 - 1:
            raise ResultsError(where, "an integer beyond 64 bits")
        return value

    return walk(document, path, "")


def _stderr(entry: JsonObject, key: str, path: str, metric: str) -> float | None:
    raw = entry.get(key)
    if raw is None or raw == NO_STDERR or isinstance(raw, str):
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ResultsError(f"{path}.{key}", 'a standard error must be a number or "N/A"')
    stderr = float(raw)
    if math.isnan(stderr):
        return None
    if not math.isfinite(stderr) or stderr > MAX_MAGNITUDE:
        raise ResultsError(f"{path}.{key}", f"{raw} is not a finite standard error within {MAX_MAGNITUDE:g}")
    if stderr < 0:
        raise ResultsError(f"{path}.{key}", "a standard error cannot be negative")
    if metric in PROPORTIONS and stderr > MAX_PROPORTION_STDERR:
        raise ResultsError(f"{path}.{key}", f"{metric} is a proportion; a standard error of {raw} is impossible")
    return stderr


def _value(raw: Any, path: str, metric: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ResultsError(path, "a metric value must be a finite number")
    value = float(raw)
    if abs(value) > MAX_MAGNITUDE:
        raise ResultsError(path, f"{raw} is beyond ±{MAX_MAGNITUDE:g}")
    if metric in PROPORTIONS and not 0.0 <= value <= 1.0:
        raise ResultsError(path, f"{metric} is a proportion; {value} is outside [0, 1]")
    return value


def _entry_scores(
    task: str, entry: JsonObject, path: str, document: JsonObject, is_group: bool
) -> Iterable[ParsedScore]:
    counts = json_object(document.get("n-samples"))
    samples = json_object(counts.get(task)).get("effective")
    direction_of = json_object(json_object(document.get("higher_is_better")).get(task))
    for key, raw in entry.items():
        if "," not in key:
            continue  # alias, samples, name
        metric, filter_name = key.split(",", 1)
        if metric.endswith("_stderr"):
            continue
        value = _value(raw, f"{path}.{key}", metric)
        stderr = _stderr(entry, f"{metric}_stderr,{filter_name}", path, metric)
        direction = direction_of.get(metric)
        yield ParsedScore(
            task=task,
            metric=metric,
            filter=filter_name,
            value=value,
            stderr=stderr,
            samples=samples if isinstance(samples, int) and not isinstance(samples, bool) else None,
            higher_is_better=direction if isinstance(direction, bool) else None,
            is_group=is_group,
        )


def parse_scores(document: Any, tree: TaskTree) -> list[ParsedScore]:
    """The scores of the tree's scored names; kept names are checked like the rest but not returned."""
    if not isinstance(document, dict):
        raise ResultsError("results", "not lm-eval results: expected a JSON object")
    results = document.get("results")
    if not isinstance(results, dict) or not results:
        raise ResultsError("results.results", "not lm-eval results: no `results` object with tasks")
    groups = document.get("groups") or {}
    if not isinstance(groups, dict):
        raise ResultsError("results.groups", "`groups` must be an object")
    tree = tree.accepting(document)
    group_names = set(groups) | set(json_object(document.get("group_subtasks")))
    seen: dict[tuple[str, str, str], ParsedScore] = {}
    for section in ("results", "groups"):
        for task, entry in (document.get(section) or {}).items():
            path = f"results.{section}.{task}"
            if not isinstance(entry, dict):
                raise ResultsError(path, "each task's results must be an object")
            if task not in tree:
                raise ResultsError(path, f"task {task!r} is not part of this suite's task tree (or this job's)")
            scores = list(_entry_scores(task, entry, path, document, task in group_names))
            if task in tree.scored:
                for score in scores:
                    seen.setdefault((score.task, score.metric, score.filter), score)
    if not seen:
        raise ResultsError("results.results", "not lm-eval results: no `metric,filter` values of this suite's tasks")
    return list(seen.values())
