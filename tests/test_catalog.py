"""The shipped Llama catalog: complete, idempotent, correctable, and loaded on a new embedded database."""

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from corral.catalog.loader import CATALOG, arithmetic_figures, catalog_data, load_catalog, model_entries
from corral.config import Settings
from corral.db import in_unit_of_work
from tests.support.databases import offline_environment

MAJOR_RELEASES = {"llama-2", "code-llama", "llama-3", "llama-3.1", "llama-3.2", "llama-3.3", "llama-4", "llama-guard"}


def test_catalog_covers_every_major_release() -> None:
    data = catalog_data()
    assert {family["slug"] for family in data["families"]} == MAJOR_RELEASES
    assert {entry["slug"] for entry in data["licenses"]} == {
        "llama2",
        "llama3",
        "llama3.1",
        "llama3.2",
        "llama3.3",
        "llama4",
    }
    families_with_models = {entry["family"] for entry in data["models"]}
    assert families_with_models == MAJOR_RELEASES


def test_load_is_idempotent(settings: Settings) -> None:
    first = asyncio.run(in_unit_of_work(settings, load_catalog))
    assert first.created == {"licenses": 6, "families": 8, "models": len(catalog_data()["models"])}
    second = asyncio.run(in_unit_of_work(settings, load_catalog))
    assert second.created == {}
    assert second.updated == {}
    assert sum(second.unchanged.values()) == sum(first.created.values())


def test_a_corrected_fact_updates_exactly_its_record(settings: Settings, tmp_path: Path, client: TestClient) -> None:
    asyncio.run(in_unit_of_work(settings, load_catalog))
    data = yaml.safe_load(CATALOG.read_text())
    for entry in data["models"]:
        if entry["repo_id"] == "meta-llama/Llama-3.3-70B-Instruct":
            entry["release_date"] = "2024-12-04"
    corrected = tmp_path / "llama.yaml"
    corrected.write_text(yaml.safe_dump(data))
    result = asyncio.run(in_unit_of_work(settings, lambda session: load_catalog(session, corrected)))
    assert result.updated == {"models": 1}
    assert result.created == {}
    assert client.get("/v1/models/meta-llama/Llama-3.3-70B-Instruct").json()["release_date"] == "2024-12-04"


def _run(args: list[str], database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = offline_environment(CORRAL_DATABASE_URL=database_url)
    return subprocess.run(
        [sys.executable, "-m", "corral", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )


def test_cli_load_and_first_start_of_embedded_database(settings: Settings, tmp_path: Path, backend: str) -> None:
    loaded = _run(["catalog", "load"], settings.database_url, tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert '"models":' in loaded.stdout
    if backend != "sqlite":
        return
    # A new embedded database is seeded the first time it is prepared (serve then fails to bind TEST-NET-1).
    fresh = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    started = _run(["serve", "--host", "192.0.2.1"], fresh, tmp_path)
    assert "loaded the Llama catalog" in started.stderr
    again = _run(["catalog", "load"], fresh, tmp_path)
    assert '"created":{}' in again.stdout


def test_every_catalog_figure_reproduces_by_arithmetic() -> None:
    """Parameter counts (vision towers, cross-attention layers and experts included), the active parameters of the
    mixtures of experts and the stored bytes of the quantized releases, each from the entry's architecture."""
    entries = model_entries(catalog_data())
    for entry in entries:
        figures = arithmetic_figures(entry)
        assert figures is not None, f"{entry['repo_id']}: its architecture cannot be counted"
        assert figures.parameters == entry["parameter_count"], entry["repo_id"]
        assert figures.active_parameters == entry.get("active_parameters"), entry["repo_id"]
        assert figures.stored_weight_bytes == entry.get("stored_weight_bytes"), entry["repo_id"]
    quantized = [entry["repo_id"] for entry in entries if entry.get("lineage") == "quantized"]
    assert sorted(quantized) == [
        "meta-llama/Llama-3.1-405B-FP8",
        "meta-llama/Llama-3.1-405B-Instruct-FP8",
        "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8",
    ]
    assert all(entry.get("stored_weight_bytes") for entry in entries if entry["repo_id"] in quantized)


def test_the_parts_beyond_the_decoder_are_counted() -> None:
    """Each component adds what transformers builds for it: the numbers from the configs, part by part."""
    by_repo = {entry["repo_id"]: entry for entry in model_entries(catalog_data())}

    def count(repo: str, **changes: Any) -> int:
        figures = arithmetic_figures({**by_repo[repo], **changes})
        assert figures is not None
        return figures.parameters

    vision = by_repo["meta-llama/Llama-3.2-11B-Vision"]
    text_only = {**vision, "components": None, "num_layers": 40}
    text_only_count = arithmetic_figures(text_only)
    assert text_only_count is not None
    # The image encoder, the projector, 8 image-token rows and the cross-attention layers' norms and gates.
    extra = 863_567_379 + 31_461_376 + 8 * 4096 + 8 * (2 * 128 + 2)
    assert count("meta-llama/Llama-3.2-11B-Vision") - text_only_count.parameters == extra
    scout = by_repo["meta-llama/Llama-4-Scout-17B-16E"]
    without_vision = {key: value for key, value in scout["components"].items() if key != "vision"}
    assert (
        count("meta-llama/Llama-4-Scout-17B-16E") - count("meta-llama/Llama-4-Scout-17B-16E", components=without_vision)
        == 871_932_416
    )
    # One expert more in each of Scout's 48 MoE layers: gate, up and down at 8,192, and a router row.
    assert count("meta-llama/Llama-4-Scout-17B-16E", moe_experts_total=17) - count(
        "meta-llama/Llama-4-Scout-17B-16E"
    ) == 48 * (3 * 5120 * 8192 + 5120)
    # Maverick's MoE layers are every second one: 24 of 48.
    maverick = by_repo["meta-llama/Llama-4-Maverick-17B-128E"]
    assert count("meta-llama/Llama-4-Maverick-17B-128E", moe_experts_total=129) - count(
        "meta-llama/Llama-4-Maverick-17B-128E"
    ) == 24 * (3 * 5120 * 8192 + 5120)
    assert maverick["components"]["moe_layer_step"] == 2


@pytest.mark.usefixtures("catalog")
def test_every_catalog_model_answers_its_requirements_at_its_default_precision(client: TestClient) -> None:
    entries = model_entries(catalog_data())
    for entry in entries:
        repo = entry["repo_id"]
        response = client.get(f"/v1/models/{repo}/requirements")
        assert response.status_code == 200, (repo, response.text)
        needs = response.json()
        default = entry.get("default_dtype", "bfloat16")
        expected = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(default, default)
        assert needs["precision"] == expected, repo
        assert needs["parameters"] == entry["parameter_count"], repo
        stored = entry.get("stored_weight_bytes")
        bits = {"bf16": 16, "fp16": 16, "fp8": 8}[expected]
        assert needs["inference"]["weights"]["bytes"] == (stored or entry["parameter_count"] * bits // 8), repo
        model = client.get(f"/v1/models/{repo}").json()
        assert (model["parameter_count"], model["active_parameters"], model["stored_weight_bytes"]) == (
            entry["parameter_count"],
            entry.get("active_parameters"),
            stored,
        ), repo


@pytest.mark.usefixtures("catalog")
def test_the_405b_fp8_release_is_sized_as_stored_and_fits_one_node_of_eight_h100(client: TestClient) -> None:
    needs = client.get("/v1/models/meta-llama/Llama-3.1-405B-FP8/requirements").json()
    assert (needs["precision"], needs["kv_precision"]) == ("fp8", "bf16")
    # 324,538,466,304 fp8 parameters, 15,237,120 fp32 scales, 81,314,922,496 parameters in bf16.
    stored = 324_538_466_304 + 15_237_120 * 4 + 81_314_922_496 * 2
    assert needs["inference"]["weights"]["bytes"] == needs["weights_by_precision"]["fp8"]["bytes"] == stored
    assert needs["weights_by_precision"]["bf16"]["bytes"] == 405_853_388_800 * 2  # what is stored counts at fp8 only
    assert any("as stored" in note for note in needs["notes"])
    h100 = next(item for item in needs["accelerators"] if item["accelerator"] == "nvidia-h100-80gb")
    assert h100["count_needed"] == 8  # all of one 8-GPU machine at its full 131,072-token context (hf)
    assert h100["nodes_needed"] == 1  # vLLM: tensor parallel 8 on one node
    short = client.get("/v1/models/meta-llama/Llama-3.1-405B-FP8/requirements", params={"context_tokens": 4096})
    assert next(i for i in short.json()["accelerators"] if i["accelerator"] == "nvidia-h100-80gb")["count_needed"] == 7
    bf16 = client.get("/v1/models/meta-llama/Llama-3.1-405B/requirements").json()
    assert bf16["precision"] == "bf16"
    assert next(item for item in bf16["accelerators"] if item["accelerator"] == "nvidia-h100-80gb")["nodes_needed"] == 2


@pytest.mark.usefixtures("catalog")
def test_model_search_sizes_a_quantized_release_as_stored(client: TestClient) -> None:
    """Six H100s hold 405B at one byte a parameter (456 GiB with 4,096 tokens of cache) but not the FP8 release as
    stored (547 GiB): the SQL rendering of the rule reads the stored size as the Python one does."""
    found = client.get(
        "/v1/models",
        params={"fits_accelerator": "nvidia-h100-80gb", "fits_count": 6, "fits_precision": "fp8", "limit": 200},
    )
    assert found.status_code == 200, found.text
    repos = {item["repo_id"] for item in found.json()["items"]}
    assert "meta-llama/Llama-3.1-405B" in repos
    assert "meta-llama/Llama-3.1-405B-FP8" not in repos
    seven = client.get(
        "/v1/models",
        params={"fits_accelerator": "nvidia-h100-80gb", "fits_count": 7, "fits_precision": "fp8", "limit": 200},
    ).json()
    assert "meta-llama/Llama-3.1-405B-FP8" in {item["repo_id"] for item in seven["items"]}


@pytest.mark.usefixtures("catalog")
def test_the_maverick_fp8_release_is_sized_as_stored(client: TestClient) -> None:
    """It fits one 8 x H100 host, as the card says, at 131,072 tokens (its KV cache is estimated over every layer,
    an upper bound for Llama 4's chunked attention, so its full 1M context asks for two)."""
    needs = client.get(
        "/v1/models/meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8/requirements", params={"context_tokens": 131072}
    ).json()
    # 23 MoE layers (every second, but the last) of 128 experts in fp8 with bf16 scales; the rest in bf16.
    stored = 370_440_929_280 + 63_307_776 * 2 + (401_583_781_376 - 370_440_929_280) * 2
    assert (needs["precision"], needs["inference"]["weights"]["bytes"]) == ("fp8", stored)
    h100 = next(item for item in needs["accelerators"] if item["accelerator"] == "nvidia-h100-80gb")
    assert h100["nodes_needed"] == 1
