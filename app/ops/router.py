"""Liveness, readiness and metrics, for load balancers, orchestrators and Prometheus."""

import hashlib
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.config import Settings
from corral.db import SessionDep
from corral.errors import UNAVAILABLE, ServiceUnavailable, database_unavailable
from corral.evaluations import repository
from corral.metrics import CONTENT_TYPE, Metrics
from corral.migrate import VERSION_TABLE, current_revision, head_revision
from corral.ops.schemas import Health, Readiness
from corral.runners import repository as runners_repository
from corral.runners.service import to_read
from corral.schemas import problem_responses
from corral.security.access import OPEN_ROUTE, READ
from corral.state import state_of
from corral.wire.enums import RunnerState

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
    """Readiness: the database answers, takes a write, and its schema is at this build's head."""
    head = head_revision()  # read once per process, at the first readiness check
    settings: Settings = state_of(request).settings
    sqlite = settings.is_sqlite
    if settings.sqlite_file is not None and _free_bytes(settings.sqlite_file.parent) < FREE_SPACE_FLOOR:
        # Caught before a write fails: SQLite may still rewrite its WAL in place when the disk has no room left.
        detail, seconds = UNAVAILABLE["disk full"]
        raise ServiceUnavailable(detail, retry_after=seconds, reason="disk full")
    try:
        async with state_of(request).engine.connect() as connection:
            revision = await current_revision(connection)
            busy_ms = round(settings.sqlite_busy_timeout_seconds * 1000)
            writes = await _write_probe(connection, sqlite=sqlite, busy_ms=busy_ms)
    except (SQLAlchemyError, OSError) as exc:
        reason = database_unavailable(exc) or "unavailable"
        log.warning("readiness: database %s: %s", reason, type(exc).__name__)
        detail, seconds = UNAVAILABLE[reason]
        raise ServiceUnavailable(detail, retry_after=seconds, reason=reason) from None
    if revision != head:
        raise ServiceUnavailable(
            f"The database schema is at {revision or 'nothing'}, this build needs {head}: run `corral db upgrade`."
        )
    return Readiness(database=settings.database.get_backend_name(), schema_revision=revision, writes=writes)


PROBE_WAIT_MS = 1000
FREE_SPACE_FLOOR = 2**20  # the embedded database's volume with less free is full: a write may need more


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:  # gone or unreadable: the probe write says what is wrong
        return FREE_SPACE_FLOOR


async def _write_probe(connection: AsyncConnection, *, sqlite: bool, busy_ms: int) -> Literal["ok", "busy"]:
    """A write that changes nothing, committed: a full disk or a read-only database fails it, as they fail every
    write of the service (reads alone would pass). A write lock held by another writer is no failure: "busy"."""
    if sqlite:  # wait briefly for the one write lock, then give the connection its usual patience back
        await connection.execute(text(f"PRAGMA busy_timeout={PROBE_WAIT_MS:d}"))
    else:  # for this transaction only: the pooled connection keeps its own settings
        await connection.execute(text(f"SET LOCAL lock_timeout = {PROBE_WAIT_MS:d}"))
    try:
        await connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = version_num"))
        await connection.commit()
    except OperationalError as exc:
        await connection.rollback()
        if database_unavailable(exc) != "busy" and "lock timeout" not in str(exc.orig):
            raise
        return "busy"
    finally:
        if sqlite:
            await connection.execute(text(f"PRAGMA busy_timeout={busy_ms:d}"))
    return "ok"


@router.get(
    "/metrics",
    # A read like any other: public only where public reads are on (queue depth and runner counts say much).
    dependencies=[Depends(READ)],
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition.", "content": {CONTENT_TYPE: {}}}},
)
async def metrics(request: Request, session: SessionDep) -> Response:
    """Prometheus metrics: requests and latency by route, queue depth, runners by state, claim wait."""
    collected: Metrics = state_of(request).metrics
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
