"""Ranked leaderboards kept for a few seconds per process.

A leaderboard ranks every scored revision of a suite, which costs far more than serving a page of it. A
ranking is kept for `CORRAL_LEADERBOARD_CACHE_SECONDS`, and dropped at once when this process commits new
scores; other processes see new scores within that many seconds.
"""

import asyncio
import time
from collections.abc import Hashable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

_entries: dict[Hashable, tuple[float, Any]] = {}
_building: dict[Hashable, asyncio.Lock] = {}


def building(key: Hashable) -> asyncio.Lock:
    """One computation per key at a time: concurrent misses wait for the first instead of all ranking at once."""
    lock = _building.get(key)
    if lock is None:
        lock = _building[key] = asyncio.Lock()
    return lock


def cached(key: Hashable) -> Any | None:
    entry = _entries.get(key)
    if entry is None or entry[0] < time.monotonic():
        return None
    return entry[1]


def keep(key: Hashable, value: Any, seconds: float) -> None:
    if seconds > 0:
        if len(_entries) > 256:  # filter combinations are many; keep memory bounded
            _entries.clear()
            _building.clear()
        _entries[key] = (time.monotonic() + seconds, value)


def forget_after_commit(session: AsyncSession) -> None:
    """New scores: drop every ranking once they are committed (not before, or a reader could re-cache old ones)."""
    event.listen(session.sync_session, "after_commit", lambda _session: _entries.clear(), once=True)
