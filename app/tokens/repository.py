import uuid
from datetime import datetime, timedelta

from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.changes import UNTRACKED
from corral.pagination import PageRequest, paginate
from corral.tables import ApiToken
from corral.tokens.cache import TokenRecord
from corral.wire.enums import Scope

SORT_COLUMNS = {"created_at": ApiToken.created_at, "name": ApiToken.name}


class TokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, token: ApiToken) -> ApiToken:
        self.session.add(token)
        await self.session.flush()
        return token

    async def get(self, token_id: uuid.UUID) -> ApiToken | None:
        return await self.session.get(ApiToken, token_id)

    async def record_by_key_id(self, key_id: str) -> TokenRecord | None:
        """What authentication reads of a token, as columns: no ORM instance that a later read would reuse."""
        statement = select(*(getattr(ApiToken, name) for name in TokenRecord.__dataclass_fields__)).where(
            ApiToken.key_id == key_id
        )
        row = (await self.session.execute(statement)).first()
        return None if row is None else TokenRecord(**row._mapping)

    async def get_by_key_id(self, key_id: str) -> ApiToken | None:
        statement = select(ApiToken).where(ApiToken.key_id == key_id)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def list_page(
        self, *, scope: Scope | None, active: bool | None, now: datetime, sort: str, page: PageRequest
    ) -> tuple[list[ApiToken], str | None]:
        statement: Select[ApiToken] = select(ApiToken)
        if scope is not None:
            statement = statement.where(ApiToken.scope == scope)
        if active is not None:
            live = (ApiToken.revoked_at.is_(None)) & (or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now))
            statement = statement.where(live if active else ~live)
        return await paginate(
            self.session, statement, sort=sort, columns=SORT_COLUMNS, id_column=ApiToken.id, page=page
        )

    async def touch(self, token_id: uuid.UUID, now: datetime, every: timedelta) -> None:
        """Mark the token used now, unless it was within `every` (several processes touch about once)."""
        await self.session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - every))
            .values(last_used_at=now)
            .execution_options(synchronize_session=False, **{UNTRACKED: True})
        )

    async def revoke_runner_tokens(self, runner_id: uuid.UUID, now: datetime) -> None:
        """Every live token of the runner stops working now."""
        await self.session.execute(
            update(ApiToken)
            .where(ApiToken.runner_id == runner_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
