"""Ranked leaderboards kept for a few seconds per process.

A leaderboard ranks every scored revision of a suite, which costs far more than serving a page of it. A
ranking is kept for `CORRAL_LEADERBOARD_CACHE_SECONDS`, and is stale at once when this process commits new
scores (app/changes.py, in every process on PostgreSQL); other processes see new scores within that many seconds.
"""

import asyncio
import time
from collections.abc import Hashable
from typing import Any

from corral import changes

_entries: dict[Hashable, tuple[float, int, Any]] = {}
_building: dict[Hashable, asyncio.Lock] = {}


def building(key: Hashable) -> asyncio.Lock:
    """One computation per key at a time: concurrent misses wait for the first instead of all ranking at once."""
    lock = _building.get(key)
    if lock is None:
        lock = _building[key] = asyncio.Lock()
    return lock


def cached(key: Hashable) -> Any | None:
    entry = _entries.get(key)
    if entry is None or entry[0] < time.monotonic() or entry[1] != changes.generation("scores"):
        return None
    return entry[2]


def keep(key: Hashable, value: Any, seconds: float, generation: int) -> None:
    """`generation`: the scores' generation read before the value was built from them."""
    if seconds > 0:
        if len(_entries) > 256:  # filter combinations are many; keep memory bounded
            _entries.clear()
            _building.clear()
        _entries[key] = (time.monotonic() + seconds, generation, value)
