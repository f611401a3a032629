"""A cluster runner against a real `corral serve`: registered through `corral-runner register` (the node shapes read
from the engine), its agent a real process, and waiting on what the server shows."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import OFFLINE, ROOT, Server

REPO = "corral-test/tiny"
SHA = "1" * 40
GIB = 2**30
TEST_GPU = {"kind": "nvidia-test-gpu", "memory_bytes": 8 * GIB}
AGENT = [sys.executable, "-m", "corral_runner"]
# Short leases and no retry delay: the faults play out in seconds.
SERVER_SETTINGS = {
    "CORRAL_HEARTBEAT_SECONDS": "1",
    "CORRAL_LEASE_SECONDS": "8",
    "CORRAL_REAPER_INTERVAL_SECONDS": "1",
    "CORRAL_RETRY_BACKOFF_SECONDS": "0",
}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    """Polls until `condition()` is truthy and returns it; a timeout names what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


class ClusterRunner:
    """A registered cluster runner: its config file, its agent process (started and killed by the test)."""

    def __init__(self, server: Server, root: Path, executor: dict[str, Any], env: dict[str, str]) -> None:
        self.server = server
        self.root = root
        self.env = os.environ | OFFLINE | env
        self.admin = {
            "Authorization": f"Bearer {server.corral('token', 'create', '--scope', 'admin', '--name', 'ops')}"
        }
        self.config = root / "runner.json"
        self.agent: subprocess.Popen[bytes] | None = None
        self.log = root / "agent.log"
        self.executor = executor

    def register(
        self, tiny_model: Path, *, max_concurrent_jobs: int = 2, labels: tuple[str, ...] = (), **config: Any
    ) -> dict[str, Any]:
        created = httpx.post(f"{self.server.url}/v1/models", json={"repo_id": REPO, "kind": "base"}, headers=self.admin)
        assert created.status_code == 201, created.text
        revision = httpx.post(f"{self.server.url}/v1/models/{REPO}/revisions", json={"sha": SHA}, headers=self.admin)
        assert revision.status_code == 201, revision.text
        return self.register_runner(
            {REPO: str(tiny_model)}, max_concurrent_jobs=max_concurrent_jobs, labels=labels, **config
        )

    def register_runner(
        self,
        local_models: dict[str, str],
        *,
        max_concurrent_jobs: int = 1,
        labels: tuple[str, ...] = (),
        **config: Any,
    ) -> dict[str, Any]:
        """`corral-runner register` with a registration token: the node shapes come from the engine."""
        self.config.write_text(
            json.dumps(
                {
                    "spool_dir": str(self.root / "spool"),
                    "work_dir": str(self.root / "agent"),
                    "local_models": local_models,
                    "claim_wait_seconds": 1,
                    "executor": self.executor,
                }
                | config
            )
        )
        self.config.chmod(0o600)
        answer = httpx.post(
            f"{self.server.url}/v1/runner-registration-tokens", json={"labels": list(labels)}, headers=self.admin
        )
        token = answer.json()
        registered = subprocess.run(
            [
                sys.executable,
                "-m",
                "corral_runner",
                "register",
                "--server",
                self.server.url,
                "--token",
                token["token"],
                "--name",
                "cluster",
                "--max-concurrent-jobs",
                str(max_concurrent_jobs),
                "--config",
                str(self.config),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=self.env,
        )
        assert registered.returncode == 0, registered.stderr
        runners = httpx.get(f"{self.server.url}/v1/runners", headers=self.admin).json()["items"]
        return dict(runners[0])

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.agent = subprocess.Popen(
                [*AGENT, "run", "--config", str(self.config)],
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: the agent gets no chance to tidy up (a crash, the OOM killer)."""
        if self.agent is not None:
            self.agent.kill()
            self.agent.wait()
            self.agent = None

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.terminate()
            self.agent.wait(timeout=60)
            self.agent = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def evaluate(self, **settings: Any) -> dict[str, Any]:
        body = {"model": REPO, "revision": SHA, "suite": "smoke", "precision": "fp32", "batch_size": 1, "limit": 4}
        answer = httpx.post(f"{self.server.url}/v1/evaluations", json=body | settings, headers=self.admin)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def evaluation(self, evaluation_id: str) -> dict[str, Any]:
        return dict(httpx.get(f"{self.server.url}/v1/evaluations/{evaluation_id}", headers=self.admin).json())

    def attempts(self, evaluation_id: str) -> list[dict[str, Any]]:
        shown = self.evaluation(evaluation_id)
        return [attempt for job in shown["jobs"] for attempt in job["attempts"]]

    def cancel(self, evaluation_id: str) -> None:
        answer = httpx.post(f"{self.server.url}/v1/evaluations/{evaluation_id}/cancel", headers=self.admin)
        assert answer.status_code == 200, answer.text
