"""Liveness, readiness and metrics, for load balancers, orchestrators and Prometheus."""

import hashlib
import logging
from collections import Counter

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.db import SessionDep
from app.errors import ServiceUnavailable
from app.evaluations import repository
from app.metrics import CONTENT_TYPE, Metrics
from app.migrate import current_revision, head_revision
from app.ops.schemas import Health, Readiness
from app.runners import repository as runners_repository
from app.runners.service import to_read
from app.schemas import problem_responses
from app.security import OPEN_ROUTE, READ
from app.tables import RunnerState

router = APIRouter(tags=["operations"])
log = logging.getLogger("corral.ops")


HEALTHY = Health().model_dump_json().encode()  # the same answer every time: serialized once
HEALTHY_ETAG = '"' + hashlib.sha256(HEALTHY).hexdigest()[:32] + '"'


@router.get("/healthz", response_model=Health, **OPEN_ROUTE)
async def healthz() -> Response:
    """Liveness: the process answers (touches nothing else)."""
    return Response(HEALTHY, media_type="application/json", headers={"ETag": HEALTHY_ETAG, "Cache-Control": "no-cache"})


@router.get("/readyz", responses=problem_responses(503), **OPEN_ROUTE)
async def readyz(request: Request) -> Readiness:
    """Readiness: the database answers and its schema is at this build's head."""
    head = head_revision()  # read once per process, at the first readiness check
    try:
        async with request.app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            revision = await current_revision(connection)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        raise ServiceUnavailable("The database is unreachable; retry shortly.") from None
    if revision != head:
        raise ServiceUnavailable(
            f"The database schema is at {revision or 'nothing'}, this build needs {head}: run `corral db upgrade`."
        )
    return Readiness(database=request.app.state.settings.database.get_backend_name(), schema_revision=revision)


@router.get(
    "/metrics",
    # A read like any other: public only where public reads are on (queue depth and runner counts say much).
    dependencies=[Depends(READ)],
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition.", "content": {CONTENT_TYPE: {}}}},
)
async def metrics(request: Request, session: SessionDep) -> Response:
    """Prometheus metrics: requests and latency by route, queue depth, runners by state, claim wait."""
    collected: Metrics = request.app.state.metrics
    try:
        jobs = await repository.jobs_by_state(session)
        runners = Counter(
            (runner.state.value, str(to_read(runner).online).lower())
            for runner in await runners_repository.registered_runners(session)
        )
    except (SQLAlchemyError, OSError) as exc:  # the request metrics are still worth serving
        log.warning("metrics: queue gauges skipped, database unreachable: %s", type(exc).__name__)
        return Response(collected.render(), media_type=CONTENT_TYPE)
    # Set with no await in between, so that concurrent scrapes cannot interleave their updates.
    for state, count in jobs.items():
        collected.jobs.labels(state).set(count)
    # Every combination is set (zero where none): a gauge another worker last set must not keep a stale count.
    for state in RunnerState:
        for online in ("true", "false"):
            collected.runners.labels(state.value, online).set(runners.get((state.value, online), 0))
    return Response(collected.render(), media_type=CONTENT_TYPE)
