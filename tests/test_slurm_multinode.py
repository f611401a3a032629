"""A model bigger than a node, on a real two-node Slurm (two slurmd on this host, two fake GPUs each): the server
plans Llama 3.1 405B bf16 on both nodes of a runner whose devices are too small for one, sbatch allocates both
(`--nodes=2 --gpus-per-node=2 --exclusive`), a Ray cluster forms across them with all four GPUs, and lm-eval is
started with vLLM's tensor parallel 2 x pipeline parallel 2 over Ray. vLLM itself cannot run here (no GPU, no
vLLM): the job ends where vLLM would load the weights, and says so."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral_runner.tiny import build_tiny_llama
from tests.support import slurm
from tests.support.cluster import SERVER_SETTINGS, ClusterRunner, wait_for
from tests.support.server import Server
from tests.test_slurm_runner import need_slurm

REPO = "meta-llama/Llama-3.1-405B"
SHA = "4" * 40
# 300 GB a device, two a node: 600 GB cannot hold 811.7 GB of bf16 weights, two nodes can.
BIG_FAKE_GPU = {"kind": "nvidia-test-gpu-300gb", "memory_bytes": 300 * 10**9}


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurm.SlurmCluster]:
    need_slurm()
    with slurm.running_cluster(tmp_path_factory.mktemp("slurm2"), nodes=2, gpus=2) as running:
        yield running


def test_a_job_bigger_than_a_node_gets_two_nodes_and_a_ray_cluster_across_them(
    two_nodes: slurm.SlurmCluster, tmp_path: Path
) -> None:
    tiny = build_tiny_llama(tmp_path / "tiny")
    server = Server(tmp_path, **SERVER_SETTINGS, CORRAL_MAX_INFRASTRUCTURE_RETRIES="0")
    server.start()
    executor = {
        "kind": "slurm",
        "work_dir": str(tmp_path / "shared"),
        "time_limit_minutes": 10,
        "poll_seconds": 0.3,
        "settle_seconds": 1,
        "gres_kinds": {"gpu:fake": BIG_FAKE_GPU},
        "max_nodes_per_job": 2,
        "backends": ["vllm"],
    }
    runner = ClusterRunner(server, tmp_path, executor, two_nodes.env)
    try:
        admin = runner.admin
        revision = httpx.post(f"{server.url}/v1/models/{REPO}/revisions", json={"sha": SHA}, headers=admin)
        assert revision.status_code == 201, revision.text
        registered = runner.register_runner(local_models={REPO: str(tiny)})
        assert registered["accelerators"] == [BIG_FAKE_GPU | {"count": 2, "nodes": 2}]
        assert registered["max_nodes_per_job"] == 2
        requested = runner.evaluate(model=REPO, revision=SHA, backend="vllm", precision="bf16")
        assert requested["requirements"]["nodes"] == 2
        runner.start()
        shown = wait_for(
            lambda: (found := runner.evaluation(requested["id"]))["state"] in ("failed", "succeeded") and found,
            "the job to end",
            timeout=400,
        )
        # The suite's first job to fail ends the evaluation: that one was placed, allocated and started.
        [(job, attempt)] = [(job, a) for job in shown["jobs"] for a in job["attempts"] if a["state"] == "failed"]
        job_id = str(attempt["external_ref"]).removeprefix("slurm:")
        state = dict(
            field.split("=", 1)
            for field in two_nodes.slurm("scontrol", "-o", "show", "job", job_id).split()
            if "=" in field
        )
        assert state["NumNodes"] == "2", state  # both nodes, whole
        assert state["NodeList"] == "n[1-2]", state
        assert state["OverSubscribe"] == "NO", state  # --exclusive
        log = job["log_tail"]
        assert "corral: Ray cluster of 2 nodes, 4 GPUs" in log, log
        assert "tensor_parallel_size=2,pipeline_parallel_size=2,distributed_executor_backend=ray" in log, log
        # No vLLM on this machine: the runner says so, as a fault of the runner (another may have vLLM).
        assert attempt["failure_category"] == "infrastructure", attempt
        assert "vllm" in attempt["failure_message"].lower()
    finally:
        runner.stop()
        server.stop()
    assert json.loads(runner.config.read_text())["executor"]["max_nodes_per_job"] == 2
