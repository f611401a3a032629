"""The CI gate (`corral eval run`) against a real app, and `corral results import` as a real process."""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.config import Settings
from corral.console.gate import ERROR, EVALUATION_FAILED, PASSED, REGRESSION, TIMED_OUT, GateError, run_gate
from corral.evaluations.schemas import EvaluationCreate
from tests.support.evaluations import lease, load_shipped_suites, make_model, make_runner, sha_of
from tests.support.typed_client import typed_client
from tests.test_cli import run

REPO = "corral-test/tiny-llama"


def smoke_results(mc: float, gen: float) -> dict[str, dict[str, Any]]:
    return {
        "corral_smoke_mc": {"results": {"corral_smoke_mc": {"acc,none": mc, "acc_stderr,none": 0.01}}},
        "corral_smoke_gen": {
            "results": {"corral_smoke_gen": {"exact_match,strict-match": gen, "exact_match_stderr,strict-match": 0.01}}
        },
    }


def finish_jobs(client: TestClient, runner: dict[str, str], documents: dict[str, dict[str, Any]]) -> None:
    """Play the runner: claim every job of the queue and upload its results."""
    while (answer := client.post("/v1/runner/jobs/claim", headers=runner)).status_code == 201:
        claimed = answer.json()
        stored = client.put(
            f"/v1/runner/attempts/{claimed['attempt_id']}/result",
            json={"results": documents[claimed["tasks"][0]["name"]]},
            headers=lease(claimed, runner),
        )
        assert stored.status_code == 201, stored.text


def gate(client: TestClient, revision: str, **options: Any) -> tuple[int, list[str], list[str]]:
    printed: list[str] = []
    progress: list[str] = []
    settings = {"wait": True, "timeout": 5.0, "poll_seconds": 0.01, "baseline": None, "max_drop": 1.0}
    limit = options.pop("limit", None)
    code = run_gate(
        typed_client(client),
        EvaluationCreate(model=REPO, revision=revision, suite="smoke", precision="fp32", limit=limit),
        output_format=options.pop("output_format", "markdown"),
        echo=printed.append,
        progress=progress.append,
        **(settings | options),  # type: ignore[arg-type]
    )
    return code, printed, progress


def two_revisions_and_a_runner(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> tuple[str, str, dict[str, str]]:
    """The suites, the model with a baseline and a candidate revision, a runner; the client publishes."""
    load_shipped_suites(settings)
    baseline_sha = make_model(client, publish_headers)
    candidate_sha = sha_of("candidate")
    client.post(f"/v1/models/{REPO}/revisions", json={"sha": candidate_sha}, headers=publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8, max_concurrent_jobs=4)
    client.headers.update(publish_headers)
    return baseline_sha, candidate_sha, runner


def test_gate_requests_waits_and_fails_on_a_significant_drop(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    baseline_sha, candidate_sha, runner = two_revisions_and_a_runner(client, settings, admin_headers, publish_headers)
    client.put(f"/v1/models/{REPO}/aliases/champion", json={"sha": baseline_sha})

    # Without --wait: the request alone, retried safely (the same Idempotency-Key).
    code, printed, _ = gate(client, baseline_sha, wait=False)
    assert code == PASSED
    first = json.loads(printed[0])["id"]
    assert json.loads(gate(client, baseline_sha, wait=False)[1][0])["id"] == first
    # Nobody runs it yet: the wait times out, saying what the job waits for.
    code, _, progress = gate(client, baseline_sha, timeout=0.05)
    assert code == TIMED_OUT
    waits = [line for line in progress if ": queued (" in line]  # each job, queued, with what it waits for
    assert waits, progress
    assert "%" not in waits[-1]  # no progress figure for a job nobody runs
    assert waits[-1].count(": queued (") == 2  # both of the suite's jobs

    finish_jobs(client, runner, smoke_results(mc=0.9, gen=0.8))
    code, printed, _ = gate(client, baseline_sha)
    assert code == PASSED
    assert "| corral_smoke_mc | 86.67 |" in printed[0]

    gate(client, candidate_sha, wait=False)
    finish_jobs(client, runner, smoke_results(mc=0.5, gen=0.8))  # much worse at multiple choice
    code, printed, progress = gate(client, candidate_sha, baseline=f"{REPO}@champion")
    assert code == REGRESSION, progress
    assert "Δ vs baseline" in printed[0]
    mc_row = next(line for line in printed[0].splitlines() if line.startswith("| corral_smoke_mc"))
    assert "(❌ regression; significant)" in mc_row
    average_row = next(line for line in printed[0].splitlines() if line.startswith("| **average**"))
    assert "❌ regression" in average_row  # every failing row is marked, the average too
    assert any(line.startswith("regression: corral_smoke_mc") for line in progress)
    # Within the allowed drop, the gate passes; JSON output carries the comparison.
    code, printed, _ = gate(
        client, candidate_sha, baseline=f"{REPO}@{baseline_sha}", max_drop=60.0, output_format="json"
    )
    assert code == PASSED
    assert json.loads(printed[0])["comparison"]["base"] is not None


def test_gate_reports_a_failed_evaluation(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    load_shipped_suites(settings)
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    client.headers.update(publish_headers)
    gate(client, sha, wait=False)
    claimed = client.post("/v1/runner/jobs/claim", headers=runner).json()
    client.post(
        f"/v1/runner/attempts/{claimed['attempt_id']}/fail",
        json={"category": "model_error", "message": "weights are corrupt"},
        headers=lease(claimed, runner),
    )
    code, _, progress = gate(client, sha)
    assert code == EVALUATION_FAILED
    assert progress[-1] == "evaluation failed: weights are corrupt"


def test_results_import_command_backfills_an_output_directory(
    client: TestClient, settings: Settings, database_url: str, publish_headers: dict[str, str], tmp_path: Path
) -> None:
    load_shipped_suites(settings)
    sha = make_model(client, publish_headers)
    output = tmp_path / "lm-eval-output" / "corral-test__tiny-llama"
    output.mkdir(parents=True)
    document = {
        "results": {
            "corral_smoke_mc": {"acc,none": 0.5, "acc_stderr,none": 0.1},
            "corral_smoke_gen": {"exact_match,strict-match": 0.25},
        },
        "lm_eval_version": "0.4.11",
    }
    (output / "results_2026-11-01T10-00-00.json").write_text(json.dumps(document))
    args = [
        "results",
        "import",
        str(tmp_path / "lm-eval-output"),
        "--model",
        REPO,
        "--revision",
        sha,
        "--suite",
        "smoke",
    ]
    first = run(args, database_url, tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["created"] is True
    again = run(args, database_url, tmp_path)
    assert json.loads(again.stdout)["created"] is False

    history = client.get(f"/v1/models/{REPO}/scores").json()
    assert len(history) == 1
    assert history[0]["source"] == "import"
    assert history[0]["average"] == (0.5 - 0.25) / 0.75 * 100 / 2 + 25 / 2

    refused = run([*args[:-1], "core"], database_url, tmp_path)
    assert refused.returncode == 1
    assert "not part of this suite" in refused.stderr


def test_gate_checks_the_baseline_first_and_says_when_a_drop_cannot_be_judged(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    baseline_sha, candidate_sha, runner = two_revisions_and_a_runner(client, settings, admin_headers, publish_headers)

    # A typo in --baseline stops the gate before anything is requested.
    with pytest.raises(GateError, match="no complete succeeded smoke evaluation"):
        gate(client, candidate_sha, baseline=f"{REPO}@{baseline_sha}")
    assert client.get("/v1/evaluations").json()["items"] == []

    no_stderr = {
        "corral_smoke_mc": {"results": {"corral_smoke_mc": {"acc,none": 0.9}}},
        "corral_smoke_gen": {"results": {"corral_smoke_gen": {"exact_match,strict-match": 0.8}}},
    }
    gate(client, baseline_sha, wait=False)
    finish_jobs(client, runner, no_stderr)
    gate(client, candidate_sha, wait=False)
    worse = {**no_stderr, "corral_smoke_gen": {"results": {"corral_smoke_gen": {"exact_match,strict-match": 0.5}}}}
    finish_jobs(client, runner, worse)
    code, printed, progress = gate(client, candidate_sha, baseline=f"{REPO}@{baseline_sha}")
    assert code == REGRESSION
    gen_row = next(line for line in printed[0].splitlines() if line.startswith("| corral_smoke_gen"))
    assert "-30.00 (❌ regression; no stderr: not judged for significance)" in gen_row
    mc_row = next(line for line in printed[0].splitlines() if line.startswith("| corral_smoke_mc"))
    assert "+0.00 (no stderr: not judged for significance)" in mc_row
    assert "corral_smoke_gen -30.00 (no stderr: not judged for significance)" in progress[-1]


def test_a_sample_is_never_a_baseline_and_a_baseline_with_other_settings_is_refused(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    baseline_sha, candidate_sha, runner = two_revisions_and_a_runner(client, settings, admin_headers, publish_headers)
    # The baseline revision has only a 7-sample run: it is no baseline, and the gate says why.
    gate(client, baseline_sha, wait=False, limit=7)
    finish_jobs(client, runner, smoke_results(mc=0.9, gen=0.8))
    with pytest.raises(GateError, match="1 sample run with a limit skipped"):
        gate(client, candidate_sha, baseline=f"{REPO}@{baseline_sha}")

    # A complete run of it is; a 7-sample candidate against it is refused, naming the limit, unless asked for.
    gate(client, baseline_sha, wait=False)
    finish_jobs(client, runner, smoke_results(mc=0.9, gen=0.8))
    gate(client, candidate_sha, wait=False, limit=7)
    finish_jobs(client, runner, smoke_results(mc=0.9, gen=0.8))
    code, printed, progress = gate(client, candidate_sha, baseline=f"{REPO}@{baseline_sha}", limit=7)
    assert code == ERROR
    assert "limit None → 7" in progress[-1], progress
    assert "Δ vs baseline" not in printed[0]  # the table alone: no delta against other settings
    code, printed, _ = gate(
        client, candidate_sha, baseline=f"{REPO}@{baseline_sha}", limit=7, allow_different_settings=True
    )
    assert code == PASSED
    assert "Δ vs baseline" in printed[0]
