from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import Conflict
from corral.pagination import PageRequest, paginate
from corral.registry import repository
from corral.registry.licenses.schemas import LicenseCheck, LicenseCreate, LicenseUpdate, UseDescription
from corral.registry.licenses.terms import check_use
from corral.registry.repository import by_slug, require_slug
from corral.tables import License

SORT_COLUMNS = {"slug": License.slug, "created_at": License.created_at}


class LicenseService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, body: LicenseCreate) -> License:
        if await by_slug(self.session, License, body.slug) is not None:
            raise Conflict(f"A licence with slug {body.slug!r} exists already.")
        license = License(**body.model_dump())
        self.session.add(license)
        await self.session.flush()
        return license

    async def get(self, slug: str) -> License:
        return await require_slug(self.session, License, slug)

    async def update(self, slug: str, body: LicenseUpdate) -> License:
        license = await self.get(slug)
        for field, value in body.model_dump(exclude_unset=True).items():
            setattr(license, field, value)
        await self.session.flush()
        return license

    async def list_page(
        self, *, hub_license_id: str | None, commercial_use: bool | None, sort: str, page: PageRequest
    ) -> tuple[list[License], str | None]:
        statement = repository.licenses(hub_license_id, commercial_use)
        return await paginate(self.session, statement, sort=sort, columns=SORT_COLUMNS, id_column=License.id, page=page)

    async def check(self, slug: str, use: UseDescription) -> LicenseCheck:
        return check_use(await self.get(slug), use, multimodal=bool(use.multimodal))
