"""Hub sync through huggingface_hub against a local fake Hub serving real safetensors checkpoints."""

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from corral.config import Settings
from corral.db import create_engine, create_sessionmaker
from corral.hub.client import HubClient
from corral.hub.service import HubSyncService
from corral.hub.sync import sync_due_models
from corral.main import create_app
from tests.support.checkpoints import TinyLlama, checkpoint_files, fp8_checkpoint_files
from tests.support.databases import make_settings, offline_environment
from tests.support.fake_hub import Commit, FakeHub, llama_repo, sha_of

SERVER_TOKEN = "hf_server_side_token"
ARCH = TinyLlama()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub().running() as fake:
        yield fake


def hub_settings(database_url: str, endpoint: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "hub_endpoint": endpoint,
        "hub_token": SERVER_TOKEN,
        "hub_backoff_seconds": 0.01,
        "hub_retries": 2,
        "hub_timeout_seconds": 5,
        "hub_sync_interval_seconds": 0,
    }
    return make_settings(database_url, **(values | overrides))


@pytest.fixture
def api(database_url: str, hub: FakeHub, catalog: None, publish_headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(hub_settings(database_url, hub.url)), raise_server_exceptions=False) as client:
        client.headers.update(publish_headers)
        yield client


def register(api: TestClient, repo_id: str, **params: str) -> dict:
    response = api.post("/v1/models", json={"repo_id": repo_id}, params=params)
    assert response.status_code == 201, response.text
    return response.json()


def test_register_by_repo_id_reads_everything_from_the_hub(api: TestClient, hub: FakeHub) -> None:
    repo = hub.add(llama_repo("acme/tiny-instruct", checkpoint_files(ARCH)))
    model = register(api, "acme/tiny-instruct")
    assert model["parameter_count"] == ARCH.parameter_count
    assert (model["hidden_size"], model["num_layers"], model["num_kv_heads"]) == (64, 2, 2)
    assert (model["context_length"], model["vocab_size"], model["default_dtype"]) == (2048, 256, "bfloat16")
    assert model["kind"] == "instruct"
    assert model["license"] == "llama3.1"  # the card's licence id, mapped to the registered licence
    assert model["hub"]["status"] == "ok"
    assert model["hub"]["sha"] == repo.commits[0].sha

    revision = api.get("/v1/models/acme/tiny-instruct/revisions/main").json()
    record = revision["snapshot"]
    assert revision["sha"] == repo.commits[0].sha
    assert revision["source"] == "hub"
    assert record["safetensors"]["total"] == ARCH.parameter_count
    assert record["safetensors"]["parameters"] == {"BF16": ARCH.parameter_count}
    assert record["chat_template"] is True
    assert record["license"]["id"] == "llama3.1"
    weights = next(item for item in record["files"] if item["path"] == "model.safetensors")
    assert weights["size"] == len(repo.commits[0].files["model.safetensors"])
    assert len(weights["lfs_sha256"]) == 64
    assert record["weight_bytes"] == weights["size"]
    assert record["config"]["model_type"] == "llama"
    assert record["refs"]["branches"] == [{"name": "main", "sha": repo.commits[0].sha}]

    requests = hub.requests_for("acme/tiny-instruct")
    assert len(requests) <= 4 + 1
    assert all(entry.authorization == f"Bearer {SERVER_TOKEN}" for entry in requests)
    assert not any(
        entry.method == "GET" and entry.path.endswith("model.safetensors") and entry.status == 200 for entry in requests
    ), "weights must never be downloaded whole"


def test_sharded_checkpoint_is_read_by_headers_only(api: TestClient, hub: FakeHub) -> None:
    files = checkpoint_files(ARCH, shards=3)
    hub.add(llama_repo("acme/sharded", files))
    model = register(api, "acme/sharded")
    assert model["parameter_count"] == ARCH.parameter_count
    snapshot = api.get("/v1/models/acme/sharded/revisions/main").json()["snapshot"]
    assert snapshot["safetensors"]["files"] == 3
    requests = hub.requests_for("acme/sharded")
    assert len(requests) <= 4 + 3
    ranged = [entry for entry in requests if entry.status == 206]
    assert len(ranged) == 3


def test_resync_unchanged_changes_nothing_and_a_new_commit_moves_main(api: TestClient, hub: FakeHub) -> None:
    repo = hub.add(llama_repo("acme/moving", checkpoint_files(ARCH)))
    register(api, "acme/moving")
    first = api.get("/v1/models/acme/moving/revisions/main").json()

    again = api.post("/v1/models/acme/moving/sync")
    assert again.status_code == 200, again.text
    assert again.json()["revision_created"] is False
    assert api.get("/v1/models/acme/moving/revisions").json()["items"] == [first]

    newer = Commit(sha=sha_of("acme/moving", 2), files=checkpoint_files(TinyLlama(num_layers=3)), title="More layers")
    repo.commits.append(newer)
    repo.branches["main"] = newer.sha
    synced = api.post("/v1/models/acme/moving/sync").json()
    assert synced["revision_created"] is True
    assert api.get("/v1/models/acme/moving/revisions/main").json()["sha"] == newer.sha
    assert len(api.get("/v1/models/acme/moving/revisions").json()["items"]) == 2
    # The old revision is untouched; the model keeps its recorded (first) architecture.
    assert api.get(f"/v1/models/acme/moving/revisions/{first['sha']}").json() == first | {"aliases": []}
    assert api.get("/v1/models/acme/moving").json()["num_layers"] == 2

    commits = api.get("/v1/models/acme/moving/hub/commits").json()
    assert [commit["sha"] for commit in commits] == [newer.sha, first["sha"]]
    assert commits[0]["title"] == "More layers"


def test_hub_calls_on_a_callers_behalf_need_a_token_and_are_cached(api: TestClient, hub: FakeHub) -> None:
    """Listing Hub commits spends the server's Hub token: never for anonymous callers (even with public
    reads on), and the same question within seconds is answered once."""
    hub.add(llama_repo("acme/quota", checkpoint_files(ARCH)))
    register(api, "acme/quota")
    url = "/v1/models/acme/quota/hub/commits"
    anonymous = api.get(url, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert api.get("/v1/models/acme/quota", headers={"Authorization": ""}).status_code == 200  # reads stay public
    before = len([entry for entry in hub.requests_for("acme/quota") if "/commits/" in entry.path])
    assert before == 0
    answers = [api.get(url).json() for _ in range(5)]
    assert all(answer == answers[0] for answer in answers)
    assert len([entry for entry in hub.requests_for("acme/quota") if "/commits/" in entry.path]) == 1


def test_tag_resolves_to_its_commit(api: TestClient, hub: FakeHub) -> None:
    repo = hub.add(llama_repo("acme/tagged", checkpoint_files(ARCH)))
    repo.tags["v1.0"] = repo.commits[0].sha
    model = register(api, "acme/tagged", revision="v1.0")
    assert model["hub"]["ref"] == "v1.0"
    assert api.get(f"/v1/models/acme/tagged/revisions/{repo.commits[0].sha}").json()["ref"] == "v1.0"


def test_disagreements_with_the_catalog_are_kept_not_merged(api: TestClient, hub: FakeHub) -> None:
    hub.add(llama_repo("meta-llama/Llama-3.1-8B", checkpoint_files(ARCH), card={"license": "llama3"}))
    result = api.post("/v1/models/meta-llama/Llama-3.1-8B/sync").json()
    assert result["filled"] == []
    found = {item["field"]: item for item in result["hub"]["disagreements"]}
    assert found["parameter_count"] == {
        "field": "parameter_count",
        "registry": 8_030_261_248,
        "hub": ARCH.parameter_count,
    }
    assert found["context_length"]["hub"] == 2048
    assert found["license"] == {"field": "license", "registry": "llama3.1", "hub": "llama3"}
    model = api.get("/v1/models/meta-llama/Llama-3.1-8B").json()
    assert model["parameter_count"] == 8_030_261_248
    assert model["hub"]["disagreements"] == result["hub"]["disagreements"]


def test_gated_repo_records_visible_metadata_and_says_so(api: TestClient, hub: FakeHub) -> None:
    hub.add(llama_repo("meta-llama/Gated-1B", checkpoint_files(ARCH), gated="manual"))
    model = register(api, "meta-llama/Gated-1B")
    assert model["hub"]["status"] == "gated"
    assert "gated" in model["hub"]["last_error"]
    assert model["parameter_count"] is None
    snapshot = api.get("/v1/models/meta-llama/Gated-1B/revisions/main").json()["snapshot"]
    assert (snapshot["gated"], snapshot["files_gated"], snapshot["safetensors"]) == ("manual", True, None)
    assert snapshot["files"]  # the file list is metadata, visible without approval


def test_gated_repo_with_approved_server_token(api: TestClient, hub: FakeHub) -> None:
    hub.add(llama_repo("meta-llama/Approved-1B", checkpoint_files(ARCH), gated="auto", approved_tokens={SERVER_TOKEN}))
    model = register(api, "meta-llama/Approved-1B")
    assert model["hub"]["status"] == "ok"
    assert model["parameter_count"] == ARCH.parameter_count


@pytest.mark.parametrize(
    ("repo_id", "revision", "status", "words"),
    [("nobody/nothing", "main", 404, "has no model repo"), ("acme/exists", "no-such-branch", 404, "no such revision")],
)
def test_missing_repo_or_revision(
    api: TestClient, hub: FakeHub, repo_id: str, revision: str, status: int, words: str
) -> None:
    hub.add(llama_repo("acme/exists", checkpoint_files(ARCH)))
    response = api.post("/v1/models", json={"repo_id": repo_id}, params={"revision": revision})
    assert response.status_code == status
    assert words in response.json()["detail"]
    assert hub.url in response.json()["detail"]
    assert api.get(f"/v1/models/{repo_id}").status_code == 404


def test_missing_file_is_a_clear_error(api: TestClient, hub: FakeHub) -> None:
    hub.add(llama_repo("acme/broken", checkpoint_files(ARCH), missing_on_resolve={"config.json"}))
    response = api.post("/v1/models", json={"repo_id": "acme/broken"})
    assert response.status_code == 404
    assert "missing" in response.json()["detail"]


def test_rate_limit_is_retried_after_the_servers_delay(api: TestClient, hub: FakeHub) -> None:
    hub.add(llama_repo("acme/busy", checkpoint_files(ARCH)))
    hub.fail_next("acme/busy", 429, **{"Retry-After": "1"})
    register(api, "acme/busy")
    requests = hub.requests_for("acme/busy")
    assert [entry.status for entry in requests[:2]] == [429, 200]
    assert requests[1].at - requests[0].at >= 1.0  # Retry-After honoured


def test_rate_limit_that_persists_is_503_and_changes_nothing(api: TestClient, hub: FakeHub) -> None:
    hub.add(llama_repo("acme/limited", checkpoint_files(ARCH)))
    register(api, "acme/limited")
    before = api.get("/v1/models/acme/limited").json()
    hub.fail_next("acme/limited", 429, times=3, **{"Retry-After": "0"})
    response = api.post("/v1/models/acme/limited/sync")
    assert response.status_code == 503
    assert "rate-limiting" in response.json()["detail"]
    after = api.get("/v1/models/acme/limited").json()
    assert after["hub"]["status"] == "error"
    assert "rate-limiting" in after["hub"]["last_error"]
    assert after["hub"]["last_success_at"] == before["hub"]["last_success_at"]
    assert {k: v for k, v in after.items() if k not in ("hub", "updated_at")} == {
        k: v for k, v in before.items() if k not in ("hub", "updated_at")
    }


def test_server_errors_are_502(api: TestClient, hub: FakeHub) -> None:
    hub.add(llama_repo("acme/flaky", checkpoint_files(ARCH)))
    hub.fail_next("acme/flaky", 500, times=1)
    register(api, "acme/flaky")  # one 500 is retried
    hub.fail_next("acme/flaky", 502, times=3)
    response = api.post("/v1/models/acme/flaky/sync")
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert len(api.get("/v1/models/acme/flaky/revisions").json()["items"]) == 1


def test_slow_hub_times_out_as_unavailable(database_url: str, hub: FakeHub, publish_headers: dict[str, str]) -> None:
    hub.add(llama_repo("acme/slow", checkpoint_files(ARCH)))
    hub.latency = 1.0
    settings = hub_settings(database_url, hub.url, hub_timeout_seconds=0.2, hub_retries=0)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/models", json={"repo_id": "acme/slow"}, headers=publish_headers)
        assert response.status_code == 503
        assert hub.url in response.json()["detail"]
        assert client.get("/v1/models/acme/slow").status_code == 404


def test_unreachable_hub_names_the_endpoint(database_url: str, publish_headers: dict[str, str], catalog: None) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = hub_settings(database_url, closed, hub_retries=1)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/models", json={"repo_id": "acme/anything"}, headers=publish_headers)
        assert response.status_code == 503
        assert closed in response.json()["detail"]
        before = client.get("/v1/models/meta-llama/Llama-3.1-8B").json()
        synced = client.post("/v1/models/meta-llama/Llama-3.1-8B/sync", headers=publish_headers)
        assert synced.status_code == 503
        after = client.get("/v1/models/meta-llama/Llama-3.1-8B").json()
        assert after["parameter_count"] == before["parameter_count"]
        assert client.get("/v1/models/meta-llama/Llama-3.1-8B/revisions").json()["items"] == []


def test_background_pass_syncs_each_model_once_across_replicas(
    api: TestClient, hub: FakeHub, database_url: str
) -> None:
    for index in range(4):
        hub.add(llama_repo(f"acme/bg-{index}", checkpoint_files(ARCH)))
        register(api, f"acme/bg-{index}")
    hub.log.clear()
    settings = hub_settings(database_url, hub.url)

    async def two_replicas() -> list[list[object]]:
        engines = [create_engine(settings) for _ in range(2)]
        try:
            return await asyncio.gather(
                *(sync_due_models(create_sessionmaker(engine), settings, HubClient(settings)) for engine in engines)
            )
        finally:
            for engine in engines:
                await engine.dispose()

    outcomes = asyncio.run(two_replicas())
    assert sum(len(outcome) for outcome in outcomes) == 4
    info_requests = [entry for entry in hub.log if entry.path.startswith("/api/models/") and "/refs" not in entry.path]
    assert sorted(entry.repo_id for entry in info_requests) == [f"acme/bg-{index}" for index in range(4)]


def test_sync_needs_publish_and_a_registered_model(api: TestClient, hub: FakeHub) -> None:
    assert api.post("/v1/models/acme/unknown/sync").status_code == 404
    hub.add(llama_repo("acme/guarded", checkpoint_files(ARCH)))
    register(api, "acme/guarded")
    # An empty Authorization header is no token at all: syncing needs a publish token, so 401.
    assert api.post("/v1/models/acme/guarded/sync", headers={"Authorization": ""}).status_code == 401


def test_cli_hub_sync(settings: Settings, hub: FakeHub, tmp_path: Path) -> None:
    hub.add(llama_repo("acme/cli", checkpoint_files(ARCH, shards=2)))
    environment = offline_environment(
        CORRAL_DATABASE_URL=settings.database_url, CORRAL_HUB_ENDPOINT=hub.url, CORRAL_HUB_TOKEN=SERVER_TOKEN
    )
    result = subprocess.run(
        [sys.executable, "-m", "corral", "hub", "sync", "acme/cli"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert '"revision_created": true' in result.stdout
    assert SERVER_TOKEN not in result.stdout + result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "corral", "hub", "sync", "acme/absent"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1
    assert "has no model repo" in missing.stderr


def test_background_loop_resyncs_due_models(
    database_url: str, hub: FakeHub, catalog: None, publish_headers: dict[str, str]
) -> None:
    repo = hub.add(llama_repo("acme/background", checkpoint_files(ARCH)))
    settings = hub_settings(database_url, hub.url, hub_sync_interval_seconds=1)
    with TestClient(create_app(settings)) as client:
        client.post("/v1/models", json={"repo_id": "acme/background"}, headers=publish_headers)
        newer = Commit(sha=sha_of("acme/background", 2), files=checkpoint_files(ARCH), title="Fix")
        repo.commits.append(newer)
        repo.branches["main"] = newer.sha
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # waits for the loop; asserts on what it did, not on how fast
            if client.get("/v1/models/acme/background").json()["hub"]["sha"] == newer.sha:
                break
            time.sleep(0.2)
        assert client.get("/v1/models/acme/background/revisions/main").json()["sha"] == newer.sha


def test_config_values_out_of_range_are_not_taken(api: TestClient, hub: FakeHub) -> None:
    files = checkpoint_files(ARCH)
    config = json.loads(files["config.json"])
    files["config.json"] = json.dumps(config | {"hidden_size": 10**12, "max_position_embeddings": -1}).encode()
    hub.add(llama_repo("acme/odd-config", files))
    model = register(api, "acme/odd-config")
    assert (model["hidden_size"], model["context_length"]) == (None, None)
    assert model["num_layers"] == 2
    assert model["hub"]["status"] == "ok"


def test_nul_characters_in_hub_metadata_are_stored_safely(api: TestClient, hub: FakeHub) -> None:
    hub.add(
        llama_repo(
            "acme/nul",
            checkpoint_files(ARCH),
            card={"license": "llama3.1", "tags": ["a\u0000b"]},
            hub_tags=["x\u0000y"],
        )
    )
    model = register(api, "acme/nul")
    assert model["hub"]["status"] == "ok"
    assert api.get("/v1/models/acme/nul/revisions/main").json()["snapshot"]["tags"] == ["xy"]


def test_a_failed_apply_gives_the_lease_back(api: TestClient, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add(llama_repo("acme/crashy", checkpoint_files(ARCH)))
    register(api, "acme/crashy")

    async def broken_apply(*args: object, **kwargs: object) -> None:
        raise RuntimeError("apply failed after the fetch")

    with monkeypatch.context() as patch:
        patch.setattr(HubSyncService, "apply", broken_apply)
        assert api.post("/v1/models/acme/crashy/sync").status_code == 500
    # Without the release, the lease would hold for five minutes and this would be 409.
    assert api.post("/v1/models/acme/crashy/sync").status_code == 200


@contextmanager
def hanging_hub() -> Iterator[str]:
    """A Hub that accepts connections and never answers (a stuck proxy, an overloaded mirror)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                accepted.append(listener.accept()[0])  # held open, never read, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


def test_a_hanging_hub_holds_a_request_no_longer_than_the_deadline(
    database_url: str, catalog: None, publish_headers: dict[str, str]
) -> None:
    with hanging_hub() as endpoint:
        # Per request 3 s, three retries: patient enough for a background pass (up to ~12 s per call), but a
        # request answers by its deadline.
        settings = hub_settings(
            database_url, endpoint, hub_timeout_seconds=3, hub_retries=3, hub_request_deadline_seconds=0.5
        )
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            client.headers.update(publish_headers)
            answer = client.post("/v1/models", json={"repo_id": "acme/stuck"})
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "30"
    # The deadline answered, not the per-request timeout (3 s) nor its retries (the message would say
    # "unreachable (ReadTimeout)" after 12 s).
    assert "did not answer within 0.5 s" in answer.json()["detail"]


def test_a_quantized_checkpoint_is_sized_as_stored(api: TestClient, hub: FakeHub) -> None:
    """An fp8 checkpoint's safetensors headers say what its weights take: fp8 tensors, fp32 scales, bf16 rest."""
    hub.add(llama_repo("acme/tiny-fp8", fp8_checkpoint_files(ARCH, kept_layers=(0,))))
    model = register(api, "acme/tiny-fp8")
    mlp = 3 * ARCH.hidden_size * ARCH.intermediate_size  # one layer's MLP: layer 1 of 2 is quantized
    scales = 2 * ARCH.intermediate_size + ARCH.hidden_size
    snapshot = api.get("/v1/models/acme/tiny-fp8/revisions/main").json()["snapshot"]
    assert snapshot["safetensors"]["parameters"] == {
        "BF16": ARCH.parameter_count - mlp,
        "F8_E4M3": mlp,
        "F32": scales,
    }
    stored = mlp + 4 * scales + 2 * (ARCH.parameter_count - mlp)
    assert model["stored_weight_bytes"] == stored
    needs = api.get("/v1/models/acme/tiny-fp8/requirements", params={"context_tokens": 16}).json()
    assert (needs["precision"], needs["inference"]["weights"]["bytes"]) == ("bf16", stored)  # as config.json runs it
    # A plain bf16 checkpoint records no stored size: its weights are its parameters at its dtype.
    hub.add(llama_repo("acme/tiny-plain", checkpoint_files(ARCH)))
    assert register(api, "acme/tiny-plain")["stored_weight_bytes"] is None
