"""`corral eval run` (the CI gate, over HTTP) and `corral results import` (backfill, on the database)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # imported by the commands themselves: the CLI starts without the service's modules
    import httpx

eval_cli = typer.Typer(
    help="Evaluations from CI: request, wait, gate on a baseline.", no_args_is_help=True, rich_markup_mode=None
)
results_cli = typer.Typer(help="lm-eval results produced outside Corral.", no_args_is_help=True, rich_markup_mode=None)

# Exit statuses of `corral eval run`, for CI scripts to tell outcomes apart.
PASSED, EVALUATION_FAILED, REGRESSION, TIMED_OUT, ERROR = 0, 1, 2, 3, 4
TERMINAL = {"succeeded", "partial", "failed", "canceled"}


class GateError(Exception):
    """Something the gate cannot get past: the server's problem detail, or a usage error."""


def _answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise GateError(f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}")
    return response.json()


def find_baseline(
    client: httpx.Client, spec: str, suite: str, settings: dict[str, Any], *, allow_partial: bool = False
) -> dict[str, Any]:
    """The newest succeeded evaluation of REPO@REF (sha or alias) on the suite, with the same settings class; a
    partial one (some tasks missing) only when allowed."""
    if "@" not in spec:
        raise GateError(f"--baseline must be REPO@SHA or REPO@ALIAS, not {spec!r}")
    repo, ref = spec.rsplit("@", 1)
    sha = _answer(client.get(f"/v1/models/{repo}/revisions/{ref}"))["sha"]
    states = ("succeeded", "partial") if allow_partial else ("succeeded",)
    candidates = []
    for state in states:
        params: dict[str, str | int] = {"model": repo, "suite": suite, "state": state, "limit": 200}
        candidates += _answer(client.get("/v1/evaluations", params=params))["items"]
    candidates.sort(key=lambda summary: summary["created_at"], reverse=True)
    for summary in candidates:
        if summary["revision"] != sha:
            continue
        evaluation = _answer(client.get(f"/v1/evaluations/{summary['id']}"))
        config = evaluation["config"]
        if (config["precision"], config["apply_chat_template"]) == (
            settings.get("precision", "bf16"),
            settings.get("apply_chat_template", False),
        ):
            return dict(evaluation)
    kind = "succeeded or partial" if allow_partial else "succeeded"
    raise GateError(f"no {kind} {suite} evaluation of {repo}@{sha[:12]} with the same precision and chat template")


def failing(comparison: dict[str, Any] | None, max_drop: float) -> list[dict[str, Any]]:
    """Rows that fail the gate: a drop of more than `max_drop` points that is significant, or that cannot be
    judged because a side has no stderr (the gate errs on the side of failing)."""
    rows = [*comparison["tasks"], comparison["average"]] if comparison else []
    return [
        item
        for item in rows
        if item["delta"] is not None and item["delta"] < -max_drop and item["significant"] is not False
    ]


def _delta_cell(delta: dict[str, Any], failed: bool) -> str:
    if delta.get("delta") is None:
        return " — |"
    notes = []
    if failed:
        notes.append("❌ regression")
    if delta.get("significant") is None:
        notes.append("no stderr: not judged for significance")
    elif delta.get("significant"):
        notes.append("significant")
    return f" {delta['delta']:+.2f}" + (f" ({'; '.join(notes)})" if notes else "") + " |"


def markdown_table(evaluation: dict[str, Any], comparison: dict[str, Any] | None, max_drop: float = 1.0) -> str:
    tasks = (evaluation.get("summary") or {}).get("tasks", {})
    deltas = {item["task"]: item for item in (comparison or {}).get("tasks", [])}
    failed = {item["task"] for item in failing(comparison, max_drop)}
    lines = [
        f"### {evaluation['suite']} · {evaluation['model']}@{evaluation['revision'][:12]} · {evaluation['state']}",
        "",
        "| task | score | ± stderr | raw |" + (" Δ vs baseline |" if comparison else ""),
        "|---|---:|---:|---:|" + ("---:|" if comparison else ""),
    ]
    for name, values in tasks.items():
        stderr = "" if values["stderr"] is None else f"{values['stderr']:.2f}"
        row = f"| {name} | {values['normalized']:.2f} | {stderr} | {values['raw']:.4f} |"
        if comparison:
            row += _delta_cell(deltas.get(name, {}), name in failed)
        lines.append(row)
    average = evaluation.get("average")
    average_stderr = (evaluation.get("summary") or {}).get("average_stderr")
    row = (
        f"| **average** | **{average:.2f}** | {'' if average_stderr is None else f'{average_stderr:.2f}'} | |"
        if average is not None
        else "| **average** | — | | |"
    )
    if comparison:
        row += _delta_cell(comparison["average"], "average" in failed)
    lines.append(row)
    return "\n".join(lines) + "\n"


def job_words(job: dict[str, Any]) -> str:
    """One job as a person reads it (the API's job document): `corral_smoke_mc: running 42 % (running requests)`,
    `…: queued (capable runners are busy)`, `…: failed (out_of_memory: …)`; a percentage only while it runs."""
    words = f"{'+'.join(job['tasks'])}: {job['state']}"
    attempt = job["attempts"][-1] if job["attempts"] else None
    if attempt is not None and job["state"] == "running":
        progress = attempt["progress"] or {}
        if "overall" in progress:
            words += f" {progress['overall']:.0%}"
        if progress.get("stage"):
            words += f" ({progress['stage']})"
    elif job["state"] == "queued" and job.get("waiting_for"):
        words += f" ({job['waiting_for']})"
    if job["state"] == "failed" and attempt is not None and attempt["failure_category"]:
        first_line = (attempt["failure_message"] or "").split("\n")[0][:120]
        words += f" ({attempt['failure_category']}: {first_line})"
    return words


def _poll(client: httpx.Client, evaluation_id: str, progress: Callable[[str], None]) -> dict[str, Any] | None:
    """The evaluation now, or None while the server is away (restarting, behind a proxy answering 502-504): the
    wait goes on until its timeout, as `gh run watch` does."""
    import httpx

    try:
        response = client.get(f"/v1/evaluations/{evaluation_id}")
    except httpx.TransportError as exc:
        progress(f"server unreachable ({type(exc).__name__}); still waiting")
        return None
    if response.status_code in (502, 503, 504):
        progress(f"server answered {response.status_code}; still waiting")
        return None
    return dict(_answer(response))


def run_gate(
    client: httpx.Client,
    request: dict[str, Any],
    *,
    wait: bool,
    timeout: float,
    poll_seconds: float,
    baseline: str | None,
    max_drop: float,
    output_format: str,
    echo: Callable[[str], None],
    progress: Callable[[str], None],
    allow_partial_baseline: bool = False,
) -> int:
    """Request (deduplicated, retry-safe), wait, print the table, and say whether CI should pass."""
    reference = None
    if baseline is not None:  # checked first: a typo must not cost a whole evaluation
        reference = find_baseline(client, baseline, request["suite"], request, allow_partial=allow_partial_baseline)
        progress(f"baseline: evaluation {reference['id']} ({reference['state']})")
    run_id = os.environ.get("GITHUB_RUN_ID") or os.environ.get("CI_PIPELINE_ID") or ""
    key = hashlib.sha256(json.dumps([request, run_id], sort_keys=True).encode()).hexdigest()
    evaluation = _answer(client.post("/v1/evaluations", json=request, headers={"Idempotency-Key": key}))
    progress(f"evaluation {evaluation['id']} ({evaluation['state']})")
    if not wait:
        echo(json.dumps({"id": evaluation["id"], "state": evaluation["state"]}))
        return PASSED
    deadline = time.monotonic() + timeout
    last = ""
    while evaluation["state"] not in TERMINAL:
        if time.monotonic() > deadline:
            progress(f"timed out after {timeout:.0f} s; evaluation {evaluation['id']} is {evaluation['state']}")
            return TIMED_OUT
        time.sleep(poll_seconds)
        polled = _poll(client, evaluation["id"], progress)
        if polled is None:
            continue
        evaluation = polled
        line = "; ".join(job_words(job) for job in evaluation["jobs"])
        if line != last:
            progress(line)
            last = line
    if evaluation["state"] != "succeeded":
        reason = evaluation.get("failure_message") or "no reason given"
        progress(f"evaluation {evaluation['state']}: {reason}")
        echo(json.dumps(evaluation) if output_format == "json" else markdown_table(evaluation, None))
        return EVALUATION_FAILED
    comparison = None
    if reference is not None:
        comparison = _answer(client.get("/v1/compare", params={"base": reference["id"], "candidate": evaluation["id"]}))
    if output_format == "json":
        echo(json.dumps({"evaluation": evaluation, "comparison": comparison}))
    else:
        echo(markdown_table(evaluation, comparison, max_drop))
    drops = failing(comparison, max_drop)
    if drops:
        progress(
            "regression: "
            + ", ".join(
                f"{item['task']} {item['delta']:+.2f}"
                + (" (no stderr: not judged for significance)" if item["significant"] is None else "")
                for item in drops
            )
        )
        return REGRESSION
    return PASSED


@eval_cli.command("run")
def eval_run(
    model: Annotated[str, typer.Option(help="Hub repo id, as registered.")],
    revision: Annotated[str, typer.Option(help="Commit sha (or a Hub branch with --ref).")],
    suite: Annotated[str, typer.Option(help="Suite name, e.g. openllm-v2 or smoke.")],
    server: Annotated[
        str, typer.Option(envvar="CORRAL_SERVER_URL", help="Corral's base URL.")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None, typer.Option(envvar="CORRAL_TOKEN", help="A publish token.", show_default=False)
    ] = None,
    ref: Annotated[bool, typer.Option("--ref", help="REVISION is a Hub branch or tag, resolved now.")] = False,
    precision: Annotated[str, typer.Option()] = "bf16",
    chat_template: Annotated[bool, typer.Option("--chat-template/--no-chat-template")] = False,
    limit: Annotated[int | None, typer.Option(help="Samples per task (for smoke runs only).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the result.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 6 * 3600,
    poll: Annotated[float, typer.Option(help="Seconds between status checks.")] = 10.0,
    baseline: Annotated[str | None, typer.Option(help="REPO@SHA or REPO@ALIAS to compare with.")] = None,
    allow_partial_baseline: Annotated[
        bool, typer.Option(help="Take a partial baseline run (some tasks missing) when no complete one exists.")
    ] = False,
    max_drop: Annotated[float, typer.Option(help="Normalized points a task may drop before failing.")] = 1.0,
    output_format: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
) -> None:
    """Request an evaluation (deduplicated), wait, print the score table; non-zero exit on failure or regression."""
    if output_format not in ("markdown", "json"):
        raise typer.BadParameter("--format is markdown or json")
    request: dict[str, Any] = {"model": model, "suite": suite, "precision": precision}
    request["ref" if ref else "revision"] = revision
    if chat_template:
        request |= {"apply_chat_template": True, "fewshot_as_multiturn": True}
    if limit is not None:
        request["limit"] = limit
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    import httpx

    with httpx.Client(base_url=server, headers=headers, timeout=60) as client:
        try:
            code = run_gate(
                client,
                request,
                wait=wait,
                timeout=timeout,
                poll_seconds=poll,
                baseline=baseline,
                max_drop=max_drop,
                output_format=output_format,
                allow_partial_baseline=allow_partial_baseline,
                echo=typer.echo,
                progress=lambda line: typer.echo(line, err=True),
            )
        except (GateError, httpx.HTTPError) as exc:
            typer.echo(f"corral eval run: {exc}", err=True)
            code = ERROR
    raise typer.Exit(code)


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

    from app.config import SettingsError, load_settings
    from app.db import in_unit_of_work
    from app.errors import ProblemError
    from app.evaluations.imports import ImportService
    from app.evaluations.schemas import ResultsImport

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
