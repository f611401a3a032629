"""What changed, told to every cache that keeps a view of it: a generation number per domain, bumped when a
transaction that wrote the domain's tables commits — in this process at once, in every other process and
replica through PostgreSQL NOTIFY (app/listener.py relays it).

A view built at one generation is stale at the next. Writes are noticed as the ORM flushes them and as update,
insert and delete statements run through a session; bookkeeping writes that change nothing a view shows (a
token's last use, a runner's last contact) are marked `UNTRACKED`. The `scores` domain is announced by whoever
writes an evaluation's summary (`note`).
"""

from collections import Counter
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

CHANNEL = "corral_changes"
UNTRACKED = "corral_untracked"  # execution option: this write changes no view
DOMAINS = ("registry", "runners", "tokens", "scores")
TABLE_DOMAINS = {
    "models": "registry",
    "families": "registry",
    "licenses": "registry",
    "revisions": "registry",
    "model_aliases": "registry",
    "runners": "runners",
    "api_tokens": "tokens",
}
_INFO_KEY = "corral_changed"
_WROTE_KEY = "corral_wrote"
_generations: Counter[str] = Counter()


def generation(domain: str) -> int:
    return _generations[domain]


def generations(domains: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(_generations[domain] for domain in domains)


def bump(*domains: str) -> None:
    """A change of these domains is known to this process (committed here, or announced by another)."""
    for domain in domains or DOMAINS:
        _generations[domain] += 1


def note(session: Session, domain: str) -> None:
    """This transaction changes `domain`: announced when (and only if) it commits."""
    session.info.setdefault(_INFO_KEY, set()).add(domain)


def wrote(session: Session) -> bool:
    """Whether the session's transaction has written anything (flushed or executed), tracked table or not."""
    return bool(session.info.get(_WROTE_KEY))


def _flushed(session: Session, _transaction: UOWTransaction) -> None:
    if session.new or session.dirty or session.deleted:
        session.info[_WROTE_KEY] = True
    for instance in (*session.new, *session.dirty, *session.deleted):
        table = getattr(instance, "__tablename__", None)
        if table in TABLE_DOMAINS and (instance not in session.dirty or session.is_modified(instance)):
            note(session, TABLE_DOMAINS[table])


def _executed(state: ORMExecuteState) -> None:
    if state.is_update or state.is_delete or state.is_insert:
        state.session.info[_WROTE_KEY] = True
    if not (state.is_update or state.is_delete or state.is_insert) or state.execution_options.get(UNTRACKED):
        return
    table = getattr(getattr(state.statement, "table", None), "name", None)
    if table in TABLE_DOMAINS:
        note(state.session, TABLE_DOMAINS[table])


def _before_commit(session: Session) -> None:
    changed: set[str] = session.info.get(_INFO_KEY, set())
    if changed and session.get_bind().dialect.name == "postgresql":
        # Delivered at commit (dropped on rollback) to every listening process, this one's included.
        for domain in sorted(changed):
            session.execute(select(func.pg_notify(CHANNEL, domain)))


def _after_commit(session: Session) -> None:
    session.info.pop(_WROTE_KEY, None)
    changed: set[str] = session.info.pop(_INFO_KEY, set())
    if changed:
        bump(*changed)


def _after_soft_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(_INFO_KEY, None)
    session.info.pop(_WROTE_KEY, None)


def track(session_class: Any = Session) -> None:
    """Watch every session of the class (idempotent)."""
    for name, handler in (
        ("after_flush", _flushed),
        ("do_orm_execute", _executed),
        ("before_commit", _before_commit),
        ("after_commit", _after_commit),
        ("after_soft_rollback", _after_soft_rollback),
    ):
        if not event.contains(session_class, name, handler):
            event.listen(session_class, name, handler)
