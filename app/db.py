"""Engine, sessions and the unit of work: one session per request, committed before the response is sent."""

import asyncio
import hashlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends, Request
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from corral import changes
from corral.config import Settings
from corral.state import state_of

T = TypeVar("T")
log = logging.getLogger("corral.db")


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def configure(dbapi_connection: Any, _record: Any) -> None:
        # SQLite leaves foreign keys off by default; WAL lets readers work beside the one writer; a writer that
        # finds the write lock taken waits this long for it (then the request is answered 503, never 500).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
        cursor.close()
        # SQLite's own lower() folds ASCII only; PostgreSQL's folds all of Unicode. Searches must agree.
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)

    return configure


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def create_engine(settings: Settings) -> AsyncEngine:
    # hide_parameters: a database error's message (logged, never sent) must not carry values such as
    # lease-token hashes; the statement alone says where it failed.
    if settings.is_sqlite:
        if settings.sqlite_file is not None:  # the default lives in a data directory that may not exist yet
            settings.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(settings.database, hide_parameters=True)
        busy_ms = round(settings.sqlite_busy_timeout_seconds * 1000)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(busy_ms))
        return engine
    # No pre-ping: it is one more round trip on every checkout (a third of a heartbeat's). After a restart of
    # the database the first statement on a stale connection fails (503 with Retry-After, as for any outage),
    # and SQLAlchemy then drops every connection of the pool, so the next request connects afresh.
    return create_async_engine(settings.database, pool_size=10, max_overflow=10, pool_timeout=10, hide_parameters=True)


_sqlite_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = weakref.WeakKeyDictionary()


def sqlite_writer_lock() -> asyncio.Lock:
    """Hot write paths on SQLite queue here, in arrival order: SQLite has one writer at a time, and its own
    busy wait polls with growing sleeps, so under contention one unlucky writer can wait past its timeout."""
    loop = asyncio.get_running_loop()
    lock = _sqlite_writers.get(loop)
    if lock is None:
        lock = _sqlite_writers[loop] = asyncio.Lock()
    return lock


async def serialize(session: AsyncSession, key: str | None = None) -> None:
    """Run the rest of this transaction alone: among holders of `key` on PostgreSQL (a transaction-scoped
    advisory lock; without a key nothing, as row locks do the work there), and among all writers on SQLite,
    whose single write lock an UPDATE takes even when it matches no row. Call it before the reads it protects."""
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(text("UPDATE alembic_version SET version_num = version_num WHERE 0"))
    elif key is not None:
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        await session.execute(select(func.pg_advisory_xact_lock(lock_id)))


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: response models are built from ORM objects after the commit.
    changes.track()  # every session announces what it changed to the caches (app/changes.py)
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def in_unit_of_work(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one session on a short-lived engine and commit: the unit of work outside a request."""
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            result = await work(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


async def release_connection(session: AsyncSession) -> None:
    """End the request's read-only transaction, so that its connection is back in the pool before a call to
    something outside Corral (app/outbound.py) that may never answer; the session opens a new transaction at its
    next statement. What was read stays loaded. A transaction that has written cannot be cut in two: that is a
    bug, and it raises."""
    if isinstance(session, LazySession) and session.made is None:
        return
    if session.sync_session.new or session.sync_session.dirty or session.sync_session.deleted:
        raise RuntimeError("pending writes: flush them after the outbound call, not before")
    if changes.wrote(session.sync_session):
        raise RuntimeError("this transaction has written: make the outbound call before its first write")
    # Committing nothing ends it as a rollback would, but keeps what was loaded (expire_on_commit=False).
    await session.commit()


AfterCommit = Callable[[AsyncSession], Awaitable[None]]
AFTER_COMMIT = "corral_after_commit"


def after_commit(session: AsyncSession, work: AfterCommit) -> None:
    """Bookkeeping to write once the request's unit of work has committed, in a short transaction of its own
    (a token's last use): it never holds a lock through the request, and a failed request writes none of it."""
    session.info.setdefault(AFTER_COMMIT, []).append(work)


class LazySession:
    """The request's session, made when a statement first needs it: a request answered from a cache (a verified
    token, a kept view) creates, commits and closes none."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._session: AsyncSession | None = None

    @property
    def made(self) -> AsyncSession | None:
        return self._session

    def __getattr__(self, name: str) -> Any:
        if self._session is None:
            self._session = self._sessionmaker()
        return getattr(self._session, name)


async def unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's session. Services only flush; this commits, or rolls back if the endpoint raised."""
    sessionmaker: async_sessionmaker[AsyncSession] = state_of(request).sessionmaker
    lazy = LazySession(sessionmaker)
    try:
        yield cast(AsyncSession, lazy)  # the session's interface, by delegation
    except BaseException:
        if lazy.made is not None:
            await lazy.made.rollback()
            await lazy.made.close()
        raise
    session = lazy.made
    if session is None:
        return
    try:
        await session.commit()
        pending: list[AfterCommit] = session.info.pop(AFTER_COMMIT, [])
    finally:
        await session.close()
    for work in pending:
        try:
            async with sessionmaker() as bookkeeping:
                await work(bookkeeping)
                await bookkeeping.commit()
        except SQLAlchemyError as exc:  # bookkeeping (a token's last use) must never fail a request that succeeded
            log.warning("bookkeeping after a request skipped: %s", type(exc).__name__)


# scope="function": the code after `yield` runs when the endpoint returns, so the commit happens (and can
# fail loudly) before any byte of the response leaves; the default scope would commit after sending.
SessionDep = Annotated[AsyncSession, Depends(unit_of_work, scope="function")]
