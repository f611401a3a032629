"""New scores, announced once they are committed, to whatever keeps views of them (the leaderboard cache).

A per-process generation number: a view built at one generation is stale at the next. Bumped after the commit,
never before, or a reader could rebuild a view from the old scores and keep it as new.
"""

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

_generation = 0


def generation() -> int:
    return _generation


def _bump(_session: object) -> None:
    global _generation
    _generation += 1


def scores_changed_after_commit(session: AsyncSession) -> None:
    event.listen(session.sync_session, "after_commit", _bump, once=True)
