"""The Slurm executor against a real Slurm started here (one node with two fake GPUs), a real `corral serve` and a real
`corral-runner`: the smoke suite through sbatch with lm-eval on the tiny checkpoint, and every fault the issue
names. Jobs that must stay running wait on a gate file in the batch script's setup lines (as an operator's
`module load` would run there), so no test depends on how fast lm-eval is."""

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral_runner.tiny import build_tiny_llama
from tests.support import slurm
from tests.support.cluster import REPO, SERVER_SETTINGS, SHA, TEST_GPU, ClusterRunner, wait_for
from tests.support.probes import marker_code, probe_code
from tests.support.server import Server

# What the shell that started the agent holds, none of it for a job (sbatch's default --export=ALL passed it on).
OPERATOR_SHELL = {
    "CORRAL_DATABASE_URL": "postgresql://corral:db-password-of-the-server@db/corral",
    "CORRAL_HUB_TOKEN": "hf_server_token_never_for_jobs",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-of-the-operators-shell",
}
HF_TOKEN = "hf_runner_token_for_gated_weights"


def need_slurm() -> None:
    reason = slurm.missing()
    if reason is None:
        return
    if slurm.REQUIRE_SLURM:
        pytest.fail(f"{slurm.SKIP_REASON}: {reason} (CORRAL_REQUIRE_SLURM=1 makes this a failure)")
    pytest.skip(f"{slurm.SKIP_REASON}: {reason}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurm.SlurmCluster]:
    need_slurm()
    with slurm.running_cluster(tmp_path_factory.mktemp("slurm"), nodes=1, gpus=2) as running:
        yield running


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, **SERVER_SETTINGS)
    running.start()
    yield running
    running.stop()


class Gate:
    """A file the batch script waits for before it starts lm-eval."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def setup(self) -> str:
        return f"while [ ! -e {self.path} ]; do sleep 0.2; done"

    def open(self) -> None:
        self.path.touch()


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    return Gate(tmp_path / "gate")


def node_state(cluster: slurm.SlurmCluster, node: str) -> str:
    return cluster.slurm("sinfo", "-h", "-n", node, "-o", "%t").strip().rstrip("*")


def make_runner(
    server: Server, cluster: slurm.SlurmCluster, tmp_path: Path, gate: Gate, **executor: Any
) -> ClusterRunner:
    seen = tmp_path / "seen"
    seen.mkdir()
    settings = {
        "kind": "slurm",
        "work_dir": str(tmp_path / "shared"),
        "time_limit_minutes": 10,
        "poll_seconds": 0.3,
        "settle_seconds": 1,
        "gres_kinds": {"gpu:fake": TEST_GPU},
        # What the job saw: its spec and environment, to show no lease token or Corral credential reached it.
        "setup": [f"cp spec.json {seen}/$SLURM_JOB_ID.spec.json", f"env > {seen}/$SLURM_JOB_ID.env", gate.setup],
    }
    runner = ClusterRunner(server, tmp_path, settings | executor, cluster.env)
    return runner


@pytest.fixture(autouse=True)
def _no_jobs_left(cluster: slurm.SlurmCluster) -> Iterator[None]:
    yield
    cluster.slurm("scancel", "--user=root", check=False)
    cluster.wait_for(lambda: not cluster.slurm("squeue", "-h").strip(), "an empty queue")


def slurm_id(attempt: dict[str, Any]) -> str:
    assert str(attempt["external_ref"]).startswith("slurm:"), attempt
    return str(attempt["external_ref"]).removeprefix("slurm:")


def model_with_code(tiny_model: Path, tmp_path: Path, code: bytes) -> Path:
    """The tiny checkpoint with a `custom_generate/generate.py` of its own, which transformers runs only when told
    to trust the repository's code."""
    model = tmp_path / "model-with-code"
    shutil.copytree(tiny_model, model)
    (model / "custom_generate").mkdir()
    (model / "custom_generate" / "generate.py").write_bytes(code)
    return model


def test_the_smoke_suite_runs_through_sbatch(
    server: Server, cluster: slurm.SlurmCluster, tiny_model: Path, tmp_path: Path, gate: Gate
) -> None:
    gate.open()
    (tmp_path / "probe").mkdir()
    marker = tmp_path / "probe" / "model-code-ran"
    runner = make_runner(server, cluster, tmp_path, gate)
    runner.env |= OPERATOR_SHELL
    model = model_with_code(tiny_model, tmp_path, marker_code(marker))
    registered = runner.register(model, max_concurrent_jobs=2, hf_token=HF_TOKEN)
    # The node shape read from sinfo's GRES through the site's map: one node of two, never one big device.
    assert registered["accelerators"] == [TEST_GPU | {"count": 2, "nodes": 1}]
    requested = runner.evaluate()
    runner.start()
    try:
        shown = wait_for(
            lambda: (found := runner.evaluation(requested["id"]))["state"] in ("succeeded", "failed") and found,
            "the smoke suite to finish",
            timeout=400,
        )
    finally:
        runner.stop()
    assert shown["state"] == "succeeded", (shown, runner.output())
    assert set(shown["summary"]["tasks"]) == {"corral_smoke_mc", "corral_smoke_gen"}
    job_ids = set()
    for job in shown["jobs"]:
        (attempt,) = job["attempts"]
        job_ids.add(slurm_id(attempt))
        assert "lm-eval finished" in job["log_tail"]
        state = cluster.slurm("scontrol", "-o", "show", "job", slurm_id(attempt))
        assert "JobState=COMPLETED" in state, state
        assert "Requeue=0" in state, state  # submitted with --no-requeue
        assert f"JobName=corral-{attempt['id']}" in state
    assert len(job_ids) == 2
    # Neither the job's spec nor its environment held a lease token, the runner's token, the Hub token (the
    # weights are local: they need none) or anything of the shell that started the agent.
    secret = json.loads(runner.config.read_text())["token"]
    for seen in (tmp_path / "seen").iterdir():
        text = seen.read_text()
        for leaked in (secret, "lease_token", "CORRAL_", HF_TOKEN, *OPERATOR_SHELL.values()):
            assert leaked not in text, (seen.name, leaked)
        if seen.suffix == ".env":
            names = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line}
            assert not names & {"AWS_SECRET_ACCESS_KEY", "HF_TOKEN"}
            assert {"PATH", "HOME", "PYTHONUNBUFFERED"} <= names
    # The model's own generate() never ran: nobody trusted its code.
    assert not marker.exists()
    assert sorted(path.name for path in (tmp_path / "seen").iterdir()) == sorted(
        f"{job_id}.{suffix}" for job_id in job_ids for suffix in ("env", "spec.json")
    )
    assert not list((tmp_path / "shared").iterdir())  # job directories cleaned up
    assert not list((tmp_path / "spool" / "held").iterdir())  # and the agent's lease files


def test_a_cluster_runner_refuses_settings_a_server_should_never_have_sent(
    server: Server, cluster: slurm.SlurmCluster, tiny_model: Path, tmp_path: Path, gate: Gate
) -> None:
    """A server bug, played by writing hostile settings into its database: nothing reaches sbatch."""
    gate.open()
    runner = make_runner(server, cluster, tmp_path, gate)
    runner.register(tiny_model, max_concurrent_jobs=2)
    requested = runner.evaluate()
    with sqlite3.connect(tmp_path / "corral.db") as database:
        database.execute(
            "UPDATE evaluations SET config = json_set(config, '$.gen_kwargs', json(?))",
            (json.dumps({"custom_generate": "attacker/evil", "trust_remote_code": True}),),
        )
    runner.start()
    try:
        shown = wait_for(
            lambda: (found := runner.evaluation(requested["id"]))["state"] == "failed" and found, "the refusal"
        )
    finally:
        runner.stop()
    attempts = [attempt for job in shown["jobs"] for attempt in job["attempts"]]
    assert attempts
    for attempt in attempts:
        assert attempt["failure_category"] == "harness_error"
        assert attempt["failure_message"].startswith("corral-runner refused the job: settings.gen_kwargs")
        assert attempt["external_ref"] is None  # never submitted
    assert not list((tmp_path / "seen").iterdir())  # no batch script ever ran
    names = cluster.slurm("squeue", "-h", "-t", "all", "-o", "%j").split()
    assert not [attempt for attempt in attempts if f"corral-{attempt['id']}" in names]


def test_trusted_code_on_a_compute_node_reaches_neither_the_runner_s_files_nor_other_jobs(
    server: Server, cluster: slurm.SlurmCluster, tiny_model: Path, tmp_path: Path, gate: Gate
) -> None:
    """The compute node here sees the agent's files (one host, as a shared home would): the job's sandbox hides
    the runner's config, its lease files and every other job's directory on the shared storage."""
    gate.open()
    (tmp_path / "probe").mkdir()
    report = tmp_path / "probe" / "report.json"
    other_job = tmp_path / "shared" / "another-attempt"
    other_job.mkdir(parents=True)
    (other_job / "results.json").write_text('{"planted": "another job\'s results"}')
    lease_files = tmp_path / "spool" / "held"
    files = [tmp_path / "runner.json", other_job / "results.json"]
    model = model_with_code(tiny_model, tmp_path, probe_code(report, files, [lease_files]))
    runner = make_runner(server, cluster, tmp_path, gate)
    runner.env |= OPERATOR_SHELL
    runner.register(model, max_concurrent_jobs=2, labels=("trusted-code",), allow_remote_code=True, hf_token=HF_TOKEN)
    trusted = httpx.put(
        f"{server.url}/v1/models/{REPO}/revisions/{SHA}/code-trust", json={"reason": "ours"}, headers=runner.admin
    )
    assert trusted.status_code == 200, trusted.text
    requested = runner.evaluate()
    runner.start()
    try:
        shown = wait_for(
            lambda: (found := runner.evaluation(requested["id"]))["state"] in ("succeeded", "failed") and found,
            "the trusted evaluation",
            timeout=400,
        )
    finally:
        runner.stop()
    assert shown["state"] == "succeeded", (shown, runner.output())
    seen = json.loads(report.read_text())  # the trusted code ran on the node...
    assert seen["files"] == {str(path): "refused: PermissionError" for path in files}  # ...and reached none of it
    assert seen["overwrite"] == seen["files"]
    assert seen["folders"][str(lease_files)].startswith("read: [")  # names only: lease files are read by no job
    shown_to_the_job = json.dumps(seen)
    for secret in (*OPERATOR_SHELL.values(), HF_TOKEN, json.loads(runner.config.read_text())["token"]):
        assert secret not in shown_to_the_job
    assert "sandbox: Landlock" in "".join(job["log_tail"] for job in shown["jobs"])


def test_a_waiting_job_is_heartbeated_then_released_and_cancel_reaches_slurm(
    server: Server, cluster: slurm.SlurmCluster, tiny_model: Path, tmp_path: Path, gate: Gate
) -> None:
    runner = make_runner(server, cluster, tmp_path, gate, release_pending_after_seconds=12)
    runner.register(tiny_model, max_concurrent_jobs=3)
    first, second = runner.evaluate(), runner.evaluate(limit=3)
    runner.start()
    try:
        # Two jobs hold the two GPUs (held at the gate); the third waits in Slurm's queue.
        def waiting() -> dict[str, Any] | None:
            attempts = runner.attempts(first["id"]) + runner.attempts(second["id"])
            stage = [a for a in attempts if a["state"] == "running" and "Slurm: Resources" in str(a["progress"])]
            return stage[0] if stage else None

        pending = wait_for(waiting, "a job waiting in Slurm's queue")
        assert pending["progress"]["stage"] == f"waiting for Slurm: Resources, job {slurm_id(pending)}"
        assert cluster.job_state(slurm_id(pending)) == "PENDING"
        running = [
            attempt
            for attempt in runner.attempts(first["id"]) + runner.attempts(second["id"])
            if attempt["state"] == "running" and attempt["id"] != pending["id"]
        ]
        assert len(running) == 2
        assert {cluster.job_state(slurm_id(a)) for a in running} == {"RUNNING"}
        # Heartbeated while it waits: the lease (8 s) moves on past the first one.
        lease = pending["lease_expires_at"]
        wait_for(
            lambda: any(
                a["lease_expires_at"] > lease
                for a in runner.attempts(first["id"]) + runner.attempts(second["id"])
                if a["id"] == pending["id"]
            ),
            "a heartbeat of the waiting attempt",
        )

        # Past its limit (12 s) it is handed back for another runner, and its Slurm job cancelled.
        def released() -> dict[str, Any] | None:
            for attempt in runner.attempts(first["id"]) + runner.attempts(second["id"]):
                if attempt["id"] == pending["id"] and attempt["state"] == "released":
                    return attempt
            return None

        handed_back = wait_for(released, "the waiting job handed back", timeout=60)
        assert handed_back["failure_category"] is None
        wait_for(lambda: cluster.job_state(slurm_id(pending)) == "CANCELLED", "its Slurm job cancelled")

        # Cancel in Corral: scancel of the running jobs.
        runner.cancel(first["id"])
        runner.cancel(second["id"])
        for attempt in running:
            wait_for(lambda a=attempt: cluster.job_state(slurm_id(a)) == "CANCELLED", "scancel of a running job")
        wait_for(lambda: not cluster.slurm("squeue", "-h").strip(), "nothing left in Slurm")
    finally:
        runner.stop()


def test_a_job_killed_from_outside_is_an_infrastructure_failure_and_retried(
    server: Server, cluster: slurm.SlurmCluster, tiny_model: Path, tmp_path: Path, gate: Gate
) -> None:
    runner = make_runner(server, cluster, tmp_path, gate)
    runner.register(tiny_model, max_concurrent_jobs=1)
    requested = runner.evaluate()
    runner.start()
    try:
        first = wait_for(
            lambda: [a for a in runner.attempts(requested["id"]) if a["external_ref"] and a["state"] == "running"],
            "a job in Slurm",
        )[0]
        wait_for(lambda: cluster.job_state(slurm_id(first)) == "RUNNING", "the job running")
        cluster.slurm("scancel", slurm_id(first))  # an operator, or Slurm itself, kills it: lm-eval never wrote a word
        failed = wait_for(
            lambda: [a for a in runner.attempts(requested["id"]) if a["id"] == first["id"] and a["state"] == "failed"],
            "the attempt failed",
        )[0]
        assert failed["failure_category"] == "infrastructure"
        assert f"Slurm job {slurm_id(first)} ended CANCELLED" in failed["failure_message"]
        retry = wait_for(
            lambda: [a for a in runner.attempts(requested["id"]) if a["number"] == 2 and a["external_ref"]],
            "the retry submitted",
        )[0]
        assert slurm_id(retry) != slurm_id(first)
    finally:
        runner.stop()


def test_a_controller_outage_stops_claims_but_fails_nothing_and_the_job_goes_on(
    server: Server, cluster: slurm.SlurmCluster, tiny_model: Path, tmp_path: Path, gate: Gate
) -> None:
    runner = make_runner(server, cluster, tmp_path, gate)
    runner.register(tiny_model, max_concurrent_jobs=1)
    requested = runner.evaluate(limit=3)
    runner.start()
    try:
        held = wait_for(lambda: [a for a in runner.attempts(requested["id"]) if a["external_ref"]], "a job in Slurm")[0]
        wait_for(lambda: cluster.job_state(slurm_id(held)) == "RUNNING", "the job running")
        cluster.stop_controller()
        try:
            # Slurm not answering is the engine's trouble, not the job's: the lease is kept and the stage says why.
            def told() -> dict[str, Any] | None:
                shown = next(a for a in runner.attempts(requested["id"]) if a["id"] == held["id"])
                return shown if "Slurm did not answer" in str(shown["progress"]) else None

            said = wait_for(told, "the stage naming the outage", timeout=120)
            assert said["state"] == "running", said
            lease = said["lease_expires_at"]
            wait_for(
                lambda: (
                    next(a for a in runner.attempts(requested["id"]) if a["id"] == held["id"])["lease_expires_at"]
                    > lease
                ),
                "a heartbeat during the outage",
                timeout=120,
            )
            assert "no job is taken until it does" in runner.output()
        finally:
            cluster.start_controller()
        gate.open()
        shown = wait_for(
            lambda: (found := runner.evaluation(requested["id"]))["state"] in ("succeeded", "failed") and found,
            "the evaluation to finish",
            timeout=400,
        )
        assert shown["state"] == "succeeded", runner.output()
        attempts = runner.attempts(requested["id"])
        # Nothing failed, lapsed or was retried: each of the suite's jobs ran once, the one held through the outage too.
        assert [(a["number"], a["state"]) for a in attempts] == [(1, "succeeded")] * len(attempts)
        assert held["id"] in {a["id"] for a in attempts}
        assert "Traceback" not in runner.output()
    finally:
        runner.stop()


def test_a_node_failure_is_not_rerun_by_slurm_and_retried_once_by_corral(
    server: Server, cluster: slurm.SlurmCluster, tiny_model: Path, tmp_path: Path, gate: Gate
) -> None:
    runner = make_runner(server, cluster, tmp_path, gate)
    runner.register(tiny_model, max_concurrent_jobs=1)
    requested = runner.evaluate()
    runner.start()
    try:
        first = wait_for(lambda: [a for a in runner.attempts(requested["id"]) if a["external_ref"]], "a job in Slurm")[
            0
        ]
        wait_for(lambda: cluster.job_state(slurm_id(first)) == "RUNNING", "the job running")
        cluster.slurm("scontrol", "update", "nodename=n1", "state=down", "reason=corral-test")
        wait_for(lambda: cluster.job_state(slurm_id(first)) == "NODE_FAIL", "NODE_FAIL")
        # Back in service: refused ("Invalid node state") when the node is already up again, hence no check.
        cluster.slurm("scontrol", "update", "nodename=n1", "state=resume", check=False)
        wait_for(lambda: node_state(cluster, "n1") in ("idle", "mix", "alloc"), "n1 back in service")
        failed = wait_for(
            lambda: [a for a in runner.attempts(requested["id"]) if a["id"] == first["id"] and a["state"] == "failed"],
            "the attempt failed",
        )[0]
        assert failed["failure_category"] == "infrastructure"
        assert "NODE_FAIL" in failed["failure_message"]
        retry = wait_for(
            lambda: [a for a in runner.attempts(requested["id"]) if a["number"] == 2 and a["external_ref"]],
            "Corral's retry submitted",
        )[0]
        gate.open()
        wait_for(lambda: runner.evaluation(requested["id"])["state"] == "succeeded", "the retry to finish", 400)
        # Slurm never ran the failed job again: it is over, not requeued.
        state = cluster.slurm("scontrol", "-o", "show", "job", slurm_id(first))
        assert "JobState=NODE_FAIL" in state, state
        assert "Restarts=0" in state, state
        numbers = sorted(a["number"] for a in runner.attempts(requested["id"]) if a["id"] in (first["id"], retry["id"]))
        assert numbers == [1, 2]
    finally:
        runner.stop()


def test_a_restarted_agent_adopts_its_jobs_and_cancels_orphans(
    server: Server, cluster: slurm.SlurmCluster, tiny_model: Path, tmp_path: Path, gate: Gate
) -> None:
    runner = make_runner(server, cluster, tmp_path, gate)
    runner.register(tiny_model, max_concurrent_jobs=2)
    requested = runner.evaluate()
    runner.start()
    adopted, orphan = wait_for(
        lambda: len(held := [a for a in runner.attempts(requested["id"]) if a["external_ref"]]) == 2 and held,
        "both jobs in Slurm",
    )
    wait_for(lambda: cluster.job_state(slurm_id(adopted)) == "RUNNING", "the jobs running")
    runner.kill()
    # The orphan's lease file is lost with the agent: its cluster job is no longer this runner's to keep.
    (tmp_path / "spool" / "held" / f"{orphan['id']}.json").unlink()
    runner.start()
    try:
        wait_for(lambda: cluster.job_state(slurm_id(orphan)) == "CANCELLED", "the orphan cancelled")
        assert cluster.job_state(slurm_id(adopted)) == "RUNNING"
        gate.open()
        shown = wait_for(
            lambda: (found := runner.evaluation(requested["id"]))["state"] in ("succeeded", "failed") and found,
            "the evaluation to finish",
            timeout=400,
        )
        assert shown["state"] == "succeeded", runner.output()
        by_job = {job["attempts"][0]["id"]: job for job in shown["jobs"]}
        kept = by_job[adopted["id"]]
        assert [a["external_ref"] for a in kept["attempts"]] == [adopted["external_ref"]]  # one Slurm job, one result
        assert kept["attempts"][0]["state"] == "succeeded"
        again = by_job[orphan["id"]]["attempts"]
        assert [a["state"] for a in again] == ["lost", "succeeded"]  # the lease lapsed; the job ran again
        assert "adopting attempt" in runner.output()
    finally:
        runner.stop()
    assert not list((tmp_path / "spool" / "held").iterdir())  # nothing held: no lease file left
