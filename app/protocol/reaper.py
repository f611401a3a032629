"""The reaper: expires lapsed leases on a timer. Every replica may run it; row locks keep them apart."""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from corral.clock import SYSTEM_CLOCK, Clock
from corral.config import Settings
from corral.evaluations.wakeups import QueueSignal
from corral.protocol.service import ProtocolService

log = logging.getLogger("corral.queue")


async def reap_once(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    signal: QueueSignal,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    async with sessionmaker() as session:
        expired = await ProtocolService(session, settings, signal, clock).expire_leases()
        await session.commit()
    if expired:
        log.info("reaper: %d lapsed attempt(s) expired", expired)
    return expired


async def reap_forever(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    signal: QueueSignal,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    while True:
        await asyncio.sleep(settings.reaper_interval_seconds)
        try:
            while await reap_once(sessionmaker, settings, signal, clock) >= 100:
                pass  # a full batch: more may be waiting
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reaper pass failed; retrying at the next interval")
