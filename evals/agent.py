"""The agent loop: claim (long-poll) → run lm-eval in a child process → heartbeat and stream its log →
spool and upload the results (or report the failure) → next.

Finished results are written to the spool before the upload, so a server outage (or an agent restart)
never loses a finished run: the spool is re-sent at start and after every job.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from evals import hardware
from evals.client import ServerClient, ServerError
from evals.config import RunnerConfig

log = logging.getLogger("corral.runner")
EVALS_DIR = Path(__file__).resolve().parent
KILL_GRACE_SECONDS = 10
LOG_TAIL_BYTES = 4000


class Agent:
    _offset = 0  # bytes of the current attempt's log the server has

    def __init__(self, config: RunnerConfig, client: ServerClient | None = None) -> None:
        self.config = config
        self.client = client or ServerClient(config.server, config.token.get_secret_value())
        self.stopping = threading.Event()  # SIGTERM: finish the current job, take no new one
        self.child: subprocess.Popen[bytes] | None = None

    def run(self, *, once: bool = False, max_jobs: int | None = None, until_idle: bool = False) -> int:
        """Returns the number of jobs run. `until_idle`: stop when a claim finds nothing."""
        self.client.verify(hardware.report())
        self.flush_spool()
        done = 0
        while not self.stopping.is_set():
            job = self.client.claim(0 if once or until_idle else self.config.claim_wait_seconds)
            if job is None:
                if once or until_idle:
                    break
                continue
            self.execute(job)
            self.flush_spool()
            done += 1
            if once or (max_jobs is not None and done >= max_jobs):
                break
        return done

    def execute(self, job: dict[str, Any]) -> None:
        attempt, lease = job["attempt_id"], job["lease_token"]
        workdir = (self.config.work_dir / attempt).resolve()  # the child runs elsewhere: absolute paths only
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        spec = {**job, "local_path": self._local_path(job["model"]), "device": self.config.device}
        spec["include_path"] = str(EVALS_DIR / job["include_path"]) if job.get("include_path") else None
        spec.pop("lease_token")  # the child never needs it
        (workdir / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        if self.config.hf_token is not None:
            env["HF_TOKEN"] = self.config.hf_token.get_secret_value()
        if self.config.hf_cache_dir is not None:
            env["HF_HOME"] = str(self.config.hf_cache_dir)
        log_path = workdir / "log.txt"
        with log_path.open("wb") as output:
            # The child runs beside the task files: lm-eval resolves their relative data_files from there.
            self.child = subprocess.Popen(
                [sys.executable, "-m", "evals.execute", str(workdir / "spec.json")],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=spec["include_path"] or workdir,
                env=env,
                start_new_session=True,  # a cancel kills its whole process group
            )
            canceled = self._watch(attempt, lease, log_path, job["heartbeat_seconds"])
        code = self.child.wait()
        self.child = None
        if canceled:
            log.info("job %s canceled by the server; child stopped", job["job_id"])
            return
        self._send_log(attempt, lease, log_path)
        results = workdir / "results.json"
        if code == 0 and results.exists():
            self._spool(attempt, lease, workdir)
            return
        outcome = workdir / "outcome.json"
        failure = json.loads(outcome.read_text()) if outcome.exists() else {"category": "harness_error"}
        tail = log_path.read_bytes()[-LOG_TAIL_BYTES:].decode("utf-8", errors="replace")
        message = f"{failure.get('message', f'lm-eval exited with status {code}')}\n--- last log lines ---\n{tail}"
        try:
            self.client.fail(attempt, lease, failure["category"], message)
        except (ServerError, httpx.TransportError) as exc:
            log.warning("could not report the failure of attempt %s: %s", attempt, exc)

    def _watch(self, attempt: str, lease: str, log_path: Path, interval: float) -> bool:
        """Heartbeat and stream the log until the child exits; True if the server asked to cancel."""
        assert self.child is not None
        self._offset = 0
        while True:
            deadline = time.monotonic() + interval
            while self.child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.child.poll() is not None:
                return False
            self._send_log(attempt, lease, log_path)
            try:
                reply = self.client.heartbeat(attempt, lease, {"stage": "running lm-eval"})
            except httpx.TransportError as exc:  # the server is away: keep working, the lease may survive it
                log.warning("heartbeat failed (%s); the job goes on", type(exc).__name__)
                continue
            except ServerError as exc:
                if exc.status == 409:  # the lease is gone: another runner has the job now
                    log.warning("attempt %s lost its lease (%s); stopping the child", attempt, exc.detail)
                    self._kill()
                    return True
                raise
            if reply["cancel_requested"]:
                self._kill()
                return True

    def _send_log(self, attempt: str, lease: str, log_path: Path) -> None:
        data = log_path.read_bytes()[self._offset :]
        if not data:
            return
        try:
            self._offset = self.client.append_log(attempt, lease, self._offset, data[: 1024 * 1024])
        except (ServerError, httpx.TransportError) as exc:
            log.warning("log append refused: %s", exc)

    def _kill(self) -> None:
        if self.child is None or self.child.poll() is not None:
            return
        os.killpg(self.child.pid, signal.SIGTERM)
        try:
            self.child.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.child.pid, signal.SIGKILL)

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
        partial.write_text(json.dumps(entry))
        partial.replace(target)  # atomic: a crash leaves either nothing or a whole entry
        target.chmod(0o600)  # it holds a lease token

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
                    entry_path.unlink()
                continue
            except Exception as exc:
                log.warning("server unreachable, result of attempt %s stays spooled: %s", entry["attempt_id"], exc)
                return
            entry_path.unlink()

    def _local_path(self, repo_id: str) -> str | None:
        local = self.config.local_models.get(repo_id)
        return str(local) if local is not None else None

    def drain(self, *_args: object) -> None:
        log.info("SIGTERM: finishing the current job, then stopping")
        self.stopping.set()
