"""Waking waiting claims when work arrives: PostgreSQL LISTEN/NOTIFY across replicas, in-process on SQLite.

A claim long-polls; it re-checks the queue when woken, and at least every `claim_poll_seconds` anyway (work
that becomes due after a backoff announces itself to nobody).
"""

import asyncio
import contextlib
import logging

import psycopg
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings

CHANNEL = "corral_jobs"
log = logging.getLogger("corral.queue")


class QueueSignal:
    """A broadcast: every waiter holding the current ticket wakes on the next `wake()`."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        return self._event

    def wake(self) -> None:
        current, self._event = self._event, asyncio.Event()
        current.set()

    async def wait(self, ticket: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ticket.wait(), timeout)

    def wake_after_commit(self, session: AsyncSession) -> None:
        # Waking before the commit would send claimers to a queue that does not show the new rows yet.
        event.listen(session.sync_session, "after_commit", lambda _session: self.wake(), once=True)

    async def listen(self, settings: Settings) -> None:
        """Relay NOTIFYs from every replica to this process's waiters, reconnecting after failures."""
        url = settings.database.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 1.0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    delay = 1.0
                    self.wake()  # anything announced while we were not listening
                    async for _notify in connection.notifies():
                        self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("queue listener: %s; reconnecting in %.0f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)


async def announce_work(session: AsyncSession, signal: QueueSignal) -> None:
    """Tell waiting claims, here and in every replica, that jobs became claimable once this commits."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_notify(CHANNEL, "")))  # delivered at commit, dropped on rollback
    signal.wake_after_commit(session)
