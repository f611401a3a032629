"""Every shipped suite names its task tree exactly as lm-eval's installed task index does, so a suite can never
again name (or miss) a task lm-eval produces. Only the index is read (YAML configs): no task is built, no
dataset is loaded. lm-eval is imported here, by the tests; the server never imports it."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from corral.suites.schemas import SuiteDefinition
from corral.suites.service import SUITES_DIR, read_suite_files

SUITES = read_suite_files()


@dataclass
class Tree:
    """What lm-eval reports below a name: the groups between it and its leaves, and the leaves."""

    kind: str
    groups: set[str] = field(default_factory=set)
    leaves: set[str] = field(default_factory=set)
    children: list[str] = field(default_factory=list)
    aggregates: list[dict[str, Any]] = field(default_factory=list)


def _kind(entry: Any) -> str:
    return str(getattr(entry.kind, "name", entry.kind)).upper()


def _members(index: dict[str, Any], entry: Any) -> Iterator[str]:
    """A group's or tag's direct members as lm-eval builds them: tags expand into their tasks."""
    if _kind(entry) == "TAG":
        yield from sorted(entry.tags)
        return
    for item in (entry.cfg or {}).get("task") or []:
        name = item if isinstance(item, str) else item.get("group") or item.get("task")
        member = index.get(name)
        if member is not None and _kind(member) == "TAG":
            yield from _members(index, member)
        else:
            yield name


def lm_eval_tree(index: dict[str, Any], name: str) -> Tree:
    entry = index[name]
    kind = _kind(entry)
    if kind not in ("GROUP", "TAG"):
        return Tree(kind="task", leaves=set())
    tree = Tree(kind="group", aggregates=list((entry.cfg or {}).get("aggregate_metric_list") or []))
    for member in _members(index, entry):
        tree.children.append(member)
        below = lm_eval_tree(index, member)
        if below.kind == "group":
            tree.groups |= {member} | below.groups
            tree.leaves |= below.leaves
        else:
            tree.leaves.add(member)
    return tree


@pytest.fixture(scope="module")
def task_index() -> dict[str, Any]:
    from lm_eval.tasks import TaskManager

    includes = sorted({str(SUITES_DIR.parent / suite.include_path) for suite in SUITES if suite.include_path})
    return dict(TaskManager(include_path=includes or None).task_index)


def tree_differences(index: dict[str, Any], suite: SuiteDefinition) -> list[str]:
    """Where the suite's tree and lm-eval's differ (empty when they agree)."""
    found = []
    for task in suite.tasks:
        if task.name not in index:
            found.append(f"lm-eval has no task or group {task.name!r}")
            continue
        tree = lm_eval_tree(index, task.name)
        if set(task.subtasks) != tree.leaves:
            found.append(f"{task.name}: leaves {sorted(set(task.subtasks) ^ tree.leaves)} differ")
        if set(task.subgroups) != tree.groups:
            found.append(f"{task.name}: groups {sorted(set(task.subgroups) ^ tree.groups)} differ")
        if task.raw_rule == "group":
            # The raw score is lm-eval's group value: the group must aggregate the suite's metrics, by size.
            aggregated = {item["metric"]: item.get("weight_by_size", True) for item in tree.aggregates}
            if not all(aggregated.get(metric) is True for metric in task.metrics):
                found.append(f"{task.name}: lm-eval does not aggregate {task.metrics} by size")
    for group in suite.groups:
        children = set(lm_eval_tree(index, group).children) if group in index else set()
        if children != {task.name for task in suite.tasks}:
            found.append(f"parent group {group} runs {sorted(children)}, not the suite's tasks")
    return found


@pytest.mark.parametrize("suite", SUITES, ids=[suite.name for suite in SUITES])
def test_each_suite_names_the_task_tree_lm_eval_reports(task_index: dict[str, Any], suite: SuiteDefinition) -> None:
    assert tree_differences(task_index, suite) == []
    # Historical members of a parent group are kept, never scored.
    assert not set(suite.extra_tasks) & suite.scored_names()


def test_a_suite_that_drifts_from_lm_eval_is_caught(task_index: dict[str, Any]) -> None:
    openllm = next(suite for suite in SUITES if suite.name == "openllm-v2")
    math = openllm.task("leaderboard_math_hard")
    dropped = math.model_copy(update={"subtasks": math.subtasks[:-1]})
    renamed = openllm.task("leaderboard_gpqa").model_copy(update={"name": "leaderboard_gpqa_v9"})
    drifted = openllm.model_copy(
        update={
            "tasks": [dropped if t is math else renamed if t.name == "leaderboard_gpqa" else t for t in openllm.tasks]
        }
    )
    problems = tree_differences(task_index, drifted)
    assert any("leaderboard_math_precalculus_hard" in problem for problem in problems)
    assert any("leaderboard_gpqa_v9" in problem for problem in problems)
    assert any("parent group leaderboard" in problem for problem in problems)
