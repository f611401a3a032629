"""Hub sync outside a request's unit of work: the lease that keeps replicas apart, and the background pass."""

import asyncio
import logging
from collections.abc import Sequence

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from corral.config import Settings
from corral.db import create_engine, create_sessionmaker, release_connection
from corral.errors import Conflict
from corral.hub import repository
from corral.hub.client import HubClient, HubError
from corral.hub.errors import hub_problem
from corral.hub.schemas import SyncResult
from corral.hub.service import LEASE, HubSyncService, fetch_in_thread
from corral.registry.repository import model_by_repo_id
from corral.tables.base import utcnow

log = logging.getLogger("corral.hub")


async def claim(sessionmaker: async_sessionmaker[AsyncSession], repo_id: str) -> bool:
    """Take the model's sync lease in its own committed transaction; False if another sync holds it.

    A conditional UPDATE is atomic on PostgreSQL and SQLite alike: of two replicas, exactly one updates the row.
    """
    async with sessionmaker() as session:
        taken = await repository.take_lease(session, repo_id, utcnow(), LEASE)
        await session.commit()
        return taken


async def release(sessionmaker: async_sessionmaker[AsyncSession], repo_id: str) -> None:
    """Give the lease back after an unexpected failure, so the next sync need not wait for it to lapse."""
    async with sessionmaker() as session:
        await repository.drop_lease(session, repo_id)
        await session.commit()


async def record_failure(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, repo_id: str, error: HubError
) -> None:
    async with sessionmaker() as session:
        await HubSyncService(session, settings).record_failure(repo_id, error)
        await session.commit()


async def sync_one(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, client: HubClient, repo_id: str, revision: str
) -> SyncResult | HubError:
    """Fetch (no writes), then apply in one unit of work. The caller holds the lease."""
    try:
        fetch = await fetch_in_thread(client, repo_id, revision)
    except HubError as error:
        await record_failure(sessionmaker, settings, repo_id, error)
        return error
    try:
        async with sessionmaker() as session:
            result = await HubSyncService(session, settings).apply(repo_id, fetch, revision=revision)
            await session.commit()
            return result
    except Exception:
        await release(sessionmaker, repo_id)
        raise


async def due_models(sessionmaker: async_sessionmaker[AsyncSession], limit: int) -> Sequence[tuple[str, str]]:
    """Models synced before (opted in) whose next sync time has come and whose lease is free."""
    async with sessionmaker() as session:
        return await repository.due(session, utcnow(), limit)


async def sync_due_models(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, client: HubClient, *, limit: int = 500
) -> list[SyncResult | HubError]:
    """One background pass: claim what is due, fetch with bounded concurrency, apply each on its own."""
    gate = asyncio.Semaphore(settings.hub_sync_concurrency)

    async def run(repo_id: str, ref: str) -> SyncResult | HubError | None:
        async with gate:
            if not await claim(sessionmaker, repo_id):
                return None  # another replica has it
            return await sync_one(sessionmaker, settings, client, repo_id, ref)

    outcomes = await asyncio.gather(*(run(repo_id, ref) for repo_id, ref in await due_models(sessionmaker, limit)))
    return [outcome for outcome in outcomes if outcome is not None]


async def background_sync(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, client: HubClient
) -> None:
    """Runs for the life of the server (every replica may run it; the lease keeps them apart)."""
    tick = min(settings.hub_sync_interval_seconds, 60)
    while True:
        await asyncio.sleep(tick)
        try:
            outcomes = await sync_due_models(sessionmaker, settings, client)
        except Exception:  # a pass must never end the loop
            log.exception("hub: background sync pass failed")
            continue
        if outcomes:
            failed = sum(isinstance(outcome, HubError) for outcome in outcomes)
            log.info("hub: background pass synced %d models, %d failed", len(outcomes) - failed, failed)


async def sync_from_hub(settings: Settings, repo_id: str, revision: str) -> SyncResult:
    """The command line's sync: register from the Hub if new, else sync under the lease. Raises HubError."""
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    client = HubClient(settings)
    try:
        async with sessionmaker() as session:
            known = await model_by_repo_id(session, repo_id) is not None
        if known:
            if not await claim(sessionmaker, repo_id):
                raise Conflict(f"A sync of {repo_id} is already running.")
            outcome = await sync_one(sessionmaker, settings, client, repo_id, revision)
            if isinstance(outcome, HubError):
                raise outcome
            return outcome
        fetch = await fetch_in_thread(client, repo_id, revision)
        async with sessionmaker() as session:
            result = await HubSyncService(session, settings).register(repo_id, fetch, revision=revision, extra={})
            await session.commit()
            return result
    finally:
        await engine.dispose()


async def sync_in_request(session: AsyncSession, request: Request, repo_id: str, revision: str) -> SyncResult:
    """Sync a registered model inside a request: lease, fetch (no writes held), apply in the request's unit."""
    sessionmaker = request.app.state.sessionmaker
    await release_connection(session)  # no connection held while the Hub takes its time
    if not await claim(sessionmaker, repo_id):
        raise Conflict(f"A sync of {repo_id} is already running.")
    try:
        settings: Settings = request.app.state.settings
        fetch = await fetch_in_thread(
            request.app.state.hub_client, repo_id, revision, deadline_seconds=settings.hub_request_deadline_seconds
        )
    except HubError as error:
        await record_failure(sessionmaker, request.app.state.settings, repo_id, error)
        raise hub_problem(error) from None
    try:
        return await HubSyncService(session, request.app.state.settings).apply(repo_id, fetch, revision=revision)
    except Exception:
        await session.rollback()  # first, so that SQLite's write lock is free for the release
        await release(sessionmaker, repo_id)
        raise


async def resolve_ref(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, client: HubClient, repo_id: str, ref: str
) -> str:
    """A branch or tag's commit, through a sync in its own committed unit of work: the revision is recorded
    whatever the caller does next, and the lease is always given back. A ref the Hub does not know changes
    nothing (it says nothing about the model's own sync)."""
    if not await claim(sessionmaker, repo_id):
        raise Conflict(f"A sync of {repo_id} is already running.")
    try:
        fetch = await fetch_in_thread(client, repo_id, ref, deadline_seconds=settings.hub_request_deadline_seconds)
    except HubError as error:
        await release(sessionmaker, repo_id)
        raise hub_problem(error) from None
    try:
        async with sessionmaker() as session:
            result = await HubSyncService(session, settings).apply(repo_id, fetch, revision=ref)
            await session.commit()
            return result.sha
    except Exception:
        await release(sessionmaker, repo_id)
        raise
