"""`corral results import`: lm-eval output produced elsewhere, backfilled into the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

results_cli = typer.Typer(help="lm-eval results produced outside Corral.", no_args_is_help=True, rich_markup_mode=None)


def find_results_file(path: Path) -> Path:
    """A results JSON, or the newest results_*.json under an lm-eval output directory."""
    if path.is_file():
        return path
    found = sorted(path.rglob("results_*.json"), key=lambda candidate: candidate.stat().st_mtime)
    if not found:
        raise typer.BadParameter(f"no results_*.json under {path}")
    return found[-1]


@results_cli.command("import")
def results_import(
    path: Annotated[Path, typer.Argument(exists=True, help="A results JSON file or an lm-eval output directory.")],
    model: Annotated[str, typer.Option(help="Registered Hub repo id.")],
    revision: Annotated[str, typer.Option(help="Recorded commit sha.")],
    suite: Annotated[str, typer.Option(help="The suite the results belong to.")],
    precision: Annotated[str, typer.Option()] = "bf16",
    chat_template: Annotated[bool, typer.Option("--chat-template/--no-chat-template")] = False,
) -> None:
    """Import lm-eval results produced elsewhere as a finished evaluation (idempotent)."""
    import asyncio

    from corral.config import SettingsError, load_settings
    from corral.db import in_unit_of_work
    from corral.errors import ProblemError
    from corral.evaluations.imports import ImportService
    from corral.evaluations.schemas import ResultsImport

    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(f"corral: {exc}", err=True)
        raise typer.Exit(2) from None
    source = find_results_file(path)
    try:
        body = ResultsImport.model_validate(
            {
                "model": model,
                "revision": revision,
                "suite": suite,
                "precision": precision,
                "apply_chat_template": chat_template,
                "fewshot_as_multiturn": chat_template,
                "results": json.loads(source.read_text()),
            }
        )
        evaluation_id, created = asyncio.run(
            in_unit_of_work(
                settings, lambda session: ImportService(session).import_results(body, "corral results import")
            )
        )
    except ProblemError as exc:
        typer.echo(f"corral results import: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:  # invalid JSON or options
        typer.echo(f"corral results import: {source}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"evaluation_id": str(evaluation_id), "created": created, "source": str(source)}))
