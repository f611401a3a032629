"""Tokens and the access check (app/security.py), answer by answer: what each refusal says and challenges.

test_permissions.py walks every route with every kind of caller and checks the status; here each 401 and 403
is pinned with its detail and WWW-Authenticate challenge, and the token format and bookkeeping with it.
"""

import asyncio
import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from corral.config import Settings
from corral.db import in_unit_of_work
from corral.errors import BadRequest, Unauthorized
from corral.main import create_app
from corral.security.access import GRANTS, Principal, max_time, principal_of, touch_due
from corral.tables import ApiToken
from corral.tokens.cache import TokenRecord
from corral.tokens.credentials import (
    REGISTRATION_PREFIX,
    REGISTRATION_SHAPE,
    generate_token,
    hash_token,
    secret_matches,
    token_refusal,
)
from corral.tokens.service import TokenService, to_read
from corral.wire.enums import Scope
from tests.conftest import IssueToken, bearer, expire_now
from tests.support.databases import make_settings

TOKEN_SHAPE = re.compile(r"^crl_([0-9a-f]{16})_[A-Za-z0-9_\-]{43}$")
CHALLENGE = 'Bearer realm="corral", error="invalid_token"'


def test_a_new_token_is_its_key_id_and_a_256_bit_secret_and_only_its_hash_is_kept() -> None:
    token = generate_token()
    match = TOKEN_SHAPE.match(token.plaintext)
    assert match is not None
    assert match.group(1) == token.key_id
    assert token.secret_hash == hashlib.sha256(token.plaintext.encode()).hexdigest() == hash_token(token.plaintext)
    assert token.plaintext not in token.secret_hash
    assert generate_token().key_id != token.key_id
    registration = generate_token(REGISTRATION_PREFIX)
    assert REGISTRATION_SHAPE.match(registration.plaintext)
    assert not TOKEN_SHAPE.match(registration.plaintext)


def test_secrets_match_only_their_own_hash() -> None:
    token = generate_token()
    assert secret_matches(token.secret_hash, token.plaintext) is True
    assert secret_matches(token.secret_hash, generate_token().plaintext) is False
    assert secret_matches(None, token.plaintext) is False
    # A missing row is compared against a dummy hash, never against nothing: even that hash's own text fails.
    assert secret_matches(None, "corral-no-such-token") is False


@pytest.mark.parametrize("scope", list(Scope))
def test_a_principal_can_what_its_scope_grants(scope: Scope) -> None:
    principal = Principal(token_id=uuid.uuid4(), name="t", scope=scope, runner_id=None)
    assert {wanted for wanted in Scope if principal.can(wanted)} == GRANTS[scope]


def refusal(client: TestClient, headers: dict[str, str], path: str = "/v1/tokens/current") -> tuple[int, str, str]:
    response = client.get(path, headers=headers)
    return response.status_code, response.json()["detail"], response.headers.get("www-authenticate", "")


def test_each_bad_token_is_told_what_is_wrong(client: TestClient, settings: Settings, issue_token: IssueToken) -> None:
    assert refusal(client, {}) == (
        401,
        "This operation needs a token: 'Authorization: Bearer crl_...'.",
        'Bearer realm="corral"',
    )
    assert refusal(client, {"Authorization": "Basic dXNlcjpwYXNz"}) == (
        401,
        "The Authorization header must be 'Bearer <token>'.",
        'Bearer realm="corral", error="invalid_request"',
    )
    assert refusal(client, bearer("crlreg_0123456789abcdef_" + "A" * 43)) == (
        401,
        "The bearer token is not a Corral token (crl_...).",
        CHALLENGE,
    )
    unknown = (401, "The token is not valid.", CHALLENGE)
    assert refusal(client, bearer("crl_0123456789abcdef_" + "A" * 43)) == unknown
    real = issue_token(Scope.ADMIN).token
    assert refusal(client, bearer(real[:-1] + ("A" if real[-1] != "A" else "B"))) == unknown

    expiring = issue_token(Scope.READ, expires_at=datetime.now(UTC) + timedelta(hours=1))
    expire_now(settings, expiring.id)
    assert refusal(client, bearer(expiring)) == (401, "The token has expired.", CHALLENGE)
    revoked = issue_token(Scope.READ, name="revoked")
    assert client.delete(f"/v1/tokens/{revoked.id}", headers=bearer(real)).status_code == 204
    assert refusal(client, bearer(revoked)) == (401, "The token has been revoked.", CHALLENGE)


def test_a_token_without_the_scope_is_told_which_it_needs(client: TestClient, issue_token: IssueToken) -> None:
    response = client.get("/v1/tokens", headers=bearer(issue_token(Scope.PUBLISH)))
    assert response.status_code == 403
    assert response.json()["detail"] == "A publish token cannot do this; it needs the admin scope."
    assert response.json()["required_scope"] == "admin"


def test_a_token_still_valid_until_its_expiry_is_accepted(client: TestClient, issue_token: IssueToken) -> None:
    token = issue_token(Scope.READ, expires_at=datetime.now(UTC) + timedelta(minutes=5))
    response = client.get("/v1/tokens/current", headers=bearer(token))
    assert response.status_code == 200
    assert response.json()["scope"] == "read"


def test_last_use_is_written_at_most_once_per_interval(database_url: str, issue_token: IssueToken) -> None:
    for interval, rewritten in ((3600, False), (0, True)):
        settings = make_settings(database_url, token_touch_seconds=interval)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            token = issue_token(Scope.ADMIN, name=f"touch-{interval}")
            assert client.get(f"/v1/tokens/{token.id}", headers=bearer(token)).status_code == 200
            first = client.get(f"/v1/tokens/{token.id}", headers=bearer(token)).json()["last_used_at"]
            assert first is not None
            second = client.get(f"/v1/tokens/{token.id}", headers=bearer(token)).json()["last_used_at"]
            assert (second != first) is rewritten


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def stored_token(**fields: object) -> ApiToken:
    """A token row as the database holds it; not stored: the rules only read (and mark) it."""
    known: dict[str, object] = {"key_id": "0123456789abcdef", "created_at": NOW - timedelta(days=30)}
    return ApiToken(id=uuid.uuid4(), name="ci", scope=Scope.PUBLISH, runner_id=None, **(known | fields))


def test_a_token_expires_at_its_expiry_instant_and_a_revoked_one_stays_revoked() -> None:
    assert token_refusal(stored_token(expires_at=NOW + TICK, revoked_at=None), NOW) is None
    assert token_refusal(stored_token(expires_at=None, revoked_at=None), NOW) is None
    assert token_refusal(stored_token(expires_at=NOW, revoked_at=None), NOW) == "The token has expired."
    revoked = stored_token(expires_at=NOW + timedelta(days=1), revoked_at=NOW - timedelta(days=1))
    assert token_refusal(revoked, NOW) == "The token has been revoked."
    assert to_read(revoked, NOW).active is False
    assert to_read(stored_token(expires_at=NOW, revoked_at=None), NOW).active is False
    assert to_read(stored_token(expires_at=NOW + TICK, revoked_at=None), NOW).active is True


def test_the_principal_is_the_token_identity_and_its_last_use_is_marked_once_per_interval() -> None:
    every = timedelta(seconds=60)
    fresh = TokenRecord.of(stored_token(expires_at=None, revoked_at=None, last_used_at=None, secret_hash="0" * 64))
    principal = principal_of(fresh, NOW)
    assert principal == Principal(token_id=fresh.id, name="ci", scope=Scope.PUBLISH, runner_id=None)
    assert touch_due(None, NOW, every) is True
    assert touch_due(NOW - every + TICK, NOW, every) is False
    assert touch_due(NOW - every, NOW, every) is True
    assert max_time(None, None) is None
    assert max_time(NOW, None) == max_time(None, NOW) == NOW
    assert max_time(NOW - every, NOW) == max_time(NOW, NOW - every) == NOW
    expired = TokenRecord.of(stored_token(expires_at=NOW, revoked_at=None, last_used_at=None, secret_hash="0" * 64))
    with pytest.raises(Unauthorized, match=r"^The token has expired\.$"):
        principal_of(expired, NOW)


def test_issuing_refuses_a_past_expiry_and_a_runner_binding_that_does_not_fit(
    client: TestClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    past = client.post(
        "/v1/tokens",
        json={"name": "old", "scope": "read", "expires_at": "2020-01-01T00:00:00Z"},
        headers=admin_headers,
    )
    assert past.status_code == 400
    assert past.json()["detail"] == "expires_at is in the past; a token must be usable when it is issued."
    later = datetime.now(UTC) + timedelta(days=3)
    made = client.post(
        "/v1/tokens", json={"name": "later", "scope": "read", "expires_at": later.isoformat()}, headers=admin_headers
    )
    assert made.status_code == 201, made.text
    assert datetime.fromisoformat(made.json()["expires_at"]) == later
    listed = {
        token["name"]: token["active"] for token in client.get("/v1/tokens", headers=admin_headers).json()["items"]
    }
    assert listed["later"] is True

    async def issue(session, **arguments: object) -> None:  # type: ignore[no-untyped-def]
        await TokenService(session).issue(name="x", **arguments)  # type: ignore[arg-type]

    unbound = {"runner": "A runner token is bound to exactly one runner, and only runner tokens are."}
    for arguments in ({"scope": Scope.RUNNER}, {"scope": Scope.READ, "runner_id": uuid.uuid4()}):
        with pytest.raises(BadRequest) as refused:
            asyncio.run(in_unit_of_work(settings, lambda session, a=arguments: issue(session, **a)))
        assert refused.value.detail == unbound["runner"]
    # Expiring at the very instant of issue is already too late.
    with pytest.raises(BadRequest):
        asyncio.run(
            in_unit_of_work(settings, lambda session: issue(session, scope=Scope.READ, expires_at=NOW, now=NOW))
        )
    asyncio.run(
        in_unit_of_work(settings, lambda session: issue(session, scope=Scope.READ, expires_at=NOW + TICK, now=NOW))
    )
