"""Tokens through the API: issue, show once, list with filters/sort/cursor, revoke, expire."""

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from corral.config import Settings
from corral.wire.enums import Scope
from tests.conftest import IssueToken, bearer, expire_now

PROBLEM = "application/problem+json"


def test_create_token_shows_secret_once_and_it_works(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post("/v1/tokens", json={"name": "ci-main", "scope": "publish"}, headers=admin_headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["token"].startswith("crl_")
    assert created["scope"] == "publish"
    assert created["active"] is True
    assert created["token"].split("_")[1] == created["key_id"]

    shown = client.get(f"/v1/tokens/{created['id']}", headers=admin_headers).json()
    assert "token" not in shown
    assert created["token"] not in client.get("/v1/tokens", headers=admin_headers).text

    whoami = client.get("/v1/tokens/current", headers=bearer(created["token"]))
    assert whoami.status_code == 200
    assert whoami.json()["name"] == "ci-main"
    assert whoami.json()["last_used_at"] is None  # written once this first use has committed
    again = client.get("/v1/tokens/current", headers=bearer(created["token"]))
    assert again.json()["last_used_at"] is not None


def test_secret_is_stored_only_as_hash(client: TestClient, admin_headers: dict[str, str], settings) -> None:
    import asyncio

    from sqlalchemy import select

    from corral.db import in_unit_of_work
    from corral.tables import ApiToken

    created = client.post("/v1/tokens", json={"name": "x", "scope": "read"}, headers=admin_headers).json()

    async def stored(session):
        return (await session.execute(select(ApiToken).where(ApiToken.key_id == created["key_id"]))).scalar_one()

    row = asyncio.run(in_unit_of_work(settings, stored))
    assert created["token"] not in {row.secret_hash, row.key_id, row.name}
    assert len(row.secret_hash) == 64


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "read"}, "name"),
        ({"name": "x"}, "scope"),
        ({"name": "x", "scope": "runner"}, "scope"),
        ({"name": "x", "scope": "superuser"}, "scope"),
        ({"name": "x" * 101, "scope": "read"}, "name"),
        ({"name": "", "scope": "read"}, "name"),
        ({"name": "x", "scope": "read", "owner": "me"}, "owner"),
        ({"name": "x", "scope": "read", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "x", "scope": "read", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"name": 5, "scope": "read"}, "name"),
    ],
)
def test_create_token_bad_input_names_field_and_writes_nothing(
    client: TestClient, admin_headers: dict[str, str], body: dict[str, object], field: str
) -> None:
    response = client.post("/v1/tokens", json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"].endswith(":validation-error")
    assert field in [error["field"] for error in problem["errors"]]
    assert field in problem["detail"]
    # Only the admin token made by the fixture exists.
    assert len(client.get("/v1/tokens", headers=admin_headers).json()["items"]) == 1


def test_expiry_in_past_is_refused(client: TestClient, admin_headers: dict[str, str]) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = client.post("/v1/tokens", json={"name": "x", "scope": "read", "expires_at": past}, headers=admin_headers)
    assert response.status_code == 400
    assert "expires_at" in response.json()["detail"]
    assert len(client.get("/v1/tokens", headers=admin_headers).json()["items"]) == 1


def test_malformed_json_and_wrong_media_type(client: TestClient, admin_headers: dict[str, str]) -> None:
    headers = admin_headers | {"Content-Type": "application/json"}
    malformed = client.post("/v1/tokens", content=b'{"name": "x", ', headers=headers)
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == PROBLEM
    assert malformed.json()["type"].endswith(":malformed-json")

    form = client.post(
        "/v1/tokens",
        content=b"name=x&scope=read",
        headers=admin_headers | {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    assert "application/json" in form.json()["detail"]
    assert len(client.get("/v1/tokens", headers=admin_headers).json()["items"]) == 1


def test_revoked_token_is_refused_and_revocation_is_idempotent(
    client: TestClient, admin_headers: dict[str, str], issue_token: IssueToken
) -> None:
    victim = issue_token(Scope.PUBLISH, name="leaked")
    assert client.get("/v1/tokens/current", headers=bearer(victim)).status_code == 200
    assert client.delete(f"/v1/tokens/{victim.id}", headers=admin_headers).status_code == 204
    first = client.get(f"/v1/tokens/{victim.id}", headers=admin_headers).json()["revoked_at"]
    assert client.delete(f"/v1/tokens/{victim.id}", headers=admin_headers).status_code == 204
    assert client.get(f"/v1/tokens/{victim.id}", headers=admin_headers).json()["revoked_at"] == first

    refused = client.get("/v1/tokens/current", headers=bearer(victim))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]


def test_expired_token_is_refused(client: TestClient, settings: Settings, issue_token: IssueToken) -> None:
    soon = issue_token(Scope.READ, expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert client.get("/v1/tokens/current", headers=bearer(soon)).status_code == 200
    expire_now(settings, soon.id)  # its hour is up
    refused = client.get("/v1/tokens/current", headers=bearer(soon))
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Bearer nope", "not a Corral token"),
        ("Basic dXNlcjpwYXNz", "Bearer"),
        ("Bearer crl_0123456789abcdef_" + "A" * 43, "not valid"),
    ],
)
def test_bad_tokens_get_401(client: TestClient, header: str, detail: str) -> None:
    response = client.get("/v1/tokens/current", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert detail in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_wrong_secret_for_existing_key_id_is_refused(client: TestClient, issue_token: IssueToken) -> None:
    real = issue_token(Scope.ADMIN).token
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    assert client.get("/v1/tokens/current", headers=bearer(forged)).status_code == 401


def test_unknown_token_id_is_404(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.get("/v1/tokens/00000000-0000-0000-0000-000000000000", headers=admin_headers)
    assert response.status_code == 404
    assert response.json()["type"].endswith(":not-found")
    assert client.delete("/v1/tokens/00000000-0000-0000-0000-000000000000", headers=admin_headers).status_code == 404
    # Only a UUID routes to a token, so /v1/tokens/current can never be mistaken for one.
    assert client.get("/v1/tokens/not-a-uuid", headers=admin_headers).status_code == 404


def test_list_filters_sort_and_cursor_pagination(
    client: TestClient, admin_headers: dict[str, str], issue_token: IssueToken
) -> None:
    names = [f"t{index:02d}" for index in range(7)]
    for name in names:
        issue_token(Scope.READ, name=name)
    revoked = issue_token(Scope.PUBLISH, name="gone")
    client.delete(f"/v1/tokens/{revoked.id}", headers=admin_headers)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"sort": "name", "limit": 3, "scope": "read"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/tokens", params=params, headers=admin_headers).json()
        seen += [item["name"] for item in page["items"]]
        pages += 1
        cursor = page.get("next_cursor")
        if cursor is None:
            break
    assert seen == names
    assert pages == 3

    newest_first = client.get("/v1/tokens", params={"sort": "-created_at"}, headers=admin_headers).json()["items"]
    stamps = [item["created_at"] for item in newest_first]
    assert stamps == sorted(stamps, reverse=True)
    assert len(newest_first) == 9

    inactive = client.get("/v1/tokens", params={"active": "false"}, headers=admin_headers).json()["items"]
    assert [item["name"] for item in inactive] == ["gone"]
    active = client.get("/v1/tokens", params={"active": "true"}, headers=admin_headers).json()["items"]
    assert "gone" not in [item["name"] for item in active]


def test_limit_is_capped_by_the_server(settings, issue_token: IssueToken) -> None:
    from corral.main import create_app
    from tests.support.databases import make_settings

    capped = make_settings(settings.database_url, page_limit_default=2, page_limit_max=3)
    admin = issue_token(Scope.ADMIN)
    for index in range(5):
        issue_token(Scope.READ, name=f"n{index}")
    with TestClient(create_app(capped)) as client:
        assert len(client.get("/v1/tokens", headers=bearer(admin)).json()["items"]) == 2
        page = client.get("/v1/tokens", params={"limit": 1000}, headers=bearer(admin)).json()
        assert len(page["items"]) == 3
        assert page["next_cursor"]


def _cursor(payload: dict[str, object]) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


FORGED = [
    _cursor({"s": "-created_at", "v": {"dt": "2024-01-01T00:00:00"}, "id": "00000000-0000-0000-0000-000000000000"}),
    _cursor({"s": "-created_at", "v": [1], "id": "00000000-0000-0000-0000-000000000000"}),
    _cursor({"s": "-created_at", "v": 5, "id": "00000000-0000-0000-0000-000000000000"}),
]


@pytest.mark.parametrize("cursor", ["garbage!", "eyJ4IjoxfQ", "A" * 40, *FORGED])
def test_invalid_cursor_is_400(client: TestClient, admin_headers: dict[str, str], cursor: str) -> None:
    response = client.get("/v1/tokens", params={"cursor": cursor}, headers=admin_headers)
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


def test_cursor_from_another_sort_is_refused(
    client: TestClient, admin_headers: dict[str, str], issue_token: IssueToken
) -> None:
    for index in range(3):
        issue_token(Scope.READ, name=f"c{index}")
    cursor = client.get("/v1/tokens", params={"sort": "name", "limit": 1}, headers=admin_headers).json()["next_cursor"]
    response = client.get("/v1/tokens", params={"sort": "-created_at", "cursor": cursor}, headers=admin_headers)
    assert response.status_code == 400
    assert "sort=name" in response.json()["detail"]


def test_etag_and_if_none_match(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.get("/v1/tokens/current", headers=admin_headers)  # the admin token's first use is recorded after it
    first = client.get("/v1/tokens", headers=admin_headers)
    etag = first.headers["etag"]
    again = client.get("/v1/tokens", headers=admin_headers | {"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    client.post("/v1/tokens", json={"name": "new", "scope": "read"}, headers=admin_headers)
    changed = client.get("/v1/tokens", headers=admin_headers | {"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
