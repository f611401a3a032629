"""Walks every route of the app with every kind of caller; a route without an access rule fails here.

What each caller should get comes from tests/support/permissions.py, a table written from the README's rules
by hand: the walk checks that routes honour their rules and that the rules are the right ones."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from corral.main import create_app
from corral.routing import api_routes
from corral.security.access import (
    ADMIN,
    ANY_TOKEN,
    OPEN,
    PUBLISH,
    READ,
    READ_OUTBOUND,
    RUNNER,
    route_access,
)
from corral.wire.enums import Scope
from tests.conftest import IssueToken, bearer, expire_now
from tests.support import permissions as table
from tests.support.databases import make_settings
from tests.support.evaluations import lease, lm_eval_results, make_model, make_runner
from tests.test_queue import claim, request_smoke

# Served by fastapi-offline for the docs pages; not API operations, no data behind them.
DOCS_ROUTES = {"/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json"}


def test_every_route_declares_an_access_rule(settings) -> None:
    routes = api_routes(create_app(settings))
    assert len(routes) >= 8  # the walk really sees the routes of included routers
    missing = [
        f"{sorted(route.methods)} {path}"
        for path, _, route in routes
        if path not in DOCS_ROUTES and route_access(route) is None
    ]
    assert missing == [], f"routes without an access rule (add Depends(OPEN/READ/PUBLISH/ADMIN/RUNNER)): {missing}"


def _concrete_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


CALLERS: list[table.Caller] = ["anonymous", "admin", "publish", "read", "runner", "revoked", "expired", "garbage"]
# The probe routes below, one per rule, and who may call them.
PROBES = {
    ("GET", "/probe/read"): "read",
    ("GET", "/probe/read-outbound"): "read, token required",
    ("POST", "/probe/publish"): "publish",
    ("POST", "/probe/runner"): "runner",
    ("DELETE", "/probe/admin"): "admin",
    ("GET", "/probe/open"): "open",
}
RULES = {
    "open": OPEN,
    "read": READ,
    "read, token required": READ_OUTBOUND,
    "publish": PUBLISH,
    "admin": ADMIN,
    "runner": RUNNER,
    "any token": ANY_TOKEN,
}


def test_every_route_has_a_row_and_declares_the_rule_of_its_row(settings) -> None:
    """A new route needs a row; a route re-declared (say from ADMIN to PUBLISH) no longer matches its row."""
    seen = set()
    for path, path_format, route in api_routes(create_app(settings)):
        if path in DOCS_ROUTES:
            continue
        for method in route.methods:
            access = table.ROUTES.get((method, path_format))
            assert access is not None, f"{method} {path_format} has no row in tests/support/permissions.py"
            assert route_access(route) is RULES[access], (method, path_format, access)
            seen.add((method, path_format))
    assert seen == set(table.ROUTES), f"rows for routes that do not exist: {set(table.ROUTES) - seen}"


@pytest.mark.parametrize("public_reads", [True, False])
def test_each_caller_gets_the_status_its_rule_says(
    database_url: str, issue_token: IssueToken, public_reads: bool
) -> None:
    settings = make_settings(database_url, public_reads=public_reads)
    headers: dict[str, dict[str, str]] = {"anonymous": {}, "garbage": {"Authorization": "Bearer crl_garbage"}}
    for scope in Scope:
        headers[scope.value] = bearer(issue_token(scope, name=scope.value))
    expired = issue_token(Scope.ADMIN, name="expired", expires_at=datetime.now(UTC) + timedelta(days=1))
    expire_now(settings, expired.id)
    headers["expired"] = bearer(expired)
    revoked = issue_token(Scope.ADMIN, name="revoked")
    headers["revoked"] = bearer(revoked)

    app = create_app(settings)
    app.include_router(_probe_router())
    checked = 0
    with TestClient(app, raise_server_exceptions=False) as client:
        client.delete(f"/v1/tokens/{revoked.id}", headers=headers["admin"])
        # The runner's own token rotation revokes the token it is called with: walk it last.
        for path, _, route in sorted(api_routes(app), key=lambda mounted: mounted.path == "/v1/runner/token"):
            if path in DOCS_ROUTES:
                continue
            for method in route.methods:
                access = table.ROUTES.get((method, route.path_format), PROBES.get((method, path)))
                assert access is not None, f"{method} {route.path_format} has no row in tests/support/permissions.py"
                for caller in CALLERS:
                    status = client.request(method, _concrete_path(path), headers=headers[caller]).status_code
                    expected = table.expected(access, caller, settings.public_reads)
                    if expected == "allowed":
                        assert status not in (401, 403), (method, path, caller, status)
                    else:
                        assert status == expected, (method, path, caller, status)
                    checked += 1
    assert checked >= len(CALLERS) * 12


def _probe_router() -> APIRouter:
    """One route per rule, so each rule is walked even before a domain route uses it."""
    router = APIRouter(prefix="/probe")
    rules = (
        (READ, "GET"),
        (READ_OUTBOUND, "GET"),
        (PUBLISH, "POST"),
        (RUNNER, "POST"),
        (ADMIN, "DELETE"),
        (OPEN, "GET"),
    )
    for rule, method in rules:

        async def endpoint() -> dict[str, str]:
            return {"ok": "yes"}

        path = f"/{rule.scope or 'open'}" + ("-outbound" if rule.token_required else "")
        router.add_api_route(path, endpoint, methods=[method], dependencies=[Depends(rule)])
    return router


def test_a_runner_never_writes_to_another_runners_attempt(
    queue_client: TestClient, admin_headers: dict[str, str], publish_headers: dict[str, str]
) -> None:
    client = queue_client
    sha = make_model(client, publish_headers)
    _, holder = make_runner(client, admin_headers, "holder")
    _, other = make_runner(client, admin_headers, "other")
    request_smoke(client, publish_headers, sha)
    claimed = claim(client, holder)
    assert claimed is not None
    foreign = lease(claimed, other)  # the other runner's token, with this attempt's lease token
    valid = {  # a request each route would accept from the attempt's own runner
        "heartbeat": {"json": {}},
        "log": {"content": b"line\n", "headers": {"Content-Range": "bytes 0-4"}},
        "result": {"json": {"results": lm_eval_results(["corral_smoke_mc"])}},
        "fail": {"json": {"category": "model_error", "message": "x"}},
        "release": {"json": {"reason": "stopping"}},
    }
    walked = set()
    for _, path_format, route in api_routes(client.app):  # type: ignore[arg-type]
        if not path_format.startswith("/v1/runner/attempts/"):
            continue
        for method in route.methods:
            expected = table.OTHER_RUNNERS_ATTEMPT.get((method, path_format))
            assert expected is not None, f"{method} {path_format} has no row in OTHER_RUNNERS_ATTEMPT"
            request = valid[path_format.rsplit("/", 1)[1]]
            concrete = path_format.replace("{attempt_id}", claimed["attempt_id"])
            headers = {**foreign, **request.get("headers", {})}
            extra = {key: value for key, value in request.items() if key != "headers"}
            response = client.request(method, concrete, headers=headers, **extra)
            assert response.status_code == expected, (method, path_format, response.text)
            walked.add((method, path_format))
    assert walked == set(table.OTHER_RUNNERS_ATTEMPT)
    # Its own runner is still the holder: the same heartbeat from it is accepted.
    assert (
        client.post(
            f"/v1/runner/attempts/{claimed['attempt_id']}/heartbeat", json={}, headers=lease(claimed, holder)
        ).status_code
        == 200
    )
