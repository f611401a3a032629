"""Faults answered honestly: a database outage or a busy SQLite is a 503 with Retry-After (never a 500),
text no database can store is a 4xx, integral floats are integers, URLs are URLs."""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from psycopg import sql
from sqlalchemy.engine import make_url

from corral.config import Settings
from corral.main import create_app
from tests.support import databases
from tests.support.evaluations import make_model, make_runner, sha_of

LICENCE = {
    "slug": "acme-open",
    "name": "Acme Open Licence",
    "commercial_use": True,
    "license_url": "https://example.org/l",
}


@contextmanager
def refusing_connections(database: str) -> Iterator[None]:
    """The database goes away as in a restart: every session is cut and no new one is let in, until the end."""
    with psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as admin:
        name = sql.Identifier(database)
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(name))
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
        try:
            yield
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(name))


def assert_unavailable(answer: object, retry_after: str) -> None:
    assert getattr(answer, "status_code", None) == 503, getattr(answer, "text", answer)
    headers = answer.headers  # type: ignore[attr-defined]
    assert headers["retry-after"] == retry_after
    assert headers["content-type"] == "application/problem+json"
    problem = answer.json()  # type: ignore[attr-defined]
    assert problem["type"] == "urn:corral:problem:service-unavailable"
    assert "retry" in problem["detail"]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_database_outage_is_a_503_with_retry_after_and_the_service_recovers(
    client: TestClient, settings: Settings, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    make_model(client, publish_headers)
    _, runner = make_runner(client, admin_headers, "cpu-1", memory_gib=8)
    database = make_url(settings.database_url).database
    assert database is not None
    with refusing_connections(database):
        for answer in (
            client.get("/v1/licenses"),
            client.post("/v1/licenses", json=LICENCE, headers=admin_headers),
            client.post("/v1/runner/jobs/claim", headers=runner),
            client.get("/v1/models/corral-test/tiny-llama", headers=publish_headers),
        ):
            assert_unavailable(answer, "5")
        assert_unavailable(client.get("/readyz"), "5")
    # Back: the pool reconnects by itself, and the refused write can simply be sent again.
    assert client.post("/v1/licenses", json=LICENCE, headers=admin_headers).status_code == 201
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_busy_sqlite_writer_waits_then_answers_503_with_retry_after(
    database_url: str, admin_headers: dict[str, str]
) -> None:
    settings = databases.make_settings(database_url, sqlite_busy_timeout_seconds=0.2)
    path = make_url(database_url).database
    assert path is not None
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's one write lock
            assert_unavailable(client.post("/v1/licenses", json=LICENCE, headers=admin_headers), "1")
            assert client.get("/v1/licenses").status_code == 200  # readers go on beside the writer (WAL)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert client.post("/v1/licenses", json=LICENCE, headers=admin_headers).status_code == 201


def test_text_no_database_can_store_is_refused_on_both(client: TestClient, publish_headers: dict[str, str]) -> None:
    make_model(client, publish_headers)

    def record(sha: str, raw_note: str) -> Response:  # the body as raw JSON text: the escapes reach the parser
        body = '{"sha": "' + sha + '", "snapshot": {"note": "' + raw_note + '"}}'
        headers = {**publish_headers, "Content-Type": "application/json"}
        return client.post("/v1/models/corral-test/tiny-llama/revisions", content=body, headers=headers)

    answer = record(sha_of("other"), "\\ud800")
    assert answer.status_code == 422, answer.text
    assert "lone UTF-16 surrogate" in answer.text
    stored = record(sha_of("llama"), "\\ud83e\\udd99")
    assert stored.status_code == 201, stored.text
    assert stored.json()["snapshot"] == {"note": "🦙"}


def test_integral_floats_are_integers_and_fractions_are_not(client: TestClient, admin_headers: dict[str, str]) -> None:
    body = {
        "name": "float-runner",
        "backends": ["hf"],
        "lm_eval_version": "0.4.13",
        "accelerators": [{"kind": "test-gpu", "memory_bytes": 8.0 * 2**30, "count": 2.0}],
        "max_concurrent_jobs": 41.0,
    }
    created = client.post("/v1/runners", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    runner = created.json()["runner"]
    assert runner["max_concurrent_jobs"] == 41
    assert isinstance(runner["max_concurrent_jobs"], int)
    fractional = client.post(
        "/v1/runners", json={**body, "name": "half", "max_concurrent_jobs": 41.5}, headers=admin_headers
    )
    assert fractional.status_code == 422
    assert fractional.json()["errors"][0]["field"] == "max_concurrent_jobs"
    boolean = client.post(
        "/v1/runners", json={**body, "name": "yes", "max_concurrent_jobs": True}, headers=admin_headers
    )
    assert boolean.status_code == 422


def test_urls_must_parse_as_urls(client: TestClient, admin_headers: dict[str, str]) -> None:
    for bad in ("http://[", "https://example.org:99999/", "http://[::1"):
        answer = client.post("/v1/licenses", json={**LICENCE, "license_url": bad}, headers=admin_headers)
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["errors"][0]["field"] == "license_url"
    assert client.get("/v1/licenses/acme-open").status_code == 404  # nothing written
    assert client.post("/v1/licenses", json=LICENCE, headers=admin_headers).status_code == 201
