"""What a results document may contain (app/results/ingest.py), on documents held in memory.

The API tests (test_scores.py, test_results_integrity.py, test_oll_reference.py) send whole documents; here each
check is pinned with the path and message a caller is told, so that a loosened bound or a wrong path fails.
"""

import math
from typing import Any

import pytest

from corral.results.ingest import (
    MAX_MAGNITUDE,
    NO_STDERR,
    ParsedScore,
    ResultsError,
    TaskTree,
    finite_document,
    json_object,
    parse_scores,
    task_tree,
)
from corral.suites.service import read_suite_files

TREE = TaskTree(frozenset({"mmlu", "gsm8k"}), frozenset({"leaderboard"}))


def document(**sections: Any) -> dict[str, Any]:
    results = {"mmlu": {"alias": "mmlu", "acc,none": 0.6, "acc_stderr,none": 0.01}}
    return {"results": results} | sections


def refusal(doc: Any, tree: TaskTree = TREE) -> tuple[str, str]:
    with pytest.raises(ResultsError) as caught:
        parse_scores(doc, tree)
    assert str(caught.value) == caught.value.message
    return caught.value.path, caught.value.message


def test_a_task_score_with_its_stderr_samples_and_direction() -> None:
    doc = document(
        **{"n-samples": {"mmlu": {"original": 20, "effective": 14}}, "higher_is_better": {"mmlu": {"acc": True}}}
    )
    assert parse_scores(doc, TREE) == [ParsedScore("mmlu", "acc", "none", 0.6, 0.01, 14, True, is_group=False)]


def test_odd_samples_and_directions_are_read_as_unknown() -> None:
    doc = document(**{"n-samples": {"mmlu": {"effective": True}}, "higher_is_better": {"mmlu": {"acc": "yes"}}})
    [score] = parse_scores(doc, TREE)
    assert (score.samples, score.higher_is_better) == (None, None)
    [plain] = parse_scores(document(**{"n-samples": [], "higher_is_better": None}), TREE)
    assert (plain.samples, plain.higher_is_better) == (None, None)


def test_stderr_na_missing_or_text_is_no_stderr() -> None:
    for stderr in (NO_STDERR, "n/a", None):
        doc = {"results": {"mmlu": {"acc,none": 0.5, "acc_stderr,none": stderr}}}
        assert parse_scores(doc, TREE)[0].stderr is None
    assert parse_scores({"results": {"mmlu": {"acc,none": 0.5}}}, TREE)[0].stderr is None
    assert NO_STDERR == "N/A"


def test_groups_and_group_subtasks_mark_group_scores() -> None:
    doc = {
        "results": {"mmlu": {"acc,none": 0.6}, "gsm8k": {"exact_match,strict-match": 0.3}},
        "groups": {"mmlu": {"acc,none": 0.61}},
    }
    scores = {score.task: score for score in parse_scores(doc, TREE)}
    # The first appearance (results) wins over the groups section; both say mmlu is a group.
    assert (scores["mmlu"].value, scores["mmlu"].is_group) == (0.6, True)
    assert (scores["gsm8k"].metric, scores["gsm8k"].filter, scores["gsm8k"].is_group) == (
        "exact_match",
        "strict-match",
        False,
    )
    nested = {"results": {"mmlu": {"acc,none": 0.6}}, "group_subtasks": {"mmlu": []}}
    assert parse_scores(nested, TREE)[0].is_group is True


def test_kept_names_and_subtasks_below_them_are_checked_but_not_returned() -> None:
    doc = {
        "results": {
            "mmlu": {"acc,none": 0.6},
            "leaderboard": {"acc,none": 0.4},
            "leaderboard_bbh": {"acc_norm,none": 0.3},
            "leaderboard_bbh_navigate": {"acc_norm,none": 0.2},
        },
        "group_subtasks": {"leaderboard": ["leaderboard_bbh"], "leaderboard_bbh": ["leaderboard_bbh_navigate"]},
    }
    assert [score.task for score in parse_scores(doc, TREE)] == ["mmlu"]
    doc["results"]["leaderboard_bbh_navigate"] = {"acc_norm,none": 1.5}
    assert refusal(doc) == (
        "results.results.leaderboard_bbh_navigate.acc_norm,none",
        "acc_norm is a proportion; 1.5 is outside [0, 1]",
    )


def test_the_tree_grows_only_below_names_it_knows() -> None:
    grown = TREE.accepting(
        {
            "group_subtasks": {
                "leaderboard": ["leaderboard_math", 7, "mmlu"],
                "leaderboard_math": ["leaderboard_math_algebra"],
                "other": ["other_task"],
                "gsm8k": "not a list",
            }
        }
    )
    assert grown.scored == TREE.scored
    assert grown.kept == {"leaderboard", "leaderboard_math", "leaderboard_math_algebra"}
    assert "other_task" not in grown
    assert "leaderboard_math_algebra" in grown
    assert "mmlu" in grown
    assert 7 not in grown
    assert TREE.accepting({"group_subtasks": ["leaderboard"]}) is TREE
    assert TREE.accepting({}) is TREE


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ([], "results", "not lm-eval results: expected a JSON object"),
        ({}, "results.results", "not lm-eval results: no `results` object with tasks"),
        ({"results": {}}, "results.results", "not lm-eval results: no `results` object with tasks"),
        ({"results": []}, "results.results", "not lm-eval results: no `results` object with tasks"),
        (document(groups=[1]), "results.groups", "`groups` must be an object"),
        ({"results": {"mmlu": 0.5}}, "results.results.mmlu", "each task's results must be an object"),
        (
            {"results": {"mmlu": {"acc,none": 0.5}}, "groups": {"mmlu": []}},
            "results.groups.mmlu",
            "each task's results must be an object",
        ),
        (
            {"results": {"hellaswag": {"acc,none": 0.5}}},
            "results.results.hellaswag",
            "task 'hellaswag' is not part of this suite's task tree (or this job's)",
        ),
        (
            {"results": {"mmlu": {"alias": "mmlu", "acc": 0.5}}},
            "results.results",
            "not lm-eval results: no `metric,filter` values of this suite's tasks",
        ),
        (
            {"results": {"leaderboard": {"acc,none": 0.5}}},
            "results.results",
            "not lm-eval results: no `metric,filter` values of this suite's tasks",
        ),
    ],
)
def test_documents_that_are_not_results_are_refused_at_their_path(doc: Any, path: str, message: str) -> None:
    assert refusal(doc) == (path, message)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0.5", "a metric value must be a finite number"),
        (True, "a metric value must be a finite number"),
        (None, "a metric value must be a finite number"),
        (math.inf, "a metric value must be a finite number"),
        (-1.5, "acc is a proportion; -1.5 is outside [0, 1]"),
        (1.0000001, "acc is a proportion; 1.0000001 is outside [0, 1]"),
    ],
)
def test_metric_values_must_be_finite_and_proportions_within_zero_and_one(value: Any, message: str) -> None:
    assert refusal({"results": {"mmlu": {"acc,none": value}}}) == ("results.results.mmlu.acc,none", message)


def test_proportion_bounds_are_inclusive_and_other_metrics_are_unbounded_below_the_magnitude() -> None:
    for value in (0, 1, 0.0, 1.0):
        assert parse_scores({"results": {"mmlu": {"acc,none": value}}}, TREE)[0].value == value
    [perplexity] = parse_scores({"results": {"mmlu": {"perplexity,none": 12.5, "word_perplexity,none": -3}}}, TREE)[:1]
    assert perplexity.value == 12.5
    assert isinstance(perplexity.value, float)
    assert parse_scores({"results": {"mmlu": {"perplexity,none": MAX_MAGNITUDE}}}, TREE)[0].value == MAX_MAGNITUDE
    assert refusal({"results": {"mmlu": {"perplexity,none": -1e13}}}) == (
        "results.results.mmlu.perplexity,none",
        "-10000000000000.0 is beyond ±1e+12",
    )


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        (True, 'a standard error must be a number or "N/A"'),
        ([0.1], 'a standard error must be a number or "N/A"'),
        (math.inf, "inf is not a finite standard error within 1e+12"),
        (2e12, "2000000000000.0 is not a finite standard error within 1e+12"),
        (-0.01, "a standard error cannot be negative"),
        (1.01, "acc is a proportion; a standard error of 1.01 is impossible"),
    ],
)
def test_standard_errors_must_be_plausible(stderr: Any, message: str) -> None:
    doc = {"results": {"mmlu": {"acc,none": 0.5, "acc_stderr,none": stderr}}}
    assert refusal(doc) == ("results.results.mmlu.acc_stderr,none", message)


def test_standard_error_bounds_are_inclusive() -> None:
    for stderr, expected in ((0, 0.0), (1, 1.0), (math.nan, None)):
        doc = {"results": {"mmlu": {"acc,none": 0.5, "acc_stderr,none": stderr}}}
        assert parse_scores(doc, TREE)[0].stderr == expected
    big = {"results": {"mmlu": {"perplexity,none": 5.0, "perplexity_stderr,none": 3}}}
    assert parse_scores(big, TREE)[0].stderr == 3.0
    assert isinstance(parse_scores(big, TREE)[0].stderr, float)
    edge = {"results": {"mmlu": {"perplexity,none": 5.0, "perplexity_stderr,none": MAX_MAGNITUDE}}}
    assert parse_scores(edge, TREE)[0].stderr == MAX_MAGNITUDE


def test_finite_document_turns_nan_stderrs_into_na_and_refuses_other_non_finite_numbers() -> None:
    doc = {"results": {"mmlu": {"acc,none": 0.5, "acc_stderr,none": math.nan, "list": [1, 2.5]}}, "ok": True}
    assert finite_document(doc) == {
        "results": {"mmlu": {"acc,none": 0.5, "acc_stderr,none": "N/A", "list": [1, 2.5]}},
        "ok": True,
    }
    cases = [
        (
            {"results": {"mmlu": {"acc,none": math.nan}}},
            "results.results.mmlu.acc,none",
            "nan is not a finite number within ±1e+12",
        ),
        ({"a": [0.5, {"b": math.inf}]}, "results.a[1].b", "inf is not a finite number within ±1e+12"),
        ({"a": {"x_stderr,none": math.inf}}, "results.a.x_stderr,none", "inf is not a finite number within ±1e+12"),
        ({"a": [-2e12]}, "results.a[0]", "-2000000000000.0 is not a finite number within ±1e+12"),
        ({"a": 2**63}, "results.a", "an integer beyond 64 bits"),
        ({"a": -(2**63) - 1}, "results.a", "an integer beyond 64 bits"),
    ]
    for bad, path, message in cases:
        with pytest.raises(ResultsError) as caught:
            finite_document(bad)
        assert (caught.value.path, caught.value.message) == (path, message)
    assert finite_document({"a": [2**63 - 1, -(2**63) + 1, 1e12, True]}, "doc") == {
        "a": [2**63 - 1, -(2**63) + 1, 1e12, True]
    }
    with pytest.raises(ResultsError) as elsewhere:
        finite_document({"a": math.inf}, "upload")
    assert elsewhere.value.path == "upload.a"
    # A NaN in a list under a stderr key is still a stderr lm-eval could not compute.
    assert finite_document({"acc_stderr,none": [math.nan]}) == {"acc_stderr,none": ["N/A"]}


def test_json_object_reads_anything_else_as_empty() -> None:
    assert json_object({"a": 1}) == {"a": 1}
    for other in (None, [], "x", 3):
        assert json_object(other) == {}


def test_a_filter_name_may_itself_hold_a_comma() -> None:
    [score] = parse_scores({"results": {"gsm8k": {"exact_match,flexible,extract": 0.3}}}, TREE)
    assert (score.metric, score.filter) == ("exact_match", "flexible,extract")


def test_a_bare_non_finite_document_is_refused_at_its_root() -> None:
    with pytest.raises(ResultsError) as caught:
        finite_document(math.nan)
    assert (caught.value.path, caught.value.message) == ("results", "nan is not a finite number within ±1e+12")


def test_a_job_tree_holds_only_that_job_tasks() -> None:
    suite = next(suite for suite in read_suite_files() if suite.name == "core")
    whole, job = task_tree(suite), task_tree(suite, ["gsm8k"])
    assert job.scored == {"gsm8k"}
    assert {"gsm8k", "mmlu", "mmlu_anatomy", "hellaswag"} <= whole.scored
    assert job.kept == whole.kept == suite.kept_names()
