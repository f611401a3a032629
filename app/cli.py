"""The `corral` command line: the server-side commands (serve, db, token, catalog, suites, hub) and, from
app.console, the ones that talk to a server over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from corral.console.commands import install as install_http_commands
from corral.database_cli import (
    cli_settings,
    db_cli,
    fail,
    prepare_database,
    run_async,
    run_in_unit_of_work,
)
from corral.scores.cli import results_cli

# Everything else is imported by the command that needs it: `corral --help` and each server worker (which
# imports this module again when it is spawned) stay quick to start.
if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from corral.tokens.schemas import TokenRead
    from corral.wire.enums import Scope

T = TypeVar("T")
WORKER_HEALTHCHECK_SECONDS = 60

cli = typer.Typer(
    name="corral",
    help="Corral: open-model release and evaluation registry. Log in once (`corral login`), then browse and act "
    "over HTTP; `serve`, `db`, `catalog`, `suites`, `hub`, `token` and `results` work on the database itself.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help is plain text: "[default: …]" in a help string is not rich markup
)
token_cli = typer.Typer(
    help="API tokens, written to the database (on the server's machine; `corral tokens` works over HTTP).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
cli.add_typer(db_cli, name="db")
cli.add_typer(db_cli, name="database", hidden=True)
cli.add_typer(token_cli, name="token")
catalog_cli = typer.Typer(help="The shipped Llama catalog.", no_args_is_help=True, rich_markup_mode=None)
cli.add_typer(catalog_cli, name="catalog")
suites_cli = typer.Typer(help="Evaluation suites (evals/suites/*.yaml).", no_args_is_help=True, rich_markup_mode=None)
cli.add_typer(suites_cli, name="suites")
hub_cli = typer.Typer(
    help="The Hugging Face Hub (or the mirror in CORRAL_HUB_ENDPOINT).", no_args_is_help=True, rich_markup_mode=None
)
cli.add_typer(hub_cli, name="hub")
cli.add_typer(results_cli, name="results")
install_http_commands(cli)


def _version(shown: bool) -> None:
    if shown:
        from corral.client.transport import client_version

        typer.echo(f"corral {client_version()}")
        raise typer.Exit()


@cli.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Corral: open-model release and evaluation registry."""


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [default: CORRAL_HOST or 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: CORRAL_PORT or 8000].")] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes (PostgreSQL; SQLite serves from one).")
    ] = 1,
) -> None:
    """Run the API server (migrating an embedded SQLite database first)."""
    import uvicorn

    from corral.logging import configure_logging
    from corral.main import create_app
    from corral.suites.service import load_suites

    settings = cli_settings()
    configure_logging(settings.log_format, settings.log_level)
    prepare_database(settings)
    # Suites come from the files this build ships: record their current versions before serving.
    run_in_unit_of_work(settings, load_suites)
    if workers > 1 and settings.is_sqlite:
        typer.echo("corral serve: --workers needs PostgreSQL; SQLite is served by one process", err=True)
        raise typer.Exit(2)
    with _shared_metrics(workers):
        uvicorn.run(
            "corral.main:create_served_app" if workers > 1 else create_app(settings),
            factory=workers > 1,
            workers=workers,
            host=host or settings.host,
            port=port or settings.port,
            access_log=False,
            log_config=None,
            proxy_headers=True,
            server_header=False,
            # A replacement worker answers the supervisor's health check only once it has imported the app; on a
            # busy host that takes seconds, and uvicorn's default (5 s) killed replacements before they served.
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
        )


@contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """Several workers count into one directory (prometheus_client's multiprocess mode), removed at exit."""
    from corral.metrics import MULTIPROCESS_DIRECTORY

    if workers == 1:
        yield
        return
    directory = tempfile.mkdtemp(prefix="corral-metrics-")
    os.environ[MULTIPROCESS_DIRECTORY] = directory  # the workers, spawned after this, inherit it
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_DIRECTORY, None)
        shutil.rmtree(directory, ignore_errors=True)


def _scope_value(value: str) -> Scope:
    from corral.wire.enums import Scope

    try:
        scope = Scope(value)
    except ValueError:
        fail(f"--scope must be one of admin, publish, read (got {value!r})", code=2)
    if scope == Scope.RUNNER:
        fail(
            "runner tokens are issued by runner registration and bound to their runner; "
            "use admin, publish or read here",
            code=2,
        )
    return scope


@token_cli.command("create")
def token_create(
    scope: Annotated[str, typer.Option(help="admin, publish or read.")],
    name: Annotated[str, typer.Option(help="What the token is for.")],
    expires_in_days: Annotated[int | None, typer.Option(min=1, help="Expire after this many days.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
) -> None:
    """Issue a token and print it once (only its hash is stored)."""
    from corral.tables.base import utcnow
    from corral.tokens.service import TokenService

    settings = cli_settings()
    chosen = _scope_value(scope)
    if not 1 <= len(name.strip()) <= 100:
        fail("--name must be 1 to 100 characters", code=2)
    prepare_database(settings)
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    created = run_in_unit_of_work(
        settings,
        lambda session: TokenService(session).issue(name=name.strip(), scope=chosen, expires_at=expires_at),
    )
    if as_json:
        typer.echo(created.model_dump_json(indent=2))
        return
    # The secret alone on stdout, so `TOKEN=$(corral token create ...)` works; the rest goes to stderr.
    typer.echo(
        f"created {created.scope.value} token {created.name!r} (id {created.id}) in {settings.database_display}; "
        "it is shown only this once:",
        err=True,
    )
    typer.echo(created.token)


@token_cli.command("list")
def token_list(
    active: Annotated[bool | None, typer.Option("--active/--inactive", help="Filter on usability.")] = None,
) -> None:
    """List tokens as JSON lines (never their secrets)."""
    from corral.pagination import PageRequest
    from corral.tokens.service import TokenService

    settings = cli_settings()
    prepare_database(settings)

    async def every_token(session: AsyncSession) -> list[TokenRead]:
        tokens: list[TokenRead] = []
        cursor: str | None = None
        while True:
            page = PageRequest(cursor=cursor, limit=settings.page_limit_max)
            items, cursor = await TokenService(session).list_page(
                scope=None, active=active, sort="-created_at", page=page
            )
            tokens += items
            if cursor is None:
                return tokens

    for item in run_in_unit_of_work(settings, every_token):
        typer.echo(item.model_dump_json())


@token_cli.command("revoke")
def token_revoke(token_id: Annotated[uuid.UUID, typer.Argument(help="The token's id.")]) -> None:
    """Revoke a token at once."""
    from corral.tokens.service import TokenService

    settings = cli_settings()
    prepare_database(settings)
    revoked = run_in_unit_of_work(settings, lambda session: TokenService(session).revoke(token_id))
    typer.echo(json.dumps({"id": str(revoked.id), "revoked_at": revoked.revoked_at and revoked.revoked_at.isoformat()}))


@catalog_cli.command("load")
def catalog_load() -> None:
    """Load (or bring up to date) the Llama catalog: licences, families, models. Safe to repeat."""
    from corral.catalog.loader import load_catalog

    settings = cli_settings()
    prepare_database(settings)
    loaded = run_in_unit_of_work(settings, load_catalog)
    typer.echo(loaded.model_dump_json())


@suites_cli.command("load")
def suites_load() -> None:
    """Record the current version of every suite file (evals/suites/*.yaml); earlier versions are kept."""
    from corral.suites.service import load_suites

    settings = cli_settings()
    prepare_database(settings)
    typer.echo(json.dumps(run_in_unit_of_work(settings, load_suites)))


@hub_cli.command("sync")
def hub_sync(
    repo_id: Annotated[str, typer.Argument(help="Hub repo id, owner/name.")],
    revision: Annotated[str, typer.Option(help="Branch, tag or commit sha.")] = "main",
) -> None:
    """Sync one model from the Hub, registering it from the Hub's metadata if it is new."""
    from corral.errors import ProblemError
    from corral.hub.client import HubError
    from corral.hub.sync import sync_from_hub

    settings = cli_settings()
    prepare_database(settings)
    try:
        result = run_async(sync_from_hub(settings, repo_id, revision))
    except HubError as error:
        fail(error.message)
    except ProblemError as problem:
        fail(problem.detail)
    typer.echo(result.model_dump_json(indent=2))


# What only the service's install brings (`pip install 'corral[server]'`): the client and the HTTP commands need none.
SERVER_PACKAGES = frozenset(
    {
        "fastapi",
        "starlette",
        "uvicorn",
        "sqlalchemy",
        "alembic",
        "aiosqlite",
        "psycopg",
        "pydantic_settings",
        "jinja2",
        "fastapi_offline",
        "prometheus_client",
        "huggingface_hub",
        "yaml",
    }
)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
    except ModuleNotFoundError as missing:
        if (missing.name or "").split(".")[0] not in SERVER_PACKAGES:
            raise
        # A server command on a client-only install: one line naming the install, not a traceback.
        typer.echo(
            f"corral: this command works on the service's database and needs the server install "
            f"({missing.name} is missing): pip install 'corral[server]'",
            err=True,
        )
        sys.exit(2)
