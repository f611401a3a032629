"""Access logs carry the request id; JSON logs are one object a line; tokens never reach a log line."""

import json
import logging

import pytest
from fastapi.testclient import TestClient

from corral.logging import JsonFormatter, configure_logging, mask_tokens


def test_access_log_has_request_id_route_and_no_query(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="corral.access")
    response = client.get("/healthz", params={"q": "private-query-value"})
    records = [record for record in caplog.records if record.name == "corral.access"]
    assert len(records) == 1
    record = records[0]
    assert record.status == 200
    assert record.route == "/healthz"
    assert "private-query-value" not in record.getMessage()
    assert response.headers["x-request-id"]


def test_tokens_never_reach_logs(
    client: TestClient, admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = client.post("/v1/tokens", json={"name": "ci", "scope": "read"}, headers=admin_headers).json()["token"]
    client.get("/v1/tokens/current", headers={"Authorization": f"Bearer {created}"})
    client.delete("/v1/tokens/not-a-uuid", headers={"Authorization": f"Bearer {created}"})
    client.get("/v1/tokens", headers={"Authorization": "Bearer crl_0000000000000000_" + "x" * 43})
    admin_secret = admin_headers["Authorization"].split()[1]
    handler_output = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    for secret in (created, admin_secret):
        assert secret not in caplog.text
        assert secret not in handler_output


def test_masking_defends_against_a_token_in_a_message() -> None:
    line = mask_tokens("user pasted crl_0123456789abcdef_" + "Z" * 43 + " into a name")
    assert "ZZZZ" not in line
    assert "crl_***" in line
    assert "YYYY" not in mask_tokens("and crlreg_0123456789abcdef_" + "Y" * 43)


def test_json_format_is_one_object_per_line_with_request_id(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "INFO")
    try:
        response = client.get("/healthz", headers={"X-Request-ID": "trace-abc-123"})
        assert response.status_code == 200
        lines = [line for line in capsys.readouterr().err.splitlines() if '"corral.access"' in line]
        entry = json.loads(lines[-1])
        assert entry["request_id"] == "trace-abc-123"
        assert entry["status"] == 200
        assert entry["route"] == "/healthz"
        assert entry["level"] == "INFO"
    finally:
        logging.getLogger().handlers[:] = []
