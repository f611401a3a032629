"""Real Open LLM Leaderboard v2 runs, end to end: imported through the API and the CLI, and uploaded shard by shard
through the runner protocol, they are accepted unchanged and score as the leaderboard published them, in every
view (evaluation, leaderboard JSON/CSV/Markdown, comparison, CI gate table, Hub exports)."""

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from corral.config import Settings
from corral.console.gate import markdown_table
from corral.evaluations.schemas import EvaluationRead
from corral.scores.schemas import Comparison
from corral.suites.service import read_suite_files
from tests.support.evaluations import lease, load_shipped_suites, make_runner
from tests.support.oll import COLUMNS, MODELS, STRICT, lm_eval_document, published
from tests.test_cli import run

SUITE = {suite.name: suite for suite in read_suite_files()}["openllm-v2"]
PUBLISHED = published()


def register(client: TestClient, headers: dict[str, str]) -> None:
    """The two reference models at the commits the leaderboard evaluated."""
    for model in MODELS:
        body = {
            "repo_id": model,
            "kind": "base",
            "hidden_size": 768,
            "num_layers": 12,
            "num_attention_heads": 12,
            "num_kv_heads": 12,
            "intermediate_size": 3072,
            "vocab_size": 50304,
            "context_length": 2048,
        }
        assert client.post("/v1/models", json=body, headers=headers).status_code == 201
        sha = PUBLISHED[model]["sha"]
        recorded = client.post(f"/v1/models/{model}/revisions", json={"sha": sha}, headers=headers)
        assert recorded.status_code == 201, recorded.text


def assert_matches_published(model: str, tasks: dict[str, Any], average: float | None) -> None:
    """Normalized to 0.01 and raw to 1e-4 where the card is the published run; MATH and the average as the
    reference notes allow (the published MATH comes from another run: the average is checked with it)."""
    expected = PUBLISHED[model]
    for task in STRICT:
        column = COLUMNS[task]
        assert tasks[task]["normalized"] == pytest.approx(expected[column], abs=0.01), (model, task)
        assert tasks[task]["raw"] == pytest.approx(expected["raw"][column], abs=1e-4), (model, task)
        assert tasks[task]["stderr"] is not None, (model, task)
    assert tasks["leaderboard_math_hard"]["subtasks"] == 7
    assert average is not None
    with_published_math = average + (expected["math_lvl5"] - tasks["leaderboard_math_hard"]["normalized"]) / 6
    assert with_published_math == pytest.approx(expected["average"], abs=0.01)


def import_body(model: str, document: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "revision": PUBLISHED[model]["sha"], "suite": "openllm-v2", "results": document}


@pytest.mark.parametrize("with_tree", [True, False], ids=["group_subtasks", "results-only"])
def test_real_runs_import_through_the_api_and_match_the_published_scores(
    client: TestClient, settings: Settings, publish_headers: dict[str, str], with_tree: bool
) -> None:
    load_shipped_suites(settings)
    register(client, publish_headers)
    evaluations = {}
    for model in MODELS:
        answer = client.post(
            "/v1/results/import",
            json=import_body(model, lm_eval_document(model, SUITE, with_tree=with_tree)),
            headers=publish_headers,
        )
        assert answer.status_code == 201, answer.text
        evaluation = client.get(f"/v1/evaluations/{answer.json()['evaluation_id']}").json()
        assert evaluation["state"] == "succeeded"
        assert_matches_published(model, evaluation["summary"]["tasks"], evaluation["average"])
        evaluations[model] = evaluation
        # BBH and MuSR raw values do not depend on whether lm-eval's group entries are in the document.
        without_groups = lm_eval_document(model, SUITE, with_tree=with_tree)
        for group in ("leaderboard_bbh", "leaderboard_musr"):
            del without_groups["results"][group]
            without_groups["groups"].pop(group)
        again = client.post(
            "/v1/results/import",
            json={**import_body(model, without_groups), "precision": "fp16"},
            headers=publish_headers,
        )
        assert again.status_code == 201, again.text
        other = client.get(f"/v1/evaluations/{again.json()['evaluation_id']}").json()["summary"]["tasks"]
        for group in ("leaderboard_bbh", "leaderboard_musr"):
            assert other[group]["raw"] == evaluation["summary"]["tasks"][group]["raw"]

    # The leaderboard and its exports show the same numbers.
    board = client.get("/v1/leaderboards/openllm-v2", params={"precision": "bf16"}).json()
    rows = {row["model"]: row for row in board["items"]}
    assert set(rows) == set(MODELS)
    for model, evaluation in evaluations.items():
        assert rows[model]["tasks"] == {
            name: {field: values[field] for field in ("raw", "raw_stderr", "normalized", "stderr")}
            for name, values in evaluation["summary"]["tasks"].items()
        }
        assert rows[model]["average"] == evaluation["average"]
        assert rows[model]["links"]["provenance"] == f"/v1/evaluations/{evaluation['id']}/provenance"
    exports = {
        kind: client.get("/v1/leaderboards/openllm-v2", params={"format": kind, "precision": "bf16"}).text
        for kind in ("csv", "markdown")
    }
    table = {row["model"]: row for row in csv.DictReader(io.StringIO(exports["csv"]))}
    markdown = exports["markdown"]
    for model in MODELS:
        for task in STRICT:
            expected = PUBLISHED[model][COLUMNS[task]]
            assert float(table[model][task]) == pytest.approx(expected, abs=0.01)
            assert float(table[model][f"{task}_raw"]) == pytest.approx(PUBLISHED[model]["raw"][COLUMNS[task]], abs=1e-4)
            assert f"{rows[model]['tasks'][task]['normalized']:.2f} ±" in markdown

    # The comparison and the CI gate's table carry the same values and deltas.
    small, large = (evaluations[model] for model in MODELS)
    compared = client.get("/v1/compare", params={"base": small["id"], "candidate": large["id"]}).json()
    deltas = {item["task"]: item for item in compared["tasks"]}
    for task in STRICT:
        expected = PUBLISHED[MODELS[1]][COLUMNS[task]] - PUBLISHED[MODELS[0]][COLUMNS[task]]
        assert deltas[task]["delta"] == pytest.approx(expected, abs=0.02)
        assert deltas[task]["significant"] is not None
    assert compared["average"]["stderr"] is not None
    gate_table = markdown_table(EvaluationRead.model_validate(large), Comparison.model_validate(compared))
    for task in STRICT:
        assert f"| {large['summary']['tasks'][task]['normalized']:.2f} |" in gate_table
    assert f"**{large['average']:.2f}**" in gate_table

    # Hub exports: the model card's model-index carries every benchmark, labelled as the leaderboard labels them.
    exported = client.get(f"/v1/evaluations/{small['id']}/hub-export", params={"format": "model-index"})
    [index] = yaml.safe_load(exported.text)["model-index"]
    results = {result["dataset"]["name"]: result for result in index["results"]}
    ifeval = results["IFEval (0-Shot)"]
    assert ifeval["metrics"][0]["type"] == "inst_level_strict_acc and prompt_level_strict_acc"
    assert ifeval["metrics"][0]["value"] == pytest.approx(PUBLISHED[MODELS[0]]["ifeval"], abs=0.01)
    assert ifeval["source"]["url"].endswith(f"/v1/evaluations/{small['id']}")
    assert results["BBH (3-Shot)"]["dataset"]["args"] == {"num_few_shot": 3}
    entries = yaml.safe_load(client.get(f"/v1/evaluations/{small['id']}/hub-export").text)
    # Only MMLU-PRO is scored on a Hub benchmark's own task (GPQA here is not the Hub's `diamond` task).
    assert [entry["dataset"] for entry in entries] == [{"id": "TIGER-Lab/MMLU-Pro", "task_id": "mmlu_pro"}]
    assert entries[0]["value"] == pytest.approx(PUBLISHED[MODELS[0]]["raw"]["mmlu_pro"] * 100, abs=0.01)
    assert entries[0]["source"] == {"url": ifeval["source"]["url"], "name": "Corral"}


def test_real_runs_import_through_the_cli(
    client: TestClient, settings: Settings, database_url: str, publish_headers: dict[str, str], tmp_path: Path
) -> None:
    load_shipped_suites(settings)
    register(client, publish_headers)
    for model in MODELS:
        output = tmp_path / model.replace("/", "__")
        output.mkdir()
        (output / "results_2024-06-16T22-09-58.json").write_text(json.dumps(lm_eval_document(model, SUITE)))
        args = ["results", "import", str(output), "--model", model, "--revision", PUBLISHED[model]["sha"]]
        done = run([*args, "--suite", "openllm-v2", "--precision", "fp16"], database_url, tmp_path)
        assert done.returncode == 0, done.stderr
        evaluation = client.get(f"/v1/evaluations/{json.loads(done.stdout)['evaluation_id']}").json()
        assert (evaluation["state"], evaluation["config"]["precision"]) == ("succeeded", "fp16")
        assert_matches_published(model, evaluation["summary"]["tasks"], evaluation["average"])


def test_real_runs_complete_through_the_runner_protocol(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    """A runner claims each openllm-v2 shard and uploads lm-eval's real output for it: every job is taken."""
    load_shipped_suites(settings)
    register(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "h100-1", memory_gib=80, max_concurrent_jobs=8)
    requested = {}
    for model in MODELS:
        body = {"model": model, "revision": PUBLISHED[model]["sha"], "suite": "openllm-v2", "precision": "fp16"}
        created = client.post("/v1/evaluations", json=body, headers=publish_headers)
        assert created.status_code == 201, created.text
        requested[created.json()["id"]] = model
    uploads = 0
    while (answer := client.post("/v1/runner/jobs/claim", headers=runner)).status_code == 201:
        claimed = answer.json()
        tasks = [task["name"] for task in claimed["tasks"]]
        document = lm_eval_document(requested[claimed["evaluation_id"]], SUITE, tasks)
        stored = client.put(
            f"/v1/runner/attempts/{claimed['attempt_id']}/result",
            json={"results": document},
            headers=lease(claimed, runner),
        )
        assert stored.status_code == 201, (tasks, stored.text)
        uploads += 1
    assert uploads == 2 * len(SUITE.shards)
    for evaluation_id, model in requested.items():
        evaluation = client.get(f"/v1/evaluations/{evaluation_id}").json()
        assert evaluation["state"] == "succeeded"
        assert all(job["attempt_count"] == 1 for job in evaluation["jobs"])
        assert_matches_published(model, evaluation["summary"]["tasks"], evaluation["average"])
