"""Waiting for a `corral serve` process started by a test or a benchmark."""

import subprocess
import time

import httpx


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
