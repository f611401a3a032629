from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from corral.db import SessionDep
from corral.pagination import PageDep
from corral.schemas import COMMON_ERRORS, Page, problem_responses
from corral.security.access import READ
from corral.suites.schemas import SuiteRead, SuiteSort, SuiteSummary, SuiteVersionRead
from corral.suites.service import SuiteService

router = APIRouter(prefix="/v1/suites", tags=["suites"], responses=COMMON_ERRORS, dependencies=[Depends(READ)])
SuiteName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


@router.get("", responses=problem_responses(304))
async def list_suites(
    session: SessionDep, page: PageDep, sort: Annotated[SuiteSort, Query()] = "name"
) -> Page[SuiteSummary]:
    """List evaluation suites (their current versions)."""
    items, cursor = await SuiteService(session).list_page(sort=sort, page=page)
    return Page(items=items, next_cursor=cursor)


@router.get("/{suite}", responses=problem_responses(304, 404))
async def get_suite(suite: SuiteName, session: SessionDep) -> SuiteRead:
    """Show a suite's current definition and every version kept."""
    return await SuiteService(session).get(suite)


@router.get("/{suite}/versions/{version}", responses=problem_responses(304, 404))
async def get_suite_version(
    suite: SuiteName, version: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")], session: SessionDep
) -> SuiteVersionRead:
    """Show one version of a suite, as evaluations recorded with it saw it."""
    return await SuiteService(session).get_version(suite, version)
