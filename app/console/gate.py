"""`corral eval run`, the CI gate: request an evaluation (deduplicated, safe to send again), wait for it, print the
score table, and say through the exit status whether CI passes. Over the typed client, as every HTTP command."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from corral.console.profile import resolve

if TYPE_CHECKING:  # the client imports the server's schemas: loaded by the command, not by --help
    from corral.client import Corral
    from corral.evaluations.schemas import EvaluationCreate, EvaluationRead, JobRead
    from corral.scores.schemas import Comparison, TaskDelta

# Exit statuses of `corral eval run`, for CI scripts to tell outcomes apart.
PASSED, EVALUATION_FAILED, REGRESSION, TIMED_OUT, ERROR = 0, 1, 2, 3, 4
TERMINAL = {"succeeded", "partial", "failed", "canceled"}
GATEWAY_STATUSES = (502, 503, 504)  # a proxy in front of a server that is restarting


class GateError(Exception):
    """Something the gate cannot get past: a usage error, or no baseline to compare with."""


# What must match between a run and its baseline for a difference in scores to mean a difference in the model.
MATCHED_SETTINGS = ("suite_version", "limit", "num_fewshot", "apply_chat_template", "fewshot_as_multiturn", "precision")


def find_baseline(client: Corral, spec: str, wanted: EvaluationCreate, *, allow_partial: bool) -> EvaluationRead:
    """The newest complete succeeded evaluation of REPO@REF (sha or alias) on the suite, with the same precision
    and chat template; a partial one (some tasks missing) only when allowed. A sample (a `limit` run) is never a
    baseline."""
    if "@" not in spec:
        raise GateError(f"--baseline must be REPO@SHA or REPO@ALIAS, not {spec!r}")
    repo, ref = spec.rsplit("@", 1)
    sha = client.revision(repo, ref).sha
    states = ("succeeded", "partial") if allow_partial else ("succeeded",)
    found = [
        summary
        for state in states
        for summary in client.evaluations(model=repo, suite=wanted.suite, state=state)
        if summary.revision == sha
    ]
    samples = 0
    for summary in sorted(found, key=lambda summary: summary.created_at, reverse=True):
        if summary.sample:
            samples += 1
            continue
        evaluation = client.evaluation(str(summary.id))
        config = evaluation.config
        if (config["precision"], config["apply_chat_template"]) == (wanted.precision, wanted.apply_chat_template):
            return evaluation
    kind = "succeeded or partial" if allow_partial else "succeeded"
    skipped = f" ({samples} sample run{'s' if samples != 1 else ''} with a limit skipped: never a baseline)"
    raise GateError(
        f"no complete {kind} {wanted.suite} evaluation of {repo}@{sha[:12]} with the same precision and chat "
        f"template" + (skipped if samples else "")
    )


def unmatched(comparison: Comparison) -> list[str]:
    """The settings that differ between the baseline and the run, as `name base → candidate`."""
    return [
        f"{name} {difference['base']!r} → {difference['candidate']!r}"
        for name, difference in comparison.config_differences.items()
        if name in MATCHED_SETTINGS
    ]


def failing(comparison: Comparison | None, max_drop: float) -> list[TaskDelta]:
    """Rows that fail the gate: a drop of more than `max_drop` points that is significant, or that cannot be
    judged because a side has no stderr (the gate errs on the side of failing)."""
    rows = [*comparison.tasks, comparison.average] if comparison else []
    return [row for row in rows if row.delta is not None and row.delta < -max_drop and row.significant is not False]


def _delta_cell(delta: TaskDelta | None, failed: bool) -> str:
    if delta is None or delta.delta is None:
        return " — |"
    notes = []
    if failed:
        notes.append("❌ regression")
    if delta.significant is None:
        notes.append("no stderr: not judged for significance")
    elif delta.significant:
        notes.append("significant")
    return f" {delta.delta:+.2f}" + (f" ({'; '.join(notes)})" if notes else "") + " |"


def markdown_table(evaluation: EvaluationRead, comparison: Comparison | None, max_drop: float = 1.0) -> str:
    summary = evaluation.summary
    deltas = {row.task: row for row in comparison.tasks} if comparison else {}
    failed = {row.task for row in failing(comparison, max_drop)}
    lines = [
        f"### {evaluation.suite} · {evaluation.model}@{evaluation.revision[:12]} · {evaluation.state.value}",
        "",
        "| task | score | ± stderr | raw |" + (" Δ vs baseline |" if comparison else ""),
        "|---|---:|---:|---:|" + ("---:|" if comparison else ""),
    ]
    for name, values in (summary["tasks"] if summary else {}).items():
        stderr = "" if values["stderr"] is None else f"{values['stderr']:.2f}"
        row = f"| {name} | {values['normalized']:.2f} | {stderr} | {values['raw']:.4f} |"
        if comparison:
            row += _delta_cell(deltas.get(name), name in failed)
        lines.append(row)
    average, average_stderr = evaluation.average, summary["average_stderr"] if summary else None
    row = (
        f"| **average** | **{average:.2f}** | {'' if average_stderr is None else f'{average_stderr:.2f}'} | |"
        if average is not None
        else "| **average** | — | | |"
    )
    if comparison:
        row += _delta_cell(comparison.average, "average" in failed)
    lines.append(row)
    return "\n".join(lines) + "\n"


def job_words(job: JobRead) -> str:
    """One job as a person reads it: `corral_smoke_mc: running 42 % (running requests)`, `…: queued (capable
    runners are busy)`, `…: failed (out_of_memory: …)`; a percentage only while it runs."""
    state = job.state.value
    words = f"{'+'.join(job.tasks)}: {state}"
    attempt = job.attempts[-1] if job.attempts else None
    if attempt is not None and state == "running":
        progress = attempt.progress or {}
        if "overall" in progress:
            words += f" {progress['overall']:.0%}"
        if progress.get("stage"):
            words += f" ({progress['stage']})"
    elif state == "queued" and job.waiting_for:
        words += f" ({job.waiting_for})"
    if state == "failed" and attempt is not None and attempt.failure_category:
        first_line = (attempt.failure_message or "").split("\n")[0][:120]
        words += f" ({attempt.failure_category}: {first_line})"
    return words


def _poll(client: Corral, evaluation_id: str, progress: Callable[[str], None]) -> EvaluationRead | None:
    """The evaluation now, or None while the server is away (restarting, behind a proxy answering 502-504): the
    wait goes on until its timeout, as `gh run watch` does."""
    from corral.client import ApiError, ServerUnreachable

    try:
        return client.evaluation(evaluation_id)
    except ServerUnreachable:
        progress("server unreachable; still waiting")
    except ApiError as exc:
        if exc.status not in GATEWAY_STATUSES:
            raise
        progress(f"server answered {exc.status}; still waiting")
    return None


def _wait(
    client: Corral, evaluation: EvaluationRead, timeout: float, poll_seconds: float, progress: Callable[[str], None]
) -> EvaluationRead | None:
    """The evaluation once it ended, or None at the timeout."""
    deadline, last = time.monotonic() + timeout, ""
    while evaluation.state.value not in TERMINAL:
        if time.monotonic() > deadline:
            progress(f"timed out after {timeout:.0f} s; evaluation {evaluation.id} is {evaluation.state.value}")
            return None
        time.sleep(poll_seconds)
        evaluation = _poll(client, str(evaluation.id), progress) or evaluation
        line = "; ".join(job_words(job) for job in evaluation.jobs)
        if line != last:
            progress(line)
            last = line
    return evaluation


def run_gate(
    client: Corral,
    request: EvaluationCreate,
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
    allow_different_settings: bool = False,
) -> int:
    """Request (deduplicated, retry-safe), wait, print the table, and say whether CI should pass."""
    reference = None
    if baseline is not None:  # checked first: a typo must not cost a whole evaluation
        reference = find_baseline(client, baseline, request, allow_partial=allow_partial_baseline)
        progress(f"baseline: evaluation {reference.id} ({reference.state.value})")
    run_id = os.environ.get("GITHUB_RUN_ID") or os.environ.get("CI_PIPELINE_ID") or ""
    sent = request.model_dump(mode="json", exclude_unset=True)
    key = hashlib.sha256(json.dumps([sent, run_id], sort_keys=True).encode()).hexdigest()
    requested = client.request_evaluation(request, idempotency_key=key)
    progress(f"evaluation {requested.id} ({requested.state.value})")
    if not wait:
        echo(json.dumps({"id": str(requested.id), "state": requested.state.value}))
        return PASSED
    evaluation = _wait(client, requested, timeout, poll_seconds, progress)
    if evaluation is None:
        return TIMED_OUT
    if evaluation.state.value != "succeeded":
        progress(f"evaluation {evaluation.state.value}: {evaluation.failure_message or 'no reason given'}")
        echo(evaluation.model_dump_json() if output_format == "json" else markdown_table(evaluation, None))
        return EVALUATION_FAILED
    comparison = client.compare(str(reference.id), str(evaluation.id)) if reference is not None else None
    if comparison is not None and (differences := unmatched(comparison)) and not allow_different_settings:
        echo(evaluation.model_dump_json() if output_format == "json" else markdown_table(evaluation, None))
        progress(
            f"the baseline {comparison.base} ran with other settings ({'; '.join(differences)}): its scores say "
            "nothing about this run's; pass --allow-different-settings to compare anyway"
        )
        return ERROR
    if output_format == "json":
        shown = {"evaluation": evaluation.model_dump(mode="json"), "comparison": None}
        shown["comparison"] = comparison.model_dump(mode="json") if comparison else None
        echo(json.dumps(shown))
    else:
        echo(markdown_table(evaluation, comparison, max_drop))
    drops = failing(comparison, max_drop)
    if drops:
        said = [
            f"{row.task} {row.delta:+.2f}"
            + (" (no stderr: not judged for significance)" if row.significant is None else "")
            for row in drops
            if row.delta is not None
        ]
        progress("regression: " + ", ".join(said))
        return REGRESSION
    return PASSED


def eval_run(
    model: Annotated[str, typer.Option(help="Hub repo id, as registered.")],
    revision: Annotated[str, typer.Option(help="Commit sha (or a Hub branch with --ref).")],
    suite: Annotated[str, typer.Option(help="Suite name, e.g. openllm-v2 or smoke.")],
    server: Annotated[
        str | None,
        typer.Option(
            help="Corral's base URL [default: CORRAL_SERVER_URL, else `corral login`'s, else 127.0.0.1:8000]."
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="A publish token [default: CORRAL_TOKEN, else `corral login`'s].")
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
    allow_different_settings: Annotated[
        bool,
        typer.Option(help="Compare with a baseline run with another limit, suite version, few-shot or template."),
    ] = False,
    max_drop: Annotated[float, typer.Option(help="Normalized points a task may drop before failing.")] = 1.0,
    output_format: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
) -> None:
    """Request an evaluation (deduplicated), wait, print the score table; non-zero exit on failure or regression."""
    if output_format not in ("markdown", "json"):
        raise typer.BadParameter("--format is markdown or json")
    from pydantic import ValidationError

    from corral.client import Corral, CorralError
    from corral.evaluations.schemas import EvaluationCreate

    target = resolve(server, token)
    fields: dict[str, object] = {"model": model, "suite": suite, "precision": precision, "limit": limit}
    fields["ref" if ref else "revision"] = revision
    if chat_template:
        fields |= {"apply_chat_template": True, "fewshot_as_multiturn": True}
    try:
        request = EvaluationCreate.model_validate({key: value for key, value in fields.items() if value is not None})
        with Corral(target.server, target.token, retries=4) as client:
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
                allow_different_settings=allow_different_settings,
                echo=typer.echo,
                progress=lambda line: typer.echo(line, err=True),
            )
    except (GateError, CorralError) as exc:
        typer.echo(f"corral eval run: {exc}", err=True)
        code = ERROR
    except ValidationError as exc:  # what the server would refuse, said before anything is sent
        said = "; ".join(f"{'.'.join(map(str, error['loc'])) or 'input'}: {error['msg']}" for error in exc.errors())
        typer.echo(f"corral eval run: invalid input: {said}", err=True)
        code = ERROR
    raise typer.Exit(code)
