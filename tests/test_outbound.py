"""A slow Hub can never take the service down: a real `corral serve` on SQLite and on PostgreSQL, and a fake Hub that
accepts every request and never answers.

- 100 Hub-calling requests at once (commits, registrations from the Hub, syncs, evaluations by ref) hold no
  database connection: while they hang, a runner's heartbeat and claim, anonymous pages, API reads and /readyz are
  answered; the calls beyond the Hub's slots are refused at once with 503 and Retry-After;
- a pull request to the Hub ends at the request deadline like every other Hub call;
- SIGTERM ends the server within its grace period while Hub calls still hang.

The bulkhead itself (app/outbound.py) is pinned first, without a server.
"""

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from corral.outbound import Bulkhead, DeadlinePassed, Saturated
from tests.support.checkpoints import TinyLlama, checkpoint_files
from tests.support.cluster import wait_for
from tests.support.evaluations import TINY_LLAMA_SHAPE
from tests.support.fake_hub import FakeHub, llama_repo
from tests.support.server import Server
from tests.test_scores import openllm_results

SLOTS = 8  # the Hub's bulkhead in these servers (CORRAL_HUB_SYNC_CONCURRENCY)
CALLS = 100


def test_a_full_bulkhead_refuses_at_once_and_a_slot_frees_only_when_its_call_ends() -> None:
    release = threading.Event()
    bulkhead = Bulkhead("the test destination", 2, retry_after_seconds=7)

    async def scenario() -> None:
        slow = asyncio.create_task(bulkhead.call(release.wait, deadline_seconds=None))
        # A caller whose deadline passes gets its answer at once; its call keeps the slot until it really ends.
        with pytest.raises(DeadlinePassed, match=r"did not answer within 0\.05 s"):
            await bulkhead.call(release.wait, deadline_seconds=0.05)
        assert bulkhead.in_flight == 2
        with pytest.raises(Saturated) as refused:
            await bulkhead.call(time.time, deadline_seconds=None)
        assert 7 <= refused.value.retry_after_seconds <= 14  # spread, so that refused callers come back apart
        assert "already has 2 calls in flight" in str(refused.value)
        patient = asyncio.create_task(bulkhead.call(lambda: "waited", deadline_seconds=None, patient=True))
        await asyncio.sleep(0.05)
        assert not patient.done()  # a background caller waits for a slot instead of being refused
        release.set()
        assert await slow is True
        assert await patient == "waited"
        await wait_until(lambda: bulkhead.in_flight == 0)

    asyncio.run(scenario())


async def wait_until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def test_an_error_in_the_destination_reaches_the_caller_and_frees_the_slot() -> None:
    bulkhead = Bulkhead("the test destination", 1)

    def broken() -> None:
        raise ConnectionError("refused")

    async def scenario() -> None:
        with pytest.raises(ConnectionError):
            await bulkhead.call(broken, deadline_seconds=5)
        assert bulkhead.in_flight == 0
        assert await bulkhead.call(lambda: 42, deadline_seconds=5) == 42

    asyncio.run(scenario())


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    files = checkpoint_files(TinyLlama())
    with FakeHub().running() as fake:
        for index in range(12):
            fake.add(llama_repo(f"corral-test/model-{index}", files))
        yield fake


def start_server(tmp_path: Path, database_url: str, hub: FakeHub, **settings: str) -> Server:
    server = Server(
        tmp_path,
        CORRAL_DATABASE_URL=database_url,
        CORRAL_HUB_ENDPOINT=hub.url,
        CORRAL_HUB_TOKEN="hf_server_token",
        CORRAL_HUB_RETRIES="0",
        CORRAL_HUB_TIMEOUT_SECONDS="300",  # the Hub never answers: the deadline ends a request's wait
        CORRAL_HUB_SYNC_CONCURRENCY=str(SLOTS),
        **settings,
    )
    server.start()
    return server


class Client:
    def __init__(self, server: Server) -> None:
        self.url = server.url
        self.tokens = {
            scope: {"Authorization": f"Bearer {server.corral('token', 'create', '--scope', scope, '--name', scope)}"}
            for scope in ("admin", "publish", "read")
        }

    def call(self, method: str, path: str, scope: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = self.tokens[scope] if scope else {}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=180, **kwargs)


def registered(client: Client, repo_id: str) -> None:
    body = {"repo_id": repo_id, "kind": "base", **TINY_LLAMA_SHAPE}
    assert client.call("POST", "/v1/models", "publish", json=body).status_code == 201
    answer = client.call("POST", f"/v1/models/{repo_id}/revisions", "publish", json={"sha": "a" * 40})
    assert answer.status_code == 201, answer.text


def test_hanging_hub_calls_hold_no_connection_and_the_excess_is_refused_at_once(
    hub: FakeHub, database_url: str, tmp_path: Path
) -> None:
    server = start_server(tmp_path, database_url, hub, CORRAL_HUB_REQUEST_DEADLINE_SECONDS="300")
    try:
        client = Client(server)
        for index in range(10):
            registered(client, f"corral-test/model-{index}")
        runner_body = {"name": "gpu-1", "accelerators": [{"kind": "gpu", "memory_bytes": 80 * 2**30, "count": 1}]}
        runner = client.call("POST", "/v1/runners", "admin", json={**runner_body, "lm_eval_version": "0.4.13"})
        runner_auth = {"Authorization": f"Bearer {runner.json()['token']}"}
        evaluation = {"model": "corral-test/model-0", "revision": "a" * 40, "suite": "smoke"}
        assert client.call("POST", "/v1/evaluations", "publish", json=evaluation).status_code == 201
        claimed = httpx.post(f"{client.url}/v1/runner/jobs/claim", headers=runner_auth, timeout=60).json()
        lease = {**runner_auth, "Corral-Lease-Token": claimed["lease_token"]}

        # Each kind of request that calls the Hub: lease-free reads and registrations, syncs and evaluations by
        # ref of models of their own (a sync lease is one per model).
        calls: list[tuple[str, str, str, dict[str, Any]]] = []
        for index in range(CALLS - 10):
            if index % 3:
                calls.append(("GET", f"/v1/models/corral-test/model-{index % 10}/hub/commits", "read", {}))
            else:
                calls.append(("POST", "/v1/models", "publish", {"json": {"repo_id": f"corral-test/new-{index}"}}))
        for index in range(1, 6):
            calls.append(("POST", f"/v1/models/corral-test/model-{index}/sync", "publish", {}))
        for index in range(6, 10):
            body = {"model": f"corral-test/model-{index}", "ref": "main", "suite": "smoke"}
            calls.append(("POST", "/v1/evaluations", "publish", {"json": body}))
        calls.append(("POST", "/v1/models/corral-test/model-0/sync", "publish", {}))
        answers: list[httpx.Response] = []
        lock = threading.Lock()

        def ask(method: str, path: str, scope: str, kwargs: dict[str, Any]) -> None:
            answer = client.call(method, path, scope, **kwargs)
            with lock:
                answers.append(answer)

        with hub.hang():
            threads = [threading.Thread(target=ask, args=call) for call in calls]
            for thread in threads:
                thread.start()
            # The Hub holds as many calls as it has slots; every other request is refused at once.
            wait_for(lambda: hub.held == SLOTS and len(answers) == CALLS - SLOTS, "the excess refused", 120)
            refused = [answer for answer in answers if answer.status_code == 503]
            assert len(refused) == CALLS - SLOTS, [(a.status_code, a.text[:200]) for a in answers]
            for answer in refused:
                assert answer.headers["content-type"].startswith("application/problem+json")
                assert int(answer.headers["retry-after"]) > 0
                assert "calls in flight" in answer.json()["detail"]
            # While they hang, the rest of the service answers: the runner protocol, pages, reads, readiness.
            beat = httpx.post(
                f"{client.url}/v1/runner/attempts/{claimed['attempt_id']}/heartbeat", json={}, headers=lease, timeout=60
            )
            assert beat.status_code == 200, beat.text
            claim = httpx.post(f"{client.url}/v1/runner/jobs/claim", headers=runner_auth, timeout=60)
            assert claim.status_code in (201, 204), claim.text
            assert httpx.get(f"{client.url}/", timeout=60, follow_redirects=True).status_code == 200
            assert httpx.get(f"{client.url}/models/corral-test/model-3", timeout=60).status_code == 200
            assert client.call("GET", "/v1/models", "read").status_code == 200
            assert httpx.get(f"{client.url}/readyz", timeout=60).status_code == 200
            assert hub.held == SLOTS  # all of that while the Hub still held its calls
        for thread in threads:
            thread.join(timeout=120)
        assert len(answers) == CALLS
    finally:
        server.stop()


def test_a_pull_request_to_a_silent_hub_ends_at_the_deadline_and_shutdown_does_not_wait(
    hub: FakeHub, database_url: str, tmp_path: Path
) -> None:
    server = start_server(
        tmp_path, database_url, hub, CORRAL_HUB_REQUEST_DEADLINE_SECONDS="3", CORRAL_SHUTDOWN_GRACE_SECONDS="2"
    )
    try:
        client = Client(server)
        registered(client, "corral-test/model-0")
        pull_request_path = _imported(client)
        with hub.hang():
            started = time.monotonic()
            answer = client.call("POST", pull_request_path, "publish")
            assert answer.status_code == 503, answer.text
            assert "did not answer within 3 s" in answer.json()["detail"]
            assert answer.headers["retry-after"]
            assert hub.held >= 1  # the call still hangs in its thread; the caller has its answer
            assert time.monotonic() - started < 120
    finally:
        server.stop()

    # Shutdown while pull requests hang, with a deadline far away: the grace period ends them.
    server = start_server(
        tmp_path, database_url, hub, CORRAL_HUB_REQUEST_DEADLINE_SECONDS="600", CORRAL_SHUTDOWN_GRACE_SECONDS="2"
    )
    try:
        client = Client(server)
        with hub.hang():
            threads = [
                threading.Thread(target=_status, args=(client, pull_request_path), daemon=True) for _ in range(3)
            ]
            for thread in threads:
                thread.start()
            wait_for(lambda: hub.held >= 3, "three pull requests held by the Hub", 60)
            assert server.process is not None
            server.process.terminate()
            server.process.wait(timeout=90)  # while the Hub still holds every call
            assert hub.held >= 3
    finally:
        server.stop()


def _imported(client: Client) -> str:
    """An evaluation with scores on Hub benchmarks' own tasks (imported); the path that opens its pull request."""
    body = {
        "model": "corral-test/model-0",
        "revision": "a" * 40,
        "suite": "openllm-v2",
        "results": openllm_results(0.6),
    }
    imported = client.call("POST", "/v1/results/import", "publish", json=body)
    assert imported.status_code == 201, imported.text
    return f"/v1/evaluations/{imported.json()['evaluation_id']}/hub-export/pull-request"


def _status(client: Client, path: str) -> int:
    try:
        return client.call("POST", path, "publish").status_code
    except httpx.HTTPError:
        return 0


def test_a_transaction_that_wrote_cannot_be_cut_before_an_outbound_call(settings: Any) -> None:
    """`release_connection` ends only a read-only transaction: one that wrote is a bug, said loudly."""
    from corral.db import create_engine, create_sessionmaker, release_connection
    from corral.tables import License

    async def scenario() -> None:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                await session.execute(select(License.id).limit(1))
                await release_connection(session)  # read only: ended, the connection back in the pool
                assert not session.in_transaction()
                session.add(
                    License(
                        slug="x",
                        name="X",
                        commercial_use=True,
                        outputs_may_improve_other_models=False,
                        eu_multimodal_restriction=False,
                    )
                )
                with pytest.raises(RuntimeError, match="pending writes"):
                    await release_connection(session)
                await session.flush()
                with pytest.raises(RuntimeError, match="has written"):
                    await release_connection(session)
                await session.rollback()
        finally:
            await engine.dispose()

    asyncio.run(scenario())
