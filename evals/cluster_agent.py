"""The agent for a cluster runner: claims jobs, submits each to Slurm or Kubernetes under its attempt's name, and
tends all it holds at once (up to the runner's `max_concurrent_jobs`): one listing of the engine per tick, a
heartbeat for every attempt in every cluster state, each log streamed, the outcome reported.

The engine schedules; the agent stays the only party that talks to Corral. What a job needs is written to its
directory on the shared storage (spec.json: the claim without its lease token); lease tokens are kept in the
agent's own state directory (mode 600), one file per attempt, so a restarted agent adopts its live cluster jobs
and cancels the ones whose lease is gone.
"""

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from evals import hardware
from evals.agent import SIGTERM_REASON, Agent
from evals.client import ServerClient, ServerError
from evals.config import RunnerConfig
from evals.executors import engine_for
from evals.executors.base import FINISHED, ClusterEngine, ClusterJob, EngineError, Submission, job_name
from evals.executors.settings import KubernetesExecutor, SlurmExecutor
from evals.protocol import ClaimedJob, JobPlacement, JobRefused, JobSpec, Outcome, Sandbox

log = logging.getLogger("corral.runner.cluster")
LOST_LEASE = (403, 404, 409)


class HeldAttempt(BaseModel):
    """What the agent keeps of an attempt it holds (its state file): enough to adopt it after a restart."""

    attempt_id: str
    lease_token: str
    job_id: str
    heartbeat_seconds: float
    placement: JobPlacement
    required_memory_bytes: int = 0
    needs_hub_token: bool = True  # the weights may need the runner's Hub token
    ref: str | None = None  # the engine's id once submitted
    pending_since: float | None = None  # wall clock: it must survive a restart

    @property
    def name(self) -> str:
        return job_name(self.attempt_id)


@dataclass
class Tending:
    """The agent's running view of one held attempt (not kept across restarts: the server has the log size)."""

    held: HeldAttempt
    next_heartbeat: float = 0.0  # monotonic; 0: at once
    log_offset: int = 0
    ended_at: float | None = None  # when the engine first said it was over (the files may lag on shared storage)
    last: ClusterJob | None = None
    stage: str = field(default="submitted")


class ClusterAgent(Agent):
    def __init__(
        self, config: RunnerConfig, client: ServerClient | None = None, engine: ClusterEngine | None = None
    ) -> None:
        super().__init__(config, client)
        assert isinstance(config.executor, SlurmExecutor | KubernetesExecutor)
        self.settings = config.executor
        self.engine = engine
        self.held: dict[str, Tending] = {}  # by cluster job name
        self.state_dir = config.work_dir / "attempts"
        self.max_concurrent = 1
        self.finished = 0

    def report(self, engine: ClusterEngine) -> dict[str, Any]:
        """What this runner offers: the cluster's node shapes (never summed), the compute nodes' backends."""
        return {
            "accelerators": [shape.as_report() for shape in engine.node_shapes()],
            "backends": list(self.settings.backends),
            "lm_eval_version": hardware.lm_eval_version(),
        }

    def run(self, *, once: bool = False, max_jobs: int | None = None, until_idle: bool = False) -> int:
        """Returns the number of jobs finished. `once`: one job; `until_idle`: stop when nothing is held or queued."""
        probe = self.engine or engine_for(self.settings)
        runner = self.client.verify(self.report(probe))
        self.engine = self.engine or engine_for(self.settings, runner["id"])
        self.max_concurrent = int(runner.get("max_concurrent_jobs", 1))
        limit = 1 if once else max_jobs
        self.flush_spool()
        self.adopt()
        claimed = 0
        while True:
            if self.handing_back.is_set():
                self.hand_back_all()
                break
            if self.stopping.is_set():
                if self.held:
                    log.info("stopping; %d cluster jobs run on and a restarted agent adopts them", len(self.held))
                break
            # Claim while there is room, for up to one poll: a runner of many slots fills them in seconds, and
            # the attempts it already holds are tended (heartbeated) at least once a poll meanwhile.
            burst_ends = time.monotonic() + self.settings.poll_seconds
            got = 0
            while (limit is None or claimed < limit) and time.monotonic() < burst_ends:
                job = self._claim(once or until_idle)
                if job is None:
                    break
                claimed += 1
                got += 1
                self.submit(job)
            if not got and (limit is None or claimed < limit) and (once or until_idle) and not self.held:
                break
            self.tend()
            if limit is not None and self.finished >= limit and not self.held:
                break
            self.stopping.wait(self.settings.poll_seconds)
        return self.finished

    def _claim(self, no_wait: bool) -> ClaimedJob | None:
        assert self.engine is not None
        if len(self.held) >= self.max_concurrent:
            return None
        waiting = sum(1 for tending in self.held.values() if tending.last is None or tending.last.phase == "pending")
        free = None
        if self.settings.max_pending == 0:  # only what can start now: the claim says what is free
            try:
                free = [shape.as_report() for shape in self.engine.free_now()]
            except EngineError as exc:
                log.warning("could not read what is free: %s", exc)
                return None
            if not free:
                return None
        elif waiting >= self.settings.max_pending:
            return None
        wait = 0 if self.held or no_wait else self.config.claim_wait_seconds
        try:
            job = self.client.claim(wait, free)
        except JobRefused:
            return None  # the server was told why; nothing of it was submitted
        except (ServerError, httpx.TransportError) as exc:
            log.warning("claim failed: %s", exc)
            return None
        return None if job is not None and self.refused(job) else job

    def _state_path(self, attempt_id: str) -> Path:
        return self.state_dir / f"{attempt_id}.json"

    def _save(self, held: HeldAttempt) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        target = self._state_path(held.attempt_id)
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        # Mode 600 from the first byte: it holds a lease token.
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(held.model_dump_json())
        partial.replace(target)

    def _job_dir(self, attempt_id: str) -> Path:
        return self.settings.work_dir / attempt_id

    def submit(self, job: ClaimedJob) -> None:
        """Write the job's directory, remember the attempt, then submit (the order a crash can be recovered from)."""
        job_dir = self._job_dir(job.attempt_id)
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        local_path = self._local_path(job.model)
        spec = JobSpec.of(  # no lease token: the job talks to no one
            job,
            include_path=job.include_path,  # relative: evals.cluster_job resolves it on the compute node
            local_path=local_path,
            device=self.config.device,
            sandbox=self._sandbox(job_dir),
        )
        (job_dir / "spec.json").write_text(spec.model_dump_json())
        held = HeldAttempt(
            attempt_id=job.attempt_id,
            lease_token=job.lease_token,
            job_id=job.job_id,
            heartbeat_seconds=job.heartbeat_seconds,
            placement=job.placement,
            required_memory_bytes=job.required_memory_bytes,
            needs_hub_token=job.settings.needs_hub_token and local_path is None,
        )
        self._save(held)
        self.held[held.name] = Tending(held)
        self._submit(self.held[held.name])

    def _submit(self, tending: Tending) -> None:
        assert self.engine is not None
        held = tending.held
        try:
            submitted = self.engine.submit(
                Submission(
                    attempt_id=held.attempt_id,
                    job_dir=self._job_dir(held.attempt_id),
                    placement=held.placement,
                    gpus_per_node=held.placement.tensor_parallel,
                    env=self.config.job_environment(needs_hub_token=held.needs_hub_token, local=False),
                    required_memory_bytes=held.required_memory_bytes,
                    needs_hub_token=held.needs_hub_token,
                )
            )
        except EngineError as exc:  # this runner's cluster refused it: another runner may take the job
            log.warning("attempt %s: %s", held.attempt_id, exc)
            self._fail(tending, Outcome(category="infrastructure", message=f"{self.engine.name}: {exc}"))
            return
        held.ref = submitted.ref
        self._save(held)
        tending.last = submitted
        log.info("attempt %s submitted as %s", held.attempt_id, submitted.ref)
        self._heartbeat(tending, f"submitted to {self.engine.name}, {self._ref_words(submitted)}")

    def _sandbox(self, job_dir: Path) -> Sandbox | None:
        """What the job must not reach where it runs: this runner's files, should the node see them (a shared
        home), and the other jobs' directories on the shared storage."""
        if not self.config.sandbox:
            return None
        hidden = [*self.config.private_paths(), self.settings.work_dir]
        return Sandbox(hidden=[str(path) for path in hidden], kept=[str(job_dir)])

    def adopt(self) -> None:
        """The attempts a previous agent held: tended again from the next tick (a lost lease cancels the job)."""
        if not self.state_dir.exists():
            return
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                held = HeldAttempt.model_validate_json(path.read_text())
            except ValueError:
                log.warning("unreadable state file %s; removed", path)
                path.unlink()
                continue
            self.held[held.name] = Tending(held)
            log.info("adopting attempt %s (%s)", held.attempt_id, held.ref or "not submitted yet")

    def tend(self) -> None:
        """One look at the engine, then every held attempt: heartbeat, log, outcome; and orphans cancelled."""
        assert self.engine is not None
        try:
            listed = self.engine.jobs()
        except EngineError as exc:  # the controller is away: heartbeat on what was last seen, leases matter more
            log.warning("%s did not answer: %s", self.engine.name, exc)
            for tending in list(self.held.values()):
                if time.monotonic() >= tending.next_heartbeat:
                    self._heartbeat(tending, tending.stage)
            return
        for name, tending in list(self.held.items()):
            job = listed.get(name)
            if job is None and tending.held.ref is None:
                self._submit(tending)  # the previous agent died between remembering and submitting
                continue
            if job is None:
                known = tending.last or ClusterJob(name=name, ref=tending.held.ref or "", phase="gone")
                try:
                    job = self.engine.find(known)
                except EngineError as exc:
                    log.warning("could not look up %s: %s", known.ref, exc)
                    continue
            self._observe(tending, job)
        for name, job in listed.items():
            if name not in self.held and job.phase in ("pending", "running"):
                log.warning("cancelling %s (%s): no lease of this runner holds it", name, job.ref)
                self._cancel_quietly(job)

    def _observe(self, tending: Tending, job: ClusterJob) -> None:
        assert self.engine is not None
        held = tending.held
        tending.last = job
        if job.phase in FINISHED:
            self._finish(tending, job)
            return
        if job.phase == "pending":
            if held.pending_since is None:
                held.pending_since = time.time()
                self._save(held)
            waited = time.time() - held.pending_since
            if waited > self.settings.release_pending_after_seconds:
                reason = (
                    f"waited {waited:.0f} s in the {self.engine.name} queue ({job.reason or 'queued'}); handed back"
                )
                log.info("attempt %s %s", held.attempt_id, reason)
                self._cancel_quietly(job)
                self._release(held.attempt_id, held.lease_token, f"{self._ref_words(job)} {reason}")
                self._forget(tending)
                return
            tending.stage = f"waiting for {self.engine.name}: {job.reason or 'queued'}, {self._ref_words(job)}"
        else:
            tending.stage = f"running on {self.engine.name}, {self._ref_words(job)}"
        if time.monotonic() >= tending.next_heartbeat:
            self._heartbeat(tending, tending.stage)

    @staticmethod
    def _ref_words(job: ClusterJob) -> str:
        engine, _, ident = job.ref.partition(":")
        return f"job {ident}" if engine == "slurm" else ident

    def _heartbeat(self, tending: Tending, stage: str) -> None:
        """Extend the lease with the job's progress (the engine's state while it has none) and where it runs."""
        held = tending.held
        tending.next_heartbeat = time.monotonic() + held.heartbeat_seconds
        job_dir = self._job_dir(held.attempt_id)
        tending.log_offset = self._send_log(
            held.attempt_id, held.lease_token, job_dir / "log.txt", tending.log_offset, final=False
        )
        progress = self._progress(job_dir) if tending.last is not None and tending.last.phase == "running" else {}
        if not progress or progress.get("stage") == "starting lm-eval":
            progress = {"stage": stage[:200]}
        try:
            try:
                reply = self.client.heartbeat(held.attempt_id, held.lease_token, progress, held.ref)
            except ServerError as exc:
                if exc.status != 422:
                    raise
                log.warning("progress refused (%s); heartbeat without it", exc.detail)
                reply = self.client.heartbeat(held.attempt_id, held.lease_token, {"stage": stage[:200]}, held.ref)
        except httpx.TransportError as exc:
            log.warning("heartbeat of %s failed (%s); the job goes on", held.attempt_id, type(exc).__name__)
            return
        except ServerError as exc:
            if exc.status in LOST_LEASE:
                log.warning("attempt %s lost its lease (%s); cancelling its cluster job", held.attempt_id, exc.detail)
                self._stop(tending)
            else:
                log.warning("heartbeat refused (%s); the job goes on", exc)
            return
        if reply["cancel_requested"]:
            log.info("attempt %s canceled by the server; cancelling its cluster job", held.attempt_id)
            self._stop(tending)

    def _stop(self, tending: Tending) -> None:
        """The attempt is over for Corral: the cluster job goes too, and what the agent kept of it."""
        if tending.last is not None and tending.last.ref:
            self._cancel_quietly(tending.last)
        self._forget(tending)

    def _cancel_quietly(self, job: ClusterJob) -> None:
        assert self.engine is not None
        try:
            self.engine.cancel(job)
        except EngineError as exc:
            log.warning("could not cancel %s: %s", job.ref, exc)

    def _forget(self, tending: Tending) -> None:
        held = tending.held
        self.held.pop(held.name, None)
        self._state_path(held.attempt_id).unlink(missing_ok=True)
        shutil.rmtree(self._job_dir(held.attempt_id), ignore_errors=True)

    def _finish(self, tending: Tending, job: ClusterJob) -> None:
        """Over for the engine: results uploaded, the worker's own outcome reported, or the engine's reason."""
        assert self.engine is not None
        held = tending.held
        job_dir = self._job_dir(held.attempt_id)
        done = job_dir / "done"
        if not done.exists() and job.phase != "preempted":
            tending.ended_at = tending.ended_at or time.monotonic()
            if time.monotonic() - tending.ended_at < self.settings.settle_seconds:
                return  # shared storage may show the job's last files a little after the engine says it ended
        attempt, lease = held.attempt_id, held.lease_token
        tending.log_offset = self._send_log(attempt, lease, job_dir / "log.txt", tending.log_offset)
        if done.exists():
            code = self._done_code(done)
            if code == 0 and (job_dir / "results.json").exists():
                self._spool(attempt, lease, job_dir)
                self.flush_spool()
            else:
                outcome_path = job_dir / "outcome.json"
                failure = Outcome.model_validate_json(outcome_path.read_text()) if outcome_path.exists() else Outcome()
                self._report_failure(attempt, lease, failure, job_dir / "log.txt", code)
        elif job.phase == "preempted":
            log.info("attempt %s: %s %s; handed back", attempt, self._ref_words(job), job.reason or "preempted")
            self._release(attempt, lease, f"{self.engine.name} {self._ref_words(job)}: {job.reason or 'preempted'}")
        else:
            words = self.engine.last_words(job, job_dir).strip()
            message = (
                f"{self.engine.name} {self._ref_words(job)} ended {job.reason or 'without a word'} and the job "
                "wrote no outcome (killed, out of host memory, past its time limit or its node failed)"
            )
            if words:
                message += f"\n--- {self.engine.name}'s output ---\n{words}"
            self._fail(tending, Outcome(category="infrastructure", message=message))
        self.finished += 1
        self._forget(tending)

    @staticmethod
    def _done_code(done: Path) -> int:
        try:
            return int(json.loads(done.read_text())["code"])
        except (OSError, ValueError, KeyError):
            return 1

    def _fail(self, tending: Tending, failure: Outcome) -> None:
        held = tending.held
        self._report_failure(held.attempt_id, held.lease_token, failure, self._job_dir(held.attempt_id) / "log.txt")
        if held.ref is None:
            self._forget(tending)

    def hand_back_all(self) -> None:
        """SIGTERM with hand-back: every attempt goes back to the queue, its cluster job cancelled."""
        for tending in list(self.held.values()):
            self._release(tending.held.attempt_id, tending.held.lease_token, SIGTERM_REASON)
            self._stop(tending)
