"""Calls to services outside Corral (the Hub today; commit-status providers, event receivers and OIDC key sets as
they arrive): each destination has a bulkhead, a bounded number of calls in flight, and every call a deadline.

A slow destination can then cost no more than its own slots: a request that finds them all taken is refused at
once (503 with Retry-After) instead of queueing behind calls that may never end, a caller waits no longer than
its deadline whatever the destination does, and a call still hanging at shutdown is left behind (its thread is a
daemon) instead of holding the process. Callers make these calls holding no database connection
(`app.db.release_connection`): a connection held through a call the destination never answers is one a runner's
heartbeat cannot get.
"""

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Saturated(Exception):
    """Every slot of the destination is taken: the caller is refused at once."""

    def __init__(self, destination: str, limit: int, retry_after_seconds: int) -> None:
        super().__init__(
            f"{destination} already has {limit} calls in flight from this server; retry in {retry_after_seconds} s."
        )
        self.destination = destination
        self.retry_after_seconds = retry_after_seconds


class DeadlinePassed(Exception):
    """The destination did not answer within the caller's deadline (the call may still be running)."""

    def __init__(self, destination: str, seconds: float) -> None:
        super().__init__(f"{destination} did not answer within {seconds:g} s.")
        self.destination = destination
        self.seconds = seconds


class Bulkhead:
    """One destination's calls: at most `limit` in flight (a slot is free only when its call has really ended)."""

    def __init__(self, destination: str, limit: int, *, retry_after_seconds: int = 5) -> None:
        self.destination = destination
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self._lock = threading.Lock()  # calls end in their threads
        self._in_flight = 0
        self._freed: asyncio.Event | None = None  # set when a slot frees, for patient callers

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def refuse_when_full(self) -> None:
        """Saturated now, when every slot is taken: a request checks before it does any work for a call it could
        not make (reading the database, taking a lease)."""
        if self._in_flight >= self.limit:
            raise self._saturated()

    def _saturated(self) -> Saturated:
        # Spread over up to twice the wait: callers refused together must not all come back in the same second.
        return Saturated(
            self.destination, self.limit, self.retry_after_seconds + random.randint(0, self.retry_after_seconds)
        )

    async def call(
        self, function: Callable[..., T], *args: Any, deadline_seconds: float | None, patient: bool = False
    ) -> T:
        """`function(*args)` in a thread of its own. Impatient callers (requests) are refused when every slot is
        taken; patient ones (background passes) wait for a slot. With a deadline, DeadlinePassed ends the wait."""
        while not self._enter():
            if not patient:
                raise self._saturated()
            await self._wait_for_a_slot()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()

        def run() -> None:
            try:
                result = function(*args)
            except BaseException as error:  # handed to the waiting caller, whatever it is
                self._leave(loop)
                _settle(loop, answer, error=error)
            else:
                self._leave(loop)
                _settle(loop, answer, result=result)

        threading.Thread(target=run, name=f"{self.destination}-call", daemon=True).start()
        # A caller that gives up (its deadline, a disconnect) cancels `answer`; the thread's outcome is dropped.
        try:
            return await asyncio.wait_for(answer, timeout=deadline_seconds)
        except TimeoutError:
            raise DeadlinePassed(self.destination, deadline_seconds or 0) from None

    def _enter(self) -> bool:
        with self._lock:
            if self._in_flight >= self.limit:
                return False
            self._in_flight += 1
            return True

    def _leave(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._in_flight -= 1
        if self._freed is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed while the call hung: no one is waiting
                loop.call_soon_threadsafe(self._freed.set)

    async def _wait_for_a_slot(self) -> None:
        if self._freed is None:
            self._freed = asyncio.Event()
        self._freed.clear()
        with contextlib.suppress(TimeoutError):  # a slot freed between the check and the wait: look again
            await asyncio.wait_for(self._freed.wait(), timeout=1.0)


def _settle(loop: asyncio.AbstractEventLoop, answer: "asyncio.Future[T]", **outcome: Any) -> None:
    def settle() -> None:
        if answer.done():  # the caller gave up: nobody reads it
            return
        if "error" in outcome:
            answer.set_exception(outcome["error"])
        else:
            answer.set_result(outcome["result"])

    with contextlib.suppress(RuntimeError):  # the loop closed (shutdown) while the call hung
        loop.call_soon_threadsafe(settle)
