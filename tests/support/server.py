"""Waiting for a `corral serve` process started by a test or a benchmark."""

import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx

from tests.support.databases import offline_environment

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(base_url: str, process: "subprocess.Popen[bytes]", timeout: float = 60.0) -> None:
    """Until /readyz answers 200; raises if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"corral serve exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("corral serve did not become ready")
        time.sleep(0.2)


class Server:
    """A real `corral serve` on the embedded database, in its own directory."""

    def __init__(self, workdir: Path, **settings: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        defaults = {
            "CORRAL_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'corral.db'}",
            "CORRAL_HEARTBEAT_SECONDS": "1",
            "CORRAL_LOG_LEVEL": "WARNING",
        }
        self.env = offline_environment(**(defaults | settings))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "corral", "serve", "--port", str(self.port)], cwd=self.workdir, env=self.env
        )
        wait_until_ready(self.url, self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def corral(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "corral", *args], cwd=self.workdir, env=self.env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()
