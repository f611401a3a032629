"""Building blocks for evaluation and queue tests (and benchmarks): suites, runners, models and queues."""

import asyncio
import hashlib
import random
import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.config import Settings
from corral.db import in_unit_of_work
from corral.suites.service import load_suites
from corral.tables import Evaluation, EvaluationJob, Model, Revision, Runner, SuiteVersion
from corral.tables.base import utcnow
from corral.wire.enums import EvaluationState, JobState, ModelKind, ModelStatus, RunnerState

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
    lm_eval_version: str | None = HARNESS,
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


# The architecture of the small Llama-shaped test model (a few MB at bf16: fits any test runner).
TINY_LLAMA_SHAPE = {
    "hidden_size": 256,
    "num_layers": 4,
    "num_attention_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 512,
    "vocab_size": 1024,
    "context_length": 2048,
}


def make_model(
    client: TestClient, headers: dict[str, str], repo_id: str = "corral-test/tiny-llama", **shape: Any
) -> str:
    """A small Llama-shaped model with one recorded revision; returns the revision's sha."""
    body = {"repo_id": repo_id, "kind": "base", **TINY_LLAMA_SHAPE, **shape}
    created = client.post("/v1/models", json=body, headers=headers)
    assert created.status_code == 201, created.text
    sha = sha_of(repo_id)
    recorded = client.post(f"/v1/models/{repo_id}/revisions", json={"sha": sha, "ref": "main"}, headers=headers)
    assert recorded.status_code == 201, recorded.text
    return sha


def lm_eval_results(tasks: list[str], score: float = 0.5, metric: str = "acc,none") -> dict[str, Any]:
    """A results document shaped like lm-eval 0.4's, every task scored on `metric` ("metric,filter")."""
    stderr = metric.replace(",", "_stderr,", 1)
    return {
        "results": {task: {"alias": task, metric: score, stderr: 0.01} for task in tasks},
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


async def seed_queue(session: AsyncSession, jobs: int, runners: int) -> list[uuid.UUID]:
    """One evaluation with `jobs` jobs and `runners` capable runners, written straight to the tables."""
    await load_suites(session)
    model = Model(
        repo_id=f"corral-test/m-{uuid.uuid4().hex[:8]}",
        display_name="m",
        kind=ModelKind.BASE,
        status=ModelStatus.RELEASED,
    )
    session.add(model)
    await session.flush()
    revision = Revision(model_id=model.id, sha=uuid.uuid4().hex + "00000000", ref="main", source="manual")
    suite = (await session.execute(select(SuiteVersion).where(SuiteVersion.name == "smoke"))).scalar_one()
    session.add(revision)
    await session.flush()
    evaluation = Evaluation(
        model_id=model.id,
        revision_id=revision.id,
        suite_version_id=suite.id,
        config_hash=uuid.uuid4().hex,
        config={
            "model": model.repo_id,
            "revision": revision.sha,
            "suite": "smoke",
            "suite_version": suite.version,
            "harness_version": HARNESS,
            "backend": "hf",
            "precision": "bf16",
            "apply_chat_template": False,
            "fewshot_as_multiturn": False,
            "num_fewshot": None,
            "limit": None,
            "seed": 1234,
            "gen_kwargs": None,
        },
        batch_size="1",
        priority=50,
        state=EvaluationState.QUEUED,
    )
    session.add(evaluation)
    await session.flush()
    now = utcnow()
    rng = random.Random(jobs)
    for index in range(jobs):
        session.add(
            EvaluationJob(
                evaluation_id=evaluation.id,
                shard_index=index,
                tasks=["corral_smoke_mc"],
                state=JobState.QUEUED,
                priority=rng.randint(0, 100),
                backend="hf",
                harness_version=HARNESS,
                labels=[],
                required_memory_bytes=2**30,
                required_device_bytes=2**30,
                queued_at=now - timedelta(seconds=rng.randint(0, 3600)),
                available_at=now,
            )
        )
    runner_ids = []
    for index in range(runners):
        runner = Runner(
            name=f"claimer-{uuid.uuid4().hex[:8]}-{index}",
            state=RunnerState.ACTIVE,
            accelerators=[{"kind": "test-gpu", "memory_bytes": 80 * 2**30, "count": 1}],
            backends=["hf"],
            lm_eval_version=HARNESS,
            max_concurrent_jobs=jobs,
            labels=[],
        )
        session.add(runner)
        await session.flush()
        runner_ids.append(runner.id)
    return runner_ids


async def make_model_rows(session: AsyncSession) -> tuple[str, str]:
    """A small Llama-shaped model and one revision, written straight to the tables: (repo id, sha)."""
    repo_id = f"corral-test/tiny-{uuid.uuid4().hex[:8]}"
    model = Model(
        repo_id=repo_id,
        display_name="tiny",
        kind=ModelKind.BASE,
        status=ModelStatus.RELEASED,
        parameter_count=4_000_000,
        hidden_size=256,
        num_layers=4,
        num_attention_heads=4,
        num_kv_heads=2,
        vocab_size=1024,
        context_length=2048,
    )
    session.add(model)
    await session.flush()
    sha = sha_of(repo_id)
    session.add(Revision(model_id=model.id, sha=sha, ref="main", source="manual"))
    await session.flush()
    return repo_id, sha
