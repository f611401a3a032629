"""The Python client (`app.client`) and the `corral` commands over HTTP, against a real `corral serve` on its
embedded database: login, browsing, requesting, following logs, cancelling, runners and tokens, and the
errors a person meets (a stopped server, a bad token, an unknown model) as one line each, never a traceback."""

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_origin

import httpx
import pytest

from corral.client import ApiError, AsyncCorral, Corral, ServerUnreachable
from corral.client.calls import retry_after
from corral.evaluations.schemas import EvaluationCreate
from corral.runners.schemas import RegistrationTokenCreate, RunnerUpdate
from corral.tokens.schemas import TokenCreate
from tests.support.cluster import wait_for
from tests.support.evaluations import HARNESS
from tests.support.server import ROOT, Server, free_port

REPO = "corral-test/tiny"
SHA = "2" * 40


class Session:
    """One served Corral with an admin token, a model with a revision, and a runner to play the protocol."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = server.url
        self.admin = server.corral("token", "create", "--scope", "admin", "--name", "ops").splitlines()[-1]
        headers = {"Authorization": f"Bearer {self.admin}"}
        assert httpx.post(f"{self.url}/v1/models", json={"repo_id": REPO, "kind": "base"}, headers=headers).is_success
        revision = httpx.post(f"{self.url}/v1/models/{REPO}/revisions", json={"sha": SHA}, headers=headers)
        assert revision.is_success, revision.text
        machine = {
            "name": "box",
            "accelerators": [{"kind": "cpu", "memory_bytes": 8 * 2**30, "count": 1}],
            "backends": ["hf"],
            "lm_eval_version": HARNESS,
        }
        created = httpx.post(f"{self.url}/v1/runners", json=machine, headers=headers).json()
        self.runner_id = created["runner"]["id"]
        self.runner = {"Authorization": f"Bearer {created['token']}"}

    def claim(self) -> dict[str, Any]:
        answer = httpx.post(f"{self.url}/v1/runner/jobs/claim", params={"wait": 0}, headers=self.runner)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def append_log(self, claimed: dict[str, Any], offset: int, data: bytes) -> None:
        headers = {**self.runner, "Corral-Lease-Token": claimed["lease_token"], "Content-Type": "text/plain"}
        headers["Content-Range"] = f"bytes {offset}-{offset + len(data) - 1}"
        answer = httpx.patch(
            f"{self.url}/v1/runner/attempts/{claimed['attempt_id']}/log", content=data, headers=headers
        )
        assert answer.status_code == 202, answer.text


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    server = Server(tmp_path_factory.mktemp("served"))
    server.start()
    try:
        yield Session(server)
    finally:
        server.stop()


def corral(*args: str, home: Path, stdin: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`corral ARGS` as a person runs it: its own config directory, no CORRAL_* settings from the tests."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("CORRAL_")}
    done = subprocess.run(
        [sys.executable, "-m", "corral", *args],
        cwd=home,
        env={**clean, "XDG_CONFIG_HOME": str(home / "config"), **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def home(tmp_path: Path, session: Session) -> Path:
    code, _out, err = corral("login", "--server", session.url, home=tmp_path, stdin=session.admin + "\n")
    assert code == 0, err
    return tmp_path


def test_login_stores_the_server_and_token_privately_and_every_command_uses_them(
    session: Session, tmp_path: Path
) -> None:
    code, out, err = corral("login", "--server", session.url, home=tmp_path, stdin=session.admin + "\n")
    assert code == 0, err
    stored = tmp_path / "config" / "corral" / "login.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert json.loads(stored.read_text()) == {"server": session.url, "token": session.admin}
    assert "as token 'ops' (admin)" in out
    code, out, err = corral("whoami", home=tmp_path)
    assert code == 0, err
    assert session.url in out
    assert "login.json" in out
    assert "admin" in out
    assert session.admin not in out + err  # the secret is never printed back
    code, out, _ = corral("logout", home=tmp_path)
    assert code == 0
    assert not stored.exists()
    code, out, _ = corral("whoami", home=tmp_path)
    assert "none: run `corral login`" in out


def test_a_bad_token_at_login_is_refused_in_one_line_and_nothing_is_stored(session: Session, tmp_path: Path) -> None:
    code, _out, err = corral("login", "--server", session.url, "--token", "crl_nope_nope", home=tmp_path)
    assert code == 1
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert f"GET {session.url}/v1/tokens/current: 401" in err
    assert "corral login" in err
    assert not (tmp_path / "config" / "corral" / "login.json").exists()


def test_a_stopped_server_is_named_with_the_fix_and_no_traceback(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _out, err = corral("models", "list", "--server", url, home=tmp_path)
    assert code == 1
    assert err.strip() == (
        f"corral: cannot reach Corral at {url} (connection refused): is the server running? "
        "Pass --server or run `corral login --server URL`"
    )


def test_models_list_filters_on_sizes_people_write_and_prints_tables_json_and_records(
    session: Session, home: Path
) -> None:
    code, out, err = corral("models", "list", "--family", "llama-3.1", "--max-parameters", "8B", "--json", home=home)
    assert code == 0, err
    listed = json.loads(out)
    assert {model["repo_id"] for model in listed} == {"meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"}
    code, out, err = corral("models", "list", "--family", "llama-3.1", "--max-parameters", "8B", home=home)
    lines = out.splitlines()  # not a terminal: tab-separated, a header line first
    assert lines[0].split("\t") == ["model", "name", "family", "kind", "parameters", "licence", "released"]
    assert "meta-llama/Llama-3.1-8B\tLlama 3.1 8B\tllama-3.1\tbase\t8.0 B\tllama3.1\t2024-07-23" in lines
    code, out, err = corral("models", "list", "--max-parameters", "eight", home=home)
    assert code == 2
    assert "--max-parameters" in err
    assert "8B" in err
    code, out, err = corral("models", "show", "meta-llama/Llama-3.1-405B", home=home)
    assert code == 0, err
    assert "405.9 B" in out
    assert "126 layers of 16,384; 128 heads (8 for keys and values)" in out
    assert "https://huggingface.co/meta-llama/Llama-3.1-405B" in out
    code, out, err = corral("models", "show", "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", home=home)
    assert code == 0, err
    assert "active        17.2 B" in out
    assert "128 experts in every second layer, 1 active per token" in out
    assert "stored        403.1 GiB" in out  # 432,853,249,024 bytes as stored, not 401.6 GB at a byte a parameter
    code, out, err = corral("models", "show", "meta-llama/Llama-9-1T", home=home)
    assert code == 1
    assert err.startswith(f"corral: GET {session.url}/v1/models/meta-llama/Llama-9-1T: 404")


def test_requirements_print_the_memory_and_the_devices_and_nodes_that_hold_it(session: Session, home: Path) -> None:
    code, out, err = corral("requirements", "meta-llama/Llama-3.1-405B", "--precision", "bf16", home=home)
    assert code == 0, err
    assert "weights        756.0 GiB" in out  # 811,706,777,600 bytes
    h100 = next(line for line in out.splitlines() if line.startswith("nvidia-h100-80gb\t"))
    assert h100.split("\t")[3] == "2"  # two nodes of eight
    code, out, err = corral("requirements", "meta-llama/Llama-3.1-405B", "--json", home=home)
    assert json.loads(out)["inference"]["weights"]["bytes"] == 811_706_777_600


def test_an_evaluation_is_requested_listed_followed_and_cancelled(session: Session, home: Path) -> None:
    code, out, err = corral("eval", "request", REPO, "smoke", "--revision", SHA, "--precision", "fp32", home=home)
    assert code == 0, err
    evaluation_id = out.strip()
    again = corral("eval", "request", REPO, "smoke", "--revision", SHA, "--precision", "fp32", home=home)[1]
    assert again.strip() == evaluation_id  # deduplicated, as the API promises
    code, out, _ = corral("eval", "list", "--model", REPO, "--json", home=home)
    assert evaluation_id in {item["id"] for item in json.loads(out)}

    claimed = session.claim()
    session.append_log(claimed, 0, b"loading weights\n")
    command = [
        sys.executable,
        "-m",
        "corral",
        "eval",
        "logs",
        evaluation_id,
        "--shard",
        str(claimed["shard_index"]),
        "-f",
    ]
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config")}
    seen: list[str] = []
    with subprocess.Popen(
        command, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as follower:
        output = follower.stdout
        assert output is not None
        reader = threading.Thread(target=lambda: seen.extend(iter(output.readline, "")), daemon=True)
        reader.start()
        wait_for(lambda: "loading weights\n" in seen, "the log's first line")
        session.append_log(claimed, len(b"loading weights\n"), "running requests: 50 % ✓\n".encode())
        wait_for(lambda: "running requests: 50 % ✓\n" in seen, "the line appended while following")

        code, out, err = corral("eval", "status", evaluation_id, home=home)
        assert code == 0, err
        assert "running" in out
        assert "box" in out  # the job's state and the runner holding it
        code, out, err = corral("eval", "cancel", evaluation_id, home=home)
        assert code == 0, err
        assert out.strip() == f"evaluation {evaluation_id}: canceled"
        assert follower.wait(timeout=60) == 0  # --follow ends with the evaluation
        reader.join(timeout=10)
    assert seen == ["loading weights\n", "running requests: 50 % ✓\n"]  # each byte once, in order


def test_runners_are_listed_paused_drained_and_resumed_by_name(session: Session, home: Path) -> None:
    code, out, err = corral("runners", "list", home=home)
    assert code == 0, err
    assert "box\t" in out
    assert "1 x cpu (8.0 GiB)" in out
    for command, state in (("pause", "paused"), ("drain", "draining"), ("resume", "active")):
        code, out, err = corral("runners", command, "box", home=home)
        assert (code, out.strip()) == (0, f"runner box: {state}"), err
        shown = httpx.get(
            f"{session.url}/v1/runners/{session.runner_id}", headers={"Authorization": f"Bearer {session.admin}"}
        )
        assert shown.json()["state"] == state
    code, out, err = corral("runners", "registration-token", "--label", "gpu", home=home)
    assert code == 0, err
    assert out.strip().startswith("crlreg_")
    assert "single use" in err
    code, out, err = corral("runners", "pause", "no-such-runner", home=home)
    assert code == 2
    assert "no runner has the id or name 'no-such-runner'" in err


def test_tokens_are_created_listed_and_revoked_and_a_revoked_one_stops_working(session: Session, home: Path) -> None:
    code, out, err = corral("tokens", "create", "--name", "ci-main", "--scope", "read", home=home)
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("crl_")
    assert "shown only this once" in err
    code, out, _ = corral("tokens", "list", "--json", home=home)
    token = next(item for item in json.loads(out) if item["name"] == "ci-main")
    assert token["scope"] == "read"
    assert secret not in out
    assert corral("whoami", "--token", secret, home=home)[0] == 0
    code, out, _ = corral("tokens", "revoke", token["id"], home=home)
    assert code == 0
    code, out, err = corral("whoami", "--token", secret, home=home)
    assert code == 1
    assert ": 401" in err
    assert "corral login" in err
    code, out, err = corral("tokens", "create", "--name", "x", "--scope", "root", home=home)
    assert code == 2
    assert err.startswith("corral: invalid input: scope:")


def test_the_leaderboard_prints_in_every_format(session: Session, home: Path) -> None:
    code, out, err = corral("leaderboard", "show", "smoke", "--format", "csv", home=home)
    assert code == 0, err
    assert out.splitlines()[0].startswith("rank,model,revision")
    code, out, _ = corral("leaderboard", "show", "smoke", "--format", "json", home=home)
    assert json.loads(out)["suite"] == "smoke"
    code, out, _ = corral("leaderboard", "show", "smoke", home=home)
    assert out.splitlines()[0].split("\t")[:6] == ["#", "model", "revision", "precision", "parameters", "average"]
    code, out, err = corral("leaderboard", "show", "no-such-suite", home=home)
    assert code == 1
    assert "/v1/leaderboards/no-such-suite: 404" in err


def test_version_and_help_with_its_defaults() -> None:
    done = subprocess.run([sys.executable, "-m", "corral", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0
    assert done.stdout.strip() == "corral 0.1.0"
    done = subprocess.run([sys.executable, "-m", "corral", "serve", "--help"], capture_output=True, text=True, cwd=ROOT)
    words = " ".join(done.stdout.split())  # as wrapped for the terminal's width
    assert "[default: CORRAL_HOST or 127.0.0.1]" in words
    assert "[default: CORRAL_PORT or 8000]" in words
    done = subprocess.run([sys.executable, "-m", "corral", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "--install-completion" in done.stdout


def test_the_client_pages_types_and_speaks_for_the_server(session: Session) -> None:
    with Corral(session.url, session.admin) as client:
        paged = [model.repo_id for model in client.models(limit=7)]  # seven a page: several pages
        everything = httpx.get(f"{session.url}/v1/models", params={"limit": 100}).json()["items"]
        assert paged == [item["repo_id"] for item in everything]
        assert len(paged) > 14
        model = client.model("meta-llama/Llama-3.1-8B")
        assert (model.parameter_count, model.context_length) == (8_030_261_248, 131_072)
        with pytest.raises(ApiError) as refused:
            client.request_evaluation(EvaluationCreate(model=REPO, revision="f" * 40, suite="smoke"))
        assert refused.value.status in (404, 409, 422)
        assert refused.value.detail
        body = EvaluationCreate(model=REPO, revision=SHA, suite="smoke", precision="fp32", seed=7)
        first = client.request_evaluation(body, idempotency_key="once")
        assert client.request_evaluation(body, idempotency_key="once").id == first.id
        assert client.evaluation(str(first.id)).jobs[0].tasks
        assert client.cancel_evaluation(str(first.id)).state.value == "canceled"
        assert client.cancel_evaluation(str(first.id)).state.value == "canceled"  # twice is once
        updated = client.update_runner(session.runner_id, RunnerUpdate(state="paused"))  # type: ignore[arg-type]
        assert updated.state.value == "paused"
        client.update_runner(session.runner_id, RunnerUpdate(state="active"))  # type: ignore[arg-type]
        created = client.create_token(TokenCreate(name="notebook", scope="read"))  # type: ignore[arg-type]
        assert created.token.startswith("crl_")
        client.revoke_token(str(created.id))
    with Corral(session.url, "crl_bad_bad") as anonymous, pytest.raises(ApiError) as unauthorized:
        anonymous.whoami()
    assert unauthorized.value.status == 401
    assert "corral login" in str(unauthorized.value)

    async def async_side() -> tuple[list[str], int]:
        async with AsyncCorral(session.url, session.admin) as client:
            names = [model.repo_id async for model in client.models(limit=7)]
            return names, (await client.requirements("meta-llama/Llama-3.1-8B", precision="bf16")).parameters

    names, parameters = asyncio.run(async_side())
    assert names == paged
    assert parameters == 8_030_261_248


def test_the_client_waits_out_429_and_503_as_retry_after_says_and_never_repeats_an_unsafe_post(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty_queue = {"depth": 0, "running": 0, "entries": []}
    answers = iter(
        [httpx.Response(503, headers={"Retry-After": "3"}), httpx.Response(429), httpx.Response(200, json=empty_queue)]
    )
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return next(answers)

    slept: list[float] = []
    monkeypatch.setattr("corral.client.sync.time.sleep", slept.append)  # the waits are asserted, not waited
    with Corral("http://corral.test", transport=httpx.MockTransport(handler)) as client:
        assert client.queue().depth == 0
    assert (seen, slept) == (["GET", "GET", "GET"], [3.0, 2.0])  # Retry-After, then the backoff's second step
    assert retry_after(httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), 0) == 0.0
    assert retry_after(httpx.Response(503, headers={"Retry-After": "86400"}), 0) == 60.0  # capped

    posts = iter([httpx.Response(503), httpx.Response(201, json={})])
    transport = httpx.MockTransport(lambda request: next(posts))
    with Corral("http://corral.test", transport=transport) as client, pytest.raises(ApiError) as unsafe:
        client.create_token(TokenCreate(name="x", scope="read"))  # type: ignore[arg-type]
    assert unsafe.value.status == 503  # a POST without an idempotency key is never sent twice
    with Corral(f"http://127.0.0.1:{free_port()}", retries=0) as client, pytest.raises(ServerUnreachable):
        client.whoami()


def test_eval_run_wait_outlasts_a_server_restart(tmp_path: Path) -> None:
    server = Server(tmp_path / "served")
    server.workdir.mkdir()
    server.start()
    served = Session(server)
    command = [sys.executable, "-m", "corral", "eval", "run", "--model", REPO, "--revision", SHA, "--suite", "smoke"]
    command += ["--precision", "fp32", "--wait", "--poll", "0.3", "--server", server.url, "--token", served.admin]
    said: list[str] = []
    try:
        with subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        ) as gate:
            errors = gate.stderr
            assert errors is not None
            reader = threading.Thread(target=lambda: said.extend(iter(errors.readline, "")), daemon=True)
            reader.start()
            wait_for(lambda: any(line.startswith("evaluation ") for line in said), "the evaluation to be requested")
            evaluation_id = next(line for line in said if line.startswith("evaluation ")).split()[1]
            server.stop()
            wait_for(
                lambda: any("server unreachable" in line for line in said), "the gate to notice the server is gone"
            )
            server.start()  # the same port and database
            assert gate.poll() is None  # still waiting, as gh run watch would
            canceled = httpx.post(
                f"{server.url}/v1/evaluations/{evaluation_id}/cancel",
                headers={"Authorization": f"Bearer {served.admin}"},
            )
            assert canceled.status_code == 200, canceled.text
            assert gate.wait(timeout=60) == 1  # EVALUATION_FAILED (canceled), not 4: the restart was no error
            reader.join(timeout=10)
    finally:
        server.stop()
    assert any("evaluation canceled" in line for line in said), said


def test_every_call_of_the_client_is_an_operation_of_the_openapi_document_with_the_schema_it_reads() -> None:
    import inspect

    from pydantic import TypeAdapter

    from corral.client import calls
    from corral.main import create_app
    from tests.support.databases import make_settings

    document = create_app(make_settings("sqlite+aiosqlite:///:memory:")).openapi()
    body = TokenCreate(name="x", scope="read")  # type: ignore[arg-type]
    ident = "00000000-0000-0000-0000-000000000001"
    cases = {
        "current_token": (calls.current_token(), "/v1/tokens/current"),
        "models": (calls.models({"family": "llama-3.1", "q": "8B", "limit": 5}), "/v1/models"),
        "model": (calls.model("meta-llama/Llama-3.1-8B"), "/v1/models/{owner}/{name}"),
        "requirements": (
            calls.requirements("meta-llama/Llama-3.1-8B", {"precision": "bf16", "context_tokens": 4096}),
            "/v1/models/{owner}/{name}/requirements",
        ),
        "leaderboard": (calls.leaderboard("smoke", {"max_parameters": 10, "fits_on": "x"}), "/v1/leaderboards/{suite}"),
        "leaderboard_text": (calls.leaderboard_text("smoke", "csv", {}), "/v1/leaderboards/{suite}"),
        "revision": (
            calls.revision("meta-llama/Llama-3.1-8B", "champion"),
            "/v1/models/{owner}/{name}/revisions/{ref}",
        ),
        "compare": (calls.compare(ident, ident), "/v1/compare"),
        "request_evaluation": (
            calls.request_evaluation(EvaluationCreate(model=REPO, revision=SHA, suite="smoke")),
            "/v1/evaluations",
        ),
        "evaluations": (calls.evaluations({"model": REPO, "state": "queued"}), "/v1/evaluations"),
        "evaluation": (calls.evaluation(ident), "/v1/evaluations/{evaluation_id}"),
        "cancel_evaluation": (calls.cancel_evaluation(ident), "/v1/evaluations/{evaluation_id}/cancel"),
        "attempt_log": (calls.attempt_log(ident, 10), "/v1/attempts/{attempt_id}/log"),
        "queue": (calls.queue(5), "/v1/queue"),
        "runners": (calls.runners({"state": "active"}), "/v1/runners"),
        "runner": (calls.runner(ident), "/v1/runners/{runner_id}"),
        "update_runner": (calls.update_runner(ident, RunnerUpdate()), "/v1/runners/{runner_id}"),
        "registration_token": (calls.registration_token(RegistrationTokenCreate()), "/v1/runner-registration-tokens"),
        "tokens": (calls.tokens({"active": True}), "/v1/tokens"),
        "create_token": (calls.create_token(body), "/v1/tokens"),
        "revoke_token": (calls.revoke_token(ident), "/v1/tokens/{token_id}"),
    }
    builders = {
        name
        for name, function in inspect.getmembers(calls, inspect.isfunction)
        if function.__module__ == calls.__name__
        and get_origin(inspect.signature(function).return_annotation) is calls.Call
    }
    assert builders - {"with_cursor"} == set(cases)  # a new call gets a row here
    for name, (call, template) in cases.items():
        operation = document["paths"][template][call.method.lower()]
        documented = {parameter["name"] for parameter in operation.get("parameters", [])}
        assert set(call.params) <= documented, (name, set(call.params) - documented)
        success = next(code for code in operation["responses"] if code.startswith("2"))
        content = operation["responses"][success].get("content", {})
        if isinstance(call.read, TypeAdapter):  # the schema the client validates with is the one documented
            title = call.read.json_schema()["title"].replace("[", "_").replace("]", "_")
            assert content["application/json"]["schema"]["$ref"] == f"#/components/schemas/{title}", name
        elif call.read in ("text", "bytes"):
            assert {"text/plain", "text/csv"} & set(content), name
        else:
            assert success == "204", name
