"""What a cluster job runs on its compute node: `python -m evals.cluster_job JOB_DIR/spec.json`.

The one-job lm-eval entry point (evals.lm_eval_worker.run_job), writing the files the agent reads from the shared
job directory (log.txt, progress.json, results.json or outcome.json, done). A job placed over several nodes
first starts a Ray cluster across its Slurm allocation (the head here, one worker per other node through
`srun`), waits until Ray sees every node and GPU, and runs vLLM on it (tensor parallel within a node, pipeline
parallel across nodes). It never sees a lease token or a Corral credential: it talks to no one.
"""

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from corral_runner.jobdir import JobDirectory
from corral_runner.lm_eval_worker import Worker, enter_sandbox, redirect_output, run_job, say
from corral_runner.protocol import Outcome, Sandbox

RAY_START_SECONDS = 300
RAY_QUIET = ["--include-dashboard=false", "--disable-usage-stats", "--block"]  # and in the foreground


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def allocation_nodes() -> list[str]:
    """The nodes of this Slurm allocation, the batch host first."""
    listed = subprocess.run(
        ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True, text=True, check=True
    ).stdout.split()
    here = os.environ.get("SLURMD_NODENAME", listed[0])
    return [here, *(node for node in listed if node != here)]


class RayCluster:
    """A Ray cluster over the allocation's nodes for the length of one job."""

    def __init__(self, directory: JobDirectory, gpus_per_node: int, sandbox: Sandbox | None) -> None:
        self.nodes = allocation_nodes()
        self.gpus = gpus_per_node
        self.address = f"{socket.gethostbyname(socket.gethostname())}:{free_port()}"
        ray = str(Path(sys.executable).parent / "ray")
        gpus = f"--num-gpus={gpus_per_node}"
        head_ip, port = self.address.rsplit(":", 1)
        others = len(self.nodes) - 1
        head = [ray, "start", "--head", f"--node-ip-address={head_ip}", f"--port={port}", gpus, *RAY_QUIET]
        srun = ["srun", "--overlap", f"--nodes={others}", f"--ntasks={others}", "--ntasks-per-node=1"]
        # The other nodes' Ray runs the model's pipeline stages: in the same sandbox as this one.
        sealed = (
            []
            if sandbox is None
            else [
                sys.executable,
                "-m",
                "corral_runner.sandbox",
                *(f"--hide={path}" for path in sandbox.hidden),
                *(f"--keep={path}" for path in sandbox.kept),
                "--",
            ]
        )
        worker = [*srun, f"--exclude={self.nodes[0]}", *sealed, ray, "start", f"--address={self.address}", gpus]
        worker.append("--block")
        self.workers: subprocess.Popen[bytes] | None = None
        with directory.ray_log.open("ab") as output:
            self.head = subprocess.Popen(head, stdout=output, stderr=subprocess.STDOUT)
            self._wait_for_head(head_ip, int(port))
            self.workers = subprocess.Popen(worker, stdout=output, stderr=subprocess.STDOUT)

    def _wait_for_head(self, host: str, port: int) -> None:
        """Workers join only a head that listens: its GCS port answering."""
        deadline = time.monotonic() + RAY_START_SECONDS
        while time.monotonic() < deadline:
            if self.head.poll() is not None:
                raise RuntimeError("the Ray head exited while starting (see ray.log)")
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Ray head did not listen on {host}:{port} in {RAY_START_SECONDS} s")

    def wait(self) -> dict[str, float]:
        """Until Ray counts every node and GPU of the allocation; what it counts."""
        import ray

        expected = {"nodes": len(self.nodes), "GPU": float(len(self.nodes) * self.gpus)}
        deadline = time.monotonic() + RAY_START_SECONDS
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            if self.head.poll() is not None or (self.workers is not None and self.workers.poll() is not None):
                raise RuntimeError("a Ray node exited while the cluster formed (see ray.log)")
            with contextlib.suppress(ConnectionError, RuntimeError):
                if not ray.is_initialized():
                    ray.init(address=self.address, logging_level=logging.WARNING)
                alive = [node for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]
                gpus = ray.cluster_resources().get("GPU", 0.0)  # type: ignore[no-untyped-call]
                seen = {"nodes": float(len(alive)), "GPU": float(gpus)}
                if seen["nodes"] >= expected["nodes"] and seen["GPU"] >= expected["GPU"]:
                    ray.shutdown()  # vLLM connects again itself, through RAY_ADDRESS
                    return seen
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster did not form in {RAY_START_SECONDS} s: {seen} of {expected}")

    def stop(self) -> None:
        for process in (self.workers, self.head):
            if process is None:
                continue
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=30)
            if process.poll() is None:
                process.kill()
                process.wait()


def main(spec_path: Path) -> int:
    directory = JobDirectory(spec_path.resolve().parent)
    spec = directory.read_spec()
    placement = spec.placement
    worker = Worker()
    worker.sandbox_note = enter_sandbox(spec.sandbox)  # before anything of the job runs, Ray's head included
    if placement.pipeline_parallel == 1:
        return run_job(worker, directory.spec)
    redirect_output(directory.log)
    ray = None
    try:
        ray = RayCluster(directory, placement.tensor_parallel, spec.sandbox)
        seen = ray.wait()
    except Exception as error:  # the allocation, not the model: worth a try elsewhere
        if ray is not None:
            ray.stop()
        say(f"corral: {error}")
        directory.write_outcome(Outcome(category="infrastructure", message=f"Ray across the allocation: {error}"))
        directory.mark_done(1)
        return 1
    try:
        say(f"corral: Ray cluster of {seen['nodes']:.0f} nodes, {seen['GPU']:.0f} GPUs at {ray.address}")
        os.environ["RAY_ADDRESS"] = ray.address
        return run_job(worker, directory.spec)
    finally:
        ray.stop()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
