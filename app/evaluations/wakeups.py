"""Waking waiting claims when work arrives: PostgreSQL LISTEN/NOTIFY across replicas, in-process on SQLite.

A claim long-polls; it re-checks the queue when woken, and at least every `claim_poll_seconds` anyway (work
that becomes due after a backoff announces itself to nobody).
"""

import asyncio
import collections
import contextlib

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.listener import Listener

CHANNEL = "corral_jobs"


class QueueSignal:
    """Wakes waiting claims: as many as there are new jobs, times a margin, not all of them. Waking every
    long-poll for one job would have each of them run a claim transaction for nothing (a thundering herd);
    a runner left asleep looks again within `claim_poll_seconds` anyway."""

    MARGIN = 2  # a woken runner may not be able to hold the job

    def __init__(self) -> None:
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def ticket(self) -> asyncio.Future[None]:
        """Taken before looking at the queue, so that a wake-up during the look is not lost."""
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(ticket)
        return ticket

    def wake(self, jobs: int | None = None) -> None:
        """Wake the longest-waiting claims, `jobs` x MARGIN of them (all when the count is unknown)."""
        budget = len(self._waiters) if not jobs else jobs * self.MARGIN
        while budget > 0 and self._waiters:
            ticket = self._waiters.popleft()
            if not ticket.done():
                ticket.set_result(None)
                budget -= 1

    async def wait(self, ticket: asyncio.Future[None], timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(ticket), timeout)
        except TimeoutError:
            self.discard(ticket)

    def discard(self, ticket: asyncio.Future[None]) -> None:
        """A ticket no longer waited on (its claim found work, or its wait ran out) must not use up a wake."""
        ticket.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(ticket)

    def wake_after_commit(self, session: AsyncSession, jobs: int) -> None:
        # Waking before the commit would send claimers to a queue that does not show the new rows yet.
        event.listen(session.sync_session, "after_commit", lambda _session: self.wake(jobs), once=True)

    def subscribe(self, listener: Listener) -> None:
        """Wake this process's waiting claims on every replica's NOTIFY; on (re)connect, wake them all: what
        was announced while the listener was away is lost."""
        listener.subscribe(CHANNEL, lambda payload: self.wake(int(payload) if payload.isdigit() else None), self.wake)


async def announce_work(session: AsyncSession, signal: QueueSignal, jobs: int) -> None:
    """Tell waiting claims, in every replica, that `jobs` jobs became claimable once this commits."""
    if session.get_bind().dialect.name == "postgresql":
        # Delivered at commit (dropped on rollback) to every listener, this process's own included.
        await session.execute(select(func.pg_notify(CHANNEL, str(jobs))))
    else:
        signal.wake_after_commit(session, jobs)
