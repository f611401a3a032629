"""A clock tests move by hand: leases lapse and backoffs pass when the test says so, not after a wait."""

from datetime import datetime, timedelta

from corral.clock import Clock
from corral.tables.base import utcnow


class ManualClock(Clock):
    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utcnow()

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
