"""The runners' data access: the registered runners, and which of them could ever hold a need."""

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.runners.matching import Capacity, Need
from app.tables import Runner


async def registered_runners(session: AsyncSession) -> list[Runner]:
    return list((await session.execute(select(Runner).where(Runner.deleted_at.is_(None)))).scalars())


def capable(runners: Sequence[Runner], need: Need) -> list[Runner]:
    return [runner for runner in runners if not Capacity.of(runner).shortfalls(need)]
