"""Lookups the registry domains share: by slug or repo id, 404 when absent."""

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.errors import NotFound, UnprocessableEntity
from app.tables import Family, License, Model

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
