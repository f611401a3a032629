from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from corral.db import SessionDep
from corral.fields import Slug
from corral.pagination import PageDep
from corral.registry.families.schemas import FamilyCreate, FamilyRead, FamilySort, FamilyUpdate
from corral.registry.families.service import FamilyService
from corral.schemas import COMMON_ERRORS, Page, problem_responses
from corral.security.access import PUBLISH, READ
from corral.viewcache import REGISTRY, json_view

router = APIRouter(prefix="/v1/families", tags=["families"], responses=COMMON_ERRORS)


@router.get("", dependencies=[Depends(READ)], responses=problem_responses(304, 400), response_model=Page[FamilyRead])
async def list_families(
    request: Request,
    session: SessionDep,
    page: PageDep,
    vendor: Annotated[str | None, Query(max_length=100)] = None,
    sort: Annotated[FamilySort, Query()] = "-release_date",
) -> Response:
    """List model families (release trains)."""

    async def build() -> Page[FamilyRead]:
        items, cursor = await FamilyService(session).list_page(vendor=vendor, sort=sort, page=page)
        return Page(items=items, next_cursor=cursor)

    return await json_view(request, REGISTRY, build)


@router.post(
    "", status_code=status.HTTP_201_CREATED, dependencies=[Depends(PUBLISH)], responses=problem_responses(409, 415)
)
async def create_family(body: FamilyCreate, session: SessionDep) -> FamilyRead:
    """Record a model family."""
    return await FamilyService(session).create(body)


@router.get("/{slug}", dependencies=[Depends(READ)], responses=problem_responses(304, 404), response_model=FamilyRead)
async def get_family(request: Request, slug: Slug, session: SessionDep) -> Response:
    """Show a model family."""

    async def build() -> FamilyRead:
        return await FamilyService(session).get(slug)

    return await json_view(request, REGISTRY, build)


@router.patch("/{slug}", dependencies=[Depends(PUBLISH)], responses=problem_responses(404, 415))
async def update_family(slug: Slug, body: FamilyUpdate, session: SessionDep) -> FamilyRead:
    """Change a model family."""
    return await FamilyService(session).update(slug, body)
