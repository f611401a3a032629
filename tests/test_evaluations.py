"""Evaluation requests: revision and suite resolution, config-hash dedupe, idempotency keys, requirements and
matching to registered runners, cancel, and the queue view."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from corral.config import Settings
from corral.db import in_unit_of_work
from corral.main import create_app
from corral.tables import Evaluation, EvaluationJob
from tests.support.evaluations import GIB, load_shipped_suites, make_model, make_runner, sha_of


@pytest.fixture
def suites(settings: Settings) -> None:
    load_shipped_suites(settings)


def count_rows(settings: Settings) -> tuple[int, int]:
    async def work(session):  # type: ignore[no-untyped-def]
        evaluations = await session.scalar(select(func.count()).select_from(Evaluation))
        jobs = await session.scalar(select(func.count()).select_from(EvaluationJob))
        return evaluations, jobs

    return asyncio.run(in_unit_of_work(settings, work))


@pytest.mark.usefixtures("suites")
def test_request_dedupe_force_and_idempotency(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    sha = make_model(client, publish_headers)
    make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    body = {"model": "corral-test/tiny-llama", "revision": sha, "suite": "smoke", "precision": "fp32", "limit": 4}

    first = client.post("/v1/evaluations", json=body, headers=publish_headers)
    assert first.status_code == 201, first.text
    evaluation = first.json()
    assert first.headers["location"] == f"/v1/evaluations/{evaluation['id']}"
    assert (evaluation["state"], evaluation["revision"], evaluation["suite"]) == ("queued", sha, "smoke")
    assert [job["tasks"] for job in evaluation["jobs"]] == [["corral_smoke_mc"], ["corral_smoke_gen"]]
    assert evaluation["config"]["harness_version"] == "0.4.13"
    assert evaluation["requirements"]["capable_runners"] == ["cpu-1"]
    assert 0 < evaluation["requirements"]["device_bytes"] <= evaluation["requirements"]["memory_bytes"] < GIB
    assert evaluation["jobs"][0]["waiting_for"].startswith("no capable runner is online")

    # Identical (batch size and priority do not change scores): the same evaluation, 200.
    same = client.post("/v1/evaluations", json={**body, "batch_size": 8, "priority": 90}, headers=publish_headers)
    assert (same.status_code, same.json()["id"]) == (200, evaluation["id"])
    # Anything that changes scores is another evaluation.
    other = client.post("/v1/evaluations", json={**body, "seed": 7}, headers=publish_headers)
    assert other.status_code == 201
    assert other.json()["config_hash"] != evaluation["config_hash"]
    forced = client.post("/v1/evaluations", json={**body, "force": True}, headers=publish_headers)
    assert forced.status_code == 201
    assert forced.json()["id"] != evaluation["id"]
    assert forced.json()["config_hash"] == evaluation["config_hash"]

    # Idempotency-Key: a retried forced request does not run twice; another body under the key is refused.
    keyed = {**publish_headers, "Idempotency-Key": "ci-run-42"}
    once = client.post("/v1/evaluations", json={**body, "force": True}, headers=keyed)
    again = client.post("/v1/evaluations", json={**body, "force": True}, headers=keyed)
    assert (once.status_code, again.status_code, again.json()["id"]) == (201, 200, once.json()["id"])
    before = count_rows(settings)
    misuse = client.post("/v1/evaluations", json={**body, "seed": 99}, headers=keyed)
    assert misuse.status_code == 422
    assert misuse.json()["errors"][0]["field"] == "Idempotency-Key"
    assert count_rows(settings) == before == (4, 8)

    listed = client.get("/v1/evaluations", params={"model": "corral-test/tiny-llama", "limit": 10}).json()
    assert len(listed["items"]) == 4
    assert client.get(f"/v1/evaluations/{evaluation['id']}").json()["id"] == evaluation["id"]


@pytest.mark.usefixtures("suites")
def test_bad_requests_name_the_field_and_write_nothing(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    sha = make_model(client, publish_headers)
    make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    good = {"model": "corral-test/tiny-llama", "revision": sha, "suite": "smoke"}
    cases = [
        ({"suite": "no-such-suite"}, "suite"),
        ({"suite_version": "0123456789abcdef"}, "suite_version"),
        ({"revision": sha_of("never recorded")}, "revision"),
        ({"model": "nobody/nothing"}, "model"),
        ({"revision": None, "alias": "champion"}, "alias"),
    ]
    for change, field in cases:
        answer = client.post("/v1/evaluations", json={**good, **change}, headers=publish_headers)
        assert answer.status_code == 422, (change, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["errors"][0]["field"] == field, answer.json()
    for change in (
        {"ref": "main"},  # two of revision / ref / alias
        {"fewshot_as_multiturn": True},  # needs the chat template
        {"precision": "fp8"},  # not with the hf backend
        {"precision": "int8", "backend": "vllm"},  # vLLM quantizes in flight to fp8 or 4 bits only
        {"batch_size": "lots"},
        {"limit": 0},
        {"unknown": 1},
    ):
        answer = client.post("/v1/evaluations", json={**good, **change}, headers=publish_headers)
        assert answer.status_code == 422, (change, answer.text)
    assert client.post("/v1/evaluations", json=good).status_code == 401
    assert count_rows(settings) == (0, 0)


@pytest.mark.usefixtures("suites", "catalog")
def test_matching_405b_never_reaches_a_single_80gb_gpu(
    client: TestClient, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    repo = "meta-llama/Llama-3.1-405B"
    sha = sha_of(repo)
    assert client.post(f"/v1/models/{repo}/revisions", json={"sha": sha}, headers=publish_headers).status_code == 201
    small_id, small = make_runner(client, admin_headers, "one-h100", memory_gib=80)
    body = {"model": repo, "revision": sha, "suite": "openllm-v2", "precision": "bf16"}

    refused = client.post("/v1/evaluations", json=body, headers=publish_headers)
    assert refused.status_code == 409, refused.text
    assert "No registered runner could ever hold" in refused.json()["detail"]
    assert refused.json()["requirements"]["memory_bytes"] > 800 * 10**9

    queued = client.post("/v1/evaluations", json={**body, "queue_without_runner": True}, headers=publish_headers)
    assert queued.status_code == 201
    assert queued.json()["requirements"]["capable_runners"] == []
    assert queued.json()["jobs"][0]["waiting_for"].startswith("no registered runner can hold it")
    assert client.post("/v1/runner/jobs/claim", headers=small).status_code == 204

    _, big = make_runner(client, admin_headers, "sixteen-h100", memory_gib=80, count=16)
    claimed = client.post("/v1/runner/jobs/claim", headers=big)
    assert claimed.status_code == 201
    assert claimed.json()["model"] == repo
    assert claimed.json()["required_memory_bytes"] > 80 * GIB
    # The small runner still gets none of the other shards.
    assert client.post("/v1/runner/jobs/claim", headers=small).status_code == 204
    shown = client.get(f"/v1/evaluations/{queued.json()['id']}").json()
    assert shown["requirements"]["capable_runners"] == ["sixteen-h100"]
    assert shown["state"] == "running"
    assert small_id not in {attempt["runner"] for job in shown["jobs"] for attempt in job["attempts"]}


@pytest.mark.usefixtures("suites")
def test_backend_labels_and_harness_version_are_matched(
    client: TestClient, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    sha = make_model(client, publish_headers)
    _, plain = make_runner(client, admin_headers, "plain")
    _, old = make_runner(client, admin_headers, "old-harness", lm_eval_version="0.4.8", labels=("dc-a",))
    _, right = make_runner(client, admin_headers, "right", backends=("hf", "vllm"), labels=("dc-a",))
    body = {
        "model": "corral-test/tiny-llama",
        "revision": sha,
        "suite": "smoke",
        "backend": "vllm",
        "labels": ["dc-a"],
    }
    created = client.post("/v1/evaluations", json=body, headers=publish_headers)
    assert created.status_code == 201
    assert created.json()["requirements"]["capable_runners"] == ["right"]
    assert client.post("/v1/runner/jobs/claim", headers=plain).status_code == 204
    assert client.post("/v1/runner/jobs/claim", headers=old).status_code == 204
    assert client.post("/v1/runner/jobs/claim", headers=right).status_code == 201


@pytest.mark.usefixtures("suites")
def test_cancel_and_queue_view(
    client: TestClient, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    sha = make_model(client, publish_headers)
    runner_id, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    base = {"model": "corral-test/tiny-llama", "revision": sha, "suite": "smoke"}
    low = client.post("/v1/evaluations", json={**base, "priority": 10}, headers=publish_headers).json()
    high = client.post("/v1/evaluations", json={**base, "seed": 1, "priority": 90}, headers=publish_headers).json()

    queue = client.get("/v1/queue").json()
    assert queue["depth"] == 4
    assert [entry["evaluation_id"] for entry in queue["entries"]] == [high["id"]] * 2 + [low["id"]] * 2
    assert [entry["position"] for entry in queue["entries"]] == [1, 2, 3, 4]
    assert all(entry["waiting_for"].startswith("no capable runner is online") for entry in queue["entries"])

    client.patch(f"/v1/runners/{runner_id}", json={"state": "paused"}, headers=admin_headers)
    assert client.post("/v1/runner/jobs/claim", headers=runner).status_code == 204  # paused: nothing new
    assert client.get("/v1/queue").json()["entries"][0]["waiting_for"].startswith("capable runners are paused")
    client.patch(f"/v1/runners/{runner_id}", json={"state": "active"}, headers=admin_headers)
    claimed = client.post("/v1/runner/jobs/claim", headers=runner).json()
    assert claimed["evaluation_id"] == high["id"]  # highest priority first
    assert client.get("/v1/queue").json()["entries"][0]["waiting_for"].startswith("capable runners are busy")

    canceled = client.post(f"/v1/evaluations/{low['id']}/cancel", headers=publish_headers)
    assert canceled.status_code == 200
    assert canceled.json()["state"] == "canceled"
    assert {job["state"] for job in canceled.json()["jobs"]} == {"canceled"}
    assert client.get("/v1/queue").json()["depth"] == 1
    assert client.post(f"/v1/evaluations/{low['id']}/cancel", headers=publish_headers).status_code == 200
    assert (
        client.post("/v1/evaluations/00000000-0000-0000-0000-000000000000/cancel", headers=publish_headers).status_code
        == 404
    )

    metrics = client.get("/metrics").text
    assert 'corral_queue_jobs{state="queued"} 1.0' in metrics
    assert 'corral_queue_jobs{state="running"} 1.0' in metrics
    assert 'corral_runners{online="true",state="active"} 1.0' in metrics
    assert "corral_queue_claim_wait_seconds_count 1.0" in metrics


def test_a_hub_ref_is_resolved_at_request_time(
    database_url: str, catalog: None, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    from tests.support.checkpoints import TinyLlama, checkpoint_files
    from tests.support.fake_hub import FakeHub, llama_repo
    from tests.test_hub import hub_settings

    with FakeHub().running() as hub:
        repo = hub.add(llama_repo("acme/tiny-instruct", checkpoint_files(TinyLlama())))
        settings = hub_settings(database_url, hub.url)
        load_shipped_suites(settings)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            assert (
                client.post("/v1/models", json={"repo_id": "acme/tiny-instruct"}, headers=publish_headers).status_code
                == 201
            )
            body = {"model": "acme/tiny-instruct", "ref": "main", "suite": "smoke"}

            # No runner yet: 409, but the lease is given back and the recorded revision stays.
            refused = client.post("/v1/evaluations", json=body, headers=publish_headers)
            assert refused.status_code == 409, refused.text
            make_runner(client, admin_headers, "cpu-1", memory_gib=8)
            created = client.post("/v1/evaluations", json=body, headers=publish_headers)
            assert created.status_code == 201, created.text
            assert created.json()["revision"] == repo.commits[0].sha

            unknown = client.post("/v1/evaluations", json={**body, "ref": "no-such-branch"}, headers=publish_headers)
            assert unknown.status_code == 422
            assert unknown.json()["errors"][0]["field"] == "ref"
            model = client.get("/v1/models/acme/tiny-instruct").json()
            assert model["hub"]["status"] == "ok"  # a wrong ref says nothing about the model's own sync
            assert client.post("/v1/models/acme/tiny-instruct/sync", headers=publish_headers).status_code == 200

            # The Hub failing while a ref is resolved is a failed sync like any other: recorded on the model,
            # with its lease given back (the next sync is not a 409).
            hub.fail_next("acme/tiny-instruct", 500, times=50)
            failing = client.post("/v1/evaluations", json=body, headers=publish_headers)
            assert failing.status_code == 502, failing.text
            model = client.get("/v1/models/acme/tiny-instruct").json()
            assert model["hub"]["status"] == "error", model["hub"]
            assert model["hub"]["last_error"], model["hub"]
            hub.failures.clear()
            assert client.post("/v1/models/acme/tiny-instruct/sync", headers=publish_headers).status_code == 200
            assert client.get("/v1/models/acme/tiny-instruct").json()["hub"]["status"] == "ok"


@pytest.mark.usefixtures("suites")
def test_values_the_database_cannot_hold_are_refused(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    sha = make_model(client, publish_headers)
    make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    good = {"model": "corral-test/tiny-llama", "revision": sha, "suite": "smoke"}
    for change in ({"batch_size": 10**20}, {"batch_size": 0}):
        answer = client.post("/v1/evaluations", json={**good, **change}, headers=publish_headers)
        assert answer.status_code == 422, (change, answer.text)
    raw = '{"model": "corral-test/tiny-llama", "revision": "SHA", "suite": "smoke", "gen_kwargs": {"t": NaN}}'
    raw = raw.replace("SHA", sha)
    nan = client.post("/v1/evaluations", content=raw, headers={**publish_headers, "Content-Type": "application/json"})
    assert nan.status_code in (400, 422), nan.text
    assert count_rows(settings) == (0, 0)


@pytest.mark.usefixtures("suites")
def test_concurrent_twins_make_one_evaluation(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    sha = make_model(client, publish_headers)
    make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    body = {"model": "corral-test/tiny-llama", "revision": sha, "suite": "smoke"}
    keyed = {**publish_headers, "Idempotency-Key": "retry-me"}

    def post(headers: dict[str, str], payload: dict[str, object]) -> tuple[int, str]:
        answer = client.post("/v1/evaluations", json=payload, headers=headers)
        return answer.status_code, answer.json().get("id", answer.text)

    with ThreadPoolExecutor(max_workers=8) as pool:
        twins = list(pool.map(lambda _: post(publish_headers, body), range(8)))
        retries = list(pool.map(lambda _: post(keyed, {**body, "force": True}), range(8)))
    for answers in (twins, retries):
        assert sorted(status for status, _ in answers) == [200] * 7 + [201], answers
        assert len({ident for _, ident in answers}) == 1
    assert count_rows(settings) == (2, 4)


@pytest.mark.usefixtures("catalog")
def test_model_requirements_name_the_runners_that_fit(client: TestClient, admin_headers: dict[str, str]) -> None:
    make_runner(client, admin_headers, "one-h100", memory_gib=80)
    make_runner(client, admin_headers, "eight-h100", memory_gib=80, count=8)
    make_runner(client, admin_headers, "many-small", memory_gib=1, count=64)  # enough in total, no device big enough
    url = "/v1/models/meta-llama/Llama-3.1-{}/requirements"
    small = client.get(url.format("8B-Instruct"), params={"context_tokens": 8192}).json()
    assert small["runners_that_fit"] == ["eight-h100", "one-h100"]
    big = client.get(url.format("405B"), params={"context_tokens": 8192}).json()
    assert big["runners_that_fit"] == []  # 405B in bf16 needs ~0.9 TB
    quantized = client.get(url.format("405B"), params={"context_tokens": 8192, "precision": "int4"}).json()
    assert quantized["runners_that_fit"] == ["eight-h100"]
    adhoc = client.post(
        "/v1/requirements",
        json={
            "hidden_size": 256,
            "num_layers": 2,
            "num_attention_heads": 4,
            "num_kv_heads": 4,
            "vocab_size": 100,
            "intermediate_size": 512,
        },
    )
    assert adhoc.status_code == 200, adhoc.text
    assert adhoc.json()["runners_that_fit"] is None  # an ad-hoc architecture is not matched to runners
