"""The retry rule on its own (app/evaluations/retry.py): what one more failure leads to, figure by figure.

The queue tests (test_queue.py, test_rules.py) drive the same rule through the API on both databases; these pin
each branch and boundary of the pure function so that a changed comparison, count or message fails here.
"""

from datetime import timedelta

import pytest

from corral.evaluations.retry import MAX_BACKOFF_SECONDS, RETRYABLE, after_failure, backoff, grown
from corral.hardware.fit import Devices
from corral.runners.matching import GIB, Capacity, Need
from corral.wire.enums import FailureCategory
from tests.support.databases import make_settings

SETTINGS = make_settings(
    "sqlite://",
    retry_backoff_seconds=30,
    max_infrastructure_retries=3,
    max_oom_retries=2,
    oom_memory_growth_percent=50,
)
NEED = Need(memory_bytes=40 * GIB, device_bytes=20 * GIB, backend="hf", harness_version="0.4.9", labels=("eu",))


def runner(device_gib: int, count: int) -> Capacity:
    return Capacity(
        shapes=(Devices(device_gib * GIB, count),),
        backends=("hf",),
        harness_version="0.4.9",
        labels=("eu",),
    )


BIG = runner(80, 8)  # 640 GiB, 80 GiB per device: anything here fits


def test_retryable_categories_are_exactly_the_infrastructure_ones() -> None:
    assert {FailureCategory.INFRASTRUCTURE, FailureCategory.LEASE_EXPIRED} == RETRYABLE


@pytest.mark.parametrize(("failures", "seconds"), [(1, 30), (2, 60), (3, 120), (4, 240), (12, 30 * 2**11)])
def test_backoff_doubles_from_the_first_delay(failures: int, seconds: int) -> None:
    assert backoff(SETTINGS, failures, jitter=1.0) == timedelta(seconds=seconds)


def test_backoff_is_capped_at_a_day_and_never_overflows() -> None:
    assert backoff(SETTINGS, 13, jitter=1.0) == timedelta(seconds=MAX_BACKOFF_SECONDS)
    assert MAX_BACKOFF_SECONDS == 86400
    # 2^(n-1) is capped at 2^30 before the day cap, so a huge count cannot build a huge integer.
    assert backoff(make_settings("sqlite://", retry_backoff_seconds=0), 10**9, jitter=1.0) == timedelta(0)
    tiny = make_settings("sqlite://", retry_backoff_seconds=1e-5)
    assert backoff(tiny, 40, jitter=1.0) == timedelta(seconds=1e-5 * 2**30)


def test_backoff_jitter_is_ten_percent_either_way() -> None:
    assert backoff(SETTINGS, 1, jitter=0.9) == timedelta(seconds=27)
    delays = {backoff(SETTINGS, 2) for _ in range(200)}
    assert all(timedelta(seconds=54) <= delay <= timedelta(seconds=66) for delay in delays)
    assert len(delays) > 1, "no jitter: requeued jobs would return in lockstep"


def test_growth_applies_to_the_whole_and_to_the_piece_on_one_device() -> None:
    bigger = grown(NEED, SETTINGS)
    assert (bigger.memory_bytes, bigger.device_bytes) == (60 * GIB, 30 * GIB)
    assert (bigger.backend, bigger.harness_version, bigger.labels) == (NEED.backend, NEED.harness_version, NEED.labels)
    odd = grown(Need(3, 5, "hf", "0.4.9", ()), make_settings("sqlite://", oom_memory_growth_percent=50))
    assert (odd.memory_bytes, odd.device_bytes) == (4, 7)  # integer bytes, rounded down


@pytest.mark.parametrize("category", sorted(RETRYABLE))
def test_infrastructure_failures_retry_after_a_backoff_until_the_limit(category: FailureCategory) -> None:
    first = after_failure(NEED, 0, 1, category, "node rebooted", SETTINGS, [])
    assert (first.infrastructure_failures, first.oom_failures, first.need) == (1, 1, NEED)
    assert first.reason == "node rebooted"
    assert first.retry_after is not None
    assert timedelta(seconds=27) <= first.retry_after <= timedelta(seconds=33)

    last = after_failure(NEED, 2, 0, category, "node rebooted", SETTINGS, [])
    assert last.infrastructure_failures == 3
    assert last.retry_after is not None
    assert last.retry_after >= timedelta(seconds=108)

    over = after_failure(NEED, 3, 0, category, "node rebooted", SETTINGS, [])
    assert (over.infrastructure_failures, over.retry_after) == (4, None)
    assert over.reason == "4 attempts failed on infrastructure; the last: node rebooted"


def test_out_of_memory_retries_at_once_on_a_runner_that_holds_the_grown_need() -> None:
    settled = after_failure(NEED, 1, 0, FailureCategory.OUT_OF_MEMORY, "CUDA OOM", SETTINGS, [BIG])
    assert settled.retry_after == timedelta(0)
    assert (settled.infrastructure_failures, settled.oom_failures) == (1, 1)
    assert (settled.need.memory_bytes, settled.need.device_bytes) == (60 * GIB, 30 * GIB)
    assert settled.reason == "CUDA OOM"


def test_out_of_memory_fails_after_the_last_retry() -> None:
    at_limit = after_failure(NEED, 0, 1, FailureCategory.OUT_OF_MEMORY, "CUDA OOM", SETTINGS, [BIG])
    assert (at_limit.oom_failures, at_limit.retry_after) == (2, timedelta(0))
    over = after_failure(NEED, 0, 2, FailureCategory.OUT_OF_MEMORY, "CUDA OOM", SETTINGS, [BIG])
    assert (over.infrastructure_failures, over.oom_failures, over.retry_after) == (0, 3, None)
    assert over.reason == "Out of memory 3 times; the last: CUDA OOM"
    assert over.need.memory_bytes == 60 * GIB  # the failed job records what it would have needed


@pytest.mark.parametrize(
    "runners",
    [
        [],
        [runner(24, 8)],  # 192 GiB in all, but 24 GiB per device: the 30 GiB piece does not fit one device
        [runner(48, 1)],  # the piece fits, the 60 GiB whole does not
    ],
    ids=["no runners", "small devices", "small total"],
)
def test_out_of_memory_fails_when_no_runner_holds_the_grown_need(runners: list[Capacity]) -> None:
    settled = after_failure(NEED, 0, 0, FailureCategory.OUT_OF_MEMORY, "CUDA OOM", SETTINGS, runners)
    assert settled.retry_after is None
    assert settled.reason == "Out of memory, and no registered runner has more memory to retry on: CUDA OOM"


def test_out_of_memory_needs_only_one_runner_that_holds_it() -> None:
    settled = after_failure(NEED, 0, 0, FailureCategory.OUT_OF_MEMORY, "CUDA OOM", SETTINGS, [runner(24, 8), BIG])
    assert settled.retry_after == timedelta(0)
    exact = runner(30, 2)  # 60 GiB in all, 30 GiB per device: exactly the grown need
    assert after_failure(NEED, 0, 0, FailureCategory.OUT_OF_MEMORY, "m", SETTINGS, [exact]).retry_after is not None


@pytest.mark.parametrize("category", [FailureCategory.HARNESS_ERROR, FailureCategory.MODEL_ERROR])
def test_other_failures_fail_the_job_at_once(category: FailureCategory) -> None:
    settled = after_failure(NEED, 1, 1, category, "bad task", SETTINGS, [BIG])
    assert (settled.need, settled.infrastructure_failures, settled.oom_failures) == (NEED, 1, 1)
    assert (settled.retry_after, settled.reason) == (None, "bad task")
