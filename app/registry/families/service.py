import uuid
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import Conflict
from corral.pagination import PageRequest, SortColumn, SortKey, paginate
from corral.registry import repository
from corral.registry.families.schemas import FamilyCreate, FamilyRead, FamilyUpdate
from corral.registry.repository import by_slug, require_slug
from corral.tables import Family, License

SORT_COLUMNS: dict[str, SortColumn] = {
    "slug": Family.slug,
    "created_at": Family.created_at,
    "release_date": SortKey(Family.release_date, nulls_as=date.min),
}


def to_read(family: Family) -> FamilyRead:
    fields = {name: getattr(family, name) for name in FamilyRead.model_fields if name != "license"}
    return FamilyRead(**fields, license=family.license.slug if family.license else None)


class FamilyService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _load(self, slug: str) -> Family:
        await require_slug(self.session, Family, slug)
        return await repository.family_with_license(self.session, slug)

    async def create(self, body: FamilyCreate) -> FamilyRead:
        if await by_slug(self.session, Family, body.slug) is not None:
            raise Conflict(f"A family with slug {body.slug!r} exists already.")
        values = body.model_dump(exclude={"license"})
        family = Family(**values, license_id=await self._license_id(body.license))
        self.session.add(family)
        await self.session.flush()
        return to_read(await self._load(body.slug))

    async def get(self, slug: str) -> FamilyRead:
        return to_read(await self._load(slug))

    async def update(self, slug: str, body: FamilyUpdate) -> FamilyRead:
        family = await self._load(slug)
        changes = body.model_dump(exclude_unset=True)
        if "license" in changes:
            family.license_id = await self._license_id(changes.pop("license"))
        for field, value in changes.items():
            setattr(family, field, value)
        await self.session.flush()
        self.session.expire(family)
        return to_read(await self._load(slug))

    async def list_page(
        self, *, vendor: str | None, sort: str, page: PageRequest
    ) -> tuple[list[FamilyRead], str | None]:
        families, cursor = await paginate(
            self.session, repository.families(vendor), sort=sort, columns=SORT_COLUMNS, id_column=Family.id, page=page
        )
        return [to_read(family) for family in families], cursor

    async def _license_id(self, slug: str | None) -> uuid.UUID | None:
        if slug is None:
            return None
        return (await require_slug(self.session, License, slug, referenced=True)).id
