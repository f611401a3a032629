"""Who is calling and what they may do: the principal of a bearer token, and the access rule every route declares.

Tokens themselves (format, hashing, when a stored one is usable) are `app.tokens.credentials`, one layer below.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, TypedDict

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from corral import changes
from corral.config import Settings
from corral.db import SessionDep, after_commit
from corral.errors import Forbidden, Unauthorized
from corral.state import state_of
from corral.tables.base import utcnow
from corral.tokens import cache as token_cache
from corral.tokens.cache import TokenRecord
from corral.tokens.credentials import TOKEN_SHAPE, secret_matches, token_refusal
from corral.tokens.repository import TokenRepository
from corral.wire.enums import Scope

# What each scope may do: admin includes publish, publish includes read; runner is only the runner protocol.
GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: frozenset({Scope.ADMIN, Scope.PUBLISH, Scope.READ}),
    Scope.PUBLISH: frozenset({Scope.PUBLISH, Scope.READ}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.RUNNER: frozenset({Scope.RUNNER}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's identity and scope (never its secret)."""

    token_id: uuid.UUID
    name: str
    scope: Scope
    runner_id: uuid.UUID | None

    def can(self, scope: Scope) -> bool:
        return scope in GRANTS[self.scope]


_bearer = HTTPBearer(auto_error=False, description="A Corral token: `Authorization: Bearer crl_...`")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def authenticate(request: Request, session: SessionDep, credentials: BearerDep) -> Principal | None:
    """The token's principal, None when no token was sent; 401 for anything wrong with a token that was."""
    if credentials is None:
        if request.headers.get("authorization"):
            raise Unauthorized("The Authorization header must be 'Bearer <token>'.", error="invalid_request")
        return None
    match = TOKEN_SHAPE.match(credentials.credentials)
    if match is None:
        raise Unauthorized("The bearer token is not a Corral token (crl_...).")
    key_id = match.group(1)
    settings: Settings = state_of(request).settings
    record = token_cache.cached(key_id)
    if record is None:
        seen = changes.generation("tokens")  # before the read: a change committed meanwhile makes it stale
        record = await TokenRepository(session).record_by_key_id(key_id)
        if record is not None:
            token_cache.keep(record, settings.token_cache_seconds, seen)
    if not secret_matches(record.secret_hash if record else None, credentials.credentials) or record is None:
        raise Unauthorized("The token is not valid.")
    now = utcnow()
    principal = principal_of(record, now)
    every = timedelta(seconds=settings.token_touch_seconds)
    if use_to_record(record, now, every):
        # Remembered per process, so that most requests skip the statement; the statement's own condition keeps
        # several processes to about one write per interval. Written after the request's commit: never a lock
        # held through a request (SQLite's one write lock, a hot token's row on PostgreSQL).
        _touched[key_id] = now
        token_id = record.id

        async def touch(bookkeeping: AsyncSession) -> None:
            await TokenRepository(bookkeeping).touch(token_id, now, every)

        after_commit(session, touch)
    return principal


_touched: dict[str, datetime] = {}  # key id -> when this process last marked the token used


def use_to_record(record: TokenRecord, now: datetime, every: timedelta) -> bool:
    """Whether this use of the token is to be written (its last recorded use is `every` old, in this process)."""
    return touch_due(max_time(record.last_used_at, _touched.get(record.key_id)), now, every)


def principal_of(token: TokenRecord, now: datetime) -> Principal:
    """The principal of a token at `now`; 401 when it cannot be used."""
    if (refusal := token_refusal(token, now)) is not None:
        raise Unauthorized(refusal)
    return _principal(token)


@lru_cache(maxsize=4096)
def _principal(token: TokenRecord) -> Principal:  # one per cached record, not one per request
    return Principal(token_id=token.id, name=token.name, scope=token.scope, runner_id=token.runner_id)


def touch_due(last_used: datetime | None, now: datetime, every: timedelta) -> bool:
    """Whether a use at `now` is worth recording: never used, or last used at least `every` ago."""
    return last_used is None or now - last_used >= every


def max_time(first: datetime | None, second: datetime | None) -> datetime | None:
    return max((moment for moment in (first, second) if moment is not None), default=None)


PrincipalDep = Annotated[Principal | None, Depends(authenticate)]


@dataclass(frozen=True)
class Access:
    """A route's access rule. Every route names exactly one; tests/test_permissions.py walks them all.

    `scope=None` with `anonymous=True` is an open route (health, metrics). A read rule lets anonymous
    callers in when CORRAL_PUBLIC_READS is on. A token that is sent is always checked, even where none
    is needed, so a revoked token fails loudly instead of silently acting anonymous.
    """

    scope: Scope | None
    anonymous: bool = False
    token_required: bool = False

    def anonymous_allowed(self, settings: Settings) -> bool:
        if self.token_required:
            return False
        return self.anonymous or (self.scope == Scope.READ and settings.public_reads)

    async def __call__(self, request: Request, principal: PrincipalDep) -> Principal | None:
        settings: Settings = state_of(request).settings
        if principal is None:
            if self.anonymous_allowed(settings):
                return None
            raise Unauthorized("This operation needs a token: 'Authorization: Bearer crl_...'.", error="")
        if self.scope is not None and not principal.can(self.scope):
            raise Forbidden(
                f"A {principal.scope.value} token cannot do this; it needs the {self.scope.value} scope.",
                required_scope=self.scope.value,
            )
        return principal


@dataclass(frozen=True)
class OpenAccess(Access):
    """For routes anyone may call without a token (health, metrics): no token is read at all."""

    scope: Scope | None = None
    anonymous: bool = True

    async def __call__(self) -> None:  # type: ignore[override]
        return None


def route_access(route: APIRoute) -> Access | None:
    """The access rule a route declares (searched through its dependency tree), None if it has none."""
    if (route.openapi_extra or {}).get(ACCESS_EXTENSION) == OPEN_MARK:
        return OPEN
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, Access):
            return dependant.call
        pending.extend(dependant.dependencies)
    return None


OPEN = OpenAccess()


class OpenRoute(TypedDict):
    openapi_extra: dict[str, str]


# Open routes declare their rule with `**OPEN_ROUTE` instead of `Depends(OPEN)`: a dependency that checks nothing
# still costs a third of a liveness probe. The mark is read by `route_access` and left out of the API document.
ACCESS_EXTENSION, OPEN_MARK = "x-corral-access", "open"
OPEN_ROUTE = OpenRoute(openapi_extra={ACCESS_EXTENSION: OPEN_MARK})
READ = Access(Scope.READ)
# A read that calls the Hub on the caller's behalf with the server's Hub token: never anonymous, even with
# public reads on, so that nobody can spend the server's Hub quota without a token.
READ_OUTBOUND = Access(Scope.READ, token_required=True)
PUBLISH = Access(Scope.PUBLISH)
ADMIN = Access(Scope.ADMIN)
RUNNER = Access(Scope.RUNNER)
ANY_TOKEN = Access(None)


async def _require_principal(principal: Annotated[Principal | None, Depends(ANY_TOKEN)]) -> Principal:
    assert principal is not None  # ANY_TOKEN never admits an anonymous caller
    return principal


# For endpoints that need to know who called (the rule is still ANY_TOKEN).
CallerDep = Annotated[Principal, Depends(_require_principal)]
