"""This machine as an engine: one warm lm-eval worker (`python -m evals.lm_eval_worker --worker`, a child in a
session of its own, in the job sandbox) runs one job at a time and keeps the last model loaded, so that the next
job of the same model (another shard, another suite) starts at once.

A job of another model, or after a failure, gets a fresh worker (all device memory returned); a worker idle for
`worker_idle_seconds` is stopped; a worker that died before it started a job is replaced and the job handed to
the new one, once. The worker dies with the agent (Linux PR_SET_PDEATHSIG).
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from corral_runner.config import RunnerConfig
from corral_runner.executors.base import EngineJob, Pace, Phase, Submission, job_name
from corral_runner.jobdir import JobDirectory
from corral_runner.model_args import model_key
from corral_runner.protocol import Accelerator

log = logging.getLogger("corral.runner")
AGENT_PID = "CORRAL_AGENT_PID"
KILL_GRACE_SECONDS = 10


class Worker:
    """The agent's handle on one lm-eval worker process."""

    def __init__(self, key: str, env: dict[str, str], log_path: Path, hidden: list[Path]) -> None:
        self.key = key  # jobs with this key can run here (evals.model_args.model_key, and the Hub token's need)
        self.idle_since = time.monotonic()
        command = [sys.executable, "-m", "corral_runner.lm_eval_worker", "--worker"]
        command += [argument for path in hidden for argument in ("--hide", str(path))]
        with log_path.open("ab") as output:  # what the worker prints between jobs
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a cancel kills its whole process group
            )

    def submit(self, spec: Path) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{spec}\n".encode())
        self.process.stdin.flush()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Let it finish and exit (closing stdin is its signal), then kill what is left."""
        self._close_stdin()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=KILL_GRACE_SECONDS)
        self.kill()

    def kill(self) -> None:
        """SIGTERM to the process group, then SIGKILL to whatever of it is left (vLLM's engine processes outlive
        their parent otherwise, holding GPU memory)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=KILL_GRACE_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # it may have exited already
                self.process.stdin.close()


@dataclass
class Running:
    """The job the worker has: where it is, and whether it was handed to a fresh worker already."""

    name: str
    directory: JobDirectory
    key: str
    env: dict[str, str]
    resubmitted: bool = False


class Local:
    name = "this machine"

    def __init__(self, config: RunnerConfig, accelerators: list[Accelerator], hidden: list[Path]) -> None:
        self.config = config
        self.accelerators = accelerators
        self.hidden = hidden  # the runner's own files, hidden from the worker (evals/sandbox.py)
        self.pace = Pace(
            poll_seconds=0.5,
            settle_seconds=0,
            max_pending=None,
            release_pending_after_seconds=float("inf"),
            slots=1,
            survives_the_agent=False,
        )
        self.worker: Worker | None = None
        self.running: Running | None = None
        self.owner = ""  # one machine's jobs are its own

    def node_shapes(self) -> list[Accelerator]:
        return self.accelerators

    def free_now(self) -> list[Accelerator]:
        return [] if self.running is not None else self.accelerators

    def submit(self, job: Submission) -> EngineJob:
        spec = job.directory.read_spec()
        key = json.dumps([model_key(spec), job.needs_hub_token])
        self.running = Running(job_name(job.attempt_id), job.directory, key, job.env)
        self._hand_over(self.running)
        return self._seen(self.running, "running", "")

    def _hand_over(self, running: Running) -> None:
        worker = self._worker_for(running.key, running.env)
        try:
            worker.submit(running.directory.spec)
        except BrokenPipeError:  # it died while idle: a fresh one
            self._stop_worker()
            self._worker_for(running.key, running.env).submit(running.directory.spec)

    def _worker_for(self, key: str, env: dict[str, str]) -> Worker:
        if self.worker is not None and (self.worker.key != key or not self.worker.alive()):
            self._stop_worker()  # another model: a fresh process returns all the device memory
        if self.worker is None:
            self.config.work_dir.mkdir(parents=True, exist_ok=True)
            env = env | {AGENT_PID: str(os.getpid())}  # a worker whose agent died early exits at once
            self.worker = Worker(key, env, self.config.work_dir / "worker.log", self.hidden)
            log.info("started an lm-eval worker (pid %d)", self.worker.process.pid)
        return self.worker

    def jobs(self) -> dict[str, EngineJob]:
        self._retire_idle_worker()
        running = self.running
        if running is None:
            return {}
        code = running.directory.done_code()
        if code is not None:
            self._finished(code)
            return {running.name: self._seen(running, "succeeded" if code == 0 else "failed", "")}
        if self.worker is not None and self.worker.alive():
            return {running.name: self._seen(running, "running", "")}
        exit_code = self.worker.process.returncode if self.worker is not None else None
        self._stop_worker()
        if not running.resubmitted and not running.directory.started_lm_eval():
            log.warning("the worker died before starting %s; a fresh one takes it", running.name)
            running.resubmitted = True
            self._hand_over(running)
            return {running.name: self._seen(running, "running", "")}
        self.running = None
        # The machine, not the model (a signal, the host's OOM killer): worth a try elsewhere.
        reason = f"the lm-eval worker died (exit status {exit_code}: a negative number is the signal)"
        return {running.name: self._seen(running, "gone", reason)}

    def _finished(self, code: int) -> None:
        self.running = None
        if code != 0 or not self.config.warm_worker:
            self._stop_worker()  # a failed job ends its worker; a cold runner starts one per job
        elif self.worker is not None:
            self.worker.idle_since = time.monotonic()

    @staticmethod
    def _seen(running: Running, phase: Phase, reason: str) -> EngineJob:
        # No external_ref: the job runs in this agent's own worker. Until lm-eval reports progress, its stage is
        # that it is starting.
        return EngineJob(name=running.name, ref="", phase=phase, reason=reason or "starting lm-eval")

    def find(self, job: EngineJob, directory: JobDirectory) -> EngineJob:
        """A job of an agent that stopped: its worker stopped with it. Its files say whether it finished; if it did
        not, it was taken away from it, as a cluster preempts a job: handed back, nothing counted."""
        code = directory.done_code()
        if code is not None:
            return EngineJob(name=job.name, ref=job.ref, phase="succeeded" if code == 0 else "failed")
        return EngineJob(name=job.name, ref=job.ref, phase="preempted", reason="its runner's agent restarted")

    def cancel(self, job: EngineJob) -> None:
        if self.running is not None and self.running.name == job.name:
            self.running = None
            if self.worker is not None:
                self.worker.kill()
                self.worker = None

    def last_words(self, job: EngineJob, directory: JobDirectory) -> str:
        return ""  # the worker's own output is the job's log

    def close(self) -> None:
        self._stop_worker()

    def _stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def _retire_idle_worker(self) -> None:
        """A warm worker holds its model's memory: give it back when no job of that model came for a while."""
        worker = self.worker
        idle = worker is not None and time.monotonic() - worker.idle_since > self.config.worker_idle_seconds
        if self.running is None and idle:
            log.info("worker idle for %.0f s; stopping it", self.config.worker_idle_seconds)
            self._stop_worker()
