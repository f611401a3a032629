"""Rules a rework could break without a word, each pinned by a test that fails when the rule goes (found by
mutating the code: these survived every other test). Both databases, through the real claim statement."""

import asyncio
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import update

from corral.config import Settings
from corral.db import in_unit_of_work
from corral.tables import EvaluationJob, JobAttempt
from tests.support.evaluations import GIB, lease, make_model, make_runner
from tests.test_queue import claim, request_smoke, rows


def set_requirements(settings: Settings, evaluation_id: str, memory: int, device: int) -> None:
    """Every job of the evaluation needs `memory` in all and `device` on one device (a large model's piece)."""

    async def work(session) -> None:  # type: ignore[no-untyped-def]
        await session.execute(
            update(EvaluationJob)
            .where(EvaluationJob.evaluation_id == uuid.UUID(evaluation_id))
            .values(required_memory_bytes=memory, required_device_bytes=device)
        )

    asyncio.run(in_unit_of_work(settings, work))


def test_a_runner_of_many_small_devices_never_claims_a_piece_no_device_can_hold(
    queue_client: TestClient, fast_settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, many_small = make_runner(client, admin_headers, "8x24", memory_gib=24, count=8, max_concurrent_jobs=4)
    _, one_big = make_runner(client, admin_headers, "1x141", memory_gib=141, max_concurrent_jobs=4)
    evaluation = request_smoke(client, publish_headers, sha)
    # 100 GiB in all fits 8 x 24 = 192 GiB, but one piece of 100 GiB fits no 24 GiB device.
    set_requirements(fast_settings, evaluation["id"], memory=100 * GIB, device=100 * GIB)
    assert claim(client, many_small) is None
    first = claim(client, one_big)
    assert first is not None
    assert first["evaluation_id"] == evaluation["id"]
    # A piece that fits one small device is the many-small runner's to take.
    other = request_smoke(client, publish_headers, sha, force=True)
    set_requirements(fast_settings, other["id"], memory=100 * GIB, device=20 * GIB)
    taken = claim(client, many_small)
    assert taken is not None
    assert taken["evaluation_id"] == other["id"]


def test_out_of_memory_grows_both_the_total_and_the_per_device_requirement(
    queue_client: TestClient, fast_settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, small = make_runner(client, admin_headers, "1x40", memory_gib=40, max_concurrent_jobs=2)
    _, big = make_runner(client, admin_headers, "1x80", memory_gib=80, max_concurrent_jobs=2)
    evaluation = request_smoke(client, publish_headers, sha)
    set_requirements(fast_settings, evaluation["id"], memory=30 * GIB, device=30 * GIB)
    first = claim(client, small)
    assert first is not None
    failed = client.post(
        f"/v1/runner/attempts/{first['attempt_id']}/fail",
        json={"category": "out_of_memory", "message": "CUDA out of memory"},
        headers=lease(first, small),
    )
    assert failed.status_code == 200, failed.text
    assert failed.json()["retried"] is True
    [job] = rows(fast_settings, EvaluationJob, id=uuid.UUID(first["job_id"]))
    # +50 % of both figures (CORRAL_OOM_MEMORY_GROWTH_PERCENT): the retry cannot land on the same device size.
    assert (job.required_memory_bytes, job.required_device_bytes) == (45 * GIB, 45 * GIB)
    other_shard = claim(client, small)  # the evaluation's other job, still 30 GiB, fits the 40 GiB device
    assert other_shard is not None
    assert other_shard["job_id"] != first["job_id"]
    assert claim(client, small) is None  # 45 GiB fits no 40 GiB device any more
    retried = claim(client, big)
    assert retried is not None
    assert retried["job_id"] == first["job_id"]
    attempts = rows(fast_settings, JobAttempt, job_id=uuid.UUID(first["job_id"]))
    assert len(attempts) == 2


def test_the_claim_statement_holds_every_condition_of_the_rule(
    queue_client: TestClient, fast_settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    """Each runner below misses one condition of the rule and must not claim; the runner that holds exactly what
    the job needs (to the byte, in all and per device) claims it."""
    client = queue_client
    sha = make_model(client, publish_headers)
    misses = {
        "lacks the label": make_runner(client, admin_headers, "no-label", memory_gib=24, count=2)[1],
        "has another label": make_runner(client, admin_headers, "us", memory_gib=24, count=2, labels=("us",))[1],
        "unknown lm-eval": make_runner(
            client, admin_headers, "unknown", memory_gib=24, count=2, labels=("eu",), lm_eval_version=None
        )[1],
        "other backend": make_runner(
            client, admin_headers, "vllm", memory_gib=24, count=2, labels=("eu",), backends=("vllm",)
        )[1],
        "a byte short in all": make_runner(client, admin_headers, "short", memory_gib=16, count=3, labels=("eu",))[1],
        "a byte short per device": make_runner(client, admin_headers, "small", memory_gib=12, count=4, labels=("eu",))[
            1
        ],
    }
    _, exact = make_runner(client, admin_headers, "exact", memory_gib=24, count=2, labels=("eu", "x"))
    evaluation = request_smoke(client, publish_headers, sha, labels=["eu"])
    # 24 GiB in all is short of 48; 3 x 16 = 48 GiB in all, but no 16 GiB device holds a 24 GiB piece.
    set_requirements(fast_settings, evaluation["id"], memory=48 * GIB, device=24 * GIB)
    for why, runner in misses.items():
        assert claim(client, runner) is None, f"a runner that {why} claimed the job"
    taken = claim(client, exact)
    assert taken is not None, "a runner that holds exactly what the job needs must get it"
    assert taken["evaluation_id"] == evaluation["id"]
