"""The agent's handle on its lm-eval worker: a child process (`python -m evals.lm_eval_worker --worker`) that runs the
jobs it is handed and keeps the last model loaded, so the next job of the same model starts at once."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

KILL_GRACE_SECONDS = 10


class WorkerHandle:
    def __init__(self, key: str, env: dict[str, str], log_path: Path, *, hidden: list[Path]) -> None:
        self.key = key  # jobs with this model key can run here (evals.lm_eval_worker.model_key)
        self.idle_since = time.monotonic()
        command = [sys.executable, "-m", "evals.lm_eval_worker", "--worker"]
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

    def submit(self, spec_path: Path) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{spec_path}\n".encode())
        self.process.stdin.flush()

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_code(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        """Let it finish and exit: closing stdin is its signal."""
        self._close_stdin()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=KILL_GRACE_SECONDS)
        self.kill()

    def kill(self) -> None:
        """Stop the job now: SIGTERM to the process group, then SIGKILL to whatever of it is left (vLLM's
        engine processes outlive their parent otherwise, holding GPU memory)."""
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
