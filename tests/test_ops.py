"""Health, readiness (database + schema head) and Prometheus metrics."""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from corral import migrate
from corral.config import Settings
from corral.main import create_app
from corral.wire.enums import Scope
from tests.support.databases import offline_environment
from tests.support.evaluations import load_shipped_suites
from tests.support.server import wait_until_ready


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_database_and_head(client: TestClient, backend: str) -> None:
    body = client.get("/readyz").json()
    assert body == {
        "status": "ready",
        "database": backend,
        "schema_revision": migrate.head_revision(),
        "writes": "ok",
    }


def test_readyz_is_503_when_schema_is_behind(settings: Settings) -> None:
    migrate.downgrade(settings, "base")
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "corral db upgrade" in response.json()["detail"]
        assert client.get("/healthz").status_code == 200


def test_readyz_is_503_when_database_unreachable() -> None:
    from tests.support.databases import make_settings

    settings = make_settings("postgresql://nobody@127.0.0.1:1/nothing")
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["detail"] == "The database is unreachable or restarting; retry shortly."
        assert response.headers["retry-after"] == "5"


def test_metrics_count_requests_by_route_template(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.get("/v1/tokens/3fa85f64-5717-4562-b3fc-2c963f66afa6", headers=admin_headers)
    client.get("/v1/no/such/thing")
    text = client.get("/metrics").text
    assert 'corral_http_requests_total{method="GET",route="/v1/tokens/{token_id}",status="404"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert "3fa85f64" not in text
    assert "corral_http_request_duration_seconds_bucket" in text


def test_engine_is_disposed_on_shutdown(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app) as client:
        client.get("/readyz")
    assert asyncio.run(_pool_checked_out(app)) == 0


async def _pool_checked_out(app) -> int:
    return int(app.state.corral.engine.pool.checkedout())


def test_metrics_follow_the_read_rule(settings: Settings, issue_token: Any) -> None:
    """Queue depth and runner counts are reads: public only where public reads are on."""
    private = settings.model_copy(update={"public_reads": False})
    with TestClient(create_app(private)) as client:
        assert client.get("/metrics").status_code == 401
        token = issue_token(Scope.READ).token
        assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open
        assert client.get("/readyz").status_code == 200


def test_pages_without_scripts_may_run_none(client: TestClient, settings: Settings) -> None:
    load_shipped_suites(settings)
    answer = client.get("/leaderboards/smoke")
    assert answer.status_code == 200
    page = answer.headers["content-security-policy"]
    assert "script-src 'none'" in page
    assert "unsafe-inline' " not in page.split("script-src", 1)[1].split(";", 1)[0]
    docs = client.get("/docs").headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline'" in docs  # Swagger UI starts from an inline script


def test_database_errors_never_log_their_parameters(
    client: TestClient, admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A database error's message names the statement, never the values bound to it (lease-token hashes)."""

    async def failing_statement() -> None:
        async with client.app.state.corral.sessionmaker() as session:  # type: ignore[attr-defined]
            await session.execute(text("SELECT * FROM no_such_table WHERE secret = :secret"), {"secret": "s3cr3t"})

    with pytest.raises(DBAPIError) as raised:
        client.portal.call(failing_statement)  # type: ignore[union-attr]
    assert "s3cr3t" not in str(raised.value)
    assert "hidden" in str(raised.value)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_two_workers_count_requests_together_and_survive_a_worker_kill(database_url: str, tmp_path: Path) -> None:
    """`corral serve --workers 2`: whichever worker a scrape reaches reports every worker's requests; a
    worker killed with SIGKILL is replaced, and its counts are not lost (no counter reset)."""
    port = free_port()
    environment = offline_environment(CORRAL_DATABASE_URL=database_url, CORRAL_PORT=str(port))
    server = subprocess.Popen(
        [sys.executable, "-m", "corral", "serve", "--workers", "2"],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, server, timeout=120)
        # A new connection for every request, so that both workers serve some (one keep-alive connection
        # would stay with one worker and prove nothing).
        for _ in range(100):
            assert httpx.get(f"{base}/v1/suites", headers={"Connection": "close"}).status_code == 200
        seen = {suites_count(httpx.get(f"{base}/metrics").text) for _ in range(8)}
        assert seen == {100}, seen  # not 47 or 53 depending on the worker a scrape reaches
        workers = worker_pids(server.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while len(set(worker_pids(server.pid)) - {workers[0]}) < 2:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.2)
        wait_until_ready(base, server, timeout=120)
        after = {suites_count(httpx.get(f"{base}/metrics").text) for _ in range(8)}
        assert after == {100}, after  # the dead worker's requests still count: no counter reset
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def suites_count(exposition: str) -> float:
    pattern = r'corral_http_requests_total\{method="GET",route="/v1/suites",status="200"\} ([0-9.e+]+)'
    found = re.search(pattern, exposition)
    return float(found.group(1)) if found else 0.0


def worker_pids(parent: int) -> list[int]:
    """The server's worker processes (the supervisor's children that serve, not multiprocessing helpers)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_openapi_schema_has_a_name_a_generated_client_can_use(settings: Settings) -> None:
    """Two models with one class name become `app__<module>__Name` components, which clients mangle or drop."""
    components = create_app(settings).openapi()["components"]["schemas"]
    assert {"HardwareRequirements", "EvaluationRequirements"} <= set(components)
    assert [name for name in components if "__" in name or not name.isidentifier()] == []


def test_every_bound_of_the_api_is_written_as_json_schema_writes_it(settings: Settings) -> None:
    """`ge`/`le`/`gt`/`lt` mean nothing to JSON Schema: a bound written so is one no client or validator sees."""
    document = create_app(settings).openapi()
    pydantic_words: list[str] = []
    bounds = 0

    def walk(node: Any, path: str) -> None:
        nonlocal bounds
        if isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}/{index}")
        elif isinstance(node, dict):
            pydantic_words.extend(f"{path}/{key}" for key in ("ge", "le", "gt", "lt") if key in node)
            bounds += sum(key in node for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
            for key, value in node.items():
                if key not in ("examples", "example", "default"):
                    walk(value, f"{path}/{key}")

    walk(document, "")
    assert pydantic_words == []
    assert bounds > 100
    schemas = document["components"]["schemas"]
    # The bounds once written as `ge`/`le` (an Integer behind its validator), now where clients read them.
    priority = schemas["EvaluationCreate"]["properties"]["priority"]
    assert (priority["minimum"], priority["maximum"]) == (0, 100)
    hidden = schemas["ArchitectureInput"]["properties"]["hidden_size"]
    assert (hidden["minimum"], hidden["maximum"]) == (1, 10_000_000)
    top_p = schemas["GenerationSettings"]["properties"]["top_p"]["anyOf"][0]
    assert (top_p["exclusiveMinimum"], top_p["maximum"]) == (0, 1)
