"""Runner machines: admin-created or self-registered with single-use tokens; bound, rotatable tokens."""

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer

MACHINE = {
    "name": "gpu-node-01",
    "labels": ["dc-a"],
    "backends": ["hf", "vllm"],
    "lm_eval_version": "0.4.13",
    "accelerators": [{"kind": "nvidia-h100-80gb", "memory_bytes": 85899345920, "count": 8}],
    "max_concurrent_jobs": 2,
}


def test_admin_creates_runner_and_its_token_works(client: TestClient, admin_headers: dict[str, str]) -> None:
    created = client.post("/v1/runners", json=MACHINE, headers=admin_headers)
    assert created.status_code == 201, created.text
    runner, token = created.json()["runner"], created.json()["token"]
    assert (runner["state"], runner["online"], runner["accelerators"][0]["count"]) == ("active", False, 8)
    assert client.get("/v1/tokens/current", headers=bearer(token)).json()["runner_id"] == runner["id"]

    report = {"accelerators": MACHINE["accelerators"], "backends": ["hf"], "lm_eval_version": "0.4.14"}
    checked_in = client.post(
        "/v1/runner/verify",
        json=report,
        headers=bearer(token),
    )
    assert checked_in.status_code == 200, checked_in.text
    assert checked_in.json()["online"] is True
    assert checked_in.json()["lm_eval_version"] == "0.4.14"
    # A runner token speaks only the runner protocol.
    assert client.get("/v1/runners", headers=bearer(token)).status_code == 403
    assert client.post("/v1/runner/verify", json={}, headers=admin_headers).status_code == 403
    assert client.post("/v1/runners", json=MACHINE, headers=admin_headers).status_code == 409


def test_registration_token_is_single_use(client: TestClient, admin_headers: dict[str, str]) -> None:
    issued = client.post("/v1/runner-registration-tokens", json={"labels": ["spot"]}, headers=admin_headers).json()
    assert issued["token"].startswith("crlreg_")
    assert datetime.fromisoformat(issued["expires_at"]) > datetime.now(UTC)
    # A registration token is not a bearer token.
    assert client.get("/v1/tokens/current", headers=bearer(issued["token"])).status_code == 401

    registered = client.post("/v1/runners/register", json={**MACHINE, "registration_token": issued["token"]})
    assert registered.status_code == 201, registered.text
    assert registered.json()["runner"]["labels"] == ["dc-a", "spot"]
    token = registered.json()["token"]
    assert client.post("/v1/runner/verify", json={}, headers=bearer(token)).status_code == 200

    again = client.post(
        "/v1/runners/register", json={**MACHINE, "name": "other", "registration_token": issued["token"]}
    )
    assert again.status_code == 401
    assert "used already" in again.json()["detail"]
    assert [r["name"] for r in client.get("/v1/runners", headers=admin_headers).json()["items"]] == ["gpu-node-01"]


@pytest.mark.parametrize("token", ["crlreg_0123456789abcdef_" + "A" * 43, "crl_nope", "garbage"])
def test_bad_registration_tokens(client: TestClient, admin_headers: dict[str, str], token: str) -> None:
    response = client.post("/v1/runners/register", json={**MACHINE, "registration_token": token})
    assert response.status_code == 401
    assert client.get("/v1/runners", headers=admin_headers).json()["items"] == []


def test_check_in_keeps_labels_and_limits_set_by_admins(client: TestClient, admin_headers: dict[str, str]) -> None:
    created = client.post("/v1/runners", json=MACHINE, headers=admin_headers).json()
    runner_id, token = created["runner"]["id"], created["token"]
    client.patch(
        f"/v1/runners/{runner_id}", json={"labels": ["dc-a", "h100"], "max_concurrent_jobs": 4}, headers=admin_headers
    )
    checked_in = client.post("/v1/runner/verify", json={"lm_eval_version": "0.4.14"}, headers=bearer(token)).json()
    assert (checked_in["labels"], checked_in["max_concurrent_jobs"]) == (["dc-a", "h100"], 4)
    assert checked_in["accelerators"] == [{**item, "nodes": 1} for item in MACHINE["accelerators"]]  # kept
    refused = client.post("/v1/runner/verify", json={"labels": ["mine"]}, headers=bearer(token))
    assert refused.status_code == 422


def test_pause_drain_rotate_delete(client: TestClient, admin_headers: dict[str, str]) -> None:
    created = client.post("/v1/runners", json=MACHINE, headers=admin_headers).json()
    runner_id, old = created["runner"]["id"], created["token"]
    for state in ("paused", "draining", "active"):
        changed = client.patch(f"/v1/runners/{runner_id}", json={"state": state}, headers=admin_headers)
        assert changed.json()["state"] == state
    assert client.patch(f"/v1/runners/{runner_id}", json={"state": "gone"}, headers=admin_headers).status_code == 422
    assert client.patch(f"/v1/runners/{runner_id}", json={"state": None}, headers=admin_headers).status_code == 422
    assert [
        r["name"]
        for r in client.get("/v1/runners", params={"state": "active", "label": "dc-a"}, headers=admin_headers).json()[
            "items"
        ]
    ] == ["gpu-node-01"]

    rotated = client.post(f"/v1/runners/{runner_id}/token", headers=admin_headers).json()["token"]
    assert client.post("/v1/runner/verify", json={}, headers=bearer(old)).status_code == 401
    self_rotated = client.post("/v1/runner/token", headers=bearer(rotated)).json()["token"]
    assert client.post("/v1/runner/verify", json={}, headers=bearer(rotated)).status_code == 401
    assert client.post("/v1/runner/verify", json={}, headers=bearer(self_rotated)).status_code == 200

    assert client.delete(f"/v1/runners/{runner_id}", headers=admin_headers).status_code == 204
    assert client.get(f"/v1/runners/{runner_id}", headers=admin_headers).status_code == 404
    assert client.post("/v1/runner/verify", json={}, headers=bearer(self_rotated)).status_code == 401
    assert client.get("/v1/runners", headers=admin_headers).json()["items"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "has space"}, "name"),
        ({"backends": ["tensorrt"]}, "backends"),
        ({"accelerators": [{"kind": "x", "memory_bytes": -1}]}, "memory_bytes"),
        ({"max_concurrent_jobs": "2"}, "max_concurrent_jobs"),
        ({"owner": "me"}, "owner"),
    ],
)
def test_bad_runner_input(client: TestClient, admin_headers: dict[str, str], change: dict, field: str) -> None:
    response = client.post("/v1/runners", json=MACHINE | change, headers=admin_headers)
    assert response.status_code == 422
    assert field in response.json()["detail"]
    assert client.get("/v1/runners", headers=admin_headers).json()["items"] == []
