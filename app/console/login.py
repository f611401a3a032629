"""`corral login`, `corral logout`, `corral whoami`."""

import sys
from typing import Annotated

import typer

from corral.console.common import ServerOption, TokenOption, connect, fail
from corral.console.output import fields
from corral.console.profile import DEFAULT_SERVER, Login, forget_login, login_path, resolve, save_login


def login(
    server: Annotated[str, typer.Option(help="Corral's base URL.")] = DEFAULT_SERVER,
    token: Annotated[
        str | None, typer.Option(help="A token (crl_…); else read from stdin, or asked for on a terminal.")
    ] = None,
) -> None:
    """Check a token against a server and remember both (mode 600) for the other commands."""
    if token is None:
        # On a terminal, asked for without echo; in a pipeline, from stdin (`echo $TOKEN | corral login`), as gh does.
        token = typer.prompt("Token", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline()
    token = token.strip()
    if not token:
        fail("no token given: pass --token, pipe it on stdin, or type it when asked", code=2)
    with connect(server, token) as client:
        who = client.whoami()
    path = save_login(Login(server=server.rstrip("/"), token=token))
    typer.echo(f"Logged in to {server} as token {who.name!r} ({who.scope.value}); saved in {path}")


def logout() -> None:
    """Forget the stored server and token."""
    if forget_login():
        typer.echo(f"Removed {login_path()}")
    else:
        typer.echo("Not logged in: nothing to remove")


def whoami(server: ServerOption = None, token: TokenOption = None) -> None:
    """Which server and token the other commands use, and what the token may do."""
    target = resolve(server, token)
    if target.token is None:
        fields([("server", f"{target.server} (from {target.source})"), ("token", "none: run `corral login`")])
        return
    with connect(server, token) as client:
        who = client.whoami()
    fields(
        [
            ("server", f"{target.server} (from {target.source})"),
            ("token", f"{who.name} ({who.key_id})"),
            ("scope", who.scope.value),
            ("expires", who.expires_at),
        ]
    )
