"""Benchmark: what the agent adds to lm-eval, on the smoke suite and the tiny checkpoint, on this CPU.

    .venv/bin/python -m tests.bench.bench_runner [--limit 8] [--rounds 3]

Same run, same model, same tasks: (a) bare `lm_eval` CLI with `--log_samples`, one process per smoke
shard (what a cron job would do); (b) `corral-runner` against a local `corral serve`, which runs the same
shards as two jobs (claim, child process, heartbeats, log streaming, result upload). Reports the median
wall time of each and the ratio. A warm worker (one model load for several jobs) is not built: each job
is its own process.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evals.tiny import build_tiny_llama
from tests.test_runner_e2e import OFFLINE, ROOT, Server, prepare

TASKS_DIR = ROOT / "evals" / "tasks" / "smoke"


def bare(model: Path, limit: int, output: Path) -> float:
    started = time.perf_counter()
    for task in ("corral_smoke_mc", "corral_smoke_gen"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "lm_eval",
                "--model",
                "hf",
                "--model_args",
                f"pretrained={model},dtype=float32",
                "--device",
                "cpu",
                "--tasks",
                task,
                "--include_path",
                str(TASKS_DIR),
                "--limit",
                str(limit),
                "--batch_size",
                "1",
                "--log_samples",  # the agent logs samples too
                "--output_path",
                str(output),
            ],
            cwd=TASKS_DIR,
            env={**os.environ, **OFFLINE},
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - started


def agent(server: Server, admin: dict[str, str], config: Path, limit: int, seed: int) -> float:
    import httpx

    body = {
        "model": "corral-test/tiny",
        "revision": "1" * 40,
        "suite": "smoke",
        "precision": "fp32",
        "batch_size": 1,
        "limit": limit,
        "seed": seed,
    }
    started = time.perf_counter()
    httpx.post(f"{server.url}/v1/evaluations", json=body, headers=admin).raise_for_status()
    subprocess.run(
        [sys.executable, "-m", "evals", "run", "--config", str(config), "--until-idle"],
        cwd=ROOT,
        env={**os.environ, **OFFLINE},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        model = build_tiny_llama(work / "model")
        server = Server(work)
        server.env["CORRAL_HEARTBEAT_SECONDS"] = "15"
        server.start()
        try:
            admin, config = prepare(server, model, work)
            bare_times, agent_times = [], []
            for round_ in range(args.rounds):  # interleaved, so drift on this shared machine hits both
                bare_times.append(bare(model, args.limit, work / "bare-output"))
                agent_times.append(agent(server, admin, config, args.limit, seed=round_))
        finally:
            server.stop()
    b, a = statistics.median(bare_times), statistics.median(agent_times)
    print(
        json.dumps({"bare_lm_eval_s": [round(t, 2) for t in bare_times], "agent_s": [round(t, 2) for t in agent_times]})
    )
    print(
        f"smoke suite, 2 shards, limit {args.limit}: bare lm_eval {b:.2f} s, corral-runner {a:.2f} s "
        f"(median of {args.rounds}); agent overhead {a / b - 1:+.1%} (goal <= +5 %)"
    )


if __name__ == "__main__":
    main()
