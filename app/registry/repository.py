"""The registry's SQL: lookups by slug or repo id (404 when absent), listings, lineage, revisions and aliases."""

import uuid
from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from corral.errors import NotFound, UnprocessableEntity
from corral.tables import Alias, Family, License, Model, Revision

SluggedT = TypeVar("SluggedT", License, Family)

# The model's own family, licence (and the family's) and base model, loaded with it (relationships raise).
MODEL_LOADS = (
    selectinload(Model.family).selectinload(Family.license),
    selectinload(Model.license),
    selectinload(Model.base_model),
)


async def by_slug(session: AsyncSession, entity: type[SluggedT], slug: str) -> SluggedT | None:
    return (await session.execute(select(entity).where(entity.slug == slug))).scalar_one_or_none()


async def require_slug(
    session: AsyncSession, entity: type[SluggedT], slug: str, *, referenced: bool = False
) -> SluggedT:
    """The row with this slug. Missing: 404 for the resource in the path, 422 for one named in a body."""
    found = await by_slug(session, entity, slug)
    if found is None:
        noun, field = ("licence", "license") if entity is License else ("family", "family")
        if referenced:
            raise UnprocessableEntity(f"No {noun} with slug {slug!r}.", field=field)
        raise NotFound(f"No {noun} with slug {slug!r}.")
    return found


async def model_by_repo_id(session: AsyncSession, repo_id: str) -> Model | None:
    statement = select(Model).where(Model.repo_id == repo_id).options(*MODEL_LOADS)
    return (await session.execute(statement)).scalar_one_or_none()


async def require_model(session: AsyncSession, repo_id: str) -> Model:
    model = await model_by_repo_id(session, repo_id)
    if model is None:
        raise NotFound(f"No model {repo_id!r} is registered.")
    return model


async def family_slugs(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(Family.slug).order_by(Family.slug))).scalars())


def families(vendor: str | None) -> Select[Family]:
    statement: Select[Family] = select(Family).options(selectinload(Family.license))
    return statement if vendor is None else statement.where(Family.vendor == vendor)


async def family_with_license(session: AsyncSession, slug: str) -> Family:
    statement = select(Family).where(Family.slug == slug).options(selectinload(Family.license))
    return (await session.execute(statement)).scalar_one()


def licenses(hub_license_id: str | None, commercial_use: bool | None) -> Select[License]:
    statement: Select[License] = select(License)
    if hub_license_id is not None:
        statement = statement.where(License.hub_license_id == hub_license_id)
    if commercial_use is not None:
        statement = statement.where(License.commercial_use == commercial_use)
    return statement


async def model_by_id(session: AsyncSession, model_id: uuid.UUID) -> Model:
    return (await session.execute(select(Model).where(Model.id == model_id))).scalar_one()


async def derived_from(session: AsyncSession, model_ids: Sequence[uuid.UUID]) -> list[Model]:
    """The models whose base is one of these, by repo id."""
    statement = select(Model).where(Model.base_model_id.in_(model_ids)).order_by(Model.repo_id)
    return list((await session.execute(statement)).scalars().all())


def revisions_of(model_id: uuid.UUID) -> Select[Revision]:
    return select(Revision).where(Revision.model_id == model_id)


async def revision_by_sha(session: AsyncSession, model_id: uuid.UUID, sha: str) -> Revision | None:
    statement = select(Revision).where(Revision.model_id == model_id, Revision.sha == sha)
    return (await session.execute(statement)).scalar_one_or_none()


async def revision_by_alias(session: AsyncSession, model_id: uuid.UUID, name: str) -> Revision | None:
    statement = (
        select(Revision)
        .join(Alias, Alias.revision_id == Revision.id)
        .where(Alias.model_id == model_id, Alias.name == name)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def aliases_with_sha(session: AsyncSession, model_id: uuid.UUID) -> list[tuple[Alias, str]]:
    rows = await session.execute(
        select(Alias, Revision.sha)
        .join(Revision, Revision.id == Alias.revision_id)
        .where(Alias.model_id == model_id)
        .order_by(Alias.name)
    )
    return [(alias, sha) for alias, sha in rows.all()]


async def alias_names(session: AsyncSession, model_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    """(revision id, alias name) of every alias of the model, by name."""
    rows = await session.execute(
        select(Alias.revision_id, Alias.name).where(Alias.model_id == model_id).order_by(Alias.name)
    )
    return [(revision_id, name) for revision_id, name in rows.all()]
