"""Verified tokens kept per process, so that a request with a known token costs no database round trip.

An entry is what authentication reads of a token row (never its secret: only the hash the request's token is
compared with, as for a row). It is trusted for at most `CORRAL_TOKEN_CACHE_SECONDS`, and not at all once the
`tokens` generation moved (app/changes.py): a revoke, rotation, expiry change or runner deletion committed
anywhere drops every entry at once — in this process at its commit, in the others when PostgreSQL's NOTIFY
reaches them (milliseconds), or at the latest when the listener reconnects.
"""

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from corral import changes
from corral.tables import ApiToken
from corral.wire.enums import Scope

MAX_ENTRIES = 10_000  # beyond this the oldest half goes: a bound on memory, not a policy


@dataclass(frozen=True)
class TokenRecord:
    id: uuid.UUID
    key_id: str
    secret_hash: str
    name: str
    scope: Scope
    runner_id: uuid.UUID | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> "TokenRecord":
        return cls(
            id=token.id,
            key_id=token.key_id,
            secret_hash=token.secret_hash,
            name=token.name,
            scope=token.scope,
            runner_id=token.runner_id,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            last_used_at=token.last_used_at,
        )


_entries: dict[str, tuple[float, int, TokenRecord]] = {}


def cached(key_id: str) -> TokenRecord | None:
    entry = _entries.get(key_id)
    if entry is None or entry[0] < time.monotonic() or entry[1] != changes.generation("tokens"):
        return None
    return entry[2]


def keep(record: TokenRecord, seconds: float, generation: int) -> None:
    """`generation`: the tokens' generation read before the row was."""
    if seconds <= 0:
        return
    if len(_entries) >= MAX_ENTRIES:
        for key in list(_entries)[: MAX_ENTRIES // 2]:
            del _entries[key]
    _entries[record.key_id] = (time.monotonic() + seconds, generation, record)
