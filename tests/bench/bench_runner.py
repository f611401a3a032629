"""Benchmark: what the agent adds to lm-eval, and what its warm worker saves, on the smoke suite and the tiny
checkpoint, on this CPU.

    .venv/bin/python -m tests.bench.bench_runner [--limit 8] [--rounds 3] [--evaluations 2]

Same run, same model, same jobs: `--evaluations` requests of the smoke suite (different seeds), two shards
each, so 2 x N jobs of one model. (a) bare `lm_eval` CLI with `--log_samples`, one process per job (what a
cron job would do); (b) `corral-runner run --cold` against a local `corral serve`: one lm-eval process per
job plus the agent's work (claim, heartbeats, log streaming, result upload) — its overhead against (a);
(c) `corral-runner run --warm`: one worker process that keeps the model (and lm-eval's task index) loaded
for all the jobs. Rounds are interleaved so that drift on this shared machine hits all three. Reports the
median wall time of each and the ratios.
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

from corral_runner.tiny import build_tiny_llama
from tests.test_runner_e2e import OFFLINE, ROOT, Server, prepare

TASKS_DIR = ROOT / "evals" / "tasks" / "smoke"


def bare(model: Path, limit: int, output: Path, seeds: list[int]) -> float:
    started = time.perf_counter()
    for seed in seeds:
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
                    "--seed",
                    str(seed),
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


def agent(server: Server, admin: dict[str, str], config: Path, limit: int, seeds: list[int], mode: str) -> float:
    import httpx

    started = time.perf_counter()
    for seed in seeds:
        body = {
            "model": "corral-test/tiny",
            "revision": "1" * 40,
            "suite": "smoke",
            "precision": "fp32",
            "batch_size": 1,
            "limit": limit,
            "seed": seed,
        }
        httpx.post(f"{server.url}/v1/evaluations", json=body, headers=admin).raise_for_status()
    subprocess.run(
        [sys.executable, "-m", "corral_runner", "run", "--config", str(config), "--until-idle", mode],
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
    parser.add_argument("--evaluations", type=int, default=2, help="smoke-suite requests per round (2 jobs each)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"bare": [], "cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        model = build_tiny_llama(work / "model")
        server = Server(work)
        server.env["CORRAL_HEARTBEAT_SECONDS"] = "15"
        server.start()
        try:
            admin, config = prepare(server, model, work)
            for round_ in range(args.rounds):  # interleaved, so drift on this shared machine hits all three
                seeds = [round_ * 100 + index for index in range(args.evaluations)]
                times["bare"].append(bare(model, args.limit, work / "bare-output", seeds))
                times["cold"].append(agent(server, admin, config, args.limit, [s + 10 for s in seeds], "--cold"))
                times["warm"].append(agent(server, admin, config, args.limit, [s + 20 for s in seeds], "--warm"))
        finally:
            server.stop()
    print(json.dumps({name: [round(t, 2) for t in values] for name, values in times.items()}))
    bare_s, cold_s, warm_s = (statistics.median(times[name]) for name in ("bare", "cold", "warm"))
    jobs = 2 * args.evaluations
    print(
        f"{jobs} jobs of one model (smoke suite x {args.evaluations}, limit {args.limit}), median of {args.rounds}: "
        f"bare lm_eval {bare_s:.2f} s, corral-runner --cold {cold_s:.2f} s, --warm {warm_s:.2f} s"
    )
    paired = statistics.median(cold / bare for cold, bare in zip(times["cold"], times["bare"], strict=True))
    print(
        f"agent overhead, one process per job like bare lm_eval: {cold_s / bare_s - 1:+.1%} (ratio of medians), "
        f"{paired - 1:+.1%} (median of per-round ratios); goal <= +5 %"
    )
    speedup = bare_s / warm_s
    print(f"warm worker against one lm_eval process per job: {warm_s / bare_s:.2f}x the time ({speedup:.2f}x as fast)")


if __name__ == "__main__":
    main()
