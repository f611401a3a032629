"""A runner that just works, and says so when it cannot: it finds its device by itself (a CPU runner set up as
the README says needs no hand edit), a job that fails because the machine lacks CUDA is the machine's failure
(retried elsewhere) and the runner takes no more jobs until the device check passes, and `corral-runner` says what
is wrong in one line, never a traceback."""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral_runner.tiny import build_tiny_llama
from tests.support.server import OFFLINE, ROOT, Server
from tests.test_runner_e2e import evaluation, prepare, request_smoke, runner


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, CORRAL_RETRY_BACKOFF_SECONDS="0")
    running.start()
    yield running
    running.stop()


def agent(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "corral_runner", *args, *(["--config", str(config)] if config else [])]
    return subprocess.run(command, cwd=ROOT, env={**os.environ, **OFFLINE}, capture_output=True, text=True)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_runner_without_cuda_told_to_use_it_fails_the_job_as_its_own_and_waits_for_the_device_check(
    server: Server, tiny_model: Path, tmp_path: Path
) -> None:
    admin, config = prepare(server, tiny_model, tmp_path)
    settings: dict[str, Any] = json.loads(config.read_text())
    config.write_text(json.dumps(settings | {"device": "cuda"}))  # a hand edit that does not fit this machine
    first = request_smoke(server, admin)
    process = runner(config, "--until-idle")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    job = evaluation(server, first["id"])["jobs"][0]
    [attempt] = job["attempts"]
    # The machine's failure, not the model's: retried, on another runner or this one once it is fixed.
    assert attempt["failure_category"] == "infrastructure", attempt
    assert "Torch not compiled with CUDA enabled" in attempt["failure_message"]
    assert job["state"] == "queued"
    # And this runner took nothing more: the other shard waits too, untouched.
    assert "no job is taken until the device check passes" in output
    assert all(not other["attempts"] for other in evaluation(server, first["id"])["jobs"][1:])
    # The same check, by hand: one line that says what to fix.
    checked = agent("doctor", config=config)
    assert checked.returncode == 1
    assert "FAIL torch" in checked.stdout
    assert "is a CPU build but the runner's config asks for cuda" in checked.stdout
    assert "Traceback" not in checked.stdout + checked.stderr
    # Fixed (the setting removed: the runner finds the CPU itself), the job runs.
    config.write_text(json.dumps(settings))
    process = runner(config, "--until-idle")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert evaluation(server, first["id"])["state"] == "succeeded", output


def test_the_device_check_passes_on_this_machine_and_says_where_jobs_run(
    server: Server, tiny_model: Path, tmp_path: Path
) -> None:
    _, config = prepare(server, tiny_model, tmp_path)
    checked = agent("doctor", config=config)
    lines = checked.stdout.splitlines()
    assert any(line.startswith("ok   server ") for line in lines), checked.stdout
    assert any(line.startswith("ok   token: runner cpu-box") for line in lines), checked.stdout
    assert any(line.startswith("ok   lm-eval 0.4.13") for line in lines), checked.stdout
    assert any(line.startswith("ok   torch ") and "jobs run on the CPU" in line for line in lines), checked.stdout
    assert any(line.startswith("ok   sandbox: Landlock") for line in lines), checked.stdout


def test_a_runner_rotates_its_own_token_into_its_config_and_the_old_one_stops_working(
    server: Server, tiny_model: Path, tmp_path: Path
) -> None:
    _, config = prepare(server, tiny_model, tmp_path)
    old = json.loads(config.read_text())["token"]
    config.chmod(0o600)
    rotated = agent("rotate-token", config=config)
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(config.read_text())["token"]
    assert new != old
    assert new not in rotated.stdout + rotated.stderr
    assert config.stat().st_mode & 0o077 == 0
    report = {"accelerators": [], "backends": ["hf"]}
    refused = httpx.post(f"{server.url}/v1/runner/verify", json=report, headers={"Authorization": f"Bearer {old}"})
    assert refused.status_code == 401
    assert agent("doctor", config=config).stdout.count("ok   token: runner cpu-box") == 1
    # Rotating again with a token the server no longer knows: one line, the file untouched.
    config.write_text(json.dumps(json.loads(config.read_text()) | {"token": old}))
    again = agent("rotate-token", config=config)
    assert again.returncode == 1
    assert "Traceback" not in again.stderr
    assert again.stderr.startswith("corral-runner: the server refused: "), again.stderr
    assert again.stderr.strip().endswith("(401)"), again.stderr
    assert json.loads(config.read_text())["token"] == old


def test_no_traceback_reaches_a_person() -> None:
    missing = agent("doctor", config=Path("/nonexistent/runner.json"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "corral-runner: no runner configuration at /nonexistent/runner.json: run "
        "`corral-runner register --server URL --token TOKEN` first"
    )
    url = f"http://127.0.0.1:{closed_port()}"
    demo = agent("demo", "--admin-token", "crl_x", "--server", url)
    assert demo.returncode == 2
    assert demo.stdout.strip().startswith(f"corral-runner demo: no Corral server answers at {url} (ConnectError)")
    assert "Traceback" not in demo.stdout + demo.stderr
    register = agent("register", "--server", url, "--token", "crlreg_x", config=Path("/tmp/corral-no-such.json"))
    assert register.returncode == 1
    assert register.stderr.strip().startswith("corral-runner: the server did not answer (ConnectError")
    assert "Traceback" not in register.stdout + register.stderr


def test_an_unusable_configuration_is_named_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "runner.json"
    config.write_text(json.dumps({"server": "http://x", "token": "crl_x", "job_env": {"CORRAL_TOKEN": "x"}}))
    done = agent("run", config=config)
    assert done.returncode == 2
    assert done.stderr.startswith(f"corral-runner: the configuration at {config} cannot be used:")
    assert "CORRAL_TOKEN" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
