"""Score tables: lm-eval results in, normalized scores, leaderboards (JSON, CSV, Markdown), comparisons, imports."""

import asyncio
import csv
import io
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from corral.config import Settings
from corral.db import in_unit_of_work
from corral.results.normalize import summarize
from corral.suites.service import read_suite_files
from corral.tables import Evaluation, Score
from tests.support.evaluations import lease, load_shipped_suites, make_model, make_runner, sha_of

SUITES = {suite.name: suite for suite in read_suite_files()}
OPENLLM = SUITES["openllm-v2"]
BBH = next(task for task in OPENLLM.tasks if task.name == "leaderboard_bbh").subtask_lower_bounds
MUSR = next(task for task in OPENLLM.tasks if task.name == "leaderboard_musr").subtask_lower_bounds


def openllm_results(level: float, stderr: float = 0.01, **overrides: dict[str, float]) -> dict[str, Any]:
    """An lm-eval 0.4 results document for the leaderboard tasks, every score at `level`."""
    results: dict[str, dict[str, Any]] = {
        "leaderboard_ifeval": {
            "alias": " - leaderboard_ifeval",
            "prompt_level_strict_acc,none": level,
            "prompt_level_strict_acc_stderr,none": stderr,
            "inst_level_strict_acc,none": level,
            "inst_level_strict_acc_stderr,none": "N/A",
        },
        "leaderboard_math_hard": {"exact_match,none": level, "exact_match_stderr,none": stderr},
        "leaderboard_gpqa": {"acc_norm,none": level, "acc_norm_stderr,none": stderr},
        "leaderboard_mmlu_pro": {"acc,none": level, "acc_stderr,none": stderr},
    }
    for subtask in [*BBH, *MUSR]:
        results[subtask] = {"acc_norm,none": level, "acc_norm_stderr,none": stderr}
    for task, values in overrides.items():
        results[task].update(values)
    return {
        "results": results,
        "groups": {"leaderboard_bbh": {"acc_norm,none": level, "acc_norm_stderr,none": stderr}},
        "configs": {task: {"task": task} for task in results},
        "versions": dict.fromkeys(results, 1.0),
        "n-shot": dict.fromkeys(results, 0),
        "higher_is_better": {task: {"acc": True} for task in results},
        "n-samples": {task: {"original": 100, "effective": 100} for task in results},
        "config": {"model": "hf", "batch_size": "auto", "random_seed": 0, "limit": None},
        "lm_eval_version": "0.4.13",
    }


def test_normalization_follows_the_leaderboard_rules() -> None:
    document = openllm_results(0.6, stderr=0.03)
    rows = [
        (task, key.split(",")[0], key.split(",")[1], value, entry.get(key.replace(",", "_stderr,", 1)))
        for task, entry in document["results"].items()
        for key, value in entry.items()
        if "," in key and "_stderr" not in key
    ]
    rows = [(t, m, f, v, e if isinstance(e, float) else None, None) for t, m, f, v, e in rows]
    summary = summarize(OPENLLM, rows)
    tasks = summary["tasks"]
    assert tasks["leaderboard_gpqa"]["normalized"] == pytest.approx((0.6 - 0.25) / 0.75 * 100)
    assert tasks["leaderboard_gpqa"]["stderr"] == pytest.approx(0.03 * 100 / 0.75)
    assert tasks["leaderboard_mmlu_pro"]["normalized"] == pytest.approx((0.6 - 0.1) / 0.9 * 100)
    assert tasks["leaderboard_ifeval"]["normalized"] == pytest.approx(60.0)
    # Instruction-level accuracy has "N/A": estimated binomially over the prompt count its sibling's stderr
    # implies (n = p(1-p)/se^2 + 1 = 268); the two parts share their prompts, so their stderrs are averaged.
    inst = math.sqrt(0.6 * 0.4 / 267)
    assert tasks["leaderboard_ifeval"]["stderr"] == pytest.approx((0.03 + inst) / 2 * 100)
    bbh = sum(max(0.0, (0.6 - b) / (1 - b)) * 100 for b in BBH.values()) / len(BBH)
    assert tasks["leaderboard_bbh"]["normalized"] == pytest.approx(bbh)
    assert tasks["leaderboard_bbh"]["subtasks"] == 24
    assert summary["complete"] is True
    assert summary["average"] == pytest.approx(sum(t["normalized"] for t in tasks.values()) / 6)

    # Below the random baseline clamps to 0; a missing task leaves no average.
    low = [(t, m, f, 0.05 if t == "leaderboard_gpqa" else v, e, n) for t, m, f, v, e, n in rows]
    assert summarize(OPENLLM, low)["tasks"]["leaderboard_gpqa"]["normalized"] == 0.0
    partial = summarize(OPENLLM, [row for row in rows if row[0] != "leaderboard_math_hard"])
    assert (partial["complete"], partial["average"]) == (False, None)


@pytest.fixture
def scored(client: TestClient, settings: Settings, catalog: None, publish_headers: dict[str, str]) -> dict[str, str]:
    """Three models with recorded revisions; returns repo id -> sha."""
    load_shipped_suites(settings)
    shas = {}
    for repo, layers in (("acme/small", 2), ("acme/medium", 8), ("acme/large", 32)):
        shas[repo] = make_model(client, publish_headers, repo, num_layers=layers, family="llama-3.1")
    return shas


def import_results(client: TestClient, headers: dict[str, str], repo: str, sha: str, document: dict, **extra: Any):  # type: ignore[no-untyped-def]
    body = {"model": repo, "revision": sha, "suite": "openllm-v2", "results": document, **extra}
    return client.post("/v1/results/import", json=body, headers=headers)


def test_leaderboard_from_imported_results(
    client: TestClient, scored: dict[str, str], publish_headers: dict[str, str]
) -> None:
    for level, repo in ((0.4, "acme/small"), (0.6, "acme/medium"), (0.8, "acme/large")):
        answer = import_results(client, publish_headers, repo, scored[repo], openllm_results(level))
        assert answer.status_code == 201, answer.text
    # The same document again is recognized; a chat-template run is its own row; an fp16 rerun too.
    again = import_results(client, publish_headers, "acme/small", scored["acme/small"], openllm_results(0.4))
    assert again.status_code == 200
    chat = openllm_results(0.7)
    assert (
        import_results(
            client, publish_headers, "acme/small", scored["acme/small"], chat, apply_chat_template=True
        ).status_code
        == 201
    )

    board = client.get("/v1/leaderboards/openllm-v2").json()
    assert board["tasks"][0] == "leaderboard_ifeval"
    assert len(board["tasks"]) == 6
    ranking = [(row["model"], row["chat_template"]) for row in board["items"]]
    assert ranking == [("acme/large", False), ("acme/small", True), ("acme/medium", False), ("acme/small", False)]
    assert [row["rank"] for row in board["items"]] == [1, 2, 3, 4]
    top = board["items"][0]
    assert top["tasks"]["leaderboard_ifeval"]["normalized"] == pytest.approx(80.0)
    assert top["tasks"]["leaderboard_ifeval"]["raw"] == pytest.approx(0.8)
    assert top["family"] == "llama-3.1"
    assert top["license"] == "llama3.1"

    by_task = client.get("/v1/leaderboards/openllm-v2", params={"sort": "leaderboard_gpqa"}).json()["items"]
    assert by_task[0]["model"] == "acme/small"
    assert by_task[0]["chat_template"] is False
    filtered = client.get("/v1/leaderboards/openllm-v2", params={"chat_template": "false", "min_parameters": 3 * 10**6})
    assert [row["model"] for row in filtered.json()["items"]] == ["acme/large", "acme/medium"]

    first = client.get("/v1/leaderboards/openllm-v2", params={"limit": 3}).json()
    rest = client.get("/v1/leaderboards/openllm-v2", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [row["rank"] for row in first["items"] + rest["items"]] == [1, 2, 3, 4]
    assert rest["next_cursor"] is None

    exported = client.get("/v1/leaderboards/openllm-v2", params={"format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert [row["model"] for row in table] == [model for model, _ in ranking]
    assert float(table[0]["leaderboard_ifeval"]) == pytest.approx(80.0)
    markdown = client.get("/v1/leaderboards/openllm-v2", params={"format": "markdown"}).text
    assert markdown.startswith("| # | model |")
    assert markdown.count("\n") == 6

    assert client.get("/v1/leaderboards/openllm-v2", params={"sort": "nonsense"}).status_code == 422
    assert client.get("/v1/leaderboards/openllm-v2", params={"cursor": "garbage"}).status_code == 400
    assert client.get("/v1/leaderboards/no-such-suite").status_code == 404

    history = client.get("/v1/models/acme/small/scores", params={"suite": "openllm-v2"}).json()
    assert len(history) == 2
    assert {entry["chat_template"] for entry in history} == {True, False}


def test_compare_two_runs(client: TestClient, scored: dict[str, str], publish_headers: dict[str, str]) -> None:
    repo, sha = "acme/medium", scored["acme/medium"]
    base = import_results(client, publish_headers, repo, sha, openllm_results(0.6, stderr=0.01)).json()
    shifted = openllm_results(
        0.6, stderr=0.01, leaderboard_gpqa={"acc_norm,none": 0.5}, leaderboard_mmlu_pro={"acc,none": 0.605}
    )
    candidate = import_results(client, publish_headers, repo, sha, shifted, precision="fp16").json()

    compared = client.get(
        "/v1/compare", params={"base": base["evaluation_id"], "candidate": candidate["evaluation_id"]}
    )
    assert compared.status_code == 200, compared.text
    deltas = {item["task"]: item for item in compared.json()["tasks"]}
    gpqa = deltas["leaderboard_gpqa"]
    assert gpqa["delta"] == pytest.approx((0.5 - 0.6) / 0.75 * 100)
    assert gpqa["stderr"] == pytest.approx((2 * (0.01 * 100 / 0.75) ** 2) ** 0.5)
    assert gpqa["significant"] is True
    assert deltas["leaderboard_mmlu_pro"]["significant"] is False  # half a point, within the noise
    # IFEval's instruction-level stderr is estimated, so its delta (zero here) and the average's are judged too.
    assert deltas["leaderboard_ifeval"]["significant"] is False
    assert compared.json()["average"]["stderr"] is not None
    assert compared.json()["config_differences"] == {"precision": {"base": "bf16", "candidate": "fp16"}}


def test_bad_results_are_refused_and_write_nothing(
    client: TestClient, settings: Settings, scored: dict[str, str], publish_headers: dict[str, str]
) -> None:
    repo, sha = "acme/small", scored["acme/small"]
    stray = openllm_results(0.5)
    stray["results"]["hellaswag"] = {"acc,none": 0.5}
    out_of_range = openllm_results(0.5, leaderboard_gpqa={"acc_norm,none": 1.5})
    text_value = openllm_results(0.5, leaderboard_gpqa={"acc_norm,none": "high"})
    cases = [
        ({"hello": "world"}, "results.results"),
        (stray, "results.results.hellaswag"),
        (out_of_range, "results.results.leaderboard_gpqa.acc_norm,none"),
        (text_value, "results.results.leaderboard_gpqa.acc_norm,none"),
    ]
    for document, path in cases:
        answer = import_results(client, publish_headers, repo, sha, document)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == path
    assert import_results(client, publish_headers, repo, "0" * 40, openllm_results(0.5)).status_code == 422

    async def counts(session):  # type: ignore[no-untyped-def]
        return (
            await session.scalar(select(func.count()).select_from(Evaluation)),
            await session.scalar(select(func.count()).select_from(Score)),
        )

    assert asyncio.run(in_unit_of_work(settings, counts)) == (0, 0)

    smoke = import_results(client, publish_headers, repo, sha, openllm_results(0.5)).json()
    other = client.post(
        "/v1/results/import",
        json={
            "model": repo,
            "revision": sha,
            "suite": "smoke",
            "results": {"results": {"corral_smoke_mc": {"acc,none": 0.5}}},
        },
        headers=publish_headers,
    ).json()
    unrelated = client.get("/v1/compare", params={"base": smoke["evaluation_id"], "candidate": other["evaluation_id"]})
    assert unrelated.status_code == 422
    assert "different suites" in unrelated.json()["detail"]


def test_results_from_runners_become_scores(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    load_shipped_suites(settings)
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8, max_concurrent_jobs=2)
    body = {"model": "corral-test/tiny-llama", "revision": sha, "suite": "smoke"}
    evaluation = client.post("/v1/evaluations", json=body, headers=publish_headers).json()
    documents = {
        "corral_smoke_mc": {"results": {"corral_smoke_mc": {"acc,none": 0.75, "acc_stderr,none": 0.25}}},
        "corral_smoke_gen": {"results": {"corral_smoke_gen": {"exact_match,strict-match": 0.5}}},
    }
    for _ in range(2):
        claimed = client.post("/v1/runner/jobs/claim", headers=runner).json()
        task = claimed["tasks"][0]["name"]
        stored = client.put(
            f"/v1/runner/attempts/{claimed['attempt_id']}/result",
            json={"results": documents[task]},
            headers=lease(claimed, runner),
        )
        assert stored.status_code == 201, stored.text
    shown = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    assert shown["state"] == "succeeded"
    mc = (0.75 - 0.25) / 0.75 * 100
    assert shown["summary"]["tasks"]["corral_smoke_mc"]["normalized"] == pytest.approx(mc)
    assert shown["summary"]["tasks"]["corral_smoke_mc"]["stderr"] == pytest.approx(0.25 * 100 / 0.75)
    assert shown["average"] == pytest.approx((mc + 50.0) / 2)
    board = client.get("/v1/leaderboards/smoke", params={"format": "markdown"}).text
    assert "corral-test/tiny-llama" in board


def test_hub_exports_use_huggingface_hub_formats(
    client: TestClient, scored: dict[str, str], publish_headers: dict[str, str]
) -> None:
    import yaml

    imported = import_results(client, publish_headers, "acme/large", scored["acme/large"], openllm_results(0.6)).json()
    url = f"/v1/evaluations/{imported['evaluation_id']}/hub-export"
    source = f"http://testserver/v1/evaluations/{imported['evaluation_id']}"
    # `.eval_results`: only results on a Hub benchmark's own task (MMLU-Pro's `mmlu_pro`), as raw accuracy in %.
    [entry] = yaml.safe_load(client.get(url).text)
    assert entry["dataset"] == {"id": "TIGER-Lab/MMLU-Pro", "task_id": "mmlu_pro"}
    assert entry["value"] == 60.0
    assert entry["source"] == {"url": source, "name": "Corral"}
    assert "lm-eval 0.4.13" in entry["notes"]
    assert f"normalized (Open LLM Leaderboard) {(0.6 - 0.1) / 0.9 * 100:.2f}" in entry["notes"]
    # model-index: every benchmark, normalized, labelled as the Open LLM Leaderboard labels its own entries.
    card = yaml.safe_load(client.get(url, params={"format": "model-index"}).text)
    [index] = card["model-index"]
    assert index["name"] == "acme/large"
    results = {result["dataset"]["name"]: result for result in index["results"]}
    assert set(results) == {
        "IFEval (0-Shot)",
        "BBH (3-Shot)",
        "MATH Lvl 5 (4-Shot)",
        "GPQA (0-shot)",
        "MuSR (0-shot)",
        "MMLU-PRO (5-shot)",
    }
    ifeval = results["IFEval (0-Shot)"]
    assert ifeval["metrics"][0]["type"] == "inst_level_strict_acc and prompt_level_strict_acc"
    assert ifeval["metrics"][0]["value"] == 60.0
    assert ifeval["source"] == {"url": source, "name": "Corral"}
    assert results["GPQA (0-shot)"]["dataset"]["type"] == "Idavidrein/gpqa"
    assert results["GPQA (0-shot)"]["metrics"][0]["value"] == round((0.6 - 0.25) / 0.75 * 100, 2)
    assert client.get("/v1/evaluations/00000000-0000-0000-0000-000000000000/hub-export").status_code == 404


def test_web_pages_render_from_the_database(
    client: TestClient, scored: dict[str, str], publish_headers: dict[str, str]
) -> None:
    for level, repo in ((0.4, "acme/small"), (0.8, "acme/large")):
        import_results(client, publish_headers, repo, scored[repo], openllm_results(level))
    page = client.get("/leaderboards/openllm-v2")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert html.index("acme/large") < html.index("acme/small")  # best average first
    assert "<svg" in html
    assert "<circle" in html
    assert "https://" not in html  # nothing from another origin
    ascending = client.get("/leaderboards/openllm-v2", params={"sort": "average"}).text
    assert ascending.index("acme/small") < ascending.index("acme/large")
    filtered = client.get("/leaderboards/openllm-v2", params={"max_parameters": "3000000"}).text
    assert "acme/small" in filtered
    assert "acme/large" not in filtered

    model = client.get("/models/acme/large")
    assert model.status_code == 200
    assert "<dt>Licence</dt><dd>Llama 3.1 Community License" in model.text
    assert 'class="whisker"' in model.text  # error bars from the stderr
    assert scored["acme/large"][:12] in model.text
    assert client.get("/models/acme/nothing").status_code == 404
    assert client.get("/static/corral.css").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/leaderboards/openllm-v2"


def test_scores_go_to_the_hub_as_a_pull_request(
    database_url: str, catalog: None, publish_headers: dict[str, str]
) -> None:
    import yaml

    from corral.main import create_app
    from tests.support.checkpoints import TinyLlama, checkpoint_files
    from tests.support.fake_hub import FakeHub, llama_repo
    from tests.test_hub import hub_settings

    with FakeHub().running() as hub:
        repo = hub.add(llama_repo("acme/tiny-instruct", checkpoint_files(TinyLlama())))
        settings = hub_settings(database_url, hub.url)
        load_shipped_suites(settings)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            client.headers.update(publish_headers)
            assert client.post("/v1/models", json={"repo_id": "acme/tiny-instruct"}).status_code == 201
            smoke = {
                "results": {
                    "corral_smoke_mc": {"acc,none": 0.75},
                    "corral_smoke_gen": {"exact_match,strict-match": 0.5},
                }
            }
            body = {"model": "acme/tiny-instruct", "revision": repo.commits[0].sha, "suite": "smoke", "results": smoke}
            nothing = client.post("/v1/results/import", json=body).json()
            # The smoke suite has no Hub benchmark task: nothing to publish, said plainly (no empty file).
            empty = client.post(f"/v1/evaluations/{nothing['evaluation_id']}/hub-export/pull-request")
            assert empty.status_code == 409
            assert "nothing to publish" in empty.json()["detail"]
            body = {**body, "suite": "openllm-v2", "results": openllm_results(0.6)}
            imported = client.post("/v1/results/import", json=body).json()
            opened = client.post(f"/v1/evaluations/{imported['evaluation_id']}/hub-export/pull-request")
            assert opened.status_code == 200, opened.text
            assert opened.json()["pull_request_url"].endswith("/acme/tiny-instruct/discussions/1")
        [pull_request] = repo.pull_requests
        assert pull_request["create_pr"] is True
        assert "Corral evaluation" in str(pull_request["description"])
        files = pull_request["files"]
        assert isinstance(files, dict)
        [entry] = yaml.safe_load(files[".eval_results/corral-openllm-v2.yaml"])
        assert entry["dataset"] == {"id": "TIGER-Lab/MMLU-Pro", "task_id": "mmlu_pro"}
        assert entry["value"] == 60.0
        assert entry["source"]["url"].endswith(f"/v1/evaluations/{imported['evaluation_id']}")

    # Without a Hub token the server says so instead of trying.
    with TestClient(create_app(hub_settings(database_url, "http://127.0.0.1:9", hub_token=None))) as client:
        refused = client.post(
            f"/v1/evaluations/{imported['evaluation_id']}/hub-export/pull-request", headers=publish_headers
        )
        assert refused.status_code == 409
        assert "CORRAL_HUB_TOKEN" in refused.json()["detail"]


def test_every_leaderboard_filter_selects_exactly_its_rows(
    client: TestClient, settings: Settings, catalog: None, publish_headers: dict[str, str]
) -> None:
    load_shipped_suites(settings)
    models = {
        "acme/base-31": {"family": "llama-3.1", "kind": "base", "tags": ["gqa"]},
        "acme/chat-32": {"family": "llama-3.2", "kind": "instruct"},
        "acme/own-licence": {"family": "llama-3.1", "kind": "instruct", "license": "llama3.2"},
        "acme/huge": {"family": "llama-3.1", "kind": "base", "parameter_count": 70_000_000_000},
    }
    for repo, fields in models.items():
        sha = make_model(client, publish_headers, repo, **fields)
        assert import_results(client, publish_headers, repo, sha, openllm_results(0.5)).status_code == 201
    sha = sha_of("acme/base-31")
    fp16 = import_results(client, publish_headers, "acme/base-31", sha, openllm_results(0.6), precision="fp16")
    assert fp16.status_code == 201, fp16.text

    def rows(**filters: Any) -> list[tuple[str, str]]:
        answer = client.get("/v1/leaderboards/openllm-v2", params=filters)
        assert answer.status_code == 200, answer.text
        return sorted((row["model"], row["precision"]) for row in answer.json()["items"])

    everything = rows()
    assert len(everything) == 5
    assert rows(family="llama-3.2") == [("acme/chat-32", "bf16")]
    assert rows(license="llama3.2") == [("acme/chat-32", "bf16"), ("acme/own-licence", "bf16")]
    assert rows(license="llama3.1") == [("acme/base-31", "bf16"), ("acme/base-31", "fp16"), ("acme/huge", "bf16")]
    assert rows(kind="instruct") == [("acme/chat-32", "bf16"), ("acme/own-licence", "bf16")]
    assert rows(tag="gqa") == [("acme/base-31", "bf16"), ("acme/base-31", "fp16")]
    assert rows(precision="fp16") == [("acme/base-31", "fp16")]
    assert rows(min_parameters=10**9) == [("acme/huge", "bf16")]
    assert ("acme/huge", "bf16") not in rows(max_parameters=10**9)
    # 70 B parameters at bf16 are 140 GB, 168 GB (156.5 GiB) with the 20 % overhead: not on one H100 (80 GiB),
    # on two (160 GiB).
    assert ("acme/huge", "bf16") not in rows(fits_on="nvidia-l4")
    assert len(rows(fits_on="nvidia-l4")) == 4
    assert ("acme/huge", "bf16") not in rows(fits_on="nvidia-h100-80gb")
    assert ("acme/huge", "bf16") in rows(fits_on="nvidia-h100-80gb", fits_count=2)
    unknown = client.get("/v1/leaderboards/openllm-v2", params={"fits_on": "nvidia-nothing"})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "fits_on"


def test_a_sample_run_is_marked_and_never_ranked_exported_or_shown_as_the_models_score(
    client: TestClient, scored: dict[str, str], publish_headers: dict[str, str]
) -> None:
    """A run with a `limit` read part of each task: it finishes last here and must not take the row of its
    revision, and a revision with nothing but a sample has no row."""
    repo, sha = "acme/small", scored["acme/small"]
    full = import_results(client, publish_headers, repo, sha, openllm_results(0.4))
    assert full.status_code == 201, full.text
    sampled = openllm_results(0.9)
    sampled["config"]["limit"] = 3
    sample = import_results(client, publish_headers, repo, sha, sampled)
    assert sample.status_code == 201, sample.text
    fraction = openllm_results(0.8)
    fraction["config"]["limit"] = 0.5
    assert import_results(client, publish_headers, "acme/medium", scored["acme/medium"], fraction).status_code == 201
    full_id, sample_id = full.json()["evaluation_id"], sample.json()["evaluation_id"]

    board = client.get("/v1/leaderboards/openllm-v2").json()["items"]
    assert [(row["model"], row["evaluation_id"]) for row in board] == [(repo, full_id)]
    assert board[0]["tasks"]["leaderboard_ifeval"]["raw"] == pytest.approx(0.4)
    csv_rows = list(csv.DictReader(io.StringIO(client.get("/v1/leaderboards/openllm-v2?format=csv").text)))
    assert [row["model"] for row in csv_rows] == [repo]

    read = client.get(f"/v1/evaluations/{sample_id}").json()
    assert (read["sample"], read["config"]["limit"]) == (True, 3)
    assert client.get(f"/v1/evaluations/{full_id}").json()["sample"] is False
    listed = client.get("/v1/evaluations", params={"model": repo}).json()["items"]
    assert {item["id"]: item["sample"] for item in listed} == {full_id: False, sample_id: True}
    history = client.get(f"/v1/models/{repo}/scores").json()
    assert {entry["evaluation_id"]: entry["sample"] for entry in history} == {full_id: False, sample_id: True}

    exported = client.get(f"/v1/evaluations/{sample_id}/hub-export")
    assert exported.status_code == 409
    assert "limit=3" in exported.json()["detail"]
    assert client.get(f"/v1/evaluations/{full_id}/hub-export").status_code == 200

    assert 'id="sample"' in client.get(f"/evaluations/{sample_id}").text
    assert 'id="sample"' not in client.get(f"/evaluations/{full_id}").text
    model_page = client.get(f"/models/{repo}").text
    assert "sample (limit), not ranked" in model_page
    latest = model_page.split("Latest:", 1)[1].split("</p>", 1)[0]  # the chart: the complete run, not the sample
    full_average = client.get(f"/v1/evaluations/{full_id}").json()["average"]
    assert f"average {full_average:.2f}" in latest, latest
    assert f"average {read['average']:.2f}" not in latest
