"""How raw metrics become scores (app/results/normalize.py), rule by rule, on a small suite held in memory.

test_oll_reference.py checks the same code against two real Open LLM Leaderboard runs and the values the
leaderboard published; these cases pin each rule and each standard-error formula on numbers worked by hand.
"""

import math

import pytest

from corral.results.normalize import summarize
from corral.suites.schemas import SuiteDefinition

PROMPT = "prompt_level_strict_acc"
SUITE = SuiteDefinition.model_validate(
    {
        "name": "rules",
        "title": "Rules",
        "description": "One task per rule.",
        "context_tokens": 1024,
        "tasks": [
            # A leaf with two metrics measured on the same prompts (IFEval's shape).
            {
                "name": "ifeval",
                "num_fewshot": 0,
                "metrics": ["prompt_level_strict_acc", "inst_level_strict_acc"],
                "lower_bound": 0,
            },
            # A group read from lm-eval's own (sample-weighted) value, or from its leaves' counts.
            {"name": "gpqa", "num_fewshot": 0, "metrics": ["acc_norm"], "lower_bound": 0.25, "subtasks": ["g1", "g2"]},
            # A mean of subtasks, each normalized on its own bound (BBH's shape).
            {
                "name": "bbh",
                "num_fewshot": 3,
                "metrics": ["acc_norm"],
                "subtask_lower_bounds": {"b1": 0.5, "b2": 0.0},
            },
        ],
        "shards": [["ifeval"], ["gpqa"], ["bbh"]],
    }
)


def row(task: str, metric: str, value: float, stderr: float | None = None, samples: int | None = None):  # type: ignore[no-untyped-def]
    return (task, metric, "none", value, stderr, samples)


FULL = [
    row("ifeval", "prompt_level_strict_acc", 0.5, 0.02),
    row("ifeval", "inst_level_strict_acc", 0.7, None, 101),
    row("gpqa", "acc_norm", 0.4, 0.03),
    row("b1", "acc_norm", 0.75, 0.04),
    row("b2", "acc_norm", 0.2, 0.03),
]


def test_each_rule_on_numbers_worked_by_hand() -> None:
    summary = summarize(SUITE, FULL)
    ifeval, gpqa, bbh = (summary["tasks"][name] for name in ("ifeval", "gpqa", "bbh"))

    # Two metrics of one task: their mean; stderr the mean of theirs, the missing one binomial over n - 1.
    inst_se = math.sqrt(0.7 * 0.3 / 100)
    assert ifeval["raw"] == pytest.approx(0.6)
    assert ifeval["raw_stderr"] == pytest.approx((0.02 + inst_se) / 2)
    assert ifeval["normalized"] == pytest.approx(60.0)
    assert ifeval["stderr"] == pytest.approx((0.02 + inst_se) / 2 * 100)
    assert "subtasks" not in ifeval

    # lm-eval's group value, rescaled from the 0.25 baseline.
    assert gpqa == pytest.approx({"raw": 0.4, "raw_stderr": 0.03, "normalized": 20.0, "stderr": 4.0, "subtasks": 2})

    # Each subtask on its own bound, then the plain mean; stderrs of independent parts: sqrt(sum se^2) / n.
    assert bbh["raw"] == pytest.approx((0.75 + 0.2) / 2)
    assert bbh["raw_stderr"] == pytest.approx(math.sqrt(0.04**2 + 0.03**2) / 2)
    assert bbh["normalized"] == pytest.approx((50.0 + 20.0) / 2)
    assert bbh["stderr"] == pytest.approx(math.sqrt(8.0**2 + 3.0**2) / 2)
    assert bbh["subtasks"] == 2

    assert summary["complete"] is True
    assert summary["missing"] == []
    assert summary["average"] == pytest.approx((60.0 + 20.0 + 35.0) / 3)
    assert summary["average_stderr"] == pytest.approx(
        math.sqrt(ifeval["stderr"] ** 2 + 4.0**2 + bbh["stderr"] ** 2) / 3
    )


def test_scores_below_the_baseline_are_zero_not_negative() -> None:
    low = [r if r[0] != "gpqa" else row("gpqa", "acc_norm", 0.1, 0.03) for r in FULL]
    assert summarize(SUITE, low)["tasks"]["gpqa"]["normalized"] == 0.0
    at = [r if r[0] != "gpqa" else row("gpqa", "acc_norm", 0.25, 0.03) for r in FULL]
    assert summarize(SUITE, at)["tasks"]["gpqa"]["normalized"] == 0.0


def test_a_group_without_its_own_value_is_weighted_by_its_leaves_sample_counts() -> None:
    rows = [r for r in FULL if r[0] != "gpqa"] + [
        row("g1", "acc_norm", 0.5, 0.05, 100),
        row("g2", "acc_norm", 0.2, 0.1, 300),
    ]
    gpqa = summarize(SUITE, rows)["tasks"]["gpqa"]
    assert gpqa["raw"] == pytest.approx((0.5 * 100 + 0.2 * 300) / 400)
    assert gpqa["raw_stderr"] == pytest.approx(math.sqrt((100 * 0.05) ** 2 + (300 * 0.1) ** 2) / 400)
    assert gpqa["stderr"] == pytest.approx(gpqa["raw_stderr"] * 100 / 0.75)
    no_counts = [r for r in FULL if r[0] != "gpqa"] + [row("g1", "acc_norm", 0.5, 0.05), row("g2", "acc_norm", 0.2)]
    assert summarize(SUITE, no_counts)["missing"] == ["gpqa"]
    one_stderr = [r for r in FULL if r[0] != "gpqa"] + [
        row("g1", "acc_norm", 0.5, 0.05, 100),
        row("g2", "acc_norm", 0.2, None, 1),
    ]
    assert summarize(SUITE, one_stderr)["tasks"]["gpqa"]["raw_stderr"] is None


def test_a_missing_stderr_is_estimated_only_for_proportions_with_enough_samples() -> None:
    def ifeval(inst: tuple) -> dict:  # type: ignore[type-arg]
        rows = [r for r in FULL if r[0] != "ifeval"] + [row("ifeval", "prompt_level_strict_acc", 0.5, None), inst]
        return summarize(SUITE, rows)["tasks"]["ifeval"]

    # n implied by the sibling's binomial stderr: 0.5 x 0.5 / 0.05^2 + 1 = 101.
    implied = summarize(
        SUITE,
        [r for r in FULL if r[0] != "ifeval"]
        + [
            row("ifeval", "prompt_level_strict_acc", 0.5, 0.05),
            row("ifeval", "inst_level_strict_acc", 0.7),
        ],
    )["tasks"]["ifeval"]
    assert implied["raw_stderr"] == pytest.approx((0.05 + math.sqrt(0.7 * 0.3 / 100)) / 2)
    # prompt_acc is no proportion this module knows, so its missing stderr stays missing: no task stderr.
    assert ifeval(row("ifeval", "inst_level_strict_acc", 0.7, None, 101))["raw_stderr"] is None
    one_sample = [r for r in FULL if r[0] != "ifeval"] + [
        row("ifeval", "prompt_level_strict_acc", 0.5, 0.02),
        row("ifeval", "inst_level_strict_acc", 0.7, None, 1),
    ]
    assert summarize(SUITE, one_sample)["tasks"]["ifeval"]["raw_stderr"] is None
    two = [r for r in FULL if r[0] != "ifeval"] + [
        row("ifeval", "prompt_level_strict_acc", 0.5, 0.02),
        row("ifeval", "inst_level_strict_acc", 0.7, None, 2),
    ]
    assert summarize(SUITE, two)["tasks"]["ifeval"]["raw_stderr"] == pytest.approx((0.02 + math.sqrt(0.21)) / 2)
    # A metric that is not a proportion gets no binomial estimate, even with a count.
    leaf = SUITE.tasks[0].model_copy(update={"metrics": ["perplexity"]})
    perplexity = SUITE.model_copy(update={"tasks": [leaf, *SUITE.tasks[1:]]})
    rows = [r for r in FULL if r[0] != "ifeval"] + [row("ifeval", "perplexity", 0.7, None, 101)]
    assert summarize(perplexity, rows)["tasks"]["ifeval"]["raw_stderr"] is None
    # A sibling at 0 or 1 (or without a stderr) implies nothing.
    for sibling in (
        row("ifeval", "prompt_level_strict_acc", 1.0, 0.01),
        row("ifeval", "prompt_level_strict_acc", 0.0, 0.01),
    ):
        rows = [r for r in FULL if r[0] != "ifeval"] + [sibling, row("ifeval", "inst_level_strict_acc", 0.7)]
        assert summarize(SUITE, rows)["tasks"]["ifeval"]["raw_stderr"] is None


def test_missing_parts_leave_the_task_missing_and_the_summary_incomplete() -> None:
    for dropped in ("inst_level_strict_acc", "b2"):
        rows = [r for r in FULL if dropped not in (r[0], r[1])]
        summary = summarize(SUITE, rows)
        assert summary["complete"] is False
        assert summary["average"] is None
        assert summary["average_stderr"] is None
        assert len(summary["missing"]) == 1
        assert set(summary["tasks"]) | set(summary["missing"]) == {"ifeval", "gpqa", "bbh"}


def test_a_missing_stderr_anywhere_leaves_the_aggregate_without_one() -> None:
    rows = [r if r[0] != "b2" else row("b2", "acc_norm", 0.2) for r in FULL]
    summary = summarize(SUITE, rows)
    assert summary["tasks"]["bbh"]["raw_stderr"] is None
    assert summary["tasks"]["bbh"]["stderr"] is None
    assert summary["average"] is not None
    assert summary["average_stderr"] is None


def test_nothing_non_finite_leaves_the_module() -> None:
    huge = [r if r[0] != "gpqa" else row("gpqa", "acc_norm", 0.4, 1e308) for r in FULL]
    summary = summarize(SUITE, huge)
    assert summary["tasks"]["gpqa"]["stderr"] is None  # 1e308 x 100 / 0.75 overflows to inf: absent instead
    assert summary["tasks"]["gpqa"]["raw_stderr"] == 1e308
    assert summary["average_stderr"] is None


def mean_suite(lower: float) -> SuiteDefinition:
    """MuSR's shape: a plain mean of subtasks that share the task's one baseline."""
    return SuiteDefinition.model_validate(
        {
            "name": "mean",
            "title": "Mean",
            "description": "A mean task with one bound.",
            "context_tokens": 1024,
            "tasks": [
                {
                    "name": "musr",
                    "num_fewshot": 0,
                    "metrics": ["acc_norm"],
                    "lower_bound": lower,
                    "raw": "mean",
                    "subtasks": ["m1", "m2"],
                }
            ],
            "shards": [["musr"]],
        }
    )


@pytest.mark.parametrize("lower", [0.5, 0.0])
def test_a_mean_task_with_one_baseline_normalizes_each_subtask_on_it(lower: float) -> None:
    rows = [row("m1", "acc_norm", 0.8, 0.02), row("m2", "acc_norm", 0.6, 0.04)]
    musr = summarize(mean_suite(lower), rows)["tasks"]["musr"]
    assert musr["raw"] == pytest.approx(0.7)
    expected = [(value - lower) / (1 - lower) * 100 for value in (0.8, 0.6)]
    assert musr["normalized"] == pytest.approx(sum(expected) / 2)
    assert musr["stderr"] == pytest.approx(math.sqrt(0.02**2 + 0.04**2) / 2 * 100 / (1 - lower))


def test_a_weighted_group_estimates_its_leaves_missing_stderrs_from_their_counts() -> None:
    rows = [r for r in FULL if r[0] != "gpqa"] + [
        row("g1", "acc_norm", 0.5, None, 100),
        row("g2", "acc_norm", 0.2, None, 300),
    ]
    gpqa = summarize(SUITE, rows)["tasks"]["gpqa"]
    se1, se2 = math.sqrt(0.25 / 99), math.sqrt(0.16 / 299)
    assert gpqa["raw"] == pytest.approx(0.275)
    assert gpqa["raw_stderr"] == pytest.approx(math.sqrt((100 * se1) ** 2 + (300 * se2) ** 2) / 400)
