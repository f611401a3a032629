import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.db import SessionDep, release_connection
from app.hub.client import CommitRecord, HubClient, HubError
from app.hub.errors import hub_problem, refuse_when_the_hub_is_full
from app.hub.schemas import HubCommit, SyncResult
from app.hub.sync import sync_in_request
from app.registry.models.router import RepoIdDep
from app.registry.repository import require_model
from app.schemas import COMMON_ERRORS, problem_responses
from app.security import PUBLISH, READ_OUTBOUND

router = APIRouter(prefix="/v1/models/{owner}/{name}", tags=["hub"], responses=COMMON_ERRORS)
HUB_ERRORS = problem_responses(404, 409, 502, 503)
Revision = Annotated[
    str, Query(min_length=1, max_length=200, pattern=r"^[\w./-]+$", description="Branch, tag or commit sha on the Hub.")
]


async def hub_client(request: Request) -> HubClient:
    client: HubClient = request.app.state.hub_client
    return client


@router.post("/sync", dependencies=[Depends(PUBLISH)], responses=HUB_ERRORS)
async def sync_model(
    model: RepoIdDep,
    session: SessionDep,
    request: Request,
    revision: Revision = "main",
) -> SyncResult:
    """Sync a registered model from the Hub: record the commit as a revision, move the branch alias."""
    refuse_when_the_hub_is_full(request.app.state.hub_client)
    await require_model(session, model)
    return await sync_in_request(session, request, model, revision)


@router.get("/hub/commits", dependencies=[Depends(READ_OUTBOUND)], responses={**HUB_ERRORS, **problem_responses(401)})
async def list_hub_commits(
    model: RepoIdDep,
    session: SessionDep,
    request: Request,
    client: Annotated[HubClient, Depends(hub_client)],
    revision: Revision = "main",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[HubCommit]:
    """The newest commits of a registered model's Hub repo, to choose a revision to record (needs a token)."""
    commits = cached_commits(client, model, revision, limit)
    if commits is None:
        refuse_when_the_hub_is_full(client)
        await require_model(session, model)
        await release_connection(session)  # no connection held while the Hub takes its time
        try:
            deadline = request.app.state.settings.hub_request_deadline_seconds
            commits = await fetch_commits(client, model, revision, limit, deadline)
        except HubError as error:
            raise hub_problem(error) from None
    return [HubCommit.model_validate(commit) for commit in commits]


# The Hub is called with the server's own token: the same question within a few seconds gets the same answer
# from here, however many callers ask it (bounded, so that a caller cycling through names cannot grow it).
COMMITS_CACHE_SECONDS = 30.0
COMMITS_CACHE_ENTRIES = 512
_commits: dict[tuple[int, str, str, int], tuple[float, list[CommitRecord]]] = {}


def cached_commits(client: HubClient, repo_id: str, revision: str, limit: int) -> list[CommitRecord] | None:
    cached = _commits.get((id(client), repo_id, revision, limit))
    return cached[1] if cached is not None and cached[0] > time.monotonic() else None


async def fetch_commits(
    client: HubClient, repo_id: str, revision: str, limit: int, deadline_seconds: float
) -> list[CommitRecord]:
    key = (id(client), repo_id, revision, limit)
    now = time.monotonic()
    commits = await client.ask(client.commits, repo_id, revision, limit, deadline_seconds=deadline_seconds)
    if len(_commits) >= COMMITS_CACHE_ENTRIES:
        _commits.pop(next(iter(_commits)))  # the oldest entry
    _commits[key] = (now + COMMITS_CACHE_SECONDS, commits)
    return commits
