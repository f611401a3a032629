import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from corral.db import SessionDep
from corral.pagination import PageDep
from corral.schemas import COMMON_ERRORS, Page, problem_responses
from corral.security.access import ADMIN, CallerDep
from corral.tokens.schemas import TokenCreate, TokenCreated, TokenRead, TokenSort
from corral.tokens.service import TokenService
from corral.wire.enums import Scope

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=COMMON_ERRORS)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(ADMIN)],
    responses=problem_responses(400, 415),
)
async def create_token(body: TokenCreate, session: SessionDep) -> TokenCreated:
    """Issue a token; the secret is in this response only."""
    return await TokenService(session).issue(name=body.name, scope=Scope(body.scope), expires_at=body.expires_at)


@router.get("", dependencies=[Depends(ADMIN)], responses=problem_responses(304, 400))
async def list_tokens(
    session: SessionDep,
    page: PageDep,
    scope: Annotated[Scope | None, Query(description="Only tokens of this scope.")] = None,
    active: Annotated[bool | None, Query(description="true: usable now; false: revoked or expired.")] = None,
    sort: Annotated[TokenSort, Query(description="Sort key; '-' for descending.")] = "-created_at",
) -> Page[TokenRead]:
    """List tokens (never their secrets)."""
    items, next_cursor = await TokenService(session).list_page(scope=scope, active=active, sort=sort, page=page)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/current", responses=problem_responses(304))
async def current_token(caller: CallerDep, session: SessionDep) -> TokenRead:
    """Describe the token making this request (a "who am I" for CI)."""
    return await TokenService(session).get(caller.token_id)


@router.get("/{token_id:uuid}", dependencies=[Depends(ADMIN)], responses=problem_responses(304, 404))
async def get_token(token_id: uuid.UUID, session: SessionDep) -> TokenRead:
    """Show one token's record."""
    return await TokenService(session).get(token_id)


@router.delete(
    "/{token_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(ADMIN)],
    responses=problem_responses(404),
)
async def revoke_token(token_id: uuid.UUID, session: SessionDep) -> Response:
    """Revoke a token at once; its record stays for the audit trail."""
    await TokenService(session).revoke(token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
