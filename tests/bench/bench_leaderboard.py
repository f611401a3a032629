"""Benchmark: leaderboards over 5,000 model revisions with openllm-v2 scores, on PostgreSQL.

    .venv/bin/python -m tests.bench.bench_leaderboard [--revisions 5000] [--seconds 10] [--workers 2]

`corral serve --workers N` on a fresh database seeded straight into the tables (models, revisions and
succeeded evaluations with their summaries); 32 keep-alive clients (tests/bench/rawhttp.py). Reports the
50-row JSON page and `GET /healthz` of the same server in the same run (req/s, p50, p99, ratio), and the
wall time of the full CSV export.
"""

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
import uuid

import httpx
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from corral import migrate
from corral.config import Settings
from corral.db import in_unit_of_work
from corral.results.normalize import summarize
from corral.suites.schemas import SuiteDefinition
from corral.suites.service import load_suites
from corral.tables import Evaluation, Model, Revision, SuiteVersion
from corral.tables.base import utcnow
from corral.wire.enums import EvaluationState, ModelKind, ModelStatus
from tests.bench.bench_queue import free_port, summary
from tests.bench.rawhttp import Connection
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    make_settings,
    postgres_url,
    unique_name,
)
from tests.support.server import wait_until_ready

CLIENTS = 32


async def seed(settings: Settings, revisions: int) -> None:
    async def work(session: AsyncSession) -> None:
        await load_suites(session)
        row = (await session.execute(select(SuiteVersion).where(SuiteVersion.name == "openllm-v2"))).scalar_one()
        suite = SuiteDefinition.model_validate(row.definition)
        rng = random.Random(5000)
        now = utcnow()
        models, revs, evaluations = [], [], []
        for index in range(revisions):
            model_id, revision_id = uuid.uuid4(), uuid.uuid4()
            models.append(
                {
                    "id": model_id,
                    "repo_id": f"bench/model-{index:05d}",
                    "display_name": f"model {index}",
                    "kind": ModelKind.BASE,
                    "status": ModelStatus.RELEASED,
                    "modalities": [],
                    "tags": [],
                    "unverified": [],
                    "hub_disagreements": [],
                    "hub_consecutive_failures": 0,
                    "parameter_count": rng.randint(10**8, 10**11),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
            revs.append(
                {
                    "id": revision_id,
                    "model_id": model_id,
                    "sha": sha,
                    "ref": "main",
                    "source": "manual",
                    "snapshot": {},
                    "created_at": now,
                    "updated_at": now,
                }
            )
            level = rng.uniform(0.2, 0.9)
            scores = []
            for task in suite.tasks:
                names = list(task.subtask_lower_bounds) or [task.name]
                for name in names:
                    for metric in task.metrics:
                        scores.append((name, metric, task.filter, min(1.0, level * rng.uniform(0.8, 1.2)), 0.01, 100))
            summary_ = summarize(suite, scores)
            config = {
                "model": f"bench/model-{index:05d}",
                "revision": sha,
                "suite": "openllm-v2",
                "suite_version": row.version,
                "harness_version": "0.4.13",
                "backend": "hf",
                "precision": "bf16",
                "apply_chat_template": index % 2 == 0,
                "fewshot_as_multiturn": False,
                "num_fewshot": None,
                "limit": None,
                "seed": 1234,
                "gen_kwargs": None,
            }
            evaluations.append(
                {
                    "id": uuid.uuid4(),
                    "model_id": model_id,
                    "revision_id": revision_id,
                    "suite_version_id": row.id,
                    "config_hash": uuid.uuid4().hex,
                    "config": config,
                    "batch_size": "auto",
                    "priority": 50,
                    "labels": [],
                    "state": EvaluationState.SUCCEEDED,
                    "requirements": {},
                    "summary": summary_,
                    "average": summary_["average"],
                    "source": "import",
                    "created_at": now,
                    "updated_at": now,
                    "finished_at": now,
                }
            )
        await session.execute(insert(Model), models)
        await session.execute(insert(Revision), revs)
        await session.execute(insert(Evaluation), evaluations)

    await in_unit_of_work(settings, work)


async def load(port: int, path: str, seconds: float) -> tuple[list[float], float]:
    connections = [Connection("127.0.0.1", port) for _ in range(CLIENTS)]
    latencies: list[float] = []

    async def loop(connection: Connection, stop: float) -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            answer = await connection.request("GET", path)
            assert answer.status == 200, answer.body[:200]
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(loop(connection, started + seconds) for connection in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    return latencies, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--revisions", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    name = unique_name("bench_board")
    create_postgres_database(name)
    url = postgres_url(name)
    settings = make_settings(url)
    server: subprocess.Popen[bytes] | None = None
    try:
        migrate.upgrade(settings)
        asyncio.run(seed(settings, args.revisions))
        port = free_port()
        env = {
            **os.environ,
            "CORRAL_DATABASE_URL": url,
            "CORRAL_HUB_SYNC_INTERVAL_SECONDS": "0",
            "CORRAL_LOG_LEVEL": "WARNING",
            "CORRAL_HUB_ENDPOINT": "http://127.0.0.1:9",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "corral", "serve", "--port", str(port), "--workers", str(args.workers)], env=env
        )
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, server)
        print(
            f"server: corral serve --workers {args.workers} on PostgreSQL; {args.revisions} scored revisions; "
            f"{CLIENTS} clients; {os.cpu_count()} CPUs shared"
        )
        started = time.perf_counter()
        cold = httpx.get(f"{base}/v1/leaderboards/openllm-v2?limit=50", timeout=120)
        assert cold.status_code == 200
        print(f"first page (ranks all {args.revisions} revisions, then cached): {time.perf_counter() - started:.3f} s")
        hello, hello_seconds = asyncio.run(load(port, "/healthz", args.seconds))
        baseline = len(hello) / hello_seconds
        print(summary("hello world", hello, hello_seconds))
        page, page_seconds = asyncio.run(load(port, "/v1/leaderboards/openllm-v2?limit=50", args.seconds))
        print(summary("leaderboard 50 rows", page, page_seconds, baseline))
        exports: list[float] = []
        for _ in range(5):
            started = time.perf_counter()
            answer = httpx.get(f"{base}/v1/leaderboards/openllm-v2?format=csv", timeout=120)
            exports.append(time.perf_counter() - started)
            assert answer.status_code == 200
            assert answer.text.count("\n") == args.revisions + 1, answer.text[:300]
        ratio = len(page) / page_seconds / baseline
        print(f"full CSV export ({args.revisions} rows): best {min(exports):.3f} s, median {sorted(exports)[2]:.3f} s")
        print(
            f"goals: 50-row page >= 40 % of hello world -> {ratio:.0%} ({'met' if ratio >= 0.4 else 'NOT met'}); "
            f"full export < 1 s -> {sorted(exports)[2]:.2f} s ({'met' if sorted(exports)[2] < 1 else 'NOT met'})"
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        drop_postgres_database(name)


if __name__ == "__main__":
    main()
