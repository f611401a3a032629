"""The SQL of suite versions: every version kept, one of them the latest per name."""

import uuid

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.tables import SuiteVersion


async def version(session: AsyncSession, name: str, version: str | None) -> SuiteVersion | None:
    """A kept version of the suite, or (`version` None) its latest."""
    statement = select(SuiteVersion).where(SuiteVersion.name == name)
    statement = statement.where(SuiteVersion.version == version if version else SuiteVersion.latest.is_(True))
    return (await session.execute(statement)).scalar_one_or_none()


async def versions(session: AsyncSession, name: str) -> list[SuiteVersion]:
    """Every kept version of the suite, newest first."""
    statement = (
        select(SuiteVersion).where(SuiteVersion.name == name).order_by(SuiteVersion.created_at.desc(), SuiteVersion.id)
    )
    return list((await session.execute(statement)).scalars().all())


async def definition(session: AsyncSession, suite_version_id: uuid.UUID) -> object:
    """The stored definition of one version (a SuiteDefinition's JSON)."""
    return await session.scalar(select(SuiteVersion.definition).where(SuiteVersion.id == suite_version_id))


async def latest_definition(session: AsyncSession, name: str) -> object | None:
    return await session.scalar(
        select(SuiteVersion.definition).where(SuiteVersion.name == name, SuiteVersion.latest.is_(True))
    )


async def names(session: AsyncSession) -> list[str]:
    return sorted((await session.execute(select(SuiteVersion.name).distinct())).scalars().all())


def latest_versions() -> Select[SuiteVersion]:
    return select(SuiteVersion).where(SuiteVersion.latest.is_(True))


async def make_latest(session: AsyncSession, name: str, row: SuiteVersion | None, new: SuiteVersion | None) -> None:
    """`row` (kept) or `new` (added) becomes the suite's latest version; every other one is not."""
    await session.execute(update(SuiteVersion).where(SuiteVersion.name == name).values(latest=False))
    if new is not None:
        session.add(new)
    elif row is not None:
        row.latest = True
    await session.flush()
