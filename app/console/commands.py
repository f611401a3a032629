"""Puts the HTTP commands on the `corral` command line."""

import typer

from corral.console import admin, browse, evaluations, gate, login


def install(cli: typer.Typer) -> None:
    cli.command("login")(login.login)
    cli.command("logout")(login.logout)
    cli.command("whoami")(login.whoami)
    cli.add_typer(browse.models_cli, name="models")
    cli.command("requirements")(browse.requirements)
    cli.add_typer(browse.leaderboard_cli, name="leaderboard")
    cli.command("queue")(browse.queue)
    cli.add_typer(admin.runners_cli, name="runners")
    cli.add_typer(admin.tokens_cli, name="tokens")
    eval_cli = typer.Typer(
        help="Evaluations: request, follow, cancel; `run` is the CI gate.", no_args_is_help=True, rich_markup_mode=None
    )
    cli.add_typer(eval_cli, name="eval")
    eval_cli.command("run")(gate.eval_run)
    eval_cli.command("request")(evaluations.request)
    eval_cli.command("list")(evaluations.list_evaluations)
    eval_cli.command("status")(evaluations.status)
    eval_cli.command("logs")(evaluations.logs)
    eval_cli.command("cancel")(evaluations.cancel)
