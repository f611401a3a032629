"""The server-side commands' ground: settings, the database (`corral db`, migrating an embedded one before
`corral serve`), a unit of work, and a failure said in one line."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

# Everything else is imported by the command that needs it: `corral --help` stays quick to start.
if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from corral.config import Settings

T = TypeVar("T")

db_cli = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True, rich_markup_mode=None)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"corral: {message}", err=True)
    raise typer.Exit(code)


def run_async(work: Coroutine[Any, Any, T]) -> T:
    import asyncio  # here, not at the top: `corral --help` and the HTTP commands never need it

    return asyncio.run(work)


def cli_settings() -> Settings:
    from corral.config import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc), code=2)


def database_error(settings: Settings, exc: Exception) -> NoReturn:
    fail(f"cannot use the database at {settings.database_display}: {str(exc).splitlines()[0]}")


def prepare_database(settings: Settings) -> None:
    """Migrate an embedded SQLite database (seeding a new one with the Llama catalog); refuse a PostgreSQL
    database that is behind, since migrating shared production data is an operator's call."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from corral import migrate
    from corral.catalog.loader import load_catalog

    try:
        current = run_async(current_revision(settings))
        if settings.is_sqlite:
            if current != migrate.head_revision():  # at head already: no migration run at every start
                migrate.upgrade(settings)
            if current is None:
                loaded = run_in_unit_of_work(settings, load_catalog)
                typer.echo(
                    f"corral: new embedded database {settings.sqlite_file}: loaded the Llama catalog {loaded.created}",
                    err=True,
                )
            return
    except (SQLAlchemyError, OSError, CommandError) as exc:
        database_error(settings, exc)
    head = migrate.head_revision()
    if current != head:
        fail(
            f"the database at {settings.database_display} is at schema revision {current or '(empty)'}, "
            f"but this Corral needs {head}: run `corral db upgrade` first."
        )


async def current_revision(settings: Settings) -> str | None:
    from corral import migrate
    from corral.db import create_engine

    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return await migrate.current_revision(connection)
    finally:
        await engine.dispose()


def run_in_unit_of_work(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """The CLI's unit of work: a domain error becomes one line and exit status 1."""
    from corral.db import in_unit_of_work
    from corral.errors import ProblemError
    from corral.suites.service import SuiteFileError

    try:
        return run_async(in_unit_of_work(settings, work))
    except ProblemError as exc:
        fail(exc.detail)
    except SuiteFileError as exc:
        fail(f"invalid suite file {exc}")


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from corral import migrate

    settings = cli_settings()
    try:
        migrate.upgrade(settings, revision)
    except (SQLAlchemyError, OSError, CommandError) as exc:
        database_error(settings, exc)
    typer.echo(f"database at {settings.database_display} is at {revision}", err=True)


@db_cli.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")]) -> None:
    """Migrate the database down to REVISION."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from corral import migrate

    settings = cli_settings()
    try:
        migrate.downgrade(settings, revision)
    except (SQLAlchemyError, OSError, CommandError) as exc:
        database_error(settings, exc)


@db_cli.command("current")
def db_current() -> None:
    """Print the database's schema revision and this build's head; exit 1 if they differ."""
    from sqlalchemy.exc import SQLAlchemyError

    from corral import migrate

    settings = cli_settings()
    try:
        current = run_async(current_revision(settings))
    except (SQLAlchemyError, OSError) as exc:
        database_error(settings, exc)
    head = migrate.head_revision()
    typer.echo(f"current: {current or '(empty)'}\nhead:    {head}")
    if current != head:
        raise typer.Exit(1)
