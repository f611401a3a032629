"""A kept view is served before the framework only to callers its route's rule admits (app/fastpath.py): every
caller the rule refuses is refused as before, however the view was kept."""

import pytest
from fastapi.testclient import TestClient

from corral.main import create_app
from corral.wire.enums import Scope
from tests.conftest import IssueToken, bearer, expire_now
from tests.support.databases import make_settings
from tests.support.evaluations import make_runner

KEPT = "/v1/licenses"


def kept_by(client: TestClient, headers: dict[str, str]) -> str:
    """The listing is kept once a caller read it; its ETag names the bytes kept."""
    first = client.get(KEPT, headers=headers)
    assert first.status_code == 200
    again = client.get(KEPT, headers=headers)
    assert again.headers["etag"] == first.headers["etag"]
    return str(first.headers["etag"])


def test_without_public_reads_an_anonymous_caller_is_refused_a_kept_view(
    database_url: str, issue_token: IssueToken
) -> None:
    settings = make_settings(database_url, public_reads=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        kept_by(client, bearer(issue_token(Scope.READ)))
        anonymous = client.get(KEPT)
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"] == "application/problem+json"


def test_revoked_expired_malformed_and_runner_tokens_are_refused_a_kept_view(
    client: TestClient, issue_token: IssueToken, admin_headers: dict[str, str], settings: object
) -> None:
    reader = issue_token(Scope.READ, name="reader")
    etag = kept_by(client, bearer(reader))
    assert client.get(KEPT).headers["etag"] == etag  # public reads: anyone is served the kept bytes

    assert client.delete(f"/v1/tokens/{reader.id}", headers=admin_headers).status_code == 204
    revoked = client.get(KEPT, headers=bearer(reader))
    assert (revoked.status_code, revoked.json()["detail"]) == (401, "The token has been revoked.")

    expiring = issue_token(Scope.READ, name="expiring")
    assert client.get(KEPT, headers=bearer(expiring)).status_code == 200  # verified: now in the token cache
    expire_now(settings, expiring.id)  # type: ignore[arg-type]
    expired = client.get(KEPT, headers=bearer(expiring))
    assert (expired.status_code, expired.json()["detail"]) == (401, "The token has expired.")

    assert client.get(KEPT, headers={"Authorization": "Bearer crl_not-a-token"}).status_code == 401

    _, runner = make_runner(client, admin_headers, "reads-nothing")
    assert client.post("/v1/runner/jobs/claim", headers=runner).status_code == 204  # its token is verified now
    refused = client.get(KEPT, headers=runner)
    assert refused.status_code == 403
    assert refused.json()["required_scope"] == "read"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_kept_view_changes_when_what_it_shows_changes(client: TestClient, admin_headers: dict[str, str]) -> None:
    before = kept_by(client, admin_headers)
    body = {
        "slug": "acme-open",
        "name": "Acme Open Licence",
        "commercial_use": True,
        "outputs_may_improve_other_models": True,
        "eu_multimodal_restriction": False,
    }
    assert client.post(KEPT, json=body, headers=admin_headers).status_code == 201
    after = client.get(KEPT)
    assert after.headers["etag"] != before
    assert "acme-open" in after.text
