"""Building blocks for evaluation and queue tests: suites, runners and models through the real API."""

import asyncio
import hashlib
from typing import Any

from fastapi.testclient import TestClient

from app.config import Settings
from app.db import in_unit_of_work
from app.suites.service import load_suites

GIB = 2**30
HARNESS = "0.4.13"


def load_shipped_suites(settings: Settings) -> None:
    asyncio.run(in_unit_of_work(settings, load_suites))


def sha_of(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def make_runner(
    client: TestClient,
    admin_headers: dict[str, str],
    name: str,
    *,
    memory_gib: int = 80,
    count: int = 1,
    backends: tuple[str, ...] = ("hf",),
    labels: tuple[str, ...] = (),
    lm_eval_version: str = HARNESS,
    max_concurrent_jobs: int = 1,
) -> tuple[str, dict[str, str]]:
    """A registered runner: (its id, headers with its own token)."""
    body = {
        "name": name,
        "labels": list(labels),
        "backends": list(backends),
        "lm_eval_version": lm_eval_version,
        "accelerators": [{"kind": "test-gpu", "memory_bytes": memory_gib * GIB, "count": count}],
        "max_concurrent_jobs": max_concurrent_jobs,
    }
    created = client.post("/v1/runners", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    return created.json()["runner"]["id"], {"Authorization": f"Bearer {created.json()['token']}"}


def make_model(
    client: TestClient, headers: dict[str, str], repo_id: str = "corral-test/tiny-llama", **shape: Any
) -> str:
    """A small Llama-shaped model with one recorded revision; returns the revision's sha."""
    body = {
        "repo_id": repo_id,
        "kind": "base",
        "hidden_size": 256,
        "num_layers": 4,
        "num_attention_heads": 4,
        "num_kv_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 1024,
        "context_length": 2048,
        **shape,
    }
    created = client.post("/v1/models", json=body, headers=headers)
    assert created.status_code == 201, created.text
    sha = sha_of(repo_id)
    recorded = client.post(f"/v1/models/{repo_id}/revisions", json={"sha": sha, "ref": "main"}, headers=headers)
    assert recorded.status_code == 201, recorded.text
    return sha


def lm_eval_results(tasks: list[str], score: float = 0.5) -> dict[str, Any]:
    """A results document shaped like lm-eval 0.4's."""
    return {
        "results": {task: {"alias": task, "acc,none": score, "acc_stderr,none": 0.01} for task in tasks},
        "configs": {task: {"task": task, "num_fewshot": 0} for task in tasks},
        "versions": dict.fromkeys(tasks, 1.0),
        "n-shot": dict.fromkeys(tasks, 0),
        "higher_is_better": {task: {"acc": True} for task in tasks},
        "n-samples": {task: {"original": 4, "effective": 4} for task in tasks},
        "config": {"model": "hf", "model_args": "pretrained=x", "batch_size": 1},
        "lm_eval_version": HARNESS,
    }


def lease(claimed: dict[str, Any], runner_headers: dict[str, str]) -> dict[str, str]:
    return {**runner_headers, "Corral-Lease-Token": claimed["lease_token"]}
