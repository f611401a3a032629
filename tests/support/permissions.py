"""Who may call what: the access rules as the README states them, written out by hand, route by route.

Nothing here is read from the code it checks (not `GRANTS`, not a route's declared rule): tests/test_permissions.py
walks every route with every kind of caller and compares the status with this table, and compares each route's
declared rule with the class named here. A privilege granted in the code but not here, a route re-declared from
`admin` to `publish`, or a new route without a row, fails the walk.
"""

from typing import Literal

Caller = Literal["anonymous", "admin", "publish", "read", "runner", "revoked", "expired", "garbage"]
Allowed = Literal["allowed"]

# The README's rules: admin ⊃ publish ⊃ read; runner tokens speak the runner protocol only; a token that is
# sent is always checked (401 when revoked, expired or malformed), except on open routes, which read none;
# anonymous callers may read when CORRAL_PUBLIC_READS is on, except reads that call the Hub on their behalf.
BAD_TOKEN: dict[Caller, int] = {"revoked": 401, "expired": 401, "garbage": 401}
STATUS: dict[str, dict[Caller, int | Allowed]] = {
    "open": {
        "anonymous": "allowed",
        "admin": "allowed",
        "publish": "allowed",
        "read": "allowed",
        "runner": "allowed",
        "revoked": "allowed",
        "expired": "allowed",
        "garbage": "allowed",
    },
    "read": {"admin": "allowed", "publish": "allowed", "read": "allowed", "runner": 403, **BAD_TOKEN},
    "read, token required": {
        "anonymous": 401,
        "admin": "allowed",
        "publish": "allowed",
        "read": "allowed",
        "runner": 403,
        **BAD_TOKEN,
    },
    "publish": {"anonymous": 401, "admin": "allowed", "publish": "allowed", "read": 403, "runner": 403, **BAD_TOKEN},
    "admin": {"anonymous": 401, "admin": "allowed", "publish": 403, "read": 403, "runner": 403, **BAD_TOKEN},
    "runner": {"anonymous": 401, "admin": 403, "publish": 403, "read": 403, "runner": "allowed", **BAD_TOKEN},
    "any token": {
        "anonymous": 401,
        "admin": "allowed",
        "publish": "allowed",
        "read": "allowed",
        "runner": "allowed",
        **BAD_TOKEN,
    },
}


def expected(access: str, caller: Caller, public_reads: bool) -> int | Allowed:
    if access == "read" and caller == "anonymous":
        return "allowed" if public_reads else 401
    return STATUS[access][caller]


# Every route (method, documented path) and who may call it.
ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/"): "read",
    ("GET", "/healthz"): "open",
    ("GET", "/leaderboards/{suite}"): "read",
    ("GET", "/metrics"): "read",
    ("GET", "/models/{owner}/{name}"): "read",
    ("HEAD", "/"): "read",
    ("HEAD", "/leaderboards/{suite}"): "read",
    ("GET", "/models"): "read",
    ("HEAD", "/models"): "read",
    ("HEAD", "/models/{owner}/{name}"): "read",
    ("GET", "/evaluations/{evaluation_id}"): "read",
    ("HEAD", "/evaluations/{evaluation_id}"): "read",
    ("GET", "/queue"): "read",
    ("HEAD", "/queue"): "read",
    ("GET", "/runners"): "read",
    ("HEAD", "/runners"): "read",
    ("GET", "/hub/{owner}/{name}"): "read",
    ("HEAD", "/hub/{owner}/{name}"): "read",
    ("GET", "/readyz"): "open",
    ("GET", "/v1/accelerators"): "read",
    ("GET", "/v1/attempts/{attempt_id}/log"): "read",
    ("GET", "/v1/compare"): "read",
    ("GET", "/v1/evaluations"): "read",
    ("POST", "/v1/evaluations"): "publish",
    ("GET", "/v1/evaluations/{evaluation_id}"): "read",
    ("POST", "/v1/evaluations/{evaluation_id}/cancel"): "publish",
    ("GET", "/v1/evaluations/{evaluation_id}/hub-export"): "read",
    ("POST", "/v1/evaluations/{evaluation_id}/hub-export/pull-request"): "publish",
    ("GET", "/v1/evaluations/{evaluation_id}/jobs/{shard_index}/{part}"): "read",
    ("GET", "/v1/evaluations/{evaluation_id}/provenance"): "read",
    ("GET", "/v1/families"): "read",
    ("POST", "/v1/families"): "publish",
    ("GET", "/v1/families/{slug}"): "read",
    ("PATCH", "/v1/families/{slug}"): "publish",
    ("GET", "/v1/leaderboards/{suite}"): "read",
    ("GET", "/v1/licenses"): "read",
    ("POST", "/v1/licenses"): "publish",
    ("GET", "/v1/licenses/{slug}"): "read",
    ("PATCH", "/v1/licenses/{slug}"): "publish",
    ("POST", "/v1/licenses/{slug}/check"): "read",
    ("GET", "/v1/models"): "read",
    ("POST", "/v1/models"): "publish",
    ("GET", "/v1/models/{owner}/{name}"): "read",
    ("PATCH", "/v1/models/{owner}/{name}"): "publish",
    ("GET", "/v1/models/{owner}/{name}/aliases"): "read",
    ("DELETE", "/v1/models/{owner}/{name}/aliases/{alias}"): "publish",
    ("PUT", "/v1/models/{owner}/{name}/aliases/{alias}"): "publish",
    ("GET", "/v1/models/{owner}/{name}/hub/commits"): "read, token required",
    ("POST", "/v1/models/{owner}/{name}/license-check"): "read",
    ("GET", "/v1/models/{owner}/{name}/lineage"): "read",
    ("GET", "/v1/models/{owner}/{name}/requirements"): "read",
    ("GET", "/v1/models/{owner}/{name}/revisions"): "read",
    ("POST", "/v1/models/{owner}/{name}/revisions"): "publish",
    ("GET", "/v1/models/{owner}/{name}/revisions/{ref}"): "read",
    ("PUT", "/v1/models/{owner}/{name}/revisions/{sha}/code-trust"): "admin",
    ("DELETE", "/v1/models/{owner}/{name}/revisions/{sha}/code-trust"): "admin",
    ("GET", "/v1/models/{owner}/{name}/scores"): "read",
    ("POST", "/v1/models/{owner}/{name}/sync"): "publish",
    ("GET", "/v1/queue"): "read",
    ("POST", "/v1/requirements"): "read",
    ("POST", "/v1/results/import"): "publish",
    ("POST", "/v1/runner-registration-tokens"): "admin",
    ("POST", "/v1/runner/attempts/{attempt_id}/fail"): "runner",
    ("POST", "/v1/runner/attempts/{attempt_id}/heartbeat"): "runner",
    ("PATCH", "/v1/runner/attempts/{attempt_id}/log"): "runner",
    ("POST", "/v1/runner/attempts/{attempt_id}/release"): "runner",
    ("PUT", "/v1/runner/attempts/{attempt_id}/result"): "runner",
    ("POST", "/v1/runner/jobs/claim"): "runner",
    ("POST", "/v1/runner/token"): "runner",
    ("POST", "/v1/runner/verify"): "runner",
    ("GET", "/v1/runners"): "admin",
    ("POST", "/v1/runners"): "admin",
    ("POST", "/v1/runners/register"): "open",
    ("DELETE", "/v1/runners/{runner_id}"): "admin",
    ("GET", "/v1/runners/{runner_id}"): "admin",
    ("PATCH", "/v1/runners/{runner_id}"): "admin",
    ("POST", "/v1/runners/{runner_id}/token"): "admin",
    ("GET", "/v1/suites"): "read",
    ("GET", "/v1/suites/{suite}"): "read",
    ("GET", "/v1/suites/{suite}/versions/{version}"): "read",
    ("GET", "/v1/tokens"): "admin",
    ("POST", "/v1/tokens"): "admin",
    ("GET", "/v1/tokens/current"): "any token",
    ("DELETE", "/v1/tokens/{token_id}"): "admin",
    ("GET", "/v1/tokens/{token_id}"): "admin",
}


# The caller "runner of another attempt": a valid runner token, holding the attempt's lease token too, on an
# attempt another runner holds. The README: an attempt is written only by the runner that claimed it (403). Each
# route of the runner protocol that names an attempt, with a request that would be valid from its own runner.
OTHER_RUNNERS_ATTEMPT: dict[tuple[str, str], int] = {
    ("POST", "/v1/runner/attempts/{attempt_id}/heartbeat"): 403,
    ("PATCH", "/v1/runner/attempts/{attempt_id}/log"): 403,
    ("PUT", "/v1/runner/attempts/{attempt_id}/result"): 403,
    ("POST", "/v1/runner/attempts/{attempt_id}/fail"): 403,
    ("POST", "/v1/runner/attempts/{attempt_id}/release"): 403,
}
