import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from corral.db import SessionDep
from corral.errors import Forbidden
from corral.fields import Tag
from corral.pagination import PageDep
from corral.runners.schemas import (
    RegistrationTokenCreate,
    RegistrationTokenCreated,
    RunnerCreate,
    RunnerRead,
    RunnerRegister,
    RunnerReport,
    RunnerSort,
    RunnerUpdate,
    RunnerWithToken,
)
from corral.runners.service import RunnerService, to_read
from corral.schemas import COMMON_ERRORS, Page, problem_responses
from corral.security.access import ADMIN, OPEN_ROUTE, RUNNER, Principal
from corral.wire.enums import RunnerState

router = APIRouter(prefix="/v1", tags=["runners"], responses=COMMON_ERRORS)
CREATED = {"status_code": status.HTTP_201_CREATED, "responses": problem_responses(409, 415)}


@router.post("/runners", dependencies=[Depends(ADMIN)], **CREATED)  # type: ignore[arg-type]
async def create_runner(body: RunnerCreate, session: SessionDep) -> RunnerWithToken:
    """Create a runner and its token (shown once)."""
    return await RunnerService(session).create(body)


@router.post("/runner-registration-tokens", dependencies=[Depends(ADMIN)], **CREATED)  # type: ignore[arg-type]
async def create_registration_token(body: RegistrationTokenCreate, session: SessionDep) -> RegistrationTokenCreated:
    """Make a short-lived, single-use token a machine can register itself with."""
    return await RunnerService(session).create_registration_token(body)


@router.post("/runners/register", **CREATED, **OPEN_ROUTE)  # type: ignore[arg-type]
async def register_runner(body: RunnerRegister, session: SessionDep) -> RunnerWithToken:
    """Exchange a registration token for this machine's runner record and runner token."""
    return await RunnerService(session).register(body)


@router.get("/runners", dependencies=[Depends(ADMIN)], responses=problem_responses(304))
async def list_runners(
    session: SessionDep,
    page: PageDep,
    state: Annotated[RunnerState | None, Query()] = None,
    label: Annotated[Tag | None, Query()] = None,
    sort: Annotated[RunnerSort, Query()] = "name",
) -> Page[RunnerRead]:
    """List runners with their capabilities, state and whether they are online."""
    items, cursor = await RunnerService(session).list_page(state=state, label=label, sort=sort, page=page)
    return Page(items=items, next_cursor=cursor)


@router.get("/runners/{runner_id:uuid}", dependencies=[Depends(ADMIN)], responses=problem_responses(304, 404))
async def get_runner(runner_id: uuid.UUID, session: SessionDep) -> RunnerRead:
    """Show a runner."""
    return to_read(await RunnerService(session).get(runner_id))


@router.patch("/runners/{runner_id:uuid}", dependencies=[Depends(ADMIN)], responses=problem_responses(404, 415))
async def update_runner(runner_id: uuid.UUID, body: RunnerUpdate, session: SessionDep) -> RunnerRead:
    """Pause, drain or reactivate a runner, or change its labels and concurrency."""
    return await RunnerService(session).update(runner_id, body)


@router.delete(
    "/runners/{runner_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(ADMIN)],
    responses=problem_responses(404),
)
async def delete_runner(runner_id: uuid.UUID, session: SessionDep) -> Response:
    """Delete a runner: its tokens stop working at once."""
    await RunnerService(session).delete(runner_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/runners/{runner_id:uuid}/token", dependencies=[Depends(ADMIN)], responses=problem_responses(404))
async def rotate_runner_token(runner_id: uuid.UUID, session: SessionDep) -> RunnerWithToken:
    """Issue a new token for a runner; its old tokens stop working."""
    return await RunnerService(session).rotate_token(runner_id)


def _own_runner(principal: Principal | None) -> uuid.UUID:
    if principal is None or principal.runner_id is None:  # RUNNER admits only runner tokens
        raise Forbidden("Only a runner's own token can do this.")
    return principal.runner_id


@router.post("/runner/verify", responses=problem_responses(404, 415))
async def verify_runner(
    body: RunnerReport, session: SessionDep, principal: Annotated[Principal | None, Depends(RUNNER)]
) -> RunnerRead:
    """A runner checks in with its hardware and software (the runner protocol's first call)."""
    return await RunnerService(session).verify(_own_runner(principal), body)


@router.post("/runner/token", responses=problem_responses(404))
async def rotate_own_token(
    session: SessionDep, principal: Annotated[Principal | None, Depends(RUNNER)]
) -> RunnerWithToken:
    """A runner replaces its own token; the one used for this call stops working."""
    return await RunnerService(session).rotate_token(_own_runner(principal))
