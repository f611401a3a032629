"""Kept views served before the framework: a GET whose answer is kept (app/viewcache.py) and whose caller the
view's route admits — anonymous where the route's rule lets anonymous callers read, or with a token already
verified by this process (app/tokens/cache.py) whose scope the rule grants — is answered by the service's
middleware directly. Anything else (a token to read first, a last use to record, a view to build) goes the
whole way through the framework, which checks the same rule with the same functions.
"""

from collections.abc import Awaitable, Callable
from datetime import timedelta

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from corral.config import Settings
from corral.errors import Unauthorized
from corral.security.access import Access, principal_of, route_access, use_to_record
from corral.tables.base import utcnow
from corral.tokens import cache as token_cache
from corral.tokens.credentials import TOKEN_SHAPE, secret_matches
from corral.viewcache import kept

_rules: dict[int, Access | None] = {}  # id(route) -> its access rule, read once


FastPath = Callable[[Scope, Headers], Awaitable[Response | None]]


def kept_response(settings: Settings) -> FastPath:
    """The fast path for one application's settings: (scope, headers) -> the kept response, or None."""

    async def serve(scope: Scope, headers: Headers) -> Response | None:
        if scope["method"] != "GET":
            return None
        view = kept(scope)
        if view is None or view.route is None:
            return None
        if id(view.route) not in _rules:
            _rules[id(view.route)] = route_access(view.route)
        rule = _rules[id(view.route)]
        if rule is None or not _admitted(rule, headers.get("authorization"), settings):
            return None
        scope["route"] = view.route  # metrics and logs name the route, as for any request
        return view.response()

    return serve


def _admitted(rule: Access, authorization: str | None, settings: Settings) -> bool:
    if not authorization:
        return rule.anonymous_allowed(settings)
    scheme, _, credentials = authorization.partition(" ")
    match = TOKEN_SHAPE.match(credentials) if scheme.lower() == "bearer" else None
    record = token_cache.cached(match.group(1)) if match else None
    if record is None or not secret_matches(record.secret_hash, credentials):
        return False  # unknown here: the framework reads it (and answers 401 if it must)
    now = utcnow()
    if use_to_record(record, now, timedelta(seconds=settings.token_touch_seconds)):
        return False  # a use to record: the framework's path writes it
    try:
        principal = principal_of(record, now)
    except Unauthorized:
        return False  # expired or revoked: the framework answers the 401
    return rule.scope is None or principal.can(rule.scope)
