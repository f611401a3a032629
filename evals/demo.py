"""`corral-runner demo`: the whole loop on one machine without a GPU, beside a running `corral serve`.

It creates a runner, builds a tiny Llama checkpoint, records it as a model with a revision, requests the smoke
suite, runs the jobs with this agent (lm-eval for real, on the CPU) and prints the leaderboard.
"""

import socket
from collections.abc import Callable
from pathlib import Path

import httpx

from corral_runner import hardware
from corral_runner.config import RunnerConfig
from corral_runner.loop import RunnerLoop
from corral_runner.tiny import build_tiny_llama

REPO = "corral-demo/tiny-llama"
SHA = "d" * 40


def run_demo(server: str, admin_token: str, state: Path, echo: Callable[[str], None]) -> int:
    state = state.resolve()
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60) as admin:
        try:
            admin.get("/readyz").raise_for_status()
        except httpx.HTTPError as exc:
            echo(
                f"corral-runner demo: no Corral server answers at {server} ({type(exc).__name__}): start one with "
                "`corral serve`, or pass --server"
            )
            return 2
        return _demo(admin, server, state, echo)


def _demo(admin: httpx.Client, server: str, state: Path, echo: Callable[[str], None]) -> int:
    model_dir = state / "tiny-llama"
    if not (model_dir / "config.json").exists():
        echo(f"building a tiny Llama checkpoint in {model_dir}")
        build_tiny_llama(model_dir)
    if admin.get(f"/v1/models/{REPO}").status_code == 404:
        admin.post("/v1/models", json={"repo_id": REPO, "kind": "base"}).raise_for_status()
        admin.post(f"/v1/models/{REPO}/revisions", json={"sha": SHA, "ref": "main"}).raise_for_status()
    name = f"demo-{socket.gethostname().split('.')[0]}"[:100]
    machine = {
        "accelerators": [device.model_dump() for device in hardware.detect()],
        "backends": hardware.backends(),
        "lm_eval_version": hardware.lm_eval_version(),
    }
    created = admin.post("/v1/runners", json={"name": name, **machine, "max_concurrent_jobs": 2})
    if created.status_code == 409:  # a runner of that name exists: give it a fresh token
        runners = admin.get("/v1/runners", params={"limit": 200}).json()["items"]
        runner_id = next(runner["id"] for runner in runners if runner["name"] == name)
        created = admin.post(f"/v1/runners/{runner_id}/token")
    created.raise_for_status()
    config = RunnerConfig.model_validate(
        {
            "server": server,
            "token": created.json()["token"],
            "spool_dir": str(state / "spool"),
            "work_dir": str(state / "work"),
            "local_models": {REPO: str(model_dir)},
            "claim_wait_seconds": 1,
        }
    )
    body = {"model": REPO, "revision": SHA, "suite": "smoke", "precision": "fp32", "batch_size": 1}
    evaluation = admin.post("/v1/evaluations", json=body)
    evaluation.raise_for_status()
    echo(f"evaluation {evaluation.json()['id']}: {evaluation.json()['state']}; running its jobs with lm-eval")
    RunnerLoop(config).run(until_idle=True)
    shown = admin.get(f"/v1/evaluations/{evaluation.json()['id']}").json()
    echo(f"evaluation {shown['state']}, average {shown['average']}")
    echo(admin.get("/v1/leaderboards/smoke", params={"format": "markdown"}).text)
    echo(f"open {server}/leaderboards/smoke and {server}/models/{REPO} in a browser")
    return 0 if shown["state"] == "succeeded" else 1
