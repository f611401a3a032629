"""Every error is a problem+json document: ours, FastAPI's and Starlette's; no stack trace ever leaves."""

import uuid
from collections.abc import Iterator

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from corral.config import Settings
from corral.db import SessionDep
from corral.errors import Conflict
from corral.main import create_app
from corral.security.access import OPEN
from corral.tables import ApiToken
from corral.wire.enums import Scope
from tests.support.databases import make_settings

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert body["type"].startswith("urn:corral:problem:")
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_unknown_route_is_problem_404(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/nope"), 404)
    assert "/v1/nope" in body["detail"]


def test_wrong_method_is_problem_405_with_allow(client: TestClient) -> None:
    response = client.put("/healthz")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET"


def test_query_validation_lists_each_field(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.get("/v1/tokens", params={"limit": 0, "sort": "bogus", "active": "maybe"}, headers=admin_headers)
    body = assert_problem(response, 422)
    fields = {error["field"] for error in body["errors"]}
    assert fields == {"limit", "sort", "active"}
    assert all(error["location"] == "query" for error in body["errors"])


def test_request_over_size_limit_is_413_and_writes_nothing(database_url: str, issue_token) -> None:
    settings = make_settings(database_url, max_request_bytes=1024)
    admin = issue_token(Scope.ADMIN).token
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/tokens",
            json={"name": "x" * 5000, "scope": "read"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert_problem(response, 413)
        listed = client.get("/v1/tokens", headers={"Authorization": f"Bearer {admin}"}).json()["items"]
        assert len(listed) == 1


def _app_with_faulty_routes(settings: Settings):
    """The real app plus routes that fail on purpose, to watch the unit of work and the 500 handler."""
    app = create_app(settings)
    router = APIRouter(dependencies=[Depends(OPEN)])

    @router.post("/test/crash")
    async def crash(session: SessionDep) -> None:
        session.add(ApiToken(name="crash", scope=Scope.READ, key_id=uuid.uuid4().hex[:16], secret_hash="0" * 64))
        await session.flush()
        raise RuntimeError("secret internal detail at /srv/corral/app.py")

    @router.post("/test/conflict")
    async def conflict(session: SessionDep) -> None:
        session.add(ApiToken(name="conflict", scope=Scope.READ, key_id=uuid.uuid4().hex[:16], secret_hash="0" * 64))
        await session.flush()
        raise Conflict("refused on purpose")

    @router.post("/test/commit-fails", status_code=201)
    async def commit_fails(session: SessionDep) -> dict[str, str]:
        # Two rows with one key_id: nothing fails until the commit, which must happen before the 201 is sent.
        for _ in range(2):
            session.add(ApiToken(name="dup", scope=Scope.READ, key_id="duplicatekey0000", secret_hash="0" * 64))
        return {"status": "created"}

    @router.post("/test/writes", status_code=201)
    async def writes(session: SessionDep) -> dict[str, str]:
        session.add(ApiToken(name="kept", scope=Scope.READ, key_id=uuid.uuid4().hex[:16], secret_hash="0" * 64))
        return {"status": "created"}

    app.include_router(router)
    return app


@pytest.fixture
def faulty(settings: Settings) -> Iterator[TestClient]:
    with TestClient(_app_with_faulty_routes(settings), raise_server_exceptions=False) as client:
        yield client


def _names(client: TestClient, headers: dict[str, str]) -> list[str]:
    return [item["name"] for item in client.get("/v1/tokens", headers=headers).json()["items"]]


def test_unhandled_error_is_problem_500_without_trace_and_rolls_back(
    faulty: TestClient, admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    response = faulty.post("/test/crash")
    body = assert_problem(response, 500)
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text
    assert "crash" not in _names(faulty, admin_headers)
    # The server log has the traceback, under the same request id.
    logged = [record for record in caplog.records if record.name == "corral.errors"]
    assert logged
    assert logged[0].exc_info is not None
    assert body["request_id"]


def test_domain_error_rolls_back_the_unit_of_work(faulty: TestClient, admin_headers: dict[str, str]) -> None:
    assert_problem(faulty.post("/test/conflict"), 409)
    assert "conflict" not in _names(faulty, admin_headers)


def test_commit_happens_before_the_response(faulty: TestClient, admin_headers: dict[str, str]) -> None:
    # Had the commit run after sending, the client would have seen 201 for data that was never stored. A unique
    # key taken at commit time is a conflict (409), and its SQL parameters are not echoed.
    conflict = assert_problem(faulty.post("/test/commit-fails"), 409)
    assert "duplicatekey" not in str(conflict)
    assert "dup" not in _names(faulty, admin_headers)
    assert faulty.post("/test/writes").status_code == 201
    assert "kept" in _names(faulty, admin_headers)


def test_chunked_body_over_the_limit_is_413(database_url: str, issue_token) -> None:
    settings = make_settings(database_url, max_request_bytes=1024)
    admin = issue_token(Scope.ADMIN).token

    def chunks():  # no Content-Length: sent chunked
        yield b'{"name": "'
        yield b"x" * 4000
        yield b'", "scope": "read"}'

    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
        assert_problem(client.post("/v1/tokens", content=chunks(), headers=headers), 413)
        small = client.post("/v1/tokens", content=iter([b'{"name": "ok", ', b'"scope": "read"}']), headers=headers)
        assert small.status_code == 201, small.text


def test_unknown_methods_share_one_metrics_label(client: TestClient) -> None:
    for method in ("FOO1", "FOO2"):
        client.request(method, "/healthz")
    text = client.get("/metrics").text
    assert "FOO1" not in text
    assert 'method="other"' in text


def test_client_request_id_is_kept_if_plain(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "ci-run-12345"}).headers["x-request-id"] == "ci-run-12345"
    forged = client.get("/healthz", headers={"X-Request-ID": "bad id\nINFO forged"}).headers["x-request-id"]
    assert forged != "bad id\nINFO forged"
    assert len(forged) == 32
