from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from corral.db import SessionDep
from corral.fields import Slug
from corral.pagination import PageDep
from corral.registry.licenses.schemas import (
    LicenseCheck,
    LicenseCreate,
    LicenseRead,
    LicenseSort,
    LicenseUpdate,
    UseDescription,
)
from corral.registry.licenses.service import LicenseService
from corral.schemas import COMMON_ERRORS, Page, problem_responses
from corral.security.access import PUBLISH, READ
from corral.viewcache import REGISTRY, json_view

router = APIRouter(prefix="/v1/licenses", tags=["licenses"], responses=COMMON_ERRORS)


@router.get("", dependencies=[Depends(READ)], responses=problem_responses(304, 400), response_model=Page[LicenseRead])
async def list_licenses(
    request: Request,
    session: SessionDep,
    page: PageDep,
    hub_license_id: Annotated[str | None, Query(max_length=64, description="The Hub's licence id.")] = None,
    commercial_use: Annotated[bool | None, Query()] = None,
    sort: Annotated[LicenseSort, Query()] = "slug",
) -> Response:
    """List licences with their terms."""

    async def build() -> Page[LicenseRead]:
        items, cursor = await LicenseService(session).list_page(
            hub_license_id=hub_license_id, commercial_use=commercial_use, sort=sort, page=page
        )
        return Page(items=[LicenseRead.model_validate(item) for item in items], next_cursor=cursor)

    return await json_view(request, REGISTRY, build)


@router.post(
    "", status_code=status.HTTP_201_CREATED, dependencies=[Depends(PUBLISH)], responses=problem_responses(409, 415)
)
async def create_license(body: LicenseCreate, session: SessionDep) -> LicenseRead:
    """Record a licence and its terms."""
    return LicenseRead.model_validate(await LicenseService(session).create(body))


@router.get("/{slug}", dependencies=[Depends(READ)], responses=problem_responses(304, 404), response_model=LicenseRead)
async def get_license(request: Request, slug: Slug, session: SessionDep) -> Response:
    """Show a licence and its terms."""

    async def build() -> LicenseRead:
        return LicenseRead.model_validate(await LicenseService(session).get(slug))

    return await json_view(request, REGISTRY, build)


@router.patch("/{slug}", dependencies=[Depends(PUBLISH)], responses=problem_responses(404, 415))
async def update_license(slug: Slug, body: LicenseUpdate, session: SessionDep) -> LicenseRead:
    """Change a licence's recorded terms."""
    return LicenseRead.model_validate(await LicenseService(session).update(slug, body))


@router.post("/{slug}/check", dependencies=[Depends(READ)], responses=problem_responses(404, 415))
async def check_license(slug: Slug, use: UseDescription, session: SessionDep) -> LicenseCheck:
    """Check a described use against this licence: verdict, deciding clauses, obligations."""
    return await LicenseService(session).check(slug, use)
