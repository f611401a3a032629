"""Benchmark: registry reads and pages, authentication, the middleware, and start-up, as ratios in one run.

    .venv/bin/python -m tests.bench.bench_registry [--seconds 5] [--models 300] [--runners 50] [--database both]

For each database (the embedded SQLite, then PostgreSQL) a fresh `corral serve` (one worker) with the shipped
Llama catalog and --models more models (each with a revision) and --runners runners; 32 keep-alive clients
(tests/bench/rawhttp.py) on each path in turn for --seconds, beside Corral's own `/healthz` and a bare FastAPI
hello-world (uvicorn with the same loop and parser) measured in the same run. Then start-up: `corral --help` and
a server process until its first answer, each beside `python -c pass`.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from corral import migrate
from corral.catalog.loader import load_catalog
from corral.config import Settings
from corral.db import in_unit_of_work
from corral.registry.models.schemas import ModelCreate
from corral.registry.models.service import ModelService
from corral.registry.revisions.schemas import RevisionCreate
from corral.registry.revisions.service import RevisionService
from corral.runners.schemas import RunnerCreate
from corral.runners.service import RunnerService
from corral.suites.service import load_suites
from corral.tokens.service import TokenService
from corral.wire.enums import Scope
from tests.bench.bench_queue import free_port, summary
from tests.bench.rawhttp import Connection
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    make_settings,
    postgres_url,
    unique_name,
)

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 32
HELLO_APP = """
from fastapi import FastAPI
app = FastAPI()
@app.get("/healthz")
async def healthz():
    return {"status": "ok"}
"""
PATHS = [
    ("GET /v1/accelerators (token)", "/v1/accelerators", True),
    ("GET /v1/models?limit=50", "/v1/models?limit=50", False),
    ("GET /v1/models/{repo}", "/v1/models/meta-llama/Llama-3.1-8B", False),
    ("GET /v1/licenses/{slug}", "/v1/licenses/llama3.1", False),
    ("page /models/{repo}", "/models/meta-llama/Llama-3.1-8B", False),
    ("page /leaderboards/{suite}", "/leaderboards/openllm-v2", False),
]


async def seed(settings: Settings, models: int, runners: int) -> str:
    """The catalog, more models with a revision each, runners, and a read token (returned)."""

    async def work(session: AsyncSession) -> str:
        await load_suites(session)
        await load_catalog(session)
        for index in range(models):
            repo = f"bench/model-{index:04d}"
            await ModelService(session).create(
                ModelCreate.model_validate(
                    {
                        "repo_id": repo,
                        "kind": "base",
                        "family": "llama-3.1",
                        "hidden_size": 4096,
                        "num_layers": 32,
                        "num_attention_heads": 32,
                        "num_kv_heads": 8,
                        "intermediate_size": 14336,
                        "vocab_size": 128256,
                        "context_length": 131072,
                    }
                )
            )
            await RevisionService(session).create(repo, RevisionCreate(sha=uuid.uuid4().hex + "00000000"))
        for index in range(runners):
            body = {
                "name": f"bench-runner-{index:03d}",
                "accelerators": [{"kind": "nvidia-h100-80gb", "memory_bytes": 80 * 2**30, "count": 8}],
                "lm_eval_version": "0.4.13",
            }
            await RunnerService(session).create(RunnerCreate.model_validate(body))
        return (await TokenService(session).issue(name="bench reader", scope=Scope.READ)).token

    return await in_unit_of_work(settings, work)


async def load(
    port: int, path: str, seconds: float, headers: dict[str, str] | None = None
) -> tuple[list[float], float]:
    connections = [Connection("127.0.0.1", port) for _ in range(CLIENTS)]
    latencies: list[float] = []

    async def loop(connection: Connection, stop: float) -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            answer = await connection.request("GET", path, headers=headers)
            assert answer.status == 200, (path, answer.status, answer.body[:200])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(loop(connection, started + seconds) for connection in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    return latencies, elapsed


def serve(command: list[str], env: dict[str, str], port: int, cwd: Path) -> "subprocess.Popen[bytes]":
    """Started, and answering its first request (Corral: /readyz; the bare app: /healthz)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = "/healthz" if "uvicorn" in command else "/readyz"
    deadline = time.monotonic() + 120
    while True:  # polled often: the start-up figures are read from here
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{command} did not start"
        assert process.poll() is None, f"{command} exited"
        time.sleep(0.01)


def run_database(label: str, url: str, args: argparse.Namespace, hello_port: int) -> None:
    settings = make_settings(url)
    migrate.upgrade(settings)
    token = asyncio.run(seed(settings, args.models, args.runners))
    port = free_port()
    env = {
        **os.environ,
        "CORRAL_DATABASE_URL": url,
        "CORRAL_HUB_SYNC_INTERVAL_SECONDS": "0",
        "CORRAL_LOG_LEVEL": "WARNING",
        "CORRAL_HUB_ENDPOINT": "http://127.0.0.1:9",
    }
    server = serve([sys.executable, "-m", "corral", "serve", "--port", str(port)], env, port, ROOT)
    try:
        print(f"\n{label}: corral serve (1 worker), catalog + {args.models} models, {args.runners} runners")
        latencies, seconds = asyncio.run(load(hello_port, "/healthz", args.seconds))
        bare = len(latencies) / seconds
        print(summary("bare FastAPI /healthz", latencies, seconds))
        latencies, seconds = asyncio.run(load(port, "/healthz", args.seconds))
        healthz = len(latencies) / seconds
        print(summary("Corral /healthz", latencies, seconds) + f"  ({healthz / bare:.2f}x bare FastAPI)")
        for name, path, authenticated in PATHS:
            headers = {"Authorization": f"Bearer {token}"} if authenticated else None
            latencies, seconds = asyncio.run(load(port, path, args.seconds, headers))
            print(summary(name, latencies, seconds, healthz))
    finally:
        server.terminate()
        server.wait(timeout=30)


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def startup(rounds: int) -> None:
    corral = str(Path(sys.executable).with_name("corral"))
    baseline = min(timed([sys.executable, "-c", "pass"], ROOT) for _ in range(rounds))
    help_seconds = min(timed([corral, "--help"], ROOT) for _ in range(rounds))
    ready: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(rounds + 1):
            port = free_port()
            env = {**os.environ, "CORRAL_PORT": str(port), "CORRAL_HUB_SYNC_INTERVAL_SECONDS": "0"}
            env["CORRAL_LOG_LEVEL"] = "WARNING"
            started = time.perf_counter()
            process = serve([corral, "serve"], env, port, Path(directory))
            ready.append(time.perf_counter() - started)
            process.terminate()
            process.wait(timeout=30)
    first, warm = ready[0], min(ready[1:])  # the first start creates the database and loads the catalog
    print(f"\nstart-up (best of {rounds}): python -c pass {baseline:.2f} s")
    print(f"  corral --help          {help_seconds:.2f} s ({help_seconds / baseline:.1f}x python -c pass)")
    print(
        f"  corral serve ready     {warm:.2f} s ({warm / baseline:.1f}x), first start on a new database {first:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--runners", type=int, default=50)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--startup-rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs shared by the servers, the database and the load generator; load {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as directory:
        hello_file = Path(directory) / "hello.py"
        hello_file.write_text(HELLO_APP)
        hello_port = free_port()
        hello = serve(
            [sys.executable, "-m", "uvicorn", "hello:app", "--port", str(hello_port), "--log-level", "warning"],
            {**os.environ, "PYTHONPATH": directory},
            hello_port,
            Path(directory),
        )
        try:
            if args.database in ("sqlite", "both"):
                run_database("SQLite", f"sqlite+aiosqlite:///{directory}/bench.db", args, hello_port)
            if args.database in ("postgresql", "both"):
                name = unique_name("bench_registry")
                create_postgres_database(name)
                try:
                    run_database("PostgreSQL", postgres_url(name), args, hello_port)
                finally:
                    drop_postgres_database(name)
        finally:
            hello.terminate()
            hello.wait(timeout=30)
    startup(args.startup_rounds)


if __name__ == "__main__":
    main()
