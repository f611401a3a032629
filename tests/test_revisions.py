"""Revisions are immutable and commit-pinned; aliases move, but only between revisions of their own model."""

import pytest
from fastapi.testclient import TestClient

SHA_A = "a" * 40
SHA_B = "0123456789abcdef0123456789abcdef01234567"
BASE = "/v1/models/acme/base"


@pytest.fixture
def models(client: TestClient, publish_headers: dict[str, str]) -> dict[str, str]:
    for repo in ("acme/base", "acme/other"):
        assert (
            client.post("/v1/models", json={"repo_id": repo, "kind": "base"}, headers=publish_headers).status_code
            == 201
        )
    return publish_headers


def test_record_revisions_immutably(client: TestClient, models: dict[str, str]) -> None:
    body = {"sha": SHA_A, "ref": "main", "snapshot": {"gated": "manual", "files": 3}}
    first = client.post(f"{BASE}/revisions", json=body, headers=models)
    assert first.status_code == 201
    assert first.json()["source"] == "manual"
    again = client.post(f"{BASE}/revisions", json=body, headers=models)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    changed = client.post(f"{BASE}/revisions", json={**body, "snapshot": {"gated": False}}, headers=models)
    assert changed.status_code == 409
    assert client.get(f"{BASE}/revisions/{SHA_A}").json()["snapshot"] == {"gated": "manual", "files": 3}
    # The same sha under another model is another revision.
    assert client.post("/v1/models/acme/other/revisions", json=body, headers=models).status_code == 201


@pytest.mark.parametrize("sha", ["main", "A" * 40, "abc123", "g" * 40])
def test_revision_needs_a_full_sha(client: TestClient, models: dict[str, str], sha: str) -> None:
    response = client.post(f"{BASE}/revisions", json={"sha": sha}, headers=models)
    assert response.status_code == 422
    assert "sha" in response.json()["detail"]
    assert client.get(f"{BASE}/revisions").json()["items"] == []


def test_aliases_move_and_resolve(client: TestClient, models: dict[str, str]) -> None:
    for sha in (SHA_A, SHA_B):
        client.post(f"{BASE}/revisions", json={"sha": sha}, headers=models)
    assert client.put(f"{BASE}/aliases/champion", json={"sha": SHA_A}, headers=models).json()["sha"] == SHA_A
    assert client.get(f"{BASE}/revisions/champion").json()["sha"] == SHA_A
    moved = client.put(f"{BASE}/aliases/champion", json={"sha": SHA_B}, headers=models)
    assert moved.status_code == 200
    assert client.get(f"{BASE}/revisions/champion").json()["sha"] == SHA_B
    assert client.get(f"{BASE}/revisions/{SHA_B}").json()["aliases"] == ["champion"]
    assert [a["name"] for a in client.get(f"{BASE}/aliases").json()] == ["champion"]
    listed = client.get(f"{BASE}/revisions").json()["items"]
    assert {item["sha"]: item["aliases"] for item in listed} == {SHA_A: [], SHA_B: ["champion"]}

    assert client.delete(f"{BASE}/aliases/champion", headers=models).status_code == 204
    assert client.get(f"{BASE}/revisions/champion").status_code == 404
    assert client.delete(f"{BASE}/aliases/champion", headers=models).status_code == 404
    assert client.get(f"{BASE}/revisions/{SHA_B}").status_code == 200


def test_alias_cannot_point_at_another_models_revision(client: TestClient, models: dict[str, str]) -> None:
    client.post("/v1/models/acme/other/revisions", json={"sha": SHA_B}, headers=models)
    response = client.put(f"{BASE}/aliases/latest", json={"sha": SHA_B}, headers=models)
    assert response.status_code == 422
    assert "acme/base has no revision" in response.json()["detail"]
    assert client.get(f"{BASE}/aliases").json() == []


@pytest.mark.parametrize("name", ["Champion", "1st", "x" * 40, "has space"])
def test_alias_names(client: TestClient, models: dict[str, str], name: str) -> None:
    client.post(f"{BASE}/revisions", json={"sha": SHA_A}, headers=models)
    assert client.put(f"{BASE}/aliases/{name}", json={"sha": SHA_A}, headers=models).status_code in (404, 422)
    assert client.get(f"{BASE}/aliases").json() == []


def test_unknown_model(client: TestClient, models: dict[str, str]) -> None:
    assert client.get("/v1/models/acme/nothing/revisions").status_code == 404
    assert client.post("/v1/models/acme/nothing/revisions", json={"sha": SHA_A}, headers=models).status_code == 404
