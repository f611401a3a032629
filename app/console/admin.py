"""`corral runners list/pause/drain/resume` and `corral tokens list/create/revoke`, over HTTP (admin tokens)."""

import itertools
from datetime import datetime
from typing import Annotated

import typer

from corral.console.common import JsonOption, LimitOption, ServerOption, TokenOption, connect, fail
from corral.console.output import emit_json, table
from corral.web.formatting import gib

runners_cli = typer.Typer(help="Runner machines (admin).", no_args_is_help=True, rich_markup_mode=None)
tokens_cli = typer.Typer(
    help="API tokens over HTTP (admin). `corral token` writes them to the database, on the server's machine.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
RunnerArgument = Annotated[str, typer.Argument(help="The runner's id or name.")]


@runners_cli.command("list")
def runners_list(
    state: Annotated[str | None, typer.Option(help="active, paused or draining.")] = None,
    limit: LimitOption = 100,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Runners with their state, whether they are online, and their accelerators."""
    with connect(server, token) as client:
        found = list(itertools.islice(client.runners(state=state, limit=min(limit, 100)), limit))
    if as_json:
        emit_json(found)
        return
    rows = [
        (
            runner.name,
            runner.id,
            runner.state.value,
            "yes" if runner.online else "no",
            _when(runner.last_contact_at),
            ", ".join(_devices(shape) for shape in runner.accelerators),
        )
        for runner in found
    ]
    table(["name", "id", "state", "online", "last seen", "accelerators"], rows)


def _devices(shape: dict[str, object]) -> str:
    """`2 nodes of 8 x nvidia-h100-80gb (80.0 GiB)`: a node shape as registered, never summed."""
    nodes = int(str(shape.get("nodes", 1)))
    memory = gib(int(str(shape.get("memory_bytes", 0))))
    return f"{f'{nodes} nodes of ' if nodes > 1 else ''}{shape.get('count')} x {shape.get('kind')} ({memory})"


def _set_state(reference: str, state: str, server: str | None, token: str | None) -> None:
    from corral.client import ApiError
    from corral.runners.schemas import RunnerUpdate

    with connect(server, token) as client:
        try:
            runner_id = str(client.runner(reference).id)
        except ApiError as exc:
            if exc.status not in (404, 422):  # 422: not a UUID, so maybe a name
                raise
            named = [runner for runner in client.runners(limit=100) if runner.name == reference]
            if len(named) != 1:
                fail(f"no runner has the id or name {reference!r}: see `corral runners list`", code=2)
            runner_id = str(named[0].id)
        updated = client.update_runner(runner_id, RunnerUpdate.model_validate({"state": state}))
    typer.echo(f"runner {updated.name}: {updated.state.value}")


@runners_cli.command("pause")
def runners_pause(runner: RunnerArgument, server: ServerOption = None, token: TokenOption = None) -> None:
    """Stop a runner from claiming jobs; what it runs goes on."""
    _set_state(runner, "paused", server, token)


@runners_cli.command("drain")
def runners_drain(runner: RunnerArgument, server: ServerOption = None, token: TokenOption = None) -> None:
    """Let a runner finish what it holds and take nothing new (before maintenance)."""
    _set_state(runner, "draining", server, token)


@runners_cli.command("resume")
def runners_resume(runner: RunnerArgument, server: ServerOption = None, token: TokenOption = None) -> None:
    """Let a paused or draining runner claim jobs again."""
    _set_state(runner, "active", server, token)


@runners_cli.command("registration-token")
def runners_registration_token(
    label: Annotated[list[str] | None, typer.Option(help="A label for the runner it registers (repeatable).")] = None,
    expires_in: Annotated[int, typer.Option(help="Seconds it stays valid.")] = 3600,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """A single-use token for `corral-runner register` on a new machine; printed once, on stdout."""
    from corral.runners.schemas import RegistrationTokenCreate

    with connect(server, token) as client:
        body = RegistrationTokenCreate.model_validate({"labels": label or [], "expires_in_seconds": expires_in})
        created = client.registration_token(body)
    typer.echo(f"registration token, single use, valid until {created.expires_at:%Y-%m-%d %H:%M} UTC:", err=True)
    typer.echo(created.token)


@tokens_cli.command("list")
def tokens_list(
    all_tokens: Annotated[bool, typer.Option("--all", help="Include revoked and expired ones.")] = False,
    limit: LimitOption = 100,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Tokens (never their secrets)."""
    with connect(server, token) as client:
        found = list(itertools.islice(client.tokens(active=None if all_tokens else True, limit=min(limit, 100)), limit))
    if as_json:
        emit_json(found)
        return
    table(
        ["id", "name", "scope", "key", "active", "expires", "last used"],
        [
            (
                t.id,
                t.name,
                t.scope.value,
                t.key_id,
                "yes" if t.active else "no",
                _when(t.expires_at),
                _when(t.last_used_at),
            )
            for t in found
        ],
    )


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "—"


@tokens_cli.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="What it is for, e.g. ci-main.")],
    scope: Annotated[str, typer.Option(help="read, publish or admin.")] = "read",
    expires_at: Annotated[str | None, typer.Option(help="ISO date-time it stops working.")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a token; its secret is printed once, on stdout."""
    from corral.tokens.schemas import TokenCreate

    with connect(server, token) as client:  # the body is checked in there too: a bad scope is one line
        created = client.create_token(
            TokenCreate.model_validate({"name": name, "scope": scope, "expires_at": expires_at})
        )
    if as_json:
        emit_json(created)
        return
    typer.echo(
        f"created {created.scope.value} token {created.name!r} (id {created.id}); shown only this once:", err=True
    )
    typer.echo(created.token)


@tokens_cli.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id.")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a token at once (its record stays)."""
    with connect(server, token) as client:
        client.revoke_token(token_id)
    typer.echo(f"revoked token {token_id}")
