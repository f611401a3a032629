"""What enters as results stays sound: numbers finite and bounded, partial results never pass as complete, suite
versions pinnable, every result's provenance and raw document fetchable, refused uploads reported by runners."""

import asyncio
import gzip
import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from corral.config import Settings
from corral.console.gate import GateError, find_baseline
from corral.db import in_unit_of_work
from corral.evaluations.schemas import EvaluationCreate
from corral.tables import Evaluation, JobResult, Score
from corral_runner.client import ServerClient
from corral_runner.config import RunnerConfig
from corral_runner.jobdir import JobDirectory
from corral_runner.spool import Spool
from tests.support.evaluations import lease, load_shipped_suites, make_model, make_runner
from tests.support.typed_client import typed_client
from tests.test_scores import openllm_results

REPO = "corral-test/tiny-llama"


def counts(settings: Settings) -> tuple[int, int, int]:
    async def work(session: Any) -> tuple[int, int, int]:
        return (
            await session.scalar(select(func.count()).select_from(Evaluation)),
            await session.scalar(select(func.count()).select_from(Score)),
            await session.scalar(select(func.count()).select_from(JobResult)),
        )

    return asyncio.run(in_unit_of_work(settings, work))


def imported(client: TestClient, headers: dict[str, str], sha: str, document: Any, suite: str = "openllm-v2") -> Any:
    body = {"model": REPO, "revision": sha, "suite": suite, "results": document}
    return client.post("/v1/results/import", json=body, headers=headers)


@pytest.fixture
def sha(client: TestClient, settings: Settings, publish_headers: dict[str, str]) -> str:
    load_shipped_suites(settings)
    return make_model(client, publish_headers)


def test_numbers_that_would_overflow_are_refused_naming_the_path(
    client: TestClient, settings: Settings, sha: str, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    huge = openllm_results(0.5, leaderboard_gpqa={"acc_norm_stderr,none": 1.5e154})
    answer = imported(client, publish_headers, sha, huge)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "results.results.leaderboard_gpqa.acc_norm_stderr,none"
    beyond = openllm_results(0.5, leaderboard_mmlu_pro={"acc_stderr,none": 3.0})  # a proportion's stderr
    assert imported(client, publish_headers, sha, beyond).status_code == 422
    raw_infinity = json.dumps(
        {
            "model": REPO,
            "revision": sha,
            "suite": "smoke",
            "results": {
                "results": {
                    "corral_smoke_mc": {"acc,none": 0.5, "acc_stderr,none": float("inf")},
                    "corral_smoke_gen": {},
                }
            },
        }
    )
    answer = client.post(
        "/v1/results/import", content=raw_infinity, headers={**publish_headers, "Content-Type": "application/json"}
    )
    # Python's JSON reads `Infinity`; the number is refused where it stands.
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "results.results.corral_smoke_mc.acc_stderr,none"
    assert counts(settings) == (0, 0, 0)

    # Through the runner protocol the same document is refused, and the job is still the runner's to fail.
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8, max_concurrent_jobs=2)
    client.post("/v1/evaluations", json={"model": REPO, "revision": sha, "suite": "smoke"}, headers=publish_headers)
    claimed = client.post("/v1/runner/jobs/claim", headers=runner).json()
    task = claimed["tasks"][0]["name"]
    metric = "acc" if task == "corral_smoke_mc" else "exact_match"
    filter_ = "none" if task == "corral_smoke_mc" else "strict-match"
    document = {"results": {task: {f"{metric},{filter_}": 0.5, f"{metric}_stderr,{filter_}": 1e300}}}
    refused = client.put(
        f"/v1/runner/attempts/{claimed['attempt_id']}/result",
        json={"results": document},
        headers=lease(claimed, runner),
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == f"results.results.{task}.{metric}_stderr,{filter_}"

    # lm-eval's NaN for a stderr it could not compute reads "N/A"; the stored document is valid JSON.
    nan_body = json.dumps(
        {"results": {"results": {task: {f"{metric},{filter_}": 0.5, f"{metric}_stderr,{filter_}": float("nan")}}}}
    )
    stored = client.put(
        f"/v1/runner/attempts/{claimed['attempt_id']}/result",
        content=nan_body,
        headers={**lease(claimed, runner), "Content-Type": "application/json"},
    )
    assert stored.status_code == 201, stored.text
    raw = client.get(f"/v1/evaluations/{claimed['evaluation_id']}/jobs/{claimed['shard_index']}/results")
    assert json.loads(raw.text)["results"][task][f"{metric}_stderr,{filter_}"] == "N/A"


def test_every_json_answer_is_valid_json_and_summaries_stay_finite(
    client: TestClient, sha: str, publish_headers: dict[str, str]
) -> None:
    """The largest accepted numbers still give finite summaries: the leaderboard parses as strict JSON."""
    document = openllm_results(0.5, stderr=1.0)
    for entry in document["results"].values():
        for key in list(entry):
            if key.endswith("_stderr,none") and entry[key] != "N/A":
                entry[key] = 1.0
    assert imported(client, publish_headers, sha, document).status_code == 201
    text = client.get("/v1/leaderboards/openllm-v2").text
    board = json.loads(text, parse_constant=lambda constant: pytest.fail(f"{constant} in the leaderboard"))
    row = board["items"][0]
    assert math.isfinite(row["average_stderr"])


def test_partial_results_are_partial_and_no_baseline_unless_asked(
    client: TestClient, settings: Settings, sha: str, publish_headers: dict[str, str]
) -> None:
    document = openllm_results(0.5)
    del document["results"]["leaderboard_musr_team_allocation"]
    answer = imported(client, publish_headers, sha, document)
    assert answer.status_code == 201, answer.text
    evaluation = client.get(f"/v1/evaluations/{answer.json()['evaluation_id']}").json()
    assert evaluation["state"] == "partial"
    assert evaluation["average"] is None
    assert evaluation["summary"]["missing"] == ["leaderboard_musr"]
    assert "leaderboard_musr" in evaluation["failure_message"]
    assert client.get("/v1/leaderboards/openllm-v2").json()["items"] == []  # never ranked
    # A partial run is not taken as a CI baseline, unless the gate is told to.
    wanted = EvaluationCreate(model=REPO, revision=sha, suite="openllm-v2", precision="bf16")
    with pytest.raises(GateError, match="no complete succeeded"):
        find_baseline(typed_client(client, publish_headers), f"{REPO}@{sha}", wanted, allow_partial=False)
    partial = find_baseline(typed_client(client, publish_headers), f"{REPO}@{sha}", wanted, allow_partial=True)
    assert str(partial.id) == evaluation["id"]
    # A partial run can still be compared and exported explicitly.
    assert client.get(f"/v1/evaluations/{evaluation['id']}/hub-export").status_code == 200


def test_suite_versions_can_be_pinned_as_the_server_reports_them(
    client: TestClient, sha: str, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    version = client.get("/v1/suites/smoke").json()["version"]
    body = {"model": REPO, "revision": sha, "suite": "smoke", "suite_version": version}
    created = client.post("/v1/evaluations", json=body, headers=publish_headers)
    assert created.status_code == 201, created.text
    assert created.json()["suite_version"] == version
    unknown = client.post("/v1/evaluations", json={**body, "suite_version": "0" * 12}, headers=publish_headers)
    assert unknown.status_code == 422
    assert "has no version" in unknown.json()["detail"]


def test_provenance_and_raw_documents_can_be_fetched(
    client: TestClient, sha: str, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8, max_concurrent_jobs=2)
    evaluation = client.post(
        "/v1/evaluations", json={"model": REPO, "revision": sha, "suite": "smoke"}, headers=publish_headers
    ).json()
    environment = (
        "PyTorch version: 2.4.0+cu121\nCUDA used to build PyTorch: 12.1\n"
        "GPU models and configuration: \nGPU 0: NVIDIA H100 80GB HBM3\nGPU 1: NVIDIA H100 80GB HBM3\n"
    )
    for _ in range(2):
        claimed = client.post("/v1/runner/jobs/claim", headers=runner).json()
        task = claimed["tasks"][0]["name"]
        key = "acc,none" if task == "corral_smoke_mc" else "exact_match,strict-match"
        document = {
            "results": {task: {key: 0.5}},
            "versions": {task: 1.0},
            "task_hashes": {task: "a" * 64},
            "n-shot": {task: 0},
            "config": {
                "random_seed": 0,
                "numpy_seed": 1234,
                "torch_seed": 1234,
                "fewshot_seed": 1234,
                "model_sha": sha,
                "model_dtype": "torch.bfloat16",
                "batch_size": "auto",
            },
            "git_hash": "5e02eea",
            "lm_eval_version": "0.4.13",
            "transformers_version": "4.46.0",
            "pretty_env_info": environment,
            "chat_template": None,
            "chat_template_sha": None,
        }
        samples = {task: [{"doc_id": 0, "target": "A", "resps": [["A"]]}]}
        stored = client.put(
            f"/v1/runner/attempts/{claimed['attempt_id']}/result",
            json={"results": document, "samples": samples},
            headers=lease(claimed, runner),
        )
        assert stored.status_code == 201, stored.text
    provenance = client.get(f"/v1/evaluations/{evaluation['id']}/provenance").json()
    assert provenance["state"] == "succeeded"
    [first, second] = provenance["jobs"]
    assert (first["shard_index"], second["shard_index"]) == (0, 1)
    assert first["runner"] == "cpu-1"
    assert first["runner_accelerators"] == ["test-gpu x 1 (9 GB)"]
    assert first["lm_eval_commit"] == "5e02eea"
    assert first["seeds"] == {"random": 0, "numpy": 1234, "torch": 1234, "fewshot": 1234}
    assert first["model_sha"] == sha
    assert first["dtype"] == "torch.bfloat16"
    assert first["torch_version"] == "2.4.0+cu121"
    assert first["cuda_version"] == "12.1"
    assert first["gpu"] == "GPU 0: NVIDIA H100 80GB HBM3; GPU 1: NVIDIA H100 80GB HBM3"
    assert first["transformers_version"] == "4.46.0"
    assert first["task_hashes"] == {"corral_smoke_mc": "a" * 64}

    # Raw documents: gzip passed through as stored to a client that takes it, plain JSON to one that does not.
    url = first["results_url"]
    raw = client.get(url, headers={"Accept-Encoding": "identity"})
    assert raw.headers.get("content-encoding") is None
    assert raw.json()["results"] == {"corral_smoke_mc": {"acc,none": 0.5}}
    with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as streamed:
        assert streamed.headers["content-encoding"] == "gzip"
        body = b"".join(streamed.iter_raw())
    assert json.loads(gzip.decompress(body)) == raw.json()
    samples = client.get(first["samples_url"]).json()
    assert samples == {"corral_smoke_mc": [{"doc_id": 0, "target": "A", "resps": [["A"]]}]}
    assert client.get(f"/v1/evaluations/{evaluation['id']}/jobs/7/results").status_code == 404
    board = client.get("/v1/leaderboards/smoke").json()["items"]
    assert board[0]["links"]["provenance"] == f"/v1/evaluations/{evaluation['id']}/provenance"


def test_a_runner_reports_a_refused_upload_as_a_harness_error(
    client: TestClient,
    settings: Settings,
    sha: str,
    admin_headers: dict[str, str],
    publish_headers: dict[str, str],
    tmp_path: Path,
) -> None:
    """The agent's spool upload is refused (422): the attempt fails at once with the server's reason."""
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    evaluation = client.post(
        "/v1/evaluations", json={"model": REPO, "revision": sha, "suite": "smoke"}, headers=publish_headers
    ).json()
    claimed = client.post("/v1/runner/jobs/claim", headers=runner).json()
    config = RunnerConfig(
        server="http://testserver", token="crl_x", spool_dir=tmp_path / "spool", work_dir=tmp_path / "work"
    )
    server = ServerClient(config.server, "unused", retries=0)
    server.http = client  # the TestClient is an httpx.Client: the agent talks HTTP to the real app
    client.headers.update(runner)
    spool = Spool(config.spool_dir, server)
    directory = JobDirectory(tmp_path / "job").create()
    task = claimed["tasks"][0]["name"]
    stray = {"results": {task: {"acc,none": 0.5}, "hellaswag": {"acc,none": 0.5}}}  # a task of no suite here
    directory.write_results(json.dumps(stray), "null")
    spool.put(uuid.UUID(claimed["attempt_id"]), claimed["lease_token"], directory)
    spool.flush()
    assert list(config.spool_dir.glob("*.json")) == []
    shown = client.get(f"/v1/evaluations/{evaluation['id']}", headers=publish_headers).json()
    job = next(job for job in shown["jobs"] if job["attempts"])
    attempt = job["attempts"][0]
    assert (attempt["state"], attempt["failure_category"]) == ("failed", "harness_error")
    assert "not part of this suite's task tree" in attempt["failure_message"]
    assert shown["state"] == "failed"


def test_runner_results_that_miss_a_scored_metric_leave_the_evaluation_partial(
    client: TestClient, sha: str, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8, max_concurrent_jobs=2)
    body = {"model": REPO, "revision": sha, "suite": "smoke"}
    evaluation = client.post("/v1/evaluations", json=body, headers=publish_headers).json()
    states = []
    for _ in range(2):
        claimed = client.post("/v1/runner/jobs/claim", headers=runner).json()
        task = claimed["tasks"][0]["name"]
        # The generative task reports `acc` only: the suite scores `exact_match,strict-match`, which is missing.
        document = {"results": {task: {"acc,none": 0.5, "acc_stderr,none": 0.1}}}
        stored = client.put(
            f"/v1/runner/attempts/{claimed['attempt_id']}/result",
            json={"results": document},
            headers=lease(claimed, runner),
        )
        assert stored.status_code == 201, stored.text
        states.append(stored.json()["evaluation_state"])
    assert states == ["running", "partial"]
    shown = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    assert (shown["state"], shown["average"], shown["summary"]["missing"]) == ("partial", None, ["corral_smoke_gen"])
    assert shown["failure_message"] == "Scores are missing for corral_smoke_gen."
    assert shown["finished_at"] is not None
    late = client.post(f"/v1/evaluations/{evaluation['id']}/cancel", headers=publish_headers)
    assert late.status_code == 409
    assert late.json()["detail"] == f"Evaluation {evaluation['id']} has partial already; nothing to cancel."
    # A partial evaluation does not answer an identical request: the same settings run again.
    again = client.post("/v1/evaluations", json=body, headers=publish_headers)
    assert again.status_code == 201
    assert again.json()["id"] != evaluation["id"]
