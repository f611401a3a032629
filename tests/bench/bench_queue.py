"""Benchmark: the runner protocol over HTTP, against `corral serve` on PostgreSQL.

    .venv/bin/python -m tests.bench.bench_queue [--runners 32] [--seconds 10] [--workers 2] [--jobs 1500]

Simulated runners (one asyncio task and one keep-alive connection each, through tests/bench/rawhttp.py, as
httpx would be the bottleneck) drive a real server process. Phases, in order:
hello-world (`GET /healthz`, the baseline of the same server in the same run), claims (`wait=0`, on a queue
of --jobs seeded jobs), heartbeats (every claimed attempt, round-robin per runner), and enqueue -> claim
latency: runners long-poll an empty queue while evaluations are requested one at a time over HTTP; the
latency is from sending the request to a runner holding the claimed job.
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from corral import migrate
from corral.config import Settings
from corral.db import in_unit_of_work
from corral.tokens.service import TokenService
from corral.wire.enums import Scope
from tests.bench.rawhttp import Answer, Connection
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    make_settings,
    postgres_url,
    unique_name,
)
from tests.support.evaluations import make_model_rows, seed_queue
from tests.support.server import wait_until_ready

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed(settings: Settings, jobs: int, runners: int) -> tuple[list[str], str, str, str]:
    """The queue, one runner token per runner, a publish token, and a model revision to request."""

    async def work(session: AsyncSession) -> tuple[list[str], str, str, str]:
        runner_ids = await seed_queue(session, jobs, runners)
        service = TokenService(session)
        runner_tokens = [
            (await service.issue(name=f"bench {i}", scope=Scope.RUNNER, runner_id=runner_id)).token
            for i, runner_id in enumerate(runner_ids)
        ]
        publish = (await service.issue(name="bench ci", scope=Scope.PUBLISH)).token
        repo_id, sha = await make_model_rows(session)
        return runner_tokens, publish, repo_id, sha

    return await in_unit_of_work(settings, work)


def summary(name: str, latencies: list[float], seconds: float, baseline: float | None = None) -> str:
    ordered = sorted(latencies)
    rate = len(ordered) / seconds if seconds else 0.0
    p50 = ordered[len(ordered) // 2] * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    ratio = f"{rate / baseline:5.2f}x hello" if baseline else "  baseline  "
    return f"{name:<22} {len(ordered):>7} req {rate:>9.0f} req/s  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  {ratio}"


async def timed(connection: Connection, method: str, path: str, **kwargs: Any) -> tuple[Answer, float]:
    started = time.perf_counter()
    answer = await connection.request(method, path, **kwargs)
    return answer, time.perf_counter() - started


async def run(args: argparse.Namespace, port: int, tokens: list[str], publish: str, repo_id: str, sha: str) -> None:
    runners = [{"Authorization": f"Bearer {token}"} for token in tokens]
    connections = [Connection("127.0.0.1", port) for _ in runners]

    # 1. Hello world.
    async def hello_loop(connection: Connection, stop: float, out: list[float]) -> None:
        while time.perf_counter() < stop:
            answer, took = await timed(connection, "GET", "/healthz")
            assert answer.status == 200
            out.append(took)

    hello: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(hello_loop(connection, started + args.seconds, hello) for connection in connections))
    hello_seconds = time.perf_counter() - started
    baseline = len(hello) / hello_seconds
    print(summary("hello world", hello, hello_seconds))

    # 2. Claims until the seeded queue is empty.
    held: list[list[dict[str, Any]]] = [[] for _ in runners]
    claims: list[float] = []

    async def claim_loop(index: int) -> None:
        while True:
            answer, took = await timed(connections[index], "POST", "/v1/runner/jobs/claim", headers=runners[index])
            claims.append(took)
            if answer.status == 204:
                return
            assert answer.status == 201, answer.body
            held[index].append(answer.json())

    started = time.perf_counter()
    await asyncio.gather(*(claim_loop(index) for index in range(len(runners))))
    claim_seconds = time.perf_counter() - started
    claimed = sum(len(h) for h in held)
    assert claimed == args.jobs, f"claimed {claimed} of {args.jobs}"
    print(summary("claims (wait=0)", claims, claim_seconds, baseline))

    # 3. Heartbeats over every held attempt.
    beats: list[float] = []

    async def beat_loop(index: int, stop: float) -> None:
        position = 0
        while time.perf_counter() < stop:
            job = held[index][position % len(held[index])]
            position += 1
            answer, took = await timed(
                connections[index],
                "POST",
                f"/v1/runner/attempts/{job['attempt_id']}/heartbeat",
                json_body={"progress": {"overall": 0.5}},
                headers={**runners[index], "Corral-Lease-Token": job["lease_token"]},
            )
            assert answer.status == 200, answer.body
            beats.append(took)

    started = time.perf_counter()
    await asyncio.gather(*(beat_loop(i, started + args.seconds) for i in range(len(runners)) if held[i]))
    beat_seconds = time.perf_counter() - started
    print(summary("heartbeats", beats, beat_seconds, baseline))
    print(summary("claims + heartbeats", claims + beats, claim_seconds + beat_seconds, baseline))

    # 4. Enqueue -> claim with long-polling runners (woken through LISTEN/NOTIFY across workers).
    arrivals: asyncio.Queue[float] = asyncio.Queue()

    async def long_poll(index: int) -> None:
        while True:
            answer = await connections[index].request("POST", "/v1/runner/jobs/claim?wait=25", headers=runners[index])
            if answer.status == 201:
                arrivals.put_nowait(time.perf_counter())

    pollers = [asyncio.create_task(long_poll(index)) for index in range(len(runners))]
    await asyncio.sleep(1.0)  # every runner is waiting now
    enqueuer = Connection("127.0.0.1", port)
    latencies: list[float] = []
    for round_ in range(args.enqueues):
        body = {"model": repo_id, "revision": sha, "suite": "smoke", "seed": round_, "force": True}
        sent = time.perf_counter()
        answer = await enqueuer.request(
            "POST", "/v1/evaluations", json_body=body, headers={"Authorization": f"Bearer {publish}"}
        )
        assert answer.status == 201, answer.body
        first = await asyncio.wait_for(arrivals.get(), timeout=30)
        await asyncio.wait_for(arrivals.get(), timeout=30)  # smoke has two shards: both are claimed
        latencies.append(first - sent)
        await asyncio.sleep(0.05)
    for poller in pollers:
        poller.cancel()
    await asyncio.gather(*pollers, return_exceptions=True)
    ordered = sorted(latencies)
    runner_rate = len(claims + beats) / (claim_seconds + beat_seconds)
    runner_p99 = sorted(claims + beats)[int(len(claims + beats) * 0.99)] * 1000
    print(
        f"goals: >= 1000 runner requests/s at p99 < 100 ms -> {runner_rate:.0f}/s at p99 {runner_p99:.0f} ms "
        f"({'met' if runner_rate >= 1000 and runner_p99 < 100 else 'NOT met'}); enqueue -> claim p50 < 50 ms -> "
        f"{statistics.median(ordered) * 1000:.0f} ms ({'met' if statistics.median(ordered) < 0.05 else 'NOT met'})"
    )
    print(
        f"{'enqueue -> claim':<22} {len(ordered):>7} evaluations: first job held by a runner after "
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms "
        "(from sending the request; long-poll woken by NOTIFY)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runners", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--enqueues", type=int, default=40)
    args = parser.parse_args()

    name = unique_name("bench_queue")
    create_postgres_database(name)
    url = postgres_url(name)
    settings = make_settings(url)
    server: subprocess.Popen[bytes] | None = None
    try:
        migrate.upgrade(settings)
        tokens, publish, repo_id, sha = asyncio.run(seed(settings, args.jobs, args.runners))
        port = free_port()
        env = {
            **os.environ,
            "CORRAL_DATABASE_URL": url,
            "CORRAL_HUB_SYNC_INTERVAL_SECONDS": "0",
            "CORRAL_LOG_LEVEL": "WARNING",
            "CORRAL_LEASE_SECONDS": "3600",
            "CORRAL_HUB_ENDPOINT": "http://127.0.0.1:9",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "corral", "serve", "--port", str(port), "--workers", str(args.workers)],
            cwd=ROOT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, server)
        print(
            f"server: corral serve --workers {args.workers} on PostgreSQL; {args.runners} simulated runners; "
            f"{os.cpu_count()} CPUs shared by server, database and load generator"
        )
        asyncio.run(run(args, port, tokens, publish, repo_id, sha))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        drop_postgres_database(name)


if __name__ == "__main__":
    main()
