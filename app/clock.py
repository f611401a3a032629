"""The service's clock: one source of "now" (UTC) for the queue's times — leases, the reaper, retry backoff —
handed to the services that decide by time, so that tests move time forward instead of waiting for it."""

from datetime import UTC, datetime


class Clock:
    """The wall clock. Tests hand the application a clock of their own (tests/support/clock.py)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK = Clock()
