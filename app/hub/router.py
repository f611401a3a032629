import time
from collections.abc import Awaitable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from corral.db import SessionDep, release_connection
from corral.hub.client import CommitRecord, HubClient, HubError
from corral.hub.errors import hub_problem, refuse_when_the_hub_is_full
from corral.hub.schemas import HubCommit, SyncResult
from corral.hub.sync import HubSync
from corral.registry.models.router import RepoIdDep
from corral.registry.models.schemas import ModelCreate, ModelRead
from corral.registry.models.service import ModelService
from corral.registry.repository import require_model
from corral.schemas import COMMON_ERRORS, problem_responses
from corral.security.access import PUBLISH, READ_OUTBOUND
from corral.state import state_of

router = APIRouter(prefix="/v1/models/{owner}/{name}", tags=["hub"], responses=COMMON_ERRORS)
# POST /v1/models lives here, beside the models' own routes in the API, because registering from the Hub reads it.
registration = APIRouter(prefix="/v1/models", tags=["models"], responses=COMMON_ERRORS)
HUB_ERRORS = problem_responses(404, 409, 502, 503)
Revision = Annotated[
    str, Query(min_length=1, max_length=200, pattern=r"^[\w./-]+$", description="Branch, tag or commit sha on the Hub.")
]


async def hub_client(request: Request) -> HubClient:
    client: HubClient = state_of(request).part(HubClient)
    return client


async def answered(sync: Awaitable[SyncResult]) -> SyncResult:
    """A sync's result, or the Hub's failure as the problem a client is answered with."""
    try:
        return await sync
    except HubError as error:
        raise hub_problem(error) from None


@router.post("/sync", dependencies=[Depends(PUBLISH)], responses=HUB_ERRORS)
async def sync_model(
    model: RepoIdDep,
    session: SessionDep,
    request: Request,
    revision: Revision = "main",
) -> SyncResult:
    """Sync a registered model from the Hub: record the commit as a revision, move the branch alias."""
    hub = HubSync.of(state_of(request))
    refuse_when_the_hub_is_full(hub.client)
    await require_model(session, model)
    await release_connection(session)  # no connection held while the Hub takes its time
    return await answered(hub.sync(model, revision, deadline_seconds=hub.settings.hub_request_deadline_seconds))


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
            deadline = state_of(request).settings.hub_request_deadline_seconds
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


@registration.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(PUBLISH)],
    responses=problem_responses(404, 409, 415, 502, 503),
)
async def create_model(
    body: ModelCreate,
    session: SessionDep,
    request: Request,
    revision: Annotated[
        str,
        Query(
            min_length=1,
            max_length=200,
            pattern=r"^[\w./-]+$",
            description="Hub revision to sync when registering from the Hub.",
        ),
    ] = "main",
) -> ModelRead:
    """Register a model by its Hub repo id; with no `kind`, everything else is read from the Hub."""
    if body.kind is not None:
        return await ModelService(session).create(body)
    # Registration from the Hub: read first (nothing is written if the Hub fails), then create and sync. The
    # token check may have read the database: its connection goes back before the Hub is asked.
    hub = HubSync.of(state_of(request))
    refuse_when_the_hub_is_full(hub.client)
    await release_connection(session)
    extra = body.model_dump(exclude_unset=True, exclude={"repo_id", "kind"})
    deadline = hub.settings.hub_request_deadline_seconds
    await answered(hub.sync(body.repo_id, revision, register=extra, deadline_seconds=deadline))
    return await ModelService(session).get(body.repo_id)
