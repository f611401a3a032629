"""`corral-runner`: the agent operators install on GPU machines. It talks to Corral over HTTP only.

Exit codes: 0 done; 1 failed (a check of `doctor`, a refusal by the server, a demo evaluation that failed, an
error that was not foreseen: said in one line); 2 nothing to run with (no or an unusable configuration, the runner
extra missing); 130 interrupted.
"""

import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from corral_runner.client import ServerClient, ServerError
from corral_runner.config import RunnerConfig, default_path
from corral_runner.environment import keep_secrets_out_of_sight
from corral_runner.files import write_whole
from corral_runner.protocol import RunnerRegister

cli = typer.Typer(
    name="corral-runner",
    help="Corral's runner agent: claims evaluation jobs from a Corral server and runs lm-evaluation-harness.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain help: "[default: …]" in a help string is not rich markup
    pretty_exceptions_enable=False,
)
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Config file [default: CORRAL_RUNNER_CONFIG or ~/.config/corral/runner.json]."),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"corral-runner: {message}", err=True)
    return typer.Exit(code)


def _load(config: Path | None) -> RunnerConfig:
    path = config or default_path()
    if not path.exists() and not os.environ.get("CORRAL_RUNNER_TOKEN"):
        raise fail(
            f"no runner configuration at {path}: run `corral-runner register --server URL --token TOKEN` first", 2
        )
    try:
        return RunnerConfig.load(config)
    except (ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()
        raise fail(f"the configuration at {path} cannot be used: {' '.join(first[:3])[:400]}", 2) from None


@cli.command()
def register(
    server: Annotated[str, typer.Option(help="The Corral server's base URL.")],
    token: Annotated[str, typer.Option(help="A registration token (crlreg_...) or this runner's own token (crl_...).")],
    name: Annotated[str | None, typer.Option(help="Runner name [default: the host name].")] = None,
    label: Annotated[list[str] | None, typer.Option(help="A label (repeatable).")] = None,
    max_concurrent_jobs: Annotated[int, typer.Option(min=1, max=1024)] = 1,
    config: ConfigOption = None,
) -> None:
    """Register this machine (accelerators detected) and store its credentials in the config file."""
    from corral_runner.loop import RunnerLoop

    settings = RunnerConfig.load(config, server=server, token=token)
    report = RunnerLoop(settings, ServerClient(server, token)).report()
    if token.startswith("crlreg_"):
        body = RunnerRegister(
            **report.model_dump(),
            name=name or socket.gethostname().split(".")[0],
            labels=label or [],
            max_concurrent_jobs=max_concurrent_jobs,
            max_nodes_per_job=getattr(settings.executor, "max_nodes_per_job", 1),
            registration_token=token,
        )
        token = ServerClient.register(server, body)
    runner = ServerClient(server, token).verify(report)
    saved = RunnerConfig.load(config, server=server, token=token).save(config)
    typer.echo(json.dumps({"runner": runner.name, "id": str(runner.id), "config": str(saved)}))


@cli.command("rotate-token")
def rotate_token(config: ConfigOption = None) -> None:
    """Replace this runner's token with a new one, stored in the config file; the old one stops working at once
    (stop `corral-runner run` first, and start it again after)."""
    path = config or default_path()
    if not path.exists():
        raise fail(f"no runner configuration at {path}: the new token would have nowhere to go", 2)
    settings = _load(config)
    stored = json.loads(path.read_text())
    if stored.get("token") != settings.token.get_secret_value():
        raise fail("the token in use comes from CORRAL_RUNNER_TOKEN, not the config file: rotate it there", 2)
    token = ServerClient(settings.server, stored["token"], retries=0).rotate_token()
    write_whole(path, json.dumps(stored | {"token": token}, indent=2), private=True)
    typer.echo(json.dumps({"rotated": True, "config": str(path)}))


@cli.command()
def run(
    once: Annotated[
        bool, typer.Option("--once", help="Run at most one job (none if the queue is empty), then exit.")
    ] = False,
    max_jobs: Annotated[int | None, typer.Option(help="Exit after this many jobs.")] = None,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="Exit when the queue has nothing for it.")] = False,
    hand_back_on_sigterm: Annotated[
        bool | None,
        typer.Option(
            "--hand-back-on-sigterm/--finish-on-sigterm",
            help="What SIGTERM does to the running job [default: the config's, else finish it].",
        ),
    ] = None,
    warm: Annotated[
        bool | None,
        typer.Option(
            "--warm/--cold",
            help="Keep the model loaded between jobs of the same model, or one process per job "
            "[default: the config's, else warm].",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Claim and run jobs until stopped; SIGTERM finishes the current job (or hands it back), a second hands it back."""
    keep_secrets_out_of_sight()
    _configure_logging()
    settings = _load(config)
    if hand_back_on_sigterm is not None:
        settings.hand_back_on_sigterm = hand_back_on_sigterm
    if warm is not None:
        settings.warm_worker = warm
    if settings.executor.kind == "local":  # a cluster agent only submits: lm-eval runs on the compute nodes
        _require_runner_extra()
    from corral_runner.loop import RunnerLoop

    loop = RunnerLoop(settings)
    signal.signal(signal.SIGTERM, loop.on_sigterm)
    done = loop.run(once=once, max_jobs=max_jobs, until_idle=until_idle)
    typer.echo(json.dumps({"jobs_run": done}))


@cli.command()
def doctor(config: ConfigOption = None) -> None:
    """Check what a job needs here (the server, this runner's token, lm-eval, torch and the devices, disk space,
    the sandbox), one line each with what to do; exit 1 if something is missing."""
    from corral_runner.doctor import run as run_checks

    raise typer.Exit(1 if run_checks(_load(config), typer.echo) else 0)


@cli.command()
def demo(
    admin_token: Annotated[str, typer.Option(envvar="CORRAL_TOKEN", help="An admin token of the server.")],
    server: Annotated[str, typer.Option(help="A running `corral serve`.")] = "http://127.0.0.1:8000",
    state: Annotated[Path, typer.Option(help="Where the demo keeps its model, spool and scratch.")] = Path(
        ".corral-demo"
    ),
) -> None:
    """The whole loop on this machine, no GPU: a tiny model, the smoke suite, lm-eval on the CPU, the scores."""
    _require_runner_extra()
    from corral_runner.demo import run_demo

    _configure_logging()
    raise typer.Exit(run_demo(server, admin_token, state, typer.echo))


def _require_runner_extra() -> None:
    """One line naming the install, not a traceback, where lm-eval or torch is missing (the server's install)."""
    import importlib.util

    missing = [name for name in ("torch", "lm_eval", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise fail(
            f"{', '.join(missing)} not installed: this needs the runner extra. From the source tree: "
            ".venv/bin/pip install -c constraints/cpu.txt torch==2.13.0 -e '.[runner]' (CPU torch; on a GPU "
            "machine install CUDA torch first, then -e '.[runner]')",
            2,
        )


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every request at INFO: hundreds of lines a minute from heartbeats and log appends, with
    # attempt ids in every URL. The agent logs what matters itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main() -> None:
    """No traceback reaches a person: each failure is one line (CORRAL_RUNNER_TRACEBACK=1 shows it whole)."""
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
    except httpx.TransportError as exc:
        typer.echo(f"corral-runner: the server did not answer ({type(exc).__name__}: {exc}): is it up?", err=True)
        sys.exit(1)
    except ServerError as exc:
        typer.echo(f"corral-runner: the server refused: {exc.detail} ({exc.status})", err=True)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("CORRAL_RUNNER_TRACEBACK") == "1":
            raise
        typer.echo(f"corral-runner: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
