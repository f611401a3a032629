"""Claims under contention: many runners at once over a large queue, on PostgreSQL and SQLite.

The claimers run in one event loop, each with its own session (so its own connection and transaction), with
seeded random pauses that shuffle how their statements interleave.
"""

import asyncio
import random
import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from corral.config import Settings
from corral.db import create_engine, create_sessionmaker, in_unit_of_work
from corral.evaluations.wakeups import QueueSignal
from corral.protocol.service import ProtocolService, claim_once
from corral.tables import EvaluationJob, JobAttempt, Runner
from corral.tables.base import utcnow
from corral.wire.enums import AttemptState, JobState
from tests.support.evaluations import seed_queue

CLAIMERS = 32
JOBS = 1000
SEEDS = [1, 2, 3]


async def claim_everything(
    settings: Settings, runner_ids: list[uuid.UUID], seed: int
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Every runner claims until the queue is empty; returns (runner, job) for each claim answered."""
    if settings.is_sqlite:
        engine = create_engine(settings)
    else:  # enough connections that all claimers really are in the database at once
        engine = create_async_engine(settings.database, pool_size=CLAIMERS + 4, max_overflow=0)
    sessionmaker: async_sessionmaker[AsyncSession] = create_sessionmaker(engine)
    answers: list[tuple[uuid.UUID, uuid.UUID]] = []
    start = asyncio.Event()
    signal = QueueSignal()

    async def claimer(runner_id: uuid.UUID, rng: random.Random) -> None:
        await start.wait()
        empty_in_a_row = 0
        while empty_in_a_row < 3:  # an empty answer can mean "all left are locked by others": look again
            claim = await claim_once(sessionmaker, settings, signal, runner_id)
            await asyncio.sleep(rng.random() * 0.002)
            if claim is None:
                empty_in_a_row += 1
                await asyncio.sleep(0.01)
                continue
            empty_in_a_row = 0
            answers.append((runner_id, claim.job.job_id))

    try:
        tasks = [
            asyncio.create_task(claimer(runner_id, random.Random(seed * 1000 + i)))
            for i, runner_id in enumerate(runner_ids)
        ]
        start.set()
        await asyncio.gather(*tasks)
    finally:
        await engine.dispose()
    return answers


@pytest.mark.parametrize("seed", SEEDS)
def test_every_job_is_claimed_exactly_once(settings: Settings, seed: int) -> None:
    runner_ids = asyncio.run(in_unit_of_work(settings, lambda session: seed_queue(session, JOBS, CLAIMERS)))
    answers = asyncio.run(claim_everything(settings, runner_ids, seed))

    claimed_jobs = [job for _, job in answers]
    assert len(claimed_jobs) == JOBS
    assert len(set(claimed_jobs)) == JOBS, "a job was handed to two claims"
    assert len({runner for runner, _ in answers}) > 1, "the claimers did not overlap"

    async def check(session: AsyncSession) -> None:
        attempts_per_job = (
            await session.execute(select(JobAttempt.job_id, func.count()).group_by(JobAttempt.job_id))
        ).all()
        assert len(attempts_per_job) == JOBS
        assert {count for _, count in attempts_per_job} == {1}
        jobs = (await session.execute(select(EvaluationJob.state, EvaluationJob.attempt_count))).all()
        assert {(state, count) for state, count in jobs} == {(JobState.RUNNING, 1)}
        pairs = set((await session.execute(select(JobAttempt.runner_id, JobAttempt.job_id))).all())
        assert pairs == set(answers), "the database and the answers disagree"

    asyncio.run(in_unit_of_work(settings, check))


def test_claims_follow_priority_then_age(settings: Settings) -> None:
    runner_ids = asyncio.run(in_unit_of_work(settings, lambda session: seed_queue(session, 50, 1)))

    async def claim_all(session: AsyncSession) -> list[tuple[int, object]]:
        order = []
        for _ in range(50):
            claim = await ProtocolService(session, settings).claim(runner_ids[0])
            assert claim is not None
            job = await session.get(EvaluationJob, claim.job.job_id)
            assert job is not None
            order.append((-job.priority, job.queued_at))
        return order

    order = asyncio.run(in_unit_of_work(settings, claim_all))
    assert order == sorted(order)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_locked_job_is_skipped_not_waited_for(settings: Settings) -> None:
    runner_ids = asyncio.run(in_unit_of_work(settings, lambda session: seed_queue(session, 2, 2)))

    async def two_open_transactions() -> tuple[uuid.UUID, uuid.UUID | None]:
        engine = create_engine(settings)
        sessionmaker = create_sessionmaker(engine)
        try:
            async with sessionmaker() as first, sessionmaker() as second:
                held = await ProtocolService(first, settings).claim(runner_ids[0])  # not committed: row stays locked
                assert held is not None
                other = await asyncio.wait_for(ProtocolService(second, settings).claim(runner_ids[1]), timeout=10)
                await second.commit()
                await first.commit()
                return held.job.job_id, other.job.job_id if other else None
        finally:
            await engine.dispose()

    held, other = asyncio.run(two_open_transactions())
    assert other is not None
    assert other != held


def test_one_running_attempt_per_job_is_enforced_by_the_database(settings: Settings) -> None:
    runner_ids = asyncio.run(in_unit_of_work(settings, lambda session: seed_queue(session, 1, 1)))

    async def claim_then_forge(session: AsyncSession) -> None:
        claim = await ProtocolService(session, settings).claim(runner_ids[0])
        assert claim is not None
        now = utcnow()
        session.add(
            JobAttempt(
                job_id=claim.job.job_id,
                runner_id=runner_ids[0],
                number=2,
                lease_token_hash="0" * 64,
                state=AttemptState.RUNNING,
                claimed_at=now,
                lease_expires_at=now,
                progress={},
                log_bytes=0,
            )
        )
        await session.flush()

    with pytest.raises(IntegrityError):
        asyncio.run(in_unit_of_work(settings, claim_then_forge))


async def blocked_on_a_lock(watcher: AsyncSession, timeout: float = 30) -> None:
    """Until another session of this database waits for a row lock (PostgreSQL's own view of it)."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = asyncio.get_running_loop().time() + timeout
    while (await watcher.execute(waiting)).scalar_one() == 0:
        await watcher.rollback()  # a fresh snapshot of the activity view
        assert asyncio.get_running_loop().time() < deadline, "the racing claim never waited for the lock"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_runner_never_exceeds_its_concurrency_limit(settings: Settings) -> None:
    runner_ids = asyncio.run(in_unit_of_work(settings, lambda session: seed_queue(session, 4, 1)))

    async def limit_one() -> None:
        engine = create_engine(settings)
        sessionmaker = create_sessionmaker(engine)
        try:
            async with sessionmaker() as session:
                runner = await session.get(Runner, runner_ids[0])
                assert runner is not None
                runner.max_concurrent_jobs = 1
                await session.commit()
            async with sessionmaker() as first, sessionmaker() as second, sessionmaker() as watcher:
                held = await ProtocolService(first, settings).claim(runner_ids[0])
                assert held is not None
                # The second long-poll of the same runner waits for the first claim's transaction, then sees it.
                racing = asyncio.create_task(ProtocolService(second, settings).claim(runner_ids[0]))
                await blocked_on_a_lock(watcher)
                await first.commit()
                assert await asyncio.wait_for(racing, timeout=10) is None
                await second.commit()
        finally:
            await engine.dispose()

    asyncio.run(limit_one())
