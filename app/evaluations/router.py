import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from corral.db import SessionDep
from corral.errors import NotFound
from corral.evaluations import repository
from corral.evaluations.schemas import EvaluationCreate, EvaluationRead, EvaluationSort, EvaluationSummary, QueueView
from corral.evaluations.service import EvaluationService
from corral.evaluations.wakeups import QueueSignal
from corral.fields import RepoId, Slug
from corral.hub.sync import HubSync
from corral.pagination import PageDep
from corral.schemas import COMMON_ERRORS, Page, problem_responses
from corral.security.access import PUBLISH, READ, Principal
from corral.state import state_of
from corral.tables import JobAttempt
from corral.wire.enums import EvaluationState

router = APIRouter(prefix="/v1", tags=["evaluations"], responses=COMMON_ERRORS)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes retries safe: the same key and body answer with the evaluation first created.",
    ),
]


async def _service(request: Request, session: SessionDep) -> EvaluationService:
    return EvaluationService(session, state_of(request).settings, state_of(request).clock)


ServiceDep = Annotated[EvaluationService, Depends(_service)]


@router.post(
    "/evaluations",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "description": "An identical evaluation exists (or the Idempotency-Key was seen): it is returned.",
            "model": EvaluationRead,
        },
        **problem_responses(409, 415, 502, 503),
    },
)
async def request_evaluation(
    body: EvaluationCreate,
    request: Request,
    response: Response,
    service: ServiceDep,
    principal: Annotated[Principal | None, Depends(PUBLISH)],
    idempotency_key: IdempotencyKey = None,
) -> EvaluationRead:
    """Request an evaluation of a model revision on a suite (deduplicated by config hash)."""
    assert principal is not None  # PUBLISH admits no anonymous caller
    evaluation, created = await service.request(
        body,
        principal=principal,
        idempotency_key=idempotency_key,
        hub=HubSync.of(state_of(request)),
        signal=state_of(request).part(QueueSignal),
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/evaluations/{evaluation.id}"
    return evaluation


@router.get("/evaluations", dependencies=[Depends(READ)], responses=problem_responses(304))
async def list_evaluations(
    service: ServiceDep,
    page: PageDep,
    model: Annotated[RepoId | None, Query()] = None,
    suite: Annotated[Slug | None, Query()] = None,
    state: Annotated[EvaluationState | None, Query()] = None,
    sort: Annotated[EvaluationSort, Query()] = "-created_at",
) -> Page[EvaluationSummary]:
    """List evaluations, newest first, filtered by model, suite or state."""
    items, cursor = await service.views.list_page(model=model, suite=suite, state=state, sort=sort, page=page)
    return Page(items=items, next_cursor=cursor)


@router.get("/evaluations/{evaluation_id:uuid}", dependencies=[Depends(READ)], responses=problem_responses(304, 404))
async def get_evaluation(evaluation_id: uuid.UUID, service: ServiceDep) -> EvaluationRead:
    """Show an evaluation: requirements, capable runners, jobs, attempts, timings and log tails."""
    return await service.views.read(evaluation_id)


@router.post("/evaluations/{evaluation_id:uuid}/cancel", responses=problem_responses(404, 409))
async def cancel_evaluation(
    evaluation_id: uuid.UUID, service: ServiceDep, principal: Annotated[Principal | None, Depends(PUBLISH)]
) -> EvaluationRead:
    """Cancel an evaluation: queued jobs at once, running ones at their next heartbeat."""
    assert principal is not None
    return await service.cancel(evaluation_id, principal)


@router.get(
    "/attempts/{attempt_id:uuid}/log",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses={
        200: {"description": "The attempt's whole log.", "content": {"text/plain": {}}},
        **problem_responses(304, 404),
    },
)
async def get_attempt_log(
    attempt_id: uuid.UUID,
    session: SessionDep,
    offset: Annotated[
        int, Query(ge=0, description="Bytes already read: the log from there on (`logs --follow` polls this way).")
    ] = 0,
) -> Response:
    """An attempt's log as the runner sent it, whole or from a byte offset."""
    if await session.get(JobAttempt, attempt_id) is None:
        raise NotFound(f"No attempt with id {attempt_id}.")
    log = await repository.full_log(session, attempt_id)
    return Response(log[offset:], media_type="text/plain; charset=utf-8")


@router.get("/queue", dependencies=[Depends(READ)], responses=problem_responses(304))
async def get_queue(service: ServiceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> QueueView:
    """The queue in claim order: each job's position and what it waits for."""
    return await service.views.queue(limit=limit)
