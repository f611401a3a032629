"""The runner protocol: claim, heartbeat, log, result, fail; leases, the reaper, cancel and long-polling."""

import asyncio
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from corral.clock import SYSTEM_CLOCK, Clock
from corral.config import Settings
from corral.db import in_unit_of_work
from corral.errors import Conflict
from corral.evaluations import state
from corral.evaluations.wakeups import QueueSignal
from corral.main import create_app
from corral.protocol import repository
from corral.protocol.reaper import reap_once
from corral.tables import AttemptLogChunk, JobAttempt, JobResult, Runner
from corral.tables.base import utcnow
from corral.wire.enums import AttemptState, FailureCategory
from tests.support.clock import ManualClock
from tests.support.evaluations import lease, lm_eval_results, load_shipped_suites, make_model, make_runner

SMOKE_TASKS = [["corral_smoke_mc"], ["corral_smoke_gen"]]


def request_smoke(client: TestClient, headers: dict[str, str], sha: str, **extra: Any) -> dict[str, Any]:
    body = {"model": "corral-test/tiny-llama", "revision": sha, "suite": "smoke", **extra}
    answer = client.post("/v1/evaluations", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def claim(client: TestClient, runner: dict[str, str], **params: Any) -> dict[str, Any] | None:
    answer = client.post("/v1/runner/jobs/claim", headers=runner, params=params)
    assert answer.status_code in (201, 204), answer.text
    return dict(answer.json()) if answer.status_code == 201 else None


def runner_contacted(client: TestClient, admin_headers: dict[str, str], name: str) -> bool:
    listed = client.get("/v1/runners", headers=admin_headers).json()["items"]
    return any(runner["name"] == name and runner["last_contact_at"] for runner in listed)


def rows(settings: Settings, entity: type, **where: Any) -> list[Any]:
    async def work(session):  # type: ignore[no-untyped-def]
        statement = select(entity).filter_by(**where)
        return list((await session.execute(statement)).scalars())

    return asyncio.run(in_unit_of_work(settings, work))


def reap(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> int:
    engine_settings = settings

    async def run() -> int:
        from corral.db import create_engine, create_sessionmaker

        engine = create_engine(engine_settings)
        try:
            return await reap_once(create_sessionmaker(engine), engine_settings, QueueSignal(), clock)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_protocol_end_to_end(
    queue_client: TestClient,
    fast_settings: Settings,
    clock: ManualClock,
    admin_headers: dict[str, str],
    publish_headers: dict[str, str],
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8, max_concurrent_jobs=2)
    # A complete run (no limit): its scores rank, which the view-cache check below needs (a sample never ranks;
    # the limit's way to the runner is walked in tests/test_request_fields.py).
    evaluation = request_smoke(
        client, publish_headers, sha, apply_chat_template=True, num_fewshot=2, gen_kwargs={"temperature": 0}
    )

    first = claim(client, runner)
    assert first is not None
    assert (first["model"], first["revision"], first["suite"], first["include_path"]) == (
        "corral-test/tiny-llama",
        sha,
        "smoke",
        "tasks/smoke",
    )
    assert first["tasks"] == [{"name": "corral_smoke_mc", "num_fewshot": 2}]
    assert first["settings"]["apply_chat_template"] is True
    assert first["settings"]["limit"] is None
    assert (first["settings"]["num_fewshot"], first["settings"]["gen_kwargs"]) == (2, {"temperature": 0})
    assert first["heartbeat_seconds"] == 15
    assert first["attempt_number"] == 1
    second = claim(client, runner)
    assert second is not None
    assert second["tasks"][0]["name"] == "corral_smoke_gen"
    assert claim(client, runner) is None  # at its concurrency limit (and the queue is empty)

    clock.advance(1)  # a second later: the heartbeat moves the lease on by as much
    beat = client.post(
        f"/v1/runner/attempts/{first['attempt_id']}/heartbeat",
        json={"progress": {"overall": 0.5, "tasks": {"corral_smoke_mc": 0.5}, "stage": "loglikelihood"}},
        headers=lease(first, runner),
    )
    assert beat.status_code == 200, beat.text
    assert beat.json()["cancel_requested"] is False
    assert beat.json()["lease_expires_at"] > first["lease_expires_at"]

    log_url = f"/v1/runner/attempts/{first['attempt_id']}/log"
    headers = {**lease(first, runner), "Content-Type": "text/plain"}
    appended = client.patch(log_url, content=b"loading\n", headers={**headers, "Content-Range": "bytes 0-7"})
    assert (appended.status_code, appended.headers["range"], appended.json()["log_bytes"]) == (202, "0-8", 8)
    stale = client.patch(log_url, content=b"again\n", headers={**headers, "Content-Range": "bytes 0-5"})
    assert (stale.status_code, stale.headers["range"]) == (416, "0-8")
    mismatch = client.patch(log_url, content=b"abc", headers={**headers, "Content-Range": "bytes 8-20"})
    assert mismatch.status_code == 400
    assert client.patch(log_url, content=b"done\n", headers={**headers, "Content-Range": "8-12"}).status_code == 202

    shown = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    assert shown["state"] == "running"
    job = shown["jobs"][0]
    assert job["log_tail"] == "loading\ndone\n"
    assert job["attempts"][0]["progress"]["tasks"] == {"corral_smoke_mc": 0.5}
    assert job["attempts"][0]["runner"] == "cpu-1"
    assert client.get(f"/v1/attempts/{first['attempt_id']}/log").text == "loading\ndone\n"

    url = f"/v1/runner/attempts/{first['attempt_id']}/result"
    document = lm_eval_results(["corral_smoke_mc"])
    stored = client.put(
        url, json={"results": document, "samples": {"corral_smoke_mc": [{"doc_id": 0}]}}, headers=lease(first, runner)
    )
    assert stored.status_code == 201, stored.text
    assert (stored.json()["job_state"], stored.json()["evaluation_state"]) == ("succeeded", "running")
    replay = client.put(url, json={"results": document}, headers=lease(first, runner))
    assert (replay.status_code, replay.json()["result_id"]) == (200, stored.json()["result_id"])
    changed = client.put(url, json={"results": lm_eval_results(["corral_smoke_mc"], 0.9)}, headers=lease(first, runner))
    assert changed.status_code == 409
    # The attempt is over: its lease is gone for every other write.
    late = client.post(f"/v1/runner/attempts/{first['attempt_id']}/heartbeat", json={}, headers=lease(first, runner))
    assert late.status_code == 409

    before = client.get("/v1/leaderboards/smoke")  # read (and kept by the server's view cache) before the scores
    assert before.json()["items"] == []
    done = client.put(
        f"/v1/runner/attempts/{second['attempt_id']}/result",
        json={"results": lm_eval_results(["corral_smoke_gen"], metric="exact_match,strict-match")},
        headers=lease(second, runner),
    )
    assert done.json()["evaluation_state"] == "succeeded"
    # The new scores invalidate what was kept: the next read ranks the model at once.
    after = client.get("/v1/leaderboards/smoke", headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    assert [row["evaluation_id"] for row in after.json()["items"]] == [evaluation["id"]]
    final = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    assert final["state"] == "succeeded"
    assert final["finished_at"] is not None
    results = rows(fast_settings, JobResult)
    assert len(results) == 2
    assert all(result.samples_gzip is None for result in results if result.tasks == ["corral_smoke_gen"])


def test_foreign_and_bad_writes_are_refused_and_change_nothing(
    queue_client: TestClient, fast_settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    _, other = make_runner(client, admin_headers, "cpu-2", memory_gib=8)
    request_smoke(client, publish_headers, sha)
    mine = claim(client, runner)
    assert mine is not None
    attempt = mine["attempt_id"]

    # Another runner's token on this attempt, even with the right lease token: 403.
    foreign = {**other, "Corral-Lease-Token": mine["lease_token"]}
    assert client.post(f"/v1/runner/attempts/{attempt}/heartbeat", json={}, headers=foreign).status_code == 403
    assert (
        client.put(
            f"/v1/runner/attempts/{attempt}/result", json={"results": lm_eval_results(SMOKE_TASKS[0])}, headers=foreign
        ).status_code
        == 403
    )
    # The right runner with a wrong lease token: 409.
    wrong = {**runner, "Corral-Lease-Token": "not-the-lease"}
    assert (
        client.post(
            f"/v1/runner/attempts/{attempt}/fail", json={"category": "model_error", "message": "x"}, headers=wrong
        ).status_code
        == 409
    )
    # An admin token is not a runner.
    assert (
        client.post(
            f"/v1/runner/attempts/{attempt}/heartbeat",
            json={},
            headers={**admin_headers, "Corral-Lease-Token": mine["lease_token"]},
        ).status_code
        == 403
    )
    # Documents that are not lm-eval results, or lack the job's task.
    url = f"/v1/runner/attempts/{attempt}/result"
    for document, path in (
        ({"hello": "world"}, "results.results"),
        ({"results": {}}, "results.results"),
        ({"results": {"corral_smoke_mc": {"acc,none": "high"}}}, "results.results"),
        (lm_eval_results(["some_other_task"]), "results.results"),
    ):
        refused = client.put(url, json={"results": document}, headers=lease(mine, runner))
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"].startswith(path)
    unknown = client.post(
        "/v1/runner/attempts/00000000-0000-0000-0000-000000000000/heartbeat", json={}, headers=lease(mine, runner)
    )
    assert unknown.status_code == 404

    [stored] = rows(fast_settings, JobAttempt)
    assert (stored.state, stored.failure_category, stored.log_bytes) == ("running", None, 0)
    assert rows(fast_settings, JobResult) == []
    assert rows(fast_settings, AttemptLogChunk) == []


def test_stalled_runner_loses_its_lease_and_another_finishes(
    queue_client: TestClient,
    fast_settings: Settings,
    clock: ManualClock,
    admin_headers: dict[str, str],
    publish_headers: dict[str, str],
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, stalled = make_runner(client, admin_headers, "stalls", memory_gib=8)
    _, healthy = make_runner(client, admin_headers, "healthy", memory_gib=8)
    evaluation = request_smoke(client, publish_headers, sha)
    lost = claim(client, stalled)
    assert lost is not None
    clock.advance(fast_settings.lease_seconds - 0.001)
    assert reap(fast_settings, clock) == 0  # the lease is still good, a millisecond before it ends

    clock.advance(0.001)  # the lease's last instant: no heartbeat came in lease_seconds
    # A late write before the reaper ran is refused too: the lease lapsed.
    late = client.post(f"/v1/runner/attempts/{lost['attempt_id']}/heartbeat", json={}, headers=lease(lost, stalled))
    assert late.status_code == 409
    assert "lapsed" in late.json()["detail"]
    assert reap(fast_settings, clock) == 1
    assert reap(fast_settings, clock) == 0  # idempotent

    taken = [claim(client, healthy)]
    assert taken[0] is not None
    assert taken[0]["job_id"] == lost["job_id"]
    assert taken[0]["attempt_number"] == 2
    result = client.put(
        f"/v1/runner/attempts/{taken[0]['attempt_id']}/result",
        json={"results": lm_eval_results(SMOKE_TASKS[0])},
        headers=lease(taken[0], healthy),
    )
    assert result.status_code == 201
    # The stalled runner wakes up and tries to finish: 409, and the stored result is the healthy runner's.
    stale = client.put(
        f"/v1/runner/attempts/{lost['attempt_id']}/result",
        json={"results": lm_eval_results(SMOKE_TASKS[0], 0.1)},
        headers=lease(lost, stalled),
    )
    assert stale.status_code == 409
    assert [r.attempt_id for r in rows(fast_settings, JobResult)] == [__import__("uuid").UUID(taken[0]["attempt_id"])]
    job = client.get(f"/v1/evaluations/{evaluation['id']}").json()["jobs"][0]
    assert [(a["runner"], a["state"], a["failure_category"]) for a in job["attempts"]] == [
        ("stalls", "lost", "lease_expired"),
        ("healthy", "succeeded", None),
    ]
    message = f"No heartbeat for {fast_settings.lease_seconds} s: the runner is presumed lost."
    assert job["attempts"][0]["failure_message"] == message
    assert job["attempts"][0]["finished_at"] is not None


def test_the_reaper_counts_every_lapsed_attempt_of_a_pass(
    queue_client: TestClient,
    fast_settings: Settings,
    clock: ManualClock,
    admin_headers: dict[str, str],
    publish_headers: dict[str, str],
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, stalled = make_runner(client, admin_headers, "stalls", memory_gib=8, max_concurrent_jobs=2)
    evaluation = request_smoke(client, publish_headers, sha)
    assert claim(client, stalled) is not None
    assert claim(client, stalled) is not None
    clock.advance(fast_settings.lease_seconds)
    assert reap(fast_settings, clock) == 2  # both, in one pass
    shown = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    assert [(job["state"], job["attempts"][0]["state"]) for job in shown["jobs"]] == [
        ("queued", "lost"),
        ("queued", "lost"),
    ]
    assert shown["state"] == "running"  # it started, and its jobs wait for another runner
    assert shown["started_at"] is not None


def test_a_retried_job_waits_out_its_backoff_on_the_queue_clock(
    fast_settings: Settings, clock: ManualClock, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    settings = fast_settings.model_copy(update={"retry_backoff_seconds": 30})
    load_shipped_suites(settings)
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        sha = make_model(client, publish_headers)
        _, runner = make_runner(client, admin_headers, "flaky", memory_gib=8)
        evaluation = request_smoke(client, publish_headers, sha)
        first = claim(client, runner)
        assert first is not None
        failed = client.post(
            f"/v1/runner/attempts/{first['attempt_id']}/fail",
            json={"category": "infrastructure", "message": "node rebooted"},
            headers=lease(first, runner),
        )
        assert failed.status_code == 200, failed.text
        reply = failed.json()
        assert reply["retried"] is True
        due = datetime.fromisoformat(reply["available_at"])
        assert timedelta(seconds=27) <= due - clock.now() <= timedelta(seconds=33)  # 30 s, +-10 % jitter

        other = claim(client, runner)  # the other shard is claimable at once
        assert other is not None
        assert other["job_id"] != first["job_id"]
        release = client.post(
            f"/v1/runner/attempts/{other['attempt_id']}/release", json={"reason": "test"}, headers=lease(other, runner)
        )
        assert release.status_code == 200
        clock.advance(26)
        taken = claim(client, runner)
        assert taken is not None
        assert taken["job_id"] == other["job_id"]  # the failed job still waits: it is not due
        shard = next(
            job
            for job in client.get(f"/v1/evaluations/{evaluation['id']}").json()["jobs"]
            if job["id"] == first["job_id"]
        )
        assert shard["waiting_for"] == f"retry backoff until {due.isoformat()}"
        client.post(
            f"/v1/runner/attempts/{taken['attempt_id']}/release", json={"reason": "test"}, headers=lease(taken, runner)
        )
        clock.advance((due - clock.now()).total_seconds())  # the instant it is due
        retried = claim(client, runner)
        assert retried is not None
        assert (retried["job_id"], retried["attempt_number"]) == (first["job_id"], 2)


def test_failure_categories(
    queue_client: TestClient, fast_settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8)

    def fail(claimed: dict[str, Any], category: str) -> dict[str, Any]:
        answer = client.post(
            f"/v1/runner/attempts/{claimed['attempt_id']}/fail",
            json={"category": category, "message": f"{category} happened"},
            headers=lease(claimed, runner),
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    # Infrastructure: retried up to the bound (3), then the evaluation fails with the reason.
    evaluation = request_smoke(client, publish_headers, sha)
    for attempt in range(1, 4):
        claimed = claim(client, runner)
        assert claimed is not None
        assert claimed["attempt_number"] == attempt
        assert claimed["tasks"][0]["name"] == "corral_smoke_mc"
        assert fail(claimed, "infrastructure")["retried"] is True
    claimed = claim(client, runner)
    assert claimed is not None
    last = fail(claimed, "infrastructure")
    assert (last["retried"], last["job_state"], last["evaluation_state"]) == (False, "failed", "failed")
    shown = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    assert "4 attempts failed on infrastructure" in shown["failure_message"]
    assert [job["state"] for job in shown["jobs"]] == ["failed", "canceled"]

    # Out of memory: requeued with more memory; when no runner has more, it fails saying so.
    evaluation = request_smoke(client, publish_headers, sha, seed=2)
    claimed = claim(client, runner)
    assert claimed is not None
    before = claimed["required_memory_bytes"]
    assert fail(claimed, "out_of_memory")["retried"] is True
    again = claim(client, runner)
    assert again is not None
    assert again["job_id"] == claimed["job_id"]
    assert again["required_memory_bytes"] == before * 150 // 100

    # A model error fails the evaluation at once, with the reason shown; its other job is canceled.
    evaluation = request_smoke(client, publish_headers, sha, seed=3)
    client.post(
        f"/v1/runner/attempts/{again['attempt_id']}/fail",
        json={"category": "harness_error", "message": "bad task"},
        headers=lease(again, runner),
    )
    claimed = claim(client, runner)
    assert claimed is not None
    assert claimed["evaluation_id"] == evaluation["id"]
    assert fail(claimed, "model_error")["evaluation_state"] == "failed"
    shown = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    assert (shown["failure_category"], shown["failure_message"]) == ("model_error", "model_error happened")
    assert {job["state"] for job in shown["jobs"]} == {"failed", "canceled"}


def test_a_released_job_is_queued_again_at_once_without_counting_a_failure(
    queue_client: TestClient, fast_settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    _, other = make_runner(client, admin_headers, "cpu-2", memory_gib=8)
    evaluation = request_smoke(client, publish_headers, sha)
    claimed = claim(client, runner)
    assert claimed is not None
    url = f"/v1/runner/attempts/{claimed['attempt_id']}/release"
    reason = {"reason": "SIGTERM: handed back"}

    # Only the claim's runner, with its lease, can hand it back; a bad body is refused; nothing changes.
    assert client.post(url, json=reason, headers=lease(claimed, other)).status_code == 403
    assert client.post(url, json=reason, headers={**runner, "Corral-Lease-Token": "nope"}).status_code == 409
    refused = client.post(url, json={"reason": ""}, headers=lease(claimed, runner))
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert [attempt.state.value for attempt in rows(fast_settings, JobAttempt)] == ["running"]

    released = client.post(url, json=reason, headers=lease(claimed, runner))
    assert released.status_code == 200, released.text
    assert (released.json()["job_state"], released.json()["retried"]) == ("queued", True)
    # The lease is over: a late write from the runner that left is refused.
    beat = client.post(
        f"/v1/runner/attempts/{claimed['attempt_id']}/heartbeat", json={}, headers=lease(claimed, runner)
    )
    assert beat.status_code == 409
    assert client.post(url, json=reason, headers=lease(claimed, runner)).status_code == 409

    # Another runner gets the same job at once (no backoff), as attempt 2.
    again = claim(client, other)
    assert again is not None
    assert (again["job_id"], again["attempt_number"]) == (claimed["job_id"], 2)
    shown = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    job = next(job for job in shown["jobs"] if job["id"] == claimed["job_id"])
    assert [(attempt["state"], attempt["failure_message"]) for attempt in job["attempts"]] == [
        ("released", "SIGTERM: handed back"),
        ("running", None),
    ]
    assert shown["state"] == "running"
    # No failure was counted: three infrastructure failures still retry (the bound is three).
    for _ in range(3):
        failed = client.post(
            f"/v1/runner/attempts/{again['attempt_id']}/fail",
            json={"category": "infrastructure", "message": "network"},
            headers=lease(again, other),
        )
        assert failed.json()["retried"] is True
        again = claim(client, other)
        assert again is not None


def test_cancel_reaches_a_running_job_through_its_heartbeat(
    queue_client: TestClient, fast_settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    evaluation = request_smoke(client, publish_headers, sha)
    claimed = claim(client, runner)
    assert claimed is not None
    canceled = client.post(f"/v1/evaluations/{evaluation['id']}/cancel", headers=publish_headers).json()
    assert [(job["state"], job["cancel_requested"]) for job in canceled["jobs"]] == [
        ("running", True),
        ("canceled", False),
    ]
    beat = client.post(
        f"/v1/runner/attempts/{claimed['attempt_id']}/heartbeat", json={}, headers=lease(claimed, runner)
    )
    assert beat.status_code == 200
    assert beat.json()["cancel_requested"] is True
    refused = client.put(
        f"/v1/runner/attempts/{claimed['attempt_id']}/result",
        json={"results": lm_eval_results(SMOKE_TASKS[0])},
        headers=lease(claimed, runner),
    )
    assert refused.status_code == 409
    shown = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    assert shown["state"] == "canceled"
    assert [job["state"] for job in shown["jobs"]] == ["canceled", "canceled"]
    attempt = shown["jobs"][0]["attempts"][0]
    assert (attempt["state"], attempt["failure_message"]) == ("canceled", "Canceled on request.")
    assert attempt["finished_at"] is not None
    assert all(job["finished_at"] is not None for job in shown["jobs"])
    assert rows(fast_settings, JobResult) == []
    again = client.post(f"/v1/evaluations/{evaluation['id']}/cancel", headers=publish_headers)
    assert (again.status_code, again.json()["state"]) == (200, "canceled")  # cancelling twice is cancelling once


def test_a_job_whose_cancel_was_asked_is_canceled_when_its_runner_fails_or_hands_it_back(
    queue_client: TestClient, fast_settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8, max_concurrent_jobs=2)
    evaluation = request_smoke(client, publish_headers, sha)
    first, second = claim(client, runner), claim(client, runner)
    assert first is not None
    assert second is not None
    canceled = client.post(f"/v1/evaluations/{evaluation['id']}/cancel", headers=publish_headers).json()
    assert [job["cancel_requested"] for job in canceled["jobs"]] == [True, True]
    # A failure that would be retried, and a hand-back that would queue the job again: both end it instead.
    failed = client.post(
        f"/v1/runner/attempts/{first['attempt_id']}/fail",
        json={"category": "infrastructure", "message": "network"},
        headers=lease(first, runner),
    )
    assert failed.status_code == 200, failed.text
    assert (failed.json()["job_state"], failed.json()["retried"]) == ("canceled", False)
    released = client.post(
        f"/v1/runner/attempts/{second['attempt_id']}/release",
        json={"reason": "SIGTERM: handed back"},
        headers=lease(second, runner),
    )
    assert released.status_code == 200, released.text
    assert (released.json()["job_state"], released.json()["retried"]) == ("canceled", False)
    shown = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    assert shown["state"] == "canceled"
    assert [(job["state"], job["finished_at"] is not None) for job in shown["jobs"]] == [
        ("canceled", True),
        ("canceled", True),
    ]
    assert claim(client, runner) is None  # nothing was queued again


def test_a_waiting_claim_gets_work_enqueued_during_its_wait(
    queue_client: TestClient, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    answers: list[int] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            client.post("/v1/runner/jobs/claim", headers=runner, params={"wait": 20}).status_code
        )
    )
    waiting.start()
    deadline = time.monotonic() + 30
    while not runner_contacted(client, admin_headers, "cpu-1"):  # the claim has begun: it waits on an empty queue
        assert time.monotonic() < deadline
        time.sleep(0.05)
    request_smoke(client, publish_headers, sha)
    waiting.join(timeout=30)
    assert answers == [201]
    assert claim(client, runner, wait=0) is None  # at its limit of one job


def test_a_wake_up_rouses_as_many_claims_as_there_are_jobs_not_all() -> None:
    async def scenario() -> tuple[int, int]:
        signal = QueueSignal()
        tickets = [signal.ticket() for _ in range(6)]
        signal.discard(tickets[0])  # a claim that found work: it must not use up a wake-up
        signal.wake(1)  # one new job: MARGIN (2) waiters, the longest-waiting first
        woken = sum(ticket.done() and not ticket.cancelled() for ticket in tickets)
        waits = [asyncio.create_task(signal.wait(ticket, 0.05)) for ticket in tickets[3:]]
        await asyncio.gather(*waits)  # the rest time out and leave the queue
        return woken, len(signal._waiters)

    assert asyncio.run(scenario()) == (2, 0)


def test_a_lease_ends_at_its_expiry_instant_and_an_ended_attempt_keeps_why(
    queue_client: TestClient, fast_settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    request_smoke(client, publish_headers, sha)
    claimed = claim(client, runner)
    assert claimed is not None
    attempt_id, token = uuid.UUID(claimed["attempt_id"]), claimed["lease_token"]
    [attempt] = rows(fast_settings, JobAttempt, id=attempt_id)
    expiry, runner_id, tick = attempt.lease_expires_at, attempt.runner_id, timedelta(microseconds=1)

    async def work(session) -> None:  # type: ignore[no-untyped-def]
        # Just before its expiry the lease holds: nothing to refuse, and a write that changed nothing was a race.
        assert await repository.refusal(session, attempt_id, runner_id, token, expiry - tick) is None
        raced = await repository.refused(session, attempt_id, runner_id, token, expiry - tick)
        assert (type(raced), raced.detail) == (Conflict, "The attempt changed.")
        # At the instant of its expiry it has lapsed: the conditional write changes nothing, and says why.
        ended = await state.end_attempt(
            session,
            attempt_id,
            AttemptState.FAILED,
            expiry,
            message="late",
            held=repository.live(attempt_id, runner_id, token, expiry),
        )
        assert ended is False
        lapsed = await repository.refusal(session, attempt_id, runner_id, token, expiry)
        assert lapsed is not None
        assert lapsed.detail == f"The lease of attempt {attempt_id} lapsed at {expiry.isoformat()}."
        ended = await state.end_attempt(
            session,
            attempt_id,
            AttemptState.FAILED,
            expiry - tick,
            message="CUDA OOM",
            held=repository.live(attempt_id, runner_id, token, expiry - tick),
            category=FailureCategory.OUT_OF_MEMORY,
        )
        assert ended is True

    asyncio.run(in_unit_of_work(fast_settings, work))
    [failed] = rows(fast_settings, JobAttempt, id=attempt_id)
    assert (failed.state, failed.failure_category, failed.failure_message) == (
        AttemptState.FAILED,
        "out_of_memory",
        "CUDA OOM",
    )
    assert failed.finished_at == expiry - timedelta(microseconds=1)


def test_runner_contact_is_written_for_that_runner_at_most_once_per_interval(
    queue_client: TestClient, fast_settings: Settings, admin_headers: dict[str, str]
) -> None:
    polling, _ = make_runner(queue_client, admin_headers, "polling")
    make_runner(queue_client, admin_headers, "quiet")
    polling_id, start = uuid.UUID(polling), utcnow()

    def contact(now: datetime, *, forget: bool = True) -> dict[str, datetime | None]:
        async def work(session) -> dict[str, datetime | None]:  # type: ignore[no-untyped-def]
            if forget:  # as if another process had the call: no memory of the last write here
                repository._last_touch.clear()
            await repository.touch_runner(session, polling_id, now)
            contacts = await session.execute(select(Runner.name, Runner.last_contact_at))
            return {row.name: row.last_contact_at for row in contacts}

        return asyncio.run(in_unit_of_work(fast_settings, work))

    assert contact(start) == {"polling": start, "quiet": None}
    interval = timedelta(seconds=repository.CONTACT_WRITE_SECONDS)
    assert contact(start + interval)["polling"] == start  # not yet: the interval has only just run out
    assert contact(start + interval + timedelta(microseconds=1))["polling"] == start + interval + timedelta(
        microseconds=1
    )

    # Within one process the last write is remembered, and the statement is not even sent.
    async def forget_contact(session) -> None:  # type: ignore[no-untyped-def]
        await session.execute(update(Runner).values(last_contact_at=None))

    asyncio.run(in_unit_of_work(fast_settings, forget_contact))
    assert contact(start + 3 * interval, forget=False)["polling"] is None


def test_a_claim_carries_the_code_trust_of_its_revision_now_and_whether_the_weights_may_need_a_hub_token(
    queue_client: TestClient, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    public = client.post(
        "/v1/models/corral-test/tiny-llama/revisions",
        json={"sha": "b" * 40, "snapshot": {"gated": False, "private": False}},
        headers=publish_headers,
    )
    assert public.status_code == 201, public.text
    _, runner = make_runner(
        client, admin_headers, "cpu-1", memory_gib=8, labels=("trusted-code",), max_concurrent_jobs=4
    )
    trust = "/v1/models/corral-test/tiny-llama/revisions/{}/code-trust"
    assert client.put(trust.format(sha), json={"reason": "read it"}, headers=admin_headers).status_code == 200
    trusted = request_smoke(client, publish_headers, sha)
    assert trusted["config"]["trust_remote_code"] is True
    untrusted = request_smoke(client, publish_headers, "b" * 40)
    assert "trust_remote_code" not in untrusted["config"]

    seen: dict[str, list[dict[str, Any]]] = {trusted["id"]: [], untrusted["id"]: []}
    while (found := claim(client, runner)) is not None:
        seen[found["evaluation_id"]].append(found["settings"])
        if len(seen[trusted["id"]]) == 1 and found["evaluation_id"] == trusted["id"]:
            # Withdrawn between its two shards' claims: the second runs without the repository's code.
            assert client.delete(trust.format(sha), headers=admin_headers).status_code == 204
    first, second = seen[trusted["id"]]
    # A revision recorded by hand says nothing of gating: the token may be needed.
    assert (first["trust_remote_code"], first["needs_hub_token"]) == (True, True)
    assert (second["trust_remote_code"], second["needs_hub_token"]) == (False, True)
    # The Hub said public and not gated: no token for these weights, and no code was ever trusted.
    assert [(s["trust_remote_code"], s["needs_hub_token"]) for s in seen[untrusted["id"]]] == [(False, False)] * 2
