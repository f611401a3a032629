"""Runner-side endpoints: a runner's own token, and for attempt writes the lease token of its claim."""

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from corral.db import SessionDep
from corral.documents import AcceleratorRecord
from corral.errors import Forbidden
from corral.evaluations.wakeups import QueueSignal
from corral.protocol.service import ProtocolService, claim_once
from corral.schemas import COMMON_ERRORS, problem_responses
from corral.security.access import RUNNER, Principal
from corral.state import state_of
from corral.wire.protocol import (
    LEASE_HEADER,
    ClaimedJob,
    ClaimRequest,
    Failure,
    FailureReply,
    Heartbeat,
    HeartbeatReply,
    LogAppended,
    Release,
    ResultStored,
    ResultUpload,
)

router = APIRouter(prefix="/v1/runner", tags=["runner protocol"], responses=COMMON_ERRORS)
LeaseToken = Annotated[
    str, Header(alias=LEASE_HEADER, min_length=1, max_length=100, description="The lease token of the claim.")
]
ATTEMPT_ERRORS = problem_responses(404, 409)


async def _runner_id(principal: Annotated[Principal | None, Depends(RUNNER)]) -> uuid.UUID:
    if principal is None or principal.runner_id is None:  # RUNNER admits only runner tokens
        raise Forbidden("Only a runner's own token can do this.")
    return principal.runner_id


RunnerId = Annotated[uuid.UUID, Depends(_runner_id)]


async def _service(request: Request, session: SessionDep) -> ProtocolService:
    state = state_of(request)
    return ProtocolService(session, state.settings, state.part(QueueSignal), state.clock)


ServiceDep = Annotated[ProtocolService, Depends(_service)]


@router.post(
    "/jobs/claim",
    status_code=status.HTTP_201_CREATED,
    responses={204: {"description": "No job for this runner within the wait."}, **problem_responses(404)},
)
async def claim_job(
    request: Request,
    response: Response,
    session: SessionDep,
    runner_id: RunnerId,
    wait: Annotated[
        float, Query(ge=0, le=120, description="Seconds to long-poll for work (capped by the server).")
    ] = 0,
    body: ClaimRequest | None = None,
) -> ClaimedJob | None:
    """Claim the next job this runner can hold, waiting up to `wait` seconds for one."""
    settings = state_of(request).settings
    signal = state_of(request).part(QueueSignal)
    sessionmaker = state_of(request).sessionmaker
    # A long-poll must not hold a transaction (or a pooled connection) while it waits: each try is its own
    # unit of work, and the request's own session (used to authenticate) is committed first.
    await session.commit()
    deadline = time.monotonic() + min(wait, settings.claim_wait_max_seconds)
    free = (
        [
            AcceleratorRecord(kind=item.kind, memory_bytes=item.memory_bytes, count=item.count, nodes=item.nodes)
            for item in body.free
        ]
        if body and body.free
        else None
    )
    ticket = None
    try:
        while True:
            ticket = signal.ticket()  # taken before the try, so a wake-up during it is not lost
            claim = await claim_once(sessionmaker, settings, signal, runner_id, state_of(request).clock, free)
            if claim is not None:
                state_of(request).metrics.claim_wait.observe(claim.waited_seconds)
                return claim.job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                response.status_code = status.HTTP_204_NO_CONTENT
                return None
            await signal.wait(ticket, min(remaining, settings.claim_poll_seconds))
    finally:
        if ticket is not None:
            signal.discard(ticket)  # also when the client went away mid-wait


@router.post("/attempts/{attempt_id:uuid}/heartbeat", responses=ATTEMPT_ERRORS)
async def heartbeat(
    attempt_id: uuid.UUID, body: Heartbeat, service: ServiceDep, runner_id: RunnerId, lease_token: LeaseToken
) -> HeartbeatReply:
    """Extend the lease and report progress; the answer says whether to stop (cancel)."""
    return await service.heartbeat(runner_id, attempt_id, lease_token, body)


@router.patch(
    "/attempts/{attempt_id:uuid}/log",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(404, 409, 416),
    openapi_extra={
        "requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}},
        "parameters": [
            {
                "name": "Content-Range",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "pattern": r"^(bytes )?\d+-\d+(/(\d+|\*))?$"},
                "description": "`bytes START-END` (inclusive) of the appended bytes; START must be the log's size.",
            }
        ],
    },
)
async def append_log(
    attempt_id: uuid.UUID,
    request: Request,
    response: Response,
    service: ServiceDep,
    runner_id: RunnerId,
    lease_token: LeaseToken,
) -> LogAppended:
    """Append to the attempt's log at the offset Content-Range names (416 with the stored size otherwise)."""
    size = await service.append_log(
        runner_id, attempt_id, lease_token, request.headers.get("content-range"), await request.body()
    )
    response.headers["Range"] = f"0-{size}"
    return LogAppended(log_bytes=size)


@router.put(
    "/attempts/{attempt_id:uuid}/result",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The same result was stored already.", "model": ResultStored}, **ATTEMPT_ERRORS},
)
async def upload_result(
    attempt_id: uuid.UUID,
    body: ResultUpload,
    response: Response,
    service: ServiceDep,
    runner_id: RunnerId,
    lease_token: LeaseToken,
) -> ResultStored:
    """Upload the job's lm-eval results (and samples); it ends the attempt. Idempotent by content hash."""
    stored, created = await service.upload_result(runner_id, attempt_id, lease_token, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return stored


@router.post("/attempts/{attempt_id:uuid}/fail", responses=ATTEMPT_ERRORS)
async def fail_attempt(
    attempt_id: uuid.UUID, body: Failure, service: ServiceDep, runner_id: RunnerId, lease_token: LeaseToken
) -> FailureReply:
    """Report a failed attempt: infrastructure and out-of-memory failures retry, model and harness errors fail."""
    return await service.fail(runner_id, attempt_id, lease_token, body)


@router.post("/attempts/{attempt_id:uuid}/release", responses=ATTEMPT_ERRORS)
async def release_attempt(
    attempt_id: uuid.UUID, body: Release, service: ServiceDep, runner_id: RunnerId, lease_token: LeaseToken
) -> FailureReply:
    """Hand the job back unfinished (the runner is stopping): it is queued again at once, no failure counted."""
    return await service.release(runner_id, attempt_id, lease_token, body)
