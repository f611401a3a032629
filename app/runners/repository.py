"""The runners' data access: the registered runners, registration tokens, and which runners could ever hold a
need."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.runners.matching import Capacity, Need
from corral.tables import RegistrationToken, Runner
from corral.tables.types import json_array_contains
from corral.wire.enums import RunnerState


async def registered_runners(session: AsyncSession) -> list[Runner]:
    return list((await session.execute(select(Runner).where(Runner.deleted_at.is_(None)))).scalars())


def capable(runners: Sequence[Runner], need: Need) -> list[Runner]:
    return [runner for runner in runners if not Capacity.of(runner).shortfalls(need)]


async def name_taken(session: AsyncSession, name: str) -> bool:
    return (await session.execute(select(Runner.id).where(Runner.name == name))).first() is not None


async def registration_token(session: AsyncSession, key_id: str) -> RegistrationToken | None:
    statement = select(RegistrationToken).where(RegistrationToken.key_id == key_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def use_registration_token(
    session: AsyncSession, token_id: uuid.UUID, runner_id: uuid.UUID, now: datetime
) -> bool:
    """Conditional: of two machines racing with one token, one wins; whether this one did."""
    claimed = await session.execute(
        update(RegistrationToken)
        .where(RegistrationToken.id == token_id, RegistrationToken.used_at.is_(None))
        .values(used_at=now, runner_id=runner_id)
    )
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def listing(state: RunnerState | None, label: str | None) -> Select[Runner]:
    statement: Select[Runner] = select(Runner).where(Runner.deleted_at.is_(None))
    if state is not None:
        statement = statement.where(Runner.state == state)
    if label is not None:
        statement = statement.where(json_array_contains(Runner.labels, label))
    return statement
