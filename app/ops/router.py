"""Liveness, readiness and metrics, for load balancers, orchestrators and Prometheus."""

import logging

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.db import SessionDep
from app.errors import ServiceUnavailable
from app.evaluations import repository
from app.metrics import CONTENT_TYPE, Metrics
from app.migrate import current_revision
from app.ops.schemas import Health, Readiness
from app.runners.service import to_read
from app.schemas import problem_responses
from app.security import OPEN

router = APIRouter(tags=["operations"], dependencies=[Depends(OPEN)])
log = logging.getLogger("corral.ops")


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: the process answers (touches nothing else)."""
    return Health()


@router.get("/readyz", responses=problem_responses(503))
async def readyz(request: Request) -> Readiness:
    """Readiness: the database answers and its schema is at this build's head."""
    head: str = request.app.state.schema_head
    try:
        async with request.app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            revision = await current_revision(connection)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        raise ServiceUnavailable("The database is unreachable.") from None
    if revision != head:
        raise ServiceUnavailable(
            f"The database schema is at {revision or 'nothing'}, this build needs {head}: run `corral db upgrade`."
        )
    return Readiness(database=request.app.state.settings.database.get_backend_name(), schema_revision=revision)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition.", "content": {CONTENT_TYPE: {}}}},
)
async def metrics(request: Request, session: SessionDep) -> Response:
    """Prometheus metrics: requests and latency by route, queue depth, runners by state, claim wait."""
    collected: Metrics = request.app.state.metrics
    for state, count in (await repository.jobs_by_state(session)).items():
        collected.jobs.labels(state).set(count)
    collected.runners.clear()
    for runner in await repository.registered_runners(session):
        collected.runners.labels(runner.state.value, str(to_read(runner).online).lower()).inc()
    return Response(collected.render(), media_type=CONTENT_TYPE)
