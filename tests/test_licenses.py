"""Licences: recorded terms, the API's bad-input rules, and the use check clause by clause."""

import pytest
from fastapi.testclient import TestClient

PROBLEM = "application/problem+json"

pytestmark = pytest.mark.usefixtures("catalog")


def check(client: TestClient, slug: str, **use: object) -> dict:
    response = client.post(f"/v1/licenses/{slug}/check", json=use)
    assert response.status_code == 200, response.text
    return response.json()


def clause(result: dict, name: str) -> dict:
    return next(item for item in result["clauses"] if item["clause"] == name)


def test_llama_terms_are_recorded(client: TestClient) -> None:
    llama2 = client.get("/v1/licenses/llama2").json()
    assert llama2["mau_threshold"] == 700_000_000
    assert llama2["outputs_may_improve_other_models"] is False
    assert llama2["attribution_text"] is None
    assert llama2["spdx_ref"] == "LicenseRef-scancode-llama-2-license-2023"
    llama3 = client.get("/v1/licenses/llama3").json()
    assert (llama3["attribution_text"], llama3["derivative_name_prefix"]) == ("Built with Meta Llama 3", "Llama 3")
    llama31 = client.get("/v1/licenses/llama3.1").json()
    assert (llama31["attribution_text"], llama31["derivative_name_prefix"]) == ("Built with Llama", "Llama")
    assert llama31["outputs_may_improve_other_models"] is True
    assert llama31["eu_multimodal_restriction"] is False
    assert client.get("/v1/licenses/llama3.2").json()["eu_multimodal_restriction"] is True
    llama4 = client.get("/v1/licenses/llama4").json()
    assert (llama4["hub_license_id"], llama4["hub_license_name"]) == ("other", "llama4")
    assert "hub_license_id" in llama4["unverified"]


def test_list_filters_and_sort(client: TestClient) -> None:
    slugs = [item["slug"] for item in client.get("/v1/licenses", params={"sort": "slug"}).json()["items"]]
    assert slugs == sorted(slugs)
    assert len(slugs) == 6
    hub = client.get("/v1/licenses", params={"hub_license_id": "llama3.2"}).json()["items"]
    assert [item["slug"] for item in hub] == ["llama3.2"]


def test_outputs_training_other_models(client: TestClient) -> None:
    banned = check(client, "llama2", outputs_train_other_models=True)
    assert banned["verdict"] == "not_permitted"
    assert "1.b.v" in clause(banned, "outputs_may_improve_other_models")["explanation"]
    assert check(client, "llama3", outputs_train_other_models=True)["verdict"] == "not_permitted"
    allowed = check(client, "llama3.1", outputs_train_other_models=True)
    assert allowed["verdict"] == "allowed"
    assert "name_prefix" in [item["obligation"] for item in allowed["obligations"]]


@pytest.mark.parametrize(("users", "verdict"), [(700_000_000, "allowed"), (700_000_001, "needs_permission")])
def test_monthly_active_users_threshold(client: TestClient, users: int, verdict: str) -> None:
    result = check(client, "llama3.3", monthly_active_users=users)
    assert result["verdict"] == verdict
    assert clause(result, "mau_threshold")["outcome"] == verdict


def test_eu_multimodal_restriction(client: TestClient) -> None:
    result = check(client, "llama3.2", eu_domiciled=True, multimodal=True)
    assert result["verdict"] == "not_permitted"
    assert "EU" in clause(result, "eu_multimodal_restriction")["explanation"]
    assert check(client, "llama3.2", eu_domiciled=True, multimodal=False)["verdict"] == "allowed"
    assert check(client, "llama3.1", eu_domiciled=True, multimodal=True)["verdict"] == "allowed"
    exempt = check(client, "llama3.2", eu_domiciled=True, multimodal=True, end_user_of_product=True)
    assert exempt["verdict"] == "allowed"


def test_derivative_name_prefix_and_obligations(client: TestClient) -> None:
    wrong = check(client, "llama3", derivative_name="Acme-8B", redistributes=True)
    assert wrong["verdict"] == "not_permitted"
    assert "'Llama 3'" in clause(wrong, "derivative_name_prefix")["explanation"]
    right = check(client, "llama3", derivative_name="Llama 3 Acme 8B", redistributes=True)
    assert right["verdict"] == "allowed"
    obligations = {item["obligation"]: item["requirement"] for item in right["obligations"]}
    assert "Built with Meta Llama 3" in obligations["attribution"]
    assert "Meta Llama 3 is licensed under" in obligations["notice_file"]
    assert {"license_copy", "name_prefix", "acceptable_use_policy"} <= obligations.keys()
    # Llama 2 asks for no attribution line and no name prefix.
    llama2 = check(client, "llama2", derivative_name="Acme-7B", redistributes=True)
    assert llama2["verdict"] == "allowed"
    assert "attribution" not in [item["obligation"] for item in llama2["obligations"]]


def test_model_check_uses_the_models_licence_and_modalities(client: TestClient) -> None:
    vision = client.post(
        "/v1/models/meta-llama/Llama-3.2-11B-Vision-Instruct/license-check", json={"eu_domiciled": True}
    )
    assert vision.json()["license"] == "llama3.2"
    assert vision.json()["verdict"] == "not_permitted"
    text = client.post("/v1/models/meta-llama/Llama-3.2-1B/license-check", json={"eu_domiciled": True})
    assert text.json()["verdict"] == "allowed"
    guard = client.post("/v1/models/meta-llama/LlamaGuard-7b/license-check", json={}).json()
    assert guard["license"] == "llama2"  # its own licence, not the family's (which has none)


def test_model_without_licence_is_409(client: TestClient, publish_headers: dict[str, str]) -> None:
    client.post("/v1/models", json={"repo_id": "acme/mystery", "kind": "base"}, headers=publish_headers)
    response = client.post("/v1/models/acme/mystery/license-check", json={})
    assert response.status_code == 409
    assert "no licence" in response.json()["detail"]


def test_create_update_and_bad_input(client: TestClient, publish_headers: dict[str, str]) -> None:
    body = {"slug": "apache-2.0", "name": "Apache License 2.0", "commercial_use": True, "spdx_ref": "Apache-2.0"}
    created = client.post("/v1/licenses", json=body, headers=publish_headers)
    assert created.status_code == 201, created.text
    assert created.json()["outputs_may_improve_other_models"] is True
    assert client.post("/v1/licenses", json=body, headers=publish_headers).status_code == 409
    assert client.post("/v1/licenses/apache-2.0/check", json={"monthly_active_users": 10**9}).json()["verdict"] == (
        "allowed"
    )

    patched = client.patch("/v1/licenses/apache-2.0", json={"notice_text": "See NOTICE."}, headers=publish_headers)
    assert patched.json()["notice_text"] == "See NOTICE."
    assert patched.json()["name"] == "Apache License 2.0"

    for bad, field in [
        ({**body, "slug": "Has Spaces"}, "slug"),
        ({**body, "slug": "x", "commercial_use": "yes"}, "commercial_use"),
        ({**body, "slug": "x", "commercial_use": 1}, "commercial_use"),
        ({**body, "slug": "x", "mau_threshold": -5}, "mau_threshold"),
        ({**body, "slug": "x", "version_date": 20240101}, "version_date"),
        ({**body, "slug": "x", "terms": "free"}, "terms"),
        ({**body, "slug": "x", "name": b"n\\u0000ull".decode("unicode_escape")}, "body"),
    ]:
        response = client.post("/v1/licenses", json=bad, headers=publish_headers)
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert field in response.json()["detail"]
    nulled = client.patch("/v1/licenses/apache-2.0", json={"commercial_use": None}, headers=publish_headers)
    assert nulled.status_code == 422
    assert "cannot be null" in nulled.json()["detail"]
    assert len(client.get("/v1/licenses").json()["items"]) == 7
    assert client.get("/v1/licenses/nope").status_code == 404
    assert client.post("/v1/licenses/nope/check", json={}).status_code == 404


def test_writes_need_publish_scope(client: TestClient, issue_token) -> None:
    from tests.conftest import bearer

    body = {"slug": "x", "name": "X", "commercial_use": True}
    assert client.post("/v1/licenses", json=body).status_code == 401
    assert client.post("/v1/licenses", json=body, headers=bearer(issue_token("read"))).status_code == 403
    assert client.post("/v1/licenses", json=body, headers=bearer(issue_token("runner"))).status_code == 403
