"""No way in through an evaluation: a real `corral serve`, a real `corral-runner`, real lm-eval and transformers, and
a fake Hub holding repositories whose `custom_generate/generate.py` writes a marker file (or, where an admin
trusted it, reports what it could reach).

- a publish token asking for `custom_generate` (the attack as it was seen) is refused, and nothing runs;
- a server that hands over such settings anyway (a bug: written into its database here) meets a runner that
  refuses the job, as `harness_error`, before anything of it runs;
- a model repository carrying its own generate() is evaluated without running it, and without the runner's Hub
  token when the Hub says the repository is public;
- an admin's trust lets that code run only on runners labelled and configured for it, and there, in the sandbox,
  it reaches neither the runner's config (its tokens), nor its spool, nor the agent's memory or secrets.
"""

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral_runner.tiny import build_tiny_llama
from tests.support.fake_hub import FakeHub, llama_repo
from tests.support.probes import marker_code, probe_code
from tests.support.server import ROOT, Server

TINY = "corral-test/tiny"
TINY_SHA = "1" * 40
CUSTOM = "corral-test/custom-code"
CUSTOM_SHA = "c" * 40
EVIL = "attacker/evil"
# What the agent's surroundings hold and no job may see.
AGENT_SECRETS = {
    "CORRAL_DATABASE_URL": "postgresql://corral:db-password-of-the-server@db/corral",
    "CORRAL_HUB_TOKEN": "hf_server_token_never_for_jobs",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-of-the-operators-shell",
}
HF_TOKEN = "hf_runner_token_for_gated_weights"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def hub(tiny_model: Path, tmp_path: Path) -> Iterator[FakeHub]:
    weights = {path.name: path.read_bytes() for path in tiny_model.iterdir() if path.is_file()}
    with FakeHub().running() as fake:
        fake.add(llama_repo(EVIL, {"custom_generate/generate.py": marker_code(tmp_path / "probe" / "evil-ran")}))
        custom = weights | {"custom_generate/generate.py": marker_code(tmp_path / "probe" / "model-code-ran")}
        fake.add(llama_repo(CUSTOM, custom, sha=CUSTOM_SHA))
        yield fake


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, CORRAL_RETRY_BACKOFF_SECONDS="0")
    running.start()
    yield running
    running.stop()


class Setup:
    def __init__(self, server: Server, hub: FakeHub, tiny_model: Path, tmp_path: Path) -> None:
        self.server, self.hub, self.tmp_path = server, hub, tmp_path
        self.probe = tmp_path / "probe"  # made before the runner starts: where a job may write
        self.probe.mkdir()
        token = server.corral("token", "create", "--scope", "admin", "--name", "ops")
        self.admin = {"Authorization": f"Bearer {token}"}
        publish = server.corral("token", "create", "--scope", "publish", "--name", "ci")
        self.publish = {"Authorization": f"Bearer {publish}"}
        for repo, sha, snapshot in ((TINY, TINY_SHA, {}), (CUSTOM, CUSTOM_SHA, {"gated": False, "private": False})):
            self.post("/v1/models", {"repo_id": repo, "kind": "base"}, self.admin)
            self.post(f"/v1/models/{repo}/revisions", {"sha": sha, "snapshot": snapshot}, self.admin)
        machine = {"name": "cpu-box", "accelerators": [{"kind": "cpu", "memory_bytes": 8 * 2**30, "count": 1}]}
        runner = self.post("/v1/runners", machine, self.admin)
        self.runner_id = runner["runner"]["id"]
        self.config = tmp_path / "runner.json"
        self.spool = tmp_path / "spool"
        self.configure(token=runner["token"], local_models={TINY: str(tiny_model)})
        registered = self.agent("register", "--server", server.url, "--token", runner["token"])
        assert registered.returncode == 0, registered.stderr

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        answer = httpx.post(f"{self.server.url}{path}", json=body, headers=headers)
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    def configure(self, **settings: Any) -> None:
        document = json.loads(self.config.read_text()) if self.config.exists() else {}
        document |= {
            "server": self.server.url,
            "spool_dir": str(self.spool),
            "work_dir": str(self.tmp_path / "work"),
            "hf_cache_dir": str(self.tmp_path / "hf"),
            "hf_token": HF_TOKEN,
            "claim_wait_seconds": 1,
        } | settings
        self.config.write_text(json.dumps(document))
        self.config.chmod(0o600)

    def agent(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`corral-runner` as an operator starts it: from a shell holding secrets of its own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "CORRAL_"))}
        env |= AGENT_SECRETS | {"HF_ENDPOINT": self.hub.url, "HF_DATASETS_OFFLINE": "1"}
        command = [sys.executable, "-m", "corral_runner", *args, "--config", str(self.config)]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    def run_until_idle(self) -> str:
        done = self.agent("run", "--until-idle")
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    def evaluate(self, model: str = TINY, sha: str = TINY_SHA, **settings: Any) -> dict[str, Any]:
        body = {"model": model, "revision": sha, "suite": "smoke", "precision": "fp32", "batch_size": 1, "limit": 2}
        return dict(self.post("/v1/evaluations", body | settings, self.publish))

    def evaluation(self, evaluation_id: str) -> dict[str, Any]:
        return dict(httpx.get(f"{self.server.url}/v1/evaluations/{evaluation_id}", headers=self.admin).json())


@pytest.fixture
def setup(server: Server, hub: FakeHub, tiny_model: Path, tmp_path: Path) -> Setup:
    return Setup(server, hub, tiny_model, tmp_path)


def test_the_attack_as_seen_is_refused_and_nothing_runs(setup: Setup) -> None:
    body = {
        "model": TINY,
        "revision": TINY_SHA,
        "suite": "smoke",
        "gen_kwargs": {"custom_generate": EVIL, "trust_remote_code": True},
    }
    answer = httpx.post(f"{setup.server.url}/v1/evaluations", json=body, headers=setup.publish)
    assert answer.status_code == 422, answer.text
    assert "'custom_generate'" in answer.json()["detail"]
    assert "started an lm-eval worker" not in setup.run_until_idle()  # there was nothing to run
    assert not (setup.probe / "evil-ran").exists()
    assert not setup.hub.requests_for(EVIL)


def test_a_runner_refuses_settings_a_server_should_never_have_sent(setup: Setup) -> None:
    """A server bug, played by writing the hostile settings into its database behind its back."""
    hostile = setup.evaluate()
    with sqlite3.connect(setup.tmp_path / "corral.db") as database:
        database.execute(
            "UPDATE evaluations SET config = json_set(config, '$.gen_kwargs', json(?))",
            (json.dumps({"custom_generate": EVIL, "trust_remote_code": True, "temperature": 0}),),
        )
    output = setup.run_until_idle()
    shown = setup.evaluation(hostile["id"])
    assert shown["state"] == "failed", shown
    attempts = [attempt for job in shown["jobs"] for attempt in job["attempts"]]
    assert attempts  # the first refusal fails the evaluation: a harness_error is not retried
    for attempt in attempts:
        assert attempt["failure_category"] == "harness_error"
        assert attempt["failure_message"].startswith("corral-runner refused the job: settings.gen_kwargs")
        assert "'custom_generate' downloads custom_generate/generate.py" in attempt["failure_message"]
    assert "started an lm-eval worker" not in output  # refused before anything of it ran
    assert not (setup.probe / "evil-ran").exists()
    assert not setup.hub.requests_for(EVIL)


def test_a_repository_s_own_code_never_runs_untrusted_and_public_weights_get_no_token(setup: Setup) -> None:
    requested = setup.evaluate(CUSTOM, CUSTOM_SHA)
    setup.run_until_idle()
    shown = setup.evaluation(requested["id"])
    assert shown["state"] == "succeeded", [job["log_tail"][-3000:] for job in shown["jobs"] if job["log_tail"]]
    assert not (setup.probe / "model-code-ran").exists()
    fetched = [entry for entry in setup.hub.requests_for(CUSTOM) if entry.status in (200, 206)]
    assert fetched  # the weights came from the Hub...
    assert all(entry.authorization is None for entry in fetched)  # ...without the runner's token: public repo
    assert not any("custom_generate" in entry.path for entry in setup.hub.requests_for(CUSTOM))


def test_trusted_code_runs_only_where_allowed_and_reaches_none_of_the_runner_s_secrets(setup: Setup) -> None:
    report = setup.probe / "report.json"
    planted = setup.spool / "planted.partial"  # as a spooled result would hold a lease token
    probe = probe_code(report, [setup.config, planted], [setup.spool])
    setup.hub.repos[CUSTOM].commits[0].files["custom_generate/generate.py"] = probe
    path = f"/v1/models/{CUSTOM}/revisions/{CUSTOM_SHA}/code-trust"
    # Only an admin trusts code, by commit.
    refused = httpx.put(f"{setup.server.url}{path}", json={"reason": "reviewed"}, headers=setup.publish)
    assert refused.status_code == 403
    trusted = httpx.put(f"{setup.server.url}{path}", json={"reason": "reviewed at this commit"}, headers=setup.admin)
    assert trusted.status_code == 200, trusted.text
    assert trusted.json()["code_trust"]["reason"] == "reviewed at this commit"
    # No runner is labelled for trusted code yet: no runner could hold it.
    body = {"model": CUSTOM, "revision": CUSTOM_SHA, "suite": "smoke", "precision": "fp32", "limit": 2}
    answer = httpx.post(f"{setup.server.url}/v1/evaluations", json=body, headers=setup.publish)
    assert answer.status_code == 409, answer.text
    assert "trusted-code" in answer.text
    labelled = httpx.patch(
        f"{setup.server.url}/v1/runners/{setup.runner_id}", json={"labels": ["trusted-code"]}, headers=setup.admin
    )
    assert labelled.status_code == 200, labelled.text

    # Labelled, but its operator has not allowed remote code: the runner refuses with the reason.
    first = setup.evaluate(CUSTOM, CUSTOM_SHA)
    assert first["config"]["trust_remote_code"] is True
    setup.run_until_idle()
    shown = setup.evaluation(first["id"])
    assert shown["state"] == "failed", shown
    assert "does not allow it; set allow_remote_code" in shown["jobs"][0]["attempts"][0]["failure_message"]
    assert not report.exists()

    setup.configure(allow_remote_code=True)
    setup.spool.mkdir(exist_ok=True)
    planted.write_text("lease-token-of-another-attempt")
    second = setup.evaluate(CUSTOM, CUSTOM_SHA, force=True)
    setup.run_until_idle()
    shown = setup.evaluation(second["id"])
    assert shown["state"] == "succeeded", shown
    seen = json.loads(report.read_text())  # the trusted code ran...
    # ...and reached none of the runner's secrets: not its config (the runner and Hub tokens), not its spool,
    # not the agent's memory, not the agent's environment or its own.
    assert seen["files"] == {str(setup.config): "refused: PermissionError", str(planted): "refused: PermissionError"}
    assert seen["overwrite"] == seen["files"]
    # A folder's names can be listed (an attempt's id is no secret), never what the files hold.
    # (held/: the lease files of the attempts the runner holds, this one's among them; refused like the rest.)
    assert seen["folders"] == {str(setup.spool): "read: ['held', 'planted.partial']"}
    assert seen["agent_memory"] == "refused: PermissionError"
    assert seen["agent_environ"].startswith("read: ")  # the agent started itself again without its secrets
    shown_to_the_job = json.dumps(seen)
    runner_token = json.loads(setup.config.read_text())["token"]
    for secret in [*AGENT_SECRETS.values(), HF_TOKEN, runner_token, "lease-token-of-another-attempt"]:
        assert secret not in shown_to_the_job
    assert not [name for name in seen["environment"] if name.startswith("CORRAL_") and name != "CORRAL_AGENT_PID"]
    assert "sandbox: Landlock" in shown["jobs"][0]["log_tail"]
    # Withdrawn: new requests run without the code again, as before it was trusted.
    withdrawn = httpx.delete(f"{setup.server.url}{path}", headers=setup.admin)
    assert withdrawn.status_code == 204
    assert "trust_remote_code" not in setup.evaluate(CUSTOM, CUSTOM_SHA, force=True)["config"]
