"""The agent loop: claim (long-poll) → run lm-eval in the worker process → heartbeat with its progress and
stream its log → spool and upload the results (or report the failure) → next.

Finished results are written to the spool before the upload, so a server outage (or an agent restart)
never loses a finished run: the spool is re-sent at start and after every job.
"""

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from evals import hardware
from evals.client import ServerClient, ServerError
from evals.config import RunnerConfig
from evals.lm_eval_worker import model_key
from evals.protocol import ClaimedJob, ClaimEnvelope, JobRefused, JobSpec, Outcome
from evals.worker_handle import WorkerHandle

AGENT_PID = "CORRAL_AGENT_PID"
log = logging.getLogger("corral.runner")
EVALS_DIR = Path(__file__).resolve().parent
LOG_TAIL_BYTES = 4000


SIGTERM_REASON = "The runner was asked to stop (SIGTERM) and handed the job back."


class Agent:
    _offset = 0  # bytes of the current attempt's log the server has

    def __init__(self, config: RunnerConfig, client: ServerClient | None = None) -> None:
        self.config = config
        self.client = client or ServerClient(config.server, config.token.get_secret_value())
        self.stopping = threading.Event()  # SIGTERM: take no new job
        self.handing_back = threading.Event()  # and give the current one back to the queue
        self.worker: WorkerHandle | None = None

    def run(self, *, once: bool = False, max_jobs: int | None = None, until_idle: bool = False) -> int:
        """Returns the number of jobs run. `until_idle`: stop when a claim finds nothing."""
        self.client.verify(hardware.report())
        self.flush_spool()
        done = 0
        try:
            while not self.stopping.is_set():
                self._retire_idle_worker()
                try:
                    job = self.client.claim(0 if once or until_idle else self.config.claim_wait_seconds)
                except JobRefused:
                    continue  # the server was told why; nothing of it ran
                if job is None:
                    if once or until_idle:
                        break
                    continue
                if self.stopping.is_set():  # SIGTERM came during the long-poll: this job was never started
                    self._release(job.attempt_id, job.lease_token, SIGTERM_REASON)
                    break
                if self.refused(job):
                    continue
                self.execute(job)
                self.flush_spool()
                done += 1
                if once or (max_jobs is not None and done >= max_jobs):
                    break
        finally:
            self._stop_worker()
        return done

    def refused(self, job: ClaimedJob) -> bool:
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

    def execute(self, job: ClaimedJob) -> None:
        workdir = (self.config.work_dir / job.attempt_id).resolve()  # the worker runs elsewhere: absolute
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            self._run_job(job, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)  # the server has the log; the spool has the results

    def _run_job(self, job: ClaimedJob, workdir: Path, *, resubmitted: bool = False) -> None:
        attempt, lease = job.attempt_id, job.lease_token
        spec = JobSpec.of(  # the worker never sees the lease token
            job,
            include_path=str(EVALS_DIR / job.include_path) if job.include_path else None,
            local_path=self._local_path(job.model),
            device=self.config.device,
        )
        (workdir / "spec.json").write_text(spec.model_dump_json())
        log_path = workdir / "log.txt"
        log_path.touch()
        worker = self._worker_for(spec)
        try:
            worker.submit(workdir / "spec.json")
        except BrokenPipeError:  # it died while idle: a fresh one
            self._stop_worker()
            worker = self._worker_for(spec)
            worker.submit(workdir / "spec.json")
        outcome = self._watch(worker, attempt, lease, workdir, job.heartbeat_seconds)
        if outcome != "finished":
            log.info("job %s %s; lm-eval stopped", job.job_id, outcome)
            return
        self._offset = self._send_log(attempt, lease, log_path, self._offset)
        code = self._exit_code(worker, workdir)
        if not (workdir / "done").exists():  # the worker died without a word: a signal, the OOM killer
            self._stop_worker()
            if self.stopping.is_set():  # the signal was for all of us (e.g. systemd's control group)
                self._release(attempt, lease, SIGTERM_REASON)
                return
            if not resubmitted and b"corral: lm-eval" not in log_path.read_bytes():
                log.warning("the worker died before starting job %s; a fresh one takes it", job.job_id)
                self._run_job(job, workdir, resubmitted=True)
                return
            failure = Outcome(
                category="infrastructure",  # the machine, not the model: worth a try elsewhere
                message=f"the lm-eval worker died (exit status {code}: a negative number is the signal)",
            )
            self._report_failure(attempt, lease, failure, log_path)
            return
        if code != 0 or not self.config.warm_worker:
            self._stop_worker()  # a failed job ends its worker; a cold runner starts one per job
        else:
            worker.idle_since = time.monotonic()
        if code == 0 and (workdir / "results.json").exists():
            self._spool(attempt, lease, workdir)
            return
        failure_path = workdir / "outcome.json"
        failure = Outcome.model_validate_json(failure_path.read_text()) if failure_path.exists() else Outcome()
        self._report_failure(attempt, lease, failure, log_path, code)

    def _report_failure(self, attempt: str, lease: str, failure: Outcome, log_path: Path, code: int = 1) -> None:
        try:
            tail = log_path.read_bytes()[-LOG_TAIL_BYTES:].decode("utf-8", errors="replace")
        except OSError:  # the job never started
            tail = ""
        message = f"{failure.message or f'lm-eval exited with status {code}'}\n--- last log lines ---\n{tail}"
        try:
            self.client.fail(attempt, lease, failure.category, message)
        except (ServerError, httpx.TransportError) as exc:
            log.warning("could not report the failure of attempt %s: %s", attempt, exc)

    def _worker_for(self, spec: JobSpec) -> WorkerHandle:
        """The running worker if it holds this model (or can load it) with the same Hub token need, else a
        fresh one."""
        hub_token = spec.settings.needs_hub_token and spec.local_path is None
        key = json.dumps([model_key(spec), hub_token])
        if self.worker is not None and (self.worker.key != key or not self.worker.alive()):
            self._stop_worker()  # another model: a fresh process returns all the device memory
        if self.worker is None:
            # lm-eval runs task code (`!function` hooks): named variables only, no Corral credential, the Hub
            # token only for weights that may need it. The agent's pid: a worker whose agent died before it
            # could ask to die with it exits at once.
            env = self.config.job_environment(needs_hub_token=hub_token, local=True) | {AGENT_PID: str(os.getpid())}
            self.config.work_dir.mkdir(parents=True, exist_ok=True)
            hidden = self._private_paths() if self.config.sandbox else []
            self.worker = WorkerHandle(key, env, self.config.work_dir / "worker.log", hidden=hidden)
            log.info("started an lm-eval worker (pid %d)", self.worker.process.pid)
        return self.worker

    def _private_paths(self) -> list[Path]:
        """The runner's own files, made before the sandbox closes over them (one made later would be out of
        the sandbox's reach in the other direction: the worker could not see that it must not touch it)."""
        self.config.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.config.private_paths()

    def _stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def _retire_idle_worker(self) -> None:
        """A warm worker holds its model's memory: give it back when no job of that model came for a while."""
        if self.worker is not None and time.monotonic() - self.worker.idle_since > self.config.worker_idle_seconds:
            log.info("worker idle for %.0f s; stopping it", self.config.worker_idle_seconds)
            self._stop_worker()

    @staticmethod
    def _exit_code(worker: WorkerHandle, workdir: Path) -> int:
        done = workdir / "done"
        if done.exists():
            return int(json.loads(done.read_text())["code"])
        code = worker.exit_code()
        return code if code is not None else 1

    def _watch(self, worker: WorkerHandle, attempt: str, lease: str, workdir: Path, interval: float) -> str:
        """Heartbeat and stream the log until the job ends: "finished", or why lm-eval was stopped."""
        self._offset = 0
        while True:
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline:
                if (workdir / "done").exists() or not worker.alive():
                    return "finished"
                if self.handing_back.is_set():
                    return self._hand_back(attempt, lease, workdir)
                time.sleep(0.2)
            self._offset = self._send_log(attempt, lease, workdir / "log.txt", self._offset, final=False)
            try:
                try:
                    reply = self.client.heartbeat(attempt, lease, self._progress(workdir))
                except ServerError as exc:
                    if exc.status != 422:
                        raise
                    # Progress the server will not take (a task name it does not accept): the lease matters more.
                    log.warning("progress refused (%s); heartbeat without it", exc.detail)
                    reply = self.client.heartbeat(attempt, lease, {})
            except httpx.TransportError as exc:  # the server is away: keep working, the lease may survive it
                log.warning("heartbeat failed (%s); the job goes on", type(exc).__name__)
                continue
            except ServerError as exc:
                if exc.status in (403, 404, 409):  # the lease is gone: another runner has the job now
                    log.warning("attempt %s lost its lease (%s); stopping lm-eval", attempt, exc.detail)
                    self._kill_worker()
                    return "lost its lease"
                # A proxy or a restarting server (5xx, 429): keep working, the next heartbeat tries again.
                log.warning("heartbeat refused (%s); the job goes on", exc)
                continue
            if reply["cancel_requested"]:
                self._kill_worker()
                return "canceled by the server"

    def _hand_back(self, attempt: str, lease: str, workdir: Path) -> str:
        """Give the job back to the queue at once, for another runner (or this one, later), then stop lm-eval.
        Quick calls first: a supervisor's stop grace period (10 s for docker stop) is short."""
        self._offset = self._send_log(attempt, lease, workdir / "log.txt", self._offset, final=False)
        self._release(attempt, lease, SIGTERM_REASON)
        self._kill_worker()
        return "handed back to the queue"

    def _release(self, attempt: str, lease: str, reason: str) -> None:
        try:
            self.client.release(attempt, lease, reason)
        except (ServerError, httpx.TransportError) as exc:  # the lease will lapse and the reaper requeues it
            log.warning("could not hand back attempt %s: %s", attempt, exc)

    @staticmethod
    def _progress(workdir: Path) -> dict[str, Any]:
        try:
            return dict(json.loads((workdir / "progress.json").read_text()))
        except (OSError, ValueError):
            return {"stage": "starting lm-eval"}

    def _kill_worker(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def _send_log(self, attempt: str, lease: str, log_path: Path, offset: int, *, final: bool = True) -> int:
        """Send what the server lacks past `offset`; returns how much it has. While the job runs (`final=False`)
        one quick try, since more follows."""
        while True:
            try:
                with log_path.open("rb") as file:
                    file.seek(offset)
                    data = file.read(1024 * 1024)
            except OSError:  # not written yet
                return offset
            if not data:
                return offset
            try:
                sent = self.client.append_log(attempt, lease, offset, data, retries=None if final else 1)
            except (ServerError, httpx.TransportError) as exc:
                log.warning("log append refused: %s", exc)
                return offset
            if not final or sent <= offset:
                return sent
            offset = sent

    def _spool(self, attempt: str, lease: str, workdir: Path) -> None:
        self.config.spool_dir.mkdir(parents=True, exist_ok=True)  # made absolute by the config
        entry = {
            "attempt_id": attempt,
            "lease_token": lease,
            "results": json.loads((workdir / "results.json").read_text()),
            "samples": json.loads((workdir / "samples.json").read_text())
            if (workdir / "samples.json").exists()
            else None,
        }
        target = self.config.spool_dir / f"{attempt}.json"
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        # Mode 600 from the first byte: it holds a lease token.
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(json.dumps(entry))
        partial.replace(target)  # atomic: a crash leaves either nothing or a whole entry

    def flush_spool(self) -> None:
        """Upload every spooled result; keep what the server cannot take yet, drop what it never will."""
        if not self.config.spool_dir.exists():
            return
        for entry_path in sorted(self.config.spool_dir.glob("*.json")):
            entry = json.loads(entry_path.read_text())
            try:
                self.client.upload_result(entry["attempt_id"], entry["lease_token"], entry["results"], entry["samples"])
            except ServerError as exc:
                if exc.status < 500:
                    log.warning("spooled result of attempt %s refused (%s); dropped", entry["attempt_id"], exc)
                    self._report_refused_result(entry["attempt_id"], entry["lease_token"], exc)
                    entry_path.unlink()
                continue
            except Exception as exc:
                log.warning("server unreachable, result of attempt %s stays spooled: %s", entry["attempt_id"], exc)
                return
            entry_path.unlink()

    def _report_refused_result(self, attempt: str, lease: str, refusal: ServerError) -> None:
        """A result the server will never take fails the attempt now, with the server's reason, instead of
        leaving the lease to lapse into "no heartbeat" and the job to run again for nothing."""
        if refusal.status in (403, 404, 409):
            return  # the attempt is not ours any more (or is over): there is nothing left to report
        message = f"The server refused the results ({refusal.status}): {refusal.detail}"
        try:
            self.client.fail(attempt, lease, "harness_error", message[:20_000])
        except (ServerError, httpx.TransportError) as exc:
            log.warning("could not report the refused result of attempt %s: %s", attempt, exc)

    def _local_path(self, repo_id: str) -> str | None:
        local = self.config.local_models.get(repo_id)
        return str(local) if local is not None else None

    def on_sigterm(self, *_args: object) -> None:
        """The first SIGTERM drains (or hands the job back, with `hand_back_on_sigterm`); a second hands back."""
        if self.config.hand_back_on_sigterm or self.stopping.is_set():
            log.info("SIGTERM: handing the current job back to the queue, then stopping")
            self.handing_back.set()
        else:
            log.info("SIGTERM: finishing the current job, then stopping (a second SIGTERM hands it back)")
        self.stopping.set()
