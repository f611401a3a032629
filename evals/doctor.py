"""`corral-runner doctor`: what a job on this runner needs, checked one line at a time, each failure with its fix."""

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from corral_runner import hardware
from corral_runner.client import ServerClient, ServerError
from corral_runner.config import RunnerConfig
from corral_runner.executors.settings import LocalExecutor

GIB = 2**30
DISK_FLOOR = 10 * GIB  # below this, a model's weights (and lm-eval's datasets) do not fit


@dataclass(frozen=True)
class Check:
    ok: bool
    words: str  # what was found; on a failure, what to do about it


def checks(config: RunnerConfig) -> list[Check]:
    return [
        server_answers(config),
        token_works(config),
        lm_eval_installed(),
        *devices(config),
        *disk_space(config),
        sandbox(config),
    ]


def server_answers(config: RunnerConfig) -> Check:
    try:
        answer = httpx.get(f"{config.server.rstrip('/')}/readyz", timeout=10)
    except httpx.HTTPError as exc:
        return Check(False, f"server {config.server}: {type(exc).__name__}: check the URL and that it is up")
    ready = answer.status_code == 200
    return Check(ready, f"server {config.server}: {'ready' if ready else f'not ready ({answer.status_code})'}")


def token_works(config: RunnerConfig) -> Check:
    from corral_runner.loop import RunnerLoop

    client = ServerClient(config.server, config.token.get_secret_value(), retries=0)
    try:
        runner = client.verify(RunnerLoop(config, client).report())
    except ServerError as exc:
        return Check(False, f"token: {exc.detail} ({exc.status}): register again with a registration token")
    except httpx.HTTPError as exc:
        return Check(False, f"token: not checked ({type(exc).__name__})")
    finally:
        client.close()
    return Check(True, f"token: runner {runner.name} ({runner.state.value})")


def lm_eval_installed() -> Check:
    version = hardware.lm_eval_version()
    if version is None:
        return Check(False, "lm-eval: not installed: pip install 'corral[runner]'")
    return Check(True, f"lm-eval {version}")


def devices(config: RunnerConfig) -> list[Check]:
    """torch's build against the devices here (a cluster runner's jobs run on its nodes: not checked here)."""
    if not isinstance(config.executor, LocalExecutor):
        return [Check(True, f"devices: jobs run on {config.executor.kind}'s nodes, not checked here")]
    problem = hardware.device_problem(config.device)
    if problem is not None:
        return [Check(False, problem)]
    import torch

    found = [f"{device.count} x {device.kind} ({device.memory_bytes / GIB:.1f} GiB)" for device in hardware.detect()]
    where = f"CUDA {torch.version.cuda}" if torch.cuda.is_available() else "the CPU"
    return [Check(True, f"torch {torch.__version__}: jobs run on {config.device or where}; {', '.join(found)}")]


def disk_space(config: RunnerConfig) -> list[Check]:
    places: dict[str, Path] = {"work_dir": config.jobs_root}
    places["hf_cache_dir"] = config.hf_cache_dir or Path.home() / ".cache" / "huggingface"
    found = []
    for name, place in places.items():
        existing = next((folder for folder in (place, *place.parents) if folder.exists()), Path("/"))
        free = shutil.disk_usage(existing).free
        words = f"{name} {place}: {free / GIB:.1f} GiB free"
        found.append(
            Check(free >= DISK_FLOOR, words if free >= DISK_FLOOR else f"{words}: free space (10 GiB at least)")
        )
    return found


def sandbox(config: RunnerConfig) -> Check:
    if not config.sandbox:
        return Check(True, "sandbox: off (sandbox: false): jobs can read this runner's files")
    from corral_runner.sandbox import abi_version

    abi = abi_version()
    if abi:
        return Check(True, f"sandbox: Landlock ABI {abi} hides this runner's files from jobs")
    return Check(
        False,
        "sandbox: this kernel has no Landlock (Linux 5.13+): jobs could read this runner's files; upgrade the "
        "kernel, or set sandbox: false to accept that",
    )


def run(config: RunnerConfig, echo: Callable[[str], None]) -> int:
    """Every check, a line each; the number that failed."""
    failed = 0
    for check in checks(config):
        failed += not check.ok
        echo(f"{'ok  ' if check.ok else 'FAIL'} {check.words}")
    return failed
