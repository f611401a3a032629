"""The runner: one loop for every engine (evals/executors/: this machine's warm worker, Slurm, Kubernetes).

It claims while it has room (for up to one look at the engine, so a runner of many slots fills them in seconds),
submits each job under its attempt's name, and tends every attempt it holds (evals/attempt.py): one look at the
engine, log lines sent as they come, heartbeats with the engine's words or lm-eval's progress, the outcome told.

When the engine does not answer (the Slurm controller restarting, the Kubernetes API away) it claims nothing and
keeps heartbeating what it holds, with the reason: an engine outage never spends a job's retries. When a job
fails for this machine's sake (evals/fitness.py), it takes no job until the device check passes.
"""

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as StillWaiting
from typing import TypeVar

import httpx

from corral_runner import hardware
from corral_runner.attempt import Attempt, HeldAttempt, StateFiles
from corral_runner.client import ServerClient, ServerError
from corral_runner.config import RunnerConfig
from corral_runner.executors.base import FINISHED, Engine, EngineError, EngineJob, EngineUnreachable, Submission
from corral_runner.executors.select import engine_for
from corral_runner.fitness import Fitness
from corral_runner.jobdir import JobDirectory
from corral_runner.protocol import ClaimedJob, ClaimEnvelope, JobRefused, JobSpec, Outcome, RunnerReport, Sandbox
from corral_runner.spool import Spool

log = logging.getLogger("corral.runner")
SIGTERM_REASON = "The runner was asked to stop (SIGTERM) and handed the job back."
TICK_SECONDS = 0.5  # log lines reach the server this soon, whatever the engine's pace
Answer = TypeVar("Answer")


class RunnerLoop:
    def __init__(self, config: RunnerConfig, client: ServerClient | None = None, engine: Engine | None = None) -> None:
        self.config = config
        self.client = client or ServerClient(config.server, config.token.get_secret_value())
        self.engine = engine or engine_for(config)
        self.spool = Spool(config.spool_dir, self.client)
        self.states = StateFiles(config.held_dir)
        self.held: dict[str, Attempt] = {}  # by the engine's job name
        self.stopping = threading.Event()  # SIGTERM: take no new job
        self.handing_back = threading.Event()  # and give the ones held back to the queue
        self.slots = 1
        self.finished = 0
        self.engine_down: str | None = None  # why the engine did not answer at its last look
        self.fitness = Fitness(config.device)
        self.next_look = 0.0
        # The engine is asked from a thread of its own: a command that takes its time (squeue waiting on a
        # controller that is restarting) must not hold back the heartbeats that keep every other lease.
        self.asking = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.lost_while_waiting: list[Attempt] = []

    def report(self) -> RunnerReport:
        """What this runner offers: its engine's nodes by shape (never summed), its backends, its lm-eval."""
        return RunnerReport(
            accelerators=self.engine.node_shapes(),
            backends=self.config.backends(),
            lm_eval_version=hardware.lm_eval_version(),
        )

    def run(self, *, once: bool = False, max_jobs: int | None = None, until_idle: bool = False) -> int:
        """Returns the number of jobs finished. `once`: one job; `until_idle`: stop when nothing is held or queued."""
        verified = self.client.verify(self.report())
        self.engine.owner = str(verified.id)
        self.slots = min(verified.max_concurrent_jobs, self.engine.pace.slots)
        limit = 1 if once else max_jobs
        self.spool.flush()
        self.adopt()
        claimed = 0
        try:
            while True:
                if self.handing_back.is_set():
                    self.hand_back_all()
                    break
                if self.stopping.is_set() and (self.engine.pace.survives_the_agent or not self.held):
                    if self.held:
                        log.info("stopping; %d jobs run on and a restarted agent adopts them", len(self.held))
                    break
                for attempt in list(self.held.values()):
                    attempt.stream_log()  # at every tick: log lines reach the server within one
                if time.monotonic() >= self.next_look:
                    self.next_look = time.monotonic() + self.engine.pace.poll_seconds
                    if not self.stopping.is_set() and (limit is None or claimed < limit):
                        got = self.claim_burst(
                            no_wait=once or until_idle, limit=None if limit is None else limit - claimed
                        )
                        claimed += got
                        if not got and (once or until_idle) and not self.held:
                            break
                    self.tend()
                if limit is not None and self.finished >= limit and not self.held:
                    break
                self.stopping.wait(TICK_SECONDS)
        finally:
            self.asking.shutdown(wait=False, cancel_futures=True)
            self.engine.close()
        return self.finished

    def ask(self, call: Callable[[], Answer]) -> Answer:
        """The engine's answer to `call`, the held attempts kept alive (log, heartbeats) while it takes its time."""
        if not self.engine.pace.survives_the_agent:
            # This machine's engine answers at once, and its worker must be forked by this thread: the worker's
            # PR_SET_PDEATHSIG follows the thread that started it, not the process.
            return call()
        pending = self.asking.submit(call)
        while True:
            try:
                answer = pending.result(timeout=TICK_SECONDS)
                break
            except StillWaiting:
                self._keep_alive()
        self._stop_lost()
        return answer

    def _keep_alive(self) -> None:
        for attempt in list(self.held.values()):
            if attempt in self.lost_while_waiting:
                continue
            attempt.stream_log()
            if attempt.heartbeat_due() and attempt.heartbeat(attempt.stage, self._trouble()) != "ok":
                self.lost_while_waiting.append(attempt)  # stopped once the engine is free to be asked again

    def _stop_lost(self) -> None:
        while self.lost_while_waiting:
            attempt = self.lost_while_waiting.pop()
            if attempt.name in self.held:
                self._stop(attempt)

    # -- claiming ---------------------------------------------------------------------------------------------------

    def claim_burst(self, *, no_wait: bool, limit: int | None) -> int:
        """Claim while there is room, for up to one poll; the number claimed."""
        ends, got = time.monotonic() + self.engine.pace.poll_seconds, 0
        while (limit is None or got < limit) and time.monotonic() < ends and self._may_claim():
            job = self._claim(no_wait)
            if job is None:
                break
            got += 1
            self.admit(job)
        return got

    def _may_claim(self) -> bool:
        if self.engine_down is not None or len(self.held) >= self.slots:
            return False
        return self.fitness.fit()

    def _claim(self, no_wait: bool) -> ClaimedJob | None:
        pace = self.engine.pace
        free = None
        if pace.max_pending == 0:  # only what can start now: the claim says what is free
            try:
                free = self.ask(self.engine.free_now)
            except EngineError as exc:
                self._engine_away(exc)
                return None
            if not free:
                return None
        elif pace.max_pending is not None:
            waiting = sum(1 for held in self.held.values() if held.last is None or held.last.phase == "pending")
            if waiting >= pace.max_pending:
                return None
        wait = 0 if self.held or no_wait else self.config.claim_wait_seconds
        try:
            job = self.client.claim(wait, free)
        except JobRefused:
            return None  # the server was told why; nothing of it runs
        except (ServerError, httpx.TransportError) as exc:
            log.warning("claim failed: %s", exc)
            return None
        return None if job is not None and self._refused(job) else job

    def _refused(self, job: ClaimedJob) -> bool:
        """A job that would run what this runner's operator has not consented to: refused, with the reason."""
        if job.settings.trust_remote_code and not self.config.allow_remote_code:
            reason = (
                "corral-runner refused the job: it would run the revision's own code (trust_remote_code) and this "
                "runner does not allow it; set allow_remote_code in its config, or take the trusted-code label off it"
            )
            envelope = ClaimEnvelope(attempt_id=job.attempt_id, lease_token=job.lease_token, job_id=job.job_id)
            self.client.refuse(JobRefused(envelope, reason))
            return True
        return False

    def admit(self, job: ClaimedJob) -> None:
        """Write the job's directory, remember the attempt, then submit (the order a crash can be recovered from)."""
        directory = JobDirectory(self.config.jobs_root / str(job.attempt_id)).create()
        local_path = self.config.local_models.get(job.model)
        directory.write_spec(
            JobSpec.of(  # no lease token: the job talks to no one
                job,
                include_path=job.include_path,  # relative: resolved against the evals/ of where it runs
                local_path=str(local_path) if local_path is not None else None,
                device=self.config.device,
                sandbox=self._sandbox(directory),
            )
        )
        held = HeldAttempt.of(job, directory.path, weights_here=local_path is not None)
        attempt = Attempt(held, self.client, self.states)
        attempt.save()
        self.held[attempt.name] = attempt
        self.submit(attempt)

    def _sandbox(self, directory: JobDirectory) -> Sandbox | None:
        """For a job that runs elsewhere: this runner's files, should its node see them (a shared home), and the
        other jobs' directories on the shared storage. (The local worker hides the runner's files itself.)"""
        if not self.config.sandbox or not self.engine.pace.survives_the_agent:
            return None
        hidden = [*self.config.private_paths(), self.config.jobs_root]
        return Sandbox(hidden=[str(path) for path in hidden], kept=[str(directory.path)])

    def submit(self, attempt: Attempt) -> None:
        held = attempt.held
        try:
            submission = Submission(
                attempt_id=held.attempt_id,
                directory=attempt.directory,
                placement=held.placement,
                gpus_per_node=held.placement.tensor_parallel,
                env=self.config.job_environment(
                    needs_hub_token=held.needs_hub_token, local=not self.engine.pace.survives_the_agent
                ),
                required_memory_bytes=held.required_memory_bytes,
                needs_hub_token=held.needs_hub_token,
            )
            submitted = self.ask(lambda: self.engine.submit(submission))
        except EngineUnreachable as exc:  # the engine is away, not the job: back to the queue, nothing counted
            self._engine_away(exc)
            attempt.release(f"{self.engine.name} did not answer: {exc}")
            self._forget(attempt)
            return
        except EngineError as exc:  # this engine refused it: another runner may take the job
            log.warning("attempt %s: %s", held.attempt_id, exc)
            attempt.fail(Outcome(category="infrastructure", message=f"{self.engine.name}: {exc}"))
            self._forget(attempt)
            return
        held.ref, held.submitted = submitted.ref or None, True
        attempt.save()
        attempt.last = submitted
        log.info("attempt %s submitted%s", held.attempt_id, f" as {submitted.ref}" if submitted.ref else "")
        self._beat(attempt, f"submitted to {self.engine.name}{submitted.where}")

    # -- tending ----------------------------------------------------------------------------------------------------

    def adopt(self) -> None:
        """The attempts a previous agent held: tended again from the next look (a lost lease cancels the job)."""
        for held in self.states.load():
            self.held[held.name] = Attempt(held, self.client, self.states)
            log.info("adopting attempt %s (%s)", held.attempt_id, held.ref or "not submitted yet")

    def tend(self) -> None:
        """One look at the engine, then every held attempt: heartbeat, outcome; and orphans cancelled."""
        try:
            listed = self.ask(self.engine.jobs)
        except EngineError as exc:  # away: heartbeat on what was last seen, the leases matter more
            self._engine_away(exc)
            for attempt in list(self.held.values()):
                if attempt.heartbeat_due():
                    self._beat(attempt, attempt.stage)
            return
        if self.engine_down is not None:
            log.info("%s answers again", self.engine.name)
            self.engine_down = None
        for name, attempt in list(self.held.items()):
            self._tend_one(attempt, listed.get(name))
        for name, job in listed.items():
            if name not in self.held and job.phase in ("pending", "running"):
                log.warning("cancelling %s (%s): no lease of this runner holds it", name, job.ref)
                self._cancel_quietly(job)

    def _tend_one(self, attempt: Attempt, job: EngineJob | None) -> None:
        if job is None and not attempt.held.submitted:
            self.submit(attempt)  # the previous agent died between remembering and submitting
            return
        if job is None:
            known = attempt.last or EngineJob(name=attempt.name, ref=attempt.held.ref or "", phase="gone")
            try:
                job = self.ask(lambda: self.engine.find(known, attempt.directory))
            except EngineError as exc:
                log.warning("could not look up %s: %s", known.ref, exc)
                return
            if attempt.name not in self.held:  # its lease went while the engine was asked
                return
        attempt.last = job
        if job.phase in FINISHED:
            self.finish(attempt, job)
            return
        if job.phase == "pending":
            if self._waited_too_long(attempt, job):
                return
            stage = f"waiting for {self.engine.name}: {job.reason or 'queued'}{job.where}"
        else:
            stage = job.reason or f"running on {self.engine.name}{job.where}"
        if attempt.heartbeat_due():
            self._beat(attempt, stage)
        else:
            attempt.stage = stage

    def _waited_too_long(self, attempt: Attempt, job: EngineJob) -> bool:
        held = attempt.held
        if held.pending_since is None:
            held.pending_since = time.time()
            attempt.save()
        waited = time.time() - held.pending_since
        if waited <= self.engine.pace.release_pending_after_seconds:
            return False
        reason = f"waited {waited:.0f} s in the {self.engine.name} queue ({job.reason or 'queued'}); handed back"
        log.info("attempt %s %s", held.attempt_id, reason)
        self._cancel_quietly(job)
        attempt.release(f"{job.ref_words} {reason}".strip())
        self._forget(attempt)
        return True

    def _trouble(self) -> str | None:
        return None if self.engine_down is None else f"{self.engine.name} did not answer ({self.engine_down})"

    def _beat(self, attempt: Attempt, stage: str) -> None:
        verdict = attempt.heartbeat(stage, self._trouble())
        if verdict != "ok":  # the lease is gone, or the evaluation was canceled: the job goes too
            self._stop(attempt)

    def finish(self, attempt: Attempt, job: EngineJob) -> None:
        """Over for the engine: results uploaded, the job's own outcome reported, or the engine's reason."""
        directory = attempt.directory
        code = directory.done_code()
        if code is None and job.phase != "preempted":
            attempt.ended_at = attempt.ended_at or time.monotonic()
            if time.monotonic() - attempt.ended_at < self.engine.pace.settle_seconds:
                return  # shared storage may show the job's last files a little after the engine says it ended
        attempt.stream_log(final=True)
        if code == 0 and directory.results.exists():
            self.spool.put(attempt.attempt_id, attempt.held.lease_token, directory)
            self.spool.flush()
        elif code is not None:
            outcome = directory.outcome()
            attempt.fail(outcome)
            if outcome.unfit and not self.engine.pace.survives_the_agent:
                self.fitness.failed(outcome.message or "this machine lacks what jobs need")
        elif job.phase == "preempted" or (self.stopping.is_set() and not self.engine.pace.survives_the_agent):
            # Taken away by the engine, or the signal that stops this agent reached its worker too.
            reason = f"{self._named(job)}: {job.reason or 'preempted'}"
            attempt.release(SIGTERM_REASON if self.stopping.is_set() else reason)
        else:
            words = self.engine.last_words(job, directory).strip()
            message = (
                f"{self._named(job)} ended {job.reason or 'without a word'} and the job wrote no outcome "
                "(killed, out of host memory, past its time limit or its node failed)"
            )
            more = f"\n--- {self.engine.name}'s output ---\n{words}" if words else ""
            attempt.fail(Outcome(category="infrastructure", message=message), more=more)
        self._forget(attempt)

    def _stop(self, attempt: Attempt) -> None:
        """The attempt is over for Corral: the engine's job goes too, and what the agent kept of it."""
        if attempt.last is not None:
            self._cancel_quietly(attempt.last)
        self._forget(attempt)

    def _cancel_quietly(self, job: EngineJob) -> None:
        try:
            self.ask(lambda: self.engine.cancel(job))
        except EngineError as exc:
            log.warning("could not cancel %s: %s", job.ref or job.name, exc)

    def _forget(self, attempt: Attempt) -> None:
        """Over for this runner, however it ended (a job run, canceled, handed back, lost): counted."""
        if self.held.pop(attempt.name, None) is not None:
            self.finished += 1
        attempt.forget()

    def _named(self, job: EngineJob) -> str:
        """ "Slurm job 1234": the engine and its job, to lead a message."""
        return f"{self.engine.name} {job.ref_words}".strip()

    def _engine_away(self, error: EngineError) -> None:
        if self.engine_down is None:
            log.warning("%s did not answer: %s; no job is taken until it does", self.engine.name, error)
        self.engine_down = str(error)

    def hand_back_all(self) -> None:
        """SIGTERM with hand-back: every attempt goes back to the queue, its job cancelled."""
        for attempt in list(self.held.values()):
            attempt.stream_log()
            attempt.release(SIGTERM_REASON)
            self._stop(attempt)
            log.info("attempt %s handed back to the queue; its job stopped", attempt.attempt_id)

    def on_sigterm(self, *_args: object) -> None:
        """The first SIGTERM drains (or hands the jobs back, with `hand_back_on_sigterm`); a second hands back."""
        if self.config.hand_back_on_sigterm or self.stopping.is_set():
            log.info("SIGTERM: handing the jobs held back to the queue, then stopping")
            self.handing_back.set()
        else:
            log.info("SIGTERM: finishing the jobs held, then stopping (a second SIGTERM hands them back)")
        self.stopping.set()
