from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from corral.db import SessionDep
from corral.fields import AliasName, CommitSha
from corral.pagination import PageDep
from corral.registry.models.router import RepoIdDep
from corral.registry.revisions.schemas import (
    AliasRead,
    AliasSet,
    CodeTrustGrant,
    RevisionCreate,
    RevisionRead,
    RevisionSort,
)
from corral.registry.revisions.service import RevisionService
from corral.schemas import COMMON_ERRORS, Page, problem_responses
from corral.security.access import ADMIN, PUBLISH, READ, Principal
from corral.viewcache import REGISTRY, json_view

router = APIRouter(
    prefix="/v1/models/{owner}/{name}", tags=["revisions"], responses={**COMMON_ERRORS, **problem_responses(404)}
)

RevisionRef = Annotated[
    str, Path(pattern=r"^([0-9a-f]{40}|[a-z][a-z0-9_-]{0,38})$", description="A full commit sha, or an alias name.")
]


@router.get(
    "/revisions", dependencies=[Depends(READ)], responses=problem_responses(304, 400), response_model=Page[RevisionRead]
)
async def list_revisions(
    request: Request,
    model: RepoIdDep,
    session: SessionDep,
    page: PageDep,
    sort: Annotated[RevisionSort, Query()] = "-created_at",
) -> Response:
    """List a model's recorded revisions (commit-pinned snapshots)."""

    async def build() -> Page[RevisionRead]:
        items, cursor = await RevisionService(session).list_page(model, sort=sort, page=page)
        return Page(items=items, next_cursor=cursor)

    return await json_view(request, REGISTRY, build)


@router.post(
    "/revisions",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(PUBLISH)],
    responses={
        200: {"description": "The same revision was recorded already.", "model": RevisionRead},
        **problem_responses(409, 415),
    },
)
async def create_revision(
    model: RepoIdDep, body: RevisionCreate, session: SessionDep, response: Response
) -> RevisionRead:
    """Record an immutable revision by commit sha (201), or return the identical one already there (200)."""
    revision, created = await RevisionService(session).create(model, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return revision


@router.get(
    "/revisions/{ref}", dependencies=[Depends(READ)], responses=problem_responses(304), response_model=RevisionRead
)
async def get_revision(request: Request, model: RepoIdDep, ref: RevisionRef, session: SessionDep) -> Response:
    """Show a revision by commit sha or alias."""

    async def build() -> RevisionRead:
        return await RevisionService(session).get(model, ref)

    return await json_view(request, REGISTRY, build)


@router.put("/revisions/{sha}/code-trust", responses=problem_responses(415))
async def trust_revision_code(
    model: RepoIdDep,
    sha: Annotated[CommitSha, Path()],
    body: CodeTrustGrant,
    session: SessionDep,
    admin: Annotated[Principal | None, Depends(ADMIN)],
) -> RevisionRead:
    """Let this commit's own code run in its evaluations (trust_remote_code), on runners labelled trusted-code."""
    assert admin is not None  # ADMIN admits no anonymous caller
    return await RevisionService(session).trust_code(model, sha, body, admin.name)


@router.delete("/revisions/{sha}/code-trust", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Depends(ADMIN)])
async def distrust_revision_code(model: RepoIdDep, sha: Annotated[CommitSha, Path()], session: SessionDep) -> Response:
    """Withdraw the trust in this commit's own code: jobs claimed from now on run without it."""
    await RevisionService(session).distrust_code(model, sha)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/aliases", dependencies=[Depends(READ)], responses=problem_responses(304), response_model=list[AliasRead])
async def list_aliases(request: Request, model: RepoIdDep, session: SessionDep) -> Response:
    """List a model's aliases and the revisions they point at."""

    async def build() -> list[AliasRead]:
        return await RevisionService(session).list_aliases(model)

    return await json_view(request, REGISTRY, build)


@router.put("/aliases/{alias}", dependencies=[Depends(PUBLISH)], responses=problem_responses(415))
async def set_alias(
    model: RepoIdDep, alias: Annotated[AliasName, Path()], body: AliasSet, session: SessionDep
) -> AliasRead:
    """Point an alias at one of this model's revisions (moving it if it exists)."""
    return await RevisionService(session).set_alias(model, alias, body.sha)


@router.delete("/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Depends(PUBLISH)])
async def delete_alias(model: RepoIdDep, alias: Annotated[AliasName, Path()], session: SessionDep) -> Response:
    """Remove an alias (the revision stays)."""
    await RevisionService(session).delete_alias(model, alias)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
