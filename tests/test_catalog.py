"""The shipped Llama catalog: complete, idempotent, correctable, and loaded on a new embedded database."""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from app.catalog.loader import CATALOG, catalog_data, load_catalog
from app.config import Settings
from app.db import in_unit_of_work
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
        [sys.executable, "-m", "app", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
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


# Catalog models whose requirements cannot be answered yet, and why: each must stay a 409 until its facts are found.
WITHOUT_FIGURES = {"meta-llama/Llama-Guard-4-12B": "its config.json was not found: no architecture, no exact count"}


@pytest.mark.usefixtures("catalog")
def test_every_catalog_model_answers_its_requirements_at_its_default_precision(client: TestClient) -> None:
    from app.catalog.loader import catalog_data, model_entries

    answered = 0
    for entry in model_entries(catalog_data()):
        repo = entry["repo_id"]
        response = client.get(f"/v1/models/{repo}/requirements")
        if repo in WITHOUT_FIGURES:
            assert response.status_code == 409, repo
            continue
        assert response.status_code == 200, (repo, response.text)
        needs = response.json()
        default = entry.get("default_dtype", "bfloat16")
        expected = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(default, default)
        assert needs["precision"] == expected, repo
        assert needs["parameters"] == entry["parameter_count"], repo
        answered += 1
    assert answered == len(model_entries(catalog_data())) - len(WITHOUT_FIGURES)


@pytest.mark.usefixtures("catalog")
def test_the_405b_fp8_release_is_estimated_at_its_stored_precision_and_fits_one_node_of_eight_h100(
    client: TestClient,
) -> None:
    needs = client.get("/v1/models/meta-llama/Llama-3.1-405B-FP8/requirements").json()
    assert (needs["precision"], needs["kv_precision"]) == ("fp8", "bf16")
    assert needs["inference"]["weights"]["bytes"] == 405_853_388_800  # one byte a parameter
    h100 = next(item for item in needs["accelerators"] if item["accelerator"] == "nvidia-h100-80gb")
    assert h100["count_needed"] == 7  # of one 8-GPU machine (hf places whole layers)
    assert h100["nodes_needed"] == 1  # vLLM: tensor parallel 8 on one node
    bf16 = client.get("/v1/models/meta-llama/Llama-3.1-405B/requirements").json()
    assert bf16["precision"] == "bf16"
    assert next(item for item in bf16["accelerators"] if item["accelerator"] == "nvidia-h100-80gb")["nodes_needed"] == 2
