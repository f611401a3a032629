"""Real Open LLM Leaderboard v2 runs (tests/data/oll/, copied unchanged from the project's reference data).

Each file holds lm-eval's per-task results as the leaderboard's details cards print them (`results`), and
`published.json` holds the leaderboard's published normalized and raw values. `lm_eval_document` wraps a run
into a results document the way lm-eval 0.4 writes one; the per-task entries are never edited.
"""

import copy
import json
from pathlib import Path
from typing import Any

from corral.suites.schemas import SuiteDefinition

DATA = Path(__file__).resolve().parent.parent / "data" / "oll"
MODELS = ("EleutherAI/pythia-160m", "EleutherAI/pythia-12b")
# The published column of each openllm-v2 task, and the benchmarks whose values must match strictly.
COLUMNS = {
    "leaderboard_ifeval": "ifeval",
    "leaderboard_bbh": "bbh",
    "leaderboard_math_hard": "math_lvl5",
    "leaderboard_gpqa": "gpqa",
    "leaderboard_musr": "musr",
    "leaderboard_mmlu_pro": "mmlu_pro",
}
STRICT = ("leaderboard_ifeval", "leaderboard_bbh", "leaderboard_gpqa", "leaderboard_musr", "leaderboard_mmlu_pro")


def published() -> dict[str, Any]:
    return dict(json.loads((DATA / "published.json").read_text()))


def details(model: str) -> dict[str, Any]:
    return dict(json.loads((DATA / f"{model.replace('/', '__')}.json").read_text()))


def _group_subtasks(suite: SuiteDefinition, names: set[str]) -> dict[str, list[str]]:
    """lm-eval's `group_subtasks`: each group present with the members it ran (leaves map to [])."""
    tree: dict[str, list[str]] = {}
    top = [task.name for task in suite.tasks if task.name in names]
    for group in suite.groups:
        if group in names:
            tree[group] = top + [extra for extra in suite.extra_tasks if extra in names]
    for task in suite.tasks:
        if task.name in names:
            tree[task.name] = [name for name in task.subtasks if name in names]
            tree.update({name: [] for name in task.subtasks if name in names})
    tree.update({extra: [] for extra in suite.extra_tasks if extra in names})
    return tree


def lm_eval_document(
    model: str, suite: SuiteDefinition, tasks: list[str] | None = None, *, with_tree: bool = True
) -> dict[str, Any]:
    """The run as lm-eval 0.4 writes a results file: all of it, or one shard's part (`tasks`)."""
    run = details(model)
    entries: dict[str, Any] = copy.deepcopy(run["results"])
    if tasks is not None:
        wanted = suite.scored_names(tasks)
        entries = {name: entry for name, entry in entries.items() if name in wanted}
    groups = {task.name for task in suite.tasks if task.subtasks} | set(suite.groups)
    document: dict[str, Any] = {
        "results": entries,
        "groups": {name: entries[name] for name in sorted(groups) if name in entries},
        # Nothing the card does not state is made up (no versions, dates or settings).
        "model_name": model,
        "model_name_sanitized": model.replace("/", "__"),
    }
    if with_tree:
        document["group_subtasks"] = _group_subtasks(suite, set(entries))
    return document
