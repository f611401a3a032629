"""A fault run: faults injected into a running Corral, counting how every request was answered.

    .venv/bin/python -m tests.bench.fault_run [--evaluations 100] [--runners 16] [--writers 32] [--no-restart]
        [--hub-calls 100] [--hub-seconds 60]

Part 1, SQLite (the embedded default): `corral serve` on SQLite and --writers threads writing at once
(licences created and updated). Part 2, PostgreSQL: `corral serve --workers 2`, --runners simulated runners
working through --evaluations smoke evaluations (two jobs each: claim, heartbeat, upload), one in twenty
claims abandoned without a word (a runner that dies: the reaper must requeue it), while PostgreSQL is
restarted (`pg_ctlcluster ... restart`, as root) and server workers are killed with SIGKILL. Clients retry a
503 after its Retry-After, as the README tells them to.

Part 3, a Hub that accepts and never answers (tests/bench/fault_hub.py), on both databases: --runners runners
heartbeat and claim while --hub-calls clients ask for Hub commits.

It reports every status seen per part, and checks: no 500 at all; every 503 carried Retry-After; every job
succeeded exactly once (one stored result and one succeeded attempt per job); under the hung Hub no lease lapsed
and the runners' p99 stayed within 2x of the run without the hang. Restarting PostgreSQL cuts every
other client of it: run this alone, never beside the test suite. Exit status 1 when a check fails.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    offline_environment,
    postgres_url,
    unique_name,
)
from tests.support.evaluations import TINY_LLAMA_SHAPE, sha_of
from tests.support.server import wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
REPO = "corral-fault/tiny"
RESULTS = {
    "corral_smoke_mc": {"results": {"corral_smoke_mc": {"acc,none": 0.5, "acc_stderr,none": 0.1}}},
    "corral_smoke_gen": {"results": {"corral_smoke_gen": {"exact_match,strict-match": 0.5}}},
}


class Tally:
    """Every answer, by status; and whether each 503 said when to retry."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.without_retry_after = 0
        self.errors: Counter[str] = Counter()

    def call(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One call, retried after a 503's Retry-After (and after a connection refused by a dying worker)."""
        while True:
            try:
                answer = client.request(method, url, **kwargs)
            except httpx.TransportError as error:
                with self.lock:
                    self.errors[type(error).__name__] += 1
                time.sleep(0.5)
                continue
            with self.lock:
                self.statuses[answer.status_code] += 1
                if answer.status_code == 503 and "retry-after" not in answer.headers:
                    self.without_retry_after += 1
            if answer.status_code != 503:
                return answer
            time.sleep(float(answer.headers.get("retry-after", "1")))

    def report(self) -> dict[str, Any]:
        return {
            "statuses": dict(sorted(self.statuses.items())),
            "503_without_retry_after": self.without_retry_after,
            "connection_errors": dict(self.errors),
        }


def corral(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "corral", *args], env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return done.stdout.strip()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(env: dict[str, str], cwd: Path, *extra: str) -> tuple["subprocess.Popen[bytes]", str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "corral", "serve", "--port", str(port), *extra],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=(cwd / "server.log").open("wb"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, process, timeout=180)
    return process, url


def stop(process: "subprocess.Popen[bytes]") -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def sqlite_writers(writers: int, writes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        cwd = Path(directory)
        env = offline_environment(CORRAL_DATABASE_URL=f"sqlite+aiosqlite:///{cwd / 'corral.db'}")
        process, url = serve(env, cwd)
        token = corral(["token", "create", "--scope", "admin", "--name", "faults"], env, cwd)
        tally = Tally()

        def write(worker: int) -> None:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
                for index in range(writes):
                    slug = f"w{worker}-{index}"
                    body = {"slug": slug, "name": slug, "commercial_use": True}
                    tally.call(client, "POST", "/v1/licenses", json=body)
                    tally.call(client, "PATCH", f"/v1/licenses/{slug}", json={"name": f"{slug} v2"})

        started = time.monotonic()
        threads = [threading.Thread(target=write, args=(worker,)) for worker in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        stop(process)
        report = tally.report()
        report["seconds"] = round(elapsed, 1)
        report["writes"] = writers * writes * 2
        return report


def postgres_cluster() -> list[str]:
    clusters = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout.split()
    return [clusters[0], clusters[1]]  # version, name


def chaos(server: "subprocess.Popen[bytes]", restart: bool, done: threading.Event, log: list[str]) -> None:
    """PostgreSQL restarted twice, a server worker killed three times, spread over the run."""
    steps = ["restart", "kill", "kill", "restart", "kill"] if restart else ["kill", "kill", "kill"]
    for step in steps:
        if done.wait(6):
            return
        if step == "restart":
            version, name = postgres_cluster()
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart"], check=True)
            log.append("postgresql restarted")
        else:
            children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
            workers = [pid for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
            if workers:
                os.kill(int(random.choice(workers)), signal.SIGKILL)
                log.append(f"worker {len(log)} killed")


def postgres_runners(evaluations: int, runners: int, restart: bool) -> dict[str, Any]:
    database = unique_name("corral_faults")
    url = create_postgres_database(database)
    try:
        with tempfile.TemporaryDirectory() as directory:
            cwd = Path(directory)
            env = offline_environment(
                CORRAL_DATABASE_URL=url,
                CORRAL_LEASE_SECONDS="20",
                CORRAL_HEARTBEAT_SECONDS="2",
                CORRAL_REAPER_INTERVAL_SECONDS="2",
                CORRAL_RETRY_BACKOFF_SECONDS="1",
                CORRAL_MAX_INFRASTRUCTURE_RETRIES="20",
                CORRAL_LOG_LEVEL="WARNING",
            )
            corral(["db", "upgrade"], env, cwd)
            process, base = serve(env, cwd, "--workers", "2")
            admin = {
                "Authorization": f"Bearer {corral(['token', 'create', '--scope', 'admin', '--name', 'f'], env, cwd)}"
            }
            tally = Tally()
            with httpx.Client(base_url=base, headers=admin, timeout=120) as client:
                model = {"repo_id": REPO, "kind": "base", **TINY_LLAMA_SHAPE}
                tally.call(client, "POST", "/v1/models", json=model)
                tally.call(client, "POST", f"/v1/models/{REPO}/revisions", json={"sha": sha_of(REPO)})
                tokens = []
                for index in range(runners):
                    body = {
                        "name": f"faulty-{index}",
                        "backends": ["hf"],
                        "lm_eval_version": "0.4.13",
                        "accelerators": [{"kind": "test-gpu", "memory_bytes": 80 * 2**30, "count": 1}],
                    }
                    tokens.append(tally.call(client, "POST", "/v1/runners", json=body).json()["token"])
                request = {"model": REPO, "revision": sha_of(REPO), "suite": "smoke", "force": True}
                ids = [
                    tally.call(client, "POST", "/v1/evaluations", json=request).json()["id"] for _ in range(evaluations)
                ]
            finished = threading.Event()
            abandoned: Counter[str] = Counter()

            def run(token: str) -> None:
                headers = {"Authorization": f"Bearer {token}"}
                with httpx.Client(base_url=base, headers=headers, timeout=120) as runner:
                    while not finished.is_set():
                        answer = tally.call(runner, "POST", "/v1/runner/jobs/claim", params={"wait": 1})
                        if answer.status_code != 201:
                            continue
                        job = answer.json()
                        if random.random() < 0.05:
                            abandoned["claims"] += 1  # the runner dies with the job: not a word more
                            continue
                        lease = {"Corral-Lease-Token": job["lease_token"]}
                        attempt = f"/v1/runner/attempts/{job['attempt_id']}"
                        beat = tally.call(runner, "POST", f"{attempt}/heartbeat", json={}, headers=lease)
                        if beat.status_code != 200 or beat.json()["cancel_requested"]:
                            continue
                        document = RESULTS[job["tasks"][0]["name"]]
                        tally.call(runner, "PUT", f"{attempt}/result", json={"results": document}, headers=lease)

            chaos_log: list[str] = []
            threads = [threading.Thread(target=run, args=(token,)) for token in tokens]
            troublemaker = threading.Thread(target=chaos, args=(process, restart, finished, chaos_log))
            started = time.monotonic()
            for thread in [*threads, troublemaker]:
                thread.start()
            deadline = started + 600
            with httpx.Client(base_url=base, headers=admin, timeout=120) as client:
                while time.monotonic() < deadline:
                    listed = tally.call(client, "GET", "/v1/evaluations", params={"state": "succeeded", "limit": 200})
                    if len(listed.json()["items"]) == evaluations:
                        break
                    time.sleep(1)
            finished.set()
            for thread in [*threads, troublemaker]:
                thread.join()
            elapsed = time.monotonic() - started
            stop(process)
        with psycopg.connect(postgres_url(database)) as connection:
            rows = connection.execute(
                """
                SELECT j.id, j.state,
                       (SELECT count(*) FROM job_results r WHERE r.job_id = j.id),
                       (SELECT count(*) FROM job_attempts a WHERE a.job_id = j.id AND a.state = 'succeeded'),
                       (SELECT count(*) FROM job_attempts a WHERE a.job_id = j.id)
                FROM evaluation_jobs j
                """
            ).fetchall()
        exactly_once = sum(1 for _, state, results, won, _ in rows if state == "succeeded" and results == won == 1)
        report = tally.report()
        report |= {
            "seconds": round(elapsed, 1),
            "evaluations": len(ids),
            "jobs": len(rows),
            "jobs_done_exactly_once": exactly_once,
            "attempts": sum(row[4] for row in rows),
            "abandoned_claims": abandoned["claims"],
            "faults": chaos_log,
        }
        return report
    finally:
        drop_postgres_database(database)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluations", type=int, default=100)
    parser.add_argument("--runners", type=int, default=16)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--no-restart", action="store_true", help="Kill workers, but leave PostgreSQL running.")
    parser.add_argument("--hub-calls", type=int, default=100)
    parser.add_argument("--hub-seconds", type=float, default=60)
    options = parser.parse_args()
    sqlite = sqlite_writers(options.writers, options.writes)
    print(json.dumps({"sqlite": sqlite}), flush=True)
    postgres = postgres_runners(options.evaluations, options.runners, restart=not options.no_restart)
    print(json.dumps({"postgresql": postgres}), flush=True)
    failures = []
    for name, part in (("sqlite", sqlite), ("postgresql", postgres)):
        if part["statuses"].get(500, 0):
            failures.append(f"{name}: {part['statuses'][500]} x 500")
        if part["503_without_retry_after"]:
            failures.append(f"{name}: 503 without Retry-After")
    if postgres["jobs_done_exactly_once"] != postgres["jobs"]:
        failures.append(f"postgresql: {postgres['jobs'] - postgres['jobs_done_exactly_once']} jobs not done once")
    from tests.bench.fault_hub import hung_hub  # imports this module: not at the top

    failures += hung_hub(options.runners, options.hub_calls, options.hub_seconds)
    print("fault run: " + ("; ".join(failures) if failures else "every check passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
