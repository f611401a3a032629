"""Hub sync, one path for every caller (HubSync), outside any request's unit of work: the lease that keeps
replicas apart, the failure record, and the background pass."""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from corral.config import Settings
from corral.db import create_engine, create_sessionmaker
from corral.errors import Conflict
from corral.hub import repository
from corral.hub.client import HubClient, HubError, HubNotFound
from corral.hub.schemas import SyncResult
from corral.hub.service import LEASE, HubSyncService, fetch_in_thread
from corral.registry.repository import model_by_repo_id
from corral.state import AppState
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


@dataclass(frozen=True, slots=True)
class HubSync:
    """The one way a model is synced from the Hub, whoever asks (a route, the CLI, the background pass, a
    registration, a ref to resolve): under the model's lease, fetched with no database connection held, applied
    in a unit of work of its own, and a failure recorded on the model."""

    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    client: HubClient

    @classmethod
    def of(cls, state: AppState) -> "HubSync":
        return cls(state.sessionmaker, state.settings, state.part(HubClient))

    async def sync(
        self,
        repo_id: str,
        revision: str,
        *,
        register: dict[str, object] | None = None,
        ref: bool = False,
        deadline_seconds: float | None = None,
    ) -> SyncResult:
        """Sync a registered model, or with `register` (the stated fields) create it from the Hub. `ref`: the
        revision is a caller's branch or tag to resolve, whose absence from the Hub says nothing of the model.
        Raises Conflict when another sync holds the model, HubError when the Hub fails (recorded)."""
        if register is None and not await claim(self.sessionmaker, repo_id):
            raise Conflict(f"A sync of {repo_id} is already running.")
        # A model not yet registered has no row to lease: its unique repo id keeps two registrations apart, and
        # a failure has no model to be recorded on (the caller answers it).
        try:
            fetch = await fetch_in_thread(self.client, repo_id, revision, deadline_seconds=deadline_seconds)
        except HubError as error:
            if register is None and not (ref and isinstance(error, HubNotFound)):
                await record_failure(self.sessionmaker, self.settings, repo_id, error)
            elif register is None:
                await release(self.sessionmaker, repo_id)
            raise
        try:
            async with self.sessionmaker() as session:
                service = HubSyncService(session, self.settings)
                if register is None:
                    result = await service.apply(repo_id, fetch, revision=revision)
                else:
                    result = await service.register(repo_id, fetch, revision=revision, extra=register)
                await session.commit()
                return result
        except Exception:
            if register is None:
                await release(self.sessionmaker, repo_id)
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

    hub = HubSync(sessionmaker, settings, client)

    async def run(repo_id: str, ref: str) -> SyncResult | HubError | None:
        async with gate:
            try:
                return await hub.sync(repo_id, ref)
            except Conflict:
                return None  # another replica has it
            except HubError as error:
                return error

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
    """The command line's sync: register from the Hub if new, else sync. Raises HubError."""
    engine = create_engine(settings)
    hub = HubSync(create_sessionmaker(engine), settings, HubClient(settings))
    try:
        async with hub.sessionmaker() as session:
            known = await model_by_repo_id(session, repo_id) is not None
        return await hub.sync(repo_id, revision, register=None if known else {})
    finally:
        await engine.dispose()
