"""What every HTTP command shares: the --server/--token/--json options, and one client per command whose
failures end the command with one line that names the server and the fix (exit 1), never a traceback."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from corral.console.profile import Target, resolve

if TYPE_CHECKING:  # the client imports the server's schemas: loaded by the command that needs it, not by --help
    from corral.client import Corral

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server", help="Corral's base URL [default: CORRAL_SERVER_URL, else `corral login`'s, else 127.0.0.1:8000]."
    ),
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="A token [default: CORRAL_TOKEN, else `corral login`'s].")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON document instead of a table.")]
LimitOption = Annotated[int, typer.Option("--limit", "-L", min=1, help="Show at most this many.")]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"corral: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def connect(server: str | None, token: str | None, *, retries: int = 1) -> Iterator["Corral"]:
    """A client for the chosen server; a CorralError inside the block ends the command with its one line."""
    from pydantic import ValidationError

    from corral.client import Corral, CorralError

    target: Target = resolve(server, token)
    try:
        with Corral(target.server, target.token, retries=retries) as client:
            yield client
    except CorralError as exc:
        fail(str(exc))
    except ValidationError as exc:  # a body the server's own schema refused, checked before sending
        said = "; ".join(f"{'.'.join(map(str, error['loc'])) or 'input'}: {error['msg']}" for error in exc.errors())
        fail(f"invalid input: {said}", code=2)
