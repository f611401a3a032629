"""`corral-runner`: the agent operators install on GPU machines (its commands arrive with the runner issue)."""

import typer

cli = typer.Typer(
    name="corral-runner",
    help=(
        "Corral's runner agent: registers this machine with a Corral server, claims evaluation jobs, runs "
        "lm-evaluation-harness and uploads the results. Not implemented yet: this build only prints this help."
    ),
    add_completion=False,
)


@cli.callback(invoke_without_command=True)
def _root(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


def main() -> None:
    cli()
