"""A cluster runner registers node shapes and how many nodes one job may span; a model bigger than a node is
accepted and planned on several (vLLM tensor parallel within a node, pipeline parallel across nodes)."""

from typing import Any

from fastapi.testclient import TestClient

from tests.support.evaluations import HARNESS, load_shipped_suites

GIB = 2**30
H100_NODES = [{"kind": "nvidia-h100-80gb", "memory_bytes": 80 * GIB, "count": 8, "nodes": 16}]


def cluster_runner(client: TestClient, admin_headers: dict[str, str], name: str, max_nodes: int) -> dict[str, str]:
    body: dict[str, Any] = {
        "name": name,
        "accelerators": H100_NODES,
        "backends": ["vllm"],
        "lm_eval_version": HARNESS,
        "max_nodes_per_job": max_nodes,
        "max_concurrent_jobs": 8,
    }
    created = client.post("/v1/runners", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    assert created.json()["runner"]["max_nodes_per_job"] == max_nodes
    return {"Authorization": f"Bearer {created.json()['token']}"}


def test_llama_405b_in_bf16_is_accepted_and_planned_on_two_nodes_of_eight_80gb_gpus(
    client: TestClient, admin_headers: dict[str, str], settings: Any, catalog: None
) -> None:
    load_shipped_suites(settings)
    revision = {"sha": "b" * 40}
    repo = "meta-llama/Llama-3.1-405B"
    assert client.post(f"/v1/models/{repo}/revisions", json=revision, headers=admin_headers).status_code == 201
    request = {"model": repo, "revision": "b" * 40, "suite": "openllm-v2", "backend": "vllm", "precision": "bf16"}

    one_node = cluster_runner(client, admin_headers, "one-node-at-a-time", max_nodes=1)
    refused = client.post("/v1/evaluations", json=request, headers=admin_headers)
    assert refused.status_code == 409, refused.text  # 811.7 GB of weights: no single 8 x 80 GB node holds them
    assert "needs" in refused.json()["detail"]

    runner = cluster_runner(client, admin_headers, "two-nodes-per-job", max_nodes=2)
    accepted = client.post("/v1/evaluations", json=request, headers=admin_headers)
    assert accepted.status_code == 201, accepted.text
    requirements = accepted.json()["requirements"]
    assert requirements["capable_runners"] == ["two-nodes-per-job"]
    assert requirements["nodes"] == 2
    assert client.post("/v1/runner/jobs/claim", headers=one_node).status_code == 204
    claimed = client.post("/v1/runner/jobs/claim", headers=runner)
    assert claimed.status_code == 201, claimed.text
    assert claimed.json()["placement"] == {"tensor_parallel": 8, "pipeline_parallel": 2}

    estimate = client.get(f"/v1/models/{repo}/requirements", params={"precision": "bf16", "context_tokens": 4096})
    [h100] = [item for item in estimate.json()["accelerators"] if item["accelerator"] == "nvidia-h100-80gb"]
    assert h100["nodes_needed"] == 2
    assert h100["fits_on_one"] is False
    [h200] = [item for item in estimate.json()["accelerators"] if item["accelerator"] == "nvidia-h200-141gb"]
    assert h200["nodes_needed"] == 1


def test_a_claim_is_matched_against_what_the_cluster_has_free_now(
    client: TestClient, admin_headers: dict[str, str], publish_headers: dict[str, str], settings: Any
) -> None:
    from tests.support.evaluations import make_model

    load_shipped_suites(settings)
    sha = make_model(client, publish_headers, parameter_count=30 * 10**9)  # 60 GB of bf16 weights: one H100
    runner = cluster_runner(client, admin_headers, "busy-cluster", max_nodes=2)
    body = {"model": "corral-test/tiny-llama", "revision": sha, "suite": "smoke", "backend": "vllm"}
    assert client.post("/v1/evaluations", json=body, headers=publish_headers).status_code == 201
    small = {"free": [{"kind": "nvidia-l4", "memory_bytes": 24 * GIB, "count": 2, "nodes": 1}]}
    assert client.post("/v1/runner/jobs/claim", json=small, headers=runner).status_code == 204
    enough = {"free": [{"kind": "nvidia-h100-80gb", "memory_bytes": 80 * GIB, "count": 1, "nodes": 1}]}
    claimed = client.post("/v1/runner/jobs/claim", json=enough, headers=runner)
    assert claimed.status_code == 201, claimed.text
    assert claimed.json()["placement"] == {"tensor_parallel": 1, "pipeline_parallel": 1}
