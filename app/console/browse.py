"""`corral models list/show`, `corral requirements`, `corral leaderboard show`, `corral queue`."""

import itertools
from typing import Annotated, Literal

import typer

from corral.console.common import JsonOption, LimitOption, ServerOption, TokenOption, connect, fail
from corral.console.output import emit_json, fields, table
from corral.web.formatting import architecture_words, gib, parameter_limit, parameters, score

models_cli = typer.Typer(help="Models in the registry.", no_args_is_help=True, rich_markup_mode=None)
leaderboard_cli = typer.Typer(help="Score tables of a suite.", no_args_is_help=True, rich_markup_mode=None)


def _size(text: str | None, option: str) -> int | None:
    """A size as the pages read it: `8B` is "models named up to 8B" (Llama 3.1 8B's 8.03 B included)."""
    try:
        limit = parameter_limit(text)
    except ValueError as exc:
        fail(f"{option}: {exc}", code=2)
    return limit[0] if limit else None


@models_cli.command("list")
def models_list(
    search: Annotated[str | None, typer.Argument(help="Words in the repo id or name.")] = None,
    family: Annotated[str | None, typer.Option(help="A family slug, e.g. llama-3.1.")] = None,
    license_slug: Annotated[str | None, typer.Option("--license", help="A licence slug, e.g. llama3.1.")] = None,
    kind: Annotated[str | None, typer.Option(help="base, instruct, code, vision, guard …")] = None,
    max_parameters: Annotated[str | None, typer.Option(help="At most this size: 8B, 1.5B, 405M.")] = None,
    fits: Annotated[str | None, typer.Option(help="Fits this accelerator kind, e.g. nvidia-l4-24gb.")] = None,
    limit: LimitOption = 50,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List models, with filters."""
    filters = {
        "q": search,
        "family": family,
        "license": license_slug,
        "kind": kind,
        "max_parameters": _size(max_parameters, "--max-parameters"),
        "fits_accelerator": fits,
        "limit": min(limit, 100),
    }
    with connect(server, token) as client:
        found = list(itertools.islice(client.models(**filters), limit))
    if as_json:
        emit_json(found)
        return
    rows = [
        (m.repo_id, m.display_name, m.family, m.kind, parameters(m.parameter_count), m.license, m.release_date)
        for m in found
    ]
    table(["model", "name", "family", "kind", "parameters", "licence", "released"], rows)


@models_cli.command("show")
def models_show(
    repo_id: Annotated[str, typer.Argument(help="owner/name, e.g. meta-llama/Llama-3.1-8B.")],
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one model's record."""
    with connect(server, token) as client:
        model = client.model(repo_id)
    if as_json:
        emit_json(model)
        return
    fields(
        [
            ("model", model.repo_id),
            ("name", model.display_name),
            ("family", model.family),
            ("kind", model.kind),
            ("licence", model.license),
            ("released", model.release_date),
            ("parameters", parameters(model.parameter_count)),
            ("active", parameters(model.active_parameters) if model.active_parameters else None),
            ("architecture", architecture_words(model)),
            ("stored", gib(model.stored_weight_bytes) if model.stored_weight_bytes else None),
            ("context", f"{model.context_length:,} tokens" if model.context_length else None),
            ("precision", model.default_dtype),
            ("base model", model.base_model),
            ("unverified", ", ".join(model.unverified)),
            ("hub", f"https://huggingface.co/{model.repo_id}"),
        ]
    )


def requirements(
    repo_id: Annotated[str, typer.Argument(help="owner/name.")],
    precision: Annotated[
        str | None, typer.Option(help="bf16, fp16, fp32, fp8, int8, int4 [default: the model's].")
    ] = None,
    context_tokens: Annotated[int | None, typer.Option(help="Context to hold in the KV cache.")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Memory a model needs, and how many of each accelerator hold it."""
    with connect(server, token) as client:
        needs = client.requirements(repo_id, precision=precision, context_tokens=context_tokens)
    if as_json:
        emit_json(needs)
        return
    inference = needs.inference
    fields(
        [
            ("model", needs.model),
            ("precision", f"{needs.precision}, KV cache {needs.kv_precision}, {needs.context_tokens:,} tokens"),
            ("weights", gib(inference.weights.bytes)),
            ("KV cache", gib(inference.kv_cache.bytes)),
            ("total", f"{gib(inference.total.bytes)} ({inference.overhead_rule})"),
            ("largest piece", gib(needs.largest_piece.bytes)),
        ]
    )
    table(
        ["accelerator", "memory", "devices needed", "nodes of 8 (vLLM)"],
        [
            (fit.accelerator, gib(fit.memory_bytes), fit.count_needed or "—", fit.nodes_needed or "—")
            for fit in needs.accelerators
        ],
    )


@leaderboard_cli.command("show")
def leaderboard_show(
    suite: Annotated[str, typer.Argument(help="A suite, e.g. openllm-v2 or smoke.")],
    family: Annotated[str | None, typer.Option()] = None,
    precision: Annotated[str | None, typer.Option()] = None,
    max_parameters: Annotated[str | None, typer.Option(help="At most this size: 8B, 70B.")] = None,
    fits_on: Annotated[str | None, typer.Option(help="Only models that fit this accelerator kind.")] = None,
    output_format: Annotated[
        Literal["table", "csv", "json", "md"], typer.Option("--format", help="table, csv, json or md.")
    ] = "table",
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """A suite's leaderboard: the latest run of each model revision and settings, best first."""
    filters = {
        "family": family,
        "precision": precision,
        "max_parameters": _size(max_parameters, "--max-parameters"),
        "fits_on": fits_on,
    }
    with connect(server, token) as client:
        if output_format in ("csv", "md"):
            typer.echo(
                client.leaderboard_text(suite, "csv" if output_format == "csv" else "markdown", **filters), nl=False
            )
            return
        board = client.leaderboard(suite, **filters)
    if output_format == "json":
        emit_json(board)
        return
    rows = [
        (
            row.rank,
            row.model,
            row.revision[:12],
            row.precision,
            parameters(row.parameters),
            score(row.average),
            *(score(row.tasks[task].normalized) if task in row.tasks else "—" for task in board.tasks),
        )
        for row in board.items
    ]
    table(["#", "model", "revision", "precision", "parameters", "average", *board.tasks], rows, title=suite)


def queue(
    limit: LimitOption = 50,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """The queue in claim order, and what each job waits for."""
    with connect(server, token) as client:
        view = client.queue(limit=limit)
    if as_json:
        emit_json(view)
        return
    typer.echo(f"{view.depth} queued, {view.running} running", err=True)
    table(
        ["#", "model", "suite", "shard", "priority", "memory", "waiting for"],
        [
            (e.position, e.model, e.suite, e.shard_index, e.priority, gib(e.required_memory_bytes), e.waiting_for)
            for e in view.entries
        ],
    )
