"""Health, readiness (database + schema head) and Prometheus metrics."""

import asyncio

from fastapi.testclient import TestClient

from app import migrate
from app.config import Settings
from app.main import create_app


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_database_and_head(client: TestClient, backend: str) -> None:
    body = client.get("/readyz").json()
    assert body == {"status": "ready", "database": backend, "schema_revision": migrate.head_revision()}


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
        assert response.json()["detail"] == "The database is unreachable."


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
    return int(app.state.engine.pool.checkedout())
