"""What a failed or lost attempt leads to: retry after a backoff, retry at once on more memory, or fail the job.

Decided from the job's counters and the registered runners alone, so the rule is one pure function; the queue
service reads the job, asks, and writes the answer.
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from corral.config import Settings
from corral.runners.matching import Capacity, Need
from corral.wire.enums import FailureCategory

MAX_BACKOFF_SECONDS = 86400
RETRYABLE = frozenset({FailureCategory.INFRASTRUCTURE, FailureCategory.LEASE_EXPIRED})


@dataclass(frozen=True)
class Settlement:
    """The job after one more failure: its counters and requirement, and when it runs again (None: it fails)."""

    need: Need
    infrastructure_failures: int
    oom_failures: int
    retry_after: timedelta | None
    reason: str


def backoff(settings: Settings, failures: int, jitter: float | None = None) -> timedelta:
    """30 s x 2^(n-1) by default, capped at a day, +-10 % jitter so requeued jobs do not return in lockstep."""
    seconds = min(settings.retry_backoff_seconds * 2 ** min(failures - 1, 30), MAX_BACKOFF_SECONDS)
    return timedelta(seconds=seconds * (random.uniform(0.9, 1.1) if jitter is None else jitter))


def grown(need: Need, settings: Settings) -> Need:
    """After an out-of-memory failure both figures grow: the whole and the largest piece on one device."""
    growth = 100 + settings.oom_memory_growth_percent
    return replace(need, memory_bytes=need.memory_bytes * growth // 100, device_bytes=need.device_bytes * growth // 100)


def after_failure(
    need: Need,
    infrastructure_failures: int,
    oom_failures: int,
    category: FailureCategory,
    message: str,
    settings: Settings,
    runners: Sequence[Capacity],
) -> Settlement:
    """The rule for one more failure of a job that is still wanted (not cancelled)."""
    if category in RETRYABLE:
        failures = infrastructure_failures + 1
        if failures <= settings.max_infrastructure_retries:
            return Settlement(need, failures, oom_failures, backoff(settings, failures), message)
        reason = f"{failures} attempts failed on infrastructure; the last: {message}"
        return Settlement(need, failures, oom_failures, None, reason)
    if category == FailureCategory.OUT_OF_MEMORY:
        failures, bigger = oom_failures + 1, grown(need, settings)
        if failures > settings.max_oom_retries:
            reason = f"Out of memory {failures} times; the last: {message}"
        elif not any(not runner.shortfalls(bigger) for runner in runners):
            reason = f"Out of memory, and no registered runner has more memory to retry on: {message}"
        else:
            return Settlement(bigger, infrastructure_failures, failures, timedelta(0), message)
        return Settlement(bigger, infrastructure_failures, failures, None, reason)
    return Settlement(need, infrastructure_failures, oom_failures, None, message)
