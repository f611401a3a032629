"""The Hub sync's SQL: a model's sync lease, its failure record, the models due for a sync, licence lookup."""

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.tables import License, Model


async def take_lease(session: AsyncSession, repo_id: str, now: datetime, lease: timedelta) -> bool:
    """A conditional UPDATE, atomic on PostgreSQL and SQLite alike: of two replicas, exactly one takes it."""
    result = await session.execute(
        update(Model)
        .where(Model.repo_id == repo_id, or_(Model.hub_lease_until.is_(None), Model.hub_lease_until < now))
        .values(hub_lease_until=now + lease)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def drop_lease(session: AsyncSession, repo_id: str) -> None:
    await session.execute(update(Model).where(Model.repo_id == repo_id).values(hub_lease_until=None))


async def record_failure(
    session: AsyncSession, model: Model, message: str, failures: int, now: datetime, retry_at: datetime
) -> None:
    await session.execute(
        update(Model)
        .where(Model.id == model.id)
        .values(
            hub_sync_status="error",
            hub_last_attempt_at=now,
            hub_last_error=message,
            hub_consecutive_failures=failures,
            hub_next_sync_at=retry_at,
            hub_lease_until=None,
        )
    )


async def due(session: AsyncSession, now: datetime, limit: int) -> Sequence[tuple[str, str]]:
    """Models synced before (opted in) whose next sync time has come and whose lease is free: (repo, ref)."""
    rows = await session.execute(
        select(Model.repo_id, Model.hub_ref)
        .where(
            Model.hub_sync_status.is_not(None),
            Model.hub_next_sync_at <= now,
            or_(Model.hub_lease_until.is_(None), Model.hub_lease_until < now),
        )
        .order_by(Model.hub_next_sync_at)
        .limit(limit)
    )
    return [(repo_id, ref or "main") for repo_id, ref in rows.all()]


async def license_slugs(session: AsyncSession, hub_license_id: str, hub_license_name: str | None) -> list[str]:
    """The licences recorded under the Hub's licence id (or, for `other`, its licence name)."""
    by_name = hub_license_id == "other" and hub_license_name
    column = License.hub_license_name if by_name else License.hub_license_id
    value = hub_license_name if by_name else hub_license_id
    return list((await session.execute(select(License.slug).where(column == value))).scalars().all())
