"""How soon a line lm-eval writes reaches `corral eval logs --follow`, against the agent's old pace.

    .venv/bin/python -m tests.bench.bench_logs [--seconds 60]

A real `corral serve` on SQLite, a runner holding a claimed attempt, and the agent's own log streaming
(evals/attempt.py `Attempt.stream_log`) called at the runner loop's pace; `corral eval logs --follow` reads in a
process of its own. Lines carrying the time they were written go into the job's log at random moments for
--seconds; each line's latency is when the follower printed it less when it was written. The baseline, in the same
run: the log sent once per heartbeat (what the agent did before the one loop) and followed every 2 s. Reported:
p50/p99 of both and the ratio. Check: the new p99 under 2 s (exit status 1 otherwise).
"""

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from corral.config import Settings
from corral.console.evaluations import FOLLOW_SECONDS, LOG_POLL_SECONDS
from corral.wire.protocol import JobPlacement
from corral_runner.attempt import Attempt, HeldAttempt, StateFiles
from corral_runner.client import ServerClient
from corral_runner.loop import TICK_SECONDS
from tests.support.server import OFFLINE, ROOT, Server

HEARTBEAT_SECONDS = float(Settings.model_fields["heartbeat_seconds"].default)
SHA = "1" * 40
FOLLOWER = (
    "import sys, corral.console.evaluations as follow; from corral.cli import main; "
    "follow.LOG_POLL_SECONDS = float(sys.argv[1]); follow.FOLLOW_SECONDS = float(sys.argv[2]); "
    "sys.argv = ['corral', 'eval', 'logs', '--follow', *sys.argv[3:]]; main()"
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def claimed_attempt(server: Server, admin: dict[str, str], workdir: Path) -> tuple[Attempt, str]:
    repo = f"corral-bench/logs-{uuid.uuid4().hex[:6]}"  # a model of its own for each measurement
    httpx.post(f"{server.url}/v1/models", json={"repo_id": repo, "kind": "base"}, headers=admin).raise_for_status()
    httpx.post(f"{server.url}/v1/models/{repo}/revisions", json={"sha": SHA}, headers=admin).raise_for_status()
    machine = {
        "name": f"bench-{uuid.uuid4().hex[:6]}",
        "accelerators": [{"kind": "cpu", "memory_bytes": 2**36}],
        "lm_eval_version": "0.4.13",
    }
    token = httpx.post(f"{server.url}/v1/runners", json=machine, headers=admin).json()["token"]
    wanted = {"model": repo, "revision": SHA, "suite": "smoke", "limit": 2}
    created = httpx.post(f"{server.url}/v1/evaluations", json=wanted, headers=admin)
    assert created.status_code == 201, created.text
    client = ServerClient(server.url, token)
    job = client.claim(10)
    assert job is not None, "no job to claim"
    assert str(job.evaluation_id) == created.json()["id"], "claimed another evaluation's job"
    held = HeldAttempt(
        attempt_id=job.attempt_id,
        lease_token=job.lease_token,
        job_id=job.job_id,
        heartbeat_seconds=job.heartbeat_seconds,
        placement=JobPlacement(),
        directory=workdir / str(job.attempt_id),
    )
    attempt = Attempt(held, client, StateFiles(workdir / "held"))
    attempt.directory.path.mkdir(parents=True)
    return attempt, str(created.json()["id"])


def measure(server: Server, admin: dict[str, str], pace: tuple[float, float, float], seconds: float) -> list[float]:
    """Latencies (s) of lines written for `seconds`, streamed every pace[0] s, followed every pace[1] s (the
    evaluation looked at every pace[2] s)."""
    stream_every, poll_every, look_every = pace
    with tempfile.TemporaryDirectory() as folder:
        attempt, evaluation = claimed_attempt(server, admin, Path(folder))
        env = {**OFFLINE, "CORRAL_SERVER_URL": server.url, "CORRAL_TOKEN": admin["Authorization"].split()[1]}
        command = [sys.executable, "-u", "-c", FOLLOWER, str(poll_every), str(look_every), evaluation]
        errors = Path(folder) / "follower.err"
        follower = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors.open("w"), text=True
        )
        seen: dict[str, float] = {}
        reader = threading.Thread(
            # A followed line reads "[attempt] L12 written": the name is the word that starts with L.
            target=lambda: seen.update(
                (name, time.time())
                for line in iter(follower.stdout.readline, "")  # type: ignore[union-attr]
                for name in re.findall(r"\bL\d+\b", line)
            ),
            daemon=True,
        )
        reader.start()
        stop = threading.Event()

        def stream() -> None:
            while not stop.wait(stream_every):
                attempt.stream_log()

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        written: dict[str, float] = {}
        end = time.monotonic() + seconds
        with attempt.directory.log.open("a") as log:
            while time.monotonic() < end:
                name = f"L{len(written)}"
                written[name] = time.time()
                log.write(f"{name} written\n")
                log.flush()
                time.sleep(random.uniform(0.05, 1.0))
        deadline = time.monotonic() + stream_every + look_every + 30
        while set(written) - set(seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        follower.terminate()
        follower.wait(timeout=10)
        missing = set(written) - set(seen)
        # Its other shard would be the next measurement's claim: the evaluation ends here.
        httpx.post(f"{server.url}/v1/evaluations/{evaluation}/cancel", headers=admin).raise_for_status()
        assert not missing, f"{len(missing)} lines never reached the follower (it said: {errors.read_text()[-500:]!r})"
        return [seen[name] - at for name, at in written.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder))
        server.start()
        try:
            admin = {"Authorization": f"Bearer {server.corral('token', 'create', '--scope', 'admin', '--name', 'b')}"}
            now = measure(server, admin, (TICK_SECONDS, LOG_POLL_SECONDS, FOLLOW_SECONDS), arguments.seconds)
            # The old agent sent the log with each heartbeat: the server's default pace (the claim says it).
            before = measure(server, admin, (HEARTBEAT_SECONDS, 2.0, 2.0), arguments.seconds)
        finally:
            server.stop()
    report = {
        "lines": {"now": len(now), "before": len(before)},
        "now_s": {"p50": round(statistics.median(now), 3), "p99": round(percentile(now, 0.99), 3)},
        "before_s": {"p50": round(statistics.median(before), 3), "p99": round(percentile(before, 0.99), 3)},
        "before_heartbeat_seconds": HEARTBEAT_SECONDS,
    }
    report["p50_ratio_before_over_now"] = round(report["before_s"]["p50"] / report["now_s"]["p50"], 1)
    report["p99_ratio_before_over_now"] = round(report["before_s"]["p99"] / report["now_s"]["p99"], 1)
    print(json.dumps(report, indent=2))
    return 0 if report["now_s"]["p99"] < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
