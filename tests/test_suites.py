"""Suites: the shipped files are valid and complete; loading keeps every version; the API shows them."""

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from corral.config import Settings
from corral.db import in_unit_of_work
from corral.suites.service import SUITES_DIR, SuiteFileError, content_version, load_suites, read_suite_files

EVALS_DIR = SUITES_DIR.parent


def suites() -> dict[str, object]:
    return {definition.name: definition for definition in read_suite_files()}


def test_shipped_suites() -> None:
    found = suites()
    assert set(found) == {"openllm-v2", "core", "smoke"}
    leaderboard = {task.name: task for task in found["openllm-v2"].tasks}
    assert {name: task.num_fewshot for name, task in leaderboard.items()} == {
        "leaderboard_ifeval": 0,
        "leaderboard_bbh": 3,
        "leaderboard_math_hard": 4,
        "leaderboard_gpqa": 0,
        "leaderboard_musr": 0,
        "leaderboard_mmlu_pro": 5,
    }
    assert leaderboard["leaderboard_ifeval"].metrics == ["prompt_level_strict_acc", "inst_level_strict_acc"]
    assert len(leaderboard["leaderboard_bbh"].subtask_lower_bounds) == 24
    assert leaderboard["leaderboard_bbh"].subtask_lower_bounds["leaderboard_bbh_object_counting"] == pytest.approx(
        1 / 19, abs=1e-9
    )
    assert leaderboard["leaderboard_musr"].subtask_lower_bounds["leaderboard_musr_object_placements"] == 0.2
    assert leaderboard["leaderboard_gpqa"].lower_bound == 0.25
    assert leaderboard["leaderboard_mmlu_pro"].lower_bound == 0.1


def test_smoke_tasks_and_data_ship_in_the_repo() -> None:
    smoke = suites()["smoke"]
    directory = EVALS_DIR / smoke.include_path
    for task in smoke.tasks:
        definition = yaml.safe_load((directory / f"{task.name}.yaml").read_text())
        assert definition["task"] == task.name
        data = directory / definition["dataset_kwargs"]["data_files"]["test"]
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        assert len(rows) >= 8
        assert {metric["metric"] for metric in definition["metric_list"]} >= set(task.metrics)
    mc = [json.loads(line) for line in (directory / "corral_smoke_mc.jsonl").read_text().splitlines()]
    assert all(len(row["choices"]) == 4 and 0 <= row["answer"] < 4 for row in mc)


def _copy_suites(tmp_path: Path) -> Path:
    directory = tmp_path / "suites"
    shutil.copytree(SUITES_DIR, directory)
    return directory


def test_versions_are_kept(settings: Settings, tmp_path: Path, client: TestClient) -> None:
    directory = _copy_suites(tmp_path)
    first = asyncio.run(in_unit_of_work(settings, lambda session: load_suites(session, directory)))
    assert asyncio.run(in_unit_of_work(settings, lambda session: load_suites(session, directory))) == first

    path = directory / "smoke.yaml"
    original = path.read_text()
    path.write_text("# only a comment changed\n" + original)
    assert asyncio.run(in_unit_of_work(settings, lambda session: load_suites(session, directory))) == first
    path.write_text(original.replace("context_tokens: 512", "context_tokens: 1024"))
    second = asyncio.run(in_unit_of_work(settings, lambda session: load_suites(session, directory)))
    assert second["smoke"] != first["smoke"]
    assert second["core"] == first["core"]

    smoke = client.get("/v1/suites/smoke").json()
    assert (smoke["version"], smoke["latest"]) == (second["smoke"], True)
    assert smoke["versions"] == [second["smoke"], first["smoke"]]
    old = client.get(f"/v1/suites/smoke/versions/{first['smoke']}").json()
    assert (old["definition"]["context_tokens"], old["latest"]) == (512, False)

    path.write_text(original)  # back to the first version: it becomes current again, nothing is added
    assert asyncio.run(in_unit_of_work(settings, lambda session: load_suites(session, directory))) == first
    assert client.get("/v1/suites/smoke").json()["versions"] == [second["smoke"], first["smoke"]]
    listed = client.get("/v1/suites").json()["items"]
    assert [(item["name"], item["version"]) for item in listed] == sorted(first.items())


def test_api_errors(settings: Settings, client: TestClient) -> None:
    asyncio.run(in_unit_of_work(settings, load_suites))
    assert client.get("/v1/suites/nope").status_code == 404
    assert client.get("/v1/suites/smoke/versions/000000000000").status_code == 404
    assert client.get("/v1/suites/smoke/versions/latest").status_code == 422
    smoke = client.get("/v1/suites").json()["items"][-1]
    assert smoke["tasks"] == ["corral_smoke_mc", "corral_smoke_gen"]
    assert smoke["version"] == content_version(suites()["smoke"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["shards"].pop(), "every task exactly once"),
        (lambda d: d["tasks"][0].pop("lower_bound"), "exactly one of lower_bound"),
        (lambda d: d.update(name="other"), "named after its suite"),
        (lambda d: d.update(unknown=1), "Extra inputs are not permitted"),
    ],
)
def test_invalid_suite_files_are_refused(tmp_path: Path, change, message: str) -> None:
    directory = _copy_suites(tmp_path)
    data = yaml.safe_load((directory / "smoke.yaml").read_text())
    change(data)
    (directory / "smoke.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SuiteFileError, match=r"smoke\.yaml") as raised:
        read_suite_files(directory)
    assert message in str(raised.value)
