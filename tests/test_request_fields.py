"""Every request field that reaches a runner, walked against the hand-written table in tests/support/runner_fields.py
(the README's security table): each allowed value is taken, each refused one is a 422 naming the field that writes
nothing, and every key of `gen_kwargs` outside the allow-list — the code-loading ones first — is refused by name, on
a request and on an import. The runner's own check (app/wire) is held to the same table."""

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from corral.config import Settings
from corral.evaluations.schemas import EvaluationCreate
from corral.tables import Evaluation
from corral.wire.generation import GenerationSettings
from corral.wire.protocol import ClaimedJob, JobSettings
from corral_runner.protocol import generation_settings
from tests.support import runner_fields as table
from tests.support.evaluations import lm_eval_results, load_shipped_suites, make_model, make_runner
from tests.test_queue import rows

README = Path(__file__).resolve().parents[1] / "README.md"
# Fields of a request that never reach a runner: where and when it runs, not what it runs.
NOT_REACHING = {"priority", "labels", "force", "queue_without_runner"}
REVISION_FIELDS = {"revision", "ref", "alias"}


@pytest.fixture
def ready(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> str:
    load_shipped_suites(settings)
    make_runner(client, admin_headers, "gpu-1", backends=("hf", "vllm"))
    return make_model(client, publish_headers)


def request(client: TestClient, headers: dict[str, str], sha: str, **fields: Any) -> Any:
    body: dict[str, Any] = {"model": "corral-test/tiny-llama", "revision": sha, "suite": "smoke", "force": True}
    if REVISION_FIELDS & set(fields) - {"revision"}:
        body.pop("revision")
    return client.post("/v1/evaluations", json=body | fields, headers=headers)


def refused_by_name(answer: Any, name: str) -> str:
    assert answer.status_code == 422, (name, answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    named = [error["field"] for error in problem["errors"]]
    assert any(field == name or field.startswith(f"{name}.") for field in named), (name, named, problem["detail"])
    return str(problem["detail"])


def test_the_table_names_every_field_that_reaches_a_runner() -> None:
    rows_named = {row.name for row in table.FIELDS}
    assert rows_named | {"gen_kwargs"} | NOT_REACHING == set(EvaluationCreate.model_fields)
    # The runner checks what it is handed by the same rules: every setting it reads has its row.
    runner_reads = set(JobSettings.model_fields) - {"gen_kwargs", "trust_remote_code", "needs_hub_token"}
    assert runner_reads <= rows_named
    assert {"model", "revision"} <= set(ClaimedJob.model_fields)
    assert set(table.GENERATION) == set(GenerationSettings.model_fields)


def test_each_field_takes_what_the_table_allows_and_refuses_the_rest_writing_nothing(
    client: TestClient, settings: Settings, publish_headers: dict[str, str], ready: str
) -> None:
    for row in table.FIELDS:
        for value in row.valid:
            extra = {"apply_chat_template": True} if row.name == "fewshot_as_multiturn" and value else {}
            answer = request(client, publish_headers, ready, **{row.name: value}, **extra)
            assert answer.status_code == 201, (row.name, value, answer.text)
    written = len(rows(settings, Evaluation))
    for row in table.FIELDS:
        for value in row.refused:
            refused_by_name(request(client, publish_headers, ready, **{row.name: value}), row.name)
    assert len(rows(settings, Evaluation)) == written


def test_generation_settings_are_an_allow_list_of_data(
    client: TestClient, settings: Settings, publish_headers: dict[str, str], ready: str
) -> None:
    for key, (_, valid, invalid) in table.GENERATION.items():
        for value in valid:
            answer = request(client, publish_headers, ready, gen_kwargs={key: value})
            assert answer.status_code == 201, (key, value, answer.text)
        for value in invalid:
            refused_by_name(request(client, publish_headers, ready, gen_kwargs={key: value}), f"gen_kwargs.{key}")
    written = len(rows(settings, Evaluation))
    for key in (*table.CODE_KEYS, *table.UNKNOWN_KEYS):
        detail = refused_by_name(request(client, publish_headers, ready, gen_kwargs={key: "x"}), "gen_kwargs")
        assert f"{key!r}" in detail, (key, detail)
    # The attack as it was seen: a Hub repo's generate.py with permission to run it.
    attack = {"custom_generate": "attacker/evil", "trust_remote_code": True, "temperature": 0}
    detail = refused_by_name(request(client, publish_headers, ready, gen_kwargs=attack), "gen_kwargs")
    assert "'custom_generate' downloads custom_generate/generate.py" in detail
    assert "'trust_remote_code'" in detail
    # A setting vLLM cannot apply is refused for vllm only.
    refused_by_name(request(client, publish_headers, ready, backend="vllm", gen_kwargs={"num_beams": 4}), "body")
    assert len(rows(settings, Evaluation)) == written


def test_stored_settings_are_what_lm_eval_is_handed(
    client: TestClient, publish_headers: dict[str, str], ready: str
) -> None:
    answer = request(client, publish_headers, ready, gen_kwargs={"until": "Q:", "temperature": 0, "do_sample": False})
    assert answer.status_code == 201, answer.text
    # One stop sequence is a list of one, numbers are numbers: as lm-eval takes them and the runner checks them.
    assert answer.json()["config"]["gen_kwargs"] == {"until": ["Q:"], "temperature": 0.0, "do_sample": False}
    GenerationSettings.model_validate(answer.json()["config"]["gen_kwargs"])
    empty = request(client, publish_headers, ready, gen_kwargs={})
    assert empty.json()["config"]["gen_kwargs"] is None


def test_an_import_that_ran_with_code_loading_settings_is_refused_by_name(
    client: TestClient, settings: Settings, publish_headers: dict[str, str], ready: str
) -> None:
    def imported(gen_kwargs: Any) -> Any:
        document = lm_eval_results(["corral_smoke_mc", "corral_smoke_gen"])
        document["config"]["gen_kwargs"] = gen_kwargs
        body = {"model": "corral-test/tiny-llama", "revision": ready, "suite": "smoke", "results": document}
        return client.post("/v1/results/import", json=body, headers=publish_headers)

    written = len(rows(settings, Evaluation))
    for hostile in ({"custom_generate": "attacker/evil"}, "custom_generate=attacker/evil,trust_remote_code=True"):
        answer = imported(hostile)
        assert answer.status_code == 422, answer.text
        assert "'custom_generate'" in answer.json()["detail"]
        assert answer.json()["errors"][0]["pointer"] == "/results/config/gen_kwargs"
    assert len(rows(settings, Evaluation)) == written
    # What lm-eval records of an allowed run (its CLI's text form too) is kept, as the run's identity.
    answer = imported("temperature=0,until=Q:")
    assert answer.status_code == 201, answer.text
    shown = client.get(f"/v1/evaluations/{answer.json()['evaluation_id']}").json()
    assert shown["config"]["gen_kwargs"] == {"temperature": 0.0, "until": ["Q:"]}


def test_the_runner_holds_a_claim_to_the_same_rules() -> None:
    """app/wire is what the agent reads a claim with: the refused values of the table are refused there too."""
    settings = {
        "precision": "fp32",
        "backend": "hf",
        "batch_size": "1",
        "apply_chat_template": False,
        "fewshot_as_multiturn": False,
        "num_fewshot": None,
        "limit": None,
        "seed": 0,
        "gen_kwargs": None,
        "harness_version": "0.4.13",
    }
    JobSettings.model_validate(settings)
    for row in table.FIELDS:
        if row.name not in JobSettings.model_fields:
            continue
        for value in row.refused:
            if row.name == "batch_size" and isinstance(value, int) and not isinstance(value, bool):
                continue  # stored as text: the server writes "5000" only for what it took
            with pytest.raises(ValidationError):
                JobSettings.model_validate(settings | {row.name: value})
    for key in (*table.CODE_KEYS, *table.UNKNOWN_KEYS):
        with pytest.raises(ValidationError, match=f"{key!r}"):
            generation_settings(JobSettings.model_validate(settings | {"gen_kwargs": {key: "x"}}))


def test_the_readme_states_the_table() -> None:
    text = README.read_text()
    for row in table.FIELDS:
        assert f"| `{row.name}` | {row.allowed} | {row.reaches} |" in text, row.name
    for key, (allowed, _, _) in table.GENERATION.items():
        assert f"| `gen_kwargs.{key}` | {allowed} |" in text, key
    for key in table.CODE_KEYS:
        assert f"`{key}`" in text, key
