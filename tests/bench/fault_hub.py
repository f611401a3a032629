"""The fault run's hanging-Hub case: a Hub that accepts every request and never answers, while runners work.

    .venv/bin/python -m tests.bench.fault_hub [--runners 16] [--hub-calls 100] [--seconds 20]

On SQLite and on PostgreSQL: `corral serve` with a fake Hub; --runners simulated runners each hold a claimed job
and heartbeat it, claiming again between beats, for --seconds with the Hub answering (the baseline), then for
--seconds more while --hub-calls clients keep asking for Hub commits of a model (after a 503, again when its
Retry-After says) and the Hub holds whatever it gets. Reported per database: heartbeat and claim latency p50/p99
in both phases and their ratio, how the Hub calls were answered, and the leases that lapsed. Checks: no lease
lapsed, the runners' p99 under the hang within 2x of the baseline's, no 500. Exit status 1 when a check fails.
"""

import argparse
import gc
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.bench.fault_run import corral, serve, stop
from tests.support.checkpoints import TinyLlama, checkpoint_files
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    offline_environment,
    unique_name,
)
from tests.support.evaluations import TINY_LLAMA_SHAPE, sha_of
from tests.support.fake_hub import FakeHub, llama_repo

REPO = "corral-fault/hub"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


@contextmanager
def database(kind: str, cwd: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{cwd / 'corral.db'}"
        return
    name = unique_name("corral_fault_hub")
    try:
        yield create_postgres_database(name)
    finally:
        drop_postgres_database(name)


class Runners:
    """Simulated runners: one held job each, heartbeated, with a claim between beats; latencies by phase."""

    def __init__(self, base: str, tokens: list[str]) -> None:
        self.base = base
        self.tokens = tokens
        self.phase = "baseline"
        self.latency: dict[str, list[float]] = {"baseline": [], "hung hub": []}
        self.statuses: Counter[int] = Counter()
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def run(self, token: str) -> None:
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=self.base, headers=auth, timeout=120) as client:
            job = client.post("/v1/runner/jobs/claim", params={"wait": 5}).json()
            lease = {"Corral-Lease-Token": job["lease_token"]}
            beat = f"/v1/runner/attempts/{job['attempt_id']}/heartbeat"
            while not self.stopped.is_set():
                for method, path, kwargs in (
                    ("POST", beat, {"json": {}, "headers": lease}),
                    ("POST", "/v1/runner/jobs/claim", {"params": {"wait": 0}}),
                ):
                    started = time.perf_counter()
                    answer = client.request(method, path, **kwargs)
                    elapsed = time.perf_counter() - started
                    with self.lock:
                        self.statuses[answer.status_code] += 1
                        self.latency[self.phase].append(elapsed)
                self.stopped.wait(0.5)


def one_database(kind: str, runners: int, hub_calls: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory, FakeHub().running() as hub:
        cwd = Path(directory)
        hub.add(llama_repo(REPO, checkpoint_files(TinyLlama())))
        with database(kind, cwd) as url:
            env = offline_environment(
                CORRAL_DATABASE_URL=url,
                CORRAL_HUB_ENDPOINT=hub.url,
                CORRAL_HUB_RETRIES="0",
                CORRAL_HUB_REQUEST_DEADLINE_SECONDS=str(seconds * 3),
                CORRAL_LEASE_SECONDS="10",
                CORRAL_HEARTBEAT_SECONDS="2",
                CORRAL_REAPER_INTERVAL_SECONDS="1",
                CORRAL_LOG_LEVEL="WARNING",
            )
            corral(["db", "upgrade"], env, cwd)
            process, base = serve(env, cwd)
            try:
                return measured(base, env, cwd, hub, runners, hub_calls, seconds)
            finally:
                stop(process)


def measured(
    base: str, env: dict[str, str], cwd: Path, hub: FakeHub, runners: int, hub_calls: int, seconds: float
) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {corral(['token', 'create', '--scope', 'admin', '--name', 'f'], env, cwd)}"}
    with httpx.Client(base_url=base, headers=admin, timeout=120) as client:
        client.post("/v1/models", json={"repo_id": REPO, "kind": "base", **TINY_LLAMA_SHAPE}).raise_for_status()
        client.post(f"/v1/models/{REPO}/revisions", json={"sha": sha_of(REPO)}).raise_for_status()
        machine = {"lm_eval_version": "0.4.13", "accelerators": [{"kind": "gpu", "memory_bytes": 80 * 2**30}]}
        tokens = [
            client.post("/v1/runners", json={"name": f"r{index}", **machine}).json()["token"]
            for index in range(runners)
        ]
        request = {"model": REPO, "revision": sha_of(REPO), "suite": "smoke", "force": True}
        for _ in range((runners + 1) // 2):
            client.post("/v1/evaluations", json=request).raise_for_status()
        # One Hub call answered before anything is measured: the server imports huggingface_hub at its first.
        client.get(f"/v1/models/{REPO}/hub/commits", params={"limit": 1}).raise_for_status()
    working = Runners(base, tokens)
    threads = [threading.Thread(target=working.run, args=(token,)) for token in tokens]
    working.phase = "warm-up"
    working.latency["warm-up"] = []
    for thread in threads:
        thread.start()
    time.sleep(3)  # every runner has claimed its job
    working.phase = "baseline"
    time.sleep(seconds)  # the baseline: the Hub answers, nobody asks it
    # The Hub's callers in a process of their own, started (and its imports done) before the phase: its threads
    # must not slow the runners' measurements.
    context = multiprocessing.get_context("spawn")
    answers, ready, go = context.Queue(), context.Event(), context.Event()
    askers = context.Process(target=ask_the_hub, args=(base, admin, hub_calls, seconds, (ready, go), answers))
    askers.start()
    ready.wait(120)
    time.sleep(2)  # the runners' pace again after the child's start
    with hub.hang():
        working.phase = "hung hub"
        go.set()
        time.sleep(seconds)
        held = hub.held
        attempts = every_attempt(base, admin)  # while the runners still beat: what lapsed, lapsed under the hang
        working.stopped.set()
        for thread in threads:
            thread.join()
        hub_answers: Counter[int] = Counter(answers.get(timeout=seconds * 6))
    askers.join(timeout=seconds * 4)
    report: dict[str, Any] = {"runner_statuses": dict(working.statuses), "hub_call_answers": dict(hub_answers)}
    for phase, values in working.latency.items():
        if phase == "warm-up":
            continue
        report[phase] = {
            "calls": len(values),
            "p50_ms": round(statistics.median(values) * 1000, 1),
            "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        }
    report["p99_ratio"] = round(report["hung hub"]["p99_ms"] / report["baseline"]["p99_ms"], 2)
    report["held_by_the_hub"] = held
    report["leases_lapsed"] = sum(1 for attempt in attempts if attempt["failure_category"] == "lease_expired")
    return report


def every_attempt(base: str, admin: dict[str, str]) -> list[dict[str, Any]]:
    with httpx.Client(base_url=base, headers=admin, timeout=120) as client:
        evaluations = client.get("/v1/evaluations", params={"limit": 200}).json()["items"]
        return [
            attempt
            for listed in evaluations
            for job in client.get(f"/v1/evaluations/{listed['id']}").json()["jobs"]
            for attempt in job["attempts"]
        ]


def ask_the_hub(
    base: str, admin: dict[str, str], callers: int, seconds: float, signals: tuple[Any, Any], answers: Any
) -> None:
    """`callers` clients asking for a model's Hub commits for `seconds` from `go`, each asking again after a 503
    when its Retry-After says (as the README tells clients to); how they were answered goes to `answers`."""
    tally: Counter[int] = Counter()
    lock = threading.Lock()
    ready, go = signals
    ready.set()
    go.wait()
    ends = time.monotonic() + seconds

    def caller() -> None:
        with httpx.Client(base_url=base, headers=admin, timeout=seconds * 4) as client:
            while time.monotonic() < ends:
                try:
                    answer = client.get(f"/v1/models/{REPO}/hub/commits", params={"limit": 5})
                except httpx.HTTPError:
                    status, wait = 0, 1.0
                else:
                    status = answer.status_code
                    wait = float(answer.headers.get("retry-after", "0")) if status == 503 else 0.0
                with lock:
                    tally[status] += 1
                time.sleep(min(wait, max(0.0, ends - time.monotonic())))

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answers.put(dict(tally))


def hung_hub(runners: int, hub_calls: int, seconds: float) -> list[str]:
    """Both databases; what failed its checks (printed as it goes)."""
    # The runners' latencies are timed in this process: a collection pausing all its threads would count as the
    # server's. Nothing here lives long enough to need the collector.
    gc.disable()
    failures = []
    for kind in ("sqlite", "postgresql"):
        report = one_database(kind, runners, hub_calls, seconds)
        print(json.dumps({f"hung hub, {kind}": report}), flush=True)
        if report["leases_lapsed"]:
            failures.append(f"{kind}: {report['leases_lapsed']} leases lapsed")
        if report["p99_ratio"] > 2:
            failures.append(f"{kind}: runner p99 {report['p99_ratio']}x the baseline's")
        if report["runner_statuses"].get(500) or report["hub_call_answers"].get(500):
            failures.append(f"{kind}: 500s")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", type=int, default=16)
    parser.add_argument("--hub-calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    options = parser.parse_args()
    failures = hung_hub(options.runners, options.hub_calls, options.seconds)
    print("hung hub: " + ("; ".join(failures) if failures else "every check passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
