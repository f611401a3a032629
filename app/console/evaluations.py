"""`corral eval request/list/status/logs/cancel` (beside `eval run`, the CI gate in app.console.gate)."""

import itertools
import time
from typing import TYPE_CHECKING, Annotated

import typer

from corral.console.common import JsonOption, LimitOption, ServerOption, TokenOption, connect, fail
from corral.console.gate import job_words
from corral.console.output import emit_json, fields, on_terminal, table
from corral.web.formatting import score

if TYPE_CHECKING:
    from corral.client import Corral
    from corral.evaluations.schemas import EvaluationRead, JobRead

TERMINAL = {"succeeded", "partial", "failed", "canceled"}
FOLLOW_SECONDS = 2.0
# A followed log is asked for more four times a second (the runner streams it as often); the evaluation itself,
# to know when to stop, at the FOLLOW_SECONDS pace.
LOG_POLL_SECONDS = 0.5


def job_line(job: "JobRead") -> str:
    """The CI gate's words for a job (one rendering of a job's state for every command)."""
    return job_words(job)


def _fraction_done(job: "JobRead") -> float:
    if job.state.value == "succeeded":
        return 1.0
    return float((job.attempts[-1].progress or {}).get("overall", 0.0)) if job.attempts else 0.0


def request(
    model: Annotated[str, typer.Argument(help="owner/name, as registered.")],
    suite: Annotated[str, typer.Argument(help="A suite, e.g. openllm-v2 or smoke.")],
    revision: Annotated[str | None, typer.Option(help="A recorded commit sha.")] = None,
    ref: Annotated[str | None, typer.Option(help="A Hub branch or tag, resolved to its sha now.")] = None,
    alias: Annotated[str | None, typer.Option(help="A Corral alias of the model (e.g. champion).")] = None,
    precision: Annotated[str, typer.Option()] = "bf16",
    chat_template: Annotated[bool, typer.Option("--chat-template/--no-chat-template")] = False,
    limit: Annotated[int | None, typer.Option(help="Samples per task (smoke runs only).")] = None,
    priority: Annotated[int | None, typer.Option(help="Higher is claimed first.")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Request an evaluation (deduplicated: the same request finds the same evaluation) and print its id."""
    from corral.evaluations.schemas import EvaluationCreate

    if sum(value is not None for value in (revision, ref, alias)) != 1:
        fail("give exactly one of --revision, --ref or --alias", code=2)
    body: dict[str, object] = {"model": model, "suite": suite, "precision": precision}
    body |= {key: value for key, value in (("revision", revision), ("ref", ref), ("alias", alias)) if value}
    if chat_template:
        body |= {"apply_chat_template": True, "fewshot_as_multiturn": True}
    body |= {key: value for key, value in (("limit", limit), ("priority", priority)) if value is not None}
    with connect(server, token, retries=4) as client:
        evaluation = client.request_evaluation(EvaluationCreate.model_validate(body))
    if as_json:
        emit_json(evaluation)
        return
    typer.echo(str(evaluation.id))
    typer.echo(f"{evaluation.state.value}; follow it with: corral eval status {evaluation.id} --watch", err=True)


def list_evaluations(
    model: Annotated[str | None, typer.Option(help="owner/name.")] = None,
    suite: Annotated[str | None, typer.Option()] = None,
    state: Annotated[str | None, typer.Option(help="queued, running, succeeded, partial, failed, canceled.")] = None,
    limit: LimitOption = 30,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluations, newest first."""
    with connect(server, token) as client:
        found = list(
            itertools.islice(client.evaluations(model=model, suite=suite, state=state, limit=min(limit, 100)), limit)
        )
    if as_json:
        emit_json(found)
        return
    table(
        ["id", "model", "revision", "suite", "state", "requested"],
        [
            (
                e.id,
                e.model,
                e.revision[:12],
                e.suite + (" (sample)" if e.sample else ""),
                e.state.value,
                f"{e.created_at:%Y-%m-%d %H:%M}",
            )
            for e in found
        ],
    )


def _show(evaluation: "EvaluationRead") -> None:
    fields(
        [
            ("evaluation", evaluation.id),
            ("model", f"{evaluation.model}@{evaluation.revision[:12]}"),
            ("suite", f"{evaluation.suite} ({evaluation.suite_version})"),
            ("state", evaluation.state.value),
            (
                "sample",
                f"limit {evaluation.config['limit']}: never ranked, never a baseline" if evaluation.sample else None,
            ),
            ("average", score(evaluation.average) if evaluation.average is not None else None),
            ("failure", evaluation.failure_message),
        ]
    )
    rows = []
    for job in evaluation.jobs:
        attempt = job.attempts[-1] if job.attempts else None
        rows.append(
            (
                job.shard_index,
                "+".join(job.tasks),
                job.state.value,
                len(job.attempts),
                attempt.runner if attempt else "",
                (attempt.external_ref or "") if attempt else "",
                job_line(job).split(": ", 1)[1],
            )
        )
    table(["shard", "tasks", "state", "attempts", "runner", "where", "status"], rows)


def _watch(client: "Corral", evaluation_id: str) -> "EvaluationRead":
    """Until the evaluation ends: progress bars on a terminal, a line per change otherwise; a server that goes
    away for a while (a restart) is waited for."""
    from corral.client import ServerUnreachable

    def fetch() -> "EvaluationRead | None":
        try:
            return client.evaluation(evaluation_id)
        except ServerUnreachable as exc:
            typer.echo(f"corral: {exc}; trying again", err=True)
            return None

    evaluation = client.evaluation(evaluation_id)
    if not on_terminal():
        last = ""
        while evaluation.state.value not in TERMINAL:
            line = "; ".join(job_line(job) for job in evaluation.jobs)
            if line != last:
                typer.echo(line, err=True)
                last = line
            time.sleep(FOLLOW_SECONDS)
            evaluation = fetch() or evaluation
        return evaluation
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), transient=False) as bars:
        ids = {job.id: bars.add_task("+".join(job.tasks), total=1.0) for job in evaluation.jobs}
        while True:
            for job in evaluation.jobs:
                bars.update(ids[job.id], completed=_fraction_done(job), description=job_line(job)[:80])
            if evaluation.state.value in TERMINAL:
                return evaluation
            time.sleep(FOLLOW_SECONDS)
            evaluation = fetch() or evaluation


def status(
    evaluation_id: Annotated[str, typer.Argument(help="The evaluation's id.")],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow it until it ends.")] = False,
    server: ServerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """An evaluation: its jobs, their attempts and progress, why it waits or failed. Exit 1 if it did not succeed."""
    with connect(server, token, retries=4) as client:
        evaluation = _watch(client, evaluation_id) if watch else client.evaluation(evaluation_id)
    if as_json:
        emit_json(evaluation)
    else:
        _show(evaluation)
    if watch and evaluation.state.value != "succeeded":
        raise typer.Exit(1)


def logs(
    evaluation_id: Annotated[str, typer.Argument(help="The evaluation's id.")],
    shard: Annotated[int | None, typer.Option(help="Only this job (shard index) [default: every job].")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing as the runner sends more.")] = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """The runner's log of each job's latest attempt; with --follow, until the evaluation ends."""
    with connect(server, token, retries=4) as client:
        evaluation = client.evaluation(evaluation_id)
        jobs = [job for job in evaluation.jobs if shard is None or job.shard_index == shard]
        if not jobs:
            fail(f"evaluation {evaluation_id} has no job with shard index {shard}", code=2)
        offsets: dict[str, int] = {}
        mid_line: dict[str, bool] = {}
        looked_at = time.monotonic()
        while True:
            for job in jobs:
                if not job.attempts:
                    continue
                attempt = str(job.attempts[-1].id)
                data = client.attempt_log(attempt, offsets.get(attempt, 0))
                if data:
                    prefix = f"[{job.shard_index}] " if len(jobs) > 1 else ""
                    pieces = data.decode("utf-8", errors="replace").split("\n")
                    # The prefix goes where a line starts: a chunk may end mid-line, and "\r" progress bars stay
                    # on their line.
                    for index, piece in enumerate(pieces):
                        if piece:
                            typer.echo(piece if mid_line.get(attempt) else prefix + piece, nl=False)
                            mid_line[attempt] = True
                        if index < len(pieces) - 1:
                            typer.echo("")
                            mid_line[attempt] = False
                    offsets[attempt] = offsets.get(attempt, 0) + len(data)
            if not follow or evaluation.state.value in TERMINAL:
                return
            time.sleep(LOG_POLL_SECONDS)
            if time.monotonic() >= looked_at + FOLLOW_SECONDS:
                evaluation, looked_at = client.evaluation(evaluation_id), time.monotonic()
                jobs = [job for job in evaluation.jobs if shard is None or job.shard_index == shard]


def cancel(
    evaluation_id: Annotated[str, typer.Argument(help="The evaluation's id.")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Cancel an evaluation: queued jobs at once, running ones at their next heartbeat."""
    with connect(server, token, retries=4) as client:
        evaluation = client.cancel_evaluation(evaluation_id)
    typer.echo(f"evaluation {evaluation.id}: {evaluation.state.value}")
