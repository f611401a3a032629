"""Weights through huggingface_hub, from the fake Hub: a gated repo pinned to a commit, fetched with the runner's
token into its cache directory; and what the worker reports when the Hub says no or cannot be reached."""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral_runner.tiny import build_tiny_llama
from tests.support.fake_hub import FakeHub, llama_repo
from tests.test_runner_worker import SMOKE, job_spec

GATED = "corral-test/gated-tiny"
SHA = "a" * 40
TOKEN = "hf_approved_for_the_test"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    model = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")
    files = {path.name: path.read_bytes() for path in model.iterdir() if path.is_file()}
    with FakeHub().running() as fake:
        fake.add(llama_repo(GATED, files, sha=SHA, gated="manual", approved_tokens={TOKEN}))
        yield fake


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_worker(spec: Path, endpoint: str, cache: Path, token: str | None) -> subprocess.Popen[bytes]:
    """The lm-eval child as the agent starts it: the runner's Hub token and cache directory in its environment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"}
    }
    env |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(cache), "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if token:
        env["HF_TOKEN"] = token
    return subprocess.Popen(
        [sys.executable, "-m", "corral_runner.lm_eval_worker", str(spec)], cwd=SMOKE, env=env, stdout=subprocess.DEVNULL
    )


def hub_spec(directory: Path, repo: str) -> Path:
    spec = job_spec(directory, Path("unused"), ["corral_smoke_mc"])
    document = json.loads(spec.read_text())
    document |= {"model": repo, "revision": SHA, "local_path": None}
    spec.write_text(json.dumps(document))
    return spec


def test_weights_come_from_the_hub_at_the_pinned_commit_and_failures_are_classified(
    hub: FakeHub, tmp_path: Path
) -> None:
    cache = tmp_path / "hf-cache"
    jobs = {
        "approved": start_worker(hub_spec(tmp_path / "approved", GATED), hub.url, cache, TOKEN),
        "no token": start_worker(hub_spec(tmp_path / "no-token", GATED), hub.url, tmp_path / "c2", None),
        "unknown repo": start_worker(hub_spec(tmp_path / "unknown", "corral-test/no"), hub.url, tmp_path / "c3", None),
        "hub down": start_worker(
            hub_spec(tmp_path / "down", GATED), f"http://127.0.0.1:{closed_port()}", tmp_path / "c4", TOKEN
        ),
    }
    codes = {name: process.wait(timeout=600) for name, process in jobs.items()}
    assert codes == {"approved": 0, "no token": 1, "unknown repo": 1, "hub down": 1}

    results = json.loads((tmp_path / "approved" / "results.json").read_text())
    assert set(results["results"]) == {"corral_smoke_mc"}
    assert f"pretrained={GATED},revision={SHA}" in results["config"]["model_args"]
    # Fetched at the pinned commit into the runner's cache directory, with the runner's token.
    snapshot = cache / "hub" / "models--corral-test--gated-tiny" / "snapshots" / SHA
    assert (snapshot / "config.json").exists()
    assert any(path.name.endswith(".safetensors") for path in snapshot.iterdir())
    fetched = [entry for entry in hub.requests_for(GATED) if entry.status in (200, 206)]
    assert fetched
    assert all(entry.authorization == f"Bearer {TOKEN}" for entry in fetched)

    def category(name: str) -> str:
        outcome = json.loads((tmp_path / name / "outcome.json").read_text())
        return str(outcome["category"])

    # Gated and this runner has no token for it: another runner's token may open it, so it is retried.
    assert category("no-token") == "infrastructure"
    assert category("unknown") == "model_error"  # no runner can help: the evaluation fails with the reason
    assert category("down") == "infrastructure"  # the network: worth retrying elsewhere or later
