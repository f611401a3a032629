"""Issuing, listing and revoking tokens. Used by the API and by `corral token ...` alike."""

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import BadRequest, NotFound
from corral.pagination import PageRequest
from corral.tables import ApiToken
from corral.tables.base import utcnow
from corral.tokens.credentials import generate_token, token_refusal
from corral.tokens.repository import TokenRepository
from corral.tokens.schemas import TokenCreated, TokenRead
from corral.wire.enums import Scope


def to_read(token: ApiToken, now: datetime) -> TokenRead:
    active = token_refusal(token, now) is None
    fields = {name: getattr(token, name) for name in TokenRead.model_fields if name != "active"}
    return TokenRead(**fields, active=active)


class TokenService:
    def __init__(self, session: AsyncSession) -> None:
        self.repository = TokenRepository(session)

    async def issue(
        self,
        *,
        name: str,
        scope: Scope,
        expires_at: datetime | None = None,
        runner_id: uuid.UUID | None = None,
        now: datetime | None = None,
    ) -> TokenCreated:
        now = now or utcnow()
        if expires_at is not None and expires_at <= now:
            raise BadRequest("expires_at is in the past; a token must be usable when it is issued.")
        if (scope == Scope.RUNNER) != (runner_id is not None):
            raise BadRequest("A runner token is bound to exactly one runner, and only runner tokens are.")
        new = generate_token()
        token = await self.repository.add(
            ApiToken(
                name=name,
                scope=scope,
                key_id=new.key_id,
                secret_hash=new.secret_hash,
                expires_at=expires_at,
                runner_id=runner_id,
            )
        )
        return TokenCreated(**to_read(token, now).model_dump(), token=new.plaintext)

    async def get(self, token_id: uuid.UUID) -> TokenRead:
        token = await self.repository.get(token_id)
        if token is None:
            raise NotFound(f"No token with id {token_id}.")
        return to_read(token, utcnow())

    async def list_page(
        self, *, scope: Scope | None, active: bool | None, sort: str, page: PageRequest
    ) -> tuple[list[TokenRead], str | None]:
        now = utcnow()
        tokens, cursor = await self.repository.list_page(scope=scope, active=active, now=now, sort=sort, page=page)
        return [to_read(token, now) for token in tokens], cursor

    async def revoke(self, token_id: uuid.UUID) -> TokenRead:
        """Revoke a token; revoking it again changes nothing (the first revocation time stays)."""
        token = await self.repository.get(token_id)
        if token is None:
            raise NotFound(f"No token with id {token_id}.")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            await self.repository.session.flush()
        return to_read(token, utcnow())
