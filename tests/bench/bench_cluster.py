"""Benchmark: what a cluster runner costs, against a real `corral serve` on its embedded database.

    .venv/bin/python -m tests.bench.bench_cluster [--rounds 2] [--evaluations 2] [--limit 8]
                                                  [--jobs 200] [--seconds 30] [--skip-slurm]

(a) The smoke suite on the tiny checkpoint through a real Slurm (one node, two fake GPUs, started here as the
tests start it; needs root and Debian's Slurm) and through the `local` executor, rounds interleaved so drift
on this shared machine hits both: wall time per job, the agent's overhead per job on Slurm as a ratio to
local, and the latency from the claim to the batch script starting on the node (a setup line stamps it).
Both agents run one job at a time with `--cold` semantics (one lm-eval process per job), `poll_seconds` 0.5.

(b) One agent holding `--jobs` attempts at once on a stand-in Slurm that answers at once
(tests/bench/standin_slurm.py: the real executor's commands, parsed as from Slurm), run in this process so
every heartbeat is timed: the gaps between one attempt's heartbeats against the server's interval, how long
one tick takes, and the CPU the agent (with its sbatch/squeue children) and the server use.
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from corral_runner.client import ServerClient
from corral_runner.config import RunnerConfig
from corral_runner.loop import RunnerLoop
from corral_runner.protocol import HeartbeatReply, Progress
from corral_runner.tiny import build_tiny_llama
from tests.bench import standin_slurm
from tests.support import slurm
from tests.support.cluster import AGENT, REPO, TEST_GPU, ClusterRunner, wait_for
from tests.support.server import OFFLINE, ROOT, Server

POLL_SECONDS = 0.5


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(runner: ClusterRunner, *, limit: int, seed: int) -> str:
    return str(runner.evaluate(limit=limit, seed=seed)["id"])


def finished(runner: ClusterRunner, ids: list[str]) -> list[dict[str, Any]]:
    shown = [runner.evaluation(evaluation_id) for evaluation_id in ids]
    for evaluation in shown:
        assert evaluation["state"] == "succeeded", evaluation
    return shown


def run_until_idle(runner: ClusterRunner, config: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [*AGENT, "run", "--config", str(config), "--until-idle", "--cold"],
        cwd=ROOT,
        env=runner.env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def local_config(runner: ClusterRunner, server: Server, model: Path, root: Path) -> Path:
    """A second runner on the same server, executor local, one CPU device: the baseline."""
    machine = {"name": "local", "accelerators": [{"kind": "cpu", "memory_bytes": 8 * 2**30, "count": 1}]}
    created = httpx.post(f"{server.url}/v1/runners", json=machine, headers=runner.admin).json()
    config = root / "local.json"
    config.write_text(
        json.dumps(
            {
                "server": server.url,
                "token": created["token"],
                "spool_dir": str(root / "local-spool"),
                "work_dir": str(root / "local-work"),
                "local_models": {REPO: str(model)},
                "device": "cpu",
                "claim_wait_seconds": 1,
                "warm_worker": False,
            }
        )
    )
    subprocess.run(
        [*AGENT, "register", "--server", server.url, "--token", created["token"], "--config", str(config)],
        cwd=ROOT,
        env=runner.env,
        check=True,
        capture_output=True,
    )
    return config


def smoke_on_slurm_and_local(args: argparse.Namespace, work: Path, model: Path) -> None:
    reason = slurm.missing()
    if reason is not None:
        raise SystemExit(f"{slurm.SKIP_REASON}: {reason} (pass --skip-slurm to run part (b) alone)")
    marks = work / "marks"
    marks.mkdir()
    with slurm.running_cluster(work / "slurm", nodes=1, gpus=2) as cluster:
        server = Server(work / "server", CORRAL_HEARTBEAT_SECONDS="5")
        server.workdir.mkdir()
        server.start()
        try:
            settings = {
                "kind": "slurm",
                "work_dir": str(work / "shared"),
                "time_limit_minutes": 10,
                "poll_seconds": POLL_SECONDS,
                "settle_seconds": 1,
                "gres_kinds": {"gpu:fake": TEST_GPU},
                "setup": [f"date +%s.%N > {marks}/$SLURM_JOB_NAME"],
            }
            on_slurm = ClusterRunner(server, work, settings, cluster.env)
            on_slurm.register(model, max_concurrent_jobs=1)
            local = local_config(on_slurm, server, model, work)
            times: dict[str, list[float]] = {"local": [], "slurm": []}
            latencies: list[float] = []
            for round_ in range(args.rounds):
                for executor, config in (("local", local), ("slurm", on_slurm.config)):
                    seeds = [round_ * 1000 + index + (500 if executor == "slurm" else 0) for index in range(2)]
                    ids = [request(on_slurm, limit=args.limit, seed=seed) for seed in seeds[: args.evaluations]]
                    times[executor].append(run_until_idle(on_slurm, config) / (2 * len(ids)))
                    shown = finished(on_slurm, ids)
                    if executor == "slurm":
                        for evaluation in shown:
                            for job in evaluation["jobs"]:
                                attempt = job["attempts"][-1]
                                claimed = datetime.fromisoformat(attempt["claimed_at"]).timestamp()
                                started = float((marks / f"corral-{attempt['id']}").read_text())
                                latencies.append(started - claimed)
        finally:
            server.stop()
    print(json.dumps({"seconds_per_job": {name: [round(t, 2) for t in values] for name, values in times.items()}}))
    local_s, slurm_s = statistics.median(times["local"]), statistics.median(times["slurm"])
    paired = statistics.median(s / loc for s, loc in zip(times["slurm"], times["local"], strict=True))
    print(
        f"(a) smoke suite, {2 * args.evaluations} jobs a round, limit {args.limit}, median of {args.rounds} rounds: "
        f"local {local_s:.2f} s a job, Slurm {slurm_s:.2f} s a job: Slurm/local {slurm_s / local_s:.2f} "
        f"(median of per-round ratios {paired:.2f}), {slurm_s - local_s:+.2f} s a job"
    )
    print(
        f"    claim -> batch script started on the node: median {statistics.median(latencies):.2f} s, "
        f"max {max(latencies):.2f} s over {len(latencies)} jobs "
        f"({statistics.median(latencies) / local_s:.2f} of a local job's wall time)"
    )


class TimedClient(ServerClient):
    """The agent's client, noting when each attempt's heartbeat went out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beats: dict[uuid.UUID, list[float]] = {}
        self.lock = threading.Lock()

    def heartbeat(
        self, attempt: uuid.UUID, lease: str, progress: Progress, external_ref: str | None = None
    ) -> HeartbeatReply:
        with self.lock:
            self.beats.setdefault(attempt, []).append(time.monotonic())
        return super().heartbeat(attempt, lease, progress, external_ref)


def many_jobs_on_a_standin(args: argparse.Namespace, work: Path, model: Path) -> None:
    heartbeat_seconds = 5.0
    standin = work / "standin"
    nodes = (args.jobs + 1) // 2
    env = standin_slurm.install(standin, nodes=nodes, gpus_per_node=2)
    server = Server(work / "many", CORRAL_HEARTBEAT_SECONDS=str(heartbeat_seconds), CORRAL_LEASE_SECONDS="30")
    server.workdir.mkdir()
    server.start()
    os.environ.update(env)  # the agent below runs in this process and calls sbatch/squeue from PATH
    try:
        settings = {
            "kind": "slurm",
            "work_dir": str(work / "many-shared"),
            "poll_seconds": POLL_SECONDS,
            "max_pending": args.jobs,
            "gres_kinds": {"gpu:fake": TEST_GPU},
        }
        runner = ClusterRunner(server, work / "many", settings, env)
        registered = runner.register(model, max_concurrent_jobs=args.jobs)
        assert registered["accelerators"] == [TEST_GPU | {"count": 2, "nodes": nodes}], registered
        for seed in range((args.jobs + 1) // 2):  # two jobs (shards) an evaluation
            request(runner, limit=4, seed=seed)
        config = RunnerConfig.load(runner.config)
        client = TimedClient(config.server, config.token.get_secret_value())
        agent = RunnerLoop(config, client=client)
        ticks: list[float] = []
        tend = agent.tend

        def timed_tend() -> None:
            started = time.perf_counter()
            tend()
            ticks.append(time.perf_counter() - started)

        agent.tend = timed_tend  # type: ignore[method-assign]
        thread = threading.Thread(target=agent.run, daemon=True)
        ramp_started = time.perf_counter()
        thread.start()
        wait_for(lambda: standin_slurm.jobs(standin) >= args.jobs, f"{args.jobs} jobs submitted", timeout=600)
        ramp = time.perf_counter() - ramp_started
        ticks.clear()
        assert server.process is not None
        window_start = time.monotonic()
        cpu_start, children_start = time.process_time(), os.times()
        server_cpu_start = cpu_seconds(server.process.pid)
        time.sleep(args.seconds)  # the measurement window: the agent works in its own thread meanwhile
        window = time.monotonic() - window_start
        agent_cpu = time.process_time() - cpu_start
        children_end = os.times()
        children_cpu = (children_end.children_user - children_start.children_user) + (
            children_end.children_system - children_start.children_system
        )
        server_cpu = cpu_seconds(server.process.pid) - server_cpu_start
        agent.stopping.set()
        thread.join(timeout=60)
    finally:
        server.stop()
    with client.lock:
        beats = {attempt: list(times) for attempt, times in client.beats.items()}
    gaps = [
        later - earlier
        for times in beats.values()
        for earlier, later in itertools.pairwise(times)
        if later >= window_start
    ]
    in_window = sum(1 for times in beats.values() for beat in times if beat >= window_start)
    assert len(beats) == args.jobs, f"{len(beats)} attempts heartbeated, {args.jobs} held"
    gaps.sort()
    slack = heartbeat_seconds + POLL_SECONDS + max(ticks)
    late = sum(1 for gap in gaps if gap > slack)
    print(
        f"(b) {args.jobs} attempts held at once on a stand-in Slurm, ramp-up {ramp:.1f} s "
        f"({args.jobs / ramp:.1f} claims+submits/s); {args.seconds} s window: {in_window} heartbeats "
        f"({in_window / window:.1f}/s)"
    )
    print(
        f"    gap between one attempt's heartbeats / interval ({heartbeat_seconds:.0f} s): "
        f"median {statistics.median(gaps) / heartbeat_seconds:.3f}, "
        f"p99 {gaps[int(0.99 * (len(gaps) - 1))] / heartbeat_seconds:.3f}, "
        f"max {gaps[-1] / heartbeat_seconds:.3f}; later than interval + poll + longest tick: {late} of {len(gaps)}; "
        f"lease (30 s) lapsed: {sum(1 for gap in gaps if gap >= 30)}"
    )
    print(
        f"    tick (one squeue, the heartbeats due): median {statistics.median(ticks) * 1000:.0f} ms, "
        f"max {max(ticks) * 1000:.0f} ms over {len(ticks)} ticks"
    )
    print(
        f"    CPU, fraction of one core: agent {agent_cpu / window:.3f}, its sbatch/squeue children "
        f"{children_cpu / window:.3f}, server {server_cpu / window:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--evaluations", type=int, default=2, help="smoke-suite requests per round and executor")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--skip-slurm", action="store_true", help="part (b) only (no Slurm on this machine)")
    args = parser.parse_args()
    os.environ.update(OFFLINE)
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        model = build_tiny_llama(work / "model")
        if not args.skip_slurm:
            smoke_on_slurm_and_local(args, work, model)
        many_jobs_on_a_standin(args, work, model)


if __name__ == "__main__":
    main()
