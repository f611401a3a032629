"""The whole loop on a CPU, offline: a real `corral serve`, a real `corral-runner`, lm-eval's `hf` backend on a
tiny Llama checkpoint built here, the smoke suite's tasks and data from the repo."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral_runner.lm_eval_worker import lm_eval_commit
from corral_runner.tiny import build_tiny_llama
from tests.support.server import OFFLINE, ROOT, Server

REPO = "corral-test/tiny"
SHA = "1" * 40
STAGES = {"starting lm-eval", "building requests", "running requests", "writing results"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    running.start()
    yield running
    running.stop()


def prepare(server: Server, tiny_model: Path, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An admin token, the model and its revision, a runner and its config file; returns admin headers, config."""
    admin = {"Authorization": f"Bearer {server.corral('token', 'create', '--scope', 'admin', '--name', 'e2e')}"}
    created = httpx.post(f"{server.url}/v1/models", json={"repo_id": REPO, "kind": "base"}, headers=admin)
    assert created.status_code == 201, created.text
    httpx.post(f"{server.url}/v1/models/{REPO}/revisions", json={"sha": SHA}, headers=admin).raise_for_status()
    machine = {"name": "cpu-box", "accelerators": [{"kind": "cpu", "memory_bytes": 8 * 2**30, "count": 1}]}
    runner = httpx.post(f"{server.url}/v1/runners", json=machine, headers=admin).json()
    config = tmp_path / "runner.json"
    config.write_text(
        json.dumps(
            {
                "server": server.url,
                "token": runner["token"],
                "spool_dir": str(tmp_path / "spool"),
                "work_dir": str(tmp_path / "work"),
                "local_models": {REPO: str(tiny_model)},
                # No device: a runner finds its own (this machine: the CPU), as the README sets one up.
                "claim_wait_seconds": 1,
            }
        )
    )
    # The machine checks in with what it has (lm-eval's version among it), as an operator would.
    registered = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral_runner",
            "register",
            "--server",
            server.url,
            "--token",
            runner["token"],
            "--config",
            str(config),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **OFFLINE},
    )
    assert registered.returncode == 0, registered.stderr
    assert json.loads(config.read_text())["local_models"] == {REPO: str(tiny_model)}  # kept by register
    return admin, config


def request_smoke(server: Server, admin: dict[str, str]) -> dict[str, Any]:
    body = {"model": REPO, "revision": SHA, "suite": "smoke", "precision": "fp32", "batch_size": 1, "limit": 4}
    answer = httpx.post(f"{server.url}/v1/evaluations", json=body, headers=admin)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def worker_pids(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"started an lm-eval worker \(pid (\d+)\)", output)]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def runner(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **OFFLINE}
    return subprocess.Popen(
        [sys.executable, "-m", "corral_runner", "run", "--config", str(config), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def evaluation(server: Server, evaluation_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{server.url}/v1/evaluations/{evaluation_id}").json())


def test_smoke_suite_runs_end_to_end(server: Server, tiny_model: Path, tmp_path: Path) -> None:
    admin, config = prepare(server, tiny_model, tmp_path)
    requested = request_smoke(server, admin)
    process = runner(config, "--max-jobs", "2")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    shown = evaluation(server, requested["id"])
    assert shown["state"] == "succeeded", (shown, output)
    assert set(shown["summary"]["tasks"]) == {"corral_smoke_mc", "corral_smoke_gen"}
    assert shown["average"] is not None
    for job in shown["jobs"]:
        tail = job["log_tail"]
        assert "corral: lm-eval hf on" in tail
        assert "lm-eval finished" in tail
        assert f"pretrained={tiny_model}" in tail
    # Heartbeats carried the worker's progress: the stage at least, since a job this small ends within seconds
    # (the warm second one may end before its first heartbeat).
    assert shown["jobs"][0]["attempts"][-1]["progress"]["stage"] in STAGES
    # One warm worker ran both shards: the second job found the model loaded.
    assert len(worker_pids(output)) == 1, output
    assert "corral: model loaded" in shown["jobs"][0]["log_tail"]
    assert "model already loaded by the previous job" in shown["jobs"][1]["log_tail"]
    assert [path.name for path in (tmp_path / "work").iterdir()] == ["worker.log"]  # job scratch cleaned up
    # The provenance of a real lm-eval run: lm-eval's facts, never Corral's own commit as lm-eval's.
    provenance = httpx.get(f"{server.url}/v1/evaluations/{requested['id']}/provenance", headers=admin).json()
    corral_commit = subprocess.run(
        ["git", "describe", "--always"], cwd=Path(__file__).parent, capture_output=True, text=True
    ).stdout.strip()
    for job in provenance["jobs"]:
        assert job["lm_eval_version"] == "0.4.13"
        assert job["lm_eval_commit"] == lm_eval_commit()  # lm-eval's own (None for a release from the index)
        assert job["seeds"] == {"random": 1234, "numpy": 1234, "torch": 1234, "fewshot": 1234}
        assert job["torch_version"]
        assert job["transformers_version"]
        assert job["runner_accelerators"]
        assert job["task_versions"]
        document = httpx.get(f"{server.url}{job['results_url']}", headers=admin).json()
        assert document["corral_runner"]["corral_git_hash"] == corral_commit  # kept, under its own name
        assert httpx.get(f"{server.url}{job['samples_url']}", headers=admin).json()
    runners = httpx.get(f"{server.url}/v1/runners", headers=admin).json()["items"]
    assert runners[0]["lm_eval_version"] == "0.4.13"  # reported by the agent's check-in
    assert runners[0]["accelerators"][0]["kind"] == "cpu"  # detected by the agent: this machine has no GPU


def test_cancel_kills_the_child_and_a_spooled_result_survives_a_server_outage(
    server: Server, tiny_model: Path, tmp_path: Path
) -> None:
    admin, config = prepare(server, tiny_model, tmp_path)
    first = request_smoke(server, admin)
    process = runner(config, "--max-jobs", "1")
    deadline = time.monotonic() + 60
    while evaluation(server, first["id"])["jobs"][0]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    httpx.post(f"{server.url}/v1/evaluations/{first['id']}/cancel", headers=admin).raise_for_status()
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "canceled by the server" in output
    assert len(worker_pids(output)) == 1
    assert gone(worker_pids(output)[0])  # the lm-eval worker was killed, not left running
    job = evaluation(server, first["id"])["jobs"][0]
    assert (job["state"], job["attempts"][0]["state"]) == ("canceled", "canceled")
    assert not list((tmp_path / "spool").glob("*.json"))

    # The server goes away while the job runs: the result waits in the spool and is sent when it returns. The
    # outage lasts as long as the job (minutes on a loaded machine): the lease must outlast it, or the upload
    # is rightly refused as stale and the job stays "running" until the reaper's next pass.
    server.stop()
    server.env["CORRAL_LEASE_SECONDS"] = "3600"
    server.start()
    second = httpx.post(
        f"{server.url}/v1/evaluations",
        json={"model": REPO, "revision": SHA, "suite": "smoke", "precision": "fp32", "batch_size": 1, "limit": 3},
        headers=admin,
    ).json()
    process = runner(config, "--max-jobs", "1", "--cold")  # one process per job: the other way to run
    deadline = time.monotonic() + 60
    while evaluation(server, second["id"])["jobs"][0]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    server.stop()
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert len(list((tmp_path / "spool").glob("*.json"))) == 1, output
    server.start()
    flushed = runner(config, "--once")
    flushed.communicate(timeout=120)
    assert not list((tmp_path / "spool").glob("*.json"))
    job = evaluation(server, second["id"])["jobs"][0]
    assert job["state"] == "succeeded"


def test_a_killed_runners_job_is_handed_back_by_its_restarted_agent(tmp_path: Path, tiny_model: Path) -> None:
    server = Server(tmp_path)
    server.env |= {
        "CORRAL_LEASE_SECONDS": "5",
        "CORRAL_REAPER_INTERVAL_SECONDS": "1",
        "CORRAL_RETRY_BACKOFF_SECONDS": "0",
    }
    server.start()
    try:
        admin, config = prepare(server, tiny_model, tmp_path)
        requested = request_smoke(server, admin)
        doomed_log = tmp_path / "doomed.log"
        with doomed_log.open("w") as output:
            doomed = subprocess.Popen(
                [sys.executable, "-m", "corral_runner", "run", "--config", str(config), "--max-jobs", "1"],
                cwd=ROOT,
                env={**os.environ, **OFFLINE},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not worker_pids(doomed_log.read_text()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(doomed.pid, signal.SIGKILL)  # the machine dies mid-job: no goodbye, no result
        doomed.wait()
        # Its lm-eval worker (a session of its own) goes with it instead of computing for no one.
        orphan = worker_pids(doomed_log.read_text())[0]
        deadline = time.monotonic() + 30
        while not gone(orphan):
            assert time.monotonic() < deadline, "the worker outlived its agent"
            time.sleep(0.2)
        # Started again, the agent finds the attempt it held (its state file) with no worker left: handed back at
        # once, nothing counted against the job, instead of waiting for its lease to lapse.
        restarted = runner(config, "--max-jobs", "3")
        output, _ = restarted.communicate(timeout=300)
        assert restarted.returncode == 0, output
        assert "adopting attempt" in output
        shown = evaluation(server, requested["id"])
        assert shown["state"] == "succeeded", output
        first = shown["jobs"][0]
        assert [attempt["state"] for attempt in first["attempts"]] == ["released", "succeeded"]
        assert first["attempts"][0]["failure_category"] is None
    finally:
        server.stop()


def worker_of(agent: subprocess.Popen[str]) -> int | None:
    """The pid of the agent's lm-eval worker, from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == agent.pid and b"corral_runner.lm_eval_worker" in command:
            return int(stat.parent.name)
    return None


def test_a_worker_killed_mid_job_is_an_infrastructure_failure(server: Server, tiny_model: Path, tmp_path: Path) -> None:
    admin, config = prepare(server, tiny_model, tmp_path)
    requested = request_smoke(server, admin)
    agent = runner(config, "--max-jobs", "1")
    deadline = time.monotonic() + 60
    while True:  # until lm-eval is at work on the job (before that, a dead worker's job is simply resubmitted)
        assert time.monotonic() < deadline
        logs = list((tmp_path / "work").glob("*/log.txt"))
        if logs and "corral: lm-eval" in logs[0].read_text():
            break
        time.sleep(0.2)
    pid = worker_of(agent)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the host's OOM killer, say
    output, _ = agent.communicate(timeout=120)
    assert agent.returncode == 0, output
    job = evaluation(server, requested["id"])["jobs"][0]
    attempt = job["attempts"][0]
    assert (attempt["state"], attempt["failure_category"]) == ("failed", "infrastructure")
    assert "worker died (exit status -9" in attempt["failure_message"]
    assert job["state"] == "queued"  # retried, on this runner or another


def test_sigterm_hands_the_job_back_or_finishes_it(server: Server, tiny_model: Path, tmp_path: Path) -> None:
    admin, config = prepare(server, tiny_model, tmp_path)
    requested = request_smoke(server, admin)

    def running_attempts() -> int:
        job = evaluation(server, requested["id"])["jobs"][0]
        return sum(attempt["state"] == "running" for attempt in job["attempts"])

    def wait_for_a_running_attempt() -> None:
        deadline = time.monotonic() + 60
        while running_attempts() == 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)

    # Asked to hand back: lm-eval stops, the job is queued again at once, the runner exits.
    leaving = runner(config, "--hand-back-on-sigterm")
    wait_for_a_running_attempt()
    leaving.send_signal(signal.SIGTERM)
    output, _ = leaving.communicate(timeout=60)
    assert leaving.returncode == 0, output
    # Handed back while lm-eval ran, or unstarted if the signal came between the claim and the start.
    assert "handed back to the queue" in output or not worker_pids(output), output
    assert all(gone(pid) for pid in worker_pids(output))
    job = evaluation(server, requested["id"])["jobs"][0]
    assert job["state"] == "queued"
    assert [attempt["state"] for attempt in job["attempts"]] == ["released"]

    # By default SIGTERM drains: the job in hand is finished and uploaded, no other is taken.
    draining = runner(config)
    wait_for_a_running_attempt()
    draining.send_signal(signal.SIGTERM)
    output, _ = draining.communicate(timeout=300)
    assert draining.returncode == 0, output
    assert '{"jobs_run": 1}' in output
    first, second = evaluation(server, requested["id"])["jobs"]
    assert [attempt["state"] for attempt in first["attempts"]] == ["released", "succeeded"]
    assert (first["state"], second["state"]) == ("succeeded", "queued")


def test_one_machine_demo(server: Server, tmp_path: Path) -> None:
    """The documented tour for a new user: `corral serve`, then `corral-runner demo` beside it."""
    token = server.corral("token", "create", "--scope", "admin", "--name", "demo")
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral_runner",
            "demo",
            "--admin-token",
            token,
            "--server",
            server.url,
            "--state",
            str(tmp_path / "demo"),
        ],
        cwd=tmp_path,
        env={**os.environ, **OFFLINE},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "evaluation succeeded" in demo.stdout
    assert "| 1 | corral-demo/tiny-llama |" in demo.stdout
