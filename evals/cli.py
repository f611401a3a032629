"""`corral-runner`: the agent operators install on GPU machines. It talks to Corral over HTTP only."""

import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from evals import hardware
from evals.client import ServerClient, ServerError
from evals.config import RunnerConfig
from evals.environment import never_passed

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


def _load(config: Path | None) -> RunnerConfig:
    try:
        return RunnerConfig.load(config)
    except (ValueError, OSError) as exc:
        typer.echo(f"corral-runner: no usable configuration ({exc}); run `corral-runner register` first", err=True)
        raise typer.Exit(2) from None


def _report(settings: RunnerConfig) -> dict[str, Any]:
    """What this runner offers: this machine's devices, or a cluster's node shapes read from the engine."""
    if settings.executor.kind == "local":
        return hardware.report()
    from evals.cluster_agent import ClusterAgent
    from evals.executors import engine_for

    return ClusterAgent(settings).report(engine_for(settings.executor))


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
    settings = RunnerConfig.load(config, server=server, token=token)
    report = _report(settings)
    if token.startswith("crlreg_"):
        max_nodes = getattr(settings.executor, "max_nodes_per_job", 1)
        body = {
            **report,
            "max_nodes_per_job": max_nodes,
            "name": name or socket.gethostname().split(".")[0],
            "labels": label or [],
            "max_concurrent_jobs": max_concurrent_jobs,
            "registration_token": token,
        }
        answer = httpx.post(f"{server.rstrip('/')}/v1/runners/register", json=body, timeout=60)
        if answer.status_code != 201:
            typer.echo(f"corral-runner: registration refused: {answer.status_code} {answer.text}", err=True)
            raise typer.Exit(1)
        token = answer.json()["token"]
    try:
        runner = ServerClient(server, token).verify(report)
    except ServerError as exc:
        typer.echo(f"corral-runner: the server refused this token: {exc}", err=True)
        raise typer.Exit(1) from None
    saved = RunnerConfig.load(config, server=server, token=token).save(config)
    typer.echo(json.dumps({"runner": runner["name"], "id": runner["id"], "config": str(saved)}))


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
    from evals.agent import Agent
    from evals.cluster_agent import ClusterAgent

    _keep_secrets_out_of_sight()
    _configure_logging()
    settings = _load(config)
    if hand_back_on_sigterm is not None:
        settings.hand_back_on_sigterm = hand_back_on_sigterm
    if warm is not None:
        settings.warm_worker = warm
    if settings.executor.kind == "local":  # a cluster agent only submits: lm-eval runs on the compute nodes
        _require_runner_extra()
    agent = Agent(settings) if settings.executor.kind == "local" else ClusterAgent(settings)
    signal.signal(signal.SIGTERM, agent.on_sigterm)
    done = agent.run(once=once, max_jobs=max_jobs, until_idle=until_idle)
    typer.echo(json.dumps({"jobs_run": done}))


@cli.command()
def doctor(config: ConfigOption = None) -> None:
    """Check the server, this runner's token, lm-eval, torch and CUDA; exit 1 if something is missing."""
    problems = 0

    def line(ok: bool, what: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        typer.echo(f"{'ok  ' if ok else 'FAIL'} {what}")

    settings = _load(config)
    try:
        health = httpx.get(f"{settings.server.rstrip('/')}/readyz", timeout=10)
        line(health.status_code == 200, f"server {settings.server}: {health.status_code}")
    except httpx.HTTPError as exc:
        line(False, f"server {settings.server}: {type(exc).__name__}")
    try:
        runner = ServerClient(settings.server, settings.token.get_secret_value(), retries=0).verify(
            {
                "accelerators": hardware.detect(),
                "backends": hardware.backends(),
                "lm_eval_version": hardware.lm_eval_version(),
            }
        )
        line(True, f"token: runner {runner['name']} ({runner['state']})")
    except (ServerError, httpx.HTTPError) as exc:
        line(False, f"token: {exc}")
    version = hardware.lm_eval_version()
    line(version is not None, f"lm-eval {version or 'not installed (pip install corral[runner])'}")
    try:
        import torch

        line(True, f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}")
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(index)
                name = torch.cuda.get_device_name(index)
                line(True, f"cuda:{index} {name}: {total / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
        else:
            line(True, "no CUDA device: jobs run on the CPU")
    except ImportError:
        line(False, "torch not installed")
    if settings.sandbox:
        from evals.sandbox import abi_version

        abi = abi_version()
        line(
            abi > 0,
            f"sandbox: Landlock ABI {abi} hides this runner's files from jobs"
            if abi
            else "sandbox: this kernel has no Landlock (Linux 5.13+): jobs could read this runner's files; "
            "upgrade the kernel, or set sandbox: false to accept that",
        )
    else:
        typer.echo("     sandbox: off (sandbox: false): jobs can read this runner's files")
    for device in hardware.detect():
        typer.echo(
            f"     accelerator {device['kind']} x{device['count']}: {device['memory_bytes'] / 2**30:.1f} GiB each"
        )
    raise typer.Exit(1 if problems else 0)


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
    from evals.demo import run_demo

    _configure_logging()
    raise typer.Exit(run_demo(server, admin_token, state, typer.echo))


def _require_runner_extra() -> None:
    """One line naming the install, not a traceback, where lm-eval or torch is missing (the server's install)."""
    import importlib.util

    missing = [name for name in ("torch", "lm_eval", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        typer.echo(
            f"corral-runner: {', '.join(missing)} not installed: this needs the runner extra. From the source tree: "
            ".venv/bin/pip install -c constraints/cpu.txt torch==2.13.0 -e '.[runner]' (CPU torch; on a GPU "
            "machine install CUDA torch first, then -e '.[runner]')",
            err=True,
        )
        raise typer.Exit(2)


SECRETS_FD = "CORRAL_RUNNER_SECRETS_FD"


def _keep_secrets_out_of_sight() -> None:
    """The agent's secrets given in its environment (CORRAL_RUNNER_TOKEN, HF_TOKEN, whatever CORRAL_* the shell
    held) would stay readable for its whole life in /proc/<pid>/environ, which a job's code on this machine can
    read: the agent starts itself again without them and takes them back through a pipe, into memory only."""
    inherited = os.environ.pop(SECRETS_FD, None)
    if inherited is not None:
        with os.fdopen(int(inherited), "rb") as pipe:
            os.environ.update(json.loads(pipe.read()))
        return
    secrets = {name: value for name, value in os.environ.items() if never_passed(name)}
    payload = json.dumps(secrets).encode()
    if not secrets or len(payload) > 60_000:  # nothing to hide, or more than a pipe holds unread
        return
    read, write = os.pipe()
    os.write(write, payload)
    os.close(write)
    os.set_inheritable(read, True)
    environment = {name: value for name, value in os.environ.items() if name not in secrets} | {SECRETS_FD: str(read)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every request at INFO: hundreds of lines a minute from heartbeats and log appends, with
    # attempt ids in every URL. The agent logs what matters itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main() -> None:
    cli()
