"""One wire: every call the runner agent makes is an operation of the published OpenAPI document, every body it
sends validates against the schema documented there, and every answer the document allows (an example that
validates against it) is read by the agent. A runner written by someone else against the document and ours agree."""

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from corral.main import create_app
from corral.wire.protocol import Accelerator, Progress, RunnerRegister, RunnerReport
from corral_runner.client import ServerClient
from corral_runner.protocol import ClaimedJob, JobRefused
from tests.support.databases import make_settings

ATTEMPT = uuid.UUID("00000000-0000-0000-0000-0000000000a1")
NOW = datetime(2026, 12, 7, tzinfo=UTC).isoformat()
CLAIM: dict[str, Any] = {
    "attempt_id": str(ATTEMPT),
    "attempt_number": 1,
    "lease_token": "lease",
    "lease_expires_at": NOW,
    "heartbeat_seconds": 10,
    "job_id": str(uuid.uuid4()),
    "evaluation_id": str(uuid.uuid4()),
    "shard_index": 0,
    "model": "meta-llama/Llama-3.1-8B",
    "revision": "0" * 40,
    "suite": "smoke",
    "suite_version": "1",
    "include_path": "tasks/smoke",
    "tasks": [{"name": "corral_smoke", "num_fewshot": 0}],
    "settings": {
        "precision": "bf16",
        "backend": "hf",
        "batch_size": "auto",
        "apply_chat_template": False,
        "fewshot_as_multiturn": False,
        "num_fewshot": None,
        "limit": None,
        "seed": 1234,
        "gen_kwargs": {"max_gen_toks": 64, "temperature": 0},
        "harness_version": "0.4.9",
        "trust_remote_code": False,
        "needs_hub_token": True,
    },
    "required_memory_bytes": 17_000_000_000,
    "placement": {"tensor_parallel": 1, "pipeline_parallel": 1},
}
RUNNER = {
    "id": str(uuid.uuid4()),
    "name": "gpu-box",
    "labels": [],
    "accelerators": [{"kind": "NVIDIA H100 80GB HBM3", "memory_bytes": 80 * 2**30, "count": 8, "nodes": 1}],
    "backends": ["hf"],
    "lm_eval_version": "0.4.9",
    "max_concurrent_jobs": 1,
    "max_nodes_per_job": 1,
    "state": "active",
    "last_contact_at": NOW,
    "online": True,
    "created_at": NOW,
}
# An answer for every operation, as the server could give it: each must validate against the documented schema.
ANSWERS: dict[str, tuple[int, Any]] = {
    "/v1/runners/register": (201, {"runner": RUNNER, "token": "crlrun_x"}),
    "/v1/runner/verify": (200, RUNNER),
    "/v1/runner/token": (200, {"runner": RUNNER, "token": "crlrun_y"}),
    "/v1/runner/jobs/claim": (201, CLAIM),
    "/v1/runner/attempts/{attempt_id}/heartbeat": (
        200,
        {"lease_expires_at": NOW, "cancel_requested": False, "heartbeat_seconds": 10},
    ),
    "/v1/runner/attempts/{attempt_id}/log": (202, {"log_bytes": 5}),
    "/v1/runner/attempts/{attempt_id}/result": (
        201,
        {"result_id": str(uuid.uuid4()), "content_sha256": "a" * 64, "job_state": "succeeded", "evaluation_state": "x"},
    ),
    "/v1/runner/attempts/{attempt_id}/fail": (
        200,
        {"job_state": "queued", "retried": True, "available_at": NOW, "evaluation_state": "running"},
    ),
    "/v1/runner/attempts/{attempt_id}/release": (
        200,
        {"job_state": "queued", "retried": True, "available_at": None, "evaluation_state": "running"},
    ),
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(make_settings("sqlite+aiosqlite:///:memory:")).openapi()


def template_of(document: dict[str, Any], path: str) -> str:
    for template in document["paths"]:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            return template
    raise AssertionError(f"{path}: no operation of the OpenAPI document")


class Recorder:
    """The server as the OpenAPI document describes it: checks each request against it, answers from ANSWERS."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.registry: Registry[Any] = Registry().with_resource("urn:openapi", Resource.opaque(document))
        self.called: list[str] = []

    def validate(self, schema: dict[str, Any], value: Any, what: str) -> None:
        # The schema's $refs (#/components/...) resolve against the whole document.
        rooted = json.loads(json.dumps(schema).replace('"#/components/', '"urn:openapi#/components/'))
        errors = sorted(Draft202012Validator(rooted, registry=self.registry).iter_errors(value), key=str)
        assert not errors, f"{what}: {[f'{list(e.absolute_path)}: {e.message}' for e in errors[:3]]}"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        template = template_of(self.document, request.url.path)
        operation = self.document["paths"][template].get(request.method.lower())
        assert operation is not None, f"{request.method} {template} is not documented"
        self.called.append(template)
        documented = operation.get("requestBody", {}).get("content", {})
        if request.content:
            kind = request.headers["content-type"].split(";")[0]
            assert kind in documented, f"{template}: {kind} is not a documented body ({list(documented)})"
            if kind == "application/json":
                self.validate(documented[kind]["schema"], json.loads(request.content), f"{template} request")
        else:
            assert not operation.get("requestBody", {}).get("required"), f"{template}: a required body was not sent"
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "header" and parameter.get("required"):
                assert parameter["name"].lower() in request.headers, f"{template}: no {parameter['name']} header"
        status, answer = ANSWERS[template]
        reply = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        self.validate(reply, answer, f"{template} answer")
        return httpx.Response(status, json=answer)


@pytest.fixture
def recorder(document: dict[str, Any]) -> Recorder:
    return Recorder(document)


def test_every_runner_call_is_a_documented_operation_with_the_documented_bodies(
    document: dict[str, Any], recorder: Recorder
) -> None:
    transport = httpx.MockTransport(recorder)
    shape = Accelerator(kind="NVIDIA H100 80GB HBM3", memory_bytes=80 * 2**30, count=8)
    registration = RunnerRegister(
        registration_token="crlreg_x", name="gpu-box", accelerators=[shape], backends=["hf"], labels=["a"]
    )
    assert ServerClient.register("http://corral", registration, transport=transport) == "crlrun_x"
    client = ServerClient("http://corral", "crlrun_x", retries=0, transport=transport)
    assert client.verify(RunnerReport(accelerators=[shape], backends=["hf"])).name == "gpu-box"
    claimed = client.claim(5, free=[shape])
    assert isinstance(claimed, ClaimedJob)
    assert claimed.attempt_id == ATTEMPT
    assert claimed.settings.gen_kwargs is not None
    beat = client.heartbeat(ATTEMPT, "lease", Progress(overall=0.5, tasks={"corral_smoke": 0.5}, stage="x"), "slurm:1")
    assert beat.cancel_requested is False
    assert client.append_log(ATTEMPT, "lease", 0, b"hello") == 5
    results = {"results": {"corral_smoke": {"acc,none": float("nan")}}, "versions": {}}
    assert client.upload_result(ATTEMPT, "lease", results, None).job_state == "succeeded"
    assert client.fail(ATTEMPT, "lease", "infrastructure", "the node died").retried
    assert client.release(ATTEMPT, "lease", "SIGTERM").available_at is None
    assert client.rotate_token() == "crlrun_y"

    # Every operation of the runner protocol is one the agent uses: nothing documented is left to guess.
    protocol = {path for path in document["paths"] if path.startswith("/v1/runner/")} | {"/v1/runners/register"}
    assert set(recorder.called) == protocol
    assert set(ANSWERS) == protocol


def test_a_claim_the_document_allows_but_the_agent_must_not_run_is_refused_to_the_server(
    document: dict[str, Any], recorder: Recorder
) -> None:
    """A server (or a man in the middle) sending a setting outside the allow-list: the agent says so with the
    attempt's lease, as a harness error, instead of running it."""
    hostile = json.loads(json.dumps(CLAIM))
    hostile["settings"]["gen_kwargs"] = {"max_gen_toks": 64, "custom_generate": "evil/repo"}
    refused: list[dict[str, Any]] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/claim"):
            return httpx.Response(201, json=hostile)
        refused.append(json.loads(request.content))
        return recorder(request)

    client = ServerClient("http://corral", "crlrun_x", retries=0, transport=httpx.MockTransport(server))
    with pytest.raises(JobRefused, match=r"settings\.gen_kwargs"):
        client.claim(0)
    assert len(refused) == 1
    assert refused[0]["category"] == "harness_error"
    assert "custom_generate" in refused[0]["message"]
